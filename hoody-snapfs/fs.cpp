#include "fs.hpp"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
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
#include "store/format.hpp"

namespace hoody::snapfs {

namespace {
constexpr const char* kAuditFile = "audit.log";
constexpr std::size_t kDiffJobs = 2;  // distinct diffs computed at once; more queue
int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }
int64_t secs(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}
SnapshotInfo info_of(const Snapshot& s) {
  SnapshotInfo i;
  i.name = s.name;
  i.uuid = s.uuid;
  i.created = secs(s.created);
  i.creator = s.creator;
  if (s.expires) i.expires = secs(*s.expires);
  i.description = s.description;
  i.type = s.type;
  i.consistency = s.consistency;
  i.busy = s.busy;
  i.nested = s.nested;
  return i;
}
}  // namespace

Result<TimePoint> time_point(int64_t unix_seconds) { return time_from_unix(unix_seconds); }

OptionTable options() {
  auto t = OptionTable::generic();
  pt::add_options(t);
  t.add({"allow_users", OptKind::string,
         "users who may create, delete, rename, restore and set expiry, ':'-separated (alice:bob)"})
      .add({"allow_groups", OptKind::string, "groups who may do the same, ':'-separated"})
      .add({"default_expiry", OptKind::string, "expiry of new snapshots: +N with m, h, d or w (+7d)"})
      .add({"prune_interval", OptKind::seconds, "seconds between sweeps for expired snapshots (60)"})
      .add({"quiesce_timeout", OptKind::seconds,
            "seconds a snapshot or restore waits for database transactions in flight (2)"})
      .add({"diff_cache_mb", OptKind::uint,
            "MiB of computed .hoody/diff/ results kept for the next reader (64; 0: none)"});
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
  c.quiesce_timeout = args.seconds("quiesce_timeout", c.quiesce_timeout);
  c.allow_users = args.str("allow_users");
  c.allow_groups = args.str("allow_groups");
  c.diff_cache_mb = args.uint("diff_cache_mb", c.diff_cache_mb);
  if (!c.default_expiry.empty()) {
    std::string why;
    auto e = parse_expiry(c.default_expiry, TimePoint{}, &why);
    if (!e) throw UsageError("option 'default_expiry': " + why);
    if (c.default_expiry[0] != '+')
      throw UsageError("option 'default_expiry': give a duration such as +7d, not a time");
  }
  return c;
}

Fs::Fs(Config cfg) : pt::PassthroughFs(cfg.core), scfg_(std::move(cfg)) {}

