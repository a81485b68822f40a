// Crash safety through hoody-dbfs (issue 4): kill -9 of writers in the middle
// of transactions (token holders and token waiters) while others keep writing;
// kill -9 of the daemon under load, then a new daemon; a full backing
// filesystem.  Every case ends with PRAGMA integrity_check and with exactly the
// rows that were reported committed.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

// A victim: BEGIN IMMEDIATE, a transaction big enough to spill out of a tiny
// page cache (rollback: pages written into the db file, a hot journal; WAL:
// uncommitted frames), then it reports (flag[slot]) and sleeps until killed.
int victim(Shared& sh, int id, int slot, const std::string& path) {
  ProcStats& me = sh.procs[id];
  Db db = open_db(path, 0);
  exec(db.get(), "PRAGMA cache_size=5");
  int rc = exec_rc(db.get(), "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) {
    record_error(me, db.get(), rc, "victim BEGIN IMMEDIATE");
    return 1;
  }
  sh.flag[slot] = 1;  // holds the token (or, for the second victim, waited for it)
  for (int k = 0; k < 60; ++k) {
    rc = exec_rc(db.get(), insert_sql(id, 0, k, 3000));
    if (rc != SQLITE_OK) {
      record_error(me, db.get(), rc, "victim INSERT");
      return 1;
    }
  }
  sh.flag[slot] = 2;
  ::pause();
  return 0;
}

bool wait_flag(const Shared& sh, int slot, int value, std::chrono::milliseconds limit) {
  auto until = Clock::now() + limit;
  while (sh.flag[slot].load() < value)
    if (Clock::now() > until) return false;
    else ::usleep(1000);
  return true;
}

}  // namespace

TEST_CASE("kill -9 of writers mid-transaction (token holder and waiter): others go on, nothing lost") {
  Mounted m;
  for (std::string mode : {"delete", "wal"}) {
    CAPTURE(mode);
    std::string path = m.mnt + "/crash-" + mode + ".db";
    create_db(path, mode);
    auto sh = make_shared_mem<Shared>();
    constexpr int kSteady = 3;
    std::vector<Child> steady;
    for (int i = 0; i < kSteady; ++i)
      steady.emplace_back([&, i] { return worker(*sh, i, path, Kind::immediate, kMaxTxns, 0); },
                          ChildOptions{.timeout = 120s});
    sh->go = 1;
    constexpr int kRounds = 5;
    int holders_killed = 0, waiters_killed = 0;
    for (int round = 0; round < kRounds; ++round) {
      int hid = 10 + 2 * round, wid = hid + 1;
      sh->flag[0] = 0;
      sh->flag[1] = 0;
      Child holder([&] { return victim(*sh, hid, 0, path); });
      REQUIRE_MESSAGE(wait_flag(*sh, 0, 2, 20s), "the victim did not get its transaction going: "
                                                     << sh->first_error());
      // A second victim queues behind it for the token.
      Child waiter([&] { return victim(*sh, wid, 1, path); });
      ::usleep(150000);
      // Alternate who dies first: the holder (the waiter then gets the token
      // and dies later with it) or the waiter (dies queued).
      if (round % 2 == 0) {
        ::kill(holder.pid(), SIGKILL);
        ++holders_killed;
        holder.wait();
        wait_flag(*sh, 1, 2, 5s);  // the waiter may have got the token by now
        ::kill(waiter.pid(), SIGKILL);
        ++(sh->flag[1].load() >= 1 ? holders_killed : waiters_killed);
        waiter.wait();
      } else {
        CHECK(sh->flag[1].load() == 0);  // still queued
        ::kill(waiter.pid(), SIGKILL);
        ++waiters_killed;
        waiter.wait();
        ::kill(holder.pid(), SIGKILL);
        ++holders_killed;
        holder.wait();
      }
      int before = sh->committed_total();
      ::usleep(300000);
      CHECK_MESSAGE(sh->committed_total() > before, "the other writers made no progress after round "
                                                        << round);
    }
    sh->stop = 1;
    for (auto& c : steady) {
      ExitInfo e = c.wait();
      CHECK_MESSAGE(e.ok(), e.describe());
    }
    MESSAGE(mode << ": killed " << holders_killed << " token holders and " << waiters_killed
                 << " queued waiters; the " << kSteady << " others committed "
                 << sh->committed_total() << " transactions; " << sh->busy_report());
    CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report() << "; " << sh->first_error());
    CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
    Db db = open_db(path, 0);
    CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
    check_rows(db.get(), *sh, 10 + 2 * kRounds, rows_per_txn(Kind::immediate));
  }
  auto st = status_of(m.mnt);
  MESSAGE("lock counters: " << st["locks"].dump());
  CHECK(st["state"]["waits"].empty());
}

