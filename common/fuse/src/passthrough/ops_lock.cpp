// Locks: getlk, setlk (POSIX) and flock, taken on the backing filesystem.
//
// Without them the kernel keeps a FUSE mount's locks to itself, so a lock
// taken through one mount never met a lock taken through another mount of the
// same tree, nor one its own users took directly: two containers sharing a
// directory (hoody-sharefs) could both "hold" a database's write lock and
// corrupt it.  Here every lock lands on the backing file:
//
//  - POSIX (fcntl F_SETLK/F_SETLKW/F_GETLK).  The kernel sends the request
//    with the caller's lock owner (one per process).  Each (node, owner) gets
//    one backing open file description of its own, opened only for locking,
//    and the lock is an open-file-description lock on it (F_OFD_SETLK): OFD
//    locks of different descriptions conflict with each other and with
//    classic POSIX locks, while one owner's locks merge, split and upgrade
//    within its own description, exactly as one process's do.  A FLUSH of the
//    owner (any close(2) by that process) closes the description, which drops
//    all of its locks on the file, as close(2) does for POSIX locks.
//  - flock(2).  Per open file: the File's own backing fd, which is one open
//    file description per FUSE open.  A release (or a revoke, which swaps the
//    fd for /dev/null) drops it.
//  - A blocking request (F_SETLKW, flock without LOCK_NB) waits on a thread
//    of its own that tries again every 0.5-10 ms; an interrupt (the caller got
//    a signal), a revoke or the unmount ends the wait with EINTR or EACCES.
//    The backing kernel's deadlock detection (EDEADLK) does not apply to OFD
//    locks, so a cycle of F_SETLKW waiters across processes waits until one
//    is interrupted, as with flock(2).
//  - A revoked share's locks are dropped with it (remove_root).
//
// hoody-dbfs answers locks itself (its lock manager) and overrides all this.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "hoody/fuse_reply.hpp"
#include "hoody/log.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

std::shared_ptr<UniqueFd> PassthroughFs::owner_lock_fd(fuse_ino_t ino, const Root* root,
                                                       uint64_t owner, const LockTarget* open_target,
                                                       Errno* err, pid_t pid) {
  {
    std::lock_guard g(locks_mu_);
    auto it = owner_locks_.find(ino);
    if (it != owner_locks_.end()) {
      auto o = it->second.find(owner);
      if (o != it->second.end()) {
        if (pid) o->second.pid = pid;
        return o->second.fd;
      }
    }
  }
  if (!open_target) return nullptr;
  auto fd = (*open_target)();
  if (!fd) {
    if (err) *err = fd.error();
    return nullptr;
  }
  auto shared = std::make_shared<UniqueFd>(std::move(*fd));
  std::lock_guard g(locks_mu_);
  auto& slot = owner_locks_[ino][owner];
  if (!slot.fd) slot = {shared, root};  // else another request of the owner was first
  if (pid) slot.pid = pid;
  return slot.fd;
}

void PassthroughFs::drop_owner_locks(fuse_ino_t ino, uint64_t owner) {
  std::shared_ptr<UniqueFd> gone;
  {
    std::lock_guard g(locks_mu_);
    auto it = owner_locks_.find(ino);
    if (it == owner_locks_.end()) return;
    auto o = it->second.find(owner);
    if (o == it->second.end()) return;
    gone = std::move(o->second.fd);
    it->second.erase(o);
    if (it->second.empty()) owner_locks_.erase(it);
  }
  // Closed here (outside the mutex) unless a lock wait still holds it.
}

void PassthroughFs::drop_root_locks(const Root* r) {
  std::vector<std::shared_ptr<UniqueFd>> gone;
  std::lock_guard g(locks_mu_);
  for (auto it = owner_locks_.begin(); it != owner_locks_.end();) {
    for (auto o = it->second.begin(); o != it->second.end();) {
      if (o->second.root == r) {
        gone.push_back(std::move(o->second.fd));
        o = it->second.erase(o);
      } else {
        ++o;
      }
    }
    it = it->second.empty() ? owner_locks_.erase(it) : std::next(it);
  }
}

