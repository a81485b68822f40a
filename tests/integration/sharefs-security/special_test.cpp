// Device nodes, FIFOs and sockets in a share (made by the owner in its own
// storage) cannot be opened through the share, and a FIFO open does not hang;
// mknod of anything but a regular file is refused in a rw share; the mount
// is nosuid,nodev and a setuid binary in a share does not run setuid
// (virtiofsd CVE-2020-35517's class).
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "ops.hpp"
#include "rig.hpp"

using namespace hoody::test;

namespace {

long open_close(const std::string& p, int flags) {
  int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd >= 0) ::close(fd);
  return fd;
}

// A listening unix socket at `path` (in the owner's storage); returns its fd.
int listen_unix(const std::string& path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  struct sockaddr_un a{};
  a.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof a.sun_path);
  std::strcpy(a.sun_path, path.c_str());
  REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(::listen(s, 8) == 0);
  return s;
}

long connect_unix(const std::string& path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return errno = ENAMETOOLONG, -1;
  std::strcpy(a.sun_path, path.c_str());
  long r = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  int e = errno;
  ::close(s);
  errno = e;
  return r;
}

long bind_unix(const std::string& path) {
  int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) return errno = ENAMETOOLONG, -1;
  std::strcpy(a.sun_path, path.c_str());
  long r = ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  int e = errno;
  ::close(s);
  errno = e;
  return r;
}

}  // namespace

