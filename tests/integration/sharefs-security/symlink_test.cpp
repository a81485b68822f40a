// Symlinks in a share are returned verbatim and never followed by the daemon:
// the caller's kernel follows them in the caller's namespace.  The callers
// here run in a jail (own mount namespace, chrooted into an empty dir with
// the mount at /m), so whatever lies outside the jail can only be reached
// through the daemon; markers are planted there and watched with inotify.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "ops.hpp"
#include "rig.hpp"

using namespace hoody::test;
using Clock = std::chrono::steady_clock;

namespace {

std::string read_all(const std::string& p, int* err = nullptr) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (err) *err = errno;
    return "<" + errname(errno) + ">";
  }
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  ::close(fd);
  if (err) *err = 0;
  return s;
}

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.insert(e->d_name);
  ::closedir(d);
  return out;
}

std::string readlink_s(const std::string& p) {
  char t[8192];
  ssize_t n = ::readlink(p.c_str(), t, sizeof t);
  return n < 0 ? "<" + errname(errno) + ">" : std::string(t, static_cast<size_t>(n));
}

}  // namespace

TEST_CASE("sharefs symlinks: readlink returns the target verbatim") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.mkdir("c1", "s");
  const std::string src = rig.storage("c1") + "/s";
  std::vector<std::string> targets = {
      "/", "../../", "../../../etc", "/etc/shadow", "a\nb", "dir//x/./y/../z/", " lead and trail ",
      "\xc3\xbcn\xc3\xaf", "\xff\xfe not utf-8", "-rf", std::string(4000, 'x'),
      "/proc/self/root/etc/passwd", "../" + std::string(300, 'y'),
  };
  for (size_t i = 0; i < targets.size(); ++i)
    REQUIRE(::symlink(targets[i].c_str(), (src + "/l" + std::to_string(i)).c_str()) == 0);
  rig.offer("c1", "s", "c2", Mode::ro, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s/l0"));
  for (size_t i = 0; i < targets.size(); ++i) {
    std::string p = *m / ("s/l" + std::to_string(i));
    INFO("target #", i, " (", targets[i].size(), " bytes)");
    CHECK(readlink_s(p) == targets[i]);
    struct stat st;
    REQUIRE(::lstat(p.c_str(), &st) == 0);
    CHECK(S_ISLNK(st.st_mode));
    CHECK(static_cast<size_t>(st.st_size) == targets[i].size());
    // O_NOFOLLOW on the link itself: ELOOP from the kernel, as natively.
    CHECK(::open(p.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC) < 0);
    CHECK(errno == ELOOP);
  }
}

