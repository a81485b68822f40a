// POSIX parity: every check runs the same calls on the FUSE mount and on a
// plain directory of the same BTRFS pool and compares results and errnos.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/process.hpp"
#include "hoody/unique_fd.hpp"
#include "parity.hpp"

using namespace hoody::test;
using hoody::UniqueFd;

namespace {

const mode_t kOldUmask = ::umask(022);  // modes in traces must not depend on the caller's umask

// open() that keeps errno intact for Trace::rc.
UniqueFd open_fd(const std::string& path, int flags, mode_t mode = 0644) {
  return UniqueFd(::open(path.c_str(), flags | O_CLOEXEC, mode));
}

// Write a whole file; returns bytes written or -1 (errno preserved).
long write_file(const std::string& path, std::string_view data, int flags = O_TRUNC,
                mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | flags, mode);
  if (fd < 0) return -1;
  ssize_t r = ::write(fd, data.data(), data.size());
  int e = errno;
  ::close(fd);
  errno = e;
  return r;
}

std::string read_fd(int fd, off_t off, size_t n) {
  std::string buf(n, '\0');
  ssize_t r = ::pread(fd, buf.data(), n, off);
  if (r < 0) return "<" + errno_name(errno) + ">";
  buf.resize(static_cast<size_t>(r));
  return buf;
}

std::string pattern(size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  unsigned x = seed * 2654435761u + 1;
  for (auto& c : s) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

// Times: exact when set explicitly; "recent" for UTIME_NOW.
std::string times_of(const std::string& path, bool follow = true) {
  struct stat st;
  if ((follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st)) < 0)
    return errno_name(errno);
  auto fmt = [](const struct timespec& ts) {
    struct timespec now;
    ::clock_gettime(CLOCK_REALTIME, &now);
    if (ts.tv_sec > 1'000'000'000 && std::llabs(now.tv_sec - ts.tv_sec) < 60) return std::string("recent");
    return std::to_string(ts.tv_sec) + "." + std::to_string(ts.tv_nsec);
  };
  return "atime=" + fmt(st.st_atim) + " mtime=" + fmt(st.st_mtim);
}

struct Dirent {
  std::string name;
  unsigned type;
  bool operator<(const Dirent& o) const { return name < o.name; }
};

// All entries through raw getdents64 with a small buffer; *calls = syscalls made.
std::vector<Dirent> list_dir(const std::string& path, int* calls, size_t bufsize = 4096) {
  std::vector<Dirent> out;
  UniqueFd fd = open_fd(path, O_RDONLY | O_DIRECTORY);
  if (!fd) return out;
  std::vector<char> buf(bufsize);
  *calls = 0;
  for (;;) {
    long n = ::syscall(SYS_getdents64, fd.get(), buf.data(), buf.size());
    ++*calls;
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      auto* d = reinterpret_cast<struct dirent64*>(buf.data() + off);
      out.push_back({d->d_name, d->d_type});
      off += d->d_reclen;
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

// hoody-sharefs makes no FIFO or socket in a share (sharefs-security): after
// a check that made some natively (and was refused in the share), the native
// ones go too, so that the later checks compare the same trees.
void drop_specials_for_sharefs(const Tree& t, std::initializer_list<const char*> rels) {
  if (std::strcmp(parity_daemon(), "sharefs") != 0 || t.label != "native") return;
  for (auto r : rels) ::unlink((t / r).c_str());
}

std::string join(const std::vector<Dirent>& v) {
  std::string s;
  for (auto& d : v) s += d.name + ":" + std::to_string(d.type) + ",";
  return summarize(s);
}

// The base tree for most cases: file f ("hello"), dir d, symlink l -> f.
void make_basic(Parity& p) {
  p.check("setup: file f, dir d, symlink l -> f, dangling -> nowhere", [](const Tree& t, Trace& o) {
    o.rc("write f", write_file(t / "f", "hello"));
    o.rc("mkdir d", ::mkdir((t / "d").c_str(), 0755));
    o.rc("symlink l", ::symlink("f", (t / "l").c_str()));
    o.rc("symlink dangling", ::symlink("nowhere", (t / "dangling").c_str()));
  });
}

}  // namespace

TEST_CASE("lookup and stat") {
  Parity p;
  make_basic(p);
  p.check("stat file", [](const Tree& t, Trace& o) { o.stat("stat", t / "f"); });
  p.check("stat dir", [](const Tree& t, Trace& o) { o.stat("stat", t / "d"); });
  p.check("stat/lstat symlink", [](const Tree& t, Trace& o) {
    o.stat("stat", t / "l").stat("lstat", t / "l", false);
  });
  p.check("stat/lstat dangling symlink", [](const Tree& t, Trace& o) {
    o.stat("stat", t / "dangling").stat("lstat", t / "dangling", false);
  });
  p.check("stat missing (twice: negative entry)", [](const Tree& t, Trace& o) {
    o.stat("stat", t / "missing").stat("again", t / "missing");
  });
  p.check("stat below a file: ENOTDIR", [](const Tree& t, Trace& o) { o.stat("stat", t / "f/x"); });
  p.check("stat below a missing dir", [](const Tree& t, Trace& o) { o.stat("stat", t / "nodir/x"); });
  p.check("name too long", [](const Tree& t, Trace& o) {
    o.stat("255", t / std::string(255, 'n')).stat("256", t / std::string(256, 'n'));
  });
  p.check("a missing name appears once created", [](const Tree& t, Trace& o) {
    o.stat("before", t / "late");
    o.rc("create", write_file(t / "late", "x"));
    o.stat("after", t / "late");
    o.rc("unlink", ::unlink((t / "late").c_str()));
    o.stat("gone", t / "late");
  });
  p.check("access", [](const Tree& t, Trace& o) {
    o.rc("f rw", ::access((t / "f").c_str(), R_OK | W_OK));
    o.rc("f x", ::access((t / "f").c_str(), X_OK));
    o.rc("d x", ::access((t / "d").c_str(), X_OK));
    o.rc("missing", ::access((t / "missing").c_str(), F_OK));
  });
}

TEST_CASE("chmod and chown") {
  Parity p;
  make_basic(p);
  p.check("chmod file", [](const Tree& t, Trace& o) {
    for (mode_t m : {0600, 0755, 04755, 02755, 01777, 0}) {
      o.rc("chmod", ::chmod((t / "f").c_str(), m));
      o.stat("stat", t / "f");
    }
  });
  p.check("chmod dir, via symlink, missing", [](const Tree& t, Trace& o) {
    o.rc("dir", ::chmod((t / "d").c_str(), 0700)).stat("stat", t / "d");
    o.rc("via l", ::chmod((t / "l").c_str(), 0640)).stat("f", t / "f").stat("l", t / "l", false);
    o.rc("missing", ::chmod((t / "missing").c_str(), 0644));
    o.rc("nofollow on symlink",
         ::fchmodat(AT_FDCWD, (t / "l").c_str(), 0600, AT_SYMLINK_NOFOLLOW));
  });
  p.check("fchmod", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "f", O_RDONLY);
    o.rc("fchmod", ::fchmod(fd.get(), 0604)).fstat("fstat", fd.get());
  });
  p.check("chown (root)", [](const Tree& t, Trace& o) {
    o.rc("chown", ::chown((t / "f").c_str(), 1234, 5678)).stat("stat", t / "f");
    o.rc("chown -1", ::chown((t / "f").c_str(), static_cast<uid_t>(-1), 42)).stat("stat", t / "f");
    o.rc("lchown", ::lchown((t / "l").c_str(), 77, 88)).stat("l", t / "l", false).stat("f", t / "f");
    o.rc("dir", ::chown((t / "d").c_str(), 1, 2)).stat("d", t / "d");
    o.rc("missing", ::chown((t / "missing").c_str(), 1, 2));
  });
  p.check("chown clears setuid/setgid", [](const Tree& t, Trace& o) {
    o.rc("chmod", ::chmod((t / "f").c_str(), 06755));
    o.rc("chown", ::chown((t / "f").c_str(), 1000, 1000)).stat("stat", t / "f");
  });
}

