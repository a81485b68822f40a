// The inode table, the fd budget and the configuration of the passthrough core.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/fsuid.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
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
    // A stale inode's fd closes with its last pin (never under a request using it).
    if (--inode_->pins_ == 0 && inode_->retired_) inode_->fd_.reset();
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

PassthroughFs::PassthroughFs(Config cfg) : cfg_(std::move(cfg)) {
  if (const char* v = std::getenv("HOODY_BENCH_NO_REVOKE_CHECK"); v && std::strcmp(v, "1") == 0) {
    revoke_check_ = false;
    log::get("fuse")->warn("op=start check=revoke -> OFF (HOODY_BENCH_NO_REVOKE_CHECK=1: a benchmark "
                         "switch; a revoked share stays readable)");
  }
}

PassthroughFs::~PassthroughFs() { stop_lock_waits(); }

namespace {
// The mount fd that reopens evicted inodes (open_by_handle_at refuses O_PATH
// fds): a directory fd on the same mount as the O_PATH directory `dir`.
std::pair<int, UniqueFd> mount_fd_of(int dir) {
  auto buf = std::make_unique<char[]>(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(buf.get());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = -1;
  auto d = sys::reopen(dir, O_RDONLY | O_DIRECTORY);
  if (d && ::name_to_handle_at(dir, "", fh, &mount_id, AT_EMPTY_PATH) == 0)
    return {mount_id, std::move(*d)};
  return {-1, UniqueFd()};
}

struct stat stat_of(const struct statx& sx) {
  struct stat st {};
  st.st_dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  st.st_ino = sx.stx_ino;
  st.st_mode = sx.stx_mode;
  st.st_nlink = sx.stx_nlink;
  st.st_uid = sx.stx_uid;
  st.st_gid = sx.stx_gid;
  st.st_rdev = makedev(sx.stx_rdev_major, sx.stx_rdev_minor);
  st.st_size = static_cast<off_t>(sx.stx_size);
  st.st_blksize = static_cast<blksize_t>(sx.stx_blksize);
  st.st_blocks = static_cast<blkcnt_t>(sx.stx_blocks);
  st.st_atim = {sx.stx_atime.tv_sec, sx.stx_atime.tv_nsec};
  st.st_mtim = {sx.stx_mtime.tv_sec, sx.stx_mtime.tv_nsec};
  st.st_ctim = {sx.stx_ctime.tv_sec, sx.stx_ctime.tv_nsec};
  return st;
}

int mnt_id_of(int fd) {
  struct statx sx;
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MNT_ID, &sx) < 0) return -1;
  return (sx.stx_mask & STATX_MNT_ID) ? static_cast<int>(sx.stx_mnt_id) : -1;
}
}  // namespace

Status PassthroughFs::open_source(std::string* why) {
  if (cfg_.virtual_root && !cfg_.source_under_virtual_root) {
    // No SOURCE root: the roots come with add_root().  Id 0 stays unused.
    roots_.push_back(nullptr);
  } else {
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
    auto* r = new Root(kSourceRoot, cfg_.source);
    roots_.emplace_back(r);
    r->mnt_id = mnt_id_of(fd->get());
    auto [mount_id, dir] = mount_fd_of(fd->get());
    auto* root = new Inode(std::move(*fd), st->st_dev, st->st_ino, st->st_mode, r, 0);
    root->nlookup = 2;  // the kernel never forgets the root
    root->is_root = true;
    old_roots_.emplace_back(root);  // owns every root, current and replaced
    r->inode = root;
    source_root_ = r;
    path_fds_ = 1;
    {
      std::lock_guard g(dev_mu_);
      dev_index_.emplace(st->st_dev, 0);
    }
    if (dir) mount_fds_.emplace(mount_id, std::move(dir));
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
  log::get("fuse")->info("source={} fd_budget={} entry_timeout={} attr_timeout={} io={}",
                         cfg_.virtual_root && !cfg_.source_under_virtual_root ? "(virtual)" : cfg_.source, budget_,
                         cfg_.entry_timeout, cfg_.attr_timeout, cfg_.io);
  return {};
}

uint64_t PassthroughFs::epoch() const {
  Root* r = source_root_.load();
  return r ? r->epoch.load() : 0;
}

Root* PassthroughFs::root(RootId id) {
  std::lock_guard g(mutex_);
  return id < roots_.size() ? roots_[id].get() : nullptr;
}

Result<RootId> PassthroughFs::add_root(UniqueFd dir, std::string name, bool read_only,
                                       uint64_t tag) {
  HOODY_TRY(st, sys::fstat(dir.get()));
  if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR);
  int mnt = mnt_id_of(dir.get());
  auto [mount_id, mdir] = mount_fd_of(dir.get());
  std::lock_guard g(mutex_);
  auto id = static_cast<RootId>(roots_.size());
  auto* r = new Root(id, std::move(name));
  roots_.emplace_back(r);
  r->mnt_id = mnt;
  r->read_only = read_only;
  r->tag = tag;
  r->epoch = next_epoch_++;
  auto* in = new Inode(std::move(dir), st.st_dev, st.st_ino, st.st_mode, r, r->epoch.load());
  in->is_root = true;
  in->last_use_ = clock_.fetch_add(1, std::memory_order_relaxed);
  old_roots_.emplace_back(in);
  r->inode = in;
  ++path_fds_;
  if (mdir && !mount_fds_.count(mount_id)) {
    mount_fds_.emplace(mount_id, std::move(mdir));
    mount_owner_[mount_id] = id;
  }
  log::get("fuse")->debug("op=add_root root={} name={} dev={} ino={} ro={}", id, r->name,
                          st.st_dev, st.st_ino, read_only);
  return id;
}

