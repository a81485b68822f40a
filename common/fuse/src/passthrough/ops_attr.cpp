// Attributes: getattr, setattr, readlink, statfs, and the extended attributes.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "hoody/fuse_reply.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

namespace {
// The O_PATH fd's target as a path the kernel follows (xattrs and chmod/utimens
// take no O_PATH fd); the magic link names the inode itself, never a user path.
std::string via_proc(int fd) { return sys::proc_fd(fd); }
}  // namespace

namespace {
// Whether the caller of req is in group gid (its primary group, or one of its
// supplementary groups as libfuse reads them from /proc).
bool caller_in_group(fuse_req_t req, gid_t gid) {
  if (fuse_req_ctx(req)->gid == gid) return true;
  gid_t groups[64];
  int n = fuse_req_getgroups(req, 64, groups);
  if (n > 64) {
    std::vector<gid_t> all(static_cast<size_t>(n));
    n = fuse_req_getgroups(req, n, all.data());
    return n > 0 && std::find(all.begin(), all.begin() + n, gid) != all.begin() + n;
  }
  return n > 0 && std::find(groups, groups + n, gid) != groups + n;
}

// Whether id (as this daemon sees it) is mapped in the caller's user
// namespace: /proc/PID/uid_map or gid_map, "inside outside count" lines.
bool mapped(pid_t pid, const char* map, unsigned id) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/" + map);
  unsigned long inside, outside, count;
  while (f >> inside >> outside >> count)
    if (id >= outside && id - outside < count) return true;
  return false;
}

// Whether the caller of req has CAP_FSETID over the file (uid, gid), as the
// kernel's capable_wrt_inode_uidgid decides: the capability in its
// effective set, and both ids mapped in its user namespace.  Read from
// /proc/PID/status; a caller that is gone has nothing.
bool caller_has_fsetid(fuse_req_t req, uid_t uid, gid_t gid) {
  pid_t pid = fuse_req_ctx(req)->pid;
  if (pid <= 0) return false;
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  unsigned long long eff = 0;
  bool found = false;
  while (std::getline(f, line))
    if (line.rfind("CapEff:", 0) == 0) {
      found = std::sscanf(line.c_str() + 7, "%llx", &eff) == 1;
      break;
    }
  constexpr int kCapFsetid = 4;
  return found && (eff >> kCapFsetid & 1) && mapped(pid, "uid_map", uid) &&
         mapped(pid, "gid_map", gid);
}
}  // namespace

Status kill_suidgid(fuse_req_t req, int fd, bool o_path) {
  HOODY_TRY(st, sys::fstatat(fd, "", AT_EMPTY_PATH));
  if (!S_ISREG(st.st_mode)) return {};
  mode_t mode = st.st_mode & 07777;
  mode_t kept = mode & ~S_ISUID;
  // setgid with group-exec always goes; without group-exec (a mandatory
  // locking mark) only for a caller outside the file's group, as
  // setattr_should_drop_sgid decides (the caller lacks CAP_FSETID: that is
  // what the kill flag says).
  if ((mode & S_ISGID) && ((mode & S_IXGRP) || !caller_in_group(req, st.st_gid)))
    kept &= ~S_ISGID;
  if (kept == mode) return {};
  int r = o_path ? ::fchmodat(AT_FDCWD, via_proc(fd).c_str(), kept, 0) : ::fchmod(fd, kept);
  if (r < 0) return fail(Errno::last());
  return {};
}

void PassthroughFs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_vnode(ino)) {
    auto st = vgetattr(req, ino);
    if (!st) return reply(req, fail(st.error()));
    fuse_reply_attr(req, &*st, vattr_timeout(ino));
    return;
  }
  Result<struct stat> st = [&]() -> Result<struct stat> {
    Inode* in = inode(ino);
    File* f = fi ? file_of(fi) : nullptr;
    HOODY_CHECK(check(req, {Op::getattr, f ? *f->inode : *in, nullptr, 0, f}));
    if (f) return sys::fstat(f->fd.get());
    HOODY_TRY(fd, pin(in));
    return sys::fstatat(fd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }();
  if (!st) return reply(req, fail(st.error()));
  show(*st);
  fuse_reply_attr(req, &*st, cfg_.attr_timeout);
}

