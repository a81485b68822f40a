#include "hoody/btrfs.hpp"

#include <btrfsutil.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "hoody/log.hpp"
#include "hoody/sys.hpp"

namespace hoody::btrfs {

namespace {

// Capture errno right after a btrfs_util_* call, before anything can clobber it.
Status check(enum btrfs_util_error e) {
  if (e == BTRFS_UTIL_OK) return {};
  int saved = errno;
  return fail(to_errno(e, saved));
}

struct IteratorDeleter {
  void operator()(btrfs_util_subvolume_iterator* it) const {
    btrfs_util_destroy_subvolume_iterator(it);
  }
};
using UniqueIterator = std::unique_ptr<btrfs_util_subvolume_iterator, IteratorDeleter>;

bool all_zero(const uint8_t (&u)[16]) {
  for (uint8_t b : u)
    if (b) return false;
  return true;
}

}  // namespace

Errno to_errno(int error, int saved_errno) {
  switch (error) {
    case BTRFS_UTIL_OK: return Errno();
    case BTRFS_UTIL_ERROR_NO_MEMORY: return Errno(ENOMEM);
    case BTRFS_UTIL_ERROR_INVALID_ARGUMENT: return Errno(EINVAL);
    case BTRFS_UTIL_ERROR_NOT_BTRFS: return Errno(ENOTTY);
    case BTRFS_UTIL_ERROR_NOT_SUBVOLUME: return Errno(EINVAL);
    case BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND: return Errno(ENOENT);
    case BTRFS_UTIL_ERROR_STOP_ITERATION: return Errno(ENOENT);
    default:
      // Every other code names a failed system call, which set errno.
      return Errno(saved_errno > 0 ? saved_errno : EIO);
  }
}

std::string format_uuid(const uint8_t (&u)[16]) {
  if (all_zero(u)) return {};
  char buf[37];
  std::snprintf(buf, sizeof buf,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
                u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                u[14], u[15]);
  return buf;
}

Result<bool> is_btrfs(int fd) {
  struct statfs sfs;
  if (::fstatfs(fd, &sfs) < 0) return fail(Errno::last());
  return sfs.f_type == static_cast<decltype(sfs.f_type)>(BTRFS_SUPER_MAGIC);
}

Result<bool> is_subvolume(int fd) {
  HOODY_TRY(on_btrfs, is_btrfs(fd));
  if (!on_btrfs) return false;
  HOODY_TRY(st, sys::fstat(fd));
  return S_ISDIR(st.st_mode) && st.st_ino == kSubvolumeRootIno;
}

Status create_subvolume(int dirfd, const char* name) {
  auto s = check(btrfs_util_create_subvolume_fd(dirfd, name, 0, nullptr, nullptr));
  log::get("btrfs")->debug("op=create_subvolume name={} -> {}", name,
                           s ? "ok" : s.error().message());
  return s;
}

Status snapshot(int src_fd, int dst_dirfd, const char* name, bool readonly) {
  int flags = readonly ? BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY : 0;
  auto s = check(btrfs_util_create_snapshot_fd2(src_fd, dst_dirfd, name, flags, nullptr, nullptr));
  log::get("btrfs")->debug("op=snapshot name={} ro={} -> {}", name, readonly,
                           s ? "ok" : s.error().message());
  return s;
}

Status delete_subvolume(int dirfd, const char* name, bool recursive) {
  int flags = recursive ? BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE : 0;
  auto s = check(btrfs_util_delete_subvolume_fd(dirfd, name, flags));
  log::get("btrfs")->debug("op=delete_subvolume name={} recursive={} -> {}", name, recursive,
                           s ? "ok" : s.error().message());
  return s;
}

Result<SubvolumeInfo> info(int fd) {
  struct btrfs_util_subvolume_info bi {};
  HOODY_CHECK(check(btrfs_util_subvolume_info_fd(fd, 0, &bi)));
  SubvolumeInfo out;
  out.id = bi.id;
  out.parent_id = bi.parent_id;
  out.dir_id = bi.dir_id;
  out.uuid = format_uuid(bi.uuid);
  out.parent_uuid = format_uuid(bi.parent_uuid);
  out.received_uuid = format_uuid(bi.received_uuid);
  out.generation = bi.generation;
  out.ctransid = bi.ctransid;
  out.otransid = bi.otransid;
  out.otime = bi.otime;
  out.ctime = bi.ctime;
  out.readonly = (bi.flags & 1ULL /* BTRFS_ROOT_SUBVOL_RDONLY */) != 0;
  return out;
}

Result<bool> is_readonly(int fd) {
  bool ro = false;
  HOODY_CHECK(check(btrfs_util_get_subvolume_read_only_fd(fd, &ro)));
  return ro;
}

Status set_readonly(int fd, bool readonly) {
  auto s = check(btrfs_util_set_subvolume_read_only_fd(fd, readonly));
  log::get("btrfs")->debug("op=set_readonly ro={} -> {}", readonly,
                           s ? "ok" : s.error().message());
  return s;
}

Result<std::vector<Child>> children(int fd, bool post_order) {
  // libbtrfsutil 6.2 may close the fd it is given (unprivileged mode): give it
  // its own, and afterwards close that only while the number still names the
  // directory we dup'ed, so that a number reused by another thread is never
  // closed.  This runs on every path out, failures included.
  HOODY_TRY(want, sys::fstat(fd));
  HOODY_TRY(own, sys::dup(fd));
  std::vector<Child> out;
  Status st = [&]() -> Status {
    btrfs_util_subvolume_iterator* raw = nullptr;
    int flags = post_order ? BTRFS_UTIL_SUBVOLUME_ITERATOR_POST_ORDER : 0;
    HOODY_CHECK(check(btrfs_util_create_subvolume_iterator_fd(own.get(), 0, flags, &raw)));
    UniqueIterator it(raw);
    for (;;) {
      char* path = nullptr;
      uint64_t id = 0;
      auto e = btrfs_util_subvolume_iterator_next(it.get(), &path, &id);
      if (e == BTRFS_UTIL_ERROR_STOP_ITERATION) return {};
      HOODY_CHECK(check(e));
      std::unique_ptr<char, decltype(&std::free)> owned(path, &std::free);
      out.push_back(Child{path, id});
    }
  }();
  auto now = sys::fstat(own.get());
  if (!now || now->st_dev != want.st_dev || now->st_ino != want.st_ino) own.release();
  if (!st) return fail(st.error());
  return out;
}

Status sync(int fd) { return check(btrfs_util_sync_fd(fd)); }

Result<uint64_t> start_sync(int fd) {
  uint64_t transid = 0;
  HOODY_CHECK(check(btrfs_util_start_sync_fd(fd, &transid)));
  return transid;
}

Status wait_sync(int fd, uint64_t transid) { return check(btrfs_util_wait_sync_fd(fd, transid)); }

Result<UniqueFd> open_dir(int dirfd, const char* name) {
  return sys::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
}

}  // namespace hoody::btrfs
