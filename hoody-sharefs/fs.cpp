#include "fs.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <ctime>

#include "hoody/fuse_reply.hpp"
#include "hoody/log.hpp"
#include "hoody/mount_options.hpp"
#include "hoody/names.hpp"
#include "share/json.hpp"
#include "share/server.hpp"
#include "share/text.hpp"

namespace hoody::sharefs {

namespace {
// The watcher's wait on the change signal: a lost signal (or a stop) costs at most this.
constexpr auto kWatchTimeout = std::chrono::milliseconds(200);

int64_t now_s() { return static_cast<int64_t>(::time(nullptr)); }

struct stat dir_attr(ino_t ino, mode_t mode, int64_t t) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = S_IFDIR | mode;
  st.st_nlink = 2;
  st.st_blksize = 4096;
  st.st_atim.tv_sec = st.st_mtim.tv_sec = st.st_ctim.tv_sec = t;
  return st;
}
}  // namespace

OptionTable options() {
  OptionTable t = OptionTable::generic();
  pt::add_options(t);
  t.add({"container", OptKind::string, "the container whose shares are served (required)"})
      .add({"registry", OptKind::string, "the share registry (default POOL/shares.db)"})
      .add({"readdirplus", OptKind::flag,
            "answer listings with attributes (the default; noreaddirplus: plain listings)"})
      .add({"exports", OptKind::flag,
            "serve every share offered to another server as ID/ (for nfs-ganesha), not a container's"})
      .add({"noauto_inval_data", OptKind::flag,
            "keep cached pages when the owner changes a file (faster, may show stale data)"});
  return t;
}

Config config_from(const MountArgs& a) {
  Config c;
  c.core = pt::config_from(a);
  c.core.virtual_root = true;
  c.core.cross_mounts = false;
  // The owner writes its storage directly: cached pages follow its changes.
  c.core.auto_inval_data = !a.flag("noauto_inval_data");
  // Listings carry every entry's attributes (readdirplus), on every chunk
  // (not READDIRPLUS_AUTO, which answers a directory's first chunk with
  // attributes and the rest without: find reads a whole directory before it
  // stats its entries, so the rest came back as one LOOKUP each), and are
  // not cached (a listing served from the cache refreshes no entry: the walk
  // after entry_timeout sent one LOOKUP per name again).  A walk that stats
  // every entry (find -printf %s, du, ls -l, rsync) then costs a request per
  // 32 KiB of listing (~200 entries) instead of one per entry: find over 50k
  // files sent ~700 requests instead of 50,500; sharefs_bench on a loaded
  // 2-core machine, medians of 5 rounds: 1.08x bindfs for the first walk,
  // 4.6x for the walk again (plain readdir: 0.86x and 0.98x).  A names-only
  // walk pays the per-entry lookup it did not need: -o noreaddirplus for a
  // share walked that way (50k names in 0.05 s then, ~0.5 s with).
  c.core.readdirplus_auto = false;
  c.core.cache_readdir = c.core.cache_readdir && !c.core.readdirplus;
  // nosuid,nodev are forced (main.cpp); a suid or dev given too (mount.fuse3
  // adds both as root) is dropped: kernel_mount_options.
  c.pool = a.source;
  c.container = a.str("container", "");
  c.exports = a.flag("exports");
  if (c.exports && !c.container.empty())
    throw UsageError("give one of -o container=C and -o exports");
  if (c.exports) c.container = "exports";  // in log lines only
  if (c.container.empty()) throw UsageError("option 'container' is required: -o container=C");
  c.registry = a.str("registry", "");
  return c;
}

Fs::Fs(Config cfg) : pt::PassthroughFs(cfg.core), scfg_(std::move(cfg)) {}

Fs::~Fs() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
}

