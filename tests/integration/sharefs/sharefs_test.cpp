// hoody-sharefs, the built daemon, on a real BTRFS pool: the root listing,
// accept with mv and reject with rmdir, shares.json, what a container sees,
// changes within 100 ms, revoke at once (new opens, open files, mmaps, page
// cache, a cwd), ro<->rw, read-only enforcement, special files, symlinks,
// mount points, nested subvolumes, EXDEV between shares, and the daemon's
// life cycle.  The registry is driven in-process (hoody::sharefs::Registry),
// as hoody-share does.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"
#include "share/registry.hpp"

using namespace hoody::test;
using hoody::sharefs::Mode;
using hoody::sharefs::Offer;
using hoody::sharefs::Registry;
using hoody::sharefs::State;
using Clock = std::chrono::steady_clock;

namespace {

std::string sharefs_exe() {
  const char* e = std::getenv("HOODY_SHAREFS");
  REQUIRE_MESSAGE(e, "HOODY_SHAREFS is not set (meson sets it to the built hoody-sharefs)");
  return e;
}

// A pool with containers c1 (the owner), c2 and c3, their storage subvolumes,
// the registry, and hoody-sharefs mounts for receivers.
struct Pool {
  BtrfsPool btrfs;
  std::string path;
  std::optional<Registry> reg;
  std::string shm;
  std::vector<std::unique_ptr<Daemon>> daemons;

  Pool() : path(btrfs.path()) {
    btrfs.make_dir("containers");
    for (auto c : {"c1", "c2", "c3"}) {
      btrfs.make_dir(std::string("containers/") + c);
      btrfs.make_subvolume(std::string("containers/") + c + "/storage");
    }
    std::string why;
    auto r = Registry::open(path, &why);
    REQUIRE_MESSAGE(r, why);
    reg.emplace(std::move(*r));
    shm = reg->signal().name();
    REQUIRE(reg->add_container("c1", "p", &why));
    REQUIRE(reg->add_container("c2", "p", &why));
    REQUIRE(reg->add_container("c3", "", &why));
  }
  ~Pool() {
    daemons.clear();
    reg.reset();
    hoody::sharefs::ChangeSignal::remove(shm);
  }
  std::string storage(const std::string& c) { return path + "/containers/" + c + "/storage"; }
  // Mounts hoody-sharefs for container c (options after the positionals,
  // as mount.fuse3 passes them; registry= left to its default).
  std::string mount(const std::string& c, const std::string& extra = "") {
    auto mnt = btrfs.make_temp_dir("shares-" + c + std::to_string(daemons.size()));
    std::string o = "container=" + c + (extra.empty() ? "" : "," + extra);
    daemons.push_back(std::make_unique<Daemon>(
        std::vector<std::string>{sharefs_exe(), "-f", path, mnt, "-o", o}, mnt,
        btrfs.dir() + "/sharefs-" + c + std::to_string(daemons.size()) + ".log"));
    return mnt;
  }
  void offer(const std::string& name, const std::string& source, const std::string& to,
             Mode mode = Mode::ro, bool project = false) {
    std::string why;
    Offer o;
    o.from = "c1";
    o.source = source;
    o.mode = mode;
    o.name = name;
    (project ? o.to_project : o.to_container) = to;
    auto s = reg->offer(o, &why);
    REQUIRE_MESSAGE(s, why);
  }
  State state_of(const std::string& c, const std::string& name) {
    auto l = reg->shares_for(c, true);
    REQUIRE(l);
    State st = State::revoked;
    for (auto& r : *l)
      if (r.name == name) st = r.state;
    return st;
  }
};

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path) << data;
}
std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}
int err_of(int rc) { return rc < 0 ? errno : 0; }

// Polls `cond` every half millisecond; returns the milliseconds it took, or -1
// after `limit_ms`.
double wait_ms(const std::function<bool()>& cond, int limit_ms = 10000) {
  auto t0 = Clock::now();
  for (;;) {
    if (cond()) return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (Clock::now() - t0 > std::chrono::milliseconds(limit_ms)) return -1;
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
}

// Propagation times of registry changes to running mounts.  The claim is
// "within 100 ms"; on a loaded CI machine one change can wait for a CPU much
// longer than that, so the claim is checked on the median of a test's changes
// (and each one must arrive within kEach, generous), every figure printed.
constexpr double kClaim = 100, kEach = 2000;
struct Latencies {
  std::vector<double> ms;
  // Records one change that took `t` ms (-1: never, within wait_ms's limit).
  void add(const char* what, double t) {
    MESSAGE(std::string(what), " after ", t, " ms");
    CHECK_MESSAGE(t >= 0, what << ": not seen within the wait");
    CHECK(t < kEach);
    if (t >= 0) ms.push_back(t);
  }
  double median() const {
    std::vector<double> v = ms;
    std::sort(v.begin(), v.end());
    return v.empty() ? -1 : v[v.size() / 2];
  }
  void check_median() const {
    REQUIRE(ms.size() >= 5);
    MESSAGE("median of ", ms.size(), " changes: ", median(), " ms, max ",
            *std::max_element(ms.begin(), ms.end()), " ms");
    CHECK(median() < kClaim);
  }
};

}  // namespace

TEST_CASE("sharefs: the root, accept with mv, reject with rmdir, leave, shares.json, only what is granted") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  ::mkdir((p.storage("c1") + "/other").c_str(), 0755);
  write_file(p.storage("c1") + "/data/f", "hello\n");
  p.offer("ds", "data", "c2");
  p.offer("rs", "other", "c2");
  p.offer("c3only", "other", "c3");
  auto m2 = p.mount("c2");

  // The layout: .pending and .hoody, no accepted share yet.
  std::vector<std::string> names;
  for (auto& e : std::filesystem::directory_iterator(m2)) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{".hoody", ".pending"});
  CHECK(exists(m2 + "/.pending/ds"));
  CHECK(exists(m2 + "/.pending/rs"));
  CHECK_FALSE(exists(m2 + "/.pending/c3only"));  // another container's offer
  CHECK_FALSE(exists(m2 + "/ds"));
  // An offer shows nothing before it is accepted.
  CHECK(std::filesystem::is_empty(m2 + "/.pending/ds"));

  // mv accepts through the registry; the share is served at once.
  REQUIRE(::rename((m2 + "/.pending/ds").c_str(), (m2 + "/ds").c_str()) == 0);
  CHECK(p.state_of("c2", "ds") == State::accepted);
  CHECK(read_file(m2 + "/ds/f") == "hello\n");
  CHECK_FALSE(exists(m2 + "/.pending/ds"));
  // Renaming to another name is not an accept.
  CHECK(err_of(::rename((m2 + "/.pending/rs").c_str(), (m2 + "/zz").c_str())) == EINVAL);
  // rmdir rejects.
  REQUIRE(::rmdir((m2 + "/.pending/rs").c_str()) == 0);
  CHECK(p.state_of("c2", "rs") == State::rejected);
  CHECK_FALSE(exists(m2 + "/.pending/rs"));
  CHECK(err_of(::rmdir((m2 + "/.pending").c_str())) == EPERM);
  CHECK(err_of(::mkdir((m2 + "/new").c_str(), 0755)) == EPERM);

  // shares.json: what c2 receives, with states.
  auto j = nlohmann::json::parse(read_file(m2 + "/.hoody/shares.json"));
  CHECK(j["container"] == "c2");
  bool saw_ds = false, saw_rs = false;
  for (auto& r : j["receives"]) {
    if (r["name"] == "ds") saw_ds = r["state"] == "accepted";
    if (r["name"] == "rs") saw_rs = r["state"] == "rejected";
  }
  CHECK(saw_ds);
  CHECK(saw_rs);
  CHECK(err_of(::open((m2 + "/.hoody/shares.json").c_str(), O_WRONLY)) == EACCES);

  // c3's mount sees only its own offer.
  auto m3 = p.mount("c3");
  CHECK(exists(m3 + "/.pending/c3only"));
  CHECK_FALSE(exists(m3 + "/.pending/ds"));
  CHECK_FALSE(exists(m3 + "/ds"));

  // rmdir NAME leaves an accepted share.
  REQUIRE(::rmdir((m2 + "/ds").c_str()) == 0);
  CHECK(p.state_of("c2", "ds") == State::left);
  CHECK_FALSE(exists(m2 + "/ds"));
  CHECK(exists(p.storage("c1") + "/data/f"));  // the owner's data stays

  // nosuid,nodev are forced, default_permissions too.
  auto mi = read_file("/proc/self/mountinfo");
  auto at = mi.find(" " + m2 + " ");
  REQUIRE(at != std::string::npos);
  auto line = mi.substr(at, mi.find('\n', at) - at);
  CHECK(line.find("nosuid") != std::string::npos);
  CHECK(line.find("nodev") != std::string::npos);
  CHECK(line.find("default_permissions") != std::string::npos);
}

