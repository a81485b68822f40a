#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "crash.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/errno_name.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store_detail.hpp"


namespace hoody::snapfs {

using json = nlohmann::json;

namespace {

constexpr const char* kSchema = R"(
CREATE TABLE IF NOT EXISTS snapshots(
  name        TEXT    NOT NULL UNIQUE,
  uuid        TEXT    NOT NULL UNIQUE,
  created     INTEGER NOT NULL,            -- ns since the epoch, UTC
  expires     INTEGER,                     -- ns since the epoch; NULL: never
  creator     INTEGER NOT NULL,            -- uid
  type        TEXT    NOT NULL DEFAULT 'filesystem',
  description TEXT    NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS snapshots_expires ON snapshots(expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS audit(
  id     INTEGER PRIMARY KEY,
  time   INTEGER NOT NULL,
  uid    INTEGER NOT NULL,
  pid    INTEGER NOT NULL,
  action TEXT    NOT NULL,
  name   TEXT    NOT NULL,
  result TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS journal(
  id      INTEGER PRIMARY KEY,
  op      TEXT    NOT NULL,                -- create | remove | restore
  name    TEXT    NOT NULL,
  uuid    TEXT    NOT NULL,
  step    INTEGER NOT NULL DEFAULT 0,      -- restore: 1 once every exchange is done
  data    TEXT    NOT NULL DEFAULT '{}',
  started INTEGER NOT NULL
);
)";

// Version 2: the schedule, and the audit rows' second name (target).
constexpr int kSchemaVersion = 2;
constexpr const char* kMigrate2 = R"(
ALTER TABLE audit ADD COLUMN target TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS schedule(
  id           INTEGER PRIMARY KEY CHECK (id = 1),
  every        INTEGER NOT NULL DEFAULT 0,  -- seconds between snapshots; 0: no schedule
  preserve     TEXT    NOT NULL DEFAULT '', -- "24h 7d 4w 12m"
  preserve_min INTEGER NOT NULL DEFAULT 0,  -- seconds
  onchange     INTEGER NOT NULL DEFAULT 0,
  last_slot    INTEGER,                     -- ns; the last slot handled
  last_taken   INTEGER,                     -- ns; the last scheduled snapshot
  generations  TEXT    NOT NULL DEFAULT '{}' -- scope subvolume -> generation after it
);
INSERT OR IGNORE INTO schedule(id) VALUES(1);
PRAGMA user_version = 2;
)";

Result<int64_t> user_version(sql::Db& db) {
  sql::Stmt q(db, "PRAGMA user_version");
  HOODY_TRY(row, q.step());
  return row ? q.int64(0) : 0;
}

// Brings an index of any earlier version to kSchemaVersion, in one transaction.
// (The snapshots table's later columns are added by presence: detail::migrate.)
Status upgrade_index(sql::Db& db) {
  HOODY_TRY(ver, user_version(db));
  if (ver > kSchemaVersion) {
    log::get("snap")->error("op=open index.db user_version={} -> written by a newer hoody-snapfs "
                            "(this one knows {}); upgrade hoody-snapfs",
                            ver, kSchemaVersion);
    return fail(EPROTO);
  }
  if (ver == kSchemaVersion) return {};
  sql::Txn txn(db);
  HOODY_CHECK(txn.begin());
  if (ver < 2) HOODY_CHECK(db.exec(kMigrate2));
  HOODY_CHECK(txn.commit());
  log::get("snap")->info("op=open index.db user_version={} -> upgraded to {}", ver, kSchemaVersion);
  return {};
}

}  // namespace

namespace detail {

int64_t to_ns(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}
TimePoint from_ns(int64_t ns) {
  return TimePoint(std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(ns)));
}
std::optional<int64_t> to_ns(std::optional<TimePoint> t) {
  if (!t) return std::nullopt;
  return to_ns(*t);
}

std::string random_uuid() {
  uint8_t b[16];
  std::size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = ::getrandom(b + got, sizeof b - got, 0);
    if (r > 0) got += static_cast<std::size_t>(r);
  }
  b[6] = static_cast<uint8_t>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<uint8_t>((b[8] & 0x3f) | 0x80);  // variant 1
  return btrfs::format_uuid(b);
}

std::string utc_stamp(TimePoint t) {
  std::time_t tt = Clock::to_time_t(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string result_text(Errno e, std::string_view reason) {
  if (e.value() == 0) return "ok";
  std::string r = errno_name(e.value());
  r += ": ";
  r += reason.empty() ? e.message() : std::string(reason);
  return r;
}

Result<bool> exists(int dirfd, const std::string& name) {
  auto st = sys::fstatat(dirfd, name.c_str(), AT_SYMLINK_NOFOLLOW);
  if (st) return true;
  if (st.err() == ENOENT) return false;
  return fail(st.error());
}

Result<std::vector<std::string>> subvolumes_in(int dirfd) {
  HOODY_TRY(dir, sys::opendir_at(dirfd, "."));
  std::vector<std::string> out;
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(dir.get());
    if (!e) {
      if (errno) return fail(Errno::last());
      break;
    }
    if (e->d_name[0] == '.') continue;
    if (e->d_type != DT_DIR && e->d_type != DT_UNKNOWN) continue;
    auto st = sys::fstatat(dirfd, e->d_name, AT_SYMLINK_NOFOLLOW);
    if (!st) continue;  // raced away
    if (S_ISDIR(st->st_mode) && st->st_ino == btrfs::kSubvolumeRootIno) out.emplace_back(e->d_name);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Subvolumes nested in the scope subvolumes ("storage/docker/btrfs/..."):
// BTRFS snapshots them as empty stubs, so no snapshot holds their data.
Result<std::vector<std::string>> nested_subvolumes(int source_fd,
                                                   const std::vector<std::string>& scope) {
  std::vector<std::string> out;
  for (const auto& sv : scope) {
    HOODY_TRY(fd, btrfs::open_dir(source_fd, sv.c_str()));
    HOODY_TRY(kids, btrfs::children(fd.get()));
    for (auto& k : kids) out.push_back(sv + "/" + k.path);
  }
  return out;
}

Snapshot row_to_snapshot(const sql::Stmt& s) {
  Snapshot out;
  out.name = s.text(0);
  out.uuid = s.text(1);
  out.created = from_ns(s.int64(2));
  if (auto e = s.opt_int64(3)) out.expires = from_ns(*e);
  out.creator = static_cast<uid_t>(s.int64(4));
  out.type = s.text(5);
  out.description = s.text(6);
  out.consistency = s.text(7);
  out.busy = from_json_text(s.text(8));
  out.nested = from_json_text(s.text(9));
  return out;
}

std::string describe_busy(const std::vector<std::string>& busy) {
  std::string s;
  for (const auto& b : busy) s += (s.empty() ? "" : ", ") + b;
  return s;
}

std::string to_json_text(const std::vector<std::string>& v) { return json(v).dump(); }

std::vector<std::string> from_json_text(const std::string& t) {
  auto j = json::parse(t, nullptr, /*allow_exceptions=*/false);
  std::vector<std::string> out;
  if (j.is_array())
    for (auto& x : j)
      if (x.is_string()) out.push_back(x.get<std::string>());
  return out;
}

Status migrate(sql::Db& db) {
  struct Column {
    const char *name, *decl;
  };
  // A snapshot taken before these columns existed was not quiesced: crash.
  static const Column kAdded[] = {
      {"consistency", "TEXT NOT NULL DEFAULT 'crash'"},
      {"busy", "TEXT NOT NULL DEFAULT '[]'"},
      {"nested", "TEXT NOT NULL DEFAULT '[]'"},
  };
  for (const auto& c : kAdded) {
    sql::Stmt q(db, "SELECT 1 FROM pragma_table_info('snapshots') WHERE name = ?");
    q.bind(1, std::string_view(c.name));
    HOODY_TRY(present, q.step());
    if (present) continue;
    std::string alter = std::string("ALTER TABLE snapshots ADD COLUMN ") + c.name + " " + c.decl;
    HOODY_CHECK(db.exec(alter.c_str()));
  }
  return {};
}

}  // namespace detail

using namespace detail;

const std::vector<std::string>& SnapshotStore::crash_points() {
  static const std::vector<std::string> kPoints = {
      "create:journaled",  "create:staged",      "create:quiesced",   "create:subvol-1",
      "create:snapshotted", "create:renamed",    "create:committed",  "remove:journaled",
      "remove:renamed",    "remove:delete-1",    "remove:deleted",    "restore:journaled",
      "restore:copy-1",    "restore:prepared",   "restore:quiesced",  "restore:safety",
      "restore:exchange-1", "restore:exchanged", "restore:committed", "restore:replaced",
      "restore:resumed",   "restore:delete-1",   "restore:deleted",
      // In recover() finishing a restore killed at restore:exchange-1.
      "recover:forward-1",
  };
  return kPoints;
}

SnapshotStore::~SnapshotStore() = default;

// ---- open ---------------------------------------------------------------------

namespace {
// SQLite takes a path; the store directory is ours (0700), reached by its fd.
Result<sql::Db> open_index_db(int store_fd) {
  HOODY_TRY(db, sql::Db::open(sys::proc_fd(store_fd) + "/" + kIndexDb));
  HOODY_CHECK(db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;"));
  return db;
}
}  // namespace

void SnapshotStore::close_index() {
  std::lock_guard lock(db_mu_);
  db_ = sql::Db();
}

Status SnapshotStore::reopen_index() {
  HOODY_TRY(db, open_index_db(store_.get()));
  std::lock_guard lock(db_mu_);
  db_ = std::move(db);
  return {};
}

Result<std::unique_ptr<SnapshotStore>> SnapshotStore::open(int source_fd) {
  auto lg = log::get("snap");
  HOODY_TRY(on_btrfs, btrfs::is_btrfs(source_fd));
  if (!on_btrfs) {
    lg->error("op=open source={} -> not on BTRFS: snapshots need a BTRFS source",
              sys::fd_path(source_fd));
    return fail(EMEDIUMTYPE);
  }
  std::unique_ptr<SnapshotStore> s(new SnapshotStore());
  HOODY_TRY(src, sys::openat(source_fd, ".", O_RDONLY | O_DIRECTORY));
  auto mk = sys::mkdirat(src.get(), kStoreDir, 0700);
  if (!mk && mk.err() != EEXIST) return fail(mk.error());
  HOODY_TRY(store, sys::openat(src.get(), kStoreDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  if (::fchmod(store.get(), 0700) < 0) return fail(Errno::last());
  HOODY_TRY(lock, sys::openat(store.get(), kLockFile, O_RDWR | O_CREAT | O_NOFOLLOW, 0600));
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) < 0) {
    Errno e = Errno::last();
    if (e.value() == EWOULDBLOCK) {
      // Not an error here: hoody-snap falls back to a shared open, and the
      // daemon's start says what it means for it.
      lg->debug("op=open store={} -> another hoody-snapfs holds this store",
                sys::fd_path(store.get()));
      return fail(EBUSY);
    }
    return fail(e);
  }
  HOODY_TRY(db, open_index_db(store.get()));
  HOODY_CHECK(db.exec(kSchema));
  HOODY_CHECK(upgrade_index(db));
  HOODY_CHECK(migrate(db));
  s->source_ = std::move(src);
  s->store_ = std::move(store);
  s->lock_ = std::move(lock);
  s->db_ = std::move(db);
  lg->info("op=open store={}", sys::fd_path(s->store_.get()));
  HOODY_CHECK(s->recover());
  return s;
}

// ---- index helpers --------------------------------------------------------------

Result<std::optional<Snapshot>> SnapshotStore::find(std::string_view name) const {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, (std::string(kSelect) + " WHERE name = ?").c_str());
  q.bind(1, name);
  HOODY_TRY(row, q.step());
  if (!row) return std::optional<Snapshot>();
  return std::optional<Snapshot>(row_to_snapshot(q));
}

Status SnapshotStore::insert_row_ending_journal(const Snapshot& snap, int64_t jid) {
  // Called with db_mu_ held, inside a transaction.
  sql::Stmt ins(db_,
                "INSERT INTO snapshots(name, uuid, created, expires, creator, type, description, "
                "consistency, busy, nested) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  ins.bind(1, snap.name)
      .bind(2, snap.uuid)
      .bind(3, to_ns(snap.created))
      .bind(4, to_ns(snap.expires))
      .bind(5, static_cast<int64_t>(snap.creator))
      .bind(6, snap.type)
      .bind(7, snap.description)
      .bind(8, snap.consistency)
      .bind(9, to_json_text(snap.busy))
      .bind(10, to_json_text(snap.nested));
  HOODY_CHECK(ins.run());
  sql::Stmt del(db_, "DELETE FROM journal WHERE id = ?");
  del.bind(1, jid);
  return del.run();
}

Status SnapshotStore::audit(const Caller& caller, std::string_view action, std::string_view name,
                            std::string_view result, std::string_view target) {
  // Called with db_mu_ held.
  sql::Stmt q(db_,
              "INSERT INTO audit(time, uid, pid, action, name, result, target) "
              "VALUES(?, ?, ?, ?, ?, ?, ?)");
  q.bind(1, to_ns(now()))
      .bind(2, static_cast<int64_t>(caller.uid))
      .bind(3, static_cast<int64_t>(caller.pid))
      .bind(4, action)
      .bind(5, name)
      .bind(6, result)
      .bind(7, target);
  return q.run();
}

Status SnapshotStore::record(const Caller& caller, std::string_view action, std::string_view name,
                             Errno err, std::string_view target, std::string_view reason) {
  std::lock_guard lock(db_mu_);
  return audit(caller, action, name, result_text(err, reason), target);
}

void SnapshotStore::audit_result(const Caller& caller, std::string_view action,
                                 std::string_view name, Errno err, std::string_view reason) {
  std::lock_guard lock(db_mu_);
  if (!audit(caller, action, name, result_text(err, reason)))
    log::get("snap")->warn("op=audit action={} name={} -> not recorded", action, quote_name(name));
}

Result<int64_t> SnapshotStore::journal_begin(std::string_view op, std::string_view name,
                                             std::string_view uuid, const std::string& data) {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, "INSERT INTO journal(op, name, uuid, data, started) VALUES(?, ?, ?, ?, ?)");
  q.bind(1, op).bind(2, name).bind(3, uuid).bind(4, data).bind(5, to_ns(Clock::now()));
  HOODY_CHECK(q.run());
  return sqlite3_last_insert_rowid(db_.get());
}

Status SnapshotStore::journal_update(int64_t id, int step, const std::string& data) {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, "UPDATE journal SET step = ?, data = ? WHERE id = ?");
  q.bind(1, static_cast<int64_t>(step)).bind(2, data).bind(3, id);
  return q.run();
}

Status SnapshotStore::journal_end(int64_t id) {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, "DELETE FROM journal WHERE id = ?");
  q.bind(1, id);
  return q.run();
}

Result<int64_t> SnapshotStore::pending_operations() const {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, "SELECT count(*) FROM journal");
  HOODY_TRY(row, q.step());
  return row ? q.int64(0) : 0;
}