Status Fs::start(std::string* why) {
  if (auto s = validate_name("container", scfg_.container, why); !s) return s;
  auto reg = Registry::open(scfg_.pool, why, scfg_.registry);
  if (!reg) return fail(reg.error());
  auto c = scfg_.exports ? Result<std::optional<Container>>(std::optional<Container>(Container{}))
                         : reg->container(scfg_.container);
  if (!c) {
    *why = "registry: " + c.error().message();
    return fail(c.error());
  }
  if (!*c) {
    *why = "no such container " + scfg_.container + " in the registry of " + scfg_.pool +
           " (add it with `hoody-share container add " + scfg_.container + "`)";
    return fail(ENOENT);
  }
  HOODY_CHECK(open_source(why));
  started_ = now_s();
  changed_ = started_;
  // Serve what is accepted now (no kernel to notify yet).  This connection
  // is closed when start() returns, before fuse_daemonize forks: a SQLite
  // connection must not cross a fork (the child does not hold the parent's
  // POSIX locks, so its -shm would be rebuilt under it by the next opener,
  // and the daemon's accepts and reads of the generation would be lost).
  // attached() opens the daemon's connections after the fork.
  if (auto s = sync(*reg); !s) {
    *why = "registry: " + s.error().message();
    return s;
  }
  pending_.clear();
  log::get("share")->info("container={} pool={} shares={} offers={}", scfg_.container, scfg_.pool,
                          accepted_.size(), offered_.size());
  return {};
}

fuse_lowlevel_ops Fs::ops() { return make_ops({.posix_locks = true, .flock = true}); }

void Fs::attached(fuse_session* se) {
  se_ = se;
  // A connection of its own, opened after fuse_daemonize's fork.
  std::string why;
  auto reg = Registry::open(scfg_.pool, &why, scfg_.registry);
  if (!reg) {
    log::get("share")->error("watcher: {}: shares are not followed", escape(why));
    return;
  }
  watch_reg_.emplace(std::move(*reg));
  {
    // The request connection too (see start()).
    auto r2 = Registry::open(scfg_.pool, &why, scfg_.registry);
    std::lock_guard g(req_m_);
    if (r2) req_reg_.emplace(std::move(*r2));
  }
  watcher_ = std::thread([this] { watch_loop(); });
}

std::function<int(uint64_t)> Fs::tmpfile_errno() {
  return [this](uint64_t nodeid) -> int {
    if (RemoteFs::owns(nodeid)) return remote_.tmpfile_errno(nodeid);
    if (is_vnode(nodeid)) return EPERM;
    // The kernel holds the directory's node while the request is in flight.
    const pt::Root& r = *inode(nodeid)->root;
    if (r.revoked.load()) return ESTALE;
    if (r.read_only.load() || config().read_only) return EROFS;
    return EOPNOTSUPP;
  };
}

void Fs::destroy() {
  stop_ = true;
  if (watcher_.joinable()) watcher_.join();
  se_ = nullptr;
}