std::vector<Inode*> PassthroughFs::retire_locked(Root& r, std::vector<fuse_ino_t>* nodes) {
  std::vector<Inode*> retired;
  for (auto it = inodes_.begin(); it != inodes_.end();) {
    if (it->second->root != &r) {
      ++it;
      continue;
    }
    Inode* in = it->second.get();
    retired.push_back(in);
    if (nodes) nodes->push_back(reinterpret_cast<fuse_ino_t>(in));
    stale_.emplace(in, std::move(it->second));
    it = inodes_.erase(it);
  }
  if (Inode* cur = r.inode.load()) retired.push_back(cur);
  return retired;
}

void PassthroughFs::close_retired(const std::vector<Inode*>& retired, size_t* closed) {
  // Called with mutex_ held (the inodes are in stale_ and a FORGET would free
  // them).  Close what we hold in the old tree (a pinned fd closes with its
  // last pin); closing an O_PATH fd does not block.
  for (Inode* in : retired) {
    std::lock_guard ig(in->m);
    in->retired_ = true;
    in->handle_.reset();
    if (in->fd_.valid()) {
      --path_fds_;
      ++*closed;
      if (in->pins_ == 0) in->fd_.reset();
    }
  }
}

Result<Removed> PassthroughFs::remove_root(RootId id) {
  Removed out;
  out.id = id;
  std::vector<Inode*> retired;
  size_t closed = 0;
  Root* r;
  {
    std::lock_guard g(mutex_);
    if (id >= roots_.size() || !roots_[id]) return fail(ENOENT);
    r = roots_[id].get();
    if (r->revoked.load()) return out;
    // Revoked first: from here on no request of this root passes check().
    r->revoked = true;
    r->epoch = next_epoch_++;
    retired = retire_locked(*r, &out.nodes);
    if (Inode* cur = r->inode.load()) out.nodes.push_back(reinterpret_cast<fuse_ino_t>(cur));
    // Under mutex_: once it is released, a FORGET may free a retired inode.
    close_retired(retired, &closed);
    // The mount fd it gave (a directory in its tree) goes too; another live
    // root on that mount gives one instead.
    for (auto it = mount_owner_.begin(); it != mount_owner_.end();) {
      if (it->second != id) {
        ++it;
        continue;
      }
      int mount_id = it->first;
      mount_fds_.erase(mount_id);
      it = mount_owner_.erase(it);
      for (auto& other : roots_) {
        if (!other || other.get() == r || other->revoked.load() || other->mnt_id != mount_id) continue;
        Inode* oin = other->inode.load();
        std::lock_guard ig(oin->m);
        if (!oin->fd_.valid()) continue;
        auto d = sys::reopen(oin->fd_.get(), O_RDONLY | O_DIRECTORY);
        if (!d) continue;
        mount_fds_.emplace(mount_id, std::move(*d));
        mount_owner_[mount_id] = other->id;
        break;
      }
    }
  }
  // Its locks on the backing files go too: the owner's tree no longer sees a
  // lock of a container that lost the share.
  drop_root_locks(r);
  // Open files: their backing fds go at once.  dup3 over the fd keeps its
  // number valid for a request that passed check() just before (it reads
  // /dev/null), so no fd number is ever reused under a running request.
  auto null = sys::open("/dev/null", O_RDWR);
  {
    std::lock_guard g(files_mu_);
    for (File* f : open_files_) {
      if (f->root != r || !f->fd.valid()) continue;
      if (null && ::dup3(null->get(), f->fd.get(), O_CLOEXEC) >= 0) ++out.files;
    }
  }
  log::get("fuse")->info("op=remove_root root={} name={} inodes={} fds_closed={} open_files={}",
                         id, r->name, retired.size(), closed, out.files);
  return out;
}

