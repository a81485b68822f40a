#include "fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>

#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/send_stream.hpp"
#include "hoody/sys.hpp"
#include "interim/interim_store.hpp"

namespace hoody::snapfs {

namespace {
constexpr const char* kAuditFile = "audit.log";
int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }
}  // namespace

OptionTable options() {
  auto t = OptionTable::generic();
  pt::add_options(t);
  t.add({"allow_users", OptKind::string,
         "users who may create, delete, rename, restore and set expiry, ':'-separated (alice:bob)"})
      .add({"allow_groups", OptKind::string, "groups who may do the same, ':'-separated"})
      .add({"default_expiry", OptKind::string, "expiry of new snapshots: +N with m, h, d or w (+7d)"})
      .add({"prune_interval", OptKind::seconds, "seconds between sweeps for expired snapshots (60)"});
  return t;
}

Config config_from(const MountArgs& args) {
  Config c;
  c.core = pt::config_from(args);
  c.source = args.source;
  c.core.source = args.source + "/.snapshots";
  c.core.read_only = true;  // snapshot contents are read-only, whatever -o says
  c.default_expiry = args.str("default_expiry");
  c.prune_interval = args.seconds("prune_interval", c.prune_interval);
  if (c.prune_interval <= 0) throw UsageError("option 'prune_interval' must be above 0");
  c.allow_users = args.str("allow_users");
  c.allow_groups = args.str("allow_groups");
  if (!c.default_expiry.empty()) {
    std::string why;
    auto e = vdir::parse_expiry(c.default_expiry, 0, &why);
    if (!e) throw UsageError("option 'default_expiry': " + why);
    if (c.default_expiry[0] != '+')
      throw UsageError("option 'default_expiry': give a duration such as +7d, not a time");
  }
  return c;
}

Fs::Fs(Config cfg) : pt::PassthroughFs(cfg.core), scfg_(std::move(cfg)) {}

Fs::~Fs() {
  {
    std::lock_guard g(prune_m_);
    stop_ = true;
  }
  prune_cv_.notify_all();
  if (prune_thread_.joinable()) prune_thread_.join();
}

