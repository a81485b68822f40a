// The zero-BUSY acceptance harness (research/sqlite-locking.md §5.3): real
// SQLite in forked processes with busy_timeout=0 and no retries.  Each process
// counts every SQLITE_BUSY* by extended code and records which of its
// transactions committed in shared memory (an anonymous MAP_SHARED mapping made
// before the fork), so the test can check the database holds exactly the
// committed rows.
#pragma once

#include <doctest/doctest.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test::sqlh {

using Clock = std::chrono::steady_clock;

struct DbDeleter {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using Db = std::unique_ptr<sqlite3, DbDeleter>;

struct SqlError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline Db open_db(const std::string& path, int busy_ms = 0,
                  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_URI, nullptr);
  Db db(raw);
  if (rc != SQLITE_OK)
    throw SqlError("open " + path + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc)));
  sqlite3_extended_result_codes(db.get(), 1);
  sqlite3_busy_timeout(db.get(), busy_ms);
  return db;
}

// The extended result code of one statement run to completion (rows ignored).
inline int exec_rc(sqlite3* db, const std::string& sql) {
  return sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK
             ? SQLITE_OK
             : sqlite3_extended_errcode(db);
}

inline void exec(sqlite3* db, const std::string& sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
    std::string msg = sql + ": " + (err ? err : "?") + " (" +
                      sqlite3_errstr(sqlite3_extended_errcode(db)) + ")";
    sqlite3_free(err);
    throw SqlError(msg);
  }
}

// The first column of the first row as text ("" when there is no row).
inline std::string query(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
    throw SqlError(sql + ": " + sqlite3_errmsg(db));
  std::unique_ptr<sqlite3_stmt, int (*)(sqlite3_stmt*)> guard(st, sqlite3_finalize);
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    auto* text = sqlite3_column_text(st, 0);
    return text ? reinterpret_cast<const char*>(text) : "NULL";
  }
  if (rc == SQLITE_DONE) return "";
  throw SqlError(sql + ": " + sqlite3_errmsg(db) + " (" +
                 sqlite3_errstr(sqlite3_extended_errcode(db)) + ")");
}

inline long long query_int(sqlite3* db, const std::string& sql) {
  return std::stoll(query(db, sql));
}

// ---- shared memory ------------------------------------------------------------------

template <class T>
struct SharedDeleter {
  void operator()(T* p) const {
    p->~T();
    ::munmap(p, sizeof(T));
  }
};
template <class T>
using SharedPtr = std::unique_ptr<T, SharedDeleter<T>>;

// A T in an anonymous shared mapping: forked children write, the test reads.
template <class T>
SharedPtr<T> make_shared_mem() {
  void* p = ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::runtime_error("mmap shared");
  return SharedPtr<T>(new (p) T());
}

inline constexpr int kMaxProcs = 64;
inline constexpr int kMaxTxns = 4096;

// Extended BUSY codes: SQLITE_BUSY | (n << 8).
inline constexpr const char* kBusyNames[] = {"SQLITE_BUSY", "SQLITE_BUSY_RECOVERY",
                                             "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_TIMEOUT"};

struct ProcStats {
  std::atomic<int> busy[4];
  std::atomic<int> other_errors;
  std::atomic<int> committed;
  std::atomic<int> attempted;
  std::atomic<long long> ops;  // readers: completed reads
  unsigned char txn_committed[kMaxTxns];
  char last_error[256];
};

struct Shared {
  std::atomic<int> go;      // children start together when the test sets it
  std::atomic<int> stop;    // open-ended loops end
  std::atomic<int> flag[8];  // handshakes
  ProcStats procs[kMaxProcs];

