// A read-only share refuses every mutating call with EROFS, as root and as an
// unprivileged user, and nothing in the owner's storage changes.
//
// Calls that need a writable fd (write, ftruncate, fallocate, copy_file_range
// into the share, mmap PROT_WRITE|MAP_SHARED) cannot reach the daemon: the
// only way to such an fd is an open for writing, which must give EROFS; they
// are run on a read-only fd anyway (the kernel's own error) to prove that no
// path around the open exists, and the storage is compared afterwards.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <sstream>
#include <string>

#include "ops.hpp"
#include "rig.hpp"

using namespace hoody::test;

namespace {

// F: a file the caller may write by its mode; D: a directory the caller may
// write by its mode, holding DF (file), DE (empty dir); LN: a symlink in D.
// RWD: a writable directory in a rw share (for rename/link in and out).
struct Targets {
  std::string F, D, DF, DE, LN, RWD, RWF;
  uid_t uid;
  gid_t gid;
};

OpList mutations(const Targets& t) {
  OpList ops;
  const int RO = EROFS;
  auto o = [](const std::string& p, int flags, mode_t m = 0644) -> long {
    int fd = ::open(p.c_str(), flags | O_CLOEXEC, m);
    if (fd >= 0) ::close(fd);
    return fd;
  };
  ops.add("open O_WRONLY", [=] { return o(t.F, O_WRONLY); }, {RO});
  ops.add("open O_RDWR", [=] { return o(t.F, O_RDWR); }, {RO});
  ops.add("open O_WRONLY|O_APPEND", [=] { return o(t.F, O_WRONLY | O_APPEND); }, {RO});
  ops.add("open O_RDONLY|O_TRUNC", [=] { return o(t.F, O_RDONLY | O_TRUNC); }, {RO});
  ops.add("open O_WRONLY|O_TRUNC", [=] { return o(t.F, O_WRONLY | O_TRUNC); }, {RO});
  ops.add("open existing O_CREAT|O_WRONLY", [=] { return o(t.DF, O_CREAT | O_WRONLY); }, {RO});
  ops.add("create O_CREAT|O_WRONLY", [=] { return o(t.D + "/new", O_CREAT | O_WRONLY); }, {RO});
  ops.add("create O_CREAT|O_EXCL|O_RDWR", [=] { return o(t.D + "/new", O_CREAT | O_EXCL | O_RDWR); }, {RO});
  ops.add("create O_CREAT|O_RDONLY", [=] { return o(t.D + "/new", O_CREAT | O_RDONLY); }, {RO});
  ops.add("creat()", [=] { long fd = ::creat((t.D + "/new2").c_str(), 0644); if (fd >= 0) ::close(static_cast<int>(fd)); return fd; }, {RO});
  ops.add("open O_TMPFILE", [=] { return o(t.D, O_TMPFILE | O_RDWR); }, {RO, EOPNOTSUPP});
  ops.add("truncate to 0", [=] { return ::truncate(t.F.c_str(), 0); }, {RO});
  ops.add("truncate to 1 MiB", [=] { return ::truncate(t.F.c_str(), 1 << 20); }, {RO});
  ops.add("mkdir", [=] { return ::mkdir((t.D + "/newdir").c_str(), 0755); }, {RO});
  ops.add("mknod S_IFREG", [=] { return ::mknod((t.D + "/nod").c_str(), S_IFREG | 0644, 0); }, {RO});
  ops.add("mknod S_IFIFO", [=] { return ::mknod((t.D + "/fifo").c_str(), S_IFIFO | 0644, 0); }, {RO});
  ops.add("mkfifo", [=] { return ::mkfifo((t.D + "/fifo2").c_str(), 0644); }, {RO});
  if (t.uid == 0) {
    ops.add("mknod S_IFCHR 1:3", [=] { return ::mknod((t.D + "/chr").c_str(), S_IFCHR | 0666, makedev(1, 3)); }, {RO, EPERM});
    ops.add("mknod S_IFBLK 7:0", [=] { return ::mknod((t.D + "/blk").c_str(), S_IFBLK | 0666, makedev(7, 0)); }, {RO, EPERM});
  }
  ops.add("unlink", [=] { return ::unlink(t.DF.c_str()); }, {RO});
  ops.add("unlink symlink", [=] { return ::unlink(t.LN.c_str()); }, {RO});
  ops.add("rmdir", [=] { return ::rmdir(t.DE.c_str()); }, {RO});
  ops.add("rename within", [=] { return ::rename(t.DF.c_str(), (t.D + "/renamed").c_str()); }, {RO});
  ops.add("rename within, over a file", [=] { return ::rename(t.DF.c_str(), t.F.c_str()); }, {RO});
  ops.add("rename a dir within", [=] { return ::rename(t.DE.c_str(), (t.D + "/renamed-dir").c_str()); }, {RO});
  ops.add("renameat2 RENAME_NOREPLACE", [=] { return ::renameat2(AT_FDCWD, t.DF.c_str(), AT_FDCWD, (t.D + "/nr").c_str(), RENAME_NOREPLACE); }, {RO});
  ops.add("renameat2 RENAME_EXCHANGE", [=] { return ::renameat2(AT_FDCWD, t.DF.c_str(), AT_FDCWD, t.F.c_str(), RENAME_EXCHANGE); }, {RO});
  ops.add("renameat2 RENAME_WHITEOUT", [=] { return ::renameat2(AT_FDCWD, t.DF.c_str(), AT_FDCWD, (t.D + "/wo").c_str(), RENAME_WHITEOUT); }, {RO, EINVAL, EPERM});
  // Between the ro share and a rw share of the same mount: the kernel sends
  // these to the daemon (one superblock); hoody-sharefs(8): EROFS before EXDEV
  // when either side is read-only.
  ops.add("rename out to a rw share", [=] { return ::rename(t.DF.c_str(), (t.RWD + "/out").c_str()); }, {RO});
  ops.add("rename in from a rw share", [=] { return ::rename(t.RWF.c_str(), (t.D + "/in").c_str()); }, {RO});
  // From another mount: the kernel's EXDEV, before anything is looked at.
  ops.add("rename in from another mount", [=] { return ::rename("/proc/self/status", (t.D + "/in2").c_str()); }, {EXDEV});
  ops.add("link within", [=] { return ::link(t.DF.c_str(), (t.D + "/hard").c_str()); }, {RO});
  ops.add("link in from a rw share", [=] { return ::link(t.RWF.c_str(), (t.D + "/hard2").c_str()); }, {RO});
  ops.add("link out to a rw share", [=] { return ::link(t.DF.c_str(), (t.RWD + "/hard3").c_str()); }, {RO});
  ops.add("symlink", [=] { return ::symlink("target", (t.D + "/sym").c_str()); }, {RO});
  ops.add("chmod file", [=] { return ::chmod(t.F.c_str(), 0600); }, {RO});
  ops.add("chmod dir", [=] { return ::chmod(t.D.c_str(), 0700); }, {RO});
  ops.add("chown file (to self)", [=] { return ::chown(t.F.c_str(), t.uid, t.gid); }, {RO});
  ops.add("chown dir (to self)", [=] { return ::chown(t.D.c_str(), t.uid, t.gid); }, {RO});
  ops.add("lchown symlink (to self)", [=] { return ::lchown(t.LN.c_str(), t.uid, t.gid); }, {RO});
  if (t.uid == 0) ops.add("chown file to 1234:5678", [=] { return ::chown(t.F.c_str(), 1234, 5678); }, {RO});
  ops.add("utimensat explicit", [=] {
    struct timespec ts[2] = {{1000, 0}, {2000, 0}};
    return ::utimensat(AT_FDCWD, t.F.c_str(), ts, 0);
  }, {RO});
  ops.add("utimensat now", [=] { return ::utimensat(AT_FDCWD, t.F.c_str(), nullptr, 0); }, {RO});
  ops.add("utimensat symlink nofollow", [=] { return ::utimensat(AT_FDCWD, t.LN.c_str(), nullptr, AT_SYMLINK_NOFOLLOW); }, {RO});
  ops.add("utimensat dir", [=] { return ::utimensat(AT_FDCWD, t.D.c_str(), nullptr, 0); }, {RO});
  ops.add("setxattr user.new", [=] { return ::setxattr(t.F.c_str(), "user.new", "v", 1, 0); }, {RO});
  ops.add("setxattr user.k replace", [=] { return ::setxattr(t.F.c_str(), "user.k", "w", 1, XATTR_REPLACE); }, {RO});
  ops.add("setxattr on a dir", [=] { return ::setxattr(t.D.c_str(), "user.new", "v", 1, 0); }, {RO});
  ops.add("removexattr user.k", [=] { return ::removexattr(t.F.c_str(), "user.k"); }, {RO});
  if (t.uid == 0) {
    ops.add("setxattr trusted.x", [=] { return ::setxattr(t.F.c_str(), "trusted.x", "v", 1, 0); }, {RO, EPERM, EOPNOTSUPP});
    ops.add("setxattr security.x", [=] { return ::setxattr(t.F.c_str(), "security.x", "v", 1, 0); }, {RO, EPERM, EOPNOTSUPP});
    ops.add("setxattr system.posix_acl_access", [=] {
      // An ACL granting nobody rw: user::rw- user:65534:rw- group::r-- mask::rw- other::r--
      struct { uint32_t v; struct { uint16_t tag, perm; uint32_t id; } e[5]; } acl = {
          2, {{1, 6, 0xffffffff}, {2, 6, 65534}, {4, 4, 0xffffffff}, {0x10, 6, 0xffffffff}, {0x20, 4, 0xffffffff}}};
      return ::setxattr(t.F.c_str(), "system.posix_acl_access", &acl, sizeof acl, 0);
    }, {RO, EOPNOTSUPP});
  }
  // Through a read-only fd: what reaches the daemon as setattr/setxattr.
  auto with_fd = [](const std::string& p, int flags, std::function<long(int)> f) {
    return [=]() -> long {
      int fd = ::open(p.c_str(), flags | O_CLOEXEC);
      if (fd < 0) return std::printf("  (cannot open %s: %s)\n", p.c_str(), std::strerror(errno)), 0;
      long r = f(fd);
      int e = errno;
      ::close(fd);
      errno = e;
      return r;
    };
  };
  ops.add("fchmod (O_RDONLY fd)", with_fd(t.F, O_RDONLY, [](int fd) { return ::fchmod(fd, 0600); }), {RO});
  ops.add("fchown (O_RDONLY fd)", with_fd(t.F, O_RDONLY, [=](int fd) { return ::fchown(fd, t.uid, t.gid); }), {RO});
  ops.add("futimens (O_RDONLY fd)", with_fd(t.F, O_RDONLY, [](int fd) { return ::futimens(fd, nullptr); }), {RO});
  ops.add("fsetxattr (O_RDONLY fd)", with_fd(t.F, O_RDONLY, [](int fd) { return ::fsetxattr(fd, "user.f", "v", 1, 0); }), {RO});
  ops.add("fremovexattr (O_RDONLY fd)", with_fd(t.F, O_RDONLY, [](int fd) { return ::fremovexattr(fd, "user.k"); }), {RO});
  ops.add("fchmod (dir fd)", with_fd(t.D, O_RDONLY | O_DIRECTORY, [](int fd) { return ::fchmod(fd, 0700); }), {RO});
  ops.add("mkdirat (dir fd)", with_fd(t.D, O_RDONLY | O_DIRECTORY, [](int fd) { return ::mkdirat(fd, "viafd", 0755); }), {RO});
  ops.add("unlinkat (dir fd)", with_fd(t.D, O_RDONLY | O_DIRECTORY, [=](int fd) { return ::unlinkat(fd, t.DF.substr(t.D.size() + 1).c_str(), 0); }), {RO});
  ops.add("ioctl FS_IOC_SETFLAGS (O_RDONLY fd)", with_fd(t.F, O_RDONLY, [](int fd) {
    int flags = FS_APPEND_FL;
    return static_cast<long>(::ioctl(fd, FS_IOC_SETFLAGS, &flags));
  }), {RO, ENOTTY, ENOSYS, EPERM, EACCES, EBADF});
  // Calls that need a writable fd: the kernel refuses them on the read-only
  // fd (open for writing is refused above, so no writable fd exists).
  ops.add("write (O_RDONLY fd; unreachable)", with_fd(t.F, O_RDONLY, [](int fd) { return ::write(fd, "x", 1); }), {EBADF});
  ops.add("pwrite (O_RDONLY fd; unreachable)", with_fd(t.F, O_RDONLY, [](int fd) { return ::pwrite(fd, "x", 1, 0); }), {EBADF});
  ops.add("ftruncate (O_RDONLY fd; unreachable)", with_fd(t.F, O_RDONLY, [](int fd) { return ::ftruncate(fd, 0); }), {EINVAL, EBADF});
  ops.add("fallocate (O_RDONLY fd; unreachable)", with_fd(t.F, O_RDONLY, [](int fd) { return ::fallocate(fd, 0, 0, 1 << 20); }), {EBADF});
  ops.add("fallocate PUNCH_HOLE (O_RDONLY fd; unreachable)", with_fd(t.F, O_RDONLY, [](int fd) { return ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096); }), {EBADF});
  ops.add("copy_file_range into it (O_RDONLY dst; unreachable)", [=]() -> long {
    int src = ::open(t.RWF.c_str(), O_RDONLY | O_CLOEXEC);
    int dst = ::open(t.F.c_str(), O_RDONLY | O_CLOEXEC);
    long r = ::copy_file_range(src, nullptr, dst, nullptr, 4, 0);
    int e = errno;
    ::close(src), ::close(dst);
    errno = e;
    return r;
  }, {EBADF});
  ops.add("mmap PROT_WRITE MAP_SHARED (O_RDONLY fd; unreachable)", with_fd(t.F, O_RDONLY, [](int fd) -> long {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) return -1;
    ::munmap(p, 4096);
    return 0;
  }), {EACCES});
  ops.add("mmap MAP_PRIVATE written + msync (stays private)", with_fd(t.F, O_RDONLY, [](int fd) -> long {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) return -1;
    std::memcpy(p, "PRIVATE", 7);
    ::msync(p, 4096, MS_SYNC);
    ::munmap(p, 4096);
    return 0;
  }), {});
  ops.add("reading still works", with_fd(t.F, O_RDONLY, [](int fd) -> long {
    char b[4];
    return ::pread(fd, b, sizeof b, 0) == 4 ? 0 : -1;
  }), {});
  return ops;
}

