// Daemon: a FUSE daemon started for one test.
//
// The constructor spawns argv (stdout+stderr to a log file, stdin /dev/null)
// and waits until the mountpoint shows up in /proc/self/mountinfo; it throws
// with the log when the daemon exits first or the deadline passes.  The
// destructor unmounts (fusermount3 -u, else umount -l), sends SIGTERM, waits,
// SIGKILLs after a deadline, and prints the log when the test case failed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace hoody::test {

class Daemon {
public:
  struct Options {
    std::chrono::milliseconds start_timeout = std::chrono::seconds(10);
    std::chrono::milliseconds stop_timeout = std::chrono::seconds(10);
  };

  Daemon(std::vector<std::string> argv, std::string mountpoint, std::string log_path);
  Daemon(std::vector<std::string> argv, std::string mountpoint, std::string log_path,
         Options opts);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& mountpoint() const { return mountpoint_; }
  const std::string& log_path() const { return log_path_; }
  std::string log() const;  // the daemon's output so far
  std::string command() const;

  // Unmount and reap now; returns the daemon's wait status description
  // ("exit 0", "killed by SIGKILL", ...).  The destructor calls it if needed.
  std::string stop();

  // Send `sig` (the daemon must unmount by itself), wait for the exit; SIGKILL
  // after stop_timeout.  Returns the status, plus " (left mounted)" when the
  // mount was still there (then it is lazily unmounted).
  std::string terminate(int sig);

private:
  std::vector<std::string> argv_;
  std::string mountpoint_, log_path_;
  Options opts_;
  pid_t pid_ = -1;
  int pidfd_ = -1;
  bool stopped_ = false;
  std::uint64_t log_id_ = 0, pid_id_ = 0, mount_id_ = 0;
};

// $HOODY_TEST_TRANSPORT: the FUSE transport every hoody daemon started by
// Daemon gets as -o transport= ("" when unset: the daemon's default, uring).
// The tests run on both (meson suites "X" on uring and "X-dev").
std::string test_transport();

// Whether the kernel's FUSE over io_uring is on
// (/sys/module/fuse/parameters/enable_uring reads Y).
bool fuse_uring_enabled();

// What a hoody daemon started by Daemon serves with: "dev" when dev is asked
// for or the kernel's enable_uring is off, else "uring".
std::string expected_transport();

// Turns on FUSE over io_uring (/sys/module/fuse/parameters/enable_uring);
// throws under CI=true when HOODY_TEST_TRANSPORT=uring and that fails.
void enable_fuse_uring();

// The daemon under test for the dbfs area: $HOODY_DBFS (set by meson when the
// hoody-dbfs target exists), else bindfs with a one-time notice on stderr.
struct DbfsCommand {
  std::string program;
  bool is_bindfs = false;
};
const DbfsCommand& dbfs_command();

// argv for `DAEMON -f -o OPTIONS SOURCE MOUNTPOINT` (bindfs gets --multithreaded).
std::vector<std::string> dbfs_argv(const std::string& source, const std::string& mountpoint,
                                   const std::string& options = "allow_other,default_permissions");

}  // namespace hoody::test