TEST_CASE("truncate and ftruncate") {
  Parity p;
  make_basic(p);
  p.check("truncate", [](const Tree& t, Trace& o) {
    o.rc("write", write_file(t / "t", "0123456789"));
    o.rc("shrink", ::truncate((t / "t").c_str(), 4)).content("content", t / "t");
    o.rc("grow", ::truncate((t / "t").c_str(), 10000)).stat("stat", t / "t").content("content", t / "t");
    o.rc("zero", ::truncate((t / "t").c_str(), 0)).stat("stat", t / "t");
    o.rc("negative", ::truncate((t / "t").c_str(), -1));
    o.rc("dir", ::truncate((t / "d").c_str(), 0));
    o.rc("missing", ::truncate((t / "missing").c_str(), 0));
    o.rc("via symlink", ::truncate((t / "l").c_str(), 2)).content("f", t / "f");
  });
  p.check("ftruncate", [](const Tree& t, Trace& o) {
    UniqueFd rw = open_fd(t / "f", O_RDWR);
    o.rc("rw", ::ftruncate(rw.get(), 3)).fstat("fstat", rw.get()).val("read", read_fd(rw.get(), 0, 100));
    o.rc("grow", ::ftruncate(rw.get(), 8)).val("read", summarize(read_fd(rw.get(), 0, 100)));
    UniqueFd ro = open_fd(t / "f", O_RDONLY);
    o.rc("read-only fd", ::ftruncate(ro.get(), 1));
    UniqueFd dir = open_fd(t / "d", O_RDONLY | O_DIRECTORY);
    o.rc("dir fd", ::ftruncate(dir.get(), 0));
  });
}

