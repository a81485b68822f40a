// Capability checks.  Call them at the top of a test case, before any resource
// is made.  When the capability is missing: under CI=true a test failure with
// the reason; otherwise the whole binary is skipped (exit 77, meson's SKIP).
#pragma once

#include <string>

namespace hoody::test {

void require_root();
void require_fuse();   // /dev/fuse openable and fusermount3 on PATH
void require_btrfs();  // btrfs in /proc/filesystems (or loadable) and mkfs.btrfs on PATH
void require_loop();   // /dev/loop-control and losetup on PATH

// All four: what a test on a BtrfsPool with a FUSE daemon needs.
void require_mount_capabilities();

// A program on PATH or in the sbin dirs (`package`: the Debian package to
// install, said in the message).  Returns its full path.
std::string require_tool(const std::string& name, const std::string& package);

}  // namespace hoody::test