// Delete .snapshots/<dir_name> and the subvolumes in it; ENOENT counts as done.
// `op` names the crash point "<op>:delete-1" (after the first subvolume).
Status SnapshotStore::purge(const char* dir_name, const char* op) {
  auto dfd = sys::openat(store_.get(), dir_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!dfd) return dfd.err() == ENOENT ? Status() : fail(dfd.error());
  HOODY_TRY(entries, sys::opendir_at(dfd->get(), "."));
  std::vector<std::string> names;
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(entries.get());
    if (!e) {
      if (errno) return fail(Errno::last());
      break;
    }
    std::string_view n = e->d_name;
    if (n != "." && n != "..") names.emplace_back(n);
  }
  std::sort(names.begin(), names.end());
  int deleted = 0;
  for (const auto& n : names) {
    HOODY_TRY(st, sys::fstatat(dfd->get(), n.c_str(), AT_SYMLINK_NOFOLLOW));
    if (S_ISDIR(st.st_mode) && st.st_ino == btrfs::kSubvolumeRootIno) {
      // Never recursive: store directories hold no nested subvolumes (BTRFS
      // snapshots them as empty stubs), so a nested one is someone's data
      // (ENOTEMPTY, the journal entry stays).
      HOODY_CHECK(btrfs::delete_subvolume(dfd->get(), n.c_str(), /*recursive=*/false));
      if (++deleted == 1 && op) crash_point(op, "delete-1");
    } else {
      HOODY_CHECK(sys::unlinkat(dfd->get(), n.c_str(), S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0));
    }
  }
  dfd->reset();
  HOODY_CHECK(sys::unlinkat(store_.get(), dir_name, AT_REMOVEDIR));
  return {};
}