TEST_CASE("utimensat") {
  Parity p;
  make_basic(p);
  p.check("explicit times, UTIME_OMIT, UTIME_NOW", [](const Tree& t, Trace& o) {
    struct timespec ts[2] = {{1000, 123456789}, {2000, 987654321}};
    o.rc("set", ::utimensat(AT_FDCWD, (t / "f").c_str(), ts, 0)).val("times", times_of(t / "f"));
    struct timespec omit_atime[2] = {{0, UTIME_OMIT}, {3000, 5}};
    o.rc("omit atime", ::utimensat(AT_FDCWD, (t / "f").c_str(), omit_atime, 0)).val("times", times_of(t / "f"));
    struct timespec now_atime[2] = {{0, UTIME_NOW}, {0, UTIME_OMIT}};
    o.rc("now atime", ::utimensat(AT_FDCWD, (t / "f").c_str(), now_atime, 0)).val("times", times_of(t / "f"));
    o.rc("null", ::utimensat(AT_FDCWD, (t / "f").c_str(), nullptr, 0)).val("times", times_of(t / "f"));
    o.rc("missing", ::utimensat(AT_FDCWD, (t / "missing").c_str(), ts, 0));
    struct timespec bad[2] = {{0, 1'000'000'000}, {0, 0}};
    o.rc("bad nsec", ::utimensat(AT_FDCWD, (t / "f").c_str(), bad, 0));
  }, {.bindfs = "bindfs ignores a utimens call in which either time is UTIME_OMIT"});
  p.check("symlink (nofollow), dir, futimens", [](const Tree& t, Trace& o) {
    struct timespec ts[2] = {{5000, 1}, {6000, 2}};
    o.rc("nofollow", ::utimensat(AT_FDCWD, (t / "l").c_str(), ts, AT_SYMLINK_NOFOLLOW))
        .val("l", times_of(t / "l", false));
    o.rc("dir", ::utimensat(AT_FDCWD, (t / "d").c_str(), ts, 0)).val("d", times_of(t / "d"));
    UniqueFd fd = open_fd(t / "f", O_RDONLY);
    struct timespec ts2[2] = {{7000, 3}, {8000, 4}};
    o.rc("futimens", ::futimens(fd.get(), ts2)).val("f", times_of(t / "f"));
  });
  p.check("write updates mtime", [](const Tree& t, Trace& o) {
    struct timespec ts[2] = {{1000, 0}, {1000, 0}};
    o.rc("set", ::utimensat(AT_FDCWD, (t / "f").c_str(), ts, 0));
    o.rc("write", write_file(t / "f", "more", O_APPEND)).val("times", times_of(t / "f"));
  });
}

TEST_CASE("mknod, mkdir, symlink, readlink") {
  Parity p;
  make_basic(p);
  p.check("mknod fifo", [](const Tree& t, Trace& o) {
    o.rc("mknod", ::mknod((t / "fifo").c_str(), S_IFIFO | 0640, 0)).stat("stat", t / "fifo");
    o.rc("again", ::mknod((t / "fifo").c_str(), S_IFIFO | 0640, 0));
    o.rc("mkfifo", ::mkfifo((t / "d/fifo2").c_str(), 0600)).stat("stat", t / "d/fifo2");
    o.rc("regular via mknod", ::mknod((t / "reg").c_str(), S_IFREG | 0600, 0)).stat("stat", t / "reg");
    o.rc("socket", ::mknod((t / "sock").c_str(), S_IFSOCK | 0600, 0)).stat("stat", t / "sock");
    drop_specials_for_sharefs(t, {"fifo", "d/fifo2", "sock"});
  }, Known{.sharefs = "no FIFO, socket or device is made in a share (mknod: EPERM; sharefs-security)"});
  p.check("fifo open nonblocking", [](const Tree& t, Trace& o) {
    UniqueFd r = open_fd(t / "fifo", O_RDONLY | O_NONBLOCK);
    o.rc("open r", r.get() >= 0 ? 0 : -1);
    UniqueFd w = open_fd(t / "fifo", O_WRONLY | O_NONBLOCK);
    o.rc("open w", w.get() >= 0 ? 0 : -1);
    o.rc("write", ::write(w.get(), "abc", 3));
    char buf[8];
    o.rc("read", ::read(r.get(), buf, sizeof buf));
  });
  p.check("mkdir", [](const Tree& t, Trace& o) {
    o.rc("mkdir", ::mkdir((t / "n").c_str(), 0750)).stat("stat", t / "n");
    o.rc("exists", ::mkdir((t / "n").c_str(), 0750));
    o.rc("over file", ::mkdir((t / "f").c_str(), 0750));
    o.rc("in missing", ::mkdir((t / "missing/n").c_str(), 0750));
    o.rc("in file", ::mkdir((t / "f/n").c_str(), 0750));
    o.rc("256 chars", ::mkdir((t / std::string(256, 'x')).c_str(), 0755));
    o.stat("parent nlink", t / "d");
  });
  p.check("mkdir keeps the sticky bit", [](const Tree& t, Trace& o) {
    o.rc("sticky+setgid", ::mkdir((t / "s").c_str(), 03777)).stat("stat", t / "s");
  }, {.bindfs = "bindfs drops the sticky bit of mkdir's mode"});
  p.check("symlink and readlink", [](const Tree& t, Trace& o) {
    char buf[8192];
    o.rc("symlink", ::symlink("some/target text", (t / "s1").c_str())).stat("lstat", t / "s1", false);
    ssize_t n = ::readlink((t / "s1").c_str(), buf, sizeof buf);
    o.rc("readlink", n).val("target", n > 0 ? std::string(buf, n) : "");
    o.rc("short buffer", ::readlink((t / "s1").c_str(), buf, 3)).val("prefix", std::string(buf, 3));
    o.rc("exists", ::symlink("x", (t / "s1").c_str()));
    o.rc("on a file", ::readlink((t / "f").c_str(), buf, sizeof buf));
    o.rc("missing", ::readlink((t / "missing").c_str(), buf, sizeof buf));
    std::string long_target(4095, 't');
    o.rc("4095-byte target", ::symlink(long_target.c_str(), (t / "s2").c_str()));
    n = ::readlink((t / "s2").c_str(), buf, sizeof buf);
    o.rc("readlink long", n);
    o.rc("4096-byte target", ::symlink(std::string(4096, 't').c_str(), (t / "s3").c_str()));
    o.rc("loop", ::symlink("loop", (t / "loop").c_str())).stat("stat loop", t / "loop");
  });
}

TEST_CASE("link and unlink") {
  Parity p;
  make_basic(p);
  p.check("link", [](const Tree& t, Trace& o) {
    o.rc("link", ::link((t / "f").c_str(), (t / "g").c_str()));
    o.stat("f", t / "f").stat("g", t / "g");
    o.rc("write via g", write_file(t / "g", "changed", O_TRUNC)).content("f", t / "f");
    o.rc("exists", ::link((t / "f").c_str(), (t / "g").c_str()));
    o.rc("missing", ::link((t / "missing").c_str(), (t / "h").c_str()));
    o.rc("dir", ::link((t / "d").c_str(), (t / "dlink").c_str()));
    o.rc("symlink itself", ::linkat(AT_FDCWD, (t / "l").c_str(), AT_FDCWD, (t / "l2").c_str(), 0))
        .stat("l2", t / "l2", false).stat("l", t / "l", false);
    o.rc("follow symlink", ::linkat(AT_FDCWD, (t / "l").c_str(), AT_FDCWD, (t / "l3").c_str(),
                                    AT_SYMLINK_FOLLOW)).stat("l3", t / "l3", false);
  }, {.bindfs = "high-level libfuse gives each hard link its own node: the cached size and nlink "
                "of one name go stale when the file is changed through another"});
  p.check("unlink", [](const Tree& t, Trace& o) {
    o.rc("unlink g", ::unlink((t / "g").c_str())).stat("f", t / "f").stat("g", t / "g");
    o.rc("dir", ::unlink((t / "d").c_str()));
    o.rc("missing", ::unlink((t / "missing").c_str()));
    o.rc("below file", ::unlink((t / "f/x").c_str()));
    o.rc("symlink", ::unlink((t / "l").c_str())).stat("f", t / "f");
  });
  p.check("unlinked file stays readable through an open fd", [](const Tree& t, Trace& o) {
    o.rc("write", write_file(t / "tmp", "still here"));
    UniqueFd fd = open_fd(t / "tmp", O_RDWR);
    o.rc("unlink", ::unlink((t / "tmp").c_str())).fstat("fstat", fd.get());
    o.val("read", read_fd(fd.get(), 0, 100));
    o.rc("write", ::pwrite(fd.get(), "!", 1, 10)).val("read", read_fd(fd.get(), 0, 100));
  });
}

TEST_CASE("rmdir") {
  Parity p;
  make_basic(p);
  p.check("rmdir", [](const Tree& t, Trace& o) {
    o.rc("mkdir a", ::mkdir((t / "a").c_str(), 0755)).rc("mkdir a/b", ::mkdir((t / "a/b").c_str(), 0755));
    o.rc("not empty", ::rmdir((t / "a").c_str()));
    o.rc("file", ::rmdir((t / "f").c_str()));
    o.rc("symlink", ::rmdir((t / "l").c_str()));
    o.rc("missing", ::rmdir((t / "missing").c_str()));
    o.rc("dot", ::rmdir((t / "a/.").c_str()));
    o.rc("dotdot", ::rmdir((t / "a/b/..").c_str()));
    o.rc("a/b", ::rmdir((t / "a/b").c_str())).stat("a", t / "a");
    o.rc("a", ::rmdir((t / "a").c_str())).stat("a", t / "a");
  });
}

TEST_CASE("rename") {
  Parity p;
  make_basic(p);
  auto ren = [](const Tree& t, const char* a, const char* b, unsigned flags = 0) {
    return ::renameat2(AT_FDCWD, (t / a).c_str(), AT_FDCWD, (t / b).c_str(), flags);
  };
  p.check("plain and replacing", [&](const Tree& t, Trace& o) {
    o.rc("write a", write_file(t / "a", "A")).rc("write b", write_file(t / "b", "B"));
    o.rc("a->a2", ren(t, "a", "a2")).stat("a", t / "a").content("a2", t / "a2");
    o.rc("a2->b (replace)", ren(t, "a2", "b")).content("b", t / "b").stat("a2", t / "a2");
    o.rc("same name", ren(t, "b", "b")).content("b", t / "b");
    o.rc("into dir", ren(t, "b", "d/b")).content("d/b", t / "d/b");
    o.rc("back", ren(t, "d/b", "b"));
    o.rc("missing", ren(t, "missing", "x"));
    o.rc("into missing dir", ren(t, "b", "nodir/b"));
    o.rc("hard links onto each other", ::link((t / "b").c_str(), (t / "b2").c_str()));
    o.rc("b->b2", ren(t, "b", "b2")).stat("b", t / "b").stat("b2", t / "b2");
  });
  p.check("RENAME_NOREPLACE", [&](const Tree& t, Trace& o) {
    o.rc("write a", write_file(t / "a", "A")).rc("write b", write_file(t / "b", "B"));
    o.rc("over existing", ren(t, "a", "b", RENAME_NOREPLACE)).content("a", t / "a").content("b", t / "b");
    o.rc("to new", ren(t, "a", "c", RENAME_NOREPLACE)).content("c", t / "c").stat("a", t / "a");
  }, {.bindfs = "bindfs refuses every rename flag with EINVAL"});
  p.check("RENAME_EXCHANGE", [&](const Tree& t, Trace& o) {
    o.rc("write x", write_file(t / "x", "X")).rc("write y", write_file(t / "y", "Y"));
    o.rc("files", ren(t, "x", "y", RENAME_EXCHANGE)).content("x", t / "x").content("y", t / "y");
    o.rc("file and dir", ren(t, "x", "d", RENAME_EXCHANGE)).stat("x", t / "x").stat("d", t / "d");
    o.rc("back", ren(t, "x", "d", RENAME_EXCHANGE));
    o.rc("with missing", ren(t, "x", "missing", RENAME_EXCHANGE));
    o.rc("both flags", ren(t, "x", "y", RENAME_EXCHANGE | RENAME_NOREPLACE));
  }, {.bindfs = "bindfs refuses every rename flag with EINVAL"});
  p.check("dirs and non-dirs", [&](const Tree& t, Trace& o) {
    o.rc("mkdir e", ::mkdir((t / "e").c_str(), 0755)).rc("mkdir full", ::mkdir((t / "full").c_str(), 0755));
    o.rc("write full/x", write_file(t / "full/x", "x"));
    o.rc("file over dir", ren(t, "f", "e"));
    o.rc("dir over file", ren(t, "e", "f"));
    o.rc("dir over non-empty dir", ren(t, "e", "full"));
    o.rc("dir into itself", ren(t, "full", "full/sub"));
    o.rc("dir over empty dir", ren(t, "full", "e")).stat("e", t / "e").content("e/x", t / "e/x").stat("full", t / "full");
    o.rc("dir with trailing slash to file name", ren(t, "e/", "g/")).stat("g", t / "g");
    o.rc("file with trailing slash", ren(t, "f/", "h"));
    o.rc("symlink", ren(t, "l", "l2")).stat("l2", t / "l2").stat("l2 lstat", t / "l2", false);
  });
}

TEST_CASE("open flags") {
  Parity p;
  make_basic(p);
  auto open_rc = [](Trace& o, const char* label, const std::string& path, int flags, mode_t mode = 0644) {
    UniqueFd fd = open_fd(path, flags, mode);
    o.rc(label, fd.get() >= 0 ? 0 : -1);
    if (fd) o.fstat(std::string(label) + " fstat", fd.get());
  };
  p.check("O_CREAT, O_EXCL", [&](const Tree& t, Trace& o) {
    open_rc(o, "creat excl new", t / "n", O_WRONLY | O_CREAT | O_EXCL, 0640);
    open_rc(o, "creat excl existing", t / "n", O_WRONLY | O_CREAT | O_EXCL);
    open_rc(o, "creat existing", t / "n", O_WRONLY | O_CREAT, 0600);
    open_rc(o, "creat excl dangling symlink", t / "dangling", O_WRONLY | O_CREAT | O_EXCL);
    open_rc(o, "creat via dangling symlink", t / "dangling", O_WRONLY | O_CREAT, 0600);
    o.stat("target", t / "nowhere");
    open_rc(o, "creat in missing dir", t / "missing/n", O_WRONLY | O_CREAT);
    open_rc(o, "creat dir name", t / "d", O_WRONLY | O_CREAT);
    open_rc(o, "creat trailing slash", t / "n2/", O_WRONLY | O_CREAT);
    open_rc(o, "creat|directory", t / "n3", O_RDONLY | O_CREAT | O_DIRECTORY);
    open_rc(o, "creat 0 mode, rdwr", t / "n4", O_RDWR | O_CREAT, 0);
  });
  p.check("O_TRUNC, O_APPEND", [&](const Tree& t, Trace& o) {
    o.rc("write", write_file(t / "a", "0123456789"));
    { UniqueFd fd = open_fd(t / "a", O_WRONLY | O_TRUNC); o.fstat("trunc", fd.get()); }
    { UniqueFd fd = open_fd(t / "a", O_RDONLY | O_TRUNC); o.fstat("rdonly|trunc", fd.get()); }
    o.rc("write", write_file(t / "a", "abc"));
    UniqueFd fd = open_fd(t / "a", O_WRONLY | O_APPEND);
    o.rc("lseek 0", ::lseek(fd.get(), 0, SEEK_SET)).rc("append", ::write(fd.get(), "def", 3));
    o.rc("pwrite at 0 appends", ::pwrite(fd.get(), "ghi", 3, 0));
    o.rc("offset", ::lseek(fd.get(), 0, SEEK_CUR)).content("content", t / "a");
  });
  p.check("O_APPEND cleared with F_SETFL", [&](const Tree& t, Trace& o) {
    o.rc("write", write_file(t / "a", "abc"));
    UniqueFd fd = open_fd(t / "a", O_WRONLY | O_APPEND);
    o.rc("clear O_APPEND", ::fcntl(fd.get(), F_SETFL, 0)).rc("pwrite", ::pwrite(fd.get(), "X", 1, 0));
    o.content("content", t / "a");
  }, {.fuse = "F_SETFL is not sent to a FUSE daemon: without writeback cache its backing fd keeps O_APPEND"});
  p.check("O_DIRECTORY, O_NOFOLLOW, dirs", [&](const Tree& t, Trace& o) {
    open_rc(o, "directory on file", t / "f", O_RDONLY | O_DIRECTORY);
    open_rc(o, "directory on dir", t / "d", O_RDONLY | O_DIRECTORY);
    open_rc(o, "directory on symlink to file", t / "l", O_RDONLY | O_DIRECTORY);
    open_rc(o, "nofollow on symlink", t / "l", O_RDONLY | O_NOFOLLOW);
    open_rc(o, "nofollow|path on symlink", t / "l", O_PATH | O_NOFOLLOW);
    open_rc(o, "nofollow on file", t / "f", O_RDONLY | O_NOFOLLOW);
    open_rc(o, "wronly dir", t / "d", O_WRONLY);
    open_rc(o, "rdwr dir", t / "d", O_RDWR);
    open_rc(o, "rdonly dir", t / "d", O_RDONLY);
    open_rc(o, "missing", t / "missing", O_RDONLY);
    open_rc(o, "loop", t / "d/../l", O_RDONLY);
    o.rc("symlink loop", ::symlink("loop", (t / "loop").c_str()));
    open_rc(o, "symlink loop", t / "loop", O_RDONLY);
    open_rc(o, "0000 file as root", t / "f", O_RDWR);
  });
  p.check("O_TMPFILE", [&](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "d", O_RDWR | O_TMPFILE, 0600);
    o.rc("open", fd.get() >= 0 ? 0 : -1);
    if (fd) {
      o.rc("write", ::write(fd.get(), "tmp", 3)).fstat("fstat", fd.get());
      std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
      o.rc("linkat", ::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, (t / "d/linked").c_str(), AT_SYMLINK_FOLLOW));
      o.content("linked", t / "d/linked");
    }
  }, {.fuse = "libfuse 3.14 has no tmpfile op (FUSE_TMPFILE arrived in libfuse 3.15): open(O_TMPFILE) gives EOPNOTSUPP on every libfuse 3.14 mount"});
}