  int busy_total() const {
    int n = 0;
    for (const auto& p : procs)
      for (const auto& b : p.busy) n += b.load();
    return n;
  }
  int busy_by(int kind) const {
    int n = 0;
    for (const auto& p : procs) n += p.busy[kind].load();
    return n;
  }
  int other_total() const {
    int n = 0;
    for (const auto& p : procs) n += p.other_errors.load();
    return n;
  }
  int committed_total() const {
    int n = 0;
    for (const auto& p : procs) n += p.committed.load();
    return n;
  }
  std::string busy_report() const {
    std::string s;
    for (int k = 0; k < 4; ++k)
      s += std::string(k ? ", " : "") + kBusyNames[k] + "=" + std::to_string(busy_by(k));
    return s;
  }
  std::string first_error() const {
    for (const auto& p : procs)
      if (p.last_error[0]) return p.last_error;
    return "";
  }
};

// Record a failed step: BUSY* by extended code, anything else as an error.
inline void record_error(ProcStats& me, sqlite3* db, int rc, const char* what) {
  if ((rc & 0xff) == SQLITE_BUSY) {
    int k = rc >> 8;
    me.busy[k >= 0 && k < 4 ? k : 0].fetch_add(1);
  } else {
    me.other_errors.fetch_add(1);
  }
  std::snprintf(me.last_error, sizeof me.last_error, "%s: %s (%s)", what, sqlite3_errmsg(db),
                sqlite3_errstr(rc));
}

inline bool wait_go(const Shared& sh, std::chrono::seconds limit = std::chrono::seconds(30)) {
  auto until = Clock::now() + limit;
  while (!sh.go.load()) {
    if (Clock::now() > until) return false;
    ::usleep(500);
  }
  return true;
}

// ---- the three workloads ------------------------------------------------------------

enum class Kind { autocommit, immediate, deferred, deferred_slow };
inline std::string to_string(Kind k) {
  switch (k) {
    case Kind::autocommit: return "autocommit INSERT";
    case Kind::immediate: return "BEGIN IMMEDIATE";
    case Kind::deferred: return "deferred BEGIN;SELECT;INSERT;COMMIT";
    case Kind::deferred_slow: return "deferred, 20 ms between SELECT and INSERT";
  }
  return "?";
}
inline int rows_per_txn(Kind k) { return k == Kind::immediate ? 2 : 1; }

inline const char* kSchema = "CREATE TABLE IF NOT EXISTS t(p INT, s INT, k INT, v BLOB)";

// Create the database in `mode` ("wal" / "delete") with the table.
inline void create_db(const std::string& path, const std::string& mode) {
  Db db = open_db(path, 5000);
  std::string got = query(db.get(), "PRAGMA journal_mode=" + mode);
  if (got != mode) throw SqlError("journal_mode=" + mode + " gave " + got);
  exec(db.get(), kSchema);
}

inline std::string insert_sql(int p, int s, int k, int blob = 100) {
  return "INSERT INTO t(p, s, k, v) VALUES(" + std::to_string(p) + "," + std::to_string(s) + "," +
         std::to_string(k) + ", randomblob(" + std::to_string(blob) + "))";
}

// One process: `txns` transactions of `kind`, busy_timeout `busy_ms`, no
// retries: a failed transaction is rolled back and counted; the next one goes on.
// Returns 0 (the numbers are in `sh`), or 2 when it could not even open.
inline int worker(Shared& sh, int id, const std::string& path, Kind kind, int txns, int busy_ms,
                  int blob = 100) {
  ProcStats& me = sh.procs[id];
  Db db;
  try {
    db = open_db(path, busy_ms);
  } catch (const std::exception& e) {
    std::snprintf(me.last_error, sizeof me.last_error, "%s", e.what());
    return 2;
  }
  sqlite3* h = db.get();
  if (!wait_go(sh)) return 3;
  for (int s = 0; s < txns && !sh.stop.load(); ++s) {
    me.attempted.fetch_add(1);
    int rc = SQLITE_OK;
    const char* what = "";
    if (kind == Kind::autocommit) {
      what = "INSERT";
      rc = exec_rc(h, insert_sql(id, s, 0, blob));
    } else {
      what = kind == Kind::immediate ? "BEGIN IMMEDIATE" : "BEGIN";
      rc = exec_rc(h, kind == Kind::immediate ? "BEGIN IMMEDIATE" : "BEGIN");
      if (rc == SQLITE_OK && kind != Kind::immediate) {
        what = "SELECT";
        rc = exec_rc(h, "SELECT count(*) FROM t");
        if (kind == Kind::deferred_slow) ::usleep(20000);  // a long read phase
      }
      for (int k = 0; rc == SQLITE_OK && k < rows_per_txn(kind); ++k) {
        what = "INSERT";
        rc = exec_rc(h, insert_sql(id, s, k, blob));
      }
      if (rc == SQLITE_OK) {
        what = "COMMIT";
        rc = exec_rc(h, "COMMIT");
      }
    }
    if (rc == SQLITE_OK) {
      me.txn_committed[s] = 1;
      me.committed.fetch_add(1);
    } else {
      record_error(me, h, rc, what);
      if (!sqlite3_get_autocommit(h)) exec_rc(h, "ROLLBACK");
    }
  }
  return 0;
}