void PassthroughFs::wait_for_lock(fuse_req_t req, fuse_ino_t ino, const Root* r,
                                  std::function<int()> attempt) {
  {
    std::lock_guard g(locks_mu_);
    ++lock_waiters_;
  }
  std::thread([this, req, ino, r, attempt = std::move(attempt)] {
    auto delay = std::chrono::microseconds(500);
    int err;
    for (;;) {
      // A wait ends on an interrupt or the unmount.
      if (locks_stopping_.load() || fuse_req_interrupted(req)) {
        err = EINTR;
        break;
      }
      if (r && r->revoked.load()) {
        err = EACCES;
        break;
      }
      err = attempt();
      if (err != EAGAIN) break;
      std::this_thread::sleep_for(delay);
      delay = std::min(delay * 2, std::chrono::microseconds(10000));
    }
    if (err == 0 && lock_grant_hook(ino)) lock_granted(ino);
    fuse_reply_err(req, err);
    std::lock_guard g(locks_mu_);
    if (--lock_waiters_ == 0) lock_waiters_cv_.notify_all();
  }).detach();
}

void PassthroughFs::lock_answer(fuse_req_t req, fuse_ino_t ino, int err) {
  if (err == 0 && lock_grant_hook(ino)) return queue_grant(req, ino);
  reply(req, err ? fail(err) : Status{});
}

void PassthroughFs::queue_grant(fuse_req_t req, fuse_ino_t ino) {
  std::lock_guard g(grants_mu_);
  if (grants_stop_) {
    fuse_reply_err(req, 0);  // unmounting: granted, nothing left to revalidate
    return;
  }
  grants_.emplace_back(req, ino);
  if (!grants_thread_.joinable())
    grants_thread_ = std::thread([this] {
      std::unique_lock l(grants_mu_);
      for (;;) {
        grants_cv_.wait(l, [&] { return !grants_.empty() || grants_stop_; });
        if (grants_.empty()) return;  // stopping, all answered
        auto batch = std::move(grants_);
        grants_.clear();
        l.unlock();
        for (auto [r, n] : batch) {
          lock_granted(n);
          fuse_reply_err(r, 0);
        }
        l.lock();
      }
    });
  grants_cv_.notify_one();
}

void PassthroughFs::stop_lock_waits() {
  locks_stopping_ = true;
  {
    std::unique_lock l(locks_mu_);
    lock_waiters_cv_.wait(l, [&] { return lock_waiters_ == 0; });
  }
  {
    std::lock_guard g(grants_mu_);
    grants_stop_ = true;
  }
  grants_cv_.notify_all();
  if (grants_thread_.joinable()) grants_thread_.join();
}

namespace {
// EAGAIN for a conflict (F_OFD_SETLK may say EACCES), the errno otherwise.
int ofd_setlk(int fd, struct flock l) {
  l.l_pid = 0;
  if (::fcntl(fd, F_OFD_SETLK, &l) == 0) return 0;
  return errno == EACCES ? EAGAIN : errno;
}
}  // namespace

void PassthroughFs::lock_getlk(fuse_req_t req, fuse_ino_t ino, uint64_t owner, const Root* root,
                               struct flock* lock, const LockTarget& open_target) {
  Errno e(EIO);
  // The owner's own description, so that its own locks do not conflict.
  auto fd = owner_lock_fd(ino, root, owner, &open_target, &e);
  if (!fd) return reply(req, fail(e));
  struct flock l = *lock;
  l.l_pid = 0;
  if (::fcntl(fd->get(), F_OFD_GETLK, &l) < 0) return reply(req, fail(Errno::last()));
  if (l.l_type != F_UNLCK && l.l_pid < 0) {
    // Held by an open file description: one of this mount's owners (else a
    // process elsewhere, shown as pid 0).  The owner whose own description
    // does not see that conflict holds it.
    pid_t holder = 0;
    std::lock_guard g(locks_mu_);
    if (auto it = owner_locks_.find(ino); it != owner_locks_.end())
      for (auto& [o, ol] : it->second) {
        if (o == owner || !ol.fd) continue;
        struct flock t = *lock;
        t.l_pid = 0;
        if (::fcntl(ol.fd->get(), F_OFD_GETLK, &t) < 0) continue;
        if (t.l_type == F_UNLCK || t.l_start != l.l_start || t.l_len != l.l_len || t.l_type != l.l_type) {
          holder = ol.pid;
          break;
        }
      }
    l.l_pid = holder;
  }
  fuse_reply_lock(req, &l);
}

