// Acceptance of the zero-BUSY promise (issue 4, research/sqlite-locking.md
// §5.3): unmodified SQLite with busy_timeout=0 and no retries, in forked
// processes, through one hoody-dbfs mount.
//
//   matrix   2, 8 and 32 processes x {autocommit INSERT, BEGIN IMMEDIATE,
//            deferred BEGIN;SELECT;INSERT;COMMIT} x {DELETE, WAL}: 0 SQLITE_BUSY*,
//            exactly the committed rows, integrity_check ok.  The 8-process row
//            also runs on the native backing directory, where it must fail.
//   readers  SQLITE_OPEN_READONLY / mode=ro readers keep reading while a writer
//            holds a transaction open, and a mixed workload gives 0 BUSY.
#include <signal.h>

#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

struct Cell {
  int procs;
  int txns;
};

struct Outcome {
  int busy = 0;
  int other = 0;
  int committed = 0;
  int attempted = 0;
  double secs = 0;
  std::string busy_report, first_error;
};

// Run one cell in `dir` on a fresh database; check its rows when `strict`.
Outcome run_cell(const std::string& dir, const std::string& mode, Kind kind, Cell c, bool strict) {
  static int serial = 0;
  std::string path = dir + "/m" + std::to_string(++serial) + "-" + mode + ".db";
  create_db(path, mode);
  auto sh = make_shared_mem<Shared>();
  std::vector<Child> kids;
  for (int i = 0; i < c.procs; ++i)
    kids.emplace_back([&, i] { return worker(*sh, i, path, kind, c.txns, 0); },
                      ChildOptions{.timeout = 120s});
  ::usleep(100000);  // let them open
  auto t0 = Clock::now();
  sh->go = 1;
  for (auto& k : kids) {
    ExitInfo e = k.wait();
    CHECK_MESSAGE(e.ok(), "worker: " << e.describe() << " " << sh->first_error());
  }
  Outcome o;
  o.secs = std::chrono::duration<double>(Clock::now() - t0).count();
  o.busy = sh->busy_total();
  o.other = sh->other_total();
  o.committed = sh->committed_total();
  for (int i = 0; i < c.procs; ++i) o.attempted += sh->procs[i].attempted.load();
  o.busy_report = sh->busy_report();
  o.first_error = sh->first_error();
  if (strict) {
    Db db = open_db(path, 5000);
    CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
    CHECK(query(db.get(), "PRAGMA journal_mode") == mode);
    check_rows(db.get(), *sh, c.procs, rows_per_txn(kind));
  }
  return o;
}

}  // namespace

TEST_CASE("zero BUSY: 2/8/32 processes x 3 workloads x DELETE/WAL, busy_timeout=0") {
  Mounted m;
  const Cell cells[] = {{2, 50}, {8, 25}, {32, 10}};
  const Kind kinds[] = {Kind::autocommit, Kind::immediate, Kind::deferred};
  int total_busy = 0, total_committed = 0;
  for (std::string mode : {"delete", "wal"}) {
    for (Kind kind : kinds) {
      for (Cell c : cells) {
        std::string where = mode + " | " + to_string(kind) + " | " +
                            std::to_string(c.procs) + " procs";
        CAPTURE(where);
        Outcome o = run_cell(m.mnt, mode, kind, c, true);
        MESSAGE("hoody-dbfs " << mode << " | " << to_string(kind) << " | " << c.procs
                              << " procs x " << c.txns << ": committed " << o.committed << "/"
                              << o.attempted << ", " << o.busy_report << ", other errors "
                              << o.other << ", " << o.secs << " s");
        CHECK_MESSAGE(o.busy == 0, o.busy_report << "; " << o.first_error);
        CHECK_MESSAGE(o.other == 0, o.first_error);
        CHECK(o.committed == c.procs * c.txns);
        total_busy += o.busy;
        total_committed += o.committed;
      }
    }
  }
  // A long read phase before the write (the strict token's point: no lease
  // runs out, no stale snapshot).
  for (std::string mode : {"delete", "wal"}) {
    std::string where = mode + " | " + to_string(Kind::deferred_slow) + " | 8 procs";
    CAPTURE(where);
    Outcome o = run_cell(m.mnt, mode, Kind::deferred_slow, {8, 8}, true);
    MESSAGE("hoody-dbfs " << where << " x 8: committed " << o.committed << "/" << o.attempted << ", "
                          << o.busy_report << ", " << o.secs << " s");
    CHECK_MESSAGE(o.busy == 0, o.busy_report << "; " << o.first_error);
    CHECK_MESSAGE(o.other == 0, o.first_error);
    total_busy += o.busy;
    total_committed += o.committed;
  }
  auto st = status_of(m.mnt);
  MESSAGE("hoody-dbfs total: " << total_committed << " transactions committed, " << total_busy
                               << " BUSY; lock counters: " << st["locks"].dump());
}