TEST_CASE("kill -9 of the daemon under load: ENOTCONN, remount, every committed row, integrity ok") {
  Mounted m;
  struct Db1 {
    std::string mode;
    std::string name;
    SharedPtr<Shared> sh = make_shared_mem<Shared>();
  };
  std::vector<Db1> dbs;
  dbs.push_back({"delete", "killd-delete.db"});
  dbs.push_back({"wal", "killd-wal.db"});
  for (auto& d : dbs) create_db(m.mnt + "/" + d.name, d.mode);
  std::vector<Child> kids;
  for (auto& d : dbs) {
    std::string path = m.mnt + "/" + d.name;
    Shared* sh = d.sh.get();
    for (int i = 0; i < 3; ++i) {
      // One writer with big rows (overflow pages: journal/WAL frames in flight).
      int blob = i == 0 ? 40000 : 200;
      Kind kind = i == 2 ? Kind::immediate : Kind::autocommit;
      kids.emplace_back([=] { return worker(*sh, i, path, kind, kMaxTxns, 0, blob); },
                        ChildOptions{.timeout = 60s});
    }
    sh->go = 1;
  }
  ::usleep(1500000);
  for (auto& d : dbs) REQUIRE(d.sh->committed_total() > 0);
  std::vector<std::string> busy_before;
  for (auto& d : dbs) busy_before.push_back(d.sh->busy_report());
  int busy_total_before = dbs[0].sh->busy_total() + dbs[1].sh->busy_total();
  REQUIRE(::kill(m.daemon->pid(), SIGKILL) == 0);
  ::usleep(300000);
  struct stat st;
  // A name never looked up: no cached attributes, the request must reach the daemon.
  int r = ::stat((m.mnt + "/never-seen").c_str(), &st);
  int err = errno;
  CHECK(r == -1);
  CHECK_MESSAGE(err == ENOTCONN, std::strerror(err));
  for (auto& d : dbs) d.sh->stop = 1;
  // Until the kill, no BUSY (after it every call fails: ENOTCONN).
  CHECK_MESSAGE(busy_total_before == 0, busy_before[0] << "; " << busy_before[1]);
  for (auto& k : kids) {
    ExitInfo e = k.wait();
    CHECK_FALSE(e.timed_out);  // none hangs on the dead mount
  }
  std::string how = m.daemon->terminate(SIGKILL);  // reaps; fusermount3 -uz
  MESSAGE("daemon: " << how);
  CHECK_FALSE(is_mounted(m.mnt));
  std::string leftovers;
  for (auto& d : dbs)
    for (const char* suffix : {"-journal", "-wal"}) {
      struct stat s;
      if (::stat((m.backing + "/" + d.name + suffix).c_str(), &s) == 0 && s.st_size > 0)
        leftovers += " " + d.name + suffix + " (" + std::to_string(s.st_size) + " bytes)";
    }
  MESSAGE("left in the backing directory:" << (leftovers.empty() ? " nothing" : leftovers));

  m.start();
  for (auto& d : dbs) {
    CAPTURE(d.mode);
    Db db = open_db(m.mnt + "/" + d.name, 0);
    CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
    CHECK(query(db.get(), "PRAGMA journal_mode") == d.mode);
    MESSAGE(d.mode << ": " << d.sh->committed_total() << " transactions reported committed, "
                   << query(db.get(), "SELECT count(DISTINCT p || '/' || s) FROM t")
                   << " found after the remount");
    // Rows per transaction differ per writer (immediate: 2); check each.
    std::map<int, int> rows_of = {{0, 1}, {1, 1}, {2, 2}};
    std::map<std::pair<int, int>, long long> got;
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db.get(), "SELECT p, s, count(*) FROM t GROUP BY p, s", -1, &q, nullptr) ==
            SQLITE_OK);
    while (sqlite3_step(q) == SQLITE_ROW)
      got[{sqlite3_column_int(q, 0), sqlite3_column_int(q, 1)}] = sqlite3_column_int64(q, 2);
    sqlite3_finalize(q);
    int missing = 0, extra = 0, partial = 0;
    for (auto [p, rows] : rows_of) {
      const ProcStats& ps = d.sh->procs[p];
      for (int s = 0; s < kMaxTxns; ++s) {
        auto it = got.find({p, s});
        if (ps.txn_committed[s] && it == got.end()) ++missing;
        if (it != got.end()) {
          if (it->second != rows) ++partial;
          if (!ps.txn_committed[s] && s != ps.committed.load()) ++extra;
        }
      }
    }
    CHECK_MESSAGE(missing == 0, missing << " reported-committed transactions lost");
    CHECK_MESSAGE(extra == 0, extra << " transactions present that were never attempted to commit");
    CHECK_MESSAGE(partial == 0, partial << " torn transactions");
    CHECK(exec_rc(db.get(), insert_sql(9, 0, 0)) == SQLITE_OK);  // writable again
    if (d.mode == "delete") {
      struct stat js;
      CHECK_MESSAGE(::stat((m.backing + "/" + d.name + "-journal").c_str(), &js) < 0,
                    "the hot journal is still there after the remount");
    }
  }
}

