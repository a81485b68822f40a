// The FUSE transport (issue 10 items 1-2): FUSE over io_uring where the
// kernel offers it, /dev/fuse otherwise, and waiting locks that cannot starve
// a CPU's ring queue.  Runs in both transport suites (dbfs-accept and
// dbfs-accept-dev); the ring-only checks are made where --status says "uring".
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/time.h>

#include <filesystem>
#include <fstream>

#include "hoody/test/guard.hpp"
#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

constexpr int kWriters = 64;

void pin_to_cpu0() {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0) ::_exit(90);
}

bool set_uring_param(const char* v) {
  std::ofstream f("/sys/module/fuse/parameters/enable_uring");
  f << v;
  f.flush();
  return static_cast<bool>(f);
}

// Queue 0's counters (the CPU the test pins its processes to), or null.
nlohmann::json queue0(const nlohmann::json& st) {
  if (!st.contains("transport") || st["transport"]["name"] != "uring") return nullptr;
  for (auto& q : st["transport"]["queues"])
    if (q["qid"] == 0) return q;
  return nullptr;
}

bool expect_uring() { return test_transport() == "uring"; }

void on_alarm(int) {}

}  // namespace

TEST_CASE("transport: --status names the transport in use") {
  Mounted m;
  Db db = open_db(m.mnt + "/t.db", 0);
  exec(db.get(), "CREATE TABLE x(a); INSERT INTO x VALUES (1)");
  auto st = status_of(m.mnt);
  REQUIRE(st.contains("transport"));
  MESSAGE("transport: " << st["transport"].dump());
  if (!expect_uring()) {
    CHECK(st["transport"]["name"] == "dev");
    CHECK(st["transport"]["requested"] == "dev");
    return;
  }
  CHECK(st["transport"]["requested"] == "uring");
  if (!fuse_uring_enabled()) {
    // The rig turns it on; a kernel without it can only run on /dev/fuse.
    if (in_ci()) FAIL("FUSE over io_uring is not available: " << st["transport"].dump());
    CHECK(st["transport"]["name"] == "dev");
    return;
  }
  REQUIRE(st["transport"]["name"] == "uring");
  std::uint64_t served = 0;
  for (auto& q : st["transport"]["queues"]) served += q["requests"].get<std::uint64_t>();
  CHECK(served > 0);  // the requests above came through the ring
}

TEST_CASE("transport: uring is the default where the kernel offers it") {
  // The rig names the transport for every daemon from $HOODY_TEST_TRANSPORT;
  // without it the daemon's own default shows (and the rig turns the
  // kernel's parameter on, as hoody-up and the units do).
  std::string saved = test_transport();
  ::unsetenv("HOODY_TEST_TRANSPORT");
  struct Back {
    std::string v;
    ~Back() {
      if (!v.empty()) ::setenv("HOODY_TEST_TRANSPORT", v.c_str(), 1);
    }
  } back{saved};
  Mounted m;
  Db db = open_db(m.mnt + "/t.db", 0);
  exec(db.get(), "CREATE TABLE x(a); INSERT INTO x VALUES (1)");
  auto st = status_of(m.mnt);
  MESSAGE("transport: " << st["transport"].dump());
  CHECK(st["transport"]["requested"] == "uring");
  if (!fuse_uring_enabled()) {
    if (in_ci()) FAIL("FUSE over io_uring is not available: " << st["transport"].dump());
    CHECK(st["transport"]["name"] == "dev");
    return;
  }
  CHECK(st["transport"]["name"] == "uring");
}

TEST_CASE("transport: with enable_uring off, uring falls back to /dev/fuse with one line") {
  if (!expect_uring() || !fuse_uring_enabled()) return;  // nothing to switch off
  REQUIRE(set_uring_param("0"));
  struct Restore {
    ~Restore() { set_uring_param("1"); }
  } restore;
  Mounted m("allow_other,default_permissions,transport=uring");
  Db db = open_db(m.mnt + "/t.db", 0);
  exec(db.get(), "CREATE TABLE x(a); INSERT INTO x VALUES (1)");
  auto st = status_of(m.mnt);
  CHECK(st["transport"]["name"] == "dev");
  CHECK(st["transport"]["reason"].get<std::string>().find("enable_uring") != std::string::npos);
  std::string log = m.daemon->log();
  std::size_t lines = 0;
  for (std::size_t at = log.find("transport=dev"); at != std::string::npos;
       at = log.find("transport=dev", at + 1))
    ++lines;
  CHECK(lines == 1);
}

