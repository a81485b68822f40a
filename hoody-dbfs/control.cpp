#include "control.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "hoody/dbfs_control.hpp"
#include "hoody/log.hpp"

namespace hoody::dbfs {

using nlohmann::json;

namespace {
double ms_of(std::chrono::steady_clock::duration d) {
  return std::chrono::duration_cast<std::chrono::microseconds>(d).count() / 1000.0;
}
void poke(int efd) {
  uint64_t one = 1;
  if (::write(efd, &one, sizeof one) < 0) {
  }
}
}  // namespace

ControlServer::ControlServer(const std::string& source_realpath) {
  auto log = log::get("fuse");
  socklen_t len = 0;
  sockaddr_un addr = ctl::control_address(source_realpath, &len);
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0 ||
      ::listen(fd.get(), 16) < 0) {
    log->warn("control socket for {}: {} (snapshots and restores will not quiesce this mount, "
              "and a restore will be followed by the inotify watch only)",
              source_realpath, std::strerror(errno));
    return;
  }
  listen_ = std::move(fd);
  stop_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  log->info("control socket @hoody-dbfs-ctl:{}", source_realpath);
}

void ControlServer::run(Target target) {
  if (!listen_ || thread_.joinable()) return;
  target_ = std::move(target);
  thread_ = std::thread([this] { serve(); });
}

ControlServer::~ControlServer() {
  if (!thread_.joinable()) return;
  poke(stop_.get());
  thread_.join();
  // A quiesce must not outlive its server.
  if (holder_ != -1) target_.locks->resume(holder_id_);
}

void ControlServer::serve() {
  for (;;) {
    std::vector<pollfd> p;
    p.push_back({stop_.get(), POLLIN, 0});
    p.push_back({wake_.get(), POLLIN, 0});
    p.push_back({listen_.get(), POLLIN, 0});
    for (auto& [fd, c] : conns_) p.push_back({fd, POLLIN, 0});
    int timeout = -1;
    auto now = Clock::now();
    for (auto& w : waiting_) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(w.deadline - now).count();
      timeout = timeout < 0 ? static_cast<int>(std::max<long long>(left, 0))
                            : std::min(timeout, static_cast<int>(std::max<long long>(left, 0)));
    }
    // A quiesce ended by its hold time is noticed here.
    if (holder_ != -1) timeout = timeout < 0 ? 100 : std::min(timeout, 100);
    int n = ::poll(p.data(), p.size(), timeout);
    if (n < 0 && errno != EINTR) return;
    if (n > 0 && p[0].revents) return;
    if (n > 0 && p[1].revents) {
      uint64_t v;
      if (::read(wake_.get(), &v, sizeof v) < 0) {
      }
    }
    drain_done();
    if (holder_ != -1 && holder_reported_ && !target_.locks->quiesced()) {
      // The lock manager resumed on its own (hold_ms): the next one may go.
      holder_ = -1;
      holder_id_ = 0;
      holder_gen_ = 0;
    }
    if (n > 0 && p[2].revents) accept_one();
    for (size_t i = 3; n > 0 && i < p.size(); ++i) {
      if (!p[i].revents) continue;
      int fd = p[i].fd;
      if (!conns_.count(fd)) continue;  // dropped meanwhile
      std::string buf(ctl::kMaxMessage + 1, '\0');
      ssize_t got = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
      if (got < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (got <= 0) {
        drop(fd, got == 0 ? "closed" : std::strerror(errno));
        continue;
      }
      if (static_cast<size_t>(got) > ctl::kMaxMessage) {
        send_error(fd, EMSGSIZE, "request larger than 64 KiB");
        continue;
      }
      buf.resize(static_cast<size_t>(got));
      handle(fd, buf);
    }
    expire_waiting();
    if (holder_ == -1) {
      while (!waiting_.empty() && holder_ == -1) {
        Waiting w = waiting_.front();
        waiting_.pop_front();
        if (!conns_.count(w.conn)) continue;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(w.deadline - Clock::now());
        start_quiesce(w.conn, std::max(left, std::chrono::milliseconds(1)), w.hold);
      }
    }
  }
}

void ControlServer::accept_one() {
  UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!c) return;
  ucred cred{};
  socklen_t cl = sizeof cred;
  if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) return;
  if (cred.uid != 0 && cred.uid != ::geteuid()) {
    log::get("fuse")->warn("op=control uid={} pid={} -> refused: only root or uid {} may control "
                           "this mount",
                           cred.uid, cred.pid, ::geteuid());
    return;  // closes it
  }
  int fd = c.get();
  conns_[fd] = Conn{std::move(c), cred.pid, cred.uid};
  log::get("fuse")->debug("op=control pid={} uid={} -> connected", cred.pid, cred.uid);
}