TEST_CASE("read and write at offsets") {
  Parity p;
  make_basic(p);
  p.check("pwrite, pread, holes, EOF", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "w", O_RDWR | O_CREAT, 0644);
    o.rc("pwrite 0", ::pwrite(fd.get(), "abc", 3, 0));
    o.rc("pwrite 10000", ::pwrite(fd.get(), "xyz", 3, 10000)).fstat("fstat", fd.get());
    o.val("hole", summarize(read_fd(fd.get(), 0, 10003)));
    o.val("at 9998", summarize(read_fd(fd.get(), 9998, 100)));
    o.val("at EOF", summarize(read_fd(fd.get(), 10003, 100)));
    o.val("beyond EOF", summarize(read_fd(fd.get(), 1 << 20, 100)));
    o.rc("pwrite at 3 GiB", ::pwrite(fd.get(), "far", 3, 3ll << 30)).fstat("fstat", fd.get());
    o.val("far", read_fd(fd.get(), (3ll << 30) - 2, 10));
    o.rc("negative offset", ::pread(fd.get(), nullptr, 0, -1));
  });
  p.check("sequential read/write, lseek", [](const Tree& t, Trace& o) {
    std::string big = pattern(1 << 20);
    o.rc("write 1 MiB", write_file(t / "big", big)).content("content", t / "big");
    UniqueFd fd = open_fd(t / "big", O_RDWR);
    char buf[4096];
    o.rc("read", ::read(fd.get(), buf, sizeof buf)).rc("pos", ::lseek(fd.get(), 0, SEEK_CUR));
    o.rc("seek end", ::lseek(fd.get(), -10, SEEK_END)).rc("read tail", ::read(fd.get(), buf, sizeof buf));
    o.rc("read at EOF", ::read(fd.get(), buf, sizeof buf));
    o.rc("seek negative", ::lseek(fd.get(), -1, SEEK_SET));
    o.rc("overwrite middle", ::pwrite(fd.get(), "MIDDLE", 6, 500000)).content("content", t / "big");
  });
  p.check("EBADF and EISDIR", [](const Tree& t, Trace& o) {
    char buf[16];
    UniqueFd w = open_fd(t / "f", O_WRONLY);
    o.rc("read on O_WRONLY", ::read(w.get(), buf, sizeof buf));
    UniqueFd r = open_fd(t / "f", O_RDONLY);
    o.rc("write on O_RDONLY", ::write(r.get(), "x", 1));
    UniqueFd d = open_fd(t / "d", O_RDONLY | O_DIRECTORY);
    o.rc("read on dir", ::read(d.get(), buf, sizeof buf));
  });
  p.check("writes from two fds see each other", [](const Tree& t, Trace& o) {
    UniqueFd a = open_fd(t / "f", O_RDWR);
    UniqueFd b = open_fd(t / "f", O_RDWR);
    o.rc("write a", ::pwrite(a.get(), "AAAA", 4, 2)).val("read b", read_fd(b.get(), 0, 100));
    o.rc("truncate b", ::ftruncate(b.get(), 3)).val("read a", read_fd(a.get(), 0, 100));
  });
}

TEST_CASE("fsync, O_SYNC, O_DIRECT") {
  Parity p;
  make_basic(p);
  p.check("fsync and fdatasync", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "f", O_RDWR);
    o.rc("write", ::pwrite(fd.get(), "sync", 4, 0));
    o.rc("fsync", ::fsync(fd.get())).rc("fdatasync", ::fdatasync(fd.get()));
    UniqueFd ro = open_fd(t / "f", O_RDONLY);
    o.rc("fsync read-only fd", ::fsync(ro.get()));
    UniqueFd d = open_fd(t / "d", O_RDONLY | O_DIRECTORY);
    o.rc("fsync dir", ::fsync(d.get()));
    o.rc("syncfs", ::syncfs(fd.get()));
    o.rc("sync_file_range", ::sync_file_range(fd.get(), 0, 4, SYNC_FILE_RANGE_WRITE));
  });
  p.check("O_SYNC and O_DSYNC", [](const Tree& t, Trace& o) {
    UniqueFd s = open_fd(t / "s", O_WRONLY | O_CREAT | O_SYNC, 0644);
    o.rc("open O_SYNC", s.get() >= 0 ? 0 : -1).rc("write", ::write(s.get(), "synced", 6));
    UniqueFd ds = open_fd(t / "s", O_WRONLY | O_APPEND | O_DSYNC);
    o.rc("open O_DSYNC", ds.get() >= 0 ? 0 : -1).rc("write", ::write(ds.get(), "!", 1));
    o.rc("getfl has O_SYNC", (::fcntl(s.get(), F_GETFL) & O_SYNC) == O_SYNC);
    o.content("content", t / "s");
  });
  p.check("O_DIRECT aligned", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "direct", O_RDWR | O_CREAT | O_DIRECT, 0644);
    o.rc("open", fd.get() >= 0 ? 0 : -1);
    void* mem = nullptr;
    if (::posix_memalign(&mem, 4096, 3 * 4096) != 0) return;
    auto* buf = static_cast<char*>(mem);
    std::string data = pattern(8192, 7);
    std::memcpy(buf, data.data(), data.size());
    o.rc("write 8 KiB", ::pwrite(fd.get(), buf, 8192, 0));
    o.rc("write at 4096", ::pwrite(fd.get(), buf, 4096, 4096));
    std::memset(buf, 0, 3 * 4096);
    o.rc("read 8 KiB", ::pread(fd.get(), buf, 8192, 0)).val("data", summarize(std::string(buf, 8192)));
    o.rc("read at EOF", ::pread(fd.get(), buf, 4096, 8192));
    o.rc("getfl has O_DIRECT", (::fcntl(fd.get(), F_GETFL) & O_DIRECT) == O_DIRECT);
    o.content("via buffered read", t / "direct");
    std::free(mem);
  });
  p.check("O_DIRECT misaligned offset and length", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "direct2", O_RDWR | O_CREAT | O_DIRECT, 0644);
    void* mem = nullptr;
    if (::posix_memalign(&mem, 4096, 2 * 4096) != 0) return;
    auto* buf = static_cast<char*>(mem);
    std::memset(buf, 'd', 2 * 4096);
    o.rc("write 4096 at 100", ::pwrite(fd.get(), buf, 4096, 100));
    o.rc("write 100 at 0", ::pwrite(fd.get(), buf, 100, 0));
    o.rc("read 100 at 0", ::pread(fd.get(), buf, 100, 0));
    o.content("content", t / "direct2");
    std::free(mem);
  });  // btrfs falls back to buffered I/O here (no EINVAL): so must the mount
  p.check("O_DIRECT misaligned buffer", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "direct3", O_RDWR | O_CREAT | O_DIRECT, 0644);
    void* mem = nullptr;
    if (::posix_memalign(&mem, 4096, 3 * 4096) != 0) return;
    auto* buf = static_cast<char*>(mem);
    std::memset(buf, 'm', 3 * 4096);
    o.rc("write from buf+1", ::pwrite(fd.get(), buf + 1, 4096, 0));
    o.rc("read into buf+1", ::pread(fd.get(), buf + 1, 4096, 0));
    std::free(mem);
  });  // btrfs: buffered fallback, success; a FUSE daemon never sees the address anyway
}

