#include "hoody/sys.hpp"

#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>

#include <cstdio>

namespace hoody::sys {

namespace {
Result<UniqueFd> fd_or_errno(int fd) {
  if (fd < 0) return fail(Errno::last());
  return UniqueFd(fd);
}
Status ok_or_errno(int r) {
  if (r < 0) return fail(Errno::last());
  return {};
}
}  // namespace

Result<UniqueFd> open(const char* path, int flags, mode_t mode) {
  return fd_or_errno(retry_eintr([&] { return ::open(path, flags | O_CLOEXEC, mode); }));
}

Result<UniqueFd> openat(int dirfd, const char* name, int flags, mode_t mode) {
  return fd_or_errno(
      retry_eintr([&] { return ::openat(dirfd, name, flags | O_CLOEXEC, mode); }));
}

std::string proc_fd(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Result<UniqueFd> reopen(int opath_fd, int flags) {
  auto p = proc_fd(opath_fd);
  return open(p.c_str(), flags & ~O_NOFOLLOW);
}

Result<UniqueFd> dup(int fd) { return fd_or_errno(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

Result<struct stat> fstat(int fd) {
  struct stat st;
  if (::fstat(fd, &st) < 0) return fail(Errno::last());
  return st;
}

Result<struct stat> fstatat(int dirfd, const char* name, int flags) {
  struct stat st;
  if (::fstatat(dirfd, name, &st, flags) < 0) return fail(Errno::last());
  return st;
}

Result<struct stat> stat(const char* path) {
  struct stat st;
  if (::stat(path, &st) < 0) return fail(Errno::last());
  return st;
}

Result<struct statvfs> fstatvfs(int fd) {
  struct statvfs sv;
  if (::fstatvfs(fd, &sv) < 0) return fail(Errno::last());
  return sv;
}

Status mkdirat(int dirfd, const char* name, mode_t mode) {
  return ok_or_errno(::mkdirat(dirfd, name, mode));
}
Status unlinkat(int dirfd, const char* name, int flags) {
  return ok_or_errno(::unlinkat(dirfd, name, flags));
}
Status renameat2(int olddir, const char* oldname, int newdir, const char* newname,
                 unsigned flags) {
  return ok_or_errno(::renameat2(olddir, oldname, newdir, newname, flags));
}
Status fsync(int fd) { return ok_or_errno(retry_eintr([&] { return ::fsync(fd); })); }
Status fdatasync(int fd) { return ok_or_errno(retry_eintr([&] { return ::fdatasync(fd); })); }
Status ftruncate(int fd, off_t size) {
  return ok_or_errno(retry_eintr([&] { return ::ftruncate(fd, size); }));
}

Result<size_t> pread(int fd, void* buf, size_t n, off_t off) {
  ssize_t r = retry_eintr([&] { return ::pread(fd, buf, n, off); });
  if (r < 0) return fail(Errno::last());
  return static_cast<size_t>(r);
}

Result<size_t> pwrite(int fd, const void* buf, size_t n, off_t off) {
  ssize_t r = retry_eintr([&] { return ::pwrite(fd, buf, n, off); });
  if (r < 0) return fail(Errno::last());
  return static_cast<size_t>(r);
}

Status write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t r = retry_eintr([&] { return ::write(fd, data.data(), data.size()); });
    if (r < 0) return fail(Errno::last());
    data.remove_prefix(static_cast<size_t>(r));
  }
  return {};
}

Result<std::string> read_file(int dirfd, const char* name) {
  HOODY_TRY(fd, openat(dirfd, name, O_RDONLY));
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t r = retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (r < 0) return fail(Errno::last());
    if (r == 0) break;
    out.append(buf, static_cast<size_t>(r));
  }
  return out;
}

Result<std::string> read_link(int dirfd, const char* name) {
  char buf[PATH_MAX + 1];
  ssize_t r = ::readlinkat(dirfd, name, buf, sizeof buf);
  if (r < 0) return fail(Errno::last());
  if (static_cast<size_t>(r) >= sizeof buf) return fail(ENAMETOOLONG);
  return std::string(buf, static_cast<size_t>(r));
}

std::string fd_path(int fd) {
  auto r = read_link(AT_FDCWD, proc_fd(fd).c_str());
  return r ? *r : "fd " + std::to_string(fd);
}

void DirDeleter::operator()(DIR* d) const {
  if (d) ::closedir(d);
}

Result<UniqueDir> opendir_at(int dirfd, const char* name) {
  HOODY_TRY(fd, openat(dirfd, name, O_RDONLY | O_DIRECTORY));
  DIR* d = ::fdopendir(fd.get());
  if (!d) return fail(Errno::last());
  fd.release();
  return UniqueDir(d);
}

std::string absolute(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

Result<UniqueFd> open_beneath(int rootfd, const char* path, int flags, mode_t mode,
                              unsigned extra_resolve) {
  struct open_how how {};
  how.flags = static_cast<unsigned>(flags | O_CLOEXEC);
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | extra_resolve;
  // openat2 gives EAGAIN when a concurrent rename or mount could have let the
  // walk escape; a handful of retries is what the kernel documentation asks for.
  constexpr int kMaxRetries = 32;
  for (int i = 0; i < kMaxRetries; ++i) {
    long fd = ::syscall(SYS_openat2, rootfd, path, &how, sizeof how);
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    int e = errno;
    if (e != EAGAIN && e != EINTR) return fail(e);
  }
  return fail(EAGAIN);
}

}  // namespace hoody::sys
