#!/usr/bin/env python3
"""Print one closing line "N passed, N failed, N skipped" from meson's testlog.json.

Under CI=true a skipped test counts as failed too: there a missing capability
(root, /dev/fuse, btrfs, loop devices) must never pass silently.
"""
import json
import os
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "build/meson-logs/testlog.json"
passed = failed = skipped = 0
failures = []
try:
    with open(path) as f:
        lines = f.readlines()
except OSError as e:
    lines = []
    print(f"test-summary: no test log ({path}: {e.strerror}): no test ran", file=sys.stderr)
if not any(line.strip() for line in lines):
    # No test ran (none built, or meson test stopped first): that is a failure.
    print("0 passed, 1 failed, 0 skipped (no test ran)")
    sys.exit(1)
for line in lines:
    line = line.strip()
    if not line:
        continue
    try:
        t = json.loads(line)
    except json.JSONDecodeError:
        failed += 1
        failures.append(f"unreadable line in {path}: {line[:80]}")
        continue
    result = t.get("result")
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
        if os.environ.get("CI") == "true":
            failures.append(t["name"] + " (skipped under CI)")
    else:
        failed += 1
        failures.append(f'{t["name"]} ({result})')
if os.environ.get("CI") == "true":
    failed += skipped
    skipped = 0
for name in failures:
    print(f"FAILED: {name}")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