TEST_CASE("transport: 64 writers pinned to one CPU, busy_timeout=0: 0 BUSY, no hang") {
  Mounted m;
  for (std::string mode : {"wal", "delete"}) {
    CAPTURE(mode);
    std::string path = m.mnt + "/pinned-" + mode + ".db";
    create_db(path, mode);
    auto sh = make_shared_mem<Shared>();
    std::vector<Child> kids;
    // BEGIN IMMEDIATE holds the writer token for a whole transaction: the
    // other 63 wait for it with their lock request parked in the daemon, all
    // on CPU 0's queue, and the holder's unlock comes from CPU 0 too.
    for (int i = 0; i < kWriters; ++i)
      kids.emplace_back(
          [&, i] {
            pin_to_cpu0();
            return worker(*sh, i, path, Kind::immediate, 6, 0);
          },
          ChildOptions{.timeout = 120s});
    ::usleep(200000);
    auto t0 = Clock::now();
    sh->go = 1;
    for (auto& k : kids) {
      ExitInfo e = k.wait();
      CHECK_MESSAGE(e.ok(), "writer: " << e.describe() << " " << sh->first_error());
    }
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report() << "; " << sh->first_error());
    CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
    CHECK(sh->committed_total() == kWriters * 6);
    Db db = open_db(path, 5000);
    CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
    check_rows(db.get(), *sh, kWriters, rows_per_txn(Kind::immediate));
    auto st = status_of(m.mnt);
    MESSAGE(mode << ": " << sh->committed_total() << " transactions in " << secs
                 << " s; queue 0: " << queue0(st).dump()
                 << "; lock max_queue_depth=" << st["locks"]["max_queue_depth"]);
    if (expect_uring() && fuse_uring_enabled()) {
      auto q = queue0(st);
      REQUIRE(q != nullptr);
      // The waiters outnumbered the queue's first entries: the hazard was
      // there, and the parked requests got entries of their own.
      CHECK(q["parked_max"].get<int>() > st["transport"]["depth"].get<int>());
      CHECK(q["entries"].get<int>() > st["transport"]["depth"].get<int>());
    }
  }
}

