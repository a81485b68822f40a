// The inode table, the fd budget and the configuration of the passthrough core.
#include <fcntl.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "hoody/log.hpp"
#include "hoody/mount_options.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

void add_options(OptionTable& t) {
  t.add({"entry_timeout", OptKind::seconds, "seconds the kernel caches names (default 1)"})
      .add({"attr_timeout", OptKind::seconds, "seconds the kernel caches attributes (default 1)"})
      .add({"negative_timeout", OptKind::seconds,
            "seconds the kernel caches a missing name (default 1)"})
      .add({"nocache", OptKind::flag, "no kernel caching at all (timeouts 0, no keep_cache)"})
      .add({"writeback_cache", OptKind::flag, "let the kernel buffer writes (off by default)"})
      .add({"splice_read", OptKind::flag, "receive WRITE data by splice (off by default)"})
      .add({"nosplice", OptKind::flag, "no splice at all"})
      .add({"noreaddirplus", OptKind::flag, "plain readdir only"})
      .add({"fd_budget", OptKind::uint,
            "most O_PATH fds kept open for inodes (default 3/4 of RLIMIT_NOFILE)"});
}

Config config_from(const MountArgs& a) {
  Config c;
  c.source = a.source;
  c.entry_timeout = a.seconds("entry_timeout", c.entry_timeout);
  c.attr_timeout = a.seconds("attr_timeout", c.attr_timeout);
  c.negative_timeout = a.seconds("negative_timeout", c.negative_timeout);
  if (a.flag("nocache")) {
    c.entry_timeout = c.attr_timeout = c.negative_timeout = 0;
    c.keep_cache = false;
    c.cache_readdir = false;
  }
  c.writeback_cache = a.flag("writeback_cache");
  c.splice_read = a.flag("splice_read");
  if (a.flag("nosplice")) c.splice_read = c.splice_write = false;
  c.readdirplus = !a.flag("noreaddirplus");
  c.read_only = a.flag("ro");
  c.fd_budget = a.uint("fd_budget", 0);
  c.io = a.str("io", c.io);
  return c;
}

FdRef::~FdRef() {
  if (inode_) {
    std::lock_guard g(inode_->m);
    --inode_->pins_;
  }
}

CallerCreds::CallerCreds(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 && ctx->gid == 0) return;
  // setfsuid/setfsgid act on the calling thread only (the raw syscalls; glibc
  // does not broadcast them to other threads as it does setuid).
  ::setfsgid(ctx->gid);
  ::setfsuid(ctx->uid);
  changed_ = true;
}

CallerCreds::~CallerCreds() {
  if (!changed_) return;
  ::setfsuid(0);
  ::setfsgid(0);
}

PassthroughFs::PassthroughFs(Config cfg) : cfg_(std::move(cfg)) {}

PassthroughFs::~PassthroughFs() = default;

Status PassthroughFs::open_source(std::string* why) {
  auto fd = sys::open(cfg_.source.c_str(), O_PATH | O_DIRECTORY);
  if (!fd) {
    *why = "source " + cfg_.source + ": " + fd.error().message();
    return fail(fd.error());
  }
  auto st = sys::fstat(fd->get());
  if (!st) {
    *why = "source " + cfg_.source + ": " + st.error().message();
    return fail(st.error());
  }
  auto* root = new Inode(std::move(*fd), st->st_dev, st->st_ino, st->st_mode);
  root->nlookup = 2;  // the kernel never forgets the root
  old_roots_.emplace_back(root);  // owns every root, current and replaced
  root_ = root;
  path_fds_ = 1;
  // The mount fd that reopens evicted inodes (open_by_handle_at refuses O_PATH fds).
  {
    auto buf = std::make_unique<char[]>(sizeof(file_handle) + MAX_HANDLE_SZ);
    auto* fh = reinterpret_cast<file_handle*>(buf.get());
    fh->handle_bytes = MAX_HANDLE_SZ;
    int mount_id;
    auto dir = sys::open(cfg_.source.c_str(), O_RDONLY | O_DIRECTORY);
    if (dir && ::name_to_handle_at(root->fd_.get(), "", fh, &mount_id, AT_EMPTY_PATH) == 0)
      mount_fds_.emplace(mount_id, std::move(*dir));
  }

  // Budget the O_PATH fds: raise the soft limit to the hard one and keep a
  // quarter for open files, directories and the rest of the daemon.
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      ::setrlimit(RLIMIT_NOFILE, &rl);
    }
    budget_ = cfg_.fd_budget ? cfg_.fd_budget : std::max<size_t>(64, rl.rlim_cur * 3 / 4);
  } else {
    budget_ = cfg_.fd_budget ? cfg_.fd_budget : 4096;
  }
  auto kind = io::parse_kind(cfg_.io).value_or(io::Kind::sync);
  if (kind == io::Kind::uring) {
    io_ = io::make_engine(kind);  // falls back to sync with a log line
    if (std::string(io_->name()) == "sync") io_.reset();
  }
  cfg_.io = io_ ? "uring" : "sync";
  log::get("fuse")->info("source={} fd_budget={} entry_timeout={} attr_timeout={} io={}",
                         cfg_.source, budget_, cfg_.entry_timeout, cfg_.attr_timeout, cfg_.io);
  return {};
}

