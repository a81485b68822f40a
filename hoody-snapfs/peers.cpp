#include "peers.hpp"

#include <poll.h>
#include <sys/socket.h>

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>

#include "hoody/log.hpp"
#include "hoody/sys.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using ms = std::chrono::milliseconds;

namespace {

std::string reply_error(const json& r) {
  std::string e = r.value("errno", std::string("EIO"));
  std::string text = r.value("error", std::string());
  return text.empty() ? e : e + ": " + text;
}

std::string comm_of(pid_t pid) {
  auto c = sys::read_file(AT_FDCWD, ("/proc/" + std::to_string(pid) + "/comm").c_str());
  std::string s = c ? *c : std::string();
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

// The pid of the hoody-dbfs serving `path`.  SO_PEERCRED names the process
// that called listen(): a daemonized dbfs listens before it forks, so that
// pid may be gone; then the hoody-dbfs whose command line names `path`.
pid_t server_pid(pid_t cred_pid, const std::string& path) {
  if (cred_pid > 0 && comm_of(cred_pid).rfind("hoody-dbfs", 0) == 0) return cred_pid;
  auto proc = sys::opendir_at(AT_FDCWD, "/proc");
  if (!proc) return 0;
  while (auto* e = ::readdir(proc->get())) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (!end || *end || pid <= 0) continue;
    if (comm_of(static_cast<pid_t>(pid)).rfind("hoody-dbfs", 0) != 0) continue;
    auto cmd = sys::read_file(AT_FDCWD, ("/proc/" + std::string(e->d_name) + "/cmdline").c_str());
    if (!cmd) continue;
    for (size_t at = 0; at < cmd->size();) {
      std::string arg = cmd->c_str() + at;
      at += arg.size() + 1;
      char real[PATH_MAX];
      if (!arg.empty() && arg[0] == '/' && ::realpath(arg.c_str(), real) && path == real)
        return static_cast<pid_t>(pid);
    }
  }
  return 0;
}

std::string transport_error(int err, const std::string& path, const char* op, ms bound) {
  std::string who = "hoody-dbfs serving " + path;
  switch (err) {
    case ETIMEDOUT:
      return who + " did not answer " + op + " within " + std::to_string(bound.count()) + " ms";
    case ECONNRESET:
      return who + " closed the control connection at " + op +
             " (it exited, or refused this daemon's uid)";
    default:
      return who + ": " + op + ": " + std::strerror(err);
  }
}

// Whether the server closed `fd` (it exited: kill -9 closes every socket it
// had).  A server sends nothing unasked, so anything readable is its end.
bool closed_by_peer(int fd) {
  if (fd < 0) return true;
  pollfd pf{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&pf, 1, 0) <= 0) return false;
  if (pf.revents & (POLLHUP | POLLRDHUP | POLLERR | POLLNVAL)) return true;
  char c;
  return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

}  // namespace

DbfsPeers::DbfsPeers(std::string source_realpath, ms timeout)
    : source_(std::move(source_realpath)), timeout_(timeout) {}

DbfsPeers::~DbfsPeers() { resume(); }

