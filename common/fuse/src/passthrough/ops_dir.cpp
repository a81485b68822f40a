// Directories: opendir, readdir and readdirplus, releasedir, fsyncdir.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "hoody/fuse_reply.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

namespace {
// An open directory: fuse_file_info::fh points to one.  The kernel serialises
// readdir on one open directory, so it needs no lock of its own.
struct Dir {
  sys::UniqueDir dp;
  Root* root = nullptr;
  uint64_t epoch = 0;  // of its root when it was opened
  off_t offset = 0;
  struct dirent* entry = nullptr;
  // readdirplus: the last entry was new to the inode table, so the next
  // probably is too (a first walk; a walk again finds every name known).
  bool names_new = false;
};

Dir* dir_of(fuse_file_info* fi) { return reinterpret_cast<Dir*>(fi->fh); }

bool is_dot_or_dotdot(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}
}  // namespace

void PassthroughFs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_vnode(ino)) return vopendir(req, ino, fi);
  Inode* in = inode(ino);
  auto dp = [&]() -> Result<sys::UniqueDir> {
    HOODY_CHECK(check(req, {Op::opendir, *in}));
    HOODY_TRY(fd, pin(in));
    return sys::opendir_at(fd.get(), ".");
  }();
  if (!dp) return reply(req, fail(dp.error()));
  auto* d = new Dir{std::move(*dp), in->root, in->epoch};
  fi->fh = reinterpret_cast<uint64_t>(d);
  fi->keep_cache = cfg_.cache_readdir;
  fi->cache_readdir = cfg_.cache_readdir;
  if (fuse_reply_open(req, fi) == -ENOENT) delete d;
}

void PassthroughFs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                            fuse_file_info* fi, bool plus) {
  if (is_vnode(ino)) return vreaddir_reply(req, ino, size, off, fi, plus);
  Dir* d = dir_of(fi);
  // A directory of a replaced or removed tree lists nothing more (its handle
  // may still be open in a process whose cwd it was).
  if (d->epoch != d->root->epoch.load(std::memory_order_relaxed)) return reply(req, fail(ESTALE));
  std::unique_ptr<char[]> buf(new char[size]);
  char* p = buf.get();
  size_t rem = size;
  int err = 0;

  dev_t dir_dev = inode(ino)->src_dev;
  if (off != d->offset) {
    ::seekdir(d->dp.get(), off);
    d->entry = nullptr;
    d->offset = off;
  }
  for (;;) {
    if (!d->entry) {
      errno = 0;
      d->entry = ::readdir(d->dp.get());
      if (!d->entry) {
        err = errno;  // 0 at the end of the directory
        break;
      }
    }
    off_t next = d->entry->d_off;
    const char* name = d->entry->d_name;
    size_t entsize;
    if (plus) {
      fuse_entry_param e{};
      fuse_ino_t looked_up = 0;
      if (is_dot_or_dotdot(name)) {
        e.attr.st_ino = shown_ino(dir_dev, d->entry->d_ino);
        e.attr.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      } else {
        auto r = do_lookup(ino, name, d->names_new, &d->names_new);
        if (!r) {
          // The entry vanished between readdir and lookup: skip it.
          if (r.err() == ENOENT) {
            d->entry = nullptr;
            d->offset = next;
            continue;
          }
          err = r.err();
          break;
        }
        e = *r;
        looked_up = e.ino;
      }
      entsize = fuse_add_direntry_plus(req, p, rem, name, &e, next);
      if (entsize > rem) {
        if (looked_up) forget_one(inode(looked_up), 1);
        break;
      }
    } else {
      struct stat st {};
      st.st_ino = shown_ino(dir_dev, d->entry->d_ino);
      st.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      if (!is_dot_or_dotdot(name)) present(st);
      entsize = fuse_add_direntry(req, p, rem, name, &st, next);
      if (entsize > rem) break;
    }
    p += entsize;
    rem -= entsize;
    d->entry = nullptr;
    d->offset = next;
  }
  // An error after some entries is reported on the next call, as readdir(3) would.
  if (err && rem == size) return reply(req, fail(err));
  fuse_reply_buf(req, buf.get(), size - rem);
}

void PassthroughFs::releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_vnode(ino)) {
    delete reinterpret_cast<std::vector<VEntry>*>(fi->fh);
    return reply(req, {});
  }
  delete dir_of(fi);
  reply(req, {});
}

void PassthroughFs::fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  if (is_vnode(ino)) return reply(req, {});
  int fd = ::dirfd(dir_of(fi)->dp.get());
  reply(req, datasync ? sys::fdatasync(fd) : sys::fsync(fd));
}

}  // namespace hoody::pt