Result<bool> PassthroughFs::reroot() {
  HOODY_TRY(fd, sys::open(cfg_.source.c_str(), O_PATH | O_DIRECTORY));
  HOODY_TRY(st, sys::fstat(fd.get()));
  Inode* cur = root_.load();
  if (st.st_dev == cur->src_dev && st.st_ino == cur->src_ino) return false;
  auto* root = new Inode(std::move(fd), st.st_dev, st.st_ino, st.st_mode);
  root->nlookup = 2;
  {
    std::lock_guard g(mutex_);
    old_roots_.emplace_back(root);
    ++path_fds_;
    root_ = root;
  }
  log::get("fuse")->warn("source {} was replaced (a restore?): serving the new directory "
                         "(dev={} ino={}); files open before keep the old one",
                         cfg_.source, st.st_dev, st.st_ino);
  return true;
}

ino_t PassthroughFs::shown_ino(dev_t dev, ino_t ino) {
  std::lock_guard g(dev_mu_);
  if (dev_index_.empty()) dev_index_.emplace(old_roots_.front()->src_dev, 0);
  auto [it, added] = dev_index_.emplace(dev, static_cast<ino_t>(dev_index_.size()));
  return it->second == 0 ? ino : ino ^ (static_cast<ino_t>(it->second) << 48);
}

Inode* PassthroughFs::inode(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return root_.load();
  return reinterpret_cast<Inode*>(ino);
}

size_t PassthroughFs::inode_count() {
  std::lock_guard g(mutex_);
  return inodes_.size() + 1;
}