Status Fs::start(std::string* why) {
  auto acc = vdir::parse_access(scfg_.allow_users, scfg_.allow_groups, why);
  if (!acc) return fail(acc.error());
  access_ = *acc;
  if (!scfg_.default_expiry.empty()) {
    auto e = vdir::parse_expiry(scfg_.default_expiry, 0, why);
    if (!e) return fail(e.error());
    default_expiry_offset_ = *e;
  }
  auto st = sys::stat(scfg_.source.c_str());
  if (!st) {
    *why = "source " + scfg_.source + ": " + st.error().message();
    return fail(st.error());
  }
  if (!S_ISDIR(st->st_mode)) {
    *why = "source " + scfg_.source + " is not a directory";
    return fail(ENOTDIR);
  }
  auto store = InterimStore::open(scfg_.source, why);
  if (!store) return fail(store.error());
  HOODY_TRY(src, sys::open(scfg_.source.c_str(), O_RDONLY | O_DIRECTORY));
  HOODY_TRY(sdir, sys::openat(src.get(), ".snapshots", O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(sst, sys::fstat(sdir.get()));
  store_dev_ = sst.st_dev;
  auto afd = sys::openat(sdir.get(), kAuditFile, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (!afd) {
    *why = "source " + scfg_.source + "/.snapshots/" + kAuditFile + ": " + afd.error().message();
    return fail(afd.error());
  }
  source_fd_ = std::move(src);
  store_fd_ = std::move(sdir);
  audit_fd_ = std::move(*afd);
  store_ = std::move(*store);
  root_mtime_ = now_seconds();
  HOODY_CHECK(open_source(why));
  auto n = store_->list();
  log::get("snap")->info("source={} snapshots={} prune_interval={}s default_expiry={} "
                         "allow_users={} allow_groups={}",
                         scfg_.source, n ? n->size() : 0, scfg_.prune_interval,
                         scfg_.default_expiry.empty() ? "none" : scfg_.default_expiry,
                         scfg_.allow_users, scfg_.allow_groups);
  return {};
}

fuse_lowlevel_ops Fs::ops() { return make_ops({}); }

void Fs::init(fuse_conn_info* conn) {
  pt::PassthroughFs::init(conn);
  // Started here, after fuse_daemonize(): a thread started before the fork
  // would not exist in the daemon.
  if (!prune_thread_.joinable()) prune_thread_ = std::thread([this] { prune_loop(); });
}

void Fs::destroy() {
  {
    std::lock_guard g(prune_m_);
    stop_ = true;
  }
  prune_cv_.notify_all();
  if (prune_thread_.joinable()) prune_thread_.join();
}

void Fs::prune_loop() {
  auto interval = std::chrono::duration<double>(scfg_.prune_interval);
  std::unique_lock g(prune_m_);
  while (!stop_) {
    if (prune_cv_.wait_for(g, interval, [this] { return stop_; })) break;
    g.unlock();
    prune_once();
    g.lock();
  }
}

void Fs::prune_once() {
  auto removed = store_->prune_expired(now_seconds());
  if (!removed) {
    log::get("snap")->warn("prune: {}", removed.error().message());
    return;
  }
  Caller daemon{0, 0, static_cast<int32_t>(::getpid()), {}};
  for (auto& name : *removed) audit(daemon, "prune", name, 0, "", "expired");
  if (!removed->empty()) root_mtime_ = now_seconds();
}

Fs::Caller Fs::caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller c{ctx->uid, ctx->gid, static_cast<int32_t>(ctx->pid), {}};
  if (c.uid != 0) {
    gid_t buf[64];
    int n = fuse_req_getgroups(req, 64, buf);
    if (n > 64) {
      std::vector<gid_t> big(static_cast<size_t>(n));
      n = fuse_req_getgroups(req, n, big.data());
      for (int i = 0; i < n && i < static_cast<int>(big.size()); ++i) c.groups.push_back(big[i]);
    } else {
      for (int i = 0; i < n; ++i) c.groups.push_back(buf[i]);
    }
  }
  return c;
}

void Fs::audit(const Caller& c, const std::string& action, const std::string& name, int err,
               const std::string& to, const std::string& reason) {
  vdir::AuditEntry e{now_seconds(), c.uid, c.pid, action, name, vdir::errno_name(err), to, reason};
  std::string line = vdir::audit_line(e);
  // One write(2) with O_APPEND: lines from several threads never interleave.
  if (audit_fd_.valid()) {
    auto w = sys::write_all(audit_fd_.get(), line);
    if (!w) log::get("snap")->error("audit log: {}", w.error().message());
  }
  line.pop_back();
  if (err)
    log::get("snap")->warn("audit {}", line);
  else
    log::get("snap")->info("audit {}", line);
}

std::string Fs::audit_text() {
  auto t = sys::read_file(store_fd_.get(), kAuditFile);
  return t ? *t : std::string();
}

Status Fs::may_mutate(fuse_req_t, const char*) { return fail(EROFS); }

std::optional<SnapshotInfo> Fs::snapshot_of(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID || vdir::is_virtual(ino)) return std::nullopt;
  pt::Inode* in = inode(ino);
  if (in->src_dev != store_dev_) return std::nullopt;
  Top top;
  {
    std::lock_guard g(tops_m_);
    auto it = tops_.find(in->src_ino);
    if (it == tops_.end()) return std::nullopt;
    top = it->second;
  }
  auto s = store_->get(top.name);
  if (s && s->uuid == top.uuid) return *s;
  // Renamed behind our back (or deleted): find it by uuid.
  auto all = store_->list();
  if (!all) return std::nullopt;
  for (auto& x : *all)
    if (x.uuid == top.uuid) {
      std::lock_guard g(tops_m_);
      tops_[in->src_ino].name = x.name;
      return x;
    }
  return std::nullopt;
}

void Fs::renamed(const std::string& from, const std::string& to) {
  std::lock_guard g(tops_m_);
  for (auto& [ino, top] : tops_)
    if (top.name == from) top.name = to;
}

struct stat Fs::snapshot_attr(const SnapshotInfo& s, const struct stat& dir) {
  struct stat st = dir;
  // Open to all, as ZFS shows its snapshot directories: what may change is
  // decided by the daemon (the verbs, user.hoody.* xattrs) or is EROFS.
  st.st_mode = S_IFDIR | 0777;
  st.st_nlink = 2 + s.subvolumes.size();
  st.st_uid = 0;
  st.st_gid = 0;
  st.st_atim = st.st_mtim = st.st_ctim = timespec{static_cast<time_t>(s.created), 0};
  return st;
}

Result<fuse_entry_param> Fs::snapshot_entry(const SnapshotInfo& s) {
  HOODY_TRY(e, do_lookup(FUSE_ROOT_ID, s.uuid.c_str()));
  {
    std::lock_guard g(tops_m_);
    tops_[e.attr.st_ino] = Top{s.uuid, s.name};
  }
  e.attr = snapshot_attr(s, e.attr);
  // Names at the root change by other means too (expiry, restore's safety
  // snapshot): the kernel asks again on every use, the contents stay cached.
  e.entry_timeout = 0;
  e.attr_timeout = 0;
  return e;
}

struct stat Fs::root_attr() {
  struct stat st {};
  auto r = sys::fstat(store_fd_.get());
  if (r) st = *r;
  auto n = store_->list();
  st.st_mode = S_IFDIR | 0777;  // anyone may try mkdir; the daemon decides (EPERM)
  st.st_nlink = 3 + (n ? n->size() : 0);  // ., .., .hoody, one per snapshot
  st.st_uid = 0;
  st.st_gid = 0;
  st.st_ino = 1;
  st.st_mtim = st.st_ctim = timespec{static_cast<time_t>(root_mtime_.load()), 0};
  return st;
}

struct stat Fs::virtual_attr(uint64_t ino) {
  struct stat st {};
  st.st_ino = (ino & ~vdir::kVirtualBit) | (1ull << 62);
  st.st_mode = vdir::node_mode(ino);
  st.st_nlink = S_ISDIR(st.st_mode) ? 2 : 1;
  if (ino == vdir::kCtlDir) st.st_nlink = 3;
  st.st_blksize = 4096;
  st.st_atim = st.st_mtim = st.st_ctim = timespec{static_cast<time_t>(root_mtime_.load()), 0};
  return st;
}

fuse_entry_param Fs::virtual_entry(uint64_t ino) {
  fuse_entry_param e{};
  e.ino = ino;
  e.attr = virtual_attr(ino);
  e.attr_timeout = 0;
  e.entry_timeout = vdir::is_diff_node(ino) ? 0 : 3600;
  return e;
}

Result<std::string> Fs::compute_diff(const std::string& node_name) {
  auto spec = vdir::parse_diff_name(node_name);
  if (!spec) return fail(ENOENT);
  HOODY_TRY(a, store_->get(spec->from));
  bool live = spec->to == vdir::kLiveName;
  SnapshotInfo b;
  std::string tmp_dir;  // a read-only snapshot of the live state, for send
  if (live) {
    HOODY_TRY(subs, store_->live_subvolumes());
    b.subvolumes = subs;
    tmp_dir = ".diff-" + std::to_string(::getpid()) + "-" +
              std::to_string(std::chrono::steady_clock::now().time_since_epoch().count());
    HOODY_CHECK(sys::mkdirat(store_fd_.get(), tmp_dir.c_str(), 0700));
    b.uuid = tmp_dir;
  } else {
    HOODY_TRY(bb, store_->get(spec->to));
    b = bb;
  }
  auto cleanup = [&] {
    if (!live) return;
    if (auto d = sys::openat(store_fd_.get(), tmp_dir.c_str(), O_RDONLY | O_DIRECTORY); d)
      for (auto& sub : b.subvolumes) (void)btrfs::delete_subvolume(d->get(), sub.c_str());
    (void)sys::unlinkat(store_fd_.get(), tmp_dir.c_str(), AT_REMOVEDIR);
  };
  auto body = [&]() -> Result<std::string> {
    HOODY_TRY(bdir, sys::openat(store_fd_.get(), b.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    if (live) {
      for (auto& sub : b.subvolumes) {
        HOODY_TRY(sfd, btrfs::open_dir(source_fd_.get(), sub.c_str()));
        HOODY_CHECK(btrfs::snapshot(sfd.get(), bdir.get(), sub.c_str(), true));
      }
    }
    HOODY_TRY(adir, sys::openat(store_fd_.get(), a.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    std::vector<std::string> all = a.subvolumes;
    all.insert(all.end(), b.subvolumes.begin(), b.subvolumes.end());
    std::sort(all.begin(), all.end());
    all.erase(std::unique(all.begin(), all.end()), all.end());
    std::vector<vdir::SubvolDiff> parts;
    for (auto& sub : all) {
      bool in_a = std::binary_search(a.subvolumes.begin(), a.subvolumes.end(), sub);
      bool in_b = std::find(b.subvolumes.begin(), b.subvolumes.end(), sub) != b.subvolumes.end();
      vdir::SubvolDiff p;
      p.subvol = sub;
      if (!in_a) {
        p.whole = vdir::SubvolDiff::Whole::added;
      } else if (!in_b) {
        p.whole = vdir::SubvolDiff::Whole::removed;
      } else {
        HOODY_TRY(afd, btrfs::open_dir(adir.get(), sub.c_str()));
        HOODY_TRY(bfd, btrfs::open_dir(bdir.get(), sub.c_str()));
        HOODY_TRY(changes, send::diff_subvolumes(afd.get(), bfd.get()));
        p.changes = std::move(changes);
      }
      parts.push_back(std::move(p));
    }
    return vdir::render_diff(parts);
  };
  auto r = body();
  cleanup();
  return r;
}

}  // namespace hoody::snapfs
