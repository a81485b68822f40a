// The status socket of a running hoody daemon: `DAEMON --status MOUNTPOINT`
// prints, as JSON, what every daemon has (program, pid, source, mountpoint,
// the FUSE transport and its requests by opcode; daemon_main adds them) and
// what the daemon adds itself (DaemonFs::status(): hoody-dbfs's lock
// counters, writer tokens and waiting requests).
//
// The socket is an abstract unix socket named after the program and the
// absolute mountpoint ("\0hoody-dbfs:/hoody/databases"); only root or the
// daemon's own user may read it (SO_PEERCRED).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "hoody/unique_fd.hpp"

namespace hoody {

class StatusServer {
public:
  // Binds and listens at once (before the mount appears: a client that sees
  // the mount can connect; it waits in the backlog until run()).
  StatusServer(const std::string& program, const std::string& mountpoint);
  ~StatusServer();
  // Starts answering (after fuse_daemonize: threads do not survive the fork).
  void run(std::function<std::string()> render);
  StatusServer(const StatusServer&) = delete;
  StatusServer& operator=(const StatusServer&) = delete;

private:
  void serve();
  std::function<std::string()> render_;
  UniqueFd listen_;
  UniqueFd stop_;  // eventfd that wakes serve() for shutdown
  std::thread thread_;
};

// `PROGRAM --status MOUNTPOINT`: print the JSON; exit status 0, or 1 with a
// one-line reason when no PROGRAM serves that mountpoint.
int status_client(const std::string& program, const std::string& mountpoint);

}  // namespace hoody