TEST_CASE("a full backing filesystem gives SQLITE_FULL and no corruption") {
  require_mount_capabilities();
  Mounted m("allow_other,default_permissions", BtrfsPool::Options{256ull << 20});
  std::vector<std::string> modes = {"delete", "wal"};
  // Connections open before the disk fills (WAL: the -shm exists; SQLite
  // cannot create a -shm on a full disk at all: SQLITE_IOERR_SHMSIZE).
  std::map<std::string, Db> conns;
  for (auto& mode : modes) {
    create_db(m.mnt + "/full-" + mode + ".db", mode);
    conns[mode] = open_db(m.mnt + "/full-" + mode + ".db", 0);
    exec(conns[mode].get(), insert_sql(0, 0, 0, 1000));
  }
  // Fill the pool from the backing side, then give back a few MiB.
  std::string filler = m.pool.path() + "/filler";
  {
    int fd = ::open(filler.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    std::vector<char> buf(1 << 20, 'f');
    off_t size = 0;
    for (ssize_t n; (n = ::write(fd, buf.data(), buf.size())) > 0;) size += n;
    ::fsync(fd);
    ::close(fd);
    MESSAGE("filler: " << (size >> 20) << " MiB until ENOSPC; each mode gets 12 MiB back");
  }
  auto give_back = [&] {
    struct stat fst;
    REQUIRE(::stat(filler.c_str(), &fst) == 0);
    REQUIRE(::truncate(filler.c_str(), fst.st_size > (12 << 20) ? fst.st_size - (12 << 20) : 0) == 0);
    run({"sync"}, 30s);
  };
  std::map<std::string, long long> committed;
  for (auto& mode : modes) {
    CAPTURE(mode);
    give_back();
    sqlite3* db = conns[mode].get();
    int rc = SQLITE_OK;
    long long n = 1;
    for (int s = 1; s < 2000; ++s) {
      rc = exec_rc(db, insert_sql(0, s, 0, 200000));
      if (rc != SQLITE_OK) break;
      ++n;
    }
    committed[mode] = n;
    MESSAGE(mode << ": " << n - 1 << " inserts of 200 kB committed, then "
                 << std::string(sqlite3_errstr(rc)) << " (" << rc
                 << "): " << std::string(sqlite3_errmsg(db)));
    CHECK_MESSAGE((rc & 0xff) == SQLITE_FULL, std::string(sqlite3_errstr(rc)));
    CHECK(n > 1);
    if (!sqlite3_get_autocommit(db)) exec_rc(db, "ROLLBACK");
  }
  conns.clear();
  REQUIRE(::unlink(filler.c_str()) == 0);
  run({"sync"}, 30s);
  for (auto& mode : modes) {
    CAPTURE(mode);
    Db db = open_db(m.mnt + "/full-" + mode + ".db", 0);
    CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
    CHECK(query_int(db.get(), "SELECT count(*) FROM t") == committed[mode]);
    CHECK(exec_rc(db.get(), insert_sql(1, 0, 0)) == SQLITE_OK);  // writable again
  }
}