void Fs::watch_loop() {
  auto lg = log::get("share");
  Registry& reg = *watch_reg_;
  // Writers that wait for their change to be in force (hoody-share, a
  // restore) wait for this slot's acknowledgement.
  const int slot = reg.signal().claim_slot();
  uint64_t seen = reg.signal().current();
  uint64_t gen = UINT64_MAX;
  while (!stop_.load()) {
    // Everything published up to `seen` was committed before it was
    // published, so what is read from here on includes it.
    bool applied = true;
    auto g = reg.generation();
    if (g && (*g != gen || retry_.load() || !storage_replaced(reg).empty())) {
      auto t0 = std::chrono::steady_clock::now();
      if (auto s = sync(reg); !s) {
        applied = false;
        lg->warn("op=sync container={} -> {}", scfg_.container, s.error().message());
      } else {
        gen = *g;
        lg->debug("op=sync container={} generation={} ms={:.1f}", scfg_.container, gen,
                  std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      }
    } else if (!g) {
      applied = false;
      lg->warn("op=generation container={} -> {}", scfg_.container, g.error().message());
    }
    notify_pending();
    // In force: served as the registry and the owners' storage say, and the
    // kernel's caches of what went away dropped.
    if (applied)
      reg.signal().ack(slot, seen);
    else
      reg.signal().beat(slot);
    // Bounded: a writer that died never leaves us waiting.
    seen = reg.signal().wait_for_change(seen, kWatchTimeout);
  }
  reg.signal().release_slot(slot);
}

void Fs::notify_pending() {
  std::vector<Notice> todo;
  {
    std::lock_guard g(view_m_);
    todo.swap(pending_);
  }
  if (!se_) return;
  for (auto& n : todo) {
    if (!n.name.empty()) {
      int rc = fuse_lowlevel_notify_inval_entry(se_, FUSE_ROOT_ID, n.name.c_str(), n.name.size());
      if (rc < 0 && rc != -ENOENT)
        log::get("share")->warn("op=inval_entry name={} -> {}", quote_name(n.name), std::strerror(-rc));
    }
    invalidate_nodes(se_, n.nodes);
    int rc = fuse_lowlevel_notify_inval_inode(se_, FUSE_ROOT_ID, 0, 0);
    (void)rc;
  }
}

Result<std::vector<Received>> Fs::wanted(Registry& reg) {
  if (!scfg_.exports) return reg.shares_for(scfg_.container);
  // The export view: every share offered to another server, as ID/, served
  // to whoever nfs-ganesha lets in (the export names the peer).
  HOODY_TRY(out, reg.exports());
  std::vector<Received> v;
  for (auto& s : out)
    v.push_back({s.id, std::to_string(s.id), s.owner, s.source, s.mode, State::accepted, s.changed, "", ""});
  return v;
}

Status Fs::sync(Registry& reg) {
  std::lock_guard sg(sync_m_);
  auto lg = log::get("share");
  HOODY_TRY(now, wanted(reg));
  bool retry = false;
  std::vector<view::Served> served;
  {
    std::lock_guard g(view_m_);
    for (auto& [name, a] : accepted_) served.push_back({a.share.share_id, name, a.share.mode});
  }
  auto p = view::plan(served, now);
  // The owner's storage was replaced (hoody-snapfs restored it): the share
  // is served again from the restored subvolume, as a revoke and an accept.
  // Files opened before fail as after a revoke (EACCES), never reach the
  // old tree, whose subvolume the restore deletes (a write there would be lost).
  for (auto& name : storage_replaced(reg)) {
    auto it = std::find_if(now.begin(), now.end(), [&](auto& r) { return r.name == name; });
    bool removed = std::any_of(p.remove.begin(), p.remove.end(), [&](auto& s) { return s.name == name; });
    if (it == now.end() || removed) continue;
    std::string owner;
    {
      std::lock_guard g(view_m_);
      auto a = accepted_.find(name);
      if (a == accepted_.end()) continue;
      owner = a->second.share.owner;
      p.remove.push_back({a->second.share.share_id, name, a->second.share.mode});
    }
    p.add.push_back(*it);
    lg->warn("op=reserve container={} share={} owner={} -> the owner's storage was replaced (a "
             "restore): served from the restored storage; files opened before fail (EACCES)",
             scfg_.container, quote_name(name), owner);
  }
  std::vector<Notice> notices;
  std::map<std::string, Accepted> accepted;
  {
    std::lock_guard g(view_m_);
    accepted = accepted_;
  }
  // Revoked, left, rejected: gone at once for every request (the core), the
  // kernel's caches after (the watcher).
  for (auto& s : p.remove) {
    auto it = accepted.find(s.name);
    if (it == accepted.end()) continue;
    Notice n{s.name, {}};
    if (it->second.remote) {
      n.nodes = remote_.revoke(it->second.remote);
    } else {
      auto r = remove_root(it->second.root);
      if (r) n.nodes = std::move(r->nodes);
    }
    notices.push_back(std::move(n));
    lg->info("op=unserve container={} share={} owner={} -> revoked for this container",
             scfg_.container, quote_name(s.name), it->second.share.owner);
    accepted.erase(it);
  }
  for (auto& r : p.mode) {
    auto it = accepted.find(r.name);
    if (it == accepted.end()) continue;
    it->second.share.mode = r.mode;
    if (it->second.remote) {
      it->second.remote->read_only = r.mode == Mode::ro;
      if (r.mode == Mode::ro) notices.push_back({"", remote_.nodes_of(it->second.remote.get())});
    } else {
      (void)set_read_only(it->second.root, r.mode == Mode::ro);
      // Pages (and writable mmaps) of files opened before drop: the next
      // write-back asks the daemon, which refuses it on a read-only share.
      if (r.mode == Mode::ro) notices.push_back({"", nodes_of(it->second.root)});
    }
    lg->info("op=mode container={} share={} -> {}", scfg_.container, quote_name(r.name),
             to_string(r.mode));
  }
  for (auto& r : p.add) {
    std::string why;
    if (!r.url.empty()) {
      // From another server: reached over NFS (its export names this server).
      auto rs = RemoteShare::connect(r.name, r.url, r.mode == Mode::ro, &why);
      if (!rs) {
        lg->warn("op=serve container={} share={} owner={} url={} -> {}: not served yet, retried",
                 scfg_.container, quote_name(r.name), r.owner, escape(r.url), escape(why));
        retry = true;
        continue;
      }
      accepted[r.name] = Accepted{r, 0, std::move(*rs)};
      lg->info("op=serve container={} share={} owner={} url={} mode={}", scfg_.container,
               quote_name(r.name), r.owner, escape(r.url), to_string(r.mode));
      continue;
    }
    auto storage = reg.open_storage(r.owner, &why);
    Result<UniqueFd> src = storage ? sharefs::open_source(storage->get(), r.source, r.owner, &why)
                                   : Result<UniqueFd>(fail(storage.error()));
    if (!src) {
      lg->warn("op=serve container={} share={} owner={} -> {}: not served", scfg_.container,
               quote_name(r.name), r.owner, escape(why));
      continue;
    }
    dev_t dev = 0;
    if (auto st = sys::fstatat(storage->get(), "", AT_EMPTY_PATH)) dev = st->st_dev;
    auto id = add_root(std::move(*src), r.name, r.mode == Mode::ro, static_cast<uint64_t>(r.share_id));
    if (!id) {
      lg->warn("op=serve container={} share={} -> {}: not served", scfg_.container,
               quote_name(r.name), id.error().message());
      continue;
    }
    accepted[r.name] = Accepted{r, *id, nullptr, dev};
    lg->info("op=serve container={} share={} owner={} source={} mode={}", scfg_.container,
             quote_name(r.name), r.owner, escape(r.source), to_string(r.mode));
  }
  std::map<std::string, Received> offered;
  std::unordered_map<int64_t, std::string> names;
  for (auto& r : now)
    if (r.state == State::offered) {
      offered[r.name] = r;
      names[r.share_id] = r.name;
    }
  {
    std::lock_guard g(view_m_);
    bool changed = !p.empty() || offered.size() != offered_.size();
    accepted_ = std::move(accepted);
    offered_ = std::move(offered);
    offer_names_ = std::move(names);
    for (auto& n : notices) pending_.push_back(std::move(n));
    if (changed) changed_ = now_s();
  }
  retry_ = retry;
  applied_gen_.fetch_add(1);
  return {};
}

std::vector<std::string> Fs::storage_replaced(Registry& reg) {
  std::vector<std::pair<std::string, std::pair<std::string, dev_t>>> local;
  {
    std::lock_guard g(view_m_);
    for (auto& [name, a] : accepted_)
      if (!a.remote && a.storage_dev != 0) local.push_back({name, {a.share.owner, a.storage_dev}});
  }
  std::vector<std::string> out;
  std::map<std::string, dev_t> now;  // owner -> its storage's st_dev (one open each)
  for (auto& [name, od] : local) {
    auto& [owner, dev] = od;
    auto at = now.find(owner);
    if (at == now.end()) {
      dev_t d = 0;
      if (auto fd = reg.open_storage(owner, nullptr))
        if (auto st = sys::fstatat(fd->get(), "", AT_EMPTY_PATH)) d = st->st_dev;
      at = now.emplace(owner, d).first;
    }
    if (at->second != 0 && at->second != dev) out.push_back(name);
  }
  return out;
}

// ---- policy -------------------------------------------------------------------

Status Fs::allow(fuse_req_t, const pt::Access& a) {
  switch (a.op) {
    case pt::Op::open:
      // Devices, FIFOs and sockets never open through a share (they show as
      // regular files, so the kernel asks us).
      if (a.inode.type != S_IFREG && a.inode.type != S_IFDIR) return fail(EACCES);
      return {};
    case pt::Op::mknod:
      return fail(EPERM);
    default:
      return {};
  }
}

void Fs::present(struct stat& st) {
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) return;
  st.st_mode = S_IFREG;  // mode 0000
  st.st_rdev = 0;
  st.st_size = 0;
  st.st_blocks = 0;
}

