#include "fs.hpp"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/send_stream.hpp"
#include "hoody/sys.hpp"
#include "store/format.hpp"

namespace hoody::snapfs {

static_assert(vdir::kVirtualBit == pt::kVirtualBit, "vdir's node ids are the core's virtual ids");

namespace {
// How many of the newest audit rows .hoody/log shows.
constexpr std::size_t kLogRows = 100000;
constexpr std::size_t kDiffJobs = 2;  // distinct diffs computed at once; more queue
int64_t secs(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
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
      .add({"prune_interval", OptKind::seconds,
            "seconds between sweeps for expired snapshots and runs of the schedule (60)"})
      .add({"quiesce_timeout", OptKind::seconds,
            "seconds a snapshot or restore waits for database transactions in flight (2)"})
      .add({"diff_cache_mb", OptKind::uint,
            "MiB of computed .hoody/diff/ results kept for the next reader (64; 0: none)"});
  return t;
}

Config config_from(const MountArgs& args) {
  Config c;
  c.core = pt::config_from(args);
  // nosuid,nodev are forced (main.cpp); a suid or dev given too (mount.fuse3
  // adds both as root) is dropped: kernel_mount_options.
  c.source = args.source;
  c.core.source = args.source + "/.snapshots";
  c.core.read_only = true;  // snapshot contents are read-only, whatever -o says
  // The root (snapshot names and .hoody/) is the daemon's; the store's
  // directory is root 0 under it (its <uuid> directories are the snapshots).
  c.core.virtual_root = true;
  c.core.source_under_virtual_root = true;
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
  stop_watch();
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
  if (const char* f = std::getenv("HOODY_TEST_CLOCK_FILE"); f && *f) {
    clock_file_ = f;
    log::get("snap")->warn("clock={} -> HOODY_TEST_CLOCK_FILE is set: \"now\" is read from it "
                           "(for tests only)",
                           clock_file_);
  }
  {
    // The contract of the dbfs control channel names its sockets after the
    // realpath of the dbfs SOURCE, SOURCE/<subvolume> here (an admin's path).
    char real[PATH_MAX];
    source_real_ = ::realpath(scfg_.source.c_str(), real) ? real : scfg_.source;
  }
  source_fd_ = std::move(*src);
  store_fd_ = std::move(sdir);
  store_ = std::move(*store);
  store_->set_clock([this] { return now(); });
  diff_cache_ = std::make_unique<DiffCache>(
      DiffCacheOptions{static_cast<std::size_t>(std::min<uint64_t>(scfg_.diff_cache_mb, 1u << 20))
                           << 20,
                       kDiffJobs},
      [this](std::function<void()> job) { offload(std::move(job)); });
  root_mtime_ = secs(now());
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
  // Closed before fuse_daemonize forks, opened again in attached(): see
  // SnapshotStore::close_index().
  store_->close_index();
  log::get("snap")->info("source={} snapshots={} prune_interval={}s quiesce_timeout={}s "
                         "default_expiry={} allow_users={} allow_groups={}",
                         scfg_.source, n ? n->size() : 0, scfg_.prune_interval,
                         scfg_.quiesce_timeout,
                         scfg_.default_expiry.empty() ? "none" : scfg_.default_expiry,
                         scfg_.allow_users, scfg_.allow_groups);
  return {};
}

fuse_lowlevel_ops Fs::ops() { return make_ops({}); }

void Fs::attached(fuse_session* se) {
  se_ = se;
  if (auto r = store_->reopen_index(); !r) {
    log::get("snap")->error("op=open index={}/{}/index.db -> {}: cannot serve without it",
                            scfg_.source, kStoreDir, r.error().message());
    fuse_session_exit(se);
  }
}

std::function<int(uint64_t)> Fs::tmpfile_errno() {
  return [](uint64_t nodeid) {
    return nodeid == FUSE_ROOT_ID || pt::is_virtual_id(nodeid) ? EPERM : EROFS;
  };
}

void Fs::init(fuse_conn_info* conn) {
  pt::PassthroughFs::init(conn);
  // POSIX ACLs handled by the kernel: it enforces the ACLs of snapshot files
  // (read from the daemon as system.posix_acl_* xattrs) and caches them per
  // inode.  Snapshots never change, so the cache is never stale, and `ls -l`
  // (which asks for both ACLs of every entry) costs no round trips for them
  // after the first listing.  It implies default_permissions.
  if (conn->capable & FUSE_CAP_POSIX_ACL) conn->want |= FUSE_CAP_POSIX_ACL;
  // Started here, after fuse_daemonize(): a thread started before the fork
  // would not exist in the daemon.
  if (!prune_thread_.joinable()) prune_thread_ = std::thread([this] { prune_loop(); });
  if (!watch_thread_.joinable()) {
    watch_stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    watch_thread_ = std::thread([this] { watch_loop(); });
  }
}

void Fs::stop_watch() {
  if (!watch_thread_.joinable()) return;
  uint64_t one = 1;
  if (watch_stop_) (void)!::write(watch_stop_.get(), &one, sizeof one);
  watch_thread_.join();
}

// A snapshot received by `hoody-snap receive` (store/transfer.cpp) lands in
// the index from another process, which then touches .snapshots (futimens):
// IN_ATTRIB on the directory itself.  The listing is rebuilt and the kernel
// forgets the root's cached listing, so the snapshot shows at once.
void Fs::watch_loop() {
  auto lg = log::get("snap");
  UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!in) {
    lg->warn("op=watch -> inotify: {}; received snapshots show after the next change",
             std::strerror(errno));
    return;
  }
  if (::inotify_add_watch(in.get(), sys::proc_fd(store_fd_.get()).c_str(), IN_ATTRIB | IN_ONLYDIR) < 0) {
    lg->warn("op=watch -> {}; received snapshots show after the next change", std::strerror(errno));
    return;
  }
  alignas(struct inotify_event) char buf[4096];
  for (;;) {
    {
      std::lock_guard g(prune_m_);
      if (stop_) return;
    }
    struct pollfd p[2] = {{in.get(), POLLIN, 0}, {watch_stop_.get(), POLLIN, 0}};
    int n = ::poll(p, watch_stop_ ? 2 : 1, watch_stop_ ? -1 : 250);
    if (n > 0 && (p[1].revents & POLLIN)) return;
    if (n <= 0 || !(p[0].revents & POLLIN)) continue;
    bool touched = false;
    for (;;) {
      ssize_t n = ::read(in.get(), buf, sizeof buf);
      if (n <= 0) break;
      for (ssize_t off = 0; off < n;) {
        auto* ev = reinterpret_cast<struct inotify_event*>(buf + off);
        if (ev->len == 0 && (ev->mask & IN_ATTRIB)) touched = true;
        off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
      }
    }
    if (!touched) continue;
    lg->info("op=watch -> the store was touched (a received snapshot): listing re-read");
    changed();
    if (se_) (void)fuse_lowlevel_notify_inval_inode(se_, FUSE_ROOT_ID, 0, 0);
  }
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
  stop_watch();
}

void Fs::prune_loop() {
  auto interval = std::chrono::duration<double>(scfg_.prune_interval);
  // The schedule runs at once after a start (a slot due while the daemon was
  // down is taken now), then with the expiry sweep.
  auto next = std::chrono::steady_clock::now();
  std::unique_lock g(prune_m_);
  while (!stop_) {
    prune_cv_.wait_until(g, next, [this] { return stop_ || recover_due_ || schedule_due_; });
    if (stop_) break;
    bool recover = std::exchange(recover_due_, false);
    bool schedule = std::exchange(schedule_due_, false);
    g.unlock();
    if (recover) {
      // A restore returned right after its swap; its old live subvolumes are deleted here.
      if (auto r = store_->recover(); !r) log::get("snap")->warn("recover: {}", r.error().message());
    }
    if (schedule || std::chrono::steady_clock::now() >= next) {
      auto t = now();
      schedule_once(t);
      prune_once();
      schedule_checked_ = secs(t);
      diff_cache_->drop_idle(std::chrono::steady_clock::now());
      next = std::chrono::steady_clock::now() + std::chrono::duration_cast<
                                                    std::chrono::steady_clock::duration>(interval);
    }
    g.lock();
  }
}

Result<Snapshot> Fs::take_snapshot(std::string_view name, const Who& c, CreateOptions opts) {
  // The databases are held while the scope subvolumes are snapshotted.
  auto dbfs = peers();
  opts.quiescer = dbfs.get();
  return store_->create(name, c.store(), opts);
}

std::unique_ptr<DbfsPeers> Fs::peers() {
  auto t = std::chrono::milliseconds(static_cast<int64_t>(scfg_.quiesce_timeout * 1000));
  return std::make_unique<DbfsPeers>(source_real_, t);
}

void Fs::changed() {
  root_mtime_ = secs(now());
  ++changes_;
}

void Fs::schedule_soon() {
  {
    std::lock_guard g(prune_m_);
    schedule_due_ = true;
  }
  prune_cv_.notify_all();
}

TimePoint Fs::now() const {
  if (clock_file_.empty()) return Clock::now();
  // One integer, unix seconds; unreadable or empty: the system clock.
  int fd = ::open(clock_file_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Clock::now();
  char buf[32] = {};
  ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  char* end = nullptr;
  long long v = n > 0 ? std::strtoll(buf, &end, 10) : 0;
  if (n <= 0 || end == buf) return Clock::now();
  auto t = time_point(static_cast<int64_t>(v));
  return t ? *t : Clock::now();
}

Result<std::shared_ptr<const Fs::Listing>> Fs::listing() {
  // The generation is read before the store: a change committed meanwhile
  // bumps changes_ after its commit, so this listing is rebuilt next time.
  uint64_t gen = changes_.load();
  {
    std::lock_guard g(listing_m_);
    if (listing_ && listing_->gen == gen) return listing_;
  }
  // One rebuild at a time: the requests that arrive meanwhile take its result.
  std::lock_guard rb(rebuild_m_);
  gen = changes_.load();
  {
    std::lock_guard g(listing_m_);
    if (listing_ && listing_->gen == gen) return listing_;
  }
  HOODY_TRY(all, store_->list());
  auto l = std::make_shared<Listing>();
  l->gen = gen;
  l->all.reserve(all.size());
  for (auto& s : all) {
    l->by_name[s.name] = l->all.size();
    l->by_uuid[s.uuid] = l->all.size();
    l->all.push_back(std::move(s));
  }
  std::lock_guard g(listing_m_);
  if (!listing_ || listing_->gen <= gen) listing_ = l;
  return std::shared_ptr<const Listing>(std::move(l));
}

void Fs::forget_names(const std::vector<std::string>& names) {
  if (!se_ || names.empty()) return;
  for (auto& n : names) {
    int r = fuse_lowlevel_notify_inval_entry(se_, FUSE_ROOT_ID, n.c_str(), n.size());
    if (r < 0 && r != -ENOENT)
      log::get("snap")->debug("op=inval_entry name={} -> {}", quote_name(n), std::strerror(-r));
  }
  (void)fuse_lowlevel_notify_inval_inode(se_, FUSE_ROOT_ID, 0, 0);
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
  auto removed = store_->prune_expired(now(), daemon.store());
  if (!removed) {
    log::get("snap")->warn("prune: {}", removed.error().message());
    return;
  }
  for (auto& name : *removed) {
    done(daemon, "prune", name, 0, "", "expired");
    this->removed(name);
  }
  if (!removed->empty()) {
    changed();
    forget_names(*removed);
  }
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
  if (auto r = store_->record(c.store(), action, name, Errno(err), to, reason); !r)
    log::get("snap")->error("op=audit action={} name={} -> not recorded: {}", action,
                            quote_name(name), r.error().message());
  done(c, action, name, err, to, reason);
}

void Fs::done(const Who& c, const std::string& action, const std::string& name, int err,
              const std::string& to, const std::string& reason) {
  AuditEntry e{now(), c.uid, c.pid, action, name, vdir::audit_result(err, reason), to};
  std::string line = vdir::audit_line(e);
  line.pop_back();
  // JSON escapes C0 controls; a name or value may still carry DEL or C1
  // controls (U+009B is CSI): escaped too, so a log line cannot drive a terminal.
  line = escape_control(line, false);
  if (err)
    log::get("snap")->warn("audit {}", line);
  else
    log::get("snap")->info("audit {}", line);
}

Result<std::string> Fs::audit_text() {
  HOODY_TRY(rows, store_->audit_log(kLogRows));
  std::string out;
  for (auto& r : rows) out += vdir::audit_line(r);
  return out;
}

// Snapshots are read-only: every change inside one is refused before it acts.
Status Fs::allow(fuse_req_t, const pt::Access& a) {
  if (a.mutates()) return fail(EROFS);
  return {};
}

std::optional<Snapshot> Fs::snapshot_of(fuse_ino_t ino) {
  if (is_vnode(ino)) return std::nullopt;
  pt::Inode* in = inode(ino);
  if (in->src_dev != store_dev_) return std::nullopt;
  Top top;
  {
    std::lock_guard g(tops_m_);
    auto it = tops_.find(in->src_ino);
    if (it == tops_.end()) return std::nullopt;
    top = it->second;
  }
  auto l = listing();
  if (!l) return std::nullopt;
  auto it = (*l)->by_uuid.find(top.uuid);
  if (it == (*l)->by_uuid.end()) return std::nullopt;  // deleted
  const auto& x = (*l)->all[it->second];
  if (x.name != top.name) {  // renamed by other means
    std::lock_guard g(tops_m_);
    tops_[in->src_ino].name = x.name;
  }
  return x;
}

void Fs::on_forget(pt::Inode& in) {
  if (in.src_dev != store_dev_) return;
  std::lock_guard g(tops_m_);
  if (auto it = tops_.find(in.src_ino); it != tops_.end()) in_kernel_.erase(it->second.uuid);
}

bool Fs::in_kernel(const std::string& uuid) {
  std::lock_guard g(tops_m_);
  return in_kernel_.count(uuid) != 0;
}

void Fs::renamed(const std::string& from, const std::string& to) {
  std::lock_guard g(tops_m_);
  for (auto& [ino, top] : tops_)
    if (top.name == from) top.name = to;
}

Result<Snapshot> Fs::get_info(const std::string& name, bool with_subvolumes) {
  HOODY_TRY(l, listing());
  auto it = l->by_name.find(name);
  if (it == l->by_name.end()) return fail(ENOENT);
  auto i = l->all[it->second];
  if (with_subvolumes) {
    if (auto d = sys::opendir_at(store_fd_.get(), i.uuid.c_str()); d)
      while (auto* e = ::readdir(d->get()))
        if (e->d_name[0] != '.') i.subvolumes.push_back(e->d_name);
    std::sort(i.subvolumes.begin(), i.subvolumes.end());
  }
  return i;
}

Result<std::vector<Snapshot>> Fs::list_info(bool with_subvolumes) {
  HOODY_TRY(l, listing());
  std::vector<Snapshot> out;
  out.reserve(l->all.size());
  for (auto& s : l->all) {
    out.push_back(s);
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
  {
    std::lock_guard g(listing_m_);
    if (auto it = subvols_.find(uuid); it != subvols_.end()) return it->second;
  }
  size_t n = 0;
  auto d = sys::opendir_at(store_fd_.get(), uuid.c_str());
  if (!d) return 0;
  while (auto* e = ::readdir(d->get()))
    if (e->d_name[0] != '.') ++n;
  // A snapshot's directory is read-only: its count never changes.
  std::lock_guard g(listing_m_);
  subvols_[uuid] = n;
  return n;
}

void Fs::removed(const std::string& name) {
  std::string uuid;
  {
    std::lock_guard g(tops_m_);
    std::erase_if(tops_, [&](const auto& kv) {
      if (kv.second.name != name) return false;
      uuid = kv.second.uuid;
      return true;
    });
    if (!uuid.empty()) in_kernel_.erase(uuid);
  }
  if (uuid.empty()) return;
  std::lock_guard g(listing_m_);
  subvols_.erase(uuid);
}

struct stat Fs::snapshot_attr(const Snapshot& s, const struct stat& dir, size_t subvolumes) {
  struct stat st = dir;
  // Open to all, as ZFS shows its snapshot directories: what may change is
  // decided by the daemon (the verbs, user.hoody.* xattrs) or is EROFS.
  st.st_mode = S_IFDIR | 0777;
  st.st_nlink = 2 + subvolumes;
  st.st_uid = 0;
  st.st_gid = 0;
  st.st_atim = st.st_mtim = st.st_ctim = timespec{static_cast<time_t>(secs(s.created)), 0};
  return st;
}

Result<fuse_entry_param> Fs::snapshot_entry(const Snapshot& s) {
  HOODY_TRY(e, do_lookup(root_ino(pt::kSourceRoot), s.uuid.c_str()));
  const ino_t backing = inode(e.ino)->src_ino;
  {
    std::lock_guard g(tops_m_);
    tops_[backing] = Top{s.uuid, s.name};
    in_kernel_.insert(s.uuid);
  }
  e.attr = snapshot_attr(s, e.attr, subvolume_count(s.uuid));
  // Cached long: every change reaches the kernel.  Names go through it
  // (rmdir, rename) or, when the daemon removes them by itself (expiry, the
  // schedule), are invalidated as they go (forget_names); a new name is never
  // cached as missing (lookups answer ENOENT, no negative entry).  The
  // attributes of a snapshot's directory never change.
  e.entry_timeout = kTopTimeout;
  e.attr_timeout = kTopTimeout;
  return e;
}

struct stat Fs::root_attr() {
  struct stat st {};
  auto r = sys::fstat(store_fd_.get());
  if (r) st = *r;
  uint64_t gen = changes_.load();
  if (counted_at_.load() != gen) {
    if (auto l = listing(); l) {
      count_ = (*l)->all.size();
      counted_at_ = (*l)->gen;
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

ino_t Fs::shown_ino_of(uint64_t ino) {
  return ino == FUSE_ROOT_ID ? ino : (ino & ~pt::kVirtualBit) | (1ull << 62);
}

struct stat Fs::virtual_attr(uint64_t ino, const Who* caller) {
  struct stat st {};
  st.st_ino = shown_ino_of(ino);
  st.st_mode = vdir::node_mode(ino);
  // The log is for the users allowed to act (open() checks it): each of
  // them sees it as their own, so that the kernel's permission check, which
  // reads these bits, lets them open it.  Shown with attr_timeout 0.
  if (ino == vdir::kLog && caller && allowed(*caller)) st.st_uid = caller->uid;
  st.st_nlink = S_ISDIR(st.st_mode) ? 2 : 1;
  if (ino == vdir::kCtlDir) st.st_nlink = 3;
  st.st_blksize = 4096;
  st.st_atim = st.st_mtim = st.st_ctim = timespec{static_cast<time_t>(root_mtime_.load()), 0};
  return st;
}

fuse_entry_param Fs::ctl_entry(uint64_t ino, const Who* caller) {
  fuse_entry_param e{};
  e.ino = ino;
  e.attr = virtual_attr(ino, caller);
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
