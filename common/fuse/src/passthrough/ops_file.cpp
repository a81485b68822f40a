// Files: open, create, read, write, flush, release, fsync, fallocate,
// copy_file_range, lseek.  The lock ops are in ops_lock.cpp
// (PassthroughFs::make_ops decides whether the kernel sends them at all).
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <memory>

#include "hoody/fuse_reply.hpp"
#include "hoody/fuse_transport.hpp"
#include "hoody/log.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

namespace {
// One fd buffer at an offset (FUSE_BUFVEC_INIT is a C compound literal).
fuse_bufvec fd_bufvec(int fd, size_t size, off_t pos) {
  fuse_bufvec v{};
  v.count = 1;
  v.buf[0].size = size;
  v.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  v.buf[0].fd = fd;
  v.buf[0].pos = pos;
  return v;
}

// The flags a backing (re)open takes from the kernel's open flags.
int backing_flags(int flags) { return flags & ~(O_NOFOLLOW | O_CREAT | O_EXCL | O_NOCTTY); }
}  // namespace

void PassthroughFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_vnode(ino)) return vopen_reply(req, ino, fi);
  Inode* in = inode(ino);
  auto s = check(req, {Op::open, *in, nullptr, fi->flags});
  if (!s) return reply(req, s);
  auto fd = [&]() -> Result<UniqueFd> {
    HOODY_TRY(pfd, pin(in));
    return sys::reopen(pfd.get(), backing_flags(fi->flags));
  }();
  if (!fd) return reply(req, fail(fd.error()));
  // Opened from a tree a restore replaced meanwhile: the kernel retries the
  // open with a fresh lookup on ESTALE.
  if (stale(*in)) return reply(req, fail(ESTALE));
  if (replaced_name(ino, *in, fd->get())) return reply(req, fail(ESTALE));
  // open(O_TRUNC) by a caller without CAP_FSETID (FUSE_OPEN_KILL_SUIDGID).
  if ((fi->flags & O_TRUNC) && fuse_request_kills_suidgid())
    if (auto k = kill_suidgid(req, fd->get(), false); !k) return reply(req, k);
  // A read-only open needs no FLUSH unless a daemon answers locks (POSIX locks
  // are dropped at FLUSH); noflush then stays off.
  fi->noflush = 0;
  File* f = new_file(req, in, std::move(*fd), fi);
  // The opener was interrupted and is gone: nobody will release this.
  if (fuse_reply_open(req, fi) == -ENOENT) drop_file(f, fi);
}

// The kernel opens by node, through the entry it cached for the name (for
// up to entry_timeout).  When the file was unlinked since and its name now
// names another file (deleted and created again by someone who does not go
// through this mount: the owner of a share, another mount), opening it would
// reach the deleted file, where open(2) by name reaches the new one: SQLite
// then found its database "unlinked while open", or read an old journal as
// hot.  ESTALE makes the kernel look the name up again and retry.  A file
// whose name is simply gone still opens (as through /proc/PID/fd).
bool PassthroughFs::replaced_name(fuse_ino_t ino, const Inode& in, int fd) {
  if (in.type != S_IFREG) return false;
  struct stat st;
  if (::fstat(fd, &st) != 0 || st.st_nlink != 0) return false;
  fuse_ino_t parent = 0;
  std::string name;
  if (!parent_entry(ino, &parent, &name)) return false;
  auto pfd = pin(inode(parent));
  if (!pfd) return false;
  struct stat now;
  if (::fstatat(pfd->get(), name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0) return false;
  return now.st_dev != in.src_dev || now.st_ino != in.src_ino;
}

File* PassthroughFs::new_file(fuse_req_t req, Inode* in, UniqueFd fd, fuse_file_info* fi) {
  auto* f = new File;
  f->fd = std::move(fd);
  f->flags = fi->flags;
  f->inode = in;
  f->root = in->root;
  f->epoch = in->epoch;
  track(f, req);
  fi->fh = reinterpret_cast<uint64_t>(f);
  fi->keep_cache = cfg_.keep_cache;
  on_open(req, *f, fi);
  return f;
}

void PassthroughFs::drop_file(File* f, fuse_file_info* fi) {
  on_release(*f, fi);
  untrack(f);
  delete f;
}

void PassthroughFs::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                           fuse_file_info* fi) {
  if (is_vnode(parent)) return reply(req, Status(fail(EPERM)));
  auto s = check(req, {Op::create, *inode(parent), name, fi->flags});
  if (!s) return reply(req, s);
  auto fd = [&]() -> Result<UniqueFd> {
    HOODY_TRY(dfd, pin(inode(parent)));
    CallerCreds creds(req);
    // O_NOFOLLOW always: the kernel sends CREATE for a name it believes
    // missing (maybe from a cached negative entry); if a symlink appeared
    // there meanwhile, following it as the daemon would create or open its
    // target, wherever it points (ELOOP instead).
    return sys::openat(dfd.get(), name, fi->flags | O_CREAT | O_NOFOLLOW, mode);
  }();
  if (!fd) return reply(req, fail(fd.error()));
  auto e = do_lookup(parent, name, /*open_first=*/true);
  if (!e) return reply(req, fail(e.error()));
  File* f = new_file(req, inode(e->ino), std::move(*fd), fi);
  if (fuse_reply_create(req, &*e, fi) == -ENOENT) {
    drop_file(f, fi);
    forget_one(inode(e->ino), 1);
  }
}