void PassthroughFs::lock_setlk(fuse_req_t req, fuse_ino_t ino, uint64_t owner, const Root* root,
                               struct flock* lock, int sleep, const LockTarget& open_target) {
  if (lock->l_type == F_UNLCK) {
    // Always answered, also on a revoked file (whose locks are gone already).
    if (auto fd = owner_lock_fd(ino, root, owner, nullptr, nullptr)) (void)ofd_setlk(fd->get(), *lock);
    return reply(req, {});
  }
  Errno e(EIO);
  auto fd = owner_lock_fd(ino, root, owner, &open_target, &e, fuse_req_ctx(req)->pid);
  if (!fd) return reply(req, fail(e));
  int err = ofd_setlk(fd->get(), *lock);
  struct flock l = *lock;
  auto attempt = [fd, l] { return ofd_setlk(fd->get(), l); };
  if (err != EAGAIN || !sleep) return lock_answer(req, ino, err);
  wait_for_lock(req, ino, root, attempt);
}

void PassthroughFs::lock_flock(fuse_req_t req, fuse_ino_t ino, int fd, const Root* root, int op) {
  if (op & LOCK_UN) {
    (void)::flock(fd, LOCK_UN);
    return reply(req, {});
  }
  auto attempt = [fd, op] {
    if (::flock(fd, (op & (LOCK_SH | LOCK_EX)) | LOCK_NB) == 0) return 0;
    return errno == EWOULDBLOCK ? EAGAIN : errno;
  };
  int err = attempt();
  if (err != EAGAIN || (op & LOCK_NB)) return lock_answer(req, ino, err);
  wait_for_lock(req, ino, root, attempt);
}

// A new description of a real inode's backing file, for locking only: read
// and write where the root allows it, so that one description carries both
// kinds of lock (the kernel already checked the caller's own fd: F_WRLCK
// needs it open for writing).  Never used for I/O.
static PassthroughFs::LockTarget backing_target(PassthroughFs& fs, Inode* in) {
  return [&fs, in]() -> Result<UniqueFd> {
    HOODY_TRY(pfd, fs.pin(in));
    bool rw = !in->root->read_only.load() && !fs.config().read_only;
    auto fd = sys::reopen(pfd.get(), rw ? O_RDWR : O_RDONLY);
    if (!fd && rw) fd = sys::reopen(pfd.get(), O_RDONLY);
    return fd;
  };
}

void PassthroughFs::getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  if (is_vnode(ino)) {
    struct flock l = *lock;
    l.l_type = F_UNLCK;
    fuse_reply_lock(req, &l);
    return;
  }
  File* f = file_of(fi);
  if (f->root->revoked.load() || stale(*f)) return reply(req, fail(EACCES));
  lock_getlk(req, ino, fi->lock_owner, f->root, lock, backing_target(*this, f->inode));
}

void PassthroughFs::setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
                          int sleep) {
  if (is_vnode(ino)) return reply(req, fail(ENOLCK));
  File* f = file_of(fi);
  if (lock->l_type != F_UNLCK && (f->root->revoked.load() || stale(*f)))
    return reply(req, fail(EACCES));
  lock_setlk(req, ino, fi->lock_owner, f->root, lock, sleep, backing_target(*this, f->inode));
}

void PassthroughFs::flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  if (is_vnode(ino)) return reply(req, fail(ENOLCK));
  File* f = file_of(fi);
  if (!(op & LOCK_UN) && (f->root->revoked.load() || stale(*f))) return reply(req, fail(EACCES));
  // The File's own backing fd: one description per FUSE open, as flock wants.
  lock_flock(req, ino, f->fd.get(), f->root, op);
}

}  // namespace hoody::pt