// c1 owns data/ (offered ro to c2 as "ro") and rw/ (offered rw as "rw").
// Root's targets are root-owned 0644/0755; nobody's are nobody-owned (so
// that chmod, chown and utimens pass the kernel's owner check) and
// world-writable root-owned ones (so that the mode bits allow the write).
void populate(ShareRig& rig) {
  rig.container("c1");
  rig.container("c2");
  rig.write("c1", "data/f", "hello, read-only world\n");
  rig.mkdir("c1", "data/d");
  rig.write("c1", "data/d/df", "in d\n");
  rig.mkdir("c1", "data/d/de");
  REQUIRE(::symlink("df", (rig.storage("c1") + "/data/d/ln").c_str()) == 0);
  rig.write("c1", "data/nob/nf", "nobody's\n");
  rig.write("c1", "data/nob/ndf", "nobody's too\n");
  rig.mkdir("c1", "data/nob/nde");
  REQUIRE(::symlink("nf", (rig.storage("c1") + "/data/nob/nln").c_str()) == 0);
  for (auto p : {"data/nob", "data/nob/nf", "data/nob/ndf", "data/nob/nde"})
    REQUIRE(::chown((rig.storage("c1") + "/" + p).c_str(), kNobodyUid, kNobodyGid) == 0);
  REQUIRE(::lchown((rig.storage("c1") + "/data/nob/nln").c_str(), kNobodyUid, kNobodyGid) == 0);
  rig.write("c1", "data/ww/wf", "world-writable\n", 0666);
  rig.write("c1", "data/ww/wdf", "world-writable too\n", 0666);
  rig.mkdir("c1", "data/ww/wde", 0777);
  REQUIRE(::symlink("wf", (rig.storage("c1") + "/data/ww/wln").c_str()) == 0);
  ::chmod((rig.storage("c1") + "/data/ww").c_str(), 0777);
  for (auto p : {"data/f", "data/d/df", "data/nob/nf", "data/ww/wf"})
    REQUIRE(::setxattr((rig.storage("c1") + "/" + p).c_str(), "user.k", "v", 1, 0) == 0);
  rig.write("c1", "rw/rwf", "rw share file\n", 0666);
  ::chmod((rig.storage("c1") + "/rw").c_str(), 0777);
  rig.offer("c1", "data", "c2", Mode::ro, "ro");
  rig.offer("c1", "rw", "c2", Mode::rw, "rw");
  rig.accept("c2", "ro");
  rig.accept("c2", "rw");
}

