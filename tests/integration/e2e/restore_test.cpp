// Issue 11: hoody-snapfs and hoody-dbfs as one system, with both daemons
// mounted on one real BTRFS pool as scripts/hoody-up wires them.  A restore
// quiesces dbfs, swaps, has dbfs serve the restored subvolume and only then
// returns; snapshots hold whole transactions; handles held across a restore
// fail instead of writing into the discarded tree; a snapfs killed at any new
// step leaves the old or the new state and never a quiesced dbfs.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "../dbfs/sqlite_harness.hpp"
#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  REQUIRE_MESSAGE(v, name << " must name the daemon under test");
  return v;
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             SteadyClock::now().time_since_epoch())
      .count();
}

// One container: POOL/containers/c1/{storage,databases}, /hoody/storage a bind
// mount of the storage subvolume, /hoody/databases hoody-dbfs, and
// /hoody/.snapshots hoody-snapfs.
struct System {
  BtrfsPool pool;
  std::string c, storage_sv, databases_sv, storage, databases, snapshots;
  std::unique_ptr<Daemon> dbfs, snapfs;
  std::uint64_t bind_id = 0;

  explicit System(const std::string& snapfs_opts = "allow_other") {
    pool.make_dir("containers");
    c = pool.make_dir("containers/c1");
    storage_sv = pool.make_subvolume("containers/c1/storage");
    databases_sv = pool.make_subvolume("containers/c1/databases");
    std::string root = pool.make_temp_dir("hoody");
    storage = root + "/storage";
    databases = root + "/databases";
    snapshots = root + "/.snapshots";
    for (auto& d : {storage, databases, snapshots}) REQUIRE(::mkdir(d.c_str(), 0755) == 0);
    bind_id = register_resource(Resource::mount, storage);
    run_checked({"mount", "--bind", storage_sv, storage});
    start_dbfs();
    start_snapfs(snapfs_opts);
  }
  // (Again, after a kill: the log of each run in its own file.)
  void start_dbfs() {
    dbfs.reset();
    dbfs = std::make_unique<Daemon>(
        std::vector<std::string>{env("HOODY_DBFS"), "-f", "-o", "allow_other", databases_sv,
                                 databases},
        databases, pool.dir() + "/dbfs" + (dbfs_runs++ ? std::to_string(dbfs_runs) : "") + ".log");
  }
  int dbfs_runs = 0;
  ~System() {
    snapfs.reset();
    dbfs.reset();
    run({"umount", "-l", storage});
    release(bind_id);
  }
  // crash_at: HOODY_CRASH_AT for the daemon ("" for none); pause_at and
  // pause_dir: HOODY_PAUSE_AT and HOODY_PAUSE_DIR (store/crash.hpp).
  void start_snapfs(const std::string& opts, const std::string& crash_at = "",
                    const std::string& pause_at = "", const std::string& pause_dir = "") {
    snapfs.reset();
    std::vector<std::string> argv;
    if (!crash_at.empty() || !pause_at.empty()) argv = {"env"};
    if (!crash_at.empty()) argv.push_back("HOODY_CRASH_AT=" + crash_at);
    if (!pause_at.empty()) {
      argv.push_back("HOODY_PAUSE_AT=" + pause_at);
      argv.push_back("HOODY_PAUSE_DIR=" + pause_dir);
    }
    for (auto& a : {env("HOODY_SNAPFS"), std::string("-f"), std::string("-o"), opts, c, snapshots})
      argv.push_back(a);
    snapfs = std::make_unique<Daemon>(argv, snapshots, pool.dir() + "/snapfs.log");
  }
  std::string db(const std::string& name = "app.db") const { return databases + "/" + name; }
  std::string live(const std::string& name = "app.db") const { return databases_sv + "/" + name; }
  std::string ctl() const { return snapshots + "/.hoody/restore"; }

  // `echo NAME > .hoody/restore`: 0 or the write's errno.
  int restore(const std::string& name) const {
    int fd = ::open(ctl().c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) return errno;
    std::string line = name + "\n";
    int e = ::write(fd, line.data(), line.size()) < 0 ? errno : 0;
    ::close(fd);
    return e;
  }
  // The same, O_RDWR, with the result read back.
  nlohmann::json restore_result(const std::string& line, int* err = nullptr) const {
    int fd = ::open(ctl().c_str(), O_RDWR | O_CLOEXEC);
    REQUIRE(fd >= 0);
    int e = ::write(fd, line.data(), line.size()) < 0 ? errno : 0;
    if (err) *err = e;
    char buf[65536];
    ssize_t n = ::pread(fd, buf, sizeof buf, 0);
    ::close(fd);
    if (n <= 0) return nlohmann::json();
    return nlohmann::json::parse(std::string(buf, static_cast<size_t>(n)), nullptr, false);
  }
  void snapshot(const std::string& name) const {
    REQUIRE_MESSAGE(::mkdir((snapshots + "/" + name).c_str(), 0755) == 0, name, ": ",
                    std::strerror(errno));
  }
  // A database inside a snapshot, opened as a user can: read-only, immutable.
  std::string in_snapshot(const std::string& snap, const std::string& name = "app.db") const {
    return "file:" + snapshots + "/" + snap + "/databases/" + name + "?immutable=1";
  }
};