// ---- the virtual nodes -----------------------------------------------------------

Result<struct stat> Fs::vgetattr(fuse_req_t, fuse_ino_t ino) {
  int64_t t = changed_.load();
  if (ino == FUSE_ROOT_ID) {
    auto st = dir_attr(1, 0755, t);
    std::lock_guard g(view_m_);
    st.st_nlink = 4 + accepted_.size();
    return st;
  }
  if (ino == view::kPendingDir) {
    auto st = dir_attr(2, 0755, t);
    std::lock_guard g(view_m_);
    st.st_nlink = 2 + offered_.size();
    return st;
  }
  if (ino == view::kCtlDir) return dir_attr(3, 0555, started_);
  if (ino == view::kSharesJson) {
    struct stat st {};
    st.st_ino = 4;
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_atim.tv_sec = st.st_mtim.tv_sec = st.st_ctim.tv_sec = t;
    return st;
  }
  if (auto id = view::offer_of(ino)) {
    std::lock_guard g(view_m_);
    auto it = offer_names_.find(*id);
    if (it == offer_names_.end()) return fail(ENOENT);
    auto o = offered_.find(it->second);
    return dir_attr(static_cast<ino_t>(0x10000 + *id), 0555, o != offered_.end() ? o->second.changed : t);
  }
  return fail(ENOENT);
}