void check_ops(const std::string& what, const OpList& ops, bool as_nobody) {
  auto e = run_child([&] { return ops.run(); }, {.as_nobody = as_nobody});
  CHECK_MESSAGE(e.exit_code == 0, what, ": ", e.describe());
  if (e.exit_code == 0) MESSAGE(what, ":\n", e.output);
}

}  // namespace

TEST_CASE("sharefs ro: every mutating call gives EROFS and the storage does not change") {
  ShareRig rig;
  populate(rig);
  const std::string before = snapshot_tree(rig.storage("c1"));
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "ro/f"));
  const std::string S = *m / "ro";

  SUBCASE("as root, on the share's root and below") {
    check_ops("root, share root", mutations({S + "/f", S, S + "/d/df", S + "/d/de", S + "/d/ln",
                                             *m / "rw", *m / "rw/rwf", 0, 0}),
              false);
    check_ops("root, subdir", mutations({S + "/f", S + "/d", S + "/d/df", S + "/d/de", S + "/d/ln",
                                         *m / "rw", *m / "rw/rwf", 0, 0}),
              false);
  }
  SUBCASE("as nobody, on files it owns and on world-writable ones") {
    check_ops("nobody, own files", mutations({S + "/nob/nf", S + "/nob", S + "/nob/ndf", S + "/nob/nde",
                                              S + "/nob/nln", *m / "rw", *m / "rw/rwf", kNobodyUid, kNobodyGid}),
              true);
    // chmod/chown/utimens(explicit)/lchown on root's files stop at the
    // kernel's owner check (EPERM) before the daemon: only the data and
    // namespace calls are meaningful here, the rest is in the case above.
    OpList ww;
    auto o = [](const std::string& p, int flags) -> long {
      int fd = ::open(p.c_str(), flags | O_CLOEXEC, 0644);
      if (fd >= 0) ::close(fd);
      return fd;
    };
    const std::string W = S + "/ww";
    ww.add("open O_WRONLY 0666 file", [=] { return o(W + "/wf", O_WRONLY); }, {EROFS});
    ww.add("open O_RDWR 0666 file", [=] { return o(W + "/wf", O_RDWR); }, {EROFS});
    ww.add("open O_RDONLY|O_TRUNC 0666 file", [=] { return o(W + "/wf", O_RDONLY | O_TRUNC); }, {EROFS});
    ww.add("truncate 0666 file", [=] { return ::truncate((W + "/wf").c_str(), 0); }, {EROFS});
    ww.add("create in 0777 dir", [=] { return o(W + "/new", O_CREAT | O_WRONLY); }, {EROFS});
    ww.add("mkdir in 0777 dir", [=] { return ::mkdir((W + "/nd").c_str(), 0755); }, {EROFS});
    ww.add("mkfifo in 0777 dir", [=] { return ::mkfifo((W + "/ff").c_str(), 0644); }, {EROFS});
    ww.add("unlink in 0777 dir", [=] { return ::unlink((W + "/wdf").c_str()); }, {EROFS});
    ww.add("rmdir in 0777 dir", [=] { return ::rmdir((W + "/wde").c_str()); }, {EROFS});
    ww.add("rename in 0777 dir", [=] { return ::rename((W + "/wdf").c_str(), (W + "/x").c_str()); }, {EROFS});
    ww.add("symlink in 0777 dir", [=] { return ::symlink("t", (W + "/s").c_str()); }, {EROFS});
    ww.add("link in 0777 dir", [=] { return ::link((W + "/wdf").c_str(), (W + "/h").c_str()); }, {EROFS});
    ww.add("utimensat now on 0666 file", [=] { return ::utimensat(AT_FDCWD, (W + "/wf").c_str(), nullptr, 0); }, {EROFS});
    const std::string RW = *m / "rw";
    ww.add("rename out to the rw share", [=] { return ::rename((W + "/wdf").c_str(), (RW + "/o").c_str()); }, {EROFS});
    ww.add("rename in from the rw share", [=] { return ::rename((RW + "/rwf").c_str(), (W + "/i").c_str()); }, {EROFS});
    check_ops("nobody, world-writable files", ww, true);
  }
  // Nothing reached the storage: same types, modes, owners, sizes, times,
  // contents and xattrs.
  std::string after = snapshot_tree(rig.storage("c1"));
  // rw/ may only have changed if a rename/link "in from the rw share" went
  // through, which is checked above; compare data/ strictly.
  auto only = [](const std::string& snap, const std::string& prefix) {
    std::string out, line;
    std::istringstream in(snap);
    while (std::getline(in, line))
      if (line.rfind(prefix, 0) == 0) out += line + "\n";
    return out;
  };
  CHECK_MESSAGE(only(after, "/data") == only(before, "/data"), "the ro share's storage changed:\nbefore:\n",
                only(before, "/data"), "after:\n", only(after, "/data"));
  CHECK_MESSAGE(only(after, "/rw") == only(before, "/rw"), "the rw share's storage changed:\nbefore:\n",
                only(before, "/rw"), "after:\n", only(after, "/rw"));
}