TEST_CASE("sharefs: --status names the container's daemon and the transport in use") {
  require_mount_capabilities();
  Pool p;
  auto m2 = p.mount("c2");
  CHECK(exists(m2 + "/.pending"));
  ExitInfo e = run({sharefs_exe(), "--status", m2}, 10s);
  REQUIRE_MESSAGE(e.ok(), e.describe());
  auto j = nlohmann::json::parse(e.output);
  CHECK(j["program"] == "hoody-sharefs");
  CHECK(j["pid"].get<pid_t>() == p.daemons.back()->pid());
  CHECK(j["mountpoint"] == m2);
  CHECK(j["transport"]["name"] == expected_transport());
  CHECK(j["transport"]["ops"]["LOOKUP"].get<std::uint64_t>() > 0);
}

// c1 offers data/ (f = "before\n") read-write to c2, which accepts it as ds;
// c1's snapshots are served as hoody-up serves them; snapshot s1 is taken,
// then c2 writes "after\n" into f through the share.
struct RestoreRig {
  std::string m2;     // c2's shares
  std::string snaps;  // c1's snapshots
  std::unique_ptr<Daemon> snapfs;

  explicit RestoreRig(Pool& p) {
    const char* exe = std::getenv("HOODY_SNAPFS");
    REQUIRE_MESSAGE(exe, "HOODY_SNAPFS names hoody-snapfs (meson sets it)");
    ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
    write_file(p.storage("c1") + "/data/f", "before\n");
    p.offer("ds", "data", "c2", Mode::rw);
    m2 = p.mount("c2");
    REQUIRE(::rename((m2 + "/.pending/ds").c_str(), (m2 + "/ds").c_str()) == 0);
    snaps = p.btrfs.make_temp_dir("snapshots-c1");
    snapfs = std::make_unique<Daemon>(
        std::vector<std::string>{exe, "-f", "-o", "allow_other", p.path + "/containers/c1", snaps},
        snaps, p.btrfs.dir() + "/snapfs.log");
    REQUIRE(::mkdir((snaps + "/s1").c_str(), 0755) == 0);
    write_file(m2 + "/ds/f", "after\n");
    CHECK(slurp(p.storage("c1") + "/data/f") == "after\n");
  }
  // Restores `name` through the control file; its answer.
  std::string restore(const char* name) const {
    int ctl = ::open((snaps + "/.hoody/restore").c_str(), O_RDWR | O_TRUNC | O_CLOEXEC);
    if (ctl < 0) return std::string("open: ") + std::strerror(errno);
    std::string line = std::string(name) + "\n";
    if (::write(ctl, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
      return std::string("write: ") + std::strerror(errno);
    char result[4096] = {};
    (void)::pread(ctl, result, sizeof result - 1, 0);
    ::close(ctl);
    return std::string(result);
  }
};

TEST_CASE("sharefs: a restore of the owner's storage is served at once; a file open across it fails as after a revoke") {
  require_mount_capabilities();
  Pool p;
  RestoreRig rig(p);
  const std::string& m2 = rig.m2;
  // c2 keeps the file it wrote after the snapshot open.
  int held = ::open((m2 + "/ds/f").c_str(), O_RDWR);
  REQUIRE(held >= 0);

  // c1 restores s1: its storage subvolume is swapped for a clone of s1's.
  std::string result = rig.restore("s1");
  CHECK(result.find("\"ok\":true") != std::string::npos);
  MESSAGE("restore: " << result);
  auto t0 = Clock::now();
  CHECK(slurp(p.storage("c1") + "/data/f") == "before\n");
  // The share shows the restored storage at once: the restore wakes the
  // pool's share daemons (and they look every 200 ms anyway)...
  std::string seen;
  while (Clock::now() - t0 < 2s && (seen = slurp(m2 + "/ds/f")) != "before\n")
    std::this_thread::sleep_for(20ms);
  CHECK(seen == "before\n");
  MESSAGE("restored state shown after "
          << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count() << " ms");
  // ... a file opened before fails (EACCES, as after a revoke) instead of
  // writing into the old tree, whose subvolume the restore deletes ...
  CHECK(err_of(static_cast<int>(::pwrite(held, "lost?", 5, 0))) == EACCES);
  ::close(held);
  // ... and what c2 writes now lands in c1's restored storage.
  write_file(m2 + "/ds/g", "new\n");
  CHECK(slurp(p.storage("c1") + "/data/g") == "new\n");
  CHECK(slurp(m2 + "/ds/f") == "before\n");
}

TEST_CASE("sharefs: a restore and a revoke return only once every running daemon serves the change; a stopped daemon holds them back at most 2 s") {
  require_mount_capabilities();
  const char* share = std::getenv("HOODY_SHARE");
  REQUIRE_MESSAGE(share, "HOODY_SHARE names hoody-share (meson sets it)");
  Pool p;
  RestoreRig rig(p);
  const std::string& m2 = rig.m2;
  pid_t d2 = p.daemons.back()->pid();
  auto since = [](Clock::time_point t0) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  };

  // 1. c2's daemon is stopped (busy, descheduled): the restore waits for it.
  REQUIRE(::kill(d2, SIGSTOP) == 0);
  std::atomic<bool> done{false};
  std::string result;
  auto t0 = Clock::now();
  std::thread t([&] {
    result = rig.restore("s1");
    done = true;
  });
  std::this_thread::sleep_for(400ms);
  CHECK_FALSE_MESSAGE(done.load(), "the restore returned while a share daemon had not followed it");
  REQUIRE(::kill(d2, SIGCONT) == 0);
  t.join();
  MESSAGE("restore returned " << since(t0) << " ms after it started (daemon stopped for 400 ms): " << result);
  CHECK(result.find("\"ok\":true") != std::string::npos);
  // No polling: when the restore has returned, the share serves the
  // restored state, and a write lands in the restored storage.
  CHECK(slurp(m2 + "/ds/f") == "before\n");
  write_file(m2 + "/ds/g", "new\n");
  CHECK(slurp(p.storage("c1") + "/data/g") == "new\n");

  // 2. Stopped for good: the restore goes on after the bound (2 s), and says so.
  REQUIRE(::kill(d2, SIGSTOP) == 0);
  t0 = Clock::now();
  result = rig.restore("s1");
  auto took = since(t0);
  REQUIRE(::kill(d2, SIGCONT) == 0);
  MESSAGE("restore with the daemon stopped: " << took << " ms");
  CHECK(result.find("\"ok\":true") != std::string::npos);
  CHECK(took >= 1500);
  CHECK(took < 5000);
  CHECK(slurp(p.btrfs.dir() + "/snapfs.log").find("did not confirm within 2000 ms") != std::string::npos);
  CHECK(wait_ms([&] { return slurp(m2 + "/ds/f") == "before\n" && !exists(m2 + "/ds/g"); }, 5000) >= 0);

  // 3. hoody-share revoke returns once the share is gone, also for a file
  // held open: no window in which the receiver still reads.  The file is held
  // by a child: a process that shares it would block in the FLUSH of its
  // close (hoody-share's fork and exec) while the daemon is stopped.
  Pipe ready, go;
  Child holder([&] {
    int fd = ::open((m2 + "/ds/f").c_str(), O_RDONLY | O_CLOEXEC);
    char c;
    if (fd < 0 || ::pread(fd, &c, 1, 0) != 1) return 2;
    ready.signal();
    if (!go.wait_signal(30s)) return 3;
    return ::pread(fd, &c, 1, 0) < 0 && errno == EACCES ? 0 : 1;
  });
  REQUIRE(ready.wait_signal());
  REQUIRE(::kill(d2, SIGSTOP) == 0);
  std::atomic<bool> revoked{false};
  ExitInfo rv;
  t0 = Clock::now();
  std::thread r([&] {
    rv = run({share, "--pool", p.path, "revoke", "--from", "c1", "ds"}, 30s);
    revoked = true;
  });
  std::this_thread::sleep_for(400ms);
  CHECK_FALSE_MESSAGE(revoked.load(), "hoody-share revoke returned before the daemon applied it");
  REQUIRE(::kill(d2, SIGCONT) == 0);
  r.join();
  MESSAGE("revoke returned after " << since(t0) << " ms: " << rv.describe());
  CHECK(rv.ok());
  go.signal();
  auto held = holder.wait();
  CHECK_MESSAGE(held.ok(), "a file held open across the revoke, read right after it: " << held.describe()
                                                                                      << " (exit 1: not EACCES)");
  CHECK_FALSE(exists(m2 + "/ds"));
}

namespace {
// F_SETLK (or F_SETLKW) of one byte at `off` on `path`, in a child: 0 when
// granted, the errno otherwise.
int child_lock(const std::string& path, short type, off_t off = 0, bool wait = false) {
  auto r = run_child([&] {
    int fd = ::open(path.c_str(), type == F_WRLCK ? O_RDWR : O_RDONLY);
    if (fd < 0) return 100;
    struct flock l {};
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = off;
    l.l_len = 1;
    return ::fcntl(fd, wait ? F_SETLKW : F_SETLK, &l) == 0 ? 0 : errno;
  });
  return r.exit_code;
}
int child_flock(const std::string& path) {
  return run_child([&] {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return 100;
    return ::flock(fd, LOCK_EX | LOCK_NB) == 0 ? 0 : errno;
  }).exit_code;
}
struct flock one_byte(short type, off_t off = 0) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = off;
  l.l_len = 1;
  return l;
}
// c1's data/ (mode `mode`) shared read-write with c2 (as ds) and c3 (as
// ds3), both accepted: the paths of data/ through c2's and c3's mounts.
std::pair<std::string, std::string> share_with_two(Pool& p, mode_t mode) {
  ::mkdir((p.storage("c1") + "/data").c_str(), mode);
  ::chmod((p.storage("c1") + "/data").c_str(), mode);
  p.offer("ds", "data", "c2", Mode::rw);
  p.offer("ds3", "data", "c3", Mode::rw);
  auto m2 = p.mount("c2");
  auto m3 = p.mount("c3");
  REQUIRE(::rename((m2 + "/.pending/ds").c_str(), (m2 + "/ds").c_str()) == 0);
  REQUIRE(::rename((m3 + "/.pending/ds3").c_str(), (m3 + "/ds3").c_str()) == 0);
  return {m2 + "/ds", m3 + "/ds3"};
}
}  // namespace