Result<fuse_entry_param> Fs::vlookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  std::string_view n(name);
  if (parent == FUSE_ROOT_ID) {
    if (n == view::kPendingName) return virtual_entry(req, view::kPendingDir);
    if (n == view::kCtlName) return virtual_entry(req, view::kCtlDir);
    pt::RootId root = 0;
    std::shared_ptr<RemoteShare> remote;
    {
      std::lock_guard g(view_m_);
      auto it = accepted_.find(std::string(n));
      if (it == accepted_.end()) return fail(ENOENT);
      root = it->second.root;
      remote = it->second.remote;
    }
    if (remote) return remote_.root_entry(remote);
    return root_entry(root);
  }
  if (parent == view::kPendingDir) {
    int64_t id = 0;
    {
      std::lock_guard g(view_m_);
      auto it = offered_.find(std::string(n));
      if (it == offered_.end()) return fail(ENOENT);
      id = it->second.share_id;
    }
    return virtual_entry(req, view::offer_node(id));
  }
  if (parent == view::kCtlDir) {
    if (n == view::kJsonName) return virtual_entry(req, view::kSharesJson);
    return fail(ENOENT);
  }
  if (view::offer_of(parent)) return fail(ENOENT);  // an offer shows nothing before it is accepted
  return fail(ENOTDIR);
}

Result<std::vector<pt::VEntry>> Fs::vreaddir(fuse_req_t, fuse_ino_t ino) {
  std::vector<pt::VEntry> out;
  std::lock_guard g(view_m_);
  if (ino == FUSE_ROOT_ID) {
    out.push_back({std::string(view::kPendingName), S_IFDIR | 0755, 2});
    out.push_back({std::string(view::kCtlName), S_IFDIR | 0555, 3});
    for (auto& [name, a] : accepted_)
      out.push_back({name, S_IFDIR | 0755, static_cast<ino_t>(0x20000 + a.share.share_id)});
  } else if (ino == view::kPendingDir) {
    for (auto& [name, r] : offered_)
      out.push_back({name, S_IFDIR | 0555, static_cast<ino_t>(0x10000 + r.share_id)});
  } else if (ino == view::kCtlDir) {
    out.push_back({std::string(view::kJsonName), S_IFREG | 0444, 4});
  } else if (!view::offer_of(ino)) {
    return fail(ENOTDIR);
  }
  return out;
}

Result<std::string> Fs::vread(fuse_req_t, fuse_ino_t ino) {
  if (ino != view::kSharesJson) return fail(EACCES);
  std::lock_guard g(req_m_);
  if (!req_reg_) return fail(EIO);
  HOODY_TRY(j, container_json(*req_reg_, scfg_.container, true));
  return j.dump(2) + "\n";
}

std::optional<Received> Fs::served_or_offered(const std::string& name) {
  std::lock_guard g(view_m_);
  if (auto it = accepted_.find(name); it != accepted_.end()) return it->second.share;
  if (auto it = offered_.find(name); it != offered_.end()) return it->second;
  return std::nullopt;
}

void Fs::tell_owner(const std::optional<Received>& r, const char* verb) {
  if (!r || r->url.empty()) return;
  // A share from another server: its owner's server is told, as
  // `hoody-share accept` would, on a thread of its own (the request is
  // answered at once; the peer command may take long).
  std::string pool = scfg_.pool, container = scfg_.container, v = verb;
  std::thread([pool, container, v, r = *r] {
    std::string why;
    auto conf = read_server_conf(pool, &why);
    auto s = conf ? run_peer(*conf, r.peer,
                             {"state", "--owner", r.owner.substr(0, r.owner.find('@')), "--receiver",
                              container, "--" + v, "--", r.name},
                             &why)
                  : Status(fail(conf.error()));
    auto lg = log::get("share");
    if (s)
      lg->info("op=tell-owner container={} share={} owner={} state={} -> ok", container,
               quote_name(r.name), r.owner, v);
    else
      lg->warn("op=tell-owner container={} share={} owner={} state={} -> {}", container,
               quote_name(r.name), r.owner, v, escape(why));
  }).detach();
}