TEST_CASE("the same workload on the native directory gets SQLITE_BUSY (the test can fail)") {
  require_mount_capabilities();
  BtrfsPool pool;
  std::string dir = pool.make_subvolume("native");
  int busy = 0, attempted = 0;
  for (std::string mode : {"delete", "wal"}) {
    for (Kind kind : {Kind::autocommit, Kind::immediate, Kind::deferred}) {
      Outcome o = run_cell(dir, mode, kind, {8, 15}, false);
      MESSAGE("native " << mode << " | " << to_string(kind) << " | 8 procs x 15: committed "
                        << o.committed << "/" << o.attempted << ", " << o.busy_report);
      busy += o.busy;
      attempted += o.attempted;
    }
  }
  MESSAGE("native: " << busy << " of " << attempted << " transactions failed with SQLITE_BUSY*");
  WARN_MESSAGE(busy > 0, "native gave no BUSY: this machine cannot show the difference");
}

namespace {

// A read-only reader: counts completed reads in sh.procs[id].ops, and those
// done while the writer holds its transaction open (flag[0] == 1) in
// procs[id].attempted.  BUSY and errors are recorded.
int ro_reader(Shared& sh, int id, const std::string& path, bool uri) {
  ProcStats& me = sh.procs[id];
  Db db;
  try {
    db = uri ? open_db("file:" + path + "?mode=ro", 0, SQLITE_OPEN_READONLY)
             : open_db(path, 0, SQLITE_OPEN_READONLY);
  } catch (const std::exception& e) {
    std::snprintf(me.last_error, sizeof me.last_error, "%s", e.what());
    return 2;
  }
  if (!wait_go(sh)) return 3;
  while (!sh.stop.load()) {
    bool during = sh.flag[0].load() == 1;
    int rc = exec_rc(db.get(), "SELECT count(*), sum(length(v)) FROM t");
    if (rc != SQLITE_OK) {
      record_error(me, db.get(), rc, "SELECT");
      continue;
    }
    me.ops.fetch_add(1);
    if (during && sh.flag[0].load() == 1) me.attempted.fetch_add(1);
  }
  return 0;
}

// Holds BEGIN IMMEDIATE with one insert for `hold` while readers read.
int long_writer(Shared& sh, int id, const std::string& path, std::chrono::milliseconds hold) {
  ProcStats& me = sh.procs[id];
  Db db = open_db(path, 0);
  if (!wait_go(sh)) return 3;
  ::usleep(200000);
  int rc = exec_rc(db.get(), "BEGIN IMMEDIATE");
  if (rc == SQLITE_OK) rc = exec_rc(db.get(), insert_sql(id, 0, 0));
  if (rc != SQLITE_OK) {
    record_error(me, db.get(), rc, "BEGIN IMMEDIATE/INSERT");
    return 1;
  }
  sh.flag[0] = 1;
  std::this_thread::sleep_for(hold);
  sh.flag[0] = 2;
  rc = exec_rc(db.get(), "COMMIT");
  if (rc != SQLITE_OK) {
    record_error(me, db.get(), rc, "COMMIT");
    return 1;
  }
  me.txn_committed[0] = 1;
  me.committed = 1;
  return 0;
}

}  // namespace