TEST_CASE("sharefs: locks are taken on the owner's files: a receiver's lock excludes the other receivers and the owner, as on one filesystem") {
  require_mount_capabilities();
  Pool p;
  auto [d2, d3] = share_with_two(p, 0755);
  write_file(p.storage("c1") + "/data/f", "0123456789");
  const std::string own = p.storage("c1") + "/data/f", in2 = d2 + "/f", in3 = d3 + "/f";

  // The test process holds a write lock on byte 0 through c2's share.
  int fd = ::open(in2.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  struct flock l = one_byte(F_WRLCK);
  REQUIRE(::fcntl(fd, F_SETLK, &l) == 0);
  CHECK(child_lock(in3, F_WRLCK) == EAGAIN);  // another container
  CHECK(child_lock(in3, F_RDLCK) == EAGAIN);
  CHECK(child_lock(own, F_WRLCK) == EAGAIN);  // the owner, on its own storage
  CHECK(child_lock(in2, F_WRLCK) == EAGAIN);  // another process of the same container
  CHECK(child_lock(in3, F_WRLCK, 1) == 0);    // another byte is free
  // F_GETLK through another mount names the conflict.
  {
    int fd3 = ::open(in3.c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd3 >= 0);
    struct flock q = one_byte(F_WRLCK);
    REQUIRE(::fcntl(fd3, F_GETLK, &q) == 0);
    CHECK(q.l_type == F_WRLCK);
    CHECK(q.l_start == 0);
    struct flock q1 = one_byte(F_WRLCK, 5);
    REQUIRE(::fcntl(fd3, F_GETLK, &q1) == 0);
    CHECK(q1.l_type == F_UNLCK);
    ::close(fd3);
  }
  // One process's locks merge and split as POSIX says: unlocking byte 0 of
  // a lock on 0..3 leaves 1..3 locked.
  struct flock wide {};
  wide.l_type = F_WRLCK;
  wide.l_whence = SEEK_SET;
  wide.l_len = 4;
  REQUIRE(::fcntl(fd, F_SETLK, &wide) == 0);
  struct flock u = one_byte(F_UNLCK);
  REQUIRE(::fcntl(fd, F_SETLK, &u) == 0);
  CHECK(child_lock(own, F_WRLCK, 0) == 0);
  CHECK(child_lock(own, F_WRLCK, 2) == EAGAIN);
  // close(2) of any other descriptor of the file drops the process's locks.
  int other = ::open(in2.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(other >= 0);
  ::close(other);
  CHECK(child_lock(own, F_WRLCK, 2) == 0);

  // F_SETLKW waits for the holder (the owner, natively) ...
  int ofd = ::open(own.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(ofd >= 0);
  struct flock ol = one_byte(F_WRLCK, 7);
  REQUIRE(::fcntl(ofd, F_SETLK, &ol) == 0);
  auto t0 = Clock::now();
  std::thread release([&] {
    std::this_thread::sleep_for(300ms);
    struct flock ou = one_byte(F_UNLCK, 7);
    (void)::fcntl(ofd, F_SETLK, &ou);
  });
  CHECK(child_lock(in3, F_WRLCK, 7, true) == 0);
  release.join();
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  MESSAGE("F_SETLKW through c3's share waited " << waited << " ms for the owner's unlock at 300 ms");
  CHECK(waited >= 250);
  CHECK(waited < 2000);
  // ... and a signal interrupts it (EINTR), as natively.
  REQUIRE(::fcntl(ofd, F_SETLK, &ol) == 0);
  auto intr = run_child([&] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    ::sigaction(SIGALRM, &sa, nullptr);  // no SA_RESTART
    int f = ::open(in3.c_str(), O_RDWR);
    if (f < 0) return 100;
    ::alarm(1);
    struct flock w = one_byte(F_WRLCK, 7);
    return ::fcntl(f, F_SETLKW, &w) == 0 ? 0 : errno;
  });
  CHECK_MESSAGE(intr.exit_code == EINTR, intr.describe());
  ::close(ofd);

  // flock(2) too: per open file, across containers and against the owner.
  int ffd = ::open(in2.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(ffd >= 0);
  REQUIRE(::flock(ffd, LOCK_EX | LOCK_NB) == 0);
  CHECK(child_flock(in3) == EWOULDBLOCK);
  CHECK(child_flock(own) == EWOULDBLOCK);
  ::close(ffd);
  CHECK(child_flock(in3) == 0);

  // A revoke drops what c2 holds: the owner's files are free at once.
  REQUIRE(::fcntl(fd, F_SETLK, &l) == 0);
  CHECK(child_lock(own, F_WRLCK) == EAGAIN);
  std::string why;
  REQUIRE(p.reg->revoke("c1", "ds", &why));
  CHECK(p.reg->wait_applied(2s).empty());
  CHECK(child_lock(own, F_WRLCK) == 0);
  ::close(fd);
}

namespace {
// `rows` autocommit INSERTs (writer w) into `path` with busy_timeout, in a
// child; journal mode `jm` for the connection.  0, or 1 with SQLite's error.
Child sqlite_writer(const std::string& path, int w, int rows, const char* jm) {
  return Child([=] {
    sqlite3* db = nullptr;
    if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return 100;
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 30000);
    std::string mode = std::string("PRAGMA journal_mode=") + jm;
    sqlite3_exec(db, mode.c_str(), nullptr, nullptr, nullptr);
    for (int i = 0; i < rows; ++i) {
      std::string sql = "INSERT INTO t VALUES(" + std::to_string(w) + "," + std::to_string(i) +
                        ", randomblob(300))";
      if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) != SQLITE_OK) {
        std::printf("writer %d (%s) row %d: %d %s\n", w, path.c_str(), i,
                    sqlite3_extended_errcode(db), sqlite3_errmsg(db));
        return 1;
      }
    }
    sqlite3_close(db);
    return 0;
  }, ChildOptions{.timeout = 120s});
}
std::string sqlite_one(const std::string& path, const char* sql) {
  sqlite3* db = nullptr;
  std::string out;
  if (sqlite3_open(path.c_str(), &db) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(db, sql, -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
  }
  sqlite3_close(db);
  return out;
}
}  // namespace

TEST_CASE("sharefs: SQLite in rollback mode, written at once by the owner and two receivers: every row, no corruption, also in a database made again under the same name") {
  require_mount_capabilities();
  Pool p;
  auto [d2, d3] = share_with_two(p, 0777);
  const std::string own = p.storage("c1") + "/data/app.db";
  const std::vector<std::string> paths = {own, d2 + "/app.db", d3 + "/app.db"};
  constexpr int kRows = 150;
  // Round 2 deletes the database and makes it again under the same name, as
  // the owner: the receivers' kernels still have the old file's entry.
  const char* modes[] = {"DELETE", "DELETE", "TRUNCATE", "PERSIST"};
  for (int round = 0; round < 4; ++round) {
    CAPTURE(round);
    CAPTURE(modes[round]);
    if (round == 0 || round == 1) {
      for (const char* sfx : {"", "-journal"}) ::unlink((own + sfx).c_str());
      sqlite3* db = nullptr;
      REQUIRE(sqlite3_open(own.c_str(), &db) == SQLITE_OK);
      REQUIRE(sqlite3_exec(db, "CREATE TABLE t(w INTEGER, i INTEGER, v BLOB)", nullptr, nullptr, nullptr) ==
              SQLITE_OK);
      sqlite3_close(db);
    }
    std::vector<Child> writers;
    for (int w = 0; w < 3; ++w) writers.push_back(sqlite_writer(paths[w], w + 3 * round, kRows, modes[round]));
    for (auto& c : writers) {
      auto r = c.wait();
      CHECK_MESSAGE(r.ok(), r.describe());
    }
    int expected = kRows * 3 * (round >= 1 ? round : 1);
    CHECK(sqlite_one(own, "PRAGMA integrity_check") == "ok");
    CHECK(sqlite_one(own, "SELECT count(*) FROM t") == std::to_string(expected));
    CHECK(sqlite_one(own, "SELECT count(DISTINCT w * 1000 + i) FROM t") == std::to_string(expected));
  }
}

TEST_CASE("sharefs: changes reach a running mount within 100 ms; a project share reaches a member that joins later") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  write_file(p.storage("c1") + "/data/f", "x");
  auto m2 = p.mount("c2");
  auto m3 = p.mount("c3");

  Latencies lat;
  // An offer appears under .pending (several: the median is the claim).
  for (int i = 0; i < 5; ++i) {
    std::string name = "o" + std::to_string(i);
    p.offer(name, "data", "c2");
    lat.add("offer visible", wait_ms([&] { return exists(m2 + "/.pending/" + name); }, 5000));
  }
  p.offer("late", "data", "c2");
  lat.add("offer visible", wait_ms([&] { return exists(m2 + "/.pending/late"); }, 5000));

  // Accepted through the CLI's path (the registry): served without a mv.
  std::string why;
  REQUIRE(p.reg->accept("c2", "late", &why));
  lat.add("accept visible", wait_ms([&] { return exists(m2 + "/late/f"); }, 5000));

  // A project-wide share, then c3 joins the project: it gets the offer.
  p.offer("proj", "data", "p", Mode::ro, true);
  CHECK(wait_ms([&] { return exists(m2 + "/.pending/proj"); }, 5000) >= 0);
  CHECK_FALSE(exists(m3 + "/.pending/proj"));
  REQUIRE(p.reg->add_container("c3", "p", &why));
  lat.add("join visible", wait_ms([&] { return exists(m3 + "/.pending/proj"); }, 5000));

  // Revoke: gone from the listing and for an open file within 100 ms.
  int fd = ::open((m2 + "/late/f").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  char c;
  REQUIRE(::pread(fd, &c, 1, 0) == 1);
  REQUIRE(p.reg->revoke("c1", "late", &why));
  lat.add("revoke effective for an open file",
          wait_ms([&] { return ::pread(fd, &c, 1, 0) < 0 && errno == EACCES; }, 5000));
  lat.add("revoke gone from the listing", wait_ms([&] { return !exists(m2 + "/late"); }, 5000));
  lat.check_median();
  ::close(fd);
}

TEST_CASE("sharefs: a lost change signal costs at most the watcher's bounded wait, never a change") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  auto m2 = p.mount("c2");
  // The shared-memory object is deleted (a reboot of /dev/shm, a careless
  // admin): the daemon waits on its old mapping, writers publish to a new one.
  hoody::sharefs::ChangeSignal::remove(p.shm);
  std::string why;
  auto other = Registry::open(p.path, &why);
  REQUIRE_MESSAGE(other, why);
  Offer o;
  o.from = "c1";
  o.source = "data";
  o.to_container = "c2";
  o.name = "lost";
  REQUIRE_MESSAGE(other->offer(o, &why), why);
  double ms = wait_ms([&] { return exists(m2 + "/.pending/lost"); }, 5000);
  MESSAGE("offer seen without a signal after ", ms, " ms (the watcher waits 200 ms at most)");
  CHECK(ms >= 0);
  CHECK(ms < kEach);  // (seen, without a signal; a loaded machine may add to the 200 ms)
  hoody::sharefs::ChangeSignal::remove(other->signal().name());
}