// ---- queries --------------------------------------------------------------------

Result<std::vector<Snapshot>> SnapshotStore::list() const {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, (std::string(kSelect) + " ORDER BY created, name").c_str());
  std::vector<Snapshot> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) break;
    out.push_back(row_to_snapshot(q));
  }
  return out;
}

Result<Snapshot> SnapshotStore::get(std::string_view name) const {
  HOODY_TRY(s, find(name));
  if (!s) return fail(ENOENT);
  return std::move(*s);
}

Result<std::vector<std::string>> SnapshotStore::scope() const { return subvolumes_in(source_.get()); }

Result<std::vector<std::string>> SnapshotStore::live_nested() const {
  HOODY_TRY(subvols, scope());
  return nested_subvolumes(source_.get(), subvols);
}

Result<UniqueFd> SnapshotStore::open_snapshot(std::string_view name) const {
  HOODY_TRY(s, get(name));
  return sys::openat(store_.get(), s.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
}

Result<std::vector<AuditEntry>> SnapshotStore::audit_log(std::size_t limit) const {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_,
              "SELECT time, uid, pid, action, name, result, target FROM "
              "(SELECT * FROM audit ORDER BY id DESC LIMIT ?) ORDER BY id");
  q.bind(1, static_cast<int64_t>(limit));
  std::vector<AuditEntry> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) break;
    out.push_back(AuditEntry{from_ns(q.int64(0)), static_cast<uid_t>(q.int64(1)),
                             static_cast<pid_t>(q.int64(2)), q.text(3), q.text(4), q.text(5),
                             q.text(6)});
  }
  return out;
}