// The calls that need a writable fd, on a real one: opened (and mapped)
// while the share was rw, then the owner makes it ro (hoody-share mode).
TEST_CASE("sharefs ro: write, ftruncate, fallocate, copy_file_range and a shared mapping through an fd opened while rw give EROFS once the share is ro") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  const std::string content(8192, 'o');
  rig.write("c1", "data/f", content, 0666);
  rig.write("c1", "data/g", content, 0666);
  rig.write("c1", "rw/src", "SOURCE-BYTES", 0666);
  rig.offer("c1", "data", "c2", Mode::rw, "data");
  rig.offer("c1", "rw", "c2", Mode::rw, "rw");
  rig.accept("c2", "data");
  rig.accept("c2", "rw");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "data/f"));
  const std::string F = *m / "data/f";
  int fd = ::open(F.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  int afd = ::open((*m / "data/g").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  REQUIRE(afd >= 0);
  int src = ::open((*m / "rw/src").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(src >= 0);
  auto* map = static_cast<char*>(::mmap(nullptr, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
  REQUIRE(map != MAP_FAILED);
  // While rw, a write goes through (the fd is really writable).
  REQUIRE(::pwrite(fd, "w", 1, 0) == 1);
  REQUIRE(::fsync(fd) == 0);
  const std::string before = snapshot_tree(rig.storage("c1") + "/data");

  std::string why;
  REQUIRE_MESSAGE(rig.registry().set_mode("c1", "data", Mode::ro, &why).ok(), why);
  // The change reaches the daemon within 100 ms: wait until a new open says so.
  bool ro = false;
  for (int i = 0; i < 100 && !ro; ++i) {
    int t = ::open((*m / "data/g").c_str(), O_WRONLY | O_CLOEXEC);
    if (t < 0 && errno == EROFS) ro = true;
    if (t >= 0) ::close(t);
    if (!ro) ::usleep(20000);
  }
  REQUIRE_MESSAGE(ro, "the share did not become read-only within 2 s");

  OpList ops;
  ops.add("write", [=] { return static_cast<long>(::write(fd, "x", 1)); }, {EROFS});
  ops.add("pwrite", [=] { return static_cast<long>(::pwrite(fd, "x", 1, 100)); }, {EROFS});
  ops.add("pwrite past the end", [=] { return static_cast<long>(::pwrite(fd, "x", 1, 1 << 20)); }, {EROFS});
  ops.add("write O_APPEND", [=] { return static_cast<long>(::write(afd, "x", 1)); }, {EROFS});
  ops.add("ftruncate", [=] { return static_cast<long>(::ftruncate(fd, 0)); }, {EROFS});
  ops.add("ftruncate up", [=] { return static_cast<long>(::ftruncate(fd, 1 << 20)); }, {EROFS});
  ops.add("fallocate", [=] { return static_cast<long>(::fallocate(fd, 0, 0, 1 << 20)); }, {EROFS, EOPNOTSUPP});
  ops.add("fallocate PUNCH_HOLE", [=] { return static_cast<long>(::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096)); }, {EROFS, EOPNOTSUPP});
  ops.add("copy_file_range into it", [=] {
    loff_t in = 0, out = 0;
    return static_cast<long>(::copy_file_range(src, &in, fd, &out, 12, 0));
  }, {EROFS});
  ops.add("fchmod", [=] { return static_cast<long>(::fchmod(fd, 0600)); }, {EROFS});
  ops.add("fsetxattr", [=] { return static_cast<long>(::fsetxattr(fd, "user.x", "v", 1, 0)); }, {EROFS});
  ops.add("mmap PROT_WRITE MAP_SHARED (new) + write + msync", [=]() -> long {
    auto* p = static_cast<char*>(::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    if (p == MAP_FAILED) return -1;
    // A store into the mapping cannot be refused; its writeback must be.
    std::memcpy(p + 200, "NEWMAP", 6);
    long r = ::msync(p, 4096, MS_SYNC);
    int e = errno;
    ::munmap(p, 4096);
    errno = e;
    return r < 0 ? r : (errno = 0, 0);
  }, {EROFS, EIO, EACCES});
  ops.add("store into the old mapping + msync", [=]() -> long {
    std::memcpy(map + 300, "OLDMAP", 6);
    return static_cast<long>(::msync(map, 8192, MS_SYNC));
  }, {EROFS, EIO, EACCES});
  ops.add("fsync", [=] { return static_cast<long>(::fsync(fd)); }, {0, EROFS, EIO, EACCES});
  auto e = run_child([&] { return ops.run(); });
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  if (e.exit_code == 0) MESSAGE(e.output);
  ::munmap(map, 8192);
  ::close(fd), ::close(afd), ::close(src);
  // Whatever the page cache held, the storage never got it.
  std::string after = snapshot_tree(rig.storage("c1") + "/data");
  CHECK_MESSAGE(after == before, "the ro share's storage changed:\nbefore:\n", before, "after:\n", after);
  int bfd = ::open((rig.storage("c1") + "/data/f").c_str(), O_RDONLY | O_CLOEXEC);
  char buf[512];
  REQUIRE(::pread(bfd, buf, sizeof buf, 0) == sizeof buf);
  ::close(bfd);
  CHECK(std::string(buf + 200, 6) != "NEWMAP");
  CHECK(std::string(buf + 300, 6) != "OLDMAP");
}