// Check the database holds exactly the committed transactions of procs
// [0, nprocs): each committed (p, s) with all its rows, nothing else.
// `maybe_one_more`: a transaction in flight when its process died may or may
// not have committed (the process could not report it); allow s == committed.
inline void check_rows(sqlite3* db, const Shared& sh, int nprocs, int rows, bool maybe_one_more = false) {
  std::map<std::pair<int, int>, long long> got;
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT p, s, count(*) FROM t GROUP BY p, s", -1, &st, nullptr) ==
          SQLITE_OK);
  while (sqlite3_step(st) == SQLITE_ROW)
    got[{sqlite3_column_int(st, 0), sqlite3_column_int(st, 1)}] = sqlite3_column_int64(st, 2);
  sqlite3_finalize(st);
  int missing = 0, extra = 0, partial = 0;
  std::string first;
  for (int p = 0; p < nprocs; ++p) {
    const ProcStats& ps = sh.procs[p];
    for (int s = 0; s < kMaxTxns; ++s) {
      auto it = got.find({p, s});
      bool committed = ps.txn_committed[s] != 0;
      if (committed && it == got.end()) {
        ++missing;
        if (first.empty()) first = "missing p=" + std::to_string(p) + " s=" + std::to_string(s);
      }
      if (it != got.end()) {
        if (it->second != rows) ++partial;
        if (!committed && !(maybe_one_more && s == ps.committed.load())) {
          ++extra;
          if (first.empty()) first = "extra p=" + std::to_string(p) + " s=" + std::to_string(s);
        }
        got.erase(it);
      }
    }
  }
  CHECK_MESSAGE(missing == 0, missing << " committed transactions missing; " << first);
  CHECK_MESSAGE(extra == 0, extra << " uncommitted transactions present; " << first);
  CHECK_MESSAGE(partial == 0, partial << " transactions with a wrong row count");
  CHECK_MESSAGE(got.empty(), got.size() << " rows from unknown processes");
}

// ---- fixture ------------------------------------------------------------------------

struct Mounted {
  bool capable = (require_mount_capabilities(), true);
  BtrfsPool pool;
  std::string backing;
  std::string mnt;
  std::unique_ptr<Daemon> daemon;

  explicit Mounted(const std::string& options = "allow_other,default_permissions",
                   BtrfsPool::Options popts = {})
      : pool(popts), backing(pool.make_subvolume("databases")), mnt(pool.make_temp_dir("mnt")) {
    start(options);
  }
  void start(const std::string& options = "allow_other,default_permissions") {
    daemon = std::make_unique<Daemon>(dbfs_argv(backing, mnt, options), mnt,
                                      pool.dir() + "/daemon.log");
  }
};

// `hoody-dbfs --status MOUNTPOINT`, parsed.
inline nlohmann::json status_of(const std::string& mnt) {
  std::string out = run_checked({dbfs_command().program, "--status", mnt}, std::chrono::seconds(10));
  return nlohmann::json::parse(out);
}

}  // namespace hoody::test::sqlh