void ControlServer::handle(int conn, const std::string& text) {
  auto lg = log::get("fuse");
  json req = json::parse(text, nullptr, false);
  if (req.is_discarded() || !req.is_object() || !req.contains("op") || !req["op"].is_string())
    return send_error(conn, EINVAL, "a request is a JSON object with a string \"op\"");
  const std::string op = req["op"];
  auto num = [&](const char* key, long long dflt) -> long long {
    auto it = req.find(key);
    if (it == req.end() || !it->is_number()) return dflt;
    return std::max<long long>(0, it->get<long long>());
  };
  lg->debug("op=control pid={} request={}", conns_[conn].pid, op);
  if (op == "quiesce") {
    auto timeout = std::chrono::milliseconds(std::min<long long>(num("timeout_ms", 2000), 600000));
    auto hold = std::chrono::milliseconds(std::min<long long>(num("hold_ms", 60000), 3600000));
    hold = std::max(hold, timeout);
    if (holder_ == conn) return send_error(conn, EALREADY, "this connection holds a quiesce");
    if (holder_ != -1) {
      waiting_.push_back({conn, Clock::now() + timeout, timeout, hold});
      return;
    }
    return start_quiesce(conn, timeout, hold);
  }
  if (op == "resume") {
    double held = 0;
    bool was = false;
    if (holder_ == conn) {
      auto h = target_.locks->resume(holder_id_);
      drain_done();  // a quiesce not yet reported answers first
      holder_ = -1;
      holder_id_ = 0;
      holder_gen_ = 0;
      if (h) {
        held = ms_of(*h);
        was = true;
      }
      lg->info("op=quiesce pid={} held={:.1f}ms -> resumed", conns_[conn].pid, held);
    }
    return send(conn, {{"ok", true}, {"held_ms", held}, {"was_quiesced", was}});
  }
  if (op == "source-replaced") {
    json body = target_.source_replaced();
    if (!body.contains("ok")) body["ok"] = true;
    return send(conn, body);
  }
  if (op == "holders") {
    json body = target_.holders();
    body["ok"] = true;
    return send(conn, body);
  }
  send_error(conn, EINVAL, "unknown op \"" + op + "\" (quiesce, resume, source-replaced, holders)");
}

void ControlServer::start_quiesce(int conn, std::chrono::milliseconds timeout,
                                  std::chrono::milliseconds hold) {
  holder_ = conn;
  holder_reported_ = false;
  const std::uint64_t gen = ++gen_;
  holder_gen_ = gen;
  std::uint64_t id = target_.locks->quiesce(timeout, hold, [this, conn, gen](lock::QuiesceResult r) {
    {
      std::lock_guard g(done_mu_);
      done_.push_back({conn, gen, std::move(r)});
    }
    poke(wake_.get());
  });
  if (id == 0) {
    holder_ = -1;
    holder_gen_ = 0;
    return send_error(conn, EBUSY, "the lock manager is already quiesced");
  }
  holder_id_ = id;
  drain_done();  // reported inline when nothing was held
}

void ControlServer::drain_done() {
  std::vector<Done> done;
  {
    std::lock_guard g(done_mu_);
    done.swap(done_);
  }
  for (auto& d : done) {
    if (d.gen != holder_gen_ || !conns_.count(d.conn)) continue;  // its connection is gone
    if (holder_ == d.conn) holder_reported_ = true;
    json busy = json::array();
    for (const auto& key : d.result.busy)
      busy.push_back(target_.database_name ? target_.database_name(key) : key);
    log::get("fuse")->info("op=quiesce pid={} databases={} busy={} ms={:.1f} -> held",
                           conns_[d.conn].pid, d.result.databases, d.result.busy.size(),
                           ms_of(d.result.took));
    send(d.conn, {{"ok", true},
                  {"databases", d.result.databases},
                  {"busy", busy},
                  {"ms", ms_of(d.result.took)}});
  }
}

void ControlServer::drop(int conn, const char* why) {
  auto lg = log::get("fuse");
  if (holder_ == conn) {
    // The peer may have died between its exchange of SOURCE and its
    // source-replaced call: follow SOURCE first, so that no writer released
    // here can commit into the tree that recovery will delete.
    if (target_.source_replaced) (void)target_.source_replaced();
    target_.locks->resume(holder_id_);
    lg->warn("op=quiesce pid={} -> resumed: its connection {} (the peer died or gave up)",
             conns_[conn].pid, why);
    holder_ = -1;
    holder_id_ = 0;
    holder_gen_ = 0;
  }
  waiting_.erase(std::remove_if(waiting_.begin(), waiting_.end(),
                                [conn](const Waiting& w) { return w.conn == conn; }),
                 waiting_.end());
  lg->debug("op=control pid={} -> {}", conns_[conn].pid, why);
  conns_.erase(conn);
}

void ControlServer::expire_waiting() {
  auto now = Clock::now();
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (it->deadline > now) {
      ++it;
      continue;
    }
    int conn = it->conn;
    it = waiting_.erase(it);
    pid_t other = holder_ != -1 && conns_.count(holder_) ? conns_[holder_].pid : 0;
    send_error(conn, EBUSY,
               "another quiesce is held" + (other ? " (by pid " + std::to_string(other) + ")"
                                                  : std::string()));
  }
}

void ControlServer::send(int conn, const json& reply) {
  std::string out = reply.dump();
  if (out.size() > ctl::kMaxMessage) {
    json cut = {{"ok", false},
                {"errno", "EMSGSIZE"},
                {"error", "reply larger than 64 KiB"}};
    out = cut.dump();
  }
  if (::send(conn, out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
    log::get("fuse")->debug("op=control -> reply not sent: {}", std::strerror(errno));
}

void ControlServer::send_error(int conn, int err, const std::string& text) {
  send(conn, {{"ok", false}, {"errno", errno_name(err)}, {"error", text}});
}

}  // namespace hoody::dbfs