Status Fs::vrmdir(fuse_req_t, fuse_ino_t parent, const char* name) {
  std::string n(name);
  bool reject;
  {
    std::lock_guard g(view_m_);
    if (parent == view::kPendingDir) {
      if (!offered_.count(n)) return fail(ENOENT);
      reject = true;
    } else if (parent == FUSE_ROOT_ID) {
      if (n == view::kPendingName || n == view::kCtlName) return fail(EPERM);
      if (!accepted_.count(n)) return fail(ENOENT);
      reject = false;  // rmdir NAME: leave the share
    } else {
      return fail(EPERM);
    }
  }
  // Taken before the change: the watcher may apply it first.
  auto was = served_or_offered(n);
  std::lock_guard g(req_m_);
  if (!req_reg_) return fail(EIO);
  std::string why;
  auto s = reject ? req_reg_->reject(scfg_.container, n, &why)
                  : req_reg_->leave(scfg_.container, n, &why);
  log::get("share")->info("op={} container={} share={} -> {}", reject ? "reject" : "leave",
                          scfg_.container, quote_name(n), s ? "ok" : escape(why));
  if (!s) return s;
  tell_owner(was, reject ? "reject" : "leave");
  // Applied now (the core refuses the share's inodes at once); the kernel is
  // told by the watcher, after this request.
  (void)sync(*req_reg_);
  return {};
}

Status Fs::vrename(fuse_req_t, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                   const char* newname, unsigned flags) {
  // Only `mv .pending/NAME NAME` (accept); a share keeps its name.
  if (parent != view::kPendingDir || newparent != FUSE_ROOT_ID) return fail(EPERM);
  if (flags & (RENAME_EXCHANGE | RENAME_WHITEOUT)) return fail(EINVAL);
  std::string n(name);
  if (n != newname) return fail(EINVAL);
  {
    std::lock_guard g(view_m_);
    if (!offered_.count(n)) return fail(ENOENT);
  }
  auto was = served_or_offered(n);
  std::lock_guard g(req_m_);
  if (!req_reg_) return fail(EIO);
  std::string why;
  auto s = req_reg_->accept(scfg_.container, n, &why);
  log::get("share")->info("op=accept container={} share={} -> {}", scfg_.container, quote_name(n),
                          s ? "ok" : escape(why));
  if (!s) return s;
  tell_owner(was, "accept");
  // Served before the reply: `mv .pending/x x && ls x` sees it.
  return sync(*req_reg_);
}

// ---- routing: a remote share's nodes to RemoteFs ---------------------------------
// Names between a remote share and anything else: EXDEV (rename, link), as
// between two local shares.

namespace {
bool remote(fuse_ino_t ino) { return RemoteFs::owns(ino); }
}  // namespace