TEST_CASE("readdir with many entries") {
  Parity p;
  constexpr int kEntries = 1500;
  p.check("create entries", [](const Tree& t, Trace& o) {
    o.rc("mkdir", ::mkdir((t / "many").c_str(), 0755));
    long failures = 0;
    for (int i = 0; i < kEntries; ++i) {
      std::string name = "entry-" + std::to_string(i) + "-" + std::string(static_cast<size_t>(i % 60), 'x');
      if (write_file(t / ("many/" + name), "") < 0) ++failures;
    }
    o.val("create failures", std::to_string(failures));
    o.rc("subdir", ::mkdir((t / "many/sub").c_str(), 0755));
    o.rc("symlink", ::symlink("x", (t / "many/link").c_str()));
    o.rc("fifo", ::mkfifo((t / "many/fifo").c_str(), 0644));
    drop_specials_for_sharefs(t, {"many/fifo"});
  }, Known{.sharefs = "no FIFO is made in a share (mkfifo: EPERM); the native one is removed"});
  p.check("getdents64 in 4 KiB buffers", [](const Tree& t, Trace& o) {
    int calls = 0;
    auto entries = list_dir(t / "many", &calls);
    o.val("entries", std::to_string(entries.size())).val("names+types", join(entries));
    o.val("several calls", calls > 5 ? "yes" : "no (" + std::to_string(calls) + ")");
  });
  p.check("readdir(3) after unlinking a third", [](const Tree& t, Trace& o) {
    for (int i = 0; i < kEntries; i += 3) {
      std::string name = "entry-" + std::to_string(i) + "-" + std::string(static_cast<size_t>(i % 60), 'x');
      ::unlink((t / ("many/" + name)).c_str());
    }
    std::vector<Dirent> entries;
    DIR* d = ::opendir((t / "many").c_str());
    if (!d) return void(o.rc("opendir", -1));
    while (auto* e = ::readdir(d)) entries.push_back({e->d_name, e->d_type});
    ::rewinddir(d);
    size_t again = 0;
    while (::readdir(d)) ++again;
    ::closedir(d);
    std::sort(entries.begin(), entries.end());
    o.val("entries", std::to_string(entries.size())).val("names", join(entries));
    o.val("after rewinddir", std::to_string(again));
  });
  p.check("telldir/seekdir", [](const Tree& t, Trace& o) {
    DIR* d = ::opendir((t / "many").c_str());
    if (!d) return void(o.rc("opendir", -1));
    for (int i = 0; i < 100; ++i) ::readdir(d);
    long pos = ::telldir(d);
    std::string next = ::readdir(d)->d_name;
    for (int i = 0; i < 300; ++i) ::readdir(d);
    ::seekdir(d, pos);
    auto* e = ::readdir(d);
    o.val("same entry after seekdir", e && next == e->d_name ? "yes" : "no");
    ::closedir(d);
  });
  p.check("opendir on a file / missing", [](const Tree& t, Trace& o) {
    o.rc("mkdir", ::mkdir((t / "e").c_str(), 0755)).rc("write", write_file(t / "e/file", ""));
    o.rc("file", ::opendir((t / "e/file").c_str()) ? 0 : -1);
    o.rc("missing", ::opendir((t / "missing").c_str()) ? 0 : -1);
    int calls = 0;
    auto entries = list_dir(t / "e", &calls);
    o.val("small dir", join(entries));
  });
}

TEST_CASE("statfs") {
  Parity p;
  p.check("statvfs fields", [](const Tree& t, Trace& o) {
    struct statvfs sv;
    o.rc("statvfs", ::statvfs(t.root.c_str(), &sv));
    o.val("bsize", std::to_string(sv.f_bsize)).val("frsize", std::to_string(sv.f_frsize));
    o.val("blocks", std::to_string(sv.f_blocks)).val("namemax", std::to_string(sv.f_namemax));
    o.val("files", std::to_string(sv.f_files));
    // Free space moves as the pool works; it must agree within 1%.
    o.val("bfree/blocks %", std::to_string(sv.f_bfree * 100 / std::max<unsigned long>(sv.f_blocks, 1)));
  });
  p.check("statfs on a missing path", [](const Tree& t, Trace& o) {
    struct statfs sf;
    o.rc("statfs", ::statfs((t / "missing").c_str(), &sf));
  });
}

TEST_CASE("extended attributes") {
  Parity p;
  make_basic(p);
  auto names = [](const std::string& path, bool follow = true) {
    char buf[4096];
    ssize_t n = follow ? ::listxattr(path.c_str(), buf, sizeof buf) : ::llistxattr(path.c_str(), buf, sizeof buf);
    if (n < 0) return "<" + errno_name(errno) + ">";
    std::set<std::string> set;
    for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(buf + i)) + 1) set.insert(buf + i);
    std::string s;
    for (auto& x : set) s += x + ",";
    return s;
  };
  auto value = [](const std::string& path, const char* name) {
    char buf[70000];
    ssize_t n = ::getxattr(path.c_str(), name, buf, sizeof buf);
    if (n < 0) return "<" + errno_name(errno) + ">";
    return summarize(std::string_view(buf, static_cast<size_t>(n)));
  };
  p.check("set, get, list, remove", [&](const Tree& t, Trace& o) {
    std::string f = t / "f";
    o.val("initial list", names(f));
    o.rc("set user.a", ::setxattr(f.c_str(), "user.a", "alpha", 5, 0)).val("get", value(f, "user.a"));
    o.rc("set user.empty", ::setxattr(f.c_str(), "user.empty", "", 0, 0)).val("get", value(f, "user.empty"));
    std::string big = pattern(16000, 3);
    o.rc("set 16000 bytes", ::setxattr(f.c_str(), "user.big", big.data(), big.size(), 0)).val("get", value(f, "user.big"));
    o.val("list", names(f));
    o.rc("size query", ::getxattr(f.c_str(), "user.a", nullptr, 0));
    o.rc("list size query", ::listxattr(f.c_str(), nullptr, 0));
    char small[2];
    o.rc("ERANGE get", ::getxattr(f.c_str(), "user.a", small, sizeof small));
    o.rc("ERANGE list", ::listxattr(f.c_str(), small, sizeof small));
    o.val("missing", value(f, "user.missing"));
    o.rc("CREATE existing", ::setxattr(f.c_str(), "user.a", "x", 1, XATTR_CREATE));
    o.rc("CREATE new", ::setxattr(f.c_str(), "user.c", "c", 1, XATTR_CREATE));
    o.rc("REPLACE missing", ::setxattr(f.c_str(), "user.r", "r", 1, XATTR_REPLACE));
    o.rc("REPLACE existing", ::setxattr(f.c_str(), "user.a", "beta", 4, XATTR_REPLACE)).val("get", value(f, "user.a"));
    o.rc("remove", ::removexattr(f.c_str(), "user.a")).val("get", value(f, "user.a"));
    o.rc("remove missing", ::removexattr(f.c_str(), "user.a"));
    o.val("list", names(f));
    o.rc("bad namespace", ::setxattr(f.c_str(), "bogus.a", "x", 1, 0));
    o.rc("too big", ::setxattr(f.c_str(), "user.huge", big.data(), 70000, 0));
    o.rc("missing file", ::setxattr((t / "missing").c_str(), "user.a", "x", 1, 0));
  });
  p.check("xattrs on dirs and symlinks", [&](const Tree& t, Trace& o) {
    o.rc("dir", ::setxattr((t / "d").c_str(), "user.d", "dir", 3, 0)).val("get", value(t / "d", "user.d"));
    o.rc("user.* on symlink (l*)", ::lsetxattr((t / "l").c_str(), "user.x", "x", 1, 0));
    o.rc("via symlink to file", ::setxattr((t / "l").c_str(), "user.via", "v", 1, 0)).val("f", value(t / "f", "user.via"));
    o.val("llist symlink", names(t / "l", false));
  });
  p.check("fd xattr calls", [&](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "f", O_RDONLY);
    o.rc("fsetxattr", ::fsetxattr(fd.get(), "user.fd", "fd", 2, 0));
    char buf[16];
    o.rc("fgetxattr", ::fgetxattr(fd.get(), "user.fd", buf, sizeof buf));
    o.rc("fremovexattr", ::fremovexattr(fd.get(), "user.fd"));
    o.rc("flistxattr", ::flistxattr(fd.get(), nullptr, 0));
  });
}