// ---- names, rename, metadata ------------------------------------------------------

// check_snapshot_name (a new name, or an existing one that may hold ".." from
// before that rule); refusals are logged and audited.
Status SnapshotStore::check_name(std::string_view action, std::string_view name,
                                 std::string_view what, const Caller& caller, NameUse use,
                                 std::string_view target) {
  std::string reason;
  Status v = check_snapshot_name(name, &reason, use);
  if (v) return {};
  log::get("snap")->info("op={} uid={} -> {}", action, caller.uid, reason);
  std::lock_guard lock(db_mu_);
  (void)audit(caller, action, what, result_text(v.error(), reason), target);
  return v;
}

Status SnapshotStore::rename(std::string_view from, std::string_view to, const Caller& caller) {
  HOODY_CHECK(check_name("rename", from, from, caller, NameUse::existing, to));
  HOODY_CHECK(check_name("rename", to, from, caller, NameUse::new_name, to));
  std::lock_guard dl(db_mu_);
  Errno err;
  std::string why;
  {
    sql::Stmt q(db_, "UPDATE snapshots SET name = ? WHERE name = ?");
    q.bind(1, to).bind(2, from);
    auto s = q.run();
    if (!s) {
      err = s.error();
      if (err.value() == EEXIST) why = "snapshot " + quote_name(to) + " exists";
    } else if (db_.changes() == 0) {
      err = Errno(ENOENT);
      why = "no snapshot " + quote_name(from);
    }
  }
  (void)audit(caller, "rename", from, result_text(err, why), to);
  if (err.value()) return fail(err);
  log::get("snap")->info("op=rename from={} to={} uid={} -> ok", quote_name(from), quote_name(to),
                         caller.uid);
  return {};
}