TEST_CASE("sharefs: revoke at once: new opens, open files, mmaps, page-cached data, a cwd inside") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  ::mkdir((p.storage("c1") + "/data/sub").c_str(), 0755);
  std::string big(1 << 20, 'a');
  write_file(p.storage("c1") + "/data/f", big);
  p.offer("ds", "data", "c2", Mode::rw);
  auto m2 = p.mount("c2");
  REQUIRE(::rename((m2 + "/.pending/ds").c_str(), (m2 + "/ds").c_str()) == 0);

  // Everything cached and held before the revoke.
  CHECK(read_file(m2 + "/ds/f") == big);  // in the page cache (keep_cache)
  int rfd = ::open((m2 + "/ds/f").c_str(), O_RDONLY);
  int wfd = ::open((m2 + "/ds/sub/w").c_str(), O_RDWR | O_CREAT, 0644);
  REQUIRE(rfd >= 0);
  REQUIRE(wfd >= 0);
  REQUIRE(::write(wfd, "abc", 3) == 3);
  void* map = ::mmap(nullptr, 4096, PROT_READ, MAP_SHARED, rfd, 0);
  REQUIRE(map != MAP_FAILED);
  CHECK(static_cast<char*>(map)[0] == 'a');
  Pipe ready, revoked;
  // A process whose cwd is inside the share.
  Child cwd_child([&]() -> int {
    if (::chdir((m2 + "/ds/sub").c_str()) != 0) return 10;
    ready.signal();
    if (!revoked.wait_signal(std::chrono::seconds(10))) return 11;
    struct stat st;
    int e1 = ::stat(".", &st) < 0 ? errno : 0;
    int e2 = ::open("w", O_RDONLY) < 0 ? errno : 0;
    int e3 = ::open("new", O_RDWR | O_CREAT, 0644) < 0 ? errno : 0;
    std::printf("cwd: stat=%s open=%s create=%s\n", std::strerror(e1), std::strerror(e2), std::strerror(e3));
    return (e1 == ESTALE || e1 == EACCES) && (e2 == ESTALE || e2 == EACCES || e2 == ENOENT) &&
                   (e3 == ESTALE || e3 == EACCES || e3 == ENOENT)
               ? 0
               : 1;
  });
  REQUIRE(ready.wait_signal(std::chrono::seconds(10)));

  std::string why;
  REQUIRE(p.reg->revoke("c1", "ds", &why));
  REQUIRE(wait_ms([&] { return !exists(m2 + "/ds"); }) >= 0);
  revoked.signal();

  // New opens.
  CHECK(::open((m2 + "/ds/f").c_str(), O_RDONLY) < 0);
  // Open files: no read, no write, no fstat of the old file.
  char buf[16];
  CHECK(err_of(static_cast<int>(::pread(rfd, buf, sizeof buf, 0))) == EACCES);
  CHECK(err_of(static_cast<int>(::pwrite(wfd, "x", 1, 0))) == EACCES);
  CHECK(err_of(::fsync(wfd)) != 0);
  // Page-cached data was dropped: a fresh read of the cached file fails too.
  CHECK(err_of(static_cast<int>(::pread(rfd, buf, sizeof buf, 4096 * 10))) == EACCES);
  // The mapping: touching it faults and the read is refused (SIGBUS).
  auto touched = run_child([&]() -> int {
    volatile char v = static_cast<char*>(map)[0];
    (void)v;
    return 0;
  });
  CHECK_MESSAGE(touched.signal == SIGBUS, touched.describe());
  auto cwd = cwd_child.wait();
  CHECK_MESSAGE(cwd.exit_code == 0, cwd.describe());
  ::munmap(map, 4096);
  ::close(rfd);
  ::close(wfd);
  // The owner's data is untouched and nothing was written after the revoke.
  CHECK(read_file(p.storage("c1") + "/data/sub/w") == "abc");
  // The daemon keeps no fd into the owner's storage.
  auto d = p.daemons[0]->pid();
  int into = 0;
  for (auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(d) + "/fd")) {
    std::error_code ec;
    auto t = std::filesystem::read_symlink(e.path(), ec).string();
    if (t.rfind(p.storage("c1") + "/data", 0) == 0) ++into;
  }
  CHECK(into == 0);
}