TEST_CASE("read-only readers stay concurrent with writers; 0 BUSY for both") {
  Mounted m;
  for (std::string mode : {"wal", "delete"}) {
    CAPTURE(mode);
    std::string path = m.mnt + "/readers-" + mode + ".db";
    create_db(path, mode);
    {
      Db db = open_db(path, 0);
      exec(db.get(), "BEGIN");
      for (int i = 0; i < 200; ++i) exec(db.get(), insert_sql(63, i, 0, 500));
      exec(db.get(), "COMMIT");
    }
    // (1) a writer holds a transaction open 1.5 s; 3 readers (2 with
    // SQLITE_OPEN_READONLY, 1 with ?mode=ro) keep reading meanwhile.
    {
      auto sh = make_shared_mem<Shared>();
      std::vector<Child> kids;
      kids.emplace_back([&] { return long_writer(*sh, 50, path, 1500ms); });
      for (int r = 1; r <= 3; ++r)
        kids.emplace_back([&, r] { return ro_reader(*sh, r, path, r == 3); });
      ::usleep(100000);
      sh->go = 1;
      ExitInfo w = kids[0].wait();
      sh->stop = 1;
      CHECK_MESSAGE(w.ok(), "writer: " << w.describe() << " " << sh->first_error());
      for (size_t i = 1; i < kids.size(); ++i) {
        ExitInfo e = kids[i].wait();
        CHECK_MESSAGE(e.ok(), "reader: " << e.describe());
      }
      for (int r = 1; r <= 3; ++r) {
        MESSAGE(mode << ": reader " << r << " did " << sh->procs[r].ops.load() << " reads, "
                     << sh->procs[r].attempted.load() << " while the writer held its transaction");
        CHECK(sh->procs[r].attempted.load() > 10);
      }
      CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report() << "; " << sh->first_error());
      CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
      Db db = open_db(path, 0);
      CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
      CHECK(query_int(db.get(), "SELECT count(*) FROM t") == 201);
    }
    // (2) mixed: 3 autocommit writers and 3 read-only readers at once.
    {
      auto sh = make_shared_mem<Shared>();
      std::vector<Child> kids;
      for (int i = 0; i < 3; ++i)
        kids.emplace_back([&, i] { return worker(*sh, i, path, Kind::autocommit, 60, 0); });
      for (int r = 10; r < 13; ++r)
        kids.emplace_back([&, r] { return ro_reader(*sh, r, path, r == 12); });
      ::usleep(100000);
      sh->go = 1;
      for (int i = 0; i < 3; ++i) {
        ExitInfo e = kids[static_cast<size_t>(i)].wait();
        CHECK_MESSAGE(e.ok(), "writer: " << e.describe());
      }
      sh->stop = 1;
      for (size_t i = 3; i < kids.size(); ++i) kids[i].wait();
      long long reads = 0;
      for (int r = 10; r < 13; ++r) reads += sh->procs[r].ops.load();
      MESSAGE(mode << " mixed: 3 writers committed " << sh->committed_total() << "/180, 3 ro readers did "
                   << reads << " reads; " << sh->busy_report());
      CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report() << "; " << sh->first_error());
      CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
      CHECK(sh->committed_total() == 180);
      for (int r = 10; r < 13; ++r) CHECK(sh->procs[r].ops.load() > 0);
      Db db = open_db(path, 0);
      CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
      CHECK(query_int(db.get(), "SELECT count(*) FROM t WHERE p < 3") == 180);
    }
  }
}

namespace {
void on_usr1(int) {}
}  // namespace

TEST_CASE("a signal storm (handlers with SA_RESTART) on queued writers gives no BUSY") {
  Mounted m;
  for (std::string mode : {"delete", "wal"}) {
    CAPTURE(mode);
    std::string path = m.mnt + "/storm-" + mode + ".db";
    create_db(path, mode);
    auto sh = make_shared_mem<Shared>();
    constexpr int kProcs = 8, kTxns = 20;
    std::vector<Child> kids;
    std::vector<pid_t> pids;
    for (int i = 0; i < kProcs; ++i) {
      kids.emplace_back([&, i] {
        struct sigaction sa {};
        sa.sa_handler = on_usr1;
        sa.sa_flags = SA_RESTART;
        ::sigaction(SIGUSR1, &sa, nullptr);
        sh->flag[0].fetch_add(1);
        return worker(*sh, i, path, Kind::immediate, kTxns, 0);
      }, ChildOptions{.timeout = 120s});
      pids.push_back(kids.back().pid());
    }
    while (sh->flag[0].load() < kProcs) ::usleep(1000);  // handlers installed
    sh->go = 1;
    int sent = 0;
    while (sh->committed_total() + sh->busy_total() + sh->other_total() < kProcs * kTxns) {
      for (pid_t p : pids) ::kill(p, SIGUSR1), ++sent;
      ::usleep(2000);
      bool all_done = true;
      for (int i = 0; i < kProcs; ++i)
        all_done &= sh->procs[i].attempted.load() >= kTxns;
      if (all_done) break;
    }
    for (auto& k : kids) {
      ExitInfo e = k.wait();
      CHECK_MESSAGE(e.ok(), e.describe());
    }
    auto st = status_of(m.mnt);
    MESSAGE(mode << ": " << sent << " SIGUSR1 sent; committed " << sh->committed_total() << "/"
                 << kProcs * kTxns << "; " << sh->busy_report() << "; daemon interrupts "
                 << st["locks"]["interrupts"].dump());
    CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report() << "; " << sh->first_error());
    CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
    Db db = open_db(path, 0);
    CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
    check_rows(db.get(), *sh, kProcs, rows_per_txn(Kind::immediate));
  }
}