void Fs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (remote(parent)) return remote_.lookup(req, parent, name);
  PassthroughFs::lookup(req, parent, name);
}
void Fs::forget(fuse_ino_t ino, uint64_t n) {
  if (remote(ino)) {
    if (remote_.forget(ino, n)) {
      std::lock_guard g(remote_locks_mu_);
      remote_lock_files_.erase(ino);
    }
    return;
  }
  PassthroughFs::forget(ino, n);
}
void Fs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (remote(ino)) return remote_.getattr(req, ino, fi);
  PassthroughFs::getattr(req, ino, fi);
}
void Fs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  if (remote(ino)) return remote_.setattr(req, ino, attr, valid, fi);
  PassthroughFs::setattr(req, ino, attr, valid, fi);
}
void Fs::readlink(fuse_req_t req, fuse_ino_t ino) {
  if (remote(ino)) return remote_.readlink(req, ino);
  PassthroughFs::readlink(req, ino);
}
void Fs::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  if (remote(parent)) return remote_.refuse_change(req, parent, EPERM);
  PassthroughFs::mknod(req, parent, name, mode, rdev);
}
void Fs::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  if (remote(parent)) return remote_.mkdir(req, parent, name, mode);
  PassthroughFs::mkdir(req, parent, name, mode);
}
void Fs::symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  if (remote(parent)) return remote_.symlink(req, link, parent, name);
  PassthroughFs::symlink(req, link, parent, name);
}
void Fs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  if (remote(ino) && remote(parent)) return remote_.link(req, ino, parent, name);
  if (remote(parent)) return remote_.refuse_change(req, parent, EXDEV);
  if (remote(ino)) return reply(req, fail(EXDEV));
  PassthroughFs::link(req, ino, parent, name);
}
void Fs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (remote(parent)) return remote_.unlink(req, parent, name);
  PassthroughFs::unlink(req, parent, name);
}
void Fs::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (remote(parent)) return remote_.rmdir(req, parent, name);
  PassthroughFs::rmdir(req, parent, name);
}
void Fs::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                const char* newname, unsigned flags) {
  if (remote(parent) && remote(newparent))
    return remote_.rename(req, parent, name, newparent, newname, flags);
  if (remote(parent)) return remote_.refuse_change(req, parent, EXDEV);
  if (remote(newparent)) return remote_.refuse_change(req, newparent, EXDEV);
  PassthroughFs::rename(req, parent, name, newparent, newname, flags);
}
void Fs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (remote(ino)) return remote_.open(req, ino, fi);
  PassthroughFs::open(req, ino, fi);
}
void Fs::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  if (remote(parent)) return remote_.create(req, parent, name, mode, fi);
  PassthroughFs::create(req, parent, name, mode, fi);
}
void Fs::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  if (remote(ino)) return remote_.read(req, size, off, fi);
  PassthroughFs::read(req, ino, size, off, fi);
}
void Fs::write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  if (remote(ino)) return remote_.write_buf(req, in, off, fi);
  PassthroughFs::write_buf(req, ino, in, off, fi);
}
void Fs::flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (remote(ino)) {
    drop_owner_locks(ino, fi->lock_owner);  // a close drops the caller's POSIX locks
    return reply(req, Status{});            // writes are sent as they come
  }
  PassthroughFs::flush(req, ino, fi);
}
void Fs::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (remote(ino)) {
    // A remote node's flock lives on the open file's own description here.
    if (fi->flock_release) drop_owner_locks(ino, fi->lock_owner);
    return remote_.release(req, fi);
  }
  PassthroughFs::release(req, ino, fi);
}
// A lock granted on a share: the file may have been changed through another
// mount (the owner's storage, another receiver) while this container did not
// hold it, and the kernel's page cache of this mount would still show the old
// pages (SQLite read a malformed database image that way).  So its cached
// pages and attributes are dropped before the caller learns it holds the lock,
// as an NFS client revalidates a file when it takes a lock.
//
// The same goes for the names beside it that SQLite's locking protocol reads
// under the lock: whether NAME-journal exists decides whether a journal is
// hot (a stale positive entry for a journal another mount has deleted made a
// receiver "roll back" a finished transaction and corrupt the database), and
// NAME-wal likewise.  Their cached entries are dropped too, so the next
// lookup asks the owner's directory.  (WAL databases still cannot be shared
// across mounts: their -shm is shared memory, which no two mounts share.)
//
// Not for SQLite's -shm: it is shared memory that this mount's processes map,
// so dropping its pages would only unmap them (and no two mounts share it);
// its locks (several per WAL transaction) are answered at once.  Not for a
// share from another server either: its locks are this server's own.
bool Fs::lock_grant_hook(fuse_ino_t ino) {
  if (!se_ || RemoteFs::owns(ino)) return false;
  fuse_ino_t parent = 0;
  std::string name;
  if (!parent_entry(ino, &parent, &name)) return true;
  return !(name.size() > 4 && name.compare(name.size() - 4, 4, "-shm") == 0);
}

void Fs::lock_granted(fuse_ino_t ino) {
  fuse_ino_t parent = 0;
  std::string name;
  bool named = parent_entry(ino, &parent, &name);
  auto lg = log::get("share");
  int rc = fuse_lowlevel_notify_inval_inode(se_, ino, 0, 0);
  if (rc < 0 && rc != -ENOENT) lg->debug("op=lock_inval ino={} -> {}", ino, std::strerror(-rc));
  if (!named) return;
  for (const char* suffix : {"-journal", "-wal"}) {
    std::string sib = name + suffix;
    rc = fuse_lowlevel_notify_inval_entry(se_, parent, sib.c_str(), sib.size());
    if (rc < 0 && rc != -ENOENT)
      lg->debug("op=lock_inval_entry name={} -> {}", quote_name(sib), std::strerror(-rc));
  }
}