TEST_CASE("sharefs: 10 rounds of accept and revoke under readers, writers and walkers: no crash, no fd left") {
  require_mount_capabilities();
  Pool p;
  std::string d = p.storage("c1") + "/data";
  ::mkdir(d.c_str(), 0755);
  for (int i = 0; i < 20; ++i) write_file(d + "/f" + std::to_string(i), std::string(65536, 'x'));
  auto m = p.mount("c2");
  pid_t daemon = p.daemons[0]->pid();
  // The daemon's fds, without the FUSE loop's own (its worker threads come
  // with a /dev/fuse clone and a splice pipe each, as load needs them) and
  // the registry's; and how many point into the shared directory.
  int into = 0;
  auto fds = [&] {
    int n = 0;
    into = 0;
    for (auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(daemon) + "/fd")) {
      std::error_code ec;
      auto t = std::filesystem::read_symlink(e.path(), ec).string();
      if (t.rfind("pipe:", 0) == 0 || t == "/dev/fuse") continue;
      // SQLite opens shares.db-wal and -shm when it first needs them.
      if (t.find("/shares.db") != std::string::npos) continue;
      if (t.rfind(d, 0) == 0) ++into;
      ++n;
    }
    return n;
  };
  int before = fds();
  std::string why;
  for (int round = 0; round < 10; ++round) {
    p.offer("ld", "data", "c2", Mode::rw);
    REQUIRE(p.reg->accept("c2", "ld", &why));
    REQUIRE(wait_ms([&] { return exists(m + "/ld/f0"); }) >= 0);
    std::vector<std::unique_ptr<Child>> kids;
    for (int k = 0; k < 4; ++k)
      kids.push_back(std::make_unique<Child>([&, k]() -> int {
        char buf[4096];
        std::string base = m + "/ld/";
        for (int i = 0;; ++i) {
          std::string f = base + "f" + std::to_string((i + k) % 20);
          int fd = ::open(f.c_str(), k % 2 ? O_RDWR : O_RDONLY);
          if (fd < 0) return 0;  // revoked: done
          bool fail = false;
          for (int j = 0; j < 16 && !fail; ++j) {
            if (::pread(fd, buf, sizeof buf, j * 4096) < 0) fail = true;
            if (k % 2 && ::pwrite(fd, buf, 16, j * 4096) < 0) fail = true;
          }
          ::close(fd);
          if (k == 3) {
            std::error_code ec;
            for (auto it = std::filesystem::directory_iterator(base, ec);
                 !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
            }
            if (ec) return 0;
          }
          if (fail) return 0;
        }
      }));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    REQUIRE(p.reg->revoke("c1", "ld", &why));
    for (auto& kid : kids) {
      auto r = kid->wait();
      CHECK_MESSAGE(r.exit_code == 0, r.describe());
    }
  }
  CHECK(::kill(daemon, 0) == 0);
  // RELEASE reaches the daemon after the closing process is gone: let it.
  int after = 0;
  wait_ms([&] { return (after = fds()) <= before; }, 10000);
  if (after > before) {  // (what is left, to tell a leak from a late RELEASE)
    std::string what;
    for (auto& e : std::filesystem::directory_iterator("/proc/" + std::to_string(daemon) + "/fd")) {
      std::error_code ec;
      what += e.path().filename().string() + " -> " + std::filesystem::read_symlink(e.path(), ec).string() + "\n";
    }
    MESSAGE(what);
  }
  CHECK(after <= before);
  CHECK(into == 0);
}