namespace {
// A buffer for the io_uring engine, aligned for O_DIRECT backing files.
struct IoBuf {
  explicit IoBuf(size_t n) {
    if (::posix_memalign(&p, 4096, n ? n : 1) != 0) p = nullptr;
  }
  ~IoBuf() { std::free(p); }
  IoBuf(const IoBuf&) = delete;
  IoBuf& operator=(const IoBuf&) = delete;
  void* p = nullptr;
};
}  // namespace

void PassthroughFs::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         fuse_file_info* fi) {
  if (is_vnode(ino)) {
    auto c = virtual_file_of(fi)->contents();
    size_t from = std::min(c->size(), static_cast<size_t>(std::max<off_t>(off, 0)));
    fuse_reply_buf(req, c->data() + from, std::min(size, c->size() - from));
    return;
  }
  File* f = file_of(fi);
  if (auto s = check(req, {Op::read, *f->inode, nullptr, 0, f}); !s) return reply(req, s);
  if (io_) {
    // Replied from the completion (possibly inline, before read() returns).
    auto buf = std::make_shared<IoBuf>(size);
    if (!buf->p) return reply(req, fail(ENOMEM));
    io_->read(f->fd.get(), buf->p, size, off, [req, buf](ssize_t res) {
      if (res < 0)
        fuse_reply_err(req, static_cast<int>(-res));
      else
        fuse_reply_buf(req, static_cast<const char*>(buf->p), static_cast<size_t>(res));
    });
    return;
  }
  // Spliced from the backing file: libfuse moves the pages into /dev/fuse, or
  // reads into a buffer itself when splice is not available.
  fuse_bufvec buf = fd_bufvec(f->fd.get(), size, off);
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void PassthroughFs::write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off,
                              fuse_file_info* fi) {
  if (is_vnode(ino)) return vwrite_reply(req, ino, in, off, fi);
  File* f = file_of(fi);
  if (auto s = check(req, {Op::write, *f->inode, nullptr, 0, f}); !s) return reply(req, s);
  if (stale(*f)) return reply(req, stale_refusal(req, "write", *f));
  // A writer without CAP_FSETID (FUSE_WRITE_KILL_SUIDGID): setuid/setgid go
  // before the data lands, as in the kernel's file_remove_privs.
  if (fuse_request_kills_suidgid())
    if (auto k = kill_suidgid(req, f->fd.get(), false); !k) return reply(req, k);
  size_t size = fuse_buf_size(in);
  if (io_) {
    // libfuse's buffer lives only until we return: the engine gets a copy.
    auto buf = std::make_shared<IoBuf>(size);
    if (!buf->p) return reply(req, fail(ENOMEM));
    fuse_bufvec mem{};
    mem.count = 1;
    mem.buf[0].size = size;
    mem.buf[0].mem = buf->p;
    ssize_t got = fuse_buf_copy(&mem, in, static_cast<fuse_buf_copy_flags>(0));
    if (got < 0) return reply(req, fail(static_cast<int>(-got)));
    io_->write(f->fd.get(), buf->p, static_cast<size_t>(got), off,
               [this, req, buf, f, off](ssize_t res) {
                 if (res < 0) {
                   fuse_reply_err(req, static_cast<int>(-res));
                   return;
                 }
                 on_write(*f, off, static_cast<size_t>(res));
                 fuse_reply_write(req, static_cast<size_t>(res));
               });
    return;
  }
  fuse_bufvec out = fd_bufvec(f->fd.get(), size, off);
  ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  if (n < 0) return reply(req, fail(static_cast<int>(-n)));
  on_write(*f, off, static_cast<size_t>(n));
  fuse_reply_write(req, static_cast<size_t>(n));
}