// Locks.  On a share of this server they are taken on the owner's files
// (PassthroughFs, ops_lock.cpp): they exclude the owner's own processes and
// every other receiver.  On a share from another server NFSv3 through libnfs
// has no lock protocol, so they are kept here, as an NFS mount with "nolock"
// keeps them: each node locked gets a memfd, and the same per-owner open file
// descriptions of it (opened again through /proc/self/fd) carry the locks, so
// the processes of this container exclude each other.
Result<UniqueFd> Fs::remote_lock_target(fuse_ino_t ino) {
  std::lock_guard g(remote_locks_mu_);
  UniqueFd& m = remote_lock_files_[ino];
  if (!m.valid()) {
    int fd = ::memfd_create("hoody-sharefs-lock", MFD_CLOEXEC);
    if (fd < 0) return fail(Errno::last());
    m = UniqueFd(fd);
  }
  return sys::open(("/proc/self/fd/" + std::to_string(m.get())).c_str(), O_RDWR | O_CLOEXEC);
}
void Fs::getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  if (remote(ino))
    return lock_getlk(req, ino, fi->lock_owner, nullptr, lock, [this, ino] { return remote_lock_target(ino); });
  PassthroughFs::getlk(req, ino, fi, lock);
}
void Fs::setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep) {
  if (remote(ino))
    return lock_setlk(req, ino, fi->lock_owner, nullptr, lock, sleep,
                      [this, ino] { return remote_lock_target(ino); });
  PassthroughFs::setlk(req, ino, fi, lock, sleep);
}
void Fs::flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  if (!remote(ino)) return PassthroughFs::flock(req, ino, fi, op);
  // The kernel's owner of a flock is the open file: one description each.
  LockTarget target = [this, ino] { return remote_lock_target(ino); };
  Errno e(EIO);
  auto fd = owner_lock_fd(ino, nullptr, fi->lock_owner, &target, &e);
  if (!fd) return reply(req, fail(e));
  lock_flock(req, ino, fd->get(), nullptr, op);
}
void Fs::fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  if (remote(ino)) return remote_.fsync(req, fi);
  PassthroughFs::fsync(req, ino, datasync, fi);
}
void Fs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (remote(ino)) return remote_.opendir(req, ino, fi);
  PassthroughFs::opendir(req, ino, fi);
}
void Fs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  if (remote(ino)) return remote_.readdir(req, size, off, fi, plus);
  PassthroughFs::readdir(req, ino, size, off, fi, plus);
}
void Fs::releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (remote(ino)) return remote_.releasedir(req, fi);
  PassthroughFs::releasedir(req, ino, fi);
}
void Fs::fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  if (remote(ino)) return reply(req, Status{});
  PassthroughFs::fsyncdir(req, ino, datasync, fi);
}
void Fs::statfs(fuse_req_t req, fuse_ino_t ino) {
  if (remote(ino)) return remote_.statfs(req, ino);
  PassthroughFs::statfs(req, ino);
}
void Fs::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                  int flags) {
  // NFSv3 has no extended attributes.
  if (remote(ino)) return remote_.refuse_change(req, ino, EOPNOTSUPP);
  PassthroughFs::setxattr(req, ino, name, value, size, flags);
}
void Fs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (remote(ino)) return reply(req, fail(ENODATA));
  PassthroughFs::getxattr(req, ino, name, size);
}
void Fs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  if (remote(ino)) return reply_xattr(req, std::string(), size);
  PassthroughFs::listxattr(req, ino, size);
}
void Fs::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (remote(ino)) return remote_.refuse_change(req, ino, EOPNOTSUPP);
  PassthroughFs::removexattr(req, ino, name);
}
void Fs::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info* fi) {
  if (remote(ino)) return remote_.refuse_change(req, ino, EOPNOTSUPP);
  PassthroughFs::fallocate(req, ino, mode, off, len, fi);
}
void Fs::copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                         fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                         int flags) {
  // Never ENOSYS: the kernel would stop asking for the whole mount.
  if (remote(ino_out)) return remote_.refuse_change(req, ino_out, EXDEV);
  if (remote(ino_in)) return reply(req, fail(EXDEV));
  PassthroughFs::copy_file_range(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags);
}
void Fs::lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  if (remote(ino)) return remote_.lseek(req, off, whence, fi);
  PassthroughFs::lseek(req, ino, off, whence, fi);
}

}  // namespace hoody::sharefs
