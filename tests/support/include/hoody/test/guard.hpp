// The guard: the safety net behind every integration test binary.
//
// The support library provides main().  It forks; the child runs doctest in
// its own process group, the parent waits with a deadline ($HOODY_TEST_TIMEOUT
// seconds, default 240, below the meson timeout), forwards SIGTERM/SIGINT, and
// when the child is gone (passed, failed, crashed or killed at the deadline)
// kills what is left of the child's process group and undoes, in reverse
// order, every resource the child registered and did not release: FUSE mounts
// (fusermount3 -uz), daemon pids (SIGKILL, checked against the start time so a
// recycled pid is never hit), mounts (umount -l), loop devices (found by
// backing image, losetup -d) and directories (rm -rf --one-file-system); the
// log of a daemon that was not stopped normally is printed first.
//
// The normal path is RAII in the child (BtrfsPool, Daemon): they register a
// resource before creating it and release it after undoing it.  On SIGTERM
// (meson's timeout sends SIGTERM to the process group and SIGKILL 0.5 s later)
// the cleanup runs in a detached process so that the SIGKILL cannot stop it.
//
// $HOODY_TEST_NO_GUARD=1 runs doctest in-process (for gdb); no safety net then.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace hoody::test {

enum class Resource {
  fuse_mount,  // a FUSE mountpoint: fusermount3 -uz, else umount -l
  pid,         // a process: SIGKILL if it is still the same process
  mount,       // a mountpoint: umount -l
  loop_image,  // an image file: every loop device backed by it is detached
  dir,         // a directory: rm -rf --one-file-system
  log,         // a daemon's log file: printed to stderr if still registered
};

// Record a resource in the registry of this test run, before creating it.
// Returns the id to pass to release() once the resource is undone.
std::uint64_t register_resource(Resource kind, const std::string& value);
std::uint64_t register_pid(pid_t pid);
void release(std::uint64_t id);

// The temp dir of this test run (mode 0755, under $HOODY_TEST_TMP or /tmp);
// removed by the guard at the end.
const std::string& session_dir();

// True once an assertion of the current test case failed (or it threw):
// fixtures print their logs then.
bool current_test_failed();

// True under CI=true: missing capabilities are failures, not skips.
bool in_ci();

// Undo the unreleased resources of a registry file, newest first.  Used by the
// guard; exposed for the unit test of the guard.
void cleanup_registry(const std::string& registry_path, bool verbose);

}  // namespace hoody::test