TEST_CASE("sharefs: ro <-> rw changes apply at once, also to files opened before") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  write_file(p.storage("c1") + "/data/f", "0123456789");
  p.offer("ds", "data", "c2", Mode::rw);
  auto m2 = p.mount("c2");
  REQUIRE(::rename((m2 + "/.pending/ds").c_str(), (m2 + "/ds").c_str()) == 0);
  int fd = ::open((m2 + "/ds/f").c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, "A", 1, 0) == 1);

  std::string why;
  REQUIRE(p.reg->set_mode("c1", "ds", Mode::ro, &why));
  // Polled with a write that changes nothing (the byte already there): one
  // that lands before the change is applied must not alter the file.
  Latencies lat;  // (two changes: each is bounded by kEach; the 100 ms median is the test above's)
  lat.add("rw->ro effective for an open file",
          wait_ms([&] { return ::pwrite(fd, "1", 1, 1) < 0 && errno == EROFS; }, 5000));
  CHECK(err_of(::open((m2 + "/ds/f").c_str(), O_RDWR)) == EROFS);
  CHECK(err_of(::open((m2 + "/ds/new").c_str(), O_RDWR | O_CREAT, 0644)) == EROFS);
  CHECK(err_of(::ftruncate(fd, 0)) == EROFS);
  char c;
  CHECK(::pread(fd, &c, 1, 0) == 1);  // reading goes on
  CHECK(read_file(p.storage("c1") + "/data/f") == "A123456789");

  REQUIRE(p.reg->set_mode("c1", "ds", Mode::rw, &why));
  lat.add("ro->rw effective for an open file", wait_ms([&] { return ::pwrite(fd, "C", 1, 2) == 1; }, 5000));
  CHECK(read_file(p.storage("c1") + "/data/f") == "A1C3456789");
  ::close(fd);
}