TEST_CASE("sharefs special files: devices, FIFOs and sockets in a share cannot be opened") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.mkdir("c1", "s");
  const std::string src = rig.storage("c1") + "/s";
  REQUIRE(::mknod((src + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
  REQUIRE(::mknod((src + "/zero").c_str(), S_IFCHR | 0666, makedev(1, 5)) == 0);
  REQUIRE(::mknod((src + "/mem").c_str(), S_IFCHR | 0666, makedev(1, 1)) == 0);  // /dev/mem
  REQUIRE(::mknod((src + "/loop").c_str(), S_IFBLK | 0666, makedev(7, 0)) == 0);
  REQUIRE(::mkfifo((src + "/fifo").c_str(), 0666) == 0);
  ::chmod((src + "/null").c_str(), 0666), ::chmod((src + "/zero").c_str(), 0666);
  ::chmod((src + "/mem").c_str(), 0666), ::chmod((src + "/loop").c_str(), 0666);
  ::chmod((src + "/fifo").c_str(), 0666);
  // sun_path is short: bind relative to the storage dir as cwd.
  int cwd = ::open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(::chdir(src.c_str()) == 0);
  int lsock = listen_unix("sock");
  REQUIRE(::fchdir(cwd) == 0);
  ::close(cwd);
  ::chmod((src + "/sock").c_str(), 0777);
  ::chmod(src.c_str(), 0777);  // nobody may create here: its mknod must reach the daemon
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s"));
  const std::string S = *m / "s";

  // hoody-sharefs(8): special files are shown as empty regular files of mode 0000.
  for (auto name : {"null", "zero", "mem", "loop", "fifo", "sock"}) {
    struct stat sb;
    REQUIRE(::lstat((S + "/" + name).c_str(), &sb) == 0);
    INFO(name);
    CHECK(S_ISREG(sb.st_mode));
    CHECK((sb.st_mode & 07777) == 0);
    CHECK(sb.st_size == 0);
    CHECK(sb.st_rdev == 0);
  }
  OpList ops;
  for (auto name : {"null", "zero", "mem", "loop"}) {
    std::string p = S + "/" + name;
    ops.add(std::string("open ") + name + " O_RDONLY", [=] { return open_close(p, O_RDONLY); }, {EACCES, ENXIO, EPERM, ENOENT});
    ops.add(std::string("open ") + name + " O_WRONLY", [=] { return open_close(p, O_WRONLY); }, {EACCES, ENXIO, EPERM, ENOENT});
    ops.add(std::string("open ") + name + " O_RDWR", [=] { return open_close(p, O_RDWR); }, {EACCES, ENXIO, EPERM, ENOENT});
  }
  // A FIFO open must fail, and fail at once: a blocking O_RDONLY open of a
  // FIFO waits for a writer (the child's 10 s timeout is the hang detector).
  const std::string F = S + "/fifo";
  ops.add("open fifo O_RDONLY|O_NONBLOCK", [=] { return open_close(F, O_RDONLY | O_NONBLOCK); }, {EACCES, ENXIO, EPERM, ENOENT});
  ops.add("open fifo O_WRONLY|O_NONBLOCK", [=] { return open_close(F, O_WRONLY | O_NONBLOCK); }, {EACCES, ENXIO, EPERM, ENOENT});
  ops.add("open fifo O_RDONLY (blocking)", [=] { return open_close(F, O_RDONLY); }, {EACCES, ENXIO, EPERM, ENOENT});
  ops.add("open fifo O_WRONLY (blocking)", [=] { return open_close(F, O_WRONLY); }, {EACCES, ENXIO, EPERM, ENOENT});
  ops.add("open fifo O_RDWR", [=] { return open_close(F, O_RDWR); }, {EACCES, ENXIO, EPERM, ENOENT});
  const std::string K = S + "/sock";
  ops.add("open socket", [=] { return open_close(K, O_RDONLY); }, {EACCES, ENXIO, EPERM, ENOENT});
  // connect() to a socket inode on FUSE never reaches the owner's listener
  // (the kernel keeps no binding for it); what matters is that it fails.
  ops.add("connect to the socket", [=] { return connect_unix(K); }, {ECONNREFUSED, EACCES, ENOENT, EPERM});
  // In the rw share: no special file can be made.
  ops.add("mknod S_IFCHR 1:3", [=] { return ::mknod((S + "/newchr").c_str(), S_IFCHR | 0666, makedev(1, 3)); }, {EPERM, EACCES});
  ops.add("mknod S_IFBLK 7:0", [=] { return ::mknod((S + "/newblk").c_str(), S_IFBLK | 0666, makedev(7, 0)); }, {EPERM, EACCES});
  ops.add("mknod S_IFIFO", [=] { return ::mknod((S + "/newfifo").c_str(), S_IFIFO | 0666, 0); }, {EPERM, EACCES});
  ops.add("mkfifo", [=] { return ::mkfifo((S + "/newfifo2").c_str(), 0666); }, {EPERM, EACCES});
  ops.add("mknod S_IFSOCK", [=] { return ::mknod((S + "/newsock").c_str(), S_IFSOCK | 0666, 0); }, {EPERM, EACCES});
  ops.add("bind a unix socket", [=] { return bind_unix(S + "/bound"); }, {EPERM, EACCES, EADDRINUSE});
  ops.add("a regular file can still be made", [=] {
    return open_close(S + "/plain-" + std::to_string(::getuid()), O_CREAT | O_WRONLY);
  }, {});

  for (bool nobody : {false, true}) {
    auto e = run_child([&] { return ops.run(); }, {.as_nobody = nobody, .timeout = std::chrono::seconds(20)});
    CHECK_MESSAGE(!e.timed_out, "an open hung (a FIFO?): ", e.output);
    CHECK_MESSAGE(e.exit_code == 0, std::string(nobody ? "nobody: " : "root: "), e.describe());
    if (e.exit_code == 0) MESSAGE(std::string(nobody ? "as nobody:\n" : "as root:\n"), e.output);
  }
  // Nothing special appeared in the storage, the listener got no connection.
  for (auto n : {"newchr", "newblk", "newfifo", "newfifo2", "newsock", "bound"}) {
    struct stat st;
    CHECK_MESSAGE(::lstat((src + "/" + n).c_str(), &st) < 0, n, " was made in the storage");
  }
  CHECK(::accept(lsock, nullptr, nullptr) < 0);
  ::close(lsock);
}

TEST_CASE("sharefs special files: the mount is nosuid,nodev and a setuid binary does not run setuid") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.mkdir("c1", "bin");
  const std::string src = rig.storage("c1") + "/bin";
  // /usr/bin/id, setuid root, in the owner's storage.
  std::filesystem::copy_file("/usr/bin/id", src + "/id");
  REQUIRE(::chown((src + "/id").c_str(), 0, 0) == 0);
  REQUIRE(::chmod((src + "/id").c_str(), 04755) == 0);
  // The same through the native storage: proves the binary would escalate.
  auto native = run_child([&] {
    ::execl((src + "/id").c_str(), "id", "-u", nullptr);
    return 126;
  }, {.as_nobody = true});
  REQUIRE_MESSAGE(native.output.find('0') == 0, "the setuid copy of id does not escalate natively: ",
                  native.describe());
  rig.offer("c1", "bin", "c2", Mode::ro, "bin");
  rig.offer("c1", "bin", "c2", Mode::rw, "binrw");
  rig.accept("c2", "bin");
  rig.accept("c2", "binrw");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "bin/id"));

  std::string opts = mount_options(m->root());
  INFO("mount options: ", opts);
  auto has = [&](const char* o) { return ("," + opts + ",").find(std::string(",") + o + ",") != std::string::npos; };
  CHECK_MESSAGE(has("nosuid"), "mountinfo: ", opts);
  CHECK_MESSAGE(has("nodev"), "mountinfo: ", opts);

  // The mode is shown as it is (the owner's bits), but exec does not escalate.
  struct stat st;
  REQUIRE(::stat((*m / "bin/id").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 04755);
  for (auto share : {"bin", "binrw"}) {
    std::string p = *m / (std::string(share) + "/id");
    auto e = run_child([&] {
      ::execl(p.c_str(), "id", "-u", nullptr);
      std::printf("exec: %s\n", std::strerror(errno));
      return 126;
    }, {.as_nobody = true});
    INFO(share, ": ", e.describe());
    // Either it does not run at all (noexec) or it runs as nobody.
    bool refused = e.exit_code == 126;
    bool as_nobody = e.ok() && e.output.rfind("65534", 0) == 0;
    CHECK_MESSAGE((refused || as_nobody), share, ": a setuid binary ran with ", e.output);
  }
  // The kernel's nosuid also covers chmod u+s through a rw share: the bit may
  // be set (it is the owner's file) but exec still does not escalate; the
  // exec above on "binrw" covers it.
}

// nosuid,nodev are forced: an operator's "-o suid,dev" (given after the forced
// options, where it would win) must not undo them: refused at start, or the
// mount keeps nosuid,nodev.
TEST_CASE("sharefs special files: -o suid,dev cannot undo nosuid,nodev") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  for (const char* extra : {"allow_other,suid", "allow_other,dev", "allow_other,suid,dev,exec"}) {
    INFO("-o ", std::string(extra));
    std::unique_ptr<ShareMount> m;
    try {
      m = rig.mount("c2", extra);
    } catch (const std::exception& e) {
      MESSAGE("-o ", std::string(extra), " refused at start: ", std::string(e.what()).substr(0, 200));
      continue;
    }
    std::string opts = mount_options(m->root());
    auto has = [&](const char* o) { return ("," + opts + ",").find(std::string(",") + o + ",") != std::string::npos; };
    CHECK_MESSAGE(has("nosuid"), "mountinfo: ", opts);
    CHECK_MESSAGE(has("nodev"), "mountinfo: ", opts);
  }
}
