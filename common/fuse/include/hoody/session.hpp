// The FUSE lowlevel session runner shared by every hoody daemon: checks what
// can be checked before mounting (one-line reasons), mounts, runs the
// multithreaded loop (clone_fd applied), and unmounts cleanly on
// SIGTERM/SIGINT/SIGHUP.
#pragma once

#include <fuse_lowlevel.h>

#include <functional>
#include <string>
#include <vector>

#include "hoody/result.hpp"

namespace hoody {

struct SessionConfig {
  std::string program;                     // for messages: "hoody-dbfs"
  std::string mountpoint;
  std::vector<std::string> mount_options;  // from kernel_mount_options()
  bool foreground = false;
  bool debug = false;                      // libfuse's request trace
  bool single_thread = false;
  unsigned max_threads = 0;                // 0: 2 x cores, at least 4
  bool clone_fd = true;
  // "uring": FUSE over io_uring where the kernel offers it (one queue per
  // CPU, served by a pinned ring thread; see fuse_uring.hpp), else /dev/fuse
  // with one info line saying why (the default).  "dev": /dev/fuse only.
  std::string transport = "uring";
  unsigned uring_depth = 8;                // ring entries per CPU at start
  // Called once the session is mounted, before the loop (optional).
  std::function<void(fuse_session*)> on_mounted;
  // libfuse 3.14 has no tmpfile op: it answers the kernel's FUSE_TMPFILE
  // (open(O_TMPFILE)) with ENOSYS, which the kernel turns into EOPNOTSUPP for
  // the rest of the mount.  When set, FUSE_TMPFILE requests are answered with
  // the errno this returns for the directory's node id instead (0: leave the
  // request to libfuse).  Read through a custom-io filter on /dev/fuse; with
  // splice_read the kernel's requests bypass it and libfuse answers as before.
  std::function<int(uint64_t nodeid)> tmpfile_errno;
  // Take FUSE_HANDLE_KILLPRIV_V2 where the kernel offers it: the kernel then
  // stops asking for security.capability (GETXATTR) before every WRITE and
  // leaves clearing setuid, setgid and capabilities to the daemon
  // (fuse_request_kills_suidgid() in fuse_transport.hpp).
  bool handle_killpriv_v2 = false;
};

// The reason a mount cannot start, as one line for a person ("" if none
// found): no /dev/fuse, mountpoint missing, not a directory, a dead or live
// FUSE mount already there.
std::string mount_preflight(const std::string& mountpoint);

// True when `path` is a mount point in /proc/self/mountinfo; `fstype` gets its type.
bool is_mountpoint(const std::string& path, std::string* fstype = nullptr);

// Mounts and serves until unmounted or signalled.  Returns the process exit
// code (0 after a clean unmount); prints a one-line reason on failure.
int run_session(const fuse_lowlevel_ops& ops, void* userdata, const SessionConfig& cfg);

}  // namespace hoody