TEST_CASE("sharefs: a read-only share refuses every change with EROFS") {
  require_mount_capabilities();
  Pool p;
  std::string d = p.storage("c1") + "/data";
  ::mkdir(d.c_str(), 0755);
  ::mkdir((d + "/dir").c_str(), 0755);
  write_file(d + "/f", "data");
  REQUIRE(::setxattr((d + "/f").c_str(), "user.k", "v", 1, 0) == 0);
  p.offer("ro", "data", "c2");
  ::mkdir((p.storage("c1") + "/w").c_str(), 0755);
  write_file(p.storage("c1") + "/w/g", "g");
  p.offer("rw", "w", "c2", Mode::rw);
  auto m = p.mount("c2");
  REQUIRE(::rename((m + "/.pending/ro").c_str(), (m + "/ro").c_str()) == 0);
  REQUIRE(::rename((m + "/.pending/rw").c_str(), (m + "/rw").c_str()) == 0);
  std::string r = m + "/ro";
  struct timespec ts[2] = {{0, 0}, {0, 0}};
  CHECK(err_of(::open((r + "/f").c_str(), O_WRONLY)) == EROFS);
  CHECK(err_of(::open((r + "/f").c_str(), O_RDONLY | O_TRUNC)) == EROFS);
  CHECK(err_of(::truncate((r + "/f").c_str(), 0)) == EROFS);
  CHECK(err_of(::open((r + "/n").c_str(), O_WRONLY | O_CREAT, 0644)) == EROFS);
  CHECK(err_of(::mkdir((r + "/n").c_str(), 0755)) == EROFS);
  CHECK(err_of(::mknod((r + "/n").c_str(), S_IFIFO | 0644, 0)) == EROFS);
  CHECK(err_of(::unlink((r + "/f").c_str())) == EROFS);
  CHECK(err_of(::rmdir((r + "/dir").c_str())) == EROFS);
  CHECK(err_of(::rename((r + "/f").c_str(), (r + "/f2").c_str())) == EROFS);
  CHECK(err_of(::rename((r + "/f").c_str(), (m + "/rw/f").c_str())) == EROFS);   // out
  CHECK(err_of(::rename((m + "/rw/g").c_str(), (r + "/g").c_str())) == EROFS);   // in
  CHECK(err_of(::link((r + "/f").c_str(), (r + "/l").c_str())) == EROFS);
  CHECK(err_of(::symlink("f", (r + "/s").c_str())) == EROFS);
  CHECK(err_of(::chmod((r + "/f").c_str(), 0600)) == EROFS);
  CHECK(err_of(::chown((r + "/f").c_str(), 1, 1)) == EROFS);
  CHECK(err_of(::utimensat(AT_FDCWD, (r + "/f").c_str(), ts, 0)) == EROFS);
  CHECK(err_of(::setxattr((r + "/f").c_str(), "user.k", "w", 1, 0)) == EROFS);
  CHECK(err_of(::removexattr((r + "/f").c_str(), "user.k")) == EROFS);
  CHECK(err_of(::open(r.c_str(), O_TMPFILE | O_RDWR, 0600)) == EROFS);
  CHECK(err_of(::open(m.c_str(), O_TMPFILE | O_RDWR, 0600)) == EPERM);
  // A read-only open cannot map shared-writable.
  int fd = ::open((r + "/f").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  CHECK(::mmap(nullptr, 4, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) == MAP_FAILED);
  // copy_file_range into it: the target cannot be opened for writing; from it works.
  int out = ::open((m + "/rw/copy").c_str(), O_WRONLY | O_CREAT, 0644);
  REQUIRE(out >= 0);
  CHECK(::copy_file_range(fd, nullptr, out, nullptr, 4, 0) == 4);
  ::close(out);
  ::close(fd);
  CHECK(read_file(d + "/f") == "data");
  char v[4];
  CHECK(::getxattr((r + "/f").c_str(), "user.k", v, sizeof v) == 1);
}

TEST_CASE("sharefs: special files never open, mknod refused, symlinks verbatim, mount points hidden, nested subvolumes, EXDEV, owners as they are") {
  require_mount_capabilities();
  Pool p;
  std::string d = p.storage("c1") + "/data";
  ::mkdir(d.c_str(), 0755);
  REQUIRE(::mkfifo((d + "/fifo").c_str(), 0666) == 0);
  REQUIRE(::mknod((d + "/null").c_str(), S_IFCHR | 0666, makedev(1, 3)) == 0);
  {
    int s = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::string sp = d + "/sock";
    std::strncpy(a.sun_path, sp.c_str(), sizeof a.sun_path - 1);
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::close(s);
  }
  REQUIRE(::symlink("/etc/passwd", (d + "/abs").c_str()) == 0);
  REQUIRE(::symlink("../../../../../..", (d + "/up").c_str()) == 0);
  write_file(d + "/owned", "o");
  REQUIRE(::chown((d + "/owned").c_str(), 1234, 5678) == 0);
  p.btrfs.make_subvolume("containers/c1/storage/data/nested");
  write_file(d + "/nested/in", "nested");
  ::mkdir((d + "/mnt").c_str(), 0755);
  REQUIRE(::mount("tmpfs", (d + "/mnt").c_str(), "tmpfs", 0, "size=1m") == 0);
  write_file(d + "/mnt/secret", "s");
  write_file(d + "/bound", "mine");
  write_file(p.storage("c3") + "/theirs", "c3's");
  REQUIRE(::mount((p.storage("c3") + "/theirs").c_str(), (d + "/bound").c_str(), nullptr, MS_BIND, nullptr) == 0);
  ::mkdir((p.storage("c1") + "/w1").c_str(), 0755);
  ::mkdir((p.storage("c1") + "/w2").c_str(), 0755);
  write_file(p.storage("c1") + "/w1/a", "a");
  p.offer("ds", "data", "c2", Mode::rw);
  p.offer("w1", "w1", "c2", Mode::rw);
  p.offer("w2", "w2", "c2", Mode::rw);
  auto m = p.mount("c2");
  for (auto n : {"ds", "w1", "w2"})
    REQUIRE(::rename((m + "/.pending/" + n).c_str(), (m + "/" + n).c_str()) == 0);
  std::string s = m + "/ds";

  // Devices, FIFOs and sockets: empty regular files of mode 0000 that never open.
  for (auto n : {"fifo", "null", "sock"}) {
    struct stat st;
    REQUIRE(::lstat((s + "/" + n).c_str(), &st) == 0);
    CHECK_MESSAGE(S_ISREG(st.st_mode), n);
    CHECK((st.st_mode & 07777) == 0);
    CHECK(err_of(::open((s + "/" + n).c_str(), O_RDONLY | O_NONBLOCK)) == EACCES);
    CHECK(err_of(::open((s + "/" + n).c_str(), O_WRONLY | O_NONBLOCK)) == EACCES);
  }
  CHECK(err_of(::mkfifo((s + "/f2").c_str(), 0644)) == EPERM);
  CHECK(err_of(::mknod((s + "/d2").c_str(), S_IFCHR | 0644, makedev(1, 3))) == EPERM);
  {
    int sk = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::string sp = s + "/s2";
    std::strncpy(a.sun_path, sp.c_str(), sizeof a.sun_path - 1);
    CHECK(err_of(::bind(sk, reinterpret_cast<sockaddr*>(&a), sizeof a)) == EPERM);
    ::close(sk);
  }
  // Symlinks are returned verbatim (the reader's kernel resolves them).
  char t[256] = {};
  REQUIRE(::readlink((s + "/abs").c_str(), t, sizeof t - 1) > 0);
  CHECK(std::string(t) == "/etc/passwd");
  std::memset(t, 0, sizeof t);
  REQUIRE(::readlink((s + "/up").c_str(), t, sizeof t - 1) > 0);
  CHECK(std::string(t) == "../../../../../..");
  // Owners as they are.
  struct stat st;
  REQUIRE(::stat((s + "/owned").c_str(), &st) == 0);
  CHECK(st.st_uid == 1234u);
  CHECK(st.st_gid == 5678u);
  // A nested subvolume is part of the share; a mount point is not crossed.
  CHECK(read_file(s + "/nested/in") == "nested");
  CHECK(err_of(::stat((s + "/mnt/secret").c_str(), &st)) == ENOENT);
  CHECK(err_of(::stat((s + "/mnt").c_str(), &st)) == ENOENT);
  CHECK(err_of(::stat((s + "/bound").c_str(), &st)) == ENOENT);  // a file bind-mounted there
  // Renames and links between two shares: EXDEV.
  CHECK(err_of(::rename((m + "/w1/a").c_str(), (m + "/w2/a").c_str())) == EXDEV);
  CHECK(err_of(::link((m + "/w1/a").c_str(), (m + "/w2/a").c_str())) == EXDEV);
  CHECK(err_of(::rename((m + "/w1/a").c_str(), (m + "/a").c_str())) == EXDEV);
  // Within one share both work.
  CHECK(::rename((m + "/w1/a").c_str(), (m + "/w1/b").c_str()) == 0);
  CHECK(::link((m + "/w1/b").c_str(), (m + "/w1/c").c_str()) == 0);
  ::umount2((d + "/mnt").c_str(), MNT_DETACH);
  ::umount2((d + "/bound").c_str(), MNT_DETACH);
}

TEST_CASE("sharefs: a source swapped for a symlink before it is served is not followed") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  p.offer("ds", "data", "c2");
  // The owner swaps the offered directory for a symlink to / and to c3's storage.
  for (std::string target : {std::string("/"), p.storage("c3")}) {
    write_file(p.storage("c3") + "/secret", "c3");
    std::filesystem::remove_all(p.storage("c1") + "/data");
    REQUIRE(::symlink(target.c_str(), (p.storage("c1") + "/data").c_str()) == 0);
    auto m = p.mount("c2");
    if (exists(m + "/.pending/ds")) {
      std::string why;
      REQUIRE(p.reg->accept("c2", "ds", &why));
    }
    // Never served: nothing of / or c3 is reachable.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    CHECK_FALSE(exists(m + "/ds"));
    CHECK_FALSE(exists(m + "/ds/etc"));
    CHECK_FALSE(exists(m + "/ds/secret"));
    CHECK(p.daemons.back()->log().find("not served") != std::string::npos);
    std::filesystem::remove(p.storage("c1") + "/data");
  }
}

TEST_CASE("sharefs: a create over a name that became a symlink does not follow it") {
  require_mount_capabilities();
  Pool p;
  std::string d = p.storage("c1") + "/data";
  ::mkdir(d.c_str(), 0755);
  p.offer("ds", "data", "c2", Mode::rw);
  auto m = p.mount("c2");
  REQUIRE(::rename((m + "/.pending/ds").c_str(), (m + "/ds").c_str()) == 0);
  // The kernel caches "x" as missing; the owner then makes it a symlink to
  // c3's storage; the receiver's O_CREAT reaches the daemon as a CREATE.
  struct stat st;
  REQUIRE(::stat((m + "/ds/x").c_str(), &st) < 0);
  std::string outside = p.storage("c3") + "/planted";
  REQUIRE(::symlink(outside.c_str(), (d + "/x").c_str()) == 0);
  int fd = ::open((m + "/ds/x").c_str(), O_WRONLY | O_CREAT, 0644);
  int e = fd < 0 ? errno : 0;
  if (fd >= 0) ::close(fd);
  CHECK_FALSE(exists(outside));
  CHECK_MESSAGE((e == ELOOP || e == EEXIST), "open gave ", std::strerror(e));
}

