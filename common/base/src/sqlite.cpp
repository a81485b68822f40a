#include "hoody/sqlite.hpp"

#include "hoody/log.hpp"

namespace hoody::sql {

Errno to_errno(int rc) {
  switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE: return Errno();
    case SQLITE_CONSTRAINT: return Errno(EEXIST);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Errno(EBUSY);
    case SQLITE_NOMEM: return Errno(ENOMEM);
    case SQLITE_FULL: return Errno(ENOSPC);
    case SQLITE_READONLY: return Errno(EROFS);
    case SQLITE_PERM:
    case SQLITE_AUTH: return Errno(EACCES);
    case SQLITE_CANTOPEN: return Errno(ENOENT);
    case SQLITE_TOOBIG: return Errno(E2BIG);
    case SQLITE_MISUSE:
    case SQLITE_RANGE: return Errno(EINVAL);
    default: return Errno(EIO);
  }
}

Result<Db> Db::open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX |
                               SQLITE_OPEN_EXRESCODE,
                           nullptr);
  Db db;
  db.db_.reset(raw);
  if (rc != SQLITE_OK) return fail(db.fail_with(rc, "open " + path));
  return db;
}

Errno Db::fail_with(int rc, std::string_view what) const {
  // SQLITE_BUSY/LOCKED is expected where several processes share a database
  // (the registry): the caller retries or reports it, so it is no warning.
  int primary = rc & 0xff;
  auto level = primary == SQLITE_BUSY || primary == SQLITE_LOCKED ? spdlog::level::debug
                                                                   : spdlog::level::warn;
  log::get("sql")->log(level, "op=sqlite what=\"{}\" rc={} -> {}", what, rc,
                       db_ ? sqlite3_errmsg(db_.get()) : sqlite3_errstr(rc));
  return to_errno(rc);
}

Status Db::exec(const char* sql) {
  int rc = sqlite3_exec(db_.get(), sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return fail(fail_with(rc, sql));
  return {};
}

Stmt::Stmt(const Db& db, const char* sql) : db_(&db), sql_(sql) {
  sqlite3_stmt* raw = nullptr;
  rc_ = sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr);
  s_.reset(raw);
  if (rc_ != SQLITE_OK) err_ = db.fail_with(rc_, sql);
}

Stmt& Stmt::bind(int i, int64_t v) {
  if (ok()) sqlite3_bind_int64(s_.get(), i, v);
  return *this;
}
Stmt& Stmt::bind(int i, std::string_view v) {
  // A string_view is text, never NULL: an empty one may have no data pointer,
  // which sqlite3_bind_text would bind as NULL.
  if (ok())
    sqlite3_bind_text(s_.get(), i, v.data() ? v.data() : "", static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
  return *this;
}
Stmt& Stmt::bind(int i, std::optional<int64_t> v) {
  return v ? bind(i, *v) : bind_null(i);
}
Stmt& Stmt::bind_null(int i) {
  if (ok()) sqlite3_bind_null(s_.get(), i);
  return *this;
}

Result<bool> Stmt::step() {
  if (!ok()) return fail(err_);
  int rc = sqlite3_step(s_.get());
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  // A constraint failure is an expected outcome (EEXIST); keep it quiet.
  if ((rc & 0xff) == SQLITE_CONSTRAINT) return fail(EEXIST);
  return fail(db_->fail_with(rc, sql_));
}

Status Stmt::run() {
  for (;;) {
    HOODY_TRY(row, step());
    if (!row) return {};
  }
}

std::string Stmt::text(int col) const {
  auto p = reinterpret_cast<const char*>(sqlite3_column_text(s_.get(), col));
  if (!p) return {};
  return std::string(p, static_cast<size_t>(sqlite3_column_bytes(s_.get(), col)));
}

}  // namespace hoody::sql