Status PassthroughFs::set_read_only(RootId id, bool ro) {
  Root* r = root(id);
  if (!r) return fail(ENOENT);
  r->read_only = ro;
  return {};
}

fuse_ino_t PassthroughFs::root_ino(RootId id) {
  Root* r = root(id);
  if (!r || !r->inode.load()) return 0;
  return ino_of(r->inode.load());
}

Result<fuse_entry_param> PassthroughFs::root_entry(RootId id) {
  Root* r = root(id);
  if (!r) return fail(ENOENT);
  if (r->revoked.load()) return fail(ESTALE);
  Inode* in = r->inode.load();
  HOODY_TRY(fd, pin(in));
  HOODY_TRY(st, sys::fstatat(fd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
  fuse_entry_param e{};
  e.attr = st;
  show(e.attr);
  e.attr_timeout = cfg_.attr_timeout;
  e.entry_timeout = cfg_.entry_timeout;
  {
    std::lock_guard g(mutex_);
    if (r->revoked.load()) return fail(ESTALE);
    ++in->nlookup;
  }
  e.ino = ino_of(in);
  return e;
}

std::vector<fuse_ino_t> PassthroughFs::nodes_of(RootId id) {
  std::vector<fuse_ino_t> out;
  std::lock_guard g(mutex_);
  if (id >= roots_.size() || !roots_[id]) return out;
  Root* r = roots_[id].get();
  for (auto& [key, in] : inodes_)
    if (in->root == r) out.push_back(reinterpret_cast<fuse_ino_t>(in.get()));
  if (Inode* cur = r->inode.load()) out.push_back(ino_of(cur));
  return out;
}

void PassthroughFs::invalidate_nodes(fuse_session* se, const std::vector<fuse_ino_t>& nodes) {
  if (!se) return;
  size_t failed = 0;
  for (fuse_ino_t n : nodes) {
    // Attributes and every cached page (mmaps of it are unmapped: the next
    // touch faults and reads through the daemon).
    int rc = fuse_lowlevel_notify_inval_inode(se, n, 0, 0);
    if (rc < 0 && rc != -ENOENT) ++failed;
  }
  if (failed)
    log::get("fuse")->warn("op=inval_inode nodes={} failed={}", nodes.size(), failed);
}

namespace {
// The names in a directory (no "." and ".."), from an O_PATH fd.
std::vector<std::string> list_names(int dirfd) {
  std::vector<std::string> out;
  auto d = sys::opendir_at(dirfd, ".");
  if (!d) return out;
  while (struct dirent* e = ::readdir(d->get())) {
    const char* n = e->d_name;
    if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))) continue;
    out.emplace_back(n);
  }
  return out;
}
}  // namespace