TEST_CASE("transport: interrupted F_SETLKW waiters on one CPU get EINTR, the holder unlocks") {
  Mounted m;
  std::string path = m.mnt + "/plain.lock";
  {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  auto sh = make_shared_mem<Shared>();
  // The holder: takes byte 0, waits until every waiter gave up, unlocks, and
  // checks that its unlock and a new lock are answered (all on CPU 0).
  Child holder(
      [&] {
        pin_to_cpu0();
        int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
        struct flock l {};
        l.l_type = F_WRLCK;
        l.l_whence = SEEK_SET;
        l.l_len = 1;
        if (::fcntl(fd, F_SETLK, &l) != 0) return 10;
        sh->flag[0] = 1;
        while (sh->flag[1].load() < kWriters) ::usleep(1000);
        l.l_type = F_UNLCK;
        if (::fcntl(fd, F_SETLK, &l) != 0) return 11;
        l.l_type = F_WRLCK;
        if (::fcntl(fd, F_SETLK, &l) != 0) return 12;
        return 0;
      },
      ChildOptions{.timeout = 60s});
  while (!sh->flag[0].load()) ::usleep(1000);
  std::vector<Child> waiters;
  for (int i = 0; i < kWriters; ++i)
    waiters.emplace_back(
        [&] {
          pin_to_cpu0();
          struct sigaction sa {};
          sa.sa_handler = on_alarm;  // no SA_RESTART: fcntl returns EINTR
          ::sigaction(SIGALRM, &sa, nullptr);
          int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
          struct flock l {};
          l.l_type = F_WRLCK;
          l.l_whence = SEEK_SET;
          l.l_len = 1;
          itimerval it{};
          it.it_value.tv_usec = 500000;  // after every waiter is queued
          ::setitimer(ITIMER_REAL, &it, nullptr);
          int rc = ::fcntl(fd, F_SETLKW, &l);
          int e = errno;
          sh->flag[1].fetch_add(1);
          return rc == -1 && e == EINTR ? 0 : 20;
        },
        ChildOptions{.timeout = 60s});
  for (auto& w : waiters) {
    ExitInfo e = w.wait();
    CHECK_MESSAGE(e.ok(), "waiter: " << e.describe());
  }
  ExitInfo h = holder.wait();
  CHECK_MESSAGE(h.ok(), "holder: " << h.describe());
  auto st = status_of(m.mnt);
  MESSAGE("queue 0: " << queue0(st).dump() << "; interrupts=" << st["locks"]["interrupts"]);
  CHECK(st["locks"]["interrupts"].get<int>() + st["locks"]["interrupts_early"].get<int>() >=
        kWriters);
}

// The cell that stalled a lock holder for the 30 s lock-wait bound in about
// 1 run of 3 on transport=uring (issue 10): 32 processes x 10 autocommit
// INSERTs in DELETE mode, busy_timeout=0, repeated.  A token held for 3 s
// prints the daemon's state and the kernel stacks of the holder and of the
// daemon's threads (how the cause was found: the queue's one kicker waited in
// its own GETATTR).  Before the fix it stalled in the first round at
// uring_depth=1 and 2.
TEST_CASE("transport: 32 DELETE autocommit writers, repeated: 0 BUSY, no stall") {
  // Few entries per queue make "every entry taken" (when a kick's GETATTR
  // had to wait with the rest) frequent.
  const char* depth = std::getenv("HOODY_TEST_STALL_DEPTH");
  Mounted m(std::string("allow_other,default_permissions,uring_depth=") + (depth ? depth : "2"));
  int rounds = std::getenv("HOODY_TEST_STALL_ROUNDS") ? std::atoi(std::getenv("HOODY_TEST_STALL_ROUNDS")) : 4;
  for (int round = 0; round < rounds; ++round) {
    std::string path = m.mnt + "/stall" + std::to_string(round) + ".db";
    create_db(path, "delete");
    auto sh = make_shared_mem<Shared>();
    std::vector<Child> kids;
    for (int i = 0; i < 32; ++i)
      kids.emplace_back([&, i] { return worker(*sh, i, path, Kind::autocommit, 10, 0); },
                        ChildOptions{.timeout = 120s});
    ::usleep(100000);
    auto t0 = Clock::now();
    sh->go = 1;
    std::atomic<bool> done{false};
    std::thread watch([&] {
      // A token held for 3 s (a transaction takes milliseconds) is a stall.
      nlohmann::json st;
      for (;;) {
        std::this_thread::sleep_for(200ms);
        if (done.load()) return;
        st = status_of(m.mnt);
        bool stalled = false;
        for (auto& d : st["state"]["domains"])
          if (d.contains("token") && d["token"].value("held_ms", 0) > 3000) stalled = true;
        if (stalled) break;
      }
      std::string stacks;
      auto slurp = [](const std::string& f) {
        std::ifstream in(f);
        return std::string(std::istreambuf_iterator<char>(in), {});
      };
      for (auto& d : st["state"]["domains"])
        if (d.contains("token") && d["token"].contains("pid")) {
          std::string pid = std::to_string(d["token"]["pid"].get<long>());
          stacks += "holder " + pid + " syscall " + slurp("/proc/" + pid + "/syscall") + slurp("/proc/" + pid + "/stack");
        }
      std::string dpid = std::to_string(st["pid"].get<long>());
      for (auto& t : std::filesystem::directory_iterator("/proc/" + dpid + "/task")) {
        std::string tp = t.path().string();
        stacks += "daemon task " + t.path().filename().string() + " " + slurp(tp + "/comm") + slurp(tp + "/stack");
      }
      MESSAGE("round " << round << " stalled; transport: " << st["transport"].dump() << "\n"
                       << "state: " << st["state"].dump() << "\n" << stacks);
    });
    for (auto& k : kids) {
      ExitInfo e = k.wait();
      CHECK_MESSAGE(e.ok(), "worker: " << e.describe() << " " << sh->first_error());
    }
    done = true;
    watch.join();
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    MESSAGE("round " << round << ": committed " << sh->committed_total() << ", "
                     << sh->busy_report() << ", " << secs << " s");
    CHECK(sh->busy_total() == 0);
    CHECK(sh->committed_total() == 320);
    CHECK(secs < 20);
  }
}
