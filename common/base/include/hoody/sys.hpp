// hoody::sys — thin wrappers of the system calls hoody uses.
//
// Each wrapper captures errno at once, before any cleanup can clobber it, and
// returns a Result.  Descriptors returned by open-like calls are UniqueFds and
// are always O_CLOEXEC.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "hoody/result.hpp"
#include "hoody/unique_fd.hpp"

namespace hoody::sys {

// Retry a call that fails with EINTR; return its value (or -1 with errno set).
template <typename F> auto retry_eintr(F&& f) {
  decltype(f()) r;
  do {
    r = f();
  } while (r == -1 && errno == EINTR);
  return r;
}

Result<UniqueFd> open(const char* path, int flags, mode_t mode = 0);
Result<UniqueFd> openat(int dirfd, const char* name, int flags, mode_t mode = 0);
// Re-open an O_PATH fd with real access flags through /proc/self/fd.
Result<UniqueFd> reopen(int opath_fd, int flags);
Result<UniqueFd> dup(int fd);

Result<struct stat> fstat(int fd);
Result<struct stat> fstatat(int dirfd, const char* name, int flags);
Result<struct stat> stat(const char* path);
Result<struct statvfs> fstatvfs(int fd);

Status mkdirat(int dirfd, const char* name, mode_t mode);
Status unlinkat(int dirfd, const char* name, int flags);
Status renameat2(int olddir, const char* oldname, int newdir, const char* newname,
                 unsigned flags);
Status fsync(int fd);
Status fdatasync(int fd);
Status ftruncate(int fd, off_t size);

Result<size_t> pread(int fd, void* buf, size_t n, off_t off);
Result<size_t> pwrite(int fd, const void* buf, size_t n, off_t off);
// Write all of buf (loops over short writes); for small files and pipes.
Status write_all(int fd, std::string_view data);
// Read a whole (small) file.
Result<std::string> read_file(int dirfd, const char* name);
Result<std::string> read_link(int dirfd, const char* name);

// The path of an fd as the kernel names it (/proc/self/fd/N target): for
// messages only, never for access.
std::string fd_path(int fd);
// "/proc/self/fd/N", for calls that only take a path (the passthrough_hp trick).
std::string proc_fd(int fd);
// realpath(path), or path itself when it does not resolve.  For an operator's
// configuration (a mountpoint), never for content a user controls.
std::string absolute(const std::string& path);

struct DirDeleter {
  void operator()(DIR* d) const;
};
using UniqueDir = std::unique_ptr<DIR, DirDeleter>;
// fdopendir on a dup of fd (the caller keeps fd).
Result<UniqueDir> opendir_at(int dirfd, const char* name);

// Resolve `path` beneath `root` with openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS),
// retrying a bounded number of times on EAGAIN (a concurrent rename).
Result<UniqueFd> open_beneath(int rootfd, const char* path, int flags, mode_t mode = 0,
                              unsigned extra_resolve = 0);

}  // namespace hoody::sys
