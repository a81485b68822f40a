// Exact POSIX lock semantics everywhere the SQLite scheduler does not apply
// (DESIGN.md: "every byte range that is not an SQLite lock byte of an SQLite
// file keeps exact POSIX semantics"), through a hoody-dbfs mount, probed from
// separate processes: pidfile-style try-locks fail at once, F_GETLK names the
// holder, a SIGKILLed F_SETLKW waiter is reaped promptly and leaves nothing in
// the lock table, and an F_SETLKW cycle gives EDEADLK to one side.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include <fstream>
#include <vector>

#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

int open_rw(const std::string& path) {
  return ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
}

struct flock range(short type, off_t start, off_t len) {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  return fl;
}

// A child that takes `fl` with F_SETLK, signals `held`, and keeps it until
// `release` is signalled (or 30 s).
Child holder(const std::string& path, struct flock fl, Pipe& held, Pipe& release) {
  return Child([&, path, fl] {
    int fd = open_rw(path);
    struct flock l = fl;
    if (fd < 0 || ::fcntl(fd, F_SETLK, &l) < 0) {
      std::printf("holder: %s\n", std::strerror(errno));
      return 1;
    }
    held.signal();
    release.wait_signal(30s);
    return 0;
  });
}

// In this process (the test is a process of its own): an F_SETLK try that
// must fail at once with EAGAIN, and F_GETLK naming `holder_pid`.
void expect_try_conflict(const std::string& path, struct flock want, pid_t holder_pid) {
  int fd = open_rw(path);
  REQUIRE(fd >= 0);
  struct flock l = want;
  auto t0 = Clock::now();
  int r = ::fcntl(fd, F_SETLK, &l);
  int err = errno;
  double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  CHECK(r == -1);
  CHECK_MESSAGE((err == EAGAIN || err == EACCES), "errno " << std::strerror(err));
  CHECK(err == EAGAIN);  // Linux gives EAGAIN; so must the mount
  CHECK_MESSAGE(ms < 200, "the try-lock took " << ms << " ms: it waited");
  struct flock q = want;
  REQUIRE(::fcntl(fd, F_GETLK, &q) == 0);
  CHECK(q.l_type == F_WRLCK);
  CHECK(q.l_pid == holder_pid);
  ::close(fd);
}

}  // namespace

TEST_CASE("pidfile-style F_SETLK on a plain file: EAGAIN at once, F_GETLK names the holder") {
  Mounted m;
  std::string pidfile = m.mnt + "/app.pid";
  Pipe held, release;
  Child h = holder(pidfile, range(F_WRLCK, 0, 0), held, release);
  REQUIRE(held.wait_signal());
  expect_try_conflict(pidfile, range(F_WRLCK, 0, 0), h.pid());
  expect_try_conflict(pidfile, range(F_RDLCK, 10, 1), h.pid());
  release.signal();
  CHECK(h.wait().ok());
  // Released: the try-lock succeeds now.
  int fd = open_rw(pidfile);
  struct flock l = range(F_WRLCK, 0, 0);
  CHECK(::fcntl(fd, F_SETLK, &l) == 0);
  ::close(fd);
}

TEST_CASE("a non-SQLite byte range of an SQLite database file keeps POSIX try semantics") {
  Mounted m;
  for (std::string mode : {"delete", "wal"}) {
    CAPTURE(mode);
    std::string db = m.mnt + "/app-" + mode + ".db";
    create_db(db, mode);
    // Bytes 100..199 (the lock bytes are at 1 GiB) and a range beyond them.
    for (off_t start : {off_t{100}, off_t{(1ll << 30) + 4096}}) {
      CAPTURE(start);
      Pipe held, release;
      Child h = holder(db, range(F_WRLCK, start, 100), held, release);
      REQUIRE(held.wait_signal());
      expect_try_conflict(db, range(F_RDLCK, start + 50, 10), h.pid());
      // SQLite itself still works on that database meanwhile.
      {
        Db d = open_db(db, 0);
        CHECK(exec_rc(d.get(), insert_sql(1, static_cast<int>(start), 0)) == SQLITE_OK);
      }
      release.signal();
      CHECK(h.wait().ok());
    }
  }
}