long long count(const std::string& path, const std::string& where = "1") {
  auto h = open_db(path, 5000, SQLITE_OPEN_READONLY);
  return query_int(h.get(), "SELECT count(*) FROM t WHERE " + where);
}

std::string xattr(const std::string& p, const char* name) {
  char buf[4096];
  ssize_t n = ::getxattr(p.c_str(), name, buf, sizeof buf);
  return n < 0 ? "<" + std::string(std::strerror(errno)) + ">"
               : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

TEST_CASE("issue 11's loop: 100 restores, the row inserted right after each one is kept") {
  require_mount_capabilities();
  System s;
  {
    auto h = open_db(s.db());
    exec(h.get(), "CREATE TABLE t(x INTEGER)");
  }
  s.snapshot("pre-upgrade");  // holds the table, no rows: never any of the loop's
  int kept_at_once = 0, kept_at_end = 0, in_live = 0;
  for (int i = 1; i <= 100; ++i) {
    CAPTURE(i);
    REQUIRE(s.restore("pre-upgrade") == 0);
    {
      // A NEW connection right after the write returned, as `sqlite3 app.db "insert ..."`.
      auto h = open_db(s.db());
      exec(h.get(), "INSERT INTO t VALUES (" + std::to_string(100 + i) + ")");
    }
    // The restore took effect (the previous round's row is gone) and this
    // round's row is there, through the mount and in the live subvolume.
    kept_at_once += count(s.db()) == 1 && count(s.db(), "x = " + std::to_string(100 + i)) == 1;
    in_live += count(s.live(), "x = " + std::to_string(100 + i)) == 1;
    std::this_thread::sleep_for(20ms);  // the old subvolume is deleted meanwhile
    kept_at_end += count(s.db(), "x = " + std::to_string(100 + i)) == 1;
  }
  CHECK(kept_at_once == 100);
  CHECK(in_live == 100);
  CHECK(kept_at_end == 100);
  MESSAGE("100 rounds: kept at once ", kept_at_once, ", at the end of the round ", kept_at_end,
          ", in the live subvolume ", in_live);
}

namespace {

constexpr int kWriters = 8;
constexpr int kMaxRows = 60000;
struct WriterLog {
  std::atomic<int> n;            // rows recorded
  std::atomic<int> busy;         // SQLITE_BUSY* seen
  std::atomic<int> errors;       // other errors (the held connection's IOERR)
  std::atomic<int> ioerr;
  std::atomic<int> reconnects;
  char last_error[200];
  int64_t id[kMaxRows];
  int64_t committed_ns[kMaxRows];  // steady clock when the COMMIT returned SQLITE_OK
};
struct Writers {
  std::atomic<int> stop;
  WriterLog w[kWriters];
};

}  // namespace

TEST_CASE("8 writers through 5 restores: every row committed after a restore returned is kept") {
  require_mount_capabilities();
  System s;
  {
    auto h = open_db(s.db());
    exec(h.get(), "CREATE TABLE t(x INTEGER PRIMARY KEY, w INTEGER)");
  }
  s.snapshot("pre");
  auto shared = make_shared_mem<Writers>();
  Writers* sh = shared.get();
  std::string path = s.db();
  std::vector<Child> kids;
  for (int w = 0; w < kWriters; ++w)
    kids.emplace_back(
        [sh, w, path]() -> int {
          WriterLog& L = sh->w[w];
          int64_t seq = 0;
          while (!sh->stop.load()) {
            sqlite3* h = nullptr;
            if (sqlite3_open_v2(path.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
              sqlite3_close(h);
              std::this_thread::sleep_for(5ms);
              continue;
            }
            sqlite3_extended_result_codes(h, 1);
            sqlite3_busy_timeout(h, 0);
            // Held across the restores until an error: then reconnect.
            while (!sh->stop.load()) {
              int64_t id = static_cast<int64_t>(w) * 10000000 + seq++;
              std::string q = "INSERT INTO t VALUES (" + std::to_string(id) + ", " +
                              std::to_string(w) + ")";
              int rc = sqlite3_exec(h, q.c_str(), nullptr, nullptr, nullptr);
              if (rc == SQLITE_OK) {
                int k = L.n.load();
                if (k < kMaxRows) {
                  L.id[k] = id;
                  L.committed_ns[k] = now_ns();
                  L.n.store(k + 1);
                }
                continue;
              }
              int ext = sqlite3_extended_errcode(h);
              if ((ext & 0xff) == SQLITE_BUSY) ++L.busy;
              else ++L.errors;
              if ((ext & 0xff) == SQLITE_IOERR) ++L.ioerr;
              std::snprintf(L.last_error, sizeof L.last_error, "%s (%d)", sqlite3_errmsg(h), ext);
              break;
            }
            sqlite3_close(h);
            ++L.reconnects;
          }
          return 0;
        },
        ChildOptions{.timeout = 120s});
  std::this_thread::sleep_for(300ms);
  struct Round {
    int64_t start, end;
    std::string safety;
  };
  std::vector<Round> rounds;
  for (int k = 0; k < 5; ++k) {
    Round r;
    r.start = now_ns();
    int err = 0;
    auto res = s.restore_result("pre\n", &err);
    r.end = now_ns();
    REQUIRE_MESSAGE(err == 0, res.dump());
    r.safety = res.value("safety", "");
    MESSAGE("restore ", k, ": ", (r.end - r.start) / 1000000.0, " ms, quiesce-to-resume in the log; ",
            res.value("stale_holders", nlohmann::json::array()).size(), " stale holders");
    rounds.push_back(r);
    std::this_thread::sleep_for(400ms);
  }
  std::this_thread::sleep_for(200ms);
  sh->stop = 1;
  for (auto& k : kids) CHECK(k.wait().exit_code == 0);

  int busy = 0, errors = 0, ioerr = 0, reconnects = 0;
  for (auto& L : sh->w) {
    busy += L.busy;
    errors += L.errors;
    ioerr += L.ioerr;
    reconnects += L.reconnects;
  }
  CHECK(busy == 0);
  MESSAGE("writers: ", errors, " errors (", ioerr, " IOERR) on connections held across a restore, ",
          reconnects, " reconnects; e.g. ", sh->w[0].last_error);
  // Held connections were told: at least one error per restore in all.
  CHECK(errors >= 5);

  // Rows committed after restore k returned and before restore k+1 was asked
  // for: in restore k+1's safety snapshot.  After the last restore: in the
  // final database.  (Rows committed while a restore ran are either.)
  std::set<int64_t> final_rows;
  {
    auto h = open_db(s.db(), 5000);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(h.get(), "SELECT x FROM t", -1, &st, nullptr) == SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) final_rows.insert(sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    CHECK(query(h.get(), "PRAGMA integrity_check") == "ok");
  }
  int checked = 0, missing = 0;
  for (size_t k = 0; k < rounds.size(); ++k) {
    int64_t from = rounds[k].end;
    int64_t to = k + 1 < rounds.size() ? rounds[k + 1].start : INT64_MAX;
    std::set<int64_t> rows;
    if (k + 1 < rounds.size()) {
      auto h = open_db(s.in_snapshot(rounds[k + 1].safety), 0, SQLITE_OPEN_READONLY);
      sqlite3_stmt* st = nullptr;
      REQUIRE(sqlite3_prepare_v2(h.get(), "SELECT x FROM t", -1, &st, nullptr) == SQLITE_OK);
      while (sqlite3_step(st) == SQLITE_ROW) rows.insert(sqlite3_column_int64(st, 0));
      sqlite3_finalize(st);
    } else {
      rows = final_rows;
    }
    for (auto& L : sh->w)
      for (int i = 0; i < L.n.load(); ++i)
        if (L.committed_ns[i] > from && L.committed_ns[i] < to) {
          ++checked;
          if (!rows.count(L.id[i])) ++missing;
        }
  }
  CHECK(checked > 100);
  CHECK(missing == 0);
  MESSAGE(checked, " rows committed after a restore returned checked, ", missing, " missing");
}

TEST_CASE("a connection held across a restore gets an error, not a silent success (C and Python)") {
  require_mount_capabilities();
  System s;
  {
    auto h = open_db(s.db());
    exec(h.get(), "CREATE TABLE t(x INTEGER)");
    exec(h.get(), "INSERT INTO t VALUES (1)");
  }
  s.snapshot("pre");
  std::string path = s.db();
  std::string live = s.live();
  Pipe ready, go;
  // C API: one connection across the restore.
  Child writer([&]() -> int {
    sqlite3* h = nullptr;
    if (sqlite3_open_v2(path.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) return 10;
    sqlite3_extended_result_codes(h, 1);
    if (sqlite3_exec(h, "INSERT INTO t VALUES (2)", nullptr, nullptr, nullptr) != SQLITE_OK) return 11;
    ready.signal();
    if (!go.wait_signal(60s)) return 12;
    int rc = sqlite3_exec(h, "INSERT INTO t VALUES (3)", nullptr, nullptr, nullptr);
    int ext = sqlite3_extended_errcode(h);
    std::printf("after the restore: rc=%d ext=%d %s\n", rc, ext, sqlite3_errmsg(h));
    int closed = sqlite3_close(h);
    if (rc == SQLITE_OK) return 20;  // a silent success
    if (closed != SQLITE_OK) return 21;
    // Reconnected, it works on the restored state.
    if (sqlite3_open_v2(path.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) return 13;
    rc = sqlite3_exec(h, "INSERT INTO t VALUES (4)", nullptr, nullptr, nullptr);
    sqlite3_close(h);
    return rc == SQLITE_OK ? ((ext & 0xff) == SQLITE_IOERR ? 0 : 22) : 14;
  });
  // Python's sqlite3 module, the same.
  std::string marker = s.pool.dir() + "/py-ready", gofile = s.pool.dir() + "/py-go";
  std::string script =
      "import sqlite3, os, time\n"
      "c = sqlite3.connect('" + path + "', isolation_level=None)\n"
      "c.execute('insert into t values (5)')\n"
      "open('" + marker + "', 'w').close()\n"
      "while not os.path.exists('" + gofile + "'): time.sleep(0.01)\n"
      "try:\n"
      "    c.execute('insert into t values (6)')\n"
      "    print('silent-success')\n"
      "except sqlite3.Error as e:\n"
      "    print('error:', type(e).__name__, e)\n"
      "try:\n"
      "    c.close()\n"
      "except sqlite3.Error as e:\n"
      "    print('close error:', e)\n"
      "c = sqlite3.connect('" + path + "', isolation_level=None)\n"
      "c.execute('insert into t values (7)')\n"
      "print('reconnected')\n";
  Child py([&]() -> int {
    ::execlp("python3", "python3", "-c", script.c_str(), nullptr);
    return 127;
  });
  REQUIRE(ready.wait_signal());
  for (int i = 0; i < 500 && ::access(marker.c_str(), F_OK) != 0; ++i) std::this_thread::sleep_for(10ms);
  REQUIRE(::access(marker.c_str(), F_OK) == 0);
  CHECK(count(path) == 3);  // 1, 2, 5

  auto res = s.restore_result("pre\n");
  REQUIRE(res.value("ok", false));
  // Both processes hold the database of the state before: named, to restart.
  std::set<int> stale;
  for (auto& h : res["stale_holders"]) stale.insert(h.value("pid", 0));
  CHECK_MESSAGE(stale.count(writer.pid()) == 1, res.dump());
  CHECK_MESSAGE(stale.count(py.pid()) == 1, res.dump());
  CHECK(count(path) == 1);

  go.signal();
  std::ofstream(gofile).close();
  auto w = writer.wait();
  CHECK_MESSAGE(w.exit_code == 0, w.describe());
  auto p = py.wait();
  CHECK_MESSAGE(p.output.find("error: ") != std::string::npos, p.describe());
  CHECK_MESSAGE(p.output.find("silent-success") == std::string::npos, p.describe());
  CHECK_MESSAGE(p.output.find("reconnected") != std::string::npos, p.describe());
  // Only the rows of the new connections: nothing of the held ones.
  auto h = open_db(path, 5000);
  CHECK(query(h.get(), "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)") == "1,4,7");
  CHECK(count(live) == 3);
}

namespace {

struct TxnWriterStats {
  std::atomic<int> stop;
  std::atomic<int> txns[2];
  std::atomic<int> busy[2];
  std::atomic<int> errors[2];
  char last_error[2][200];
};

// BEGIN; `rows` inserts of 1 KiB; COMMIT, until told to stop: with a cache of
// 8 pages, each transaction spills pages into the database (rollback) or the
// WAL before it commits.
int txn_writer(TxnWriterStats* st, int which, const std::string& path, int rows, int hold_ms = 0) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(path.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) return 10;
  sqlite3_extended_result_codes(h, 1);
  sqlite3_busy_timeout(h, 0);
  sqlite3_exec(h, "PRAGMA cache_size = 8", nullptr, nullptr, nullptr);
  while (!st->stop.load()) {
    int rc = sqlite3_exec(h, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    for (int i = 0; rc == SQLITE_OK && i < rows; ++i)
      rc = sqlite3_exec(h, "INSERT INTO t VALUES (randomblob(1024))", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK && hold_ms) std::this_thread::sleep_for(std::chrono::milliseconds(hold_ms));
    if (rc == SQLITE_OK) rc = sqlite3_exec(h, "COMMIT", nullptr, nullptr, nullptr);
    if (rc == SQLITE_OK) {
      ++st->txns[which];
      continue;
    }
    int ext = sqlite3_extended_errcode(h);
    if ((ext & 0xff) == SQLITE_BUSY) ++st->busy[which];
    else ++st->errors[which];
    std::snprintf(st->last_error[which], sizeof st->last_error[which], "%s (%d)",
                  sqlite3_errmsg(h), ext);
    sqlite3_exec(h, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  sqlite3_close(h);
  return 0;
}

}  // namespace

TEST_CASE("50 snapshots under writers with spilling transactions hold whole transactions only") {
  require_mount_capabilities();
  System s;
  constexpr int kRows = 150;
  for (auto [name, mode] : {std::pair{"roll.db", "DELETE"}, std::pair{"wal.db", "WAL"}}) {
    auto h = open_db(s.db(name));
    exec(h.get(), std::string("PRAGMA journal_mode=") + mode);
    exec(h.get(), "CREATE TABLE t(b BLOB)");
  }
  auto shared = make_shared_mem<TxnWriterStats>();
  TxnWriterStats* st = shared.get();
  std::string roll = s.db("roll.db"), wal = s.db("wal.db");
  Child w0([st, roll] { return txn_writer(st, 0, roll, kRows); }, ChildOptions{.timeout = 120s});
  Child w1([st, wal] { return txn_writer(st, 1, wal, kRows); }, ChildOptions{.timeout = 120s});
  while (st->txns[0] < 2 || st->txns[1] < 2) std::this_thread::sleep_for(10ms);
  std::vector<double> mkdir_ms;
  for (int i = 0; i < 50; ++i) {
    auto t0 = SteadyClock::now();
    s.snapshot("s" + std::to_string(i));
    mkdir_ms.push_back(std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count());
    std::this_thread::sleep_for(15ms);
  }
  st->stop = 1;
  CHECK(w0.wait().exit_code == 0);
  CHECK(w1.wait().exit_code == 0);
  CHECK(st->busy[0] + st->busy[1] == 0);
  CHECK_MESSAGE(st->errors[0] + st->errors[1] == 0, st->last_error[0], " / ", st->last_error[1]);
  std::sort(mkdir_ms.begin(), mkdir_ms.end());
  MESSAGE("transactions committed: rollback ", st->txns[0].load(), ", WAL ", st->txns[1].load(),
          "; mkdir median ", mkdir_ms[25], " ms, max ", mkdir_ms.back(), " ms");

  // Every snapshot's databases, as a user opens them with the stock sqlite3
  // CLI on the read-only tree: no error, integrity ok, whole transactions.
  int whole = 0, transaction_consistent = 0;
  std::set<long long> distinct;
  for (int i = 0; i < 50; ++i) {
    std::string snap = s.snapshots + "/s" + std::to_string(i);
    transaction_consistent += xattr(snap, "user.hoody.consistency") == "transaction";
    for (const char* name : {"roll.db", "wal.db"}) {
      CAPTURE(snap);
      CAPTURE(name);
      auto r = run({"sqlite3", "-readonly", snap + "/databases/" + name,
                    "PRAGMA integrity_check; SELECT count(*) FROM t;"});
      REQUIRE_MESSAGE(r.exit_code == 0, r.describe());
      auto nl = r.output.find('\n');
      CHECK(r.output.substr(0, nl) == "ok");
      long long n = std::stoll(r.output.substr(nl + 1));
      distinct.insert(n);
      if (n % kRows == 0) ++whole;
      else MESSAGE("torn: ", n, " rows");
    }
  }
  CHECK(whole == 100);
  CHECK(transaction_consistent == 50);
  CHECK(distinct.size() > 10);  // the writers ran while the snapshots were taken
}

TEST_CASE("a transaction longer than quiesce_timeout: the snapshot is crash-consistent and says so") {
  require_mount_capabilities();
  System s("allow_other,quiesce_timeout=0.3");
  {
    auto h = open_db(s.db());
    exec(h.get(), "CREATE TABLE t(b BLOB)");
  }
  auto shared = make_shared_mem<TxnWriterStats>();
  TxnWriterStats* st = shared.get();
  std::string path = s.db();
  // Each transaction stays open 2 s before its COMMIT.
  Child w([st, path] { return txn_writer(st, 0, path, 10, 2000); }, ChildOptions{.timeout = 60s});
  std::this_thread::sleep_for(300ms);  // inside its first transaction
  auto t0 = SteadyClock::now();
  s.snapshot("long");
  double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
  st->stop = 1;
  CHECK(w.wait().exit_code == 0);
  CHECK(st->errors[0] == 0);
  CHECK(ms < 1500);  // the quiesce gave up after 0.3 s
  std::string c = xattr(s.snapshots + "/long", "user.hoody.consistency");
  CHECK_MESSAGE(c == "crash databases/app.db", c);
  auto all = nlohmann::json::parse(slurp(s.snapshots + "/.hoody/snapshots.json"));
  CHECK(all[0]["consistency"] == "crash");
  CHECK(all[0]["busy"] == nlohmann::json::array({"databases/app.db"}));
  CHECK_MESSAGE(s.snapfs->log().find("crash-consistent") != std::string::npos, s.snapfs->log());
  MESSAGE("mkdir with a 2 s transaction open and quiesce_timeout=0.3: ", ms, " ms");
}

TEST_CASE("snapfs killed at each new step: dbfs resumes at once; the old or the new state") {
  require_mount_capabilities();
  for (std::string point : {"create:quiesced", "restore:quiesced", "restore:safety",
                            "restore:exchange-1", "restore:exchanged", "restore:committed",
                            "restore:replaced", "restore:resumed"}) {
    CAPTURE(point);
    System s;
    {
      auto h = open_db(s.db());
      exec(h.get(), "CREATE TABLE t(x INTEGER)");
      exec(h.get(), "INSERT INTO t VALUES (1)");
    }
    s.snapshot("pre");
    {
      auto h = open_db(s.db());
      exec(h.get(), "INSERT INTO t VALUES (2)");
    }
    s.start_snapfs("allow_other", point);
    if (point.rfind("create:", 0) == 0)
      CHECK(::mkdir((s.snapshots + "/victim").c_str(), 0755) != 0);
    else
      CHECK(s.restore("pre") != 0);  // the daemon died under the write
    // Whatever it held is let go: a writer goes on within a second.
    auto t0 = SteadyClock::now();
    {
      auto h = open_db(s.db(), 0);
      CHECK(exec_rc(h.get(), "BEGIN IMMEDIATE") == SQLITE_OK);
      CHECK(exec_rc(h.get(), "INSERT INTO t VALUES (3)") == SQLITE_OK);
      CHECK(exec_rc(h.get(), "COMMIT") == SQLITE_OK);
    }
    double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
    CHECK(ms < 1000);
    // Restarted, snapfs finishes or undoes the restore and dbfs serves it.
    s.snapfs->stop();
    s.start_snapfs("allow_other");
    // From its first exchange on, the restore is finished: dbfs follows an
    // exchange by itself, so a row written after the crash is in the restored
    // subvolume and stays there.
    bool committed = point == "restore:exchange-1" || point == "restore:exchanged" ||
                     point == "restore:committed" || point == "restore:replaced" ||
                     point == "restore:resumed";
    std::string rows;
    {
      auto h = open_db(s.db(), 5000);
      rows = query(h.get(), "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)");
      CHECK(query(h.get(), "PRAGMA integrity_check") == "ok");
    }
    auto lh = open_db(s.live(), 5000, SQLITE_OPEN_READONLY);
    CHECK(query(lh.get(), "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)") == rows);
    if (point.rfind("create:", 0) == 0 || !committed) {
      CHECK(rows == "1,2,3");  // the old state, with row 3
    } else {
      // The new state, with row 3 (written after the crash): no committed row lost.
      CHECK(rows == "1,3");
    }
    MESSAGE(point, ": rows ", rows, ", writer went on after ", ms, " ms");
    // And the system works: a restore through the restarted daemon.
    CHECK(s.restore("pre") == 0);
    CHECK(count(s.db()) == 1);
  }
}

TEST_CASE("hoody-dbfs killed at each step of a restore: the old or the new state, no hang, nothing held") {
  require_mount_capabilities();
  // snapfs stops at each step at which dbfs is involved (HOODY_PAUSE_AT), the
  // hoody-dbfs is killed with SIGKILL, and remounted after the restore went
  // on, or before (as a supervisor restarts it: the new one was never
  // quiesced).  Before the exchange the restore is undone (ECONNRESET, the old
  // state); from the exchange on it is finished (the new state), and a dbfs
  // mounted meanwhile is told, so a row written right after the restore
  // returned is in the restored subvolume.
  struct Case {
    const char* point;
    bool finished;  // the restore reached its exchange: the new state
  };
  const Case cases[] = {{"restore:quiesced", false},  {"create:subvol-1", false},
                        {"restore:safety", false},    {"restore:exchanged", true},
                        {"restore:committed", true},  {"restore:replaced", true}};
  for (const auto& cs : cases) {
    for (bool remount_first : {false, true}) {
      std::string point = cs.point;
      CAPTURE(point);
      CAPTURE(remount_first);
      System s;
      {
        auto h = open_db(s.db());
        exec(h.get(), "CREATE TABLE t(x INTEGER)");
        exec(h.get(), "INSERT INTO t VALUES (1)");
      }
      { std::ofstream(s.storage_sv + "/state") << "old"; }
      s.snapshot("pre");
      {
        auto h = open_db(s.db());
        exec(h.get(), "INSERT INTO t VALUES (2)");  // committed before the restore
      }
      { std::ofstream(s.storage_sv + "/state") << "new"; }
      std::string pause = s.pool.make_temp_dir("pause");
      s.start_snapfs("allow_other", "", point, pause);
      std::atomic<bool> done{false};
      int err = -1;
      nlohmann::json res;
      std::thread restorer([&] {
        res = s.restore_result("pre\n", &err);
        done = true;
      });
      struct Join {
        std::thread& t;
        ~Join() {
          if (t.joinable()) t.join();
        }
      } join{restorer};
      auto deadline = SteadyClock::now() + 20s;
      while (::access((pause + "/paused").c_str(), F_OK) != 0 && SteadyClock::now() < deadline)
        std::this_thread::sleep_for(2ms);
      REQUIRE_MESSAGE(::access((pause + "/paused").c_str(), F_OK) == 0, s.snapfs->log());
      std::string killed = s.dbfs->terminate(SIGKILL);
      CHECK_MESSAGE(killed.find("KILL") != std::string::npos, killed);
      auto t_killed = SteadyClock::now();
      // Written through a hoody-dbfs mounted during the restore: kept in the
      // old state, or (mounted after the exchange) in the restored one.
      if (remount_first) {
        s.start_dbfs();
        auto h = open_db(s.db(), 2000);
        CHECK(exec_rc(h.get(), "INSERT INTO t VALUES (5)") == SQLITE_OK);
      }
      { std::ofstream(pause + "/go") << "go\n"; }
      auto t_go = SteadyClock::now();
      while (!done && SteadyClock::now() < t_killed + 30s) std::this_thread::sleep_for(1ms);
      double go_ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t_go).count();
      REQUIRE_MESSAGE(done, "the restore's write did not return within 30 s of the kill");
      double after_kill_ms =
          std::chrono::duration<double, std::milli>(SteadyClock::now() - t_killed).count();
      restorer.join();
      if (!remount_first) s.start_dbfs();

      // A new connection right after the write returned: its row is in the
      // live subvolume, whichever state that is.
      {
        auto h = open_db(s.db(), 2000);
        CHECK(exec_rc(h.get(), "INSERT INTO t VALUES (3)") == SQLITE_OK);
      }
      std::this_thread::sleep_for(50ms);  // a late follow by inotify would show now
      std::string rows, live_rows;
      {
        auto h = open_db(s.db(), 5000);
        rows = query(h.get(), "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)");
        CHECK(query(h.get(), "PRAGMA integrity_check") == "ok");
      }
      {
        auto lh = open_db(s.live(), 5000, SQLITE_OPEN_READONLY);
        live_rows = query(lh.get(), "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)");
        CHECK(query(lh.get(), "PRAGMA integrity_check") == "ok");
      }
      CHECK(live_rows == rows);  // dbfs serves the live subvolume
      // Row 5, committed through the remounted dbfs while the restore ran, is
      // kept: in the live state, or in the safety snapshot (taken after it).
      if (remount_first) {
        std::string safety = res.value("safety", "");
        bool in_safety = false;
        if (!safety.empty() && ::access((s.snapshots + "/" + safety).c_str(), F_OK) == 0) {
          auto h = open_db(s.in_snapshot(safety), 0, SQLITE_OPEN_READONLY);
          in_safety = query_int(h.get(), "SELECT count(*) FROM t WHERE x = 5") == 1;
        }
        CHECK_MESSAGE((rows.find(",5") != std::string::npos || in_safety),
                      "row 5 lost: not in the live state (", rows, ") nor in ", safety);
      }
      // The storage subvolume agrees (the pool's path: always the live one).
      std::string storage_state = slurp(s.storage_sv + "/state");
      std::string extra = remount_first ? ",5" : "";
      if (cs.finished) {
        CHECK_MESSAGE(err == 0, res.dump());
        CHECK(rows == "1,3" + extra);  // the new state: row 2 (before the restore) gone
        CHECK(storage_state == "old");  // as in the snapshot
        // Killed before source-replaced and mounted again: the new one was told.
        if (remount_first && point != "restore:replaced")
          CHECK_MESSAGE(s.snapfs->log().find("exited and another serves it now") !=
                            std::string::npos,
                        s.snapfs->log());
        CHECK(res.value("safety", "").rfind("pre-restore-", 0) == 0);
      } else {
        CHECK_MESSAGE(err == ECONNRESET, res.dump());
        CHECK(res.value("errno", "") == "ECONNRESET");
        std::string why = res.value("error", "");
        CHECK_MESSAGE(why.find("hoody-dbfs serving " + s.databases_sv + " exited") !=
                          std::string::npos,
                      why);
        CHECK(rows == "1,2,3" + extra);  // the old state, whole
        CHECK(storage_state == "new");
      }
      // Nothing held: a writer goes on at once; snapfs waits for nothing and
      // restores again.
      auto t1 = SteadyClock::now();
      {
        auto h = open_db(s.db(), 0);
        CHECK(exec_rc(h.get(), "BEGIN IMMEDIATE") == SQLITE_OK);
        CHECK(exec_rc(h.get(), "INSERT INTO t VALUES (4)") == SQLITE_OK);
        CHECK(exec_rc(h.get(), "COMMIT") == SQLITE_OK);
      }
      CHECK(std::chrono::duration<double, std::milli>(SteadyClock::now() - t1).count() < 1000);
      CHECK(::access((pause + "/go").c_str(), F_OK) != 0);  // taken: snapfs went on
      CHECK(s.restore("pre") == 0);
      CHECK(count(s.db()) == 1);
      std::string how = point + (remount_first ? " (dbfs remounted before snapfs went on)" : "") +
                        ": write returned " + (err ? std::strerror(err) : std::string("ok"));
      MESSAGE(how, " ", go_ms, " ms after snapfs went on (", after_kill_ms,
              " ms after the kill); rows ", rows, ", storage ", storage_state);
    }
  }
}

TEST_CASE("a hoody-dbfs that does not answer: the restore fails with ETIMEDOUT naming it, a snapshot is crash-consistent") {
  require_mount_capabilities();
  System s("allow_other,quiesce_timeout=0.3");
  {
    auto h = open_db(s.db());
    exec(h.get(), "CREATE TABLE t(x INTEGER)");
    exec(h.get(), "INSERT INTO t VALUES (1)");
  }
  s.snapshot("pre");
  {
    auto h = open_db(s.db());
    exec(h.get(), "INSERT INTO t VALUES (2)");
  }
  // Stopped: its control socket accepts, nothing answers.
  REQUIRE(::kill(s.dbfs->pid(), SIGSTOP) == 0);
  struct Cont {
    pid_t p;
    ~Cont() { ::kill(p, SIGCONT); }
  } cont{s.dbfs->pid()};
  int err = 0;
  auto t0 = SteadyClock::now();
  auto res = s.restore_result("pre\n", &err);
  double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
  CHECK(err == ETIMEDOUT);
  CHECK(res.value("errno", "") == "ETIMEDOUT");
  std::string why = res.value("error", "");
  CHECK_MESSAGE(why.find("hoody-dbfs serving " + s.databases_sv) != std::string::npos, why);
  CHECK_MESSAGE(why.find("did not answer quiesce") != std::string::npos, why);
  CHECK(ms < 5000);  // quiesce_timeout + the slack, not forever
  // Nothing swapped, no safety snapshot.
  auto lh = open_db(s.live(), 5000, SQLITE_OPEN_READONLY);
  CHECK(query(lh.get(), "SELECT group_concat(x) FROM (SELECT x FROM t ORDER BY x)") == "1,2");
  auto all = nlohmann::json::parse(slurp(s.snapshots + "/.hoody/snapshots.json"));
  CHECK(all.size() == 1);
  // A snapshot goes on, crash-consistent, and says why.
  s.snapshot("while-stopped");
  std::string c = xattr(s.snapshots + "/while-stopped", "user.hoody.consistency");
  CHECK_MESSAGE(c.rfind("crash hoody-dbfs serving", 0) == 0, c);
  ::kill(s.dbfs->pid(), SIGCONT);
  // Going again, it holds nothing for the connections that gave up on it.
  auto t1 = SteadyClock::now();
  {
    auto h = open_db(s.db(), 0);
    CHECK(exec_rc(h.get(), "INSERT INTO t VALUES (3)") == SQLITE_OK);
  }
  CHECK(std::chrono::duration<double, std::milli>(SteadyClock::now() - t1).count() < 1000);
  CHECK(s.restore("pre") == 0);
  CHECK(count(s.db()) == 1);
  MESSAGE("restore with a stopped hoody-dbfs failed after ", ms, " ms: ", why);
}

TEST_CASE("restore --if-idle with a daemonized hoody-dbfs: refuses while a connection is open, then restores") {
  require_mount_capabilities();
  BtrfsPool pool;
  pool.make_dir("containers");
  std::string c = pool.make_dir("containers/c1");
  pool.make_subvolume("containers/c1/storage");
  std::string dsv = pool.make_subvolume("containers/c1/databases");
  std::string dbm = pool.make_temp_dir("databases"), snm = pool.make_temp_dir("snapshots");
  // As fstab starts it: without -f, it forks after it listens.
  auto id = register_resource(Resource::fuse_mount, dbm);
  ExitInfo start = run({env("HOODY_DBFS"), "-o", "allow_other", dsv, dbm}, 20s);
  REQUIRE_MESSAGE(start.ok(), start.describe());
  struct Unmount {
    std::string m;
    std::uint64_t id;
    ~Unmount() {
      run({"fusermount3", "-u", m});
      release(id);
    }
  } unmount{dbm, id};
  Daemon snapfs({env("HOODY_SNAPFS"), "-f", "-o", "allow_other", c, snm}, snm,
                pool.dir() + "/snapfs.log");
  {
    auto h = open_db(dbm + "/app.db");
    exec(h.get(), "CREATE TABLE t(x INTEGER)");
  }
  REQUIRE(::mkdir((snm + "/pre").c_str(), 0755) == 0);
  {
    auto h = open_db(dbm + "/app.db");
    exec(h.get(), "INSERT INTO t VALUES (1)");
  }
  // Nothing open: the daemon itself (its fds into the subvolume) is no user.
  auto r = run({env("HOODY_SNAP"), "--mount", snm, "restore", "--if-idle", "pre"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe(), snapfs.log());
  // A connection open: refused, with its pid.
  Pipe ready, done;
  std::string db = dbm + "/app.db";
  Child holder([&] {
    sqlite3* h = nullptr;
    if (sqlite3_open(db.c_str(), &h) != SQLITE_OK) return 1;
    sqlite3_exec(h, "SELECT count(*) FROM t", nullptr, nullptr, nullptr);
    ready.signal();
    done.wait_signal(60s);
    sqlite3_close(h);
    return 0;
  });
  REQUIRE(ready.wait_signal());
  r = run({env("HOODY_SNAP"), "--mount", snm, "restore", "--if-idle", "pre"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("  " + std::to_string(holder.pid()) + " ") != std::string::npos,
                r.describe());
  CHECK_MESSAGE(r.output.find("app.db") != std::string::npos, r.describe());
  // Without --if-idle: restored, and the holder is named as one to restart.
  r = run({env("HOODY_SNAP"), "--mount", snm, "restore", "pre"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK_MESSAGE(r.output.find("restart them") != std::string::npos, r.describe());
  CHECK(r.output.find("  " + std::to_string(holder.pid()) + " ") != std::string::npos);
  done.signal();
  holder.wait();
}