Result<Reroot> PassthroughFs::reroot() {
  Root* src = source_root_.load();
  if (!src) return fail(EINVAL);
  HOODY_TRY(fd, sys::open(cfg_.source.c_str(), O_PATH | O_DIRECTORY));
  HOODY_TRY(st, sys::fstat(fd.get()));
  Inode* cur = src->inode.load();
  Reroot r;
  r.epoch = src->epoch.load();
  if (st.st_dev == cur->src_dev && st.st_ino == cur->src_ino) return r;
  // Blocking work first, without mutex_: both listings and the new mount fd.
  {
    auto pinned = pin(cur);
    if (pinned) r.old_names = list_names(pinned->get());
  }
  r.new_names = list_names(fd.get());
  auto [mount_id, mount_dir] = mount_fd_of(fd.get());
  int mnt = mnt_id_of(fd.get());

  std::vector<Inode*> retired;
  size_t closed = 0;
  {
    std::lock_guard g(mutex_);
    const uint64_t epoch = next_epoch_++;
    auto* root = new Inode(std::move(fd), st.st_dev, st.st_ino, st.st_mode, src, epoch);
    root->nlookup = 2;
    root->is_root = true;
    old_roots_.emplace_back(root);
    // Every inode known so far of the source belongs to the old tree: out of
    // the table, so no lookup finds one again (a later subvolume may even
    // reuse its st_dev).
    retired = retire_locked(*src, &r.stale);
    // The mount fds of the old tree keep it alive: one on the new root instead.
    mount_fds_.clear();
    mount_owner_.clear();
    if (mount_dir) mount_fds_.emplace(mount_id, std::move(mount_dir));
    {
      // A fresh st_ino prefix for the new tree, even if its st_dev was seen
      // before: SQLite tells files apart by (st_dev, st_ino), and a process
      // may hold the old app.db and open the new one.
      std::lock_guard dg(dev_mu_);
      dev_index_[st.st_dev] = next_prefix_++;
    }
    src->mnt_id = mnt;
    src->epoch = epoch;
    src->inode = root;
    ++path_fds_;
    r.epoch = epoch;
    // Under mutex_: once it is released, a FORGET may free a retired inode.
    close_retired(retired, &closed);
  }
  r.changed = true;
  log::get("fuse")->warn("source {} was replaced (a restore?): serving the new directory "
                         "(dev={} ino={}) as epoch {}; {} inodes of the old tree are stale "
                         "({} fds closed); files opened before refuse changes (EIO)",
                         cfg_.source, st.st_dev, st.st_ino, r.epoch, retired.size(), closed);
  return r;
}

void PassthroughFs::invalidate_kernel(fuse_session* se, const Reroot& r) {
  if (!se || !r.changed) return;
  auto lg = log::get("fuse");
  // The root's attributes and its cached listing (pages of the directory).
  int rc = fuse_lowlevel_notify_inval_inode(se, FUSE_ROOT_ID, 0, 0);
  if (rc < 0 && rc != -ENOENT) lg->warn("op=inval_inode ino=1 -> {}", std::strerror(-rc));
  // Every name of both roots: positive entries of the old tree (d_invalidate
  // drops their subtrees) and negative entries of names the new tree has.
  std::set<std::string> names(r.old_names.begin(), r.old_names.end());
  names.insert(r.new_names.begin(), r.new_names.end());
  size_t failed = 0;
  for (const auto& n : names) {
    rc = fuse_lowlevel_notify_inval_entry(se, FUSE_ROOT_ID, n.c_str(), n.size());
    if (rc < 0 && rc != -ENOENT) ++failed;  // ENOENT: the kernel had not cached it
  }
  if (failed) lg->warn("op=inval_entry names={} failed={} -> some names may show the old tree "
                       "for up to entry_timeout", names.size(), failed);
  lg->debug("op=inval_entry names={} -> done", names.size());
}

std::string PassthroughFs::path_locked(const Inode* in) {
  // Called with mutex_ held.  Walks the names up to the root (bounded).
  std::string path = in->name;
  Inode* root = in->root->inode.load();
  auto key = in->parent_key;
  for (int depth = 0; depth < 64; ++depth) {
    if ((root && key == root->key()) || key.dev == 0) break;
    auto it = inodes_.find(key);
    const Inode* p = nullptr;
    if (it != inodes_.end()) {
      p = it->second.get();
    } else {
      for (auto& [ptr, st] : stale_)
        if (st->key() == key) {
          p = st.get();
          break;
        }
    }
    if (!p) {
      path = "?/" + path;
      break;
    }
    path = p->name + "/" + path;
    key = p->parent_key;
  }
  if (cfg_.virtual_root && !in->root->name.empty()) path = in->root->name + "/" + path;
  return path;
}

std::string PassthroughFs::dir_path(dev_t dev, ino_t ino) {
  std::lock_guard g(mutex_);
  Root* src = source_root_.load();
  if (!src) return "?";
  Inode* root = src->inode.load();
  if (dev == root->src_dev && ino == root->src_ino) return "";
  auto it = inodes_.find(Key{src->id, dev, ino});
  if (it != inodes_.end()) return path_locked(it->second.get());
  for (auto& [ptr, st] : stale_)
    if (st->src_dev == dev && st->src_ino == ino) return path_locked(st.get());
  for (auto& r : old_roots_)
    if (r->src_dev == dev && r->src_ino == ino) return "";
  return "?";
}

