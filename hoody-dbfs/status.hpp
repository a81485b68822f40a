// The status socket of a running hoody-dbfs: `hoody-dbfs --status MOUNTPOINT`
// prints the lock counters (waits, queue depth, p50/p99 wait, EAGAIN by cause,
// token hand-offs, deadlocks broken), every writer token and waiting request,
// and the inode/fd numbers, as JSON.
//
// The socket is an abstract unix socket named after the absolute mountpoint
// ("\0hoody-dbfs:/hoody/databases"); only root or the daemon's own user may
// read it (SO_PEERCRED).
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "hoody/unique_fd.hpp"

namespace hoody::dbfs {

class StatusServer {
public:
  // Binds and listens at once (before the mount appears: a client that sees
  // the mount can connect; it waits in the backlog until run()).
  explicit StatusServer(std::string mountpoint);
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

// `hoody-dbfs --status MOUNTPOINT`: print the JSON; exit status 0, or 1 with a
// one-line reason when no hoody-dbfs serves that mountpoint.
int status_client(const std::string& mountpoint);

}  // namespace hoody::dbfs