Result<FdRef> PassthroughFs::pin(Inode* in) {
  std::unique_lock g(in->m);
  in->last_use_ = clock_.fetch_add(1, std::memory_order_relaxed);
  if (in->fd_.valid()) {
    ++in->pins_;
    return FdRef(in, in->fd_.get());
  }
  // Evicted: reopen from the file handle.
  int mount_fd = -1;
  {
    // mount_fds_ is guarded by mutex_, which must not be taken under in->m.
    g.unlock();
    std::lock_guard fg(mutex_);
    auto it = mount_fds_.find(in->mount_id_);
    if (it != mount_fds_.end()) mount_fd = it->second.get();
    g.lock();
  }
  if (in->fd_.valid()) {  // reopened by another thread meanwhile
    ++in->pins_;
    return FdRef(in, in->fd_.get());
  }
  if (mount_fd < 0 || !in->handle_) return fail(ESTALE);
  int fd = ::open_by_handle_at(mount_fd, reinterpret_cast<file_handle*>(in->handle_.get()),
                               O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(Errno::last());
  in->fd_.reset(fd);
  ++path_fds_;
  ++in->pins_;
  g.unlock();
  if (path_fds_.load() > budget_) {
    // This inode is pinned, so it stays; the idlest others give their fds back.
    std::lock_guard fg(mutex_);
    evict_over_budget();
  }
  return FdRef(in, fd);
}

void PassthroughFs::evict_over_budget() {
  // Called with mutex_ held.  Close the fds of the least recently used idle
  // inodes until we are 10% under budget.
  if (path_fds_.load() <= budget_) return;
  size_t target = budget_ - budget_ / 10;
  std::vector<std::pair<uint64_t, Inode*>> idle;
  for (auto& [key, in] : inodes_) {
    std::unique_lock g(in->m, std::try_to_lock);
    if (g.owns_lock() && in->pins_ == 0 && in->fd_.valid()) idle.emplace_back(in->last_use_, in.get());
  }
  std::sort(idle.begin(), idle.end(), [](auto& a, auto& b) { return a.first < b.first; });
  size_t evicted = 0;
  for (auto& [use, in] : idle) {
    if (path_fds_.load() <= target) break;
    std::unique_lock g(in->m, std::try_to_lock);
    if (!g.owns_lock() || in->pins_ != 0 || !in->fd_.valid()) continue;
    if (!in->handle_) {
      auto buf = std::make_unique<char[]>(sizeof(file_handle) + MAX_HANDLE_SZ);
      auto* fh = reinterpret_cast<file_handle*>(buf.get());
      fh->handle_bytes = MAX_HANDLE_SZ;
      int mount_id;
      if (::name_to_handle_at(in->fd_.get(), "", fh, &mount_id, AT_EMPTY_PATH) < 0) continue;
      in->handle_ = std::move(buf);
      in->mount_id_ = mount_id;
      if (!mount_fds_.count(mount_id)) {
        // open_by_handle_at needs a real (not O_PATH) fd on the same mount:
        // only a directory can give one without side effects.
        if (in->type != S_IFDIR) continue;
        auto d = sys::reopen(in->fd_.get(), O_RDONLY | O_DIRECTORY);
        if (!d) continue;
        mount_fds_.emplace(mount_id, std::move(*d));
      }
    }
    in->fd_.reset();
    --path_fds_;
    ++evicted;
  }
  log::get("fuse")->debug("fd budget: evicted={} open={} budget={}", evicted, path_fds_.load(),
                          budget_);
}

Result<fuse_entry_param> PassthroughFs::do_lookup(fuse_ino_t parent, const char* name) {
  Inode* dir = inode(parent);
  HOODY_TRY(dfd, pin(dir));
  HOODY_TRY(fd, sys::openat(dfd.get(), name, O_PATH | O_NOFOLLOW));
  HOODY_TRY(st, sys::fstatat(fd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));

  fuse_entry_param e{};
  e.attr = st;
  show(e.attr);
  e.attr_timeout = cfg_.attr_timeout;
  e.entry_timeout = cfg_.entry_timeout;
  Inode* child;
  {
    std::lock_guard g(mutex_);
    auto key = std::make_pair(st.st_dev, st.st_ino);
    auto it = inodes_.find(key);
    if (it != inodes_.end()) {
      child = it->second.get();
      // An evicted inode takes the fresh fd back; otherwise ours closes at return.
      std::lock_guard ig(child->m);
      if (!child->fd_.valid()) {
        child->fd_ = std::move(fd);
        ++path_fds_;
      }
    } else if (Inode* root = root_.load(); root->src_dev == st.st_dev && root->src_ino == st.st_ino) {
      child = root;  // a bind mount or a ".." back to the root
    } else {
      auto in = std::make_unique<Inode>(std::move(fd), st.st_dev, st.st_ino, st.st_mode);
      child = in.get();
      in->last_use_ = clock_.fetch_add(1, std::memory_order_relaxed);
      inodes_.emplace(key, std::move(in));
      ++path_fds_;
      evict_over_budget();
    }
    ++child->nlookup;
  }
  e.ino = ino_of(child);
  on_entry(*dir, *child, name);
  return e;
}

void PassthroughFs::forget_one(Inode* in, uint64_t n) {
  std::lock_guard g(mutex_);
  for (auto& r : old_roots_)
    if (in == r.get()) return;  // roots are never forgotten
  if (n > in->nlookup) {
    log::get("fuse")->error("forget of {} lookups on inode {} that has {}: kernel and daemon disagree",
                            n, in->src_ino, in->nlookup);
    n = in->nlookup;
  }
  in->nlookup -= n;
  if (in->nlookup == 0) {
    auto it = inodes_.find({in->src_dev, in->src_ino});
    if (it != inodes_.end() && it->second.get() == in) {
      on_forget(*in);
      if (in->fd_.valid()) --path_fds_;
      inodes_.erase(it);
    }
  }
}

Status PassthroughFs::may_mutate(fuse_req_t, const char*) {
  if (cfg_.read_only) return fail(EROFS);
  return {};
}

Status PassthroughFs::may_open(fuse_req_t req, Inode&, int flags) {
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) return may_mutate(req, "open for writing");
  return {};
}

void PassthroughFs::init(fuse_conn_info* conn) {
  auto want = [&](unsigned cap, bool on) {
    if (on && (conn->capable & cap))
      conn->want |= cap;
    else
      conn->want &= ~cap;
  };
  want(FUSE_CAP_SPLICE_WRITE, cfg_.splice_write);
  want(FUSE_CAP_SPLICE_MOVE, false);
  want(FUSE_CAP_SPLICE_READ, cfg_.splice_read);
  want(FUSE_CAP_WRITEBACK_CACHE, cfg_.writeback_cache && !cfg_.read_only);
  // The daemon is the only writer of its backing files: cached pages stay
  // valid when attributes are refreshed (fuse-limits.md, sqlite-locking.md 3.7).
  want(FUSE_CAP_AUTO_INVAL_DATA, false);
  want(FUSE_CAP_READDIRPLUS, cfg_.readdirplus);
  want(FUSE_CAP_READDIRPLUS_AUTO, cfg_.readdirplus);
  want(FUSE_CAP_PARALLEL_DIROPS, true);
  want(FUSE_CAP_ASYNC_READ, true);
  want(FUSE_CAP_ASYNC_DIO, true);
  // The process umask is 0: the kernel applies the caller's umask.
  want(FUSE_CAP_DONT_MASK, false);
  want(FUSE_CAP_EXPORT_SUPPORT, false);
  conn->time_gran = 1;  // nanosecond timestamps, as the backing filesystem has
}

}  // namespace hoody::pt