TEST_CASE("fallocate") {
  Parity p;
  make_basic(p);
  p.check("modes", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "fa", O_RDWR | O_CREAT, 0644);
    o.rc("allocate 8192", ::fallocate(fd.get(), 0, 0, 8192)).fstat("fstat", fd.get());
    o.rc("keep size beyond EOF", ::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, 8192, 65536)).fstat("fstat", fd.get());
    std::string data(16384, 'a');
    o.rc("write 16 KiB", ::pwrite(fd.get(), data.data(), data.size(), 0));
    o.rc("punch hole", ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096, 4096));
    o.fstat("fstat", fd.get()).val("content", summarize(read_fd(fd.get(), 0, 20000)));
    o.val("hole reads zeros", read_fd(fd.get(), 4096, 4096) == std::string(4096, '\0') ? "yes" : "no");
    o.rc("punch without keep size", ::fallocate(fd.get(), FALLOC_FL_PUNCH_HOLE, 0, 4096));
    o.rc("zero range", ::fallocate(fd.get(), FALLOC_FL_ZERO_RANGE, 0, 100)).val("content", summarize(read_fd(fd.get(), 0, 20000)));
    o.rc("collapse range", ::fallocate(fd.get(), FALLOC_FL_COLLAPSE_RANGE, 0, 4096));
    o.rc("zero length", ::fallocate(fd.get(), 0, 0, 0));
    o.rc("negative offset", ::fallocate(fd.get(), 0, -1, 10));
    UniqueFd ro = open_fd(t / "fa", O_RDONLY);
    o.rc("read-only fd", ::fallocate(ro.get(), 0, 0, 100));
    o.rc("posix_fallocate grows", -::posix_fallocate(fd.get(), 0, 40000)).fstat("fstat", fd.get());
  }, {.bindfs = "bindfs answers fallocate with EOPNOTSUPP"});
}

TEST_CASE("copy_file_range") {
  Parity p;
  make_basic(p);
  p.check("copy a range", [](const Tree& t, Trace& o) {
    o.rc("write src", write_file(t / "src", pattern(100000, 5)));
    UniqueFd src = open_fd(t / "src", O_RDONLY);
    UniqueFd dst = open_fd(t / "dst", O_RDWR | O_CREAT, 0644);
    loff_t in = 1000, out = 0;
    o.rc("copy", ::copy_file_range(src.get(), &in, dst.get(), &out, 50000, 0));
    o.val("offsets", std::to_string(in) + "," + std::to_string(out));
    o.content("dst", t / "dst");
    in = 200000;
    o.rc("beyond EOF", ::copy_file_range(src.get(), &in, dst.get(), &out, 100, 0));
    loff_t a = 0, b = 10;
    o.rc("overlap same file", ::copy_file_range(dst.get(), &a, dst.get(), &b, 100, 0));
    UniqueFd ro = open_fd(t / "f", O_RDONLY);
    in = 0;
    o.rc("to read-only fd", ::copy_file_range(src.get(), &in, ro.get(), nullptr, 10, 0));
    UniqueFd d = open_fd(t / "d", O_RDONLY | O_DIRECTORY);
    o.rc("from dir", ::copy_file_range(d.get(), nullptr, dst.get(), nullptr, 10, 0));
    o.rc("bad flags", ::copy_file_range(src.get(), nullptr, dst.get(), nullptr, 10, 1));
  });
}

TEST_CASE("lseek SEEK_DATA and SEEK_HOLE") {
  Parity p;
  p.check("sparse file", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "sparse", O_RDWR | O_CREAT, 0644);
    std::string block(4096, 'b');
    o.rc("write 0", ::pwrite(fd.get(), block.data(), block.size(), 0));
    o.rc("write 1 MiB", ::pwrite(fd.get(), block.data(), block.size(), 1 << 20));
    o.rc("fsync", ::fsync(fd.get()));
    o.rc("data 0", ::lseek(fd.get(), 0, SEEK_DATA)).rc("hole 0", ::lseek(fd.get(), 0, SEEK_HOLE));
    o.rc("data 4096", ::lseek(fd.get(), 4096, SEEK_DATA)).rc("hole 1 MiB", ::lseek(fd.get(), 1 << 20, SEEK_HOLE));
    o.rc("data at EOF", ::lseek(fd.get(), (1 << 20) + 4096, SEEK_DATA));
    o.rc("hole beyond EOF", ::lseek(fd.get(), 2 << 20, SEEK_HOLE));
    o.rc("bad whence", ::lseek(fd.get(), 0, 42));
  }, {.bindfs = "bindfs has no lseek op: the kernel answers SEEK_DATA/SEEK_HOLE as if there were no holes"});
}

TEST_CASE("shared writable mmap") {
  Parity p;
  p.check("map, write, msync, read via read() and another process's map", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "m", O_RDWR | O_CREAT, 0644);
    o.rc("ftruncate", ::ftruncate(fd.get(), 8192));
    void* map = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
    o.rc("mmap", map == MAP_FAILED ? -1 : 0);
    if (map == MAP_FAILED) return;
    auto* mem = static_cast<char*>(map);
    std::memcpy(mem + 100, "hello mmap", 10);
    o.rc("msync", ::msync(map, 8192, MS_SYNC));
    o.val("read()", read_fd(fd.get(), 100, 10));
    std::string path = t / "m";
    ExitInfo child = run_child([&] {
      int cfd = ::open(path.c_str(), O_RDWR);
      void* cmap = ::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 0);
      if (cmap == MAP_FAILED) return 2;
      auto* c = static_cast<char*>(cmap);
      std::fwrite(c + 100, 1, 10, stdout);
      std::memcpy(c + 5000, "from child", 10);  // second page
      ::msync(cmap, 8192, MS_SYNC);
      return 0;
    });
    o.val("child saw", child.describe());
    o.val("parent map sees child", std::string(mem + 5000, 10));
    o.rc("pwrite", ::pwrite(fd.get(), "via write", 9, 200)).val("map sees write()", std::string(mem + 200, 9));
    ::munmap(map, 8192);
    o.content("file", t / "m");
  });
}