bool PassthroughFs::parent_entry(fuse_ino_t ino, fuse_ino_t* parent, std::string* name) {
  if (is_vnode(ino)) return false;
  Inode* in = inode(ino);
  std::lock_guard g(mutex_);
  if (in->name.empty()) return false;
  Inode* dir = nullptr;
  if (Inode* r = in->root->inode.load(); r && r->key() == in->parent_key) {
    dir = r;
  } else {
    auto it = inodes_.find(in->parent_key);
    if (it == inodes_.end()) return false;
    dir = it->second.get();
  }
  *parent = ino_of(dir);
  *name = in->name;
  return true;
}

void PassthroughFs::track(File* f, fuse_req_t req) {
  f->pid = fuse_req_ctx(req)->pid;
  {
    std::lock_guard g(mutex_);
    if (f->inode)
      f->path = f->inode->is_root ? (cfg_.virtual_root ? f->inode->root->name : ".")
                                  : path_locked(f->inode);
  }
  std::lock_guard g(files_mu_);
  open_files_.insert(f);
}

void PassthroughFs::untrack(File* f) {
  std::lock_guard g(files_mu_);
  open_files_.erase(f);
}

std::vector<Holder> PassthroughFs::holders(bool stale_only) {
  std::set<std::pair<pid_t, std::string>> rows;
  {
    std::lock_guard g(files_mu_);
    for (File* f : open_files_)
      if (!stale_only || stale(*f)) rows.emplace(f->pid, f->path);
  }
  std::vector<Holder> out;
  std::map<pid_t, std::string> comms;
  for (auto& [pid, path] : rows) {
    auto it = comms.find(pid);
    if (it == comms.end()) {
      auto c = sys::read_file(AT_FDCWD, ("/proc/" + std::to_string(pid) + "/comm").c_str());
      std::string comm = c ? *c : "";
      while (!comm.empty() && comm.back() == '\n') comm.pop_back();
      it = comms.emplace(pid, comm).first;
    }
    out.push_back({pid, it->second, path});
  }
  return out;
}

Status PassthroughFs::stale_refusal(fuse_req_t req, const char* op, const File& f) {
  const pid_t pid = fuse_req_ctx(req)->pid;
  bool first;
  {
    std::lock_guard g(files_mu_);
    if (stale_logged_.size() > 4096) stale_logged_.clear();
    first = stale_logged_.insert(pid).second;
  }
  if (first) {
    auto c = sys::read_file(AT_FDCWD, ("/proc/" + std::to_string(pid) + "/comm").c_str());
    std::string comm = c ? *c : "?";
    while (!comm.empty() && comm.back() == '\n') comm.pop_back();
    log::get("fuse")->warn("op={} ino={} path={} pid={} comm={} -> EIO: file opened before a "
                           "restore of the source; reopen it",
                           op, reinterpret_cast<uintptr_t>(f.inode), f.path, pid, comm);
  }
  return fail(EIO);
}

ino_t PassthroughFs::shown_ino(dev_t dev, ino_t ino) {
  std::lock_guard g(dev_mu_);
  auto it = dev_index_.find(dev);
  if (it == dev_index_.end()) it = dev_index_.emplace(dev, next_prefix_++).first;
  return it->second == 0 ? ino : ino ^ (static_cast<ino_t>(it->second) << 48);
}

Inode* PassthroughFs::inode(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID && !cfg_.virtual_root) return source_root_.load()->inode.load();
  return reinterpret_cast<Inode*>(ino);
}

size_t PassthroughFs::inode_count() {
  std::lock_guard g(mutex_);
  return inodes_.size() + (source_root_.load() ? 1 : 0);
}

