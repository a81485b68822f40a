// A small RAII layer over sqlite3, shared by the snapshot index of hoody-snapfs
// (containers/C/.snapshots/index.db) and the share registry of hoody-sharefs
// (POOL/shares.db): errors become Errno (SQLITE_CONSTRAINT -> EEXIST,
// BUSY -> EBUSY, FULL -> ENOSPC, ...) and the SQLite message goes to the
// "sql" logger.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "hoody/result.hpp"

namespace hoody::sql {

Errno to_errno(int sqlite_rc);

struct DbDeleter {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
struct StmtDeleter {
  void operator()(sqlite3_stmt* s) const { sqlite3_finalize(s); }
};

class Db {
public:
  // Opens (creating) the database at `path`; no SQLite mutex (the caller serialises).
  static Result<Db> open(const std::string& path);

  Status exec(const char* sql);
  sqlite3* get() const { return db_.get(); }
  int64_t changes() const { return sqlite3_changes64(db_.get()); }
  // The errno of the last failure, logged with SQLite's message and `what`.
  Errno fail_with(int rc, std::string_view what) const;

private:
  std::unique_ptr<sqlite3, DbDeleter> db_;
};

class Stmt {
public:
  Stmt(const Db& db, const char* sql);
  bool ok() const { return rc_ == SQLITE_OK; }
  Errno error() const { return err_; }

  Stmt& bind(int i, int64_t v);
  Stmt& bind(int i, std::string_view v);
  Stmt& bind(int i, std::optional<int64_t> v);
  Stmt& bind_null(int i);

  // true: a row is ready; false: done.
  Result<bool> step();
  // Step to completion (for INSERT/UPDATE/DELETE).
  Status run();

  int64_t int64(int col) const { return sqlite3_column_int64(s_.get(), col); }
  bool is_null(int col) const { return sqlite3_column_type(s_.get(), col) == SQLITE_NULL; }
  std::optional<int64_t> opt_int64(int col) const {
    if (is_null(col)) return std::nullopt;
    return int64(col);
  }
  std::string text(int col) const;

private:
  const Db* db_;
  std::unique_ptr<sqlite3_stmt, StmtDeleter> s_;
  int rc_ = SQLITE_OK;
  Errno err_;
  std::string sql_;
};

// BEGIN IMMEDIATE ... COMMIT; rolls back in the destructor unless committed.
class Txn {
public:
  explicit Txn(Db& db) : db_(db) {}
  Status begin() {
    auto s = db_.exec("BEGIN IMMEDIATE");
    active_ = s.ok();
    return s;
  }
  Status commit() {
    auto s = db_.exec("COMMIT");
    if (s) active_ = false;
    return s;
  }
  ~Txn() {
    if (active_) (void)db_.exec("ROLLBACK");
  }
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;

private:
  Db& db_;
  bool active_ = false;
};

}  // namespace hoody::sql