TEST_CASE("sharefs symlinks: absolute and ../../ links resolve in the caller's namespace, not the daemon's") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.mkdir("c1", "s");
  const std::string src = rig.storage("c1") + "/s";
  // Markers: one only the caller sees (the jail's root), one only the daemon
  // sees (next to the owner's storage, where s/../../ leads on the host).
  std::string jail = rig.pool().make_temp_dir("jail");
  REQUIRE(::symlink("/", (src + "/abs").c_str()) == 0);
  REQUIRE(::symlink("../../", (src + "/rel").c_str()) == 0);
  REQUIRE(::symlink("/etc/shadow", (src + "/shadow").c_str()) == 0);
  REQUIRE(::symlink("../", (src + "/up").c_str()) == 0);
  {
    int fd = ::open((jail + "/caller-marker").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(::write(fd, "caller", 6) == 6);
    ::close(fd);
  }
  const std::string daemon_marker = rig.path() + "/containers/c1/daemon-marker";
  {
    int fd = ::open(daemon_marker.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(::write(fd, "daemon", 6) == 6);
    ::close(fd);
  }
  rig.write("c1", "outside-share", "SECRET-OUTSIDE");  // storage/, next to s/
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s/abs"));

  auto e = in_jail(jail, m->root(), [&] {
    OpList ops;
    auto content = [](const std::string& p, const std::string& want) {
      return [=]() -> long {
        int err = 0;
        std::string got = read_all(p, &err);
        if (err) return errno = err, -1;
        if (got != want) std::printf("  %s: read %s\n", p.c_str(), got.c_str());
        return got == want ? 0 : (errno = EBADMSG, -1);
      };
    };
    // The kernel follows "/" to the jail's root.
    ops.add("abs/caller-marker is the caller's file", content("/m/s/abs/caller-marker", "caller"), {});
    ops.add("rel (../../) leads to the caller's root", content("/m/s/rel/caller-marker", "caller"), {});
    // What the daemon would have found, had it followed them.
    ops.add("abs/<daemon path> is not the daemon's file",
            content("/m/s/abs" + daemon_marker, "daemon"), {ENOENT});
    ops.add("rel/daemon-marker is not the daemon's file", content("/m/s/rel/daemon-marker", "daemon"), {ENOENT});
    ops.add("up/outside-share (the owner's storage) is not reached",
            content("/m/s/up/outside-share", "SECRET-OUTSIDE"), {ENOENT});
    ops.add("shadow resolves in the jail (no /etc there)", content("/m/s/shadow", ""), {ENOENT});
    ops.add("readdir abs/ lists the jail", [] {
      auto n = names_in("/m/s/abs");
      std::string all;
      for (auto& x : n) all += x + ",";
      std::printf("  abs/ lists: %s\n", all.c_str());
      return n == std::set<std::string>{"caller-marker", "m"} ? 0L : (errno = EBADMSG, -1L);
    }, {});
    ops.add("readdir up/ is the mount root", [] {
      auto n = names_in("/m/s/up");
      return n.count("s") && !n.count("outside-share") ? 0L : (errno = EBADMSG, -1L);
    }, {});
    // Creating through a link: lands where the caller's kernel says.
    ops.add("create through abs/ lands in the jail", [] {
      int fd = ::open("/m/s/abs/made-through-abs", O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) return -1L;
      ::close(fd);
      struct stat st;
      return ::stat("/made-through-abs", &st) == 0 ? 0L : (errno = EBADMSG, -1L);
    }, {});
    ops.add("openat2 RESOLVE_NO_SYMLINKS through abs", [] {
      struct open_how how{};
      how.flags = O_RDONLY;
      how.resolve = RESOLVE_NO_SYMLINKS;
      long fd = ::syscall(SYS_openat2, AT_FDCWD, "/m/s/abs/caller-marker", &how, sizeof how);
      if (fd >= 0) ::close(static_cast<int>(fd));
      return fd;
    }, {ELOOP});
    return ops.run();
  });
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  if (e.exit_code == 0) MESSAGE("in the jail:\n", e.output);
  struct stat st;
  CHECK(::lstat((src + "/made-through-abs").c_str(), &st) < 0);
  CHECK(::lstat((rig.path() + "/made-through-abs").c_str(), &st) < 0);

  // Outside any jail: /etc/shadow through the share, as nobody, is the
  // caller's own /etc/shadow with the caller's permissions (EACCES), never
  // the file read by a root daemon on the caller's behalf.
  auto n = run_child([&] {
    int fd = ::open((*m / "s/shadow").c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) return std::printf("opened /etc/shadow through the share\n"), 1;
    return errno == EACCES ? 0 : (std::printf("errno %s\n", errname(errno).c_str()), 2);
  }, {.as_nobody = true});
  CHECK_MESSAGE(n.exit_code == 0, n.describe());
}

namespace {

// inotify on the markers: every event is something reaching outside the share.
class Watch {
public:
  Watch() : fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)) { REQUIRE(fd_ >= 0); }
  ~Watch() { ::close(fd_); }
  void add(const std::string& path, uint32_t mask, std::string name_prefix = "") {
    int wd = ::inotify_add_watch(fd_, path.c_str(), mask);
    REQUIRE_MESSAGE(wd >= 0, path, ": ", std::strerror(errno));
    paths_[wd] = {path, std::move(name_prefix)};
  }
  // Drains the queue; returns the events (filtered by name prefix where set).
  std::vector<std::string> events() {
    std::vector<std::string> out;
    alignas(struct inotify_event) char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) break;
      for (char* p = buf; p < buf + n;) {
        auto* ev = reinterpret_cast<struct inotify_event*>(p);
        auto& [path, prefix] = paths_[ev->wd];
        std::string name = ev->len ? ev->name : "";
        if (prefix.empty() || name.rfind(prefix, 0) == 0)
          out.push_back(path + (name.empty() ? "" : "/" + name) + " mask=0x" +
                        [&] { char h[16]; std::snprintf(h, sizeof h, "%x", ev->mask); return std::string(h); }());
        p += sizeof(struct inotify_event) + ev->len;
      }
    }
    return out;
  }