TEST_CASE("POSIX fcntl locks and flock from several processes") {
  Parity p;
  make_basic(p);
  auto lock = [](int fd, short type, off_t start, off_t len, int cmd = F_SETLK) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    return ::fcntl(fd, cmd, &fl);
  };
  // F_GETLK from a child: "type start len holder" with holder "parent"/"other"/pid.
  auto getlk = [](int fd, short type, off_t start, off_t len, pid_t holder) {
    struct flock fl {};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = start;
    fl.l_len = len;
    if (::fcntl(fd, F_GETLK, &fl) < 0) return errno_name(errno);
    std::string type_s = fl.l_type == F_UNLCK ? "unlck" : fl.l_type == F_WRLCK ? "wr" : "rd";
    if (fl.l_type == F_UNLCK) return type_s;
    return type_s + " " + std::to_string(fl.l_start) + "+" + std::to_string(fl.l_len) +
           (fl.l_pid == holder ? " holder" : " pid " + std::to_string(fl.l_pid));
  };
  // The probe: a child opens the file and prints what it gets.
  auto probe = [&](const std::string& path, pid_t holder) {
    ExitInfo e = run_child([&] {
      int fd = ::open(path.c_str(), O_RDWR);
      Trace c;
      c.rc("setlk wr 0+100", lock(fd, F_WRLCK, 0, 100));
      c.rc("setlk rd 50+10", lock(fd, F_RDLCK, 50, 10));
      c.val("getlk wr 0+100", getlk(fd, F_WRLCK, 0, 100, holder));
      c.val("getlk rd 0+100", getlk(fd, F_RDLCK, 0, 100, holder));
      c.rc("setlk wr 100+100", lock(fd, F_WRLCK, 100, 100));
      std::fputs(c.text().c_str(), stdout);
      return 0;
    });
    return e.ok() ? e.output : e.describe();
  };
  p.check("F_SETLK conflicts, F_GETLK holder, release on close", [&](const Tree& t, Trace& o) {
    std::string path = t / "f";
    UniqueFd fd = open_fd(path, O_RDWR);
    pid_t me = ::getpid();
    o.val("free", probe(path, me));
    o.rc("parent wr 0+100", lock(fd.get(), F_WRLCK, 0, 100));
    o.val("held wr", probe(path, me));
    o.rc("downgrade to rd", lock(fd.get(), F_RDLCK, 0, 100));
    o.val("held rd", probe(path, me));
    {
      UniqueFd other = open_fd(path, O_RDONLY);  // closing ANY fd of the file drops the locks
    }
    o.val("after closing another fd", probe(path, me));
    o.rc("parent wr whole file", lock(fd.get(), F_WRLCK, 0, 0));
    o.val("whole file", probe(path, me));
    o.rc("unlock middle", lock(fd.get(), F_UNLCK, 40, 20));
    o.val("split", probe(path, me));
    fd.reset();
    o.val("after close", probe(path, me));
  });
  p.check("a child holds the lock; F_SETLKW waits for its exit", [&](const Tree& t, Trace& o) {
    std::string path = t / "f";
    Pipe locked, go;
    Child holder([&] {
      int fd = ::open(path.c_str(), O_RDWR);
      if (lock(fd, F_WRLCK, 0, 10) < 0) return 1;
      locked.signal();
      go.wait_signal();
      std::this_thread::sleep_for(150ms);
      return 0;  // exit releases the lock
    });
    o.val("child locked", locked.wait_signal() ? "yes" : "no");
    UniqueFd fd = open_fd(path, O_RDWR);
    o.rc("setlk", lock(fd.get(), F_WRLCK, 5, 10));
    o.val("getlk", getlk(fd.get(), F_WRLCK, 0, 100, holder.pid()));
    go.signal();
    auto start = std::chrono::steady_clock::now();
    o.rc("setlkw", lock(fd.get(), F_WRLCK, 5, 10, F_SETLKW));
    auto waited = std::chrono::steady_clock::now() - start;
    o.val("waited", waited > 100ms ? "yes" : "no");
    o.val("holder", holder.wait().describe());
  });
  p.check("flock", [&](const Tree& t, Trace& o) {
    std::string path = t / "f";
    auto child_flock = [&](int op) {
      ExitInfo e = run_child([&] {
        int fd = ::open(path.c_str(), O_RDONLY);
        return ::flock(fd, op) == 0 ? 0 : 100 + errno % 100;
      });
      return e.describe();
    };
    UniqueFd fd = open_fd(path, O_RDONLY);
    o.val("free: ex", child_flock(LOCK_EX | LOCK_NB));
    o.rc("parent ex", ::flock(fd.get(), LOCK_EX));
    o.val("held: ex", child_flock(LOCK_EX | LOCK_NB)).val("held: sh", child_flock(LOCK_SH | LOCK_NB));
    o.rc("parent sh", ::flock(fd.get(), LOCK_SH));
    o.val("shared: sh", child_flock(LOCK_SH | LOCK_NB)).val("shared: ex", child_flock(LOCK_EX | LOCK_NB));
    o.rc("parent ex again", ::flock(fd.get(), LOCK_EX));
    ExitInfo posix = run_child([&] {
      int cfd = ::open(path.c_str(), O_RDWR);
      return lock(cfd, F_WRLCK, 0, 0) == 0 ? 0 : 1;
    });
    o.val("fcntl lock independent of flock", posix.describe());
    o.rc("parent un", ::flock(fd.get(), LOCK_UN));
    o.val("released: ex", child_flock(LOCK_EX | LOCK_NB));
    o.rc("bad op", ::flock(fd.get(), 0));
  });
}