// Issue 7 item 5: what is SQLite is decided from what a file is (its header,
// the database beside a -shm), not from its name or the offsets locked.  Each
// file here is made through the mount the way a program makes it (created
// empty, then written), and SQLite's lock bytes of it must keep exact POSIX
// try semantics: EAGAIN at once, not a 30 s SQLite-style wait.
TEST_CASE("SQLite's lock bytes of files that are not SQLite databases: F_SETLK answers at once") {
  Mounted m;
  struct Case {
    std::string name, content;
    off_t start, len;
    std::vector<short> tries;
  };
  const off_t pending = 0x40000000;
  std::vector<Case> cases = {
      {"plain.txt", "just text\n", pending, 1, {F_RDLCK, F_WRLCK}},
      {"x.db", "not a database, only named like one\n", pending + 2, 510, {F_RDLCK, F_WRLCK}},
      {"y.db-shm", std::string(32768, '\0'), 120, 1, {F_WRLCK, F_RDLCK}},
      {"y.db-shm", std::string(32768, '\0'), 123, 1, {F_RDLCK, F_WRLCK}},
  };
  for (auto& c : cases) {
    CAPTURE(c.name);
    CAPTURE(c.start);
    std::string path = m.mnt + "/" + c.name;
    std::ofstream(path) << c.content;  // created empty, then written
    Pipe held, release;
    Child h = holder(path, range(F_WRLCK, c.start, c.len), held, release);
    REQUIRE(held.wait_signal());
    for (short t : c.tries) {
      CAPTURE(t);
      expect_try_conflict(path, range(t, c.start, c.len), h.pid());
    }
    release.signal();
    CHECK(h.wait().ok());
  }
  // An SQLite database beside a -shm makes it one: the same name, but now
  // SQLite's (its own zero-BUSY tests cover the scheduling; here: still works).
  std::string db = m.mnt + "/z.db";
  create_db(db, "wal");
  {
    Db d = open_db(db, 0);
    CHECK(exec_rc(d.get(), insert_sql(1, 1, 0)) == SQLITE_OK);
  }
}

TEST_CASE("a SIGKILLed F_SETLKW waiter is reaped within a second and leaves the table clean") {
  Mounted m;
  for (std::string name : {"plain.lock", "waiter.db"}) {
    CAPTURE(name);
    std::string path = m.mnt + "/" + name;
    if (name.ends_with(".db")) create_db(path, "wal");
    Pipe held, release, waiting;
    Child h = holder(path, range(F_WRLCK, 0, 200), held, release);
    REQUIRE(held.wait_signal());
    Child w([&] {
      int fd = open_rw(path);
      struct flock l = range(F_WRLCK, 50, 10);
      waiting.signal();
      ::fcntl(fd, F_SETLKW, &l);  // blocks until killed
      return 9;
    });
    REQUIRE(waiting.wait_signal());
    ::usleep(300000);
    // It is really waiting (in the daemon), and the daemon shows it.
    CHECK(::waitpid(w.pid(), nullptr, WNOHANG) == 0);
    auto st = status_of(m.mnt);
    CHECK(st["state"]["waits"].size() == 1);
    auto t0 = Clock::now();
    ::kill(w.pid(), SIGKILL);
    ExitInfo e = w.wait();
    double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    CHECK(e.signal == SIGKILL);
    CHECK_MESSAGE(ms < 1000, "the killed waiter took " << ms << " ms to be reaped");
    MESSAGE(name << ": killed F_SETLKW waiter reaped in " << ms << " ms");
    st = status_of(m.mnt);
    CHECK_MESSAGE(st["state"]["waits"].empty(), st["state"].dump());
    release.signal();
    CHECK(h.wait().ok());
    // Nobody holds or waits for the range: another process takes it at once.
    ExitInfo t = run_child([&] {
      int fd = open_rw(path);
      struct flock l = range(F_WRLCK, 0, 0);
      return ::fcntl(fd, F_SETLK, &l) == 0 ? 0 : 1;
    });
    CHECK(t.ok());
    CHECK(status_of(m.mnt)["locks"]["interrupts"].get<int>() >= 1);
  }
}

TEST_CASE("two processes in an F_SETLKW cycle on two plain files: one gets EDEADLK") {
  Mounted m;
  std::string a = m.mnt + "/a.lock", b = m.mnt + "/b.lock";
  auto sh = make_shared_mem<Shared>();
  // Each locks its first file, waits until both hold one, then F_SETLKW the
  // other.  Exit code: 0 granted, EDEADLK, or 100+errno for anything else.
  auto cyc = [&](const std::string& first, const std::string& second, int me) {
    return Child([&, first, second, me] {
      int f1 = open_rw(first), f2 = open_rw(second);
      struct flock l = range(F_WRLCK, 0, 0);
      if (::fcntl(f1, F_SETLK, &l) < 0) return 50;
      sh->flag[me] = 1;
      while (!sh->flag[1 - me].load()) ::usleep(1000);
      if (me == 1) ::usleep(200000);  // the other one waits first
      struct flock l2 = range(F_WRLCK, 0, 0);
      if (::fcntl(f2, F_SETLKW, &l2) == 0) return 0;
      int err = errno;
      ::close(f1);  // the victim gives its lock up: the other one proceeds
      return err == EDEADLK ? EDEADLK : 100 + err;
    }, ChildOptions{.timeout = 20s});
  };
  Child p0 = cyc(a, b, 0);
  Child p1 = cyc(b, a, 1);
  ExitInfo e0 = p0.wait(), e1 = p1.wait();
  MESSAGE("cycle: first " << e0.describe() << ", second " << e1.describe());
  CHECK_FALSE(e0.timed_out);
  CHECK_FALSE(e1.timed_out);
  CHECK(((e0.exit_code == 0 && e1.exit_code == EDEADLK) ||
         (e0.exit_code == EDEADLK && e1.exit_code == 0)));
  CHECK(status_of(m.mnt)["locks"]["edeadlk"].get<int>() == 1);
}