private:
  int fd_;
  std::map<int, std::pair<std::string, std::string>> paths_;
};

constexpr uint32_t kAll = IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_OPEN | IN_CREATE | IN_DELETE |
                          IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE;

}  // namespace

TEST_CASE("sharefs symlink swap: a dir swapped for a symlink to / or another container's storage never lets anything outside the share be reached") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.container("c3");
  const std::string prefix = "hx" + std::to_string(::getpid());
  rig.mkdir("c1", "s/d/sub", 0777);
  ::chmod((rig.storage("c1") + "/s/d").c_str(), 0777);
  ::chmod((rig.storage("c1") + "/s").c_str(), 0777);
  for (int i = 0; i < 8; ++i) rig.write("c1", "s/d/f" + std::to_string(i), "inside " + std::to_string(i), 0666);
  rig.write("c1", "s/d/sub/g", "inside sub", 0666);
  rig.write("c1", "outside-secret", "SECRET-C1-OUTSIDE");  // c1's storage, not in the share
  rig.write("c3", "secret-c3", "SECRET-C3");                // another container's storage
  std::string markers = rig.pool().make_temp_dir("markers");  // the host, outside the pool
  {
    int fd = ::open((markers + "/secret-host").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    REQUIRE(::write(fd, "SECRET-HOST", 11) == 11);
    ::close(fd);
  }
  const std::string src = rig.storage("c1") + "/s";
  const std::string c3 = rig.storage("c3");
  // The swap partners: each is exchanged with s/d (and s/d/sub) and back.
  REQUIRE(::symlink("/", (src + "/l-root").c_str()) == 0);
  REQUIRE(::symlink(c3.c_str(), (src + "/l-c3").c_str()) == 0);
  REQUIRE(::symlink("..", (src + "/l-up").c_str()) == 0);  // s/d -> .. is storage/
  REQUIRE(::symlink("../../../../../../../../../../..", (src + "/l-rel-root").c_str()) == 0);
  REQUIRE(::symlink(markers.c_str(), (src + "/d/l-markers").c_str()) == 0);
  REQUIRE(::symlink("../../..", (src + "/d/l-sub-up").c_str()) == 0);  // s/d/sub -> ../../.. is containers/c1
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s/d/f0"));
  std::string jail = rig.pool().make_temp_dir("jail");

  Watch w;
  w.add(markers, kAll);
  w.add(markers + "/secret-host", kAll);
  w.add(c3, kAll);
  w.add(c3 + "/secret-c3", kAll);
  w.add(rig.storage("c1") + "/outside-secret", kAll);
  w.add(rig.storage("c1"), IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM);
  w.add(rig.path() + "/containers/c1", IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM);
  w.add(rig.path(), IN_CREATE | IN_MOVED_TO, prefix);
  w.add("/", IN_CREATE | IN_MOVED_TO, prefix);
  w.add("/tmp", IN_CREATE | IN_MOVED_TO, prefix);

  const auto run_for = std::chrono::seconds(6);
  // What a daemon that followed the swapped link would expose, as paths
  // under the share (each must give ENOENT or inside content).
  std::vector<std::string> probes = {
      "/m/s/d/secret-c3", "/m/s/d/outside-secret", "/m/s/d" + markers + "/secret-host",
      "/m/s/d/sub/secret-c3", "/m/s/d/sub/storage/outside-secret", "/m/s/d/l-markers/secret-host",
      "/m/s/d/sub/c1/storage/outside-secret",
  };
  auto walker = [&, probes](int id) {
    return [&, probes, id]() -> int {
      int escapes = 0;
      long ops = 0, created = 0;
      auto leaked = [&](const std::string& where, const std::string& what) {
        if (what.find("SECRET") != std::string::npos || what == "secret-c3" || what == "outside-secret" ||
            what == "secret-host") {
          ++escapes;
          if (escapes < 20) std::printf("ESCAPE walker %d: %s gave %s\n", id, where.c_str(), what.c_str());
        }
      };
      int held = ::open("/m/s/d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      auto end = Clock::now() + run_for;
      for (long n = 0; Clock::now() < end; ++n) {
        for (auto& p : probes) leaked(p, read_all(p)), ++ops;
        for (auto& dir : {"/m/s/d", "/m/s/d/sub", "/m/s/d/l-markers"})
          for (auto& x : names_in(dir)) leaked(dir, x);
        leaked("f", read_all("/m/s/d/f" + std::to_string(n % 8)));
        if (held >= 0) {
          for (auto rel : {"secret-c3", "outside-secret", "sub/g", "f1"}) {
            int fd = ::openat(held, rel, O_RDONLY | O_CLOEXEC);
            if (fd >= 0) {
              char b[64];
              ssize_t r = ::read(fd, b, sizeof b);
              leaked(std::string("held/") + rel, std::string(b, r > 0 ? static_cast<size_t>(r) : 0));
              ::close(fd);
            }
          }
        }
        // Creations and renames inside (or what the kernel thinks is inside).
        std::string base = "/m/s/d/" + prefix + "-" + std::to_string(id) + "-" + std::to_string(n);
        int fd = ::open((base + ".new").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) {
          ++created;
          if (::write(fd, "w", 1) < 0) {}
          ::close(fd);
          ::rename((base + ".new").c_str(), (base + ".ren").c_str());
          if (n % 2) ::unlink((base + ".ren").c_str());
        }
        if (::mkdir((base + ".dir").c_str(), 0755) == 0) ::rename((base + ".dir").c_str(), (base + ".dir2").c_str());
        std::string sub = "/m/s/d/sub/" + prefix + "-" + std::to_string(id) + "-" + std::to_string(n);
        fd = ::open(sub.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        if (fd >= 0) ::close(fd), ::unlink(sub.c_str());
        ::rename("/m/s/d/f7", "/m/s/d/f7");
      }
      std::printf("walker %d: %ld probes, %ld files made, %d escapes\n", id, ops, created, escapes);
      return escapes ? 1 : 0;
    };
  };
  std::vector<Child> walkers;
  for (int i = 0; i < 4; ++i)
    walkers.push_back(start_in_jail(jail, m->root(), walker(i), /*as_nobody=*/i % 2 == 1,
                                    std::chrono::seconds(60)));

  // The swapper: the owner, in its own storage, exchanges s/d and s/d/sub
  // with the links and back, as fast as it can.
  int sfd = ::open(src.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(sfd >= 0);
  long swaps = 0, failed = 0;
  auto end = Clock::now() + run_for;
  const char* partners[] = {"l-root", "l-c3", "l-up", "l-rel-root"};
  while (Clock::now() < end) {
    for (auto p : partners) {
      for (int back = 0; back < 2; ++back)
        (::renameat2(sfd, "d", sfd, p, RENAME_EXCHANGE) == 0 ? swaps : failed)++;
    }
    // One level down: s/d/sub <-> s/d/l-markers and s/d/l-sub-up.
    for (auto p : {"d/l-markers", "d/l-sub-up"})
      for (int back = 0; back < 2; ++back)
        (::renameat2(sfd, "d/sub", sfd, p, RENAME_EXCHANGE) == 0 ? swaps : failed)++;
  }
  ::close(sfd);
  std::string out;
  bool all_ok = true;
  for (auto& c : walkers) {
    auto e = c.wait();
    out += e.output;
    all_ok = all_ok && e.ok();
    CHECK_MESSAGE(e.ok(), e.describe());
  }
  MESSAGE("swaps: ", swaps, " (", failed, " failed)\n", out);
  CHECK(swaps > 1000);
  CHECK(all_ok);
  auto events = w.events();
  std::string evs;
  for (auto& e : events) evs += "  " + e + "\n";
  CHECK_MESSAGE(events.empty(), "outside the share, something was touched:\n", evs);
  // What an escape made in / or /tmp (named with our prefix) is removed.
  for (auto dir : {"/", "/tmp/"})
    for (auto& n : names_in(dir))
      if (n.rfind(prefix, 0) == 0) run({"rm", "-rf", "--one-file-system", std::string(dir) + n});
  // The markers are intact; nothing with our prefix exists outside s/.
  CHECK(read_all(markers + "/secret-host") == "SECRET-HOST");
  CHECK(read_all(c3 + "/secret-c3") == "SECRET-C3");
  CHECK(names_in(c3) == std::set<std::string>{"secret-c3"});
  CHECK(names_in(markers) == std::set<std::string>{"secret-host"});
  CHECK(names_in(rig.storage("c1")) == std::set<std::string>{"outside-secret", "s"});
}