DbfsPeers::Peer* DbfsPeers::peer(const std::string& sv) {
  for (auto& p : peers_)
    if (p->sv == sv) return p.get();
  if (std::find(absent_.begin(), absent_.end(), sv) != absent_.end()) return nullptr;
  std::string path = source_ + "/" + sv;
  auto c = ctl::Client::connect(path);
  if (!c) {
    int e = c.err();
    if (e == ECONNREFUSED || e == ENOENT)
      log::get("snap")->debug("op=ctl source={} -> no hoody-dbfs serves it", path);
    else
      log::get("snap")->warn("op=ctl source={} -> cannot connect to its hoody-dbfs: {}", path,
                             std::strerror(e));
    absent_.push_back(sv);
    return nullptr;
  }
  auto p = std::make_unique<Peer>(Peer{sv, path, std::move(*c), 0, false});
  struct ucred cred {};
  socklen_t len = sizeof cred;
  if (::getsockopt(p->client.fd(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) cred.pid = 0;
  p->pid = server_pid(cred.pid, path);
  peers_.push_back(std::move(p));
  return peers_.back().get();
}

Result<QuiesceResult> DbfsPeers::quiesce(const std::vector<std::string>& subvols,
                                         std::string* why) {
  auto lg = log::get("snap");
  QuiesceResult out;
  auto t0 = std::chrono::steady_clock::now();
  for (const auto& sv : subvols) {
    Peer* p = peer(sv);
    if (!p) continue;
    json req = {{"op", "quiesce"}, {"timeout_ms", timeout_.count()}, {"hold_ms", kHold.count()}};
    ms bound = timeout_ + kSlack;
    auto r = p->client.call(req, bound);
    if (!r) {
      *why = transport_error(r.err(), p->path, "quiesce", bound);
      lg->error("op=quiesce source={} -> {}", p->path, *why);
      return fail(r.error());
    }
    if (!(*r)["ok"].get<bool>()) {
      int e = errno_from_name(r->value("errno", std::string("EIO")));
      *why = "hoody-dbfs serving " + p->path + " refused the quiesce: " + reply_error(*r);
      lg->error("op=quiesce source={} -> {}", p->path, *why);
      return fail(e);
    }
    p->quiesced = true;
    out.served.push_back(sv);
    out.databases += r->value("databases", 0);
    if (auto b = r->find("busy"); b != r->end() && b->is_array())
      for (auto& name : *b)
        if (name.is_string()) out.busy.push_back(sv + "/" + name.get<std::string>());
    lg->debug("op=quiesce source={} databases={} busy={} -> ok in {:.1f} ms", p->path,
              r->value("databases", 0), r->contains("busy") ? (*r)["busy"].dump() : "[]",
              r->value("ms", 0.0));
  }
  out.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

Status DbfsPeers::still_held(std::string* why) {
  for (auto& p : peers_) {
    if (!p->quiesced || !closed_by_peer(p->client.fd())) continue;
    *why = "hoody-dbfs serving " + p->path +
           " exited while it held the databases (its quiesce went with it): nothing restored; "
           "remount it if it is gone, then restore again";
    log::get("snap")->error("op=quiesce source={} pid={} -> {}", p->path, p->pid, *why);
    return fail(ECONNRESET);
  }
  return {};
}

void DbfsPeers::resume() {
  for (auto& p : peers_) {
    if (!p->quiesced) continue;
    p->quiesced = false;
    auto r = p->client.call(json{{"op", "resume"}}, kCallTimeout);
    if (!r || !(*r)["ok"].get<bool>()) {
      // The connection is closed on a failed call: dbfs resumes by itself.
      log::get("snap")->warn("op=resume source={} -> {}; its connection is closed, which resumes it",
                             p->path,
                             r ? reply_error(*r) : transport_error(r.err(), p->path, "resume",
                                                                   kCallTimeout));
      continue;
    }
    log::get("snap")->debug("op=resume source={} held_ms={}", p->path, r->value("held_ms", 0.0));
  }
}

std::vector<Holder> DbfsPeers::holders_of(const json& list, const std::string& sv) {
  std::vector<Holder> out;
  if (!list.is_array()) return out;
  for (auto& h : list) {
    if (!h.is_object()) continue;
    Holder x;
    x.pid = h.value("pid", 0);
    x.comm = h.value("comm", std::string("?"));
    std::string path = h.value("path", std::string());
    x.path = path.empty() ? sv : sv + "/" + path;
    out.push_back(std::move(x));
  }
  return out;
}

Result<std::vector<Holder>> DbfsPeers::replaced(const std::string& sv, std::string* why) {
  Peer* p = peer(sv);
  if (!p) return std::vector<Holder>{};
  auto r = p->client.call(json{{"op", "source-replaced"}}, kCallTimeout);
  if (!r && (r.err() == ECONNRESET || r.err() == ENOTCONN)) {
    // The server we knew is gone (killed, unmounted).  One mounted on the
    // subvolume since then (a supervisor's restart) may still serve the old
    // tree: it is told as well, so that when this returns every server of
    // `sv` serves the restored subvolume.  If none listens, a later mount
    // opens SOURCE/sv, the restored one.
    auto c = ctl::Client::connect(p->path);
    if (!c && (c.err() == ECONNREFUSED || c.err() == ENOENT)) {
      log::get("snap")->warn("op=source-replaced source={} -> its hoody-dbfs is gone (the "
                             "control connection closed); remount it to use the restored "
                             "databases",
                             p->path);
      return std::vector<Holder>{};
    }
    if (!c) {
      *why = transport_error(c.err(), p->path, "source-replaced", kCallTimeout);
      return fail(c.error());
    }
    log::get("snap")->warn("op=source-replaced source={} -> its hoody-dbfs exited and another "
                           "serves it now: telling that one",
                           p->path);
    p->client = std::move(*c);
    p->quiesced = false;  // the new one holds nothing of ours
    struct ucred cred {};
    socklen_t len = sizeof cred;
    if (::getsockopt(p->client.fd(), SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) cred.pid = 0;
    p->pid = server_pid(cred.pid, p->path);
    r = p->client.call(json{{"op", "source-replaced"}}, kCallTimeout);
  }
  if (!r) {
    *why = transport_error(r.err(), p->path, "source-replaced", kCallTimeout);
    return fail(r.error());
  }
  if (!(*r)["ok"].get<bool>()) {
    *why = "hoody-dbfs serving " + p->path + " could not follow the restore: " + reply_error(*r);
    return fail(errno_from_name(r->value("errno", std::string("EIO"))));
  }
  log::get("snap")->debug("op=source-replaced source={} changed={} -> ok", p->path,
                          r->value("changed", false));
  return holders_of(r->value("stale_holders", json::array()), sv);
}

Result<std::vector<Holder>> DbfsPeers::holders(const std::vector<std::string>& subvols,
                                               std::string* why) {
  std::vector<Holder> out;
  for (const auto& sv : subvols) {
    Peer* p = peer(sv);
    if (!p) continue;
    auto r = p->client.call(json{{"op", "holders"}}, kCallTimeout);
    if (!r) {
      *why = transport_error(r.err(), p->path, "holders", kCallTimeout);
      return fail(r.error());
    }
    if (!(*r)["ok"].get<bool>()) {
      *why = "hoody-dbfs serving " + p->path + ": holders: " + reply_error(*r);
      return fail(errno_from_name(r->value("errno", std::string("EIO"))));
    }
    for (auto& h : holders_of(r->value("holders", json::array()), sv)) out.push_back(std::move(h));
  }
  return out;
}

std::vector<pid_t> DbfsPeers::server_pids() const {
  std::vector<pid_t> out;
  for (auto& p : peers_)
    if (p->pid > 0) out.push_back(p->pid);
  return out;
}

}  // namespace hoody::snapfs