Fs::~Fs() {
  wait_jobs();
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
    auto e = parse_expiry(scfg_.default_expiry, TimePoint{}, why);
    if (!e) return fail(e.error());
    if (*e) default_expiry_offset_ = secs(**e);
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
  auto src = sys::open(scfg_.source.c_str(), O_RDONLY | O_DIRECTORY);
  if (!src) {
    *why = "source " + scfg_.source + ": " + src.error().message();
    return fail(src.error());
  }
  // Checked here too, so that the reason is the one line a person reads.
  if (auto b = btrfs::is_btrfs(src->get()); !b || !*b) {
    *why = "source " + scfg_.source +
           " is not on BTRFS: snapshots need a BTRFS filesystem (a container directory "
           "POOL/containers/<id> whose subvolumes are the scope)";
    return fail(b ? Errno(EMEDIUMTYPE) : b.error());
  }
  auto store = SnapshotStore::open(src->get());
  if (!store) {
    int e = store.err();
    *why = "source " + scfg_.source +
           (e == EMEDIUMTYPE || e == ENOTTY
                ? std::string(" is not on BTRFS: snapshots need a BTRFS filesystem (a container "
                              "directory POOL/containers/<id> whose subvolumes are the scope)")
            : e == EBUSY ? std::string(": its snapshot store is in use by another hoody-snapfs; "
                                       "one daemon per container directory (bind-mount its mount)")
                         : ": cannot open the snapshot store .snapshots: " + store.error().message());
    return fail(store.error());
  }
  HOODY_TRY(sdir, sys::openat(src->get(), kStoreDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(sst, sys::fstat(sdir.get()));
  store_dev_ = sst.st_dev;
  auto afd = sys::openat(sdir.get(), kAuditFile, O_WRONLY | O_APPEND | O_CREAT, 0600);
  if (!afd) {
    *why = "source " + scfg_.source + "/.snapshots/" + kAuditFile + ": " + afd.error().message();
    return fail(afd.error());
  }
  {
    // The contract of the dbfs control channel names its sockets after the
    // realpath of the dbfs SOURCE, SOURCE/<subvolume> here (an admin's path).
    char real[PATH_MAX];
    source_real_ = ::realpath(scfg_.source.c_str(), real) ? real : scfg_.source;
  }
  source_fd_ = std::move(*src);
  store_fd_ = std::move(sdir);
  audit_fd_ = std::move(*afd);
  store_ = std::move(*store);
  diff_cache_ = std::make_unique<DiffCache>(
      DiffCacheOptions{static_cast<std::size_t>(std::min<uint64_t>(scfg_.diff_cache_mb, 1u << 20))
                           << 20,
                       kDiffJobs},
      [this](std::function<void()> job) { offload(std::move(job)); });
  root_mtime_ = now_seconds();
  // open() finished or undid a restore interrupted by a crash: the hoody-dbfs
  // of each scope subvolume is told, so that it serves what is there now
  // (source-replaced is a no-op for one that serves it already).
  if (auto scope = store_->scope(); scope) {
    auto dbfs = peers();
    for (const auto& sv : *scope) {
      std::string w;
      if (auto r = dbfs->replaced(sv, &w); !r)
        log::get("snap")->warn("source={}/{} -> {}", source_real_, sv, w);
    }
  }
  HOODY_CHECK(open_source(why));
  auto n = store_->list();
  log::get("snap")->info("source={} snapshots={} prune_interval={}s quiesce_timeout={}s "
                         "default_expiry={} allow_users={} allow_groups={}",
                         scfg_.source, n ? n->size() : 0, scfg_.prune_interval,
                         scfg_.quiesce_timeout,
                         scfg_.default_expiry.empty() ? "none" : scfg_.default_expiry,
                         scfg_.allow_users, scfg_.allow_groups);
  return {};
}

fuse_lowlevel_ops Fs::ops() { return make_ops({}); }

std::function<int(uint64_t)> Fs::tmpfile_errno() {
  return [](uint64_t nodeid) { return nodeid == FUSE_ROOT_ID || vdir::is_virtual(nodeid) ? EPERM : EROFS; };
}

void Fs::init(fuse_conn_info* conn) {
  pt::PassthroughFs::init(conn);
  // Started here, after fuse_daemonize(): a thread started before the fork
  // would not exist in the daemon.
  if (!prune_thread_.joinable()) prune_thread_ = std::thread([this] { prune_loop(); });
}

void Fs::offload(std::function<void()> fn) {
  {
    std::lock_guard g(jobs_m_);
    ++jobs_;
  }
  auto run = [this, fn = std::move(fn)] {
    fn();
    std::lock_guard g(jobs_m_);
    if (--jobs_ == 0) jobs_cv_.notify_all();
  };
  try {
    std::thread(run).detach();  // a copy: run stays callable if this throws
  } catch (const std::system_error&) {
    // No thread to be had: do it here rather than not at all.
    run();
  }
}

void Fs::wait_jobs() {
  std::unique_lock g(jobs_m_);
  jobs_cv_.wait(g, [this] { return jobs_ == 0; });
}

void Fs::destroy() {
  wait_jobs();
  {
    std::lock_guard g(prune_m_);
    stop_ = true;
  }
  prune_cv_.notify_all();
  if (prune_thread_.joinable()) prune_thread_.join();
}

void Fs::prune_loop() {
  auto interval = std::chrono::duration<double>(scfg_.prune_interval);
  auto next = std::chrono::steady_clock::now() + interval;
  std::unique_lock g(prune_m_);
  while (!stop_) {
    prune_cv_.wait_until(g, next, [this] { return stop_ || recover_due_; });
    if (stop_) break;
    bool recover = std::exchange(recover_due_, false);
    g.unlock();
    if (recover) {
      // A restore returned right after its swap; its old live subvolumes are deleted here.
      if (auto r = store_->recover(); !r) log::get("snap")->warn("recover: {}", r.error().message());
    }
    if (std::chrono::steady_clock::now() >= next) {
      prune_once();
      diff_cache_->drop_idle(std::chrono::steady_clock::now());
      next = std::chrono::steady_clock::now() + interval;
    }
    g.lock();
  }
}

std::unique_ptr<DbfsPeers> Fs::peers() {
  auto t = std::chrono::milliseconds(static_cast<int64_t>(scfg_.quiesce_timeout * 1000));
  return std::make_unique<DbfsPeers>(source_real_, t);
}

void Fs::changed() {
  root_mtime_ = now_seconds();
  ++changes_;
}

void Fs::recover_soon() {
  {
    std::lock_guard g(prune_m_);
    recover_due_ = true;
  }
  prune_cv_.notify_all();
}

void Fs::prune_once() {
  Who daemon{0, 0, static_cast<int32_t>(::getpid()), {}};
  auto removed = store_->prune_expired(Clock::now(), daemon.store());
  if (!removed) {
    log::get("snap")->warn("prune: {}", removed.error().message());
    return;
  }
  for (auto& name : *removed) {
    audit(daemon, "prune", name, 0, "", "expired");
    this->removed(name);
  }
  if (!removed->empty()) changed();
}

Fs::Who Fs::caller_of(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Who c{ctx->uid, ctx->gid, static_cast<int32_t>(ctx->pid), {}};
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

void Fs::audit(const Who& c, const std::string& action, const std::string& name, int err,
               const std::string& to, const std::string& reason) {
  vdir::AuditEntry e{now_seconds(), c.uid, c.pid, action, name, vdir::errno_name(err), to, reason};
  std::string line = vdir::audit_line(e);
  // One write(2) with O_APPEND: lines from several threads never interleave.
  if (audit_fd_.valid()) {
    auto w = sys::write_all(audit_fd_.get(), line);
    if (!w) log::get("snap")->error("audit log: {}", w.error().message());
  }
  line.pop_back();
  // JSON escapes C0 controls; a name or value may still carry DEL or C1
  // controls (U+009B is CSI): escaped too, so a log line cannot drive a terminal.
  line = escape_control(line, false);
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
  auto s = get_info(top.name);
  if (s && s->uuid == top.uuid) return *s;
  // Renamed behind our back (or deleted): find it by uuid.
  auto all = list_info(false);
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

Result<SnapshotInfo> Fs::get_info(const std::string& name, bool with_subvolumes) {
  HOODY_TRY(s, store_->get(name));
  auto i = info_of(s);
  if (with_subvolumes) {
    if (auto d = sys::opendir_at(store_fd_.get(), i.uuid.c_str()); d)
      while (auto* e = ::readdir(d->get()))
        if (e->d_name[0] != '.') i.subvolumes.push_back(e->d_name);
    std::sort(i.subvolumes.begin(), i.subvolumes.end());
  }
  return i;
}

Result<std::vector<SnapshotInfo>> Fs::list_info(bool with_subvolumes) {
  HOODY_TRY(all, store_->list());
  std::vector<SnapshotInfo> out;
  out.reserve(all.size());
  for (auto& s : all) {
    out.push_back(info_of(s));
    if (!with_subvolumes) continue;
    auto& i = out.back();
    if (auto d = sys::opendir_at(store_fd_.get(), i.uuid.c_str()); d)
      while (auto* e = ::readdir(d->get()))
        if (e->d_name[0] != '.') i.subvolumes.push_back(e->d_name);
    std::sort(i.subvolumes.begin(), i.subvolumes.end());
  }
  return out;
}

size_t Fs::subvolume_count(const std::string& uuid) {
  size_t n = 0;
  if (auto d = sys::opendir_at(store_fd_.get(), uuid.c_str()); d)
    while (auto* e = ::readdir(d->get()))
      if (e->d_name[0] != '.') ++n;
  return n;
}

void Fs::removed(const std::string& name) {
  std::lock_guard g(tops_m_);
  std::erase_if(tops_, [&](const auto& kv) { return kv.second.name == name; });
}

struct stat Fs::snapshot_attr(const SnapshotInfo& s, const struct stat& dir, size_t subvolumes) {
  struct stat st = dir;
  // Open to all, as ZFS shows its snapshot directories: what may change is
  // decided by the daemon (the verbs, user.hoody.* xattrs) or is EROFS.
  st.st_mode = S_IFDIR | 0777;
  st.st_nlink = 2 + subvolumes;
  st.st_uid = 0;
  st.st_gid = 0;
  st.st_atim = st.st_mtim = st.st_ctim = timespec{static_cast<time_t>(s.created), 0};
  return st;
}

Result<fuse_entry_param> Fs::snapshot_entry(const SnapshotInfo& s) {
  HOODY_TRY(e, do_lookup(FUSE_ROOT_ID, s.uuid.c_str()));
  {
    std::lock_guard g(tops_m_);
    tops_[inode(e.ino)->src_ino] = Top{s.uuid, s.name};
  }
  e.attr = snapshot_attr(s, e.attr, subvolume_count(s.uuid));
  // Names at the root change by other means too (expiry, restore's safety
  // snapshot): the kernel asks again on every use, the contents stay cached.
  e.entry_timeout = 0;
  e.attr_timeout = cfg_.attr_timeout;
  return e;
}

struct stat Fs::root_attr() {
  struct stat st {};
  auto r = sys::fstat(store_fd_.get());
  if (r) st = *r;
  uint64_t gen = changes_.load();
  if (counted_at_.load() != gen) {
    if (auto n = store_->list(); n) {
      count_ = n->size();
      counted_at_ = gen;
    }
  }
  st.st_mode = S_IFDIR | 0777;  // anyone may try mkdir; the daemon decides (EPERM)
  st.st_nlink = 3 + count_.load();  // ., .., .hoody, one per snapshot
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

Result<std::shared_ptr<const std::string>> Fs::open_diff(
    const std::string& node_name, const Who& c,
    const std::function<void(DiffCache::Ticket)>& on_wait) {
  auto spec = vdir::parse_diff_name(node_name);
  if (!spec) return fail(ENOENT);
  // The key: both sides' uuids and generations, resolved now (a rename or a
  // new snapshot of the same name afterwards is another key).
  HOODY_TRY(from, store_->diff_side(spec->from));
  HOODY_TRY(to, store_->diff_side(spec->to));
  // "//" occurs in no identity (a subvolume name is never empty).
  std::string key = from.identity + "//" + to.identity;
  // The live state moves: shared while in flight, never kept.
  bool keep = !from.live() && !to.live();
  auto ticket = diff_cache_->ticket();
  on_wait(ticket);
  HOODY_TRY(text, diff_cache_->get(key, keep, ticket, [this, from, to] {
    // The store folds the send streams of each scope subvolume (and takes
    // temporary read-only snapshots of the live state for @live).
    return store_->diff_text(from, to);
  }));
  auto out = text->text_for(Reader{c.uid, c.gid, c.groups});
  log::get("snap")->debug("op=open_diff name={} uid={} lines={} bytes={} shown={}", node_name,
                          c.uid, text->lines(), text->text()->size(), out->size());
  return out;
}

}  // namespace hoody::snapfs