TEST_CASE("concurrent creates and appends") {
  Parity p;
  constexpr int kProcs = 6, kFiles = 60, kLines = 150, kLineSize = 64;
  p.check("processes creating files and appending to one log", [&](const Tree& t, Trace& o) {
    o.rc("mkdir", ::mkdir((t / "c").c_str(), 0755));
    std::vector<Child> kids;
    for (int i = 0; i < kProcs; ++i) {
      kids.emplace_back([&, i] {
        int log = ::open((t / "c/log").c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        for (int j = 0; j < std::max(kFiles, kLines); ++j) {
          if (j < kFiles && write_file(t / ("c/f-" + std::to_string(i) + "-" + std::to_string(j)), "x") != 1) return 1;
          if (j < kLines) {
            char line[128];
            std::snprintf(line, sizeof line, "%02d %04d %-55s\n", i, j, "line");
            if (::write(log, line, kLineSize) != kLineSize) return 2;
          }
        }
        return 0;
      });
    }
    int failed = 0;
    for (auto& k : kids) failed += !k.wait().ok();
    o.val("children failed", std::to_string(failed));
    int calls;
    o.val("files", std::to_string(list_dir(t / "c", &calls).size()));
    std::string log = slurp(t / "c/log");
    o.val("log size", std::to_string(log.size()));
    std::set<std::string> lines;
    bool intact = log.size() % kLineSize == 0;
    for (size_t off = 0; intact && off < log.size(); off += kLineSize) {
      std::string line = log.substr(off, kLineSize);
      intact = line.back() == '\n' && line.find('\n') == kLineSize - 1;
      lines.insert(line);
    }
    o.val("lines intact and distinct", intact ? std::to_string(lines.size()) : "no");
  });
  p.check("racing O_CREAT|O_EXCL on one name", [&](const Tree& t, Trace& o) {
    std::vector<Child> kids;
    Pipe start;
    for (int i = 0; i < kProcs; ++i)
      kids.emplace_back([&] {
        start.wait_signal();
        int fd = ::open((t / "one").c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
        return fd >= 0 ? 0 : (errno == EEXIST ? 1 : 2);
      });
    for (int i = 0; i < kProcs; ++i) start.signal();
    int won = 0, eexist = 0;
    for (auto& k : kids) {
      auto e = k.wait();
      won += e.exit_code == 0;
      eexist += e.exit_code == 1;
    }
    o.val("won", std::to_string(won)).val("EEXIST", std::to_string(eexist));
  });
}

TEST_CASE("as a non-root user (allow_other, default_permissions)") {
  Parity p;
  p.check("setup as root", [](const Tree& t, Trace& o) {
    o.rc("mkdir open 0777", ::mkdir((t / "open").c_str(), 0777)).rc("chmod", ::chmod((t / "open").c_str(), 0777));
    o.rc("mkdir closed 0755", ::mkdir((t / "closed").c_str(), 0755));
    o.rc("secret 0600", write_file(t / "secret", "s", O_TRUNC, 0600));
    o.rc("public 0644", write_file(t / "public", "p", O_TRUNC, 0644));
    o.rc("root file in open", write_file(t / "open/rootfile", "r", O_TRUNC, 0644));
    o.rc("sticky 1777", ::mkdir((t / "sticky").c_str(), 0777)).rc("chmod", ::chmod((t / "sticky").c_str(), 01777));
    o.rc("root file in sticky", write_file(t / "sticky/rootfile", "r", O_TRUNC, 0666));
    o.rc("chmod 0666", ::chmod((t / "sticky/rootfile").c_str(), 0666));
  });
  p.check_as_nobody("reads and writes of root's files", [](const Tree& t, Trace& o) {
    o.rc("read secret", open_fd(t / "secret", O_RDONLY).get() >= 0 ? 0 : -1);
    o.rc("read public", open_fd(t / "public", O_RDONLY).get() >= 0 ? 0 : -1);
    o.rc("write public", open_fd(t / "public", O_WRONLY).get() >= 0 ? 0 : -1);
    o.rc("truncate public", ::truncate((t / "public").c_str(), 0));
    o.rc("stat secret", ::access((t / "secret").c_str(), F_OK));
    o.rc("access secret R", ::access((t / "secret").c_str(), R_OK));
  });
  p.check_as_nobody("metadata of root's files", [](const Tree& t, Trace& o) {
    o.rc("chown public", ::chown((t / "public").c_str(), kNobodyUid, kNobodyGid));
    o.rc("chmod secret", ::chmod((t / "secret").c_str(), 0644));
    o.rc("utimens now", ::utimensat(AT_FDCWD, (t / "public").c_str(), nullptr, 0));
    struct timespec ts[2] = {{1, 0}, {1, 0}};
    o.rc("utimens explicit", ::utimensat(AT_FDCWD, (t / "public").c_str(), ts, 0));
    o.rc("setxattr", ::setxattr((t / "public").c_str(), "user.x", "x", 1, 0));
    o.rc("unlink public", ::unlink((t / "public").c_str()));
    o.rc("mkdir in closed", ::mkdir((t / "closed/x").c_str(), 0755));
    o.rc("create in closed", open_fd(t / "closed/x", O_WRONLY | O_CREAT).get() >= 0 ? 0 : -1);
  });
  p.check_as_nobody("own files in a 0777 dir", [](const Tree& t, Trace& o) {
    o.rc("create", write_file(t / "open/mine", "mine")).stat("stat", t / "open/mine");
    o.rc("mkdir", ::mkdir((t / "open/mydir").c_str(), 0700)).stat("stat", t / "open/mydir");
    o.rc("chmod", ::chmod((t / "open/mine").c_str(), 0600)).stat("stat", t / "open/mine");
    o.rc("chown to root", ::chown((t / "open/mine").c_str(), 0, 0));
    o.rc("chgrp to root", ::chown((t / "open/mine").c_str(), static_cast<uid_t>(-1), 0));
    o.rc("setxattr", ::setxattr((t / "open/mine").c_str(), "user.x", "x", 1, 0));
    struct timespec ts[2] = {{1, 0}, {1, 0}};
    o.rc("utimens", ::utimensat(AT_FDCWD, (t / "open/mine").c_str(), ts, 0));
    o.rc("rename into closed", ::rename((t / "open/mine").c_str(), (t / "closed/mine").c_str()));
    o.rc("rename", ::rename((t / "open/mine").c_str(), (t / "open/mine2").c_str()));
    o.rc("unlink root's file (no sticky)", ::unlink((t / "open/rootfile").c_str()));
    o.rc("unlink root's file (sticky)", ::unlink((t / "sticky/rootfile").c_str()));
    o.rc("write root's 0666 file (sticky)", write_file(t / "sticky/rootfile", "w"));
    o.rc("unlink", ::unlink((t / "open/mine2").c_str()));
    o.rc("rmdir", ::rmdir((t / "open/mydir").c_str()));
  });
  p.check_as_nobody("POSIX lock on a readable file", [](const Tree& t, Trace& o) {
    UniqueFd fd = open_fd(t / "public", O_RDONLY);
    struct flock fl {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    o.rc("rdlock", ::fcntl(fd.get(), F_SETLK, &fl));
    fl.l_type = F_WRLCK;
    o.rc("wrlock on O_RDONLY", ::fcntl(fd.get(), F_SETLK, &fl));
  });
}

namespace {
// A valid file capability (VFS_CAP_REVISION_2: cap_net_bind_service, effective).
const unsigned char kCap[20] = {0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
                                0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
long set_cap(const std::string& path) {
  return ::setxattr(path.c_str(), "security.capability", kCap, sizeof kCap, 0);
}
// "cap" when the file has one, else the errno (ENODATA).
std::string cap_of(const std::string& path) {
  unsigned char buf[64];
  ssize_t n = ::getxattr(path.c_str(), "security.capability", buf, sizeof buf);
  return n < 0 ? errno_name(errno) : "cap(" + std::to_string(n) + ")";
}
long write_at(const std::string& path, int flags = 0) {
  UniqueFd fd = open_fd(path, O_WRONLY | flags);
  if (!fd) return -1;
  return ::pwrite(fd.get(), "w", 1, 0);
}
}  // namespace

// Issue 10 item 3: with FUSE_HANDLE_KILLPRIV_V2 the daemon, not the kernel,
// clears setuid/setgid and capabilities; the results must be the native ones.
TEST_CASE("write, truncate and chown clear setuid, setgid and capabilities as natively") {
  Parity p;
  const std::initializer_list<std::pair<const char*, mode_t>> kFiles = {
      {"ug", 06777},   // setuid + setgid + group-exec, world-writable
      {"g", 02777},    // setgid + group-exec
      {"gnx", 02767},  // setgid without group-exec (the mandatory-locking mark)
      {"u", 04766}};   // setuid only
  auto make = [&](const Tree& t, Trace& o, const std::string& prefix) {
    for (auto& [name, mode] : kFiles) {
      std::string f = t / (prefix + name);
      o.rc(prefix + name, write_file(f, "data", O_TRUNC, 0666)).rc("chmod", ::chmod(f.c_str(), mode));
    }
  };
  p.check("setup as root", [&](const Tree& t, Trace& o) {
    o.rc("mkdir open", ::mkdir((t / "open").c_str(), 0777)).rc("chmod", ::chmod((t / "open").c_str(), 0777));
    for (const char* prefix : {"w.", "t.", "o.", "r.", "c."}) make(t, o, prefix);
    for (const char* f : {"capw", "capt", "capc", "capn"}) {
      o.rc(f, write_file(t / f, "data", O_TRUNC, 0666)).rc("chmod", ::chmod((t / f).c_str(), 0666));
      o.rc("setcap", set_cap(t / f)).val("cap", cap_of(t / f));
    }
    // nobody's files in root's group: its chgrp is by a caller outside the
    // file's group, without CAP_FSETID.
    for (auto& [name, mode] : kFiles) {
      std::string f = t / (std::string("n.") + name);
      o.rc(name, write_file(f, "data", O_TRUNC, 0666))
          .rc("chown", ::chown(f.c_str(), kNobodyUid, 0))
          .rc("chmod", ::chmod(f.c_str(), mode));
    }
  });
  p.check_as_nobody("chgrp by the owner outside the file's group", [&](const Tree& t, Trace& o) {
    for (auto& [name, mode] : kFiles) {
      std::string f = t / (std::string("n.") + name);
      o.stat("before", f).rc(name, ::chown(f.c_str(), static_cast<uid_t>(-1), kNobodyGid)).stat("after", f);
    }
  });
  p.check_as_nobody("write by a caller without CAP_FSETID", [&](const Tree& t, Trace& o) {
    for (auto& [name, mode] : kFiles) {
      std::string f = t / (std::string("w.") + name);
      o.rc(f.substr(f.rfind('/')), write_at(f)).stat("stat", f);
    }
    o.rc("capn", write_at(t / "capn")).val("cap", cap_of(t / "capn"));
    // The owner's own setuid/setgid file: cleared too (no CAP_FSETID).
    std::string own = t / "open/own";
    o.rc("own", write_file(own, "data", O_TRUNC, 0644)).rc("chmod", ::chmod(own.c_str(), 06775));
    o.stat("own before", own).rc("own write", write_at(own)).stat("own after", own);
  });
  p.check_as_nobody("truncate by a caller without CAP_FSETID", [&](const Tree& t, Trace& o) {
    for (auto& [name, mode] : kFiles) {
      std::string f = t / (std::string("t.") + name);
      o.rc(name, ::truncate(f.c_str(), 1)).stat("stat", f);
      std::string g = t / (std::string("o.") + name);
      o.rc("O_TRUNC", write_at(g, O_TRUNC)).stat("stat", g);
    }
  });
  p.check("write, truncate and chown by root (CAP_FSETID)", [&](const Tree& t, Trace& o) {
    for (auto& [name, mode] : kFiles) {
      std::string f = t / (std::string("r.") + name);
      o.rc(name, write_at(f)).stat("write", f);
      o.rc("truncate", ::truncate(f.c_str(), 0)).stat("truncate", f);
      o.rc("O_TRUNC", write_at(f, O_TRUNC)).stat("O_TRUNC", f);
      std::string c = t / (std::string("c.") + name);
      o.rc("chown", ::chown(c.c_str(), 1000, 1000)).stat("chown", c);
    }
    o.rc("capw", write_at(t / "capw")).val("cap", cap_of(t / "capw"));
    o.rc("capt", ::truncate((t / "capt").c_str(), 0)).val("cap", cap_of(t / "capt"));
    o.rc("capc", ::chown((t / "capc").c_str(), 0, 0)).val("cap", cap_of(t / "capc"));
  });
}

TEST_CASE("btrfs: subvolume boundaries and reflinks") {
  Parity p;
  make_basic(p);
  // A subvolume cannot be made through FUSE: make it in both backing dirs.
  std::string native_rel = p.native().root.substr(p.pool().path().size() + 1);
  std::string backing_rel = p.backing().substr(p.pool().path().size() + 1);
  p.pool().make_subvolume(native_rel + "/sub");
  p.pool().make_subvolume(backing_rel + "/sub");
  p.check("rename and link across a subvolume boundary", [](const Tree& t, Trace& o) {
    o.stat("sub", t / "sub");
    o.rc("rename into sub", ::rename((t / "f").c_str(), (t / "sub/f").c_str()));
    o.rc("link into sub", ::link((t / "f").c_str(), (t / "sub/g").c_str()));
    o.rc("create in sub", write_file(t / "sub/own", "own")).content("sub/own", t / "sub/own");
    o.rc("rmdir sub (not empty)", ::rmdir((t / "sub").c_str()));
  });
  p.check("copy_file_range across the boundary", [](const Tree& t, Trace& o) {
    hoody::UniqueFd src = open_fd(t / "f", O_RDONLY);
    hoody::UniqueFd dst = open_fd(t / "sub/copy", O_WRONLY | O_CREAT, 0644);
    o.rc("copy", ::copy_file_range(src.get(), nullptr, dst.get(), nullptr, 100, 0));
    o.content("copy", t / "sub/copy");
  });
  p.check("FICLONE (reflink)", [](const Tree& t, Trace& o) {
    hoody::UniqueFd src = open_fd(t / "f", O_RDONLY);
    hoody::UniqueFd dst = open_fd(t / "clone", O_WRONLY | O_CREAT, 0644);
    o.rc("FICLONE", ::ioctl(dst.get(), FICLONE, src.get())).content("clone", t / "clone");
  }, {.fuse = "FUSE has no remap_file_range: FICLONE/FICLONERANGE fail on every FUSE mount (cp --reflink=auto falls back to copying)"});
}
