// The control socket of hoody-dbfs: how hoody-snapfs makes a snapshot or a
// restore consistent with the databases served here (issue 11; the contract
// is in common/base/include/hoody/dbfs_control.hpp and man/hoody-dbfs.8).
//
// An abstract SOCK_SEQPACKET socket "\0hoody-dbfs-ctl:<realpath of SOURCE>";
// only root or the daemon's own euid may connect (SO_PEERCRED, checked at
// accept: others are closed with a warn line).  One JSON request per
// datagram, one reply each:
//   quiesce          hold every database's writer token (bounded by timeout_ms;
//                    busy lists what was still in a transaction); it belongs
//                    to the connection and ends with it, or after hold_ms;
//                    a second one on another connection waits for the first
//                    (bounded by its own timeout_ms), then EBUSY
//   resume           hand the tokens on
//   source-replaced  serve the subvolume now at SOURCE (Fs::source_replaced);
//                    replies when the kernel's caches are invalidated
//   holders          processes with files open through the mount
// One thread serves every connection; a quiesce's reply comes from the lock
// manager's completion through an eventfd.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "hoody/unique_fd.hpp"
#include "lock/lock_manager.hpp"

namespace hoody::dbfs {

class ControlServer {
public:
  struct Target {
    lock::LockManager* locks = nullptr;
    // Blocking: serve the new source, invalidate, reply body (without "ok").
    std::function<nlohmann::json()> source_replaced;
    // Reply body of "holders" (without "ok").
    std::function<nlohmann::json()> holders;
    // A domain key of the lock manager as the path of its database.
    std::function<std::string(const std::string&)> database_name;
  };

  // Binds and listens at once (before the mount appears, so a peer that sees
  // the mount can connect; requests wait in the backlog until run()).
  explicit ControlServer(const std::string& source_realpath);
  ~ControlServer();
  // Starts serving (after fuse_daemonize: threads do not survive the fork).
  void run(Target target);
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  bool listening() const { return thread_.joinable(); }

private:
  using Clock = std::chrono::steady_clock;
  struct Conn {
    UniqueFd fd;
    pid_t pid = 0;
    uid_t uid = 0;
  };
  struct Waiting {  // a quiesce waiting for another connection's to end
    int conn = -1;
    Clock::time_point deadline;
    std::chrono::milliseconds timeout{0}, hold{0};
  };
  struct Done {  // a quiesce reported by the lock manager
    int conn;
    std::uint64_t gen;  // start_quiesce's number: a late report of an old one is dropped
    lock::QuiesceResult result;
  };

  void serve();
  void accept_one();
  void handle(int conn, const std::string& text);
  void start_quiesce(int conn, std::chrono::milliseconds timeout, std::chrono::milliseconds hold);
  void drop(int conn, const char* why);
  void drain_done();
  void expire_waiting();
  void send(int conn, const nlohmann::json& reply);
  void send_error(int conn, int err, const std::string& text);

  Target target_;
  UniqueFd listen_;
  UniqueFd stop_;   // eventfd: shut down
  UniqueFd wake_;   // eventfd: a quiesce completed
  std::map<int, Conn> conns_;  // by fd; only the serve thread touches conns_ and below
  int holder_ = -1;            // the connection whose quiesce is active
  std::uint64_t holder_id_ = 0;   // the lock manager's quiesce id
  std::uint64_t holder_gen_ = 0;  // our number of it
  std::uint64_t gen_ = 0;
  bool holder_reported_ = false;
  std::deque<Waiting> waiting_;
  std::mutex done_mu_;  // guards done_; innermost
  std::vector<Done> done_;
  std::thread thread_;  // last
};

}  // namespace hoody::dbfs
