// daemon_main: the main() of every hoody daemon.
//
//   argv -> MountArgs (exit 2 with a one-line reason on a bad option)
//        -> the daemon's filesystem object (exit 1 with a one-line reason when
//           it cannot start: source missing, not BTRFS, already served, ...)
//        -> run_session (mount, loop, clean unmount on SIGTERM/SIGINT)
#pragma once

#include <fuse_lowlevel.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "hoody/mount_options.hpp"
#include "hoody/result.hpp"

namespace hoody {

// What a daemon gives daemon_main: a started filesystem and its ops table.
class DaemonFs {
public:
  virtual ~DaemonFs() = default;
  // Opens the source and everything the daemon needs before mounting; on
  // failure `why` is one line for a person.
  virtual Status start(std::string* why) = 0;
  virtual fuse_lowlevel_ops ops() = 0;
  virtual void* userdata() = 0;
  // The session is mounted (for notifications such as notify_inval_inode);
  // called before the loop starts.
  virtual void attached(fuse_session* /*se*/) {}
  // open(O_TMPFILE) in directory `nodeid`: the errno to answer, for a daemon
  // that knows better than libfuse 3.14's ENOSYS (SessionConfig::tmpfile_errno).
  // Empty (the default): libfuse answers.
  virtual std::function<int(uint64_t nodeid)> tmpfile_errno() { return {}; }
  // Whether the daemon clears setuid, setgid and file capabilities itself on
  // write, truncate and chown (SessionConfig::handle_killpriv_v2).
  virtual bool handle_killpriv_v2() { return false; }
  // What `--status` shows of this daemon beyond what every daemon shows
  // (program, pid, source, mountpoint, transport): a JSON object, read on
  // the status socket's thread while the session runs.
  virtual nlohmann::json status() { return nlohmann::json::object(); }
};

struct DaemonSpec {
  std::string name;     // "hoody-dbfs"
  std::string summary;  // one line for --help
  OptionTable options;  // generic + the daemon's own
  std::function<std::unique_ptr<DaemonFs>(const MountArgs&)> make;
};

int daemon_main(int argc, char** argv, const DaemonSpec& spec);

}  // namespace hoody