Status SnapshotStore::set_expires(std::string_view name, std::optional<TimePoint> expires,
                                  const Caller& caller) {
  std::lock_guard dl(db_mu_);
  sql::Stmt q(db_, "UPDATE snapshots SET expires = ? WHERE name = ?");
  q.bind(1, to_ns(expires)).bind(2, name);
  HOODY_CHECK(q.run());
  Errno err(db_.changes() == 0 ? ENOENT : 0);
  (void)audit(caller, "set_expires", name, result_text(err, "no such snapshot"),
              expires ? utc_stamp(*expires) : std::string("never"));
  if (err.value()) return fail(err);
  return {};
}

Status SnapshotStore::set_description(std::string_view name, std::string_view description,
                                      const Caller& caller) {
  if (description.size() > kMaxDescriptionBytes) return fail(E2BIG);
  std::lock_guard dl(db_mu_);
  sql::Stmt q(db_, "UPDATE snapshots SET description = ? WHERE name = ?");
  q.bind(1, description).bind(2, name);
  HOODY_CHECK(q.run());
  Errno err(db_.changes() == 0 ? ENOENT : 0);
  (void)audit(caller, "set_description", name, result_text(err, "no such snapshot"));
  if (err.value()) return fail(err);
  return {};
}

Status SnapshotStore::set_type_sync(std::string_view name, const Caller& caller) {
  std::lock_guard dl(db_mu_);
  sql::Stmt q(db_, "UPDATE snapshots SET type = 'sync' WHERE name = ? AND type = 'filesystem'");
  q.bind(1, name);
  HOODY_CHECK(q.run());
  Errno err;
  std::string why;
  if (db_.changes() == 0) {
    sql::Stmt e(db_, "SELECT type FROM snapshots WHERE name = ?");
    e.bind(1, name);
    auto row = e.step();
    HOODY_CHECK(row);
    err = Errno(*row ? EPERM : ENOENT);
    why = *row ? "only a filesystem snapshot may be marked sync" : "no such snapshot";
  }
  (void)audit(caller, "set_type", name, result_text(err, why), "sync");
  if (err.value()) return fail(err);
  return {};
}

}  // namespace hoody::snapfs