void PassthroughFs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                            fuse_file_info* fi) {
  if (is_vnode(ino)) {
    auto st = vsetattr(req, ino, *attr, valid);
    if (!st) return reply(req, fail(st.error()));
    fuse_reply_attr(req, &*st, 0);
    return;
  }
  Status s = [&]() -> Status {
    Inode* in = inode(ino);
    HOODY_CHECK(check(req, {Op::setattr, *in, nullptr, valid, fi ? file_of(fi) : nullptr}));
    if (fi && stale(*file_of(fi))) return stale_refusal(req, "setattr", *file_of(fi));
    HOODY_TRY(ifd, pin(in));
    int fh = fi ? file_of(fi)->fd.get() : -1;
    if (valid & FUSE_SET_ATTR_MODE) {
      int r = fh >= 0 ? ::fchmod(fh, attr->st_mode)
                      : ::fchmodat(AT_FDCWD, via_proc(ifd.get()).c_str(), attr->st_mode, 0);
      if (r < 0) return fail(Errno::last());
    }
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
      uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
      gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
      HOODY_TRY(before, sys::fstatat(ifd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
      if (::fchownat(ifd.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
        return fail(Errno::last());
      // The backing chown is this daemon's (CAP_FSETID): it dropped setuid
      // and a group-exec setgid, as any chown does.  A setgid without
      // group-exec (the mandatory-locking mark) goes too when the caller is
      // outside the file's group and lacks CAP_FSETID (setattr_should_drop_sgid,
      // on the file as it was).
      mode_t m = before.st_mode;
      if (S_ISREG(m) && (m & S_ISGID) && !(m & S_IXGRP) && !caller_in_group(req, before.st_gid) &&
          !caller_has_fsetid(req, before.st_uid, before.st_gid)) {
        HOODY_TRY(now, sys::fstatat(ifd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
        if ((now.st_mode & S_ISGID) &&
            ::fchmodat(AT_FDCWD, via_proc(ifd.get()).c_str(), now.st_mode & 07777 & ~S_ISGID, 0) < 0)
          return fail(Errno::last());
      }
    }
    if (valid & FUSE_SET_ATTR_SIZE) {
      int r = fh >= 0 ? ::ftruncate(fh, attr->st_size)
                      : ::truncate(via_proc(ifd.get()).c_str(), attr->st_size);
      if (r < 0) return fail(Errno::last());
    }
    // FATTR_KILL_SUIDGID (libfuse's FUSE_SET_ATTR_KILL_SUID, bit 11), with
    // handle_killpriv_v2: a truncate by a caller without CAP_FSETID.  The
    // kernel also sends it with every chown; there the code above has done
    // what a native chown does.
    if ((valid & FUSE_SET_ATTR_KILL_SUID) &&
        !(valid & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
      HOODY_CHECK(fh >= 0 ? kill_suidgid(req, fh, false) : kill_suidgid(req, ifd.get(), true));
    if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
      struct timespec tv[2];
      tv[0].tv_sec = tv[1].tv_sec = 0;
      tv[0].tv_nsec = tv[1].tv_nsec = UTIME_OMIT;
      if (valid & FUSE_SET_ATTR_ATIME_NOW)
        tv[0].tv_nsec = UTIME_NOW;
      else if (valid & FUSE_SET_ATTR_ATIME)
        tv[0] = attr->st_atim;
      if (valid & FUSE_SET_ATTR_MTIME_NOW)
        tv[1].tv_nsec = UTIME_NOW;
      else if (valid & FUSE_SET_ATTR_MTIME)
        tv[1] = attr->st_mtim;
      int r;
      if (fh >= 0)
        r = ::futimens(fh, tv);
      else if (in->type == S_IFLNK)
        r = ::utimensat(ifd.get(), "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
      else
        r = ::utimensat(AT_FDCWD, via_proc(ifd.get()).c_str(), tv, 0);
      if (r < 0) return fail(Errno::last());
    }
    return {};
  }();
  if (!s) return reply(req, s);
  getattr(req, ino, fi);
}

void PassthroughFs::readlink(fuse_req_t req, fuse_ino_t ino) {
  if (is_vnode(ino)) return reply(req, Status(fail(EINVAL)));
  auto target = [&]() -> Result<std::string> {
    HOODY_CHECK(check(req, {Op::readlink, *inode(ino)}));
    HOODY_TRY(fd, pin(inode(ino)));
    return sys::read_link(fd.get(), "");
  }();
  if (!target) return reply(req, fail(target.error()));
  fuse_reply_readlink(req, target->c_str());
}

void PassthroughFs::statfs(fuse_req_t req, fuse_ino_t ino) {
  if (is_vnode(ino)) {
    // SOURCE's, when it is served (Config::source_under_virtual_root).
    Root* src = source_root_.load();
    if (!src) {
      struct statvfs sv {};
      sv.f_bsize = sv.f_frsize = 4096;
      sv.f_namemax = 255;
      fuse_reply_statfs(req, &sv);
      return;
    }
    ino = reinterpret_cast<fuse_ino_t>(src->inode.load());
  }
  auto sv = [&]() -> Result<struct statvfs> {
    HOODY_CHECK(check(req, {Op::statfs, *inode(ino)}));
    HOODY_TRY(fd, pin(inode(ino)));
    return sys::fstatvfs(fd.get());
  }();
  if (!sv) return reply(req, fail(sv.error()));
  fuse_reply_statfs(req, &*sv);
}

void PassthroughFs::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                             size_t size, int flags) {
  if (is_vnode(ino)) return reply(req, Status(fail(EPERM)));
  reply(req, [&]() -> Status {
    HOODY_CHECK(check(req, {Op::setxattr, *inode(ino), name, flags}));
    HOODY_TRY(fd, pin(inode(ino)));
    if (::setxattr(via_proc(fd.get()).c_str(), name, value, size, flags) < 0)
      return fail(Errno::last());
    return {};
  }());
}

void PassthroughFs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (is_vnode(ino)) return reply_xattr(req, vgetxattr(req, ino, name), size);
  if (auto s = check(req, {Op::getxattr, *inode(ino), name}); !s) return reply(req, s);
  auto fd = pin(inode(ino));
  if (!fd) return reply(req, fail(fd.error()));
  std::string p = via_proc(fd->get());
  if (size == 0) {
    ssize_t n = ::getxattr(p.c_str(), name, nullptr, 0);
    if (n < 0) return reply(req, fail(Errno::last()));
    fuse_reply_xattr(req, static_cast<size_t>(n));
    return;
  }
  std::vector<char> buf(size);
  ssize_t n = ::getxattr(p.c_str(), name, buf.data(), size);
  if (n < 0) return reply(req, fail(Errno::last()));
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

void PassthroughFs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  if (is_vnode(ino)) {
    if (size == 0) return (void)fuse_reply_xattr(req, 0);
    return (void)fuse_reply_buf(req, nullptr, 0);
  }
  if (auto s = check(req, {Op::listxattr, *inode(ino)}); !s) return reply(req, s);
  auto fd = pin(inode(ino));
  if (!fd) return reply(req, fail(fd.error()));
  std::string p = via_proc(fd->get());
  if (size == 0) {
    ssize_t n = ::listxattr(p.c_str(), nullptr, 0);
    if (n < 0) return reply(req, fail(Errno::last()));
    fuse_reply_xattr(req, static_cast<size_t>(n));
    return;
  }
  std::vector<char> buf(size);
  ssize_t n = ::listxattr(p.c_str(), buf.data(), size);
  if (n < 0) return reply(req, fail(Errno::last()));
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

void PassthroughFs::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (is_vnode(ino)) return reply(req, Status(fail(EPERM)));
  reply(req, [&]() -> Status {
    HOODY_CHECK(check(req, {Op::removexattr, *inode(ino), name}));
    HOODY_TRY(fd, pin(inode(ino)));
    if (::removexattr(via_proc(fd.get()).c_str(), name) < 0) return fail(Errno::last());
    return {};
  }());
}

}  // namespace hoody::pt
