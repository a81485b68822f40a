// The lock ops: struct flock + fi->lock_owner in, LockManager calls out.
// All the rules live in lock/; this file only converts, and registers the
// interrupt callback before a request can wait.
#include <fcntl.h>
#include <sys/file.h>

#include "fs.hpp"
#include "lock/posix_flock.hpp"

namespace hoody::dbfs {

namespace {

void on_interrupt(fuse_req_t req, void* data) {
  auto& fs = static_cast<Fs&>(pt::fs_of(req));
  fs.locks().interrupt(static_cast<lock::TicketId>(reinterpret_cast<uintptr_t>(data)));
}

bool writable(const pt::File* f) { return (f->flags & O_ACCMODE) != O_RDONLY; }

}  // namespace

void Fs::getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lk) {
  // A file of a replaced tree (a restore): no lock questions either; the
  // -shm of one is answered "unlocked" (see setlk).
  if (stale(*file_of(fi))) {
    if (is_shm(ino)) {
      struct flock out = *lk;
      out.l_type = F_UNLCK;
      fuse_reply_lock(req, &out);
      return;
    }
    fuse_reply_err(req, stale_refusal(req, "getlk", *file_of(fi)).err());
    return;
  }
  auto type = lock::lock_type_from_fcntl(lk->l_type);
  auto range = lock::range_from_flock(lk->l_start, lk->l_len);
  if (!type || !range) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  classify_for_lock(ino);
  auto conflict = locks_->getlk(ino, fi->lock_owner, *type, range->start, range->end);
  struct flock out = *lk;
  lock::to_flock(conflict, out);
  fuse_reply_lock(req, &out);
}

void Fs::setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lk, int sleep) {
  auto type = lock::lock_type_from_fcntl(lk->l_type);
  auto range = lock::range_from_flock(lk->l_start, lk->l_len);
  if (!type || !range) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  // A file of a replaced tree takes no new lock (unlocks go through, so an
  // application's cleanup works).
  pt::File* f = file_of(fi);
  if (*type != lock::LockType::unlock && stale(*f) && is_shm(ino)) {
    // SQLite turns any failed -shm lock into BUSY and retries its read for
    // about 10 s before SQLITE_PROTOCOL: a no-op grant lets the connection
    // reach its next write instead, which fails with EIO (SQLITE_IOERR).
    // Nothing of a replaced tree needs exclusion any more.
    fuse_reply_err(req, 0);
    return;
  }
  if (*type != lock::LockType::unlock && stale(*f)) {
    fuse_reply_err(req, stale_refusal(req, "setlk", *f).err());
    return;
  }
  // What the file is now decides the rules (SQLite's scheduling or exact POSIX).
  classify_for_lock(ino);
  lock::LockRequest r;
  r.file = ino;
  r.owner = fi->lock_owner;
  r.type = *type;
  r.start = range->start;
  r.end = range->end;
  r.pid = static_cast<std::uint32_t>(fuse_req_ctx(req)->pid);
  r.writable = writable(file_of(fi));
  r.wait = sleep != 0;
  lock::TicketId t = locks_->new_ticket();
  // Before the manager can park the request: an interrupt that is already
  // pending fires inside this call and is remembered by ticket id.
  fuse_req_interrupt_func(req, on_interrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(t)));
  locks_->setlk(t, r, [this, req, f, r](int err) {
    if (err == 0 && r.type != lock::LockType::unlock && stale(*f)) {
      // Queued before a restore, granted after it: undo, refuse.
      lock::LockRequest undo = r;
      undo.type = lock::LockType::unlock;
      undo.wait = false;
      locks_->setlk(0, undo, [](int) {});
      err = stale_refusal(req, "setlk", *f).err();
    }
    fuse_reply_err(req, err);
  });
}

void Fs::flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) {
  lock::FlockOp what;
  switch (op & ~LOCK_NB) {
    case LOCK_SH: what = lock::FlockOp::shared; break;
    case LOCK_EX: what = lock::FlockOp::exclusive; break;
    case LOCK_UN: what = lock::FlockOp::unlock; break;
    default: fuse_reply_err(req, EINVAL); return;
  }
  if (what != lock::FlockOp::unlock && stale(*file_of(fi))) {
    fuse_reply_err(req, stale_refusal(req, "flock", *file_of(fi)).err());
    return;
  }
  lock::TicketId t = locks_->new_ticket();
  fuse_req_interrupt_func(req, on_interrupt, reinterpret_cast<void*>(static_cast<uintptr_t>(t)));
  locks_->flock(t, ino, fi->lock_owner, what, (op & LOCK_NB) != 0,
               static_cast<std::uint32_t>(fuse_req_ctx(req)->pid),
               [req](int err) { fuse_reply_err(req, err); });
}

}  // namespace hoody::dbfs