// As fstab, mount.fuse3, hoody-up and systemd start it: without -f, so the
// daemon forks (fuse_daemonize).  A SQLite connection opened before the fork
// and used after it lost the child's view of the registry: accepts by mv were
// answered but never committed, and a revoke never reached the mount.
TEST_CASE("sharefs: a daemonized hoody-sharefs commits accepts and follows a revoke") {
  require_mount_capabilities();
  Pool p;
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  write_file(p.storage("c1") + "/data/f", "hello\n");
  // As the CLI does: every change through a connection of its own that is
  // closed again, so no connection of this process keeps the registry's
  // -shm alive while the daemon runs.
  p.reg.reset();
  auto registry = [&] {
    std::string why;
    auto r = Registry::open(p.path, &why);
    REQUIRE_MESSAGE(r, why);
    return std::move(*r);
  };
  auto state_of = [&](const std::string& name) {
    auto reg = registry();
    auto l = reg.shares_for("c2", true);
    REQUIRE(l);
    State st = State::revoked;
    for (auto& r : *l)
      if (r.name == name) st = r.state;
    return st;
  };
  auto mnt = p.btrfs.make_temp_dir("bg");
  auto id = register_resource(Resource::fuse_mount, mnt);
  ExitInfo start = run({sharefs_exe(), p.path, mnt, "-o", "container=c2"}, std::chrono::seconds(20));
  REQUIRE_MESSAGE(start.ok(), start.describe());
  struct Unmount {
    std::string m;
    std::uint64_t id;
    ~Unmount() {
      run({"fusermount3", "-u", m});
      release(id);
    }
  } unmount{mnt, id};
  REQUIRE(is_mounted(mnt, "fuse.hoody-sharefs"));

  // An offer made after the fork reaches the mount.
  {
    std::string why;
    Offer o;
    o.from = "c1";
    o.source = "data";
    o.mode = Mode::rw;
    o.name = "ds";
    o.to_container = "c2";
    auto reg = registry();
    REQUIRE_MESSAGE(reg.offer(o, &why), why);
  }
  CHECK(wait_ms([&] { return exists(mnt + "/.pending/ds"); }) >= 0);
  // mv accepts, and the registry says so to every other connection.
  REQUIRE(::rename((mnt + "/.pending/ds").c_str(), (mnt + "/ds").c_str()) == 0);
  CHECK(state_of("ds") == State::accepted);
  CHECK(read_file(mnt + "/ds/f") == "hello\n");

  // A revoke by another process's connection reaches a file held open.
  int fd = ::open((mnt + "/ds/f").c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  {
    std::string why;
    auto reg = registry();
    REQUIRE_MESSAGE(reg.revoke("c1", "ds", &why), why);
  }
  char c;
  CHECK(wait_ms([&] { return ::pread(fd, &c, 1, 0) < 0; }) >= 0);
  ::close(fd);
  CHECK(wait_ms([&] { return !exists(mnt + "/ds"); }) >= 0);
}

TEST_CASE("sharefs: the daemon's life cycle: usage errors, an unknown container, SIGTERM") {
  require_mount_capabilities();
  Pool p;
  auto mnt = p.btrfs.make_temp_dir("lc");
  auto no_container = run({sharefs_exe(), "-f", p.path, mnt});
  CHECK(no_container.exit_code == 2);
  CHECK(no_container.output.find("container") != std::string::npos);
  auto unknown = run({sharefs_exe(), "-f", p.path, mnt, "-o", "container=zz"});
  CHECK(unknown.exit_code == 1);
  CHECK(unknown.output.find("no such container zz") != std::string::npos);
  CHECK(std::count(unknown.output.begin(), unknown.output.end(), '\n') == 1);
  // -o suid,dev (mount.fuse3 adds them as root) cannot undo nosuid,nodev.
  {
    auto s = p.mount("c2", "suid,dev");
    struct statvfs sv;
    REQUIRE(::statvfs(s.c_str(), &sv) == 0);
    CHECK((sv.f_flag & ST_NOSUID) != 0);
    CHECK((sv.f_flag & ST_NODEV) != 0);
    CHECK(p.daemons.back()->terminate(SIGTERM) == "exit 0");
  }
  auto nopool = run({sharefs_exe(), "-f", p.path + "/nope", mnt, "-o", "container=c2"});
  CHECK(nopool.exit_code == 1);

  auto m = p.mount("c2");
  CHECK(is_mounted(m));
  auto how = p.daemons.back()->terminate(SIGTERM);
  CHECK(how == "exit 0");
  CHECK_FALSE(is_mounted(m));
}

// A listing carries every entry's attributes, on every chunk of it
// (readdirplus, not READDIRPLUS_AUTO), and is never served from the
// kernel's cache: a walk that stats what it lists (find -printf, du, ls -l)
// then sends no LOOKUP per name.  Seen from outside: after a listing of
// 3000 files, the owner renames them all; until entry_timeout the stats of
// the old names are answered by the kernel from the listing's entries (a
// LOOKUP would find nothing), and a second listing shows the new names.
// With -o noreaddirplus (plain listings) every stat is a LOOKUP: ENOENT.
TEST_CASE("sharefs: a listing gives every entry's attributes, so stats after it need no lookup") {
  require_mount_capabilities();
  Pool p;
  constexpr int kFiles = 3000;  // ~500 KiB of readdirplus entries: many chunks
  const std::string dir = p.storage("c1") + "/data/big";
  ::mkdir((p.storage("c1") + "/data").c_str(), 0755);
  ::mkdir(dir.c_str(), 0755);
  auto name = [](char c, int i) { return std::string(1, c) + "-a-longish-file-name-" + std::to_string(i); };
  for (int i = 0; i < kFiles; ++i) {
    int fd = ::open((dir + "/" + name('f', i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  p.offer("ds", "data", "c2", Mode::ro);
  auto listing = [](const std::string& d) {
    std::vector<std::string> out;
    DIR* dp = ::opendir(d.c_str());
    REQUIRE(dp);
    while (auto* e = ::readdir(dp))
      if (e->d_name[0] != '.') out.emplace_back(e->d_name);
    ::closedir(dp);
    std::sort(out.begin(), out.end());
    return out;
  };
  auto rename_all = [&](char from, char to) {
    for (int i = 0; i < kFiles; ++i)
      REQUIRE(::rename((dir + "/" + name(from, i)).c_str(), (dir + "/" + name(to, i)).c_str()) == 0);
  };
  auto stats_of = [&](const std::string& d, char c) {
    int ok = 0;
    struct stat st;
    for (int i = 0; i < kFiles; ++i) ok += ::lstat((d + "/" + name(c, i)).c_str(), &st) == 0;
    return ok;
  };
  // Timeouts far above the test's run time: what the kernel holds is
  // exactly what the listings gave it.
  const std::string timeouts = "entry_timeout=600,attr_timeout=600";
  {
    auto m2 = p.mount("c2", timeouts);
    REQUIRE(::rename((m2 + "/.pending/ds").c_str(), (m2 + "/ds").c_str()) == 0);
    const std::string big = m2 + "/ds/big";
    REQUIRE(listing(big).size() == kFiles);
    rename_all('f', 'g');
    CHECK_MESSAGE(stats_of(big, 'f') == kFiles, "stats of listed names answered without a LOOKUP");
    // Not from a cached listing: the owner's renames show.
    auto again = listing(big);
    REQUIRE(again.size() == kFiles);
    CHECK(std::count_if(again.begin(), again.end(), [](auto& n) { return n[0] == 'g'; }) == kFiles);
    CHECK(stats_of(big, 'g') == kFiles);
  }
  {
    // Plain listings: each stat is a LOOKUP, which sees the rename.
    auto m2 = p.mount("c2", timeouts + ",noreaddirplus");
    const std::string big = m2 + "/ds/big";
    REQUIRE(listing(big).size() == kFiles);
    rename_all('g', 'h');
    CHECK(stats_of(big, 'g') == 0);
    CHECK(stats_of(big, 'h') == kFiles);
  }
}