void PassthroughFs::flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_vnode(ino)) return reply(req, {});
  // Nothing to do on the backing file: BTRFS reports no errors at close.  A
  // close(2) drops the caller's POSIX locks on the file: those taken on the
  // backing file (ops_lock.cpp), or the daemon's own (on_flush).
  drop_owner_locks(ino, fi->lock_owner);
  on_flush(req, *file_of(fi), fi);
  reply(req, {});
}

void PassthroughFs::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_vnode(ino)) {
    delete virtual_file_of(fi);
    return reply(req, {});
  }
  File* f = file_of(fi);
  on_release(*f, fi);
  untrack(f);
  delete f;
  reply(req, {});
}

void PassthroughFs::fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  if (is_vnode(ino)) return reply(req, {});
  if (auto s = check(req, {Op::fsync, *file_of(fi)->inode, nullptr, 0, file_of(fi)}); !s)
    return reply(req, s);
  if (stale(*file_of(fi)))
    return reply(req, stale_refusal(req, datasync ? "fdatasync" : "fsync", *file_of(fi)));
  int fd = file_of(fi)->fd.get();
  if (io_) {
    io_->fsync(fd, datasync != 0, [req](ssize_t res) {
      fuse_reply_err(req, res < 0 ? static_cast<int>(-res) : 0);
    });
    return;
  }
  reply(req, datasync ? sys::fdatasync(fd) : sys::fsync(fd));
}

void PassthroughFs::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                              fuse_file_info* fi) {
  if (is_vnode(ino)) return reply(req, Status(fail(EBADF)));
  reply(req, [&]() -> Status {
    File* f = file_of(fi);
    HOODY_CHECK(check(req, {Op::fallocate, *f->inode, nullptr, mode, f}));
    if (stale(*file_of(fi))) return stale_refusal(req, "fallocate", *file_of(fi));
    if (::fallocate(file_of(fi)->fd.get(), mode, off, len) < 0) return fail(Errno::last());
    return {};
  }());
}

void PassthroughFs::copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                                    fuse_file_info* fi_in, fuse_ino_t ino_out, off_t off_out,
                                    fuse_file_info* fi_out, size_t len, int flags) {
  // The kernel copies from and to a virtual file itself when we refuse.
  if (is_vnode(ino_in) || is_vnode(ino_out)) return reply(req, Status(fail(EXDEV)));
  File* fin = file_of(fi_in);
  File* fout = file_of(fi_out);
  auto s = check(req, {Op::copy_to, *fout->inode, nullptr, 0, fout});
  if (s) s = check(req, {Op::copy_from, *fin->inode, nullptr, 0, fin});
  if (!s) return reply(req, s);
  if (stale(*file_of(fi_out)))
    return reply(req, stale_refusal(req, "copy_file_range", *file_of(fi_out)));
  loff_t in_off = off_in, out_off = off_out;
  ssize_t n = ::copy_file_range(file_of(fi_in)->fd.get(), &in_off, file_of(fi_out)->fd.get(),
                                &out_off, len, static_cast<unsigned>(flags));
  if (n < 0) return reply(req, fail(Errno::last()));
  on_write(*file_of(fi_out), off_out, static_cast<size_t>(n));
  fuse_reply_write(req, static_cast<size_t>(n));
}

void PassthroughFs::lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                          fuse_file_info* fi) {
  if (is_vnode(ino)) {
    auto r = vlseek(req, *virtual_file_of(fi), off, whence);
    if (!r) return reply(req, fail(r.error()));
    fuse_reply_lseek(req, *r);
    return;
  }
  if (auto s = check(req, {Op::lseek, *file_of(fi)->inode, nullptr, 0, file_of(fi)}); !s)
    return reply(req, s);
  off_t r = ::lseek(file_of(fi)->fd.get(), off, whence);
  if (r < 0) return reply(req, fail(Errno::last()));
  fuse_reply_lseek(req, r);
}

}  // namespace hoody::pt