Result<FdRef> PassthroughFs::pin(Inode* in) {
  std::unique_lock g(in->m);
  if (in->retired_) return fail(ESTALE);  // of a replaced tree
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
  if (in->retired_) return fail(ESTALE);
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
  // inodes until we are a quarter under budget: one scan of the table per
  // budget/4 new inodes (a walk of 50k files under a 15k budget scanned it
  // every 1.5k before, a sixth of the daemon's time).
  if (path_fds_.load() <= budget_) return;
  size_t target = budget_ - budget_ / 4;
  std::vector<std::pair<uint64_t, Inode*>> idle;
  idle.reserve(path_fds_.load());
  for (auto& [key, in] : inodes_) {
    std::unique_lock g(in->m, std::try_to_lock);
    if (g.owns_lock() && in->pins_ == 0 && in->fd_.valid()) idle.emplace_back(in->last_use_, in.get());
  }
  // Only the idlest `excess` need to be in order.
  size_t excess = std::min(idle.size(), path_fds_.load() - target);
  auto older = [](auto& a, auto& b) { return a.first < b.first; };
  if (excess < idle.size()) {
    std::nth_element(idle.begin(), idle.begin() + static_cast<std::ptrdiff_t>(excess), idle.end(), older);
    idle.resize(excess + std::min<size_t>(idle.size() - excess, excess / 8 + 16));
  }
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

// The attributes of `name` in `dfd` (one component, never followed), or of
// the fd itself (name ""), and whether it lies on `mnt_id`'s mount.
Result<struct stat> PassthroughFs::stat_entry(int dfd, const char* name, const Root& r) {
  const int flags = (*name ? 0 : AT_EMPTY_PATH) | AT_SYMLINK_NOFOLLOW;
  if (cfg_.cross_mounts) return sys::fstatat(dfd, name, flags);
  // One statx gives the attributes and the mount: a mount point inside the
  // root (a directory or a file bind-mounted there) is not crossed: hidden.
  struct statx sx;
  if (::statx(dfd, name, flags, STATX_BASIC_STATS | STATX_MNT_ID, &sx) < 0) return fail(Errno::last());
  if ((sx.stx_mask & STATX_MNT_ID) && r.mnt_id >= 0 && static_cast<int>(sx.stx_mnt_id) != r.mnt_id)
    return fail(ENOENT);
  return stat_of(sx);
}

Result<fuse_entry_param> PassthroughFs::do_lookup(fuse_ino_t parent, const char* name, bool open_first,
                                                  bool* was_new) {
  Inode* dir = inode(parent);
  Root* r = dir->root;
  HOODY_TRY(dfd, pin(dir));
  // A name the table knows (a walk again, readdirplus of a listing seen
  // before) costs one statx: no fd is opened, and an evicted inode stays
  // evicted (its file handle reopens it when a request needs its fd), so a
  // walk over more inodes than the fd budget does not churn fds.  Only a new
  // inode opens its O_PATH fd (one component, not followed), and its
  // attributes are those of that fd (the name may have been replaced since
  // the statx: the fd is what counts).  open_first: the caller expects a
  // new name (readdirplus after a new entry), so the statx by name is skipped.
  UniqueFd fd;
  struct stat st {};
  auto open_it = [&]() -> Status {
    HOODY_TRY(opened, sys::openat(dfd.get(), name, O_PATH | O_NOFOLLOW));
    HOODY_TRY(fst, stat_entry(opened.get(), "", *r));
    fd = std::move(opened);
    st = fst;
    return {};
  };
  if (open_first) {
    HOODY_CHECK(open_it());
  } else {
    HOODY_TRY(s, stat_entry(dfd.get(), name, *r));
    st = s;
  }
  Inode* child = nullptr;
  bool made = false;
  for (;;) {
    {
      std::lock_guard g(mutex_);
      // A lookup in a directory of a replaced or removed tree that raced with
      // reroot() or remove_root(): nothing of the old tree may enter the table.
      if (dir->epoch != r->epoch.load()) return fail(ESTALE);
      Key key{r->id, st.st_dev, st.st_ino};
      auto it = inodes_.find(key);
      Inode* root = r->inode.load();
      if (it != inodes_.end()) {
        child = it->second.get();  // a fresh fd of ours closes at return
      } else if (root && root->src_dev == st.st_dev && root->src_ino == st.st_ino) {
        child = root;  // a bind mount or a ".." back to the root
      } else if (fd.valid()) {
        auto in = std::make_unique<Inode>(std::move(fd), st.st_dev, st.st_ino, st.st_mode, r, dir->epoch);
        child = in.get();
        in->last_use_ = clock_.fetch_add(1, std::memory_order_relaxed);
        inodes_.emplace(key, std::move(in));
        ++path_fds_;
        made = true;
        evict_over_budget();
      }
      if (child) {
        ++child->nlookup;
        if (!child->is_root) {
          child->parent_key = dir->key();
          if (child->name != name) child->name = name;
        }
        break;
      }
    }
    // New: open it (once: the table was checked with the fd's own key).
    if (fd.valid()) return fail(ESTALE);
    HOODY_CHECK(open_it());
  }
  if (was_new) *was_new = made;
  fuse_entry_param e{};
  e.attr = st;
  show(e.attr);
  e.attr_timeout = cfg_.attr_timeout;
  e.entry_timeout = cfg_.entry_timeout;
  e.ino = ino_of(child);
  on_entry(*dir, *child, name);
  return e;
}

void PassthroughFs::forget_one(Inode* in, uint64_t n) {
  std::lock_guard g(mutex_);
  if (n > in->nlookup) {
    log::get("fuse")->error("forget of {} lookups on inode {} that has {}: kernel and daemon disagree",
                            n, in->src_ino, in->nlookup);
    n = in->nlookup;
  }
  in->nlookup -= n;
  if (in->is_root) return;  // roots stay (with their counts) until the daemon ends
  if (in->nlookup == 0) {
    auto it = inodes_.find(in->key());
    if (it != inodes_.end() && it->second.get() == in) {
      on_forget(*in);
      if (in->fd_.valid()) --path_fds_;
      inodes_.erase(it);
    } else if (auto st = stale_.find(in); st != stale_.end()) {
      on_forget(*in);  // its fd was closed (and counted) by reroot() or remove_root()
      stale_.erase(st);
    }
  }
}

namespace {
constexpr const char* kOpNames[] = {
    "lookup", "getattr", "setattr", "readlink", "mknod", "mkdir", "symlink", "link", "unlink",
    "rmdir", "rename", "rename", "open", "create", "read", "write", "flush", "release", "fsync",
    "fallocate", "copy_file_range", "copy_file_range", "lseek", "opendir", "readdir", "fsyncdir",
    "statfs", "getxattr", "listxattr", "setxattr", "removexattr", "lock",
};
static_assert(sizeof kOpNames / sizeof kOpNames[0] == static_cast<size_t>(Op::lock) + 1);
}  // namespace

const char* op_name(Op op) { return kOpNames[static_cast<size_t>(op)]; }

bool mutates(Op op) {
  switch (op) {
    case Op::setattr: case Op::mknod: case Op::mkdir: case Op::symlink: case Op::link:
    case Op::unlink: case Op::rmdir: case Op::rename_from: case Op::rename_to: case Op::create:
    case Op::write: case Op::fallocate: case Op::copy_to: case Op::setxattr:
    case Op::removexattr:
      return true;
    default:
      return false;
  }
}

bool Access::mutates() const {
  if (op == Op::open) return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  return pt::mutates(op);
}

Status PassthroughFs::check(fuse_req_t req, const Access& a) {
  const Root& r = a.root();
  if (revoke_check_ && r.revoked.load(std::memory_order_relaxed)) {
    // I/O through an open file of a removed root: permission is gone.
    if (a.file) return fail(EACCES);
    return fail(ESTALE);
  }
  if (a.mutates() && (cfg_.read_only || r.read_only.load(std::memory_order_relaxed)))
    return fail(EROFS);
  return allow(req, a);
}

void PassthroughFs::init(fuse_conn_info* conn) {
  // The io_uring engine has threads, so it starts here, after fuse_daemonize
  // forked (threads do not survive a fork), not in open_source().
  if (!io_ && io::parse_kind(cfg_.io).value_or(io::Kind::sync) == io::Kind::uring) {
    io_ = io::make_engine(io::Kind::uring);  // falls back to sync with a log line
    if (std::string(io_->name()) == "sync") io_.reset();
    if (!io_) cfg_.io = "sync";
  }
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
  // dbfs and snapfs: the daemon is the only writer of its backing files, so
  // cached pages stay valid when attributes are refreshed (fuse-limits.md,
  // sqlite-locking.md 3.7).  sharefs: the owner writes its storage directly.
  want(FUSE_CAP_AUTO_INVAL_DATA, cfg_.auto_inval_data);
  want(FUSE_CAP_READDIRPLUS, cfg_.readdirplus);
  want(FUSE_CAP_READDIRPLUS_AUTO, cfg_.readdirplus && cfg_.readdirplus_auto);
  want(FUSE_CAP_PARALLEL_DIROPS, true);
  want(FUSE_CAP_ASYNC_READ, true);
  want(FUSE_CAP_ASYNC_DIO, true);
  // The process umask is 0: the kernel applies the caller's umask.
  want(FUSE_CAP_DONT_MASK, false);
  want(FUSE_CAP_EXPORT_SUPPORT, false);
  conn->time_gran = 1;  // nanosecond timestamps, as the backing filesystem has
}

}  // namespace hoody::pt
