#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
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
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;

struct SnapshotStore::Journal {
  int64_t id = 0;
  std::string op, name, uuid;
  int step = 0;
  json data;
};

namespace {

constexpr const char* kStagingPrefix = ".staging-";
constexpr const char* kTrashPrefix = ".trash-";
constexpr const char* kRestorePrefix = ".restore-";
constexpr const char* kDiffPrefix = ".diff-";
constexpr const char* kLockFile = "lock";

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
PRAGMA user_version = 1;
)";

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

std::string errno_name(Errno e) {
  const char* n = ::strerrorname_np(e.value());
  return n ? n : std::to_string(e.value());
}

std::string result_text(Errno e, std::string_view reason) {
  if (e.value() == 0) return "ok";
  std::string r = errno_name(e);
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

// Subvolume roots directly inside dirfd, skipping '.' names, sorted.
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

// Whether a mount visible here has its root inside .snapshots/<dir>: a bind
// mount of a live subvolume that a restore swapped out.  Deleting that
// subvolume would leave the mount showing an empty, deleted directory.
bool mounted_beneath(const std::string& dir) {
  auto info = sys::read_file(AT_FDCWD, "/proc/self/mountinfo");
  if (!info) return false;
  const std::string needle = std::string("/") + kStoreDir + "/" + dir;
  std::string_view all = *info;
  while (!all.empty()) {
    auto nl = all.find('\n');
    std::string_view line = all.substr(0, nl);
    all.remove_prefix(nl == std::string_view::npos ? all.size() : nl + 1);
    // id parent major:minor root mountpoint ...
    std::size_t pos = 0;
    for (int f = 0; f < 3 && pos != std::string_view::npos; ++f) {
      pos = line.find(' ', pos);
      if (pos != std::string_view::npos) ++pos;
    }
    if (pos == std::string_view::npos) continue;
    std::string_view root = line.substr(pos, line.find(' ', pos) - pos);
    auto at = root.find(needle);
    if (at == std::string_view::npos) continue;
    auto end = at + needle.size();
    if (end == root.size() || root[end] == '/') return true;
  }
  return false;
}

// Re-attach the mounts visible here whose root lies inside an old live
// subvolume that a restore swapped out to .snapshots/<work>/<sv>: each is
// detached and bound again to the same place inside the restored SOURCE/<sv>,
// with its ro/nosuid/nodev/noexec flags.  So /hoody/storage (a bind mount of
// the storage subvolume) shows the restored state, and the old subvolume can
// go.  Mounts made in other mount namespaces cannot be seen from here: their
// owner re-attaches them (hoody-up does, when run again).
void reattach_mounts(int source_fd, const std::string& work) {
  auto lg = log::get("snap");
  auto info = sys::read_file(AT_FDCWD, "/proc/self/mountinfo");
  if (!info) return;
  const std::string needle = std::string("/") + kStoreDir + "/" + work + "/";
  std::istringstream lines(*info);
  std::string line;
  struct Target {
    std::string mountpoint, inside, opts;
  };
  std::vector<Target> targets;
  while (std::getline(lines, line)) {
    std::istringstream f(line);
    std::string id, parent, dev, root, mnt, opts;
    f >> id >> parent >> dev >> root >> mnt >> opts;
    auto at = root.find(needle);
    if (at == std::string::npos) continue;
    // root = .../.snapshots/<work>/<sv>[/sub]: the same place under SOURCE.
    targets.push_back({mnt, root.substr(at + needle.size()), opts});
  }
  for (auto& t : targets) {
    auto unescape = [](std::string v) {
      std::string out;
      for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] == '\\' && i + 3 < v.size()) {
          out += static_cast<char>((v[i + 1] - '0') * 64 + (v[i + 2] - '0') * 8 + (v[i + 3] - '0'));
          i += 3;
        } else {
          out += v[i];
        }
      }
      return out;
    };
    std::string mnt = unescape(t.mountpoint);
    std::string from = sys::proc_fd(source_fd) + "/" + unescape(t.inside);
    unsigned long flags = 0;
    for (auto& [name, bit] : {std::pair<const char*, unsigned long>{"ro", MS_RDONLY},
                              {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC}}) {
      std::string o = "," + t.opts + ",";
      if (o.find(std::string(",") + name + ",") != std::string::npos) flags |= bit;
    }
    if (::umount2(mnt.c_str(), MNT_DETACH) < 0 ||
        ::mount(from.c_str(), mnt.c_str(), nullptr, MS_BIND, nullptr) < 0) {
      lg->error("op=restore mount={} -> cannot re-attach to the restored subvolume: {}", mnt,
                std::strerror(errno));
      continue;
    }
    if (flags && ::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | MS_BIND | flags, nullptr) < 0)
      lg->warn("op=restore mount={} -> re-attached, but its flags could not be restored: {}", mnt,
               std::strerror(errno));
    lg->info("op=restore mount={} -> re-attached to the restored {}", mnt, t.inside);
  }
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
  return out;
}

constexpr const char* kSelect =
    "SELECT name, uuid, created, expires, creator, type, description FROM snapshots";

}  // namespace

const std::vector<std::string>& SnapshotStore::crash_points() {
  static const std::vector<std::string> kPoints = {
      "create:journaled", "create:staged",    "create:subvol-1",   "create:snapshotted",
      "create:renamed",   "create:committed", "remove:journaled",  "remove:renamed",
      "remove:delete-1",  "remove:deleted",   "restore:safety",    "restore:journaled",
      "restore:copy-1",   "restore:prepared", "restore:exchange-1", "restore:exchanged",
      "restore:committed", "restore:delete-1", "restore:deleted",
      // In recover() undoing a restore killed at restore:exchanged.
      "recover:swapback-1",
  };
  return kPoints;
}

SnapshotStore::~SnapshotStore() = default;

// ---- open ---------------------------------------------------------------------

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
      lg->error("op=open store={} -> another hoody-snapfs holds this store",
                sys::fd_path(store.get()));
      return fail(EBUSY);
    }
    return fail(e);
  }
  // SQLite takes a path; the store directory is ours (0700), reached by its fd.
  HOODY_TRY(db, sql::Db::open(sys::proc_fd(store.get()) + "/" + kIndexDb));
  HOODY_CHECK(db.exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;"));
  HOODY_CHECK(db.exec(kSchema));
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

Status SnapshotStore::audit(const Caller& caller, std::string_view action, std::string_view name,
                            std::string_view result) {
  // Called with db_mu_ held.
  sql::Stmt q(db_,
              "INSERT INTO audit(time, uid, pid, action, name, result) VALUES(?, ?, ?, ?, ?, ?)");
  q.bind(1, to_ns(Clock::now()))
      .bind(2, static_cast<int64_t>(caller.uid))
      .bind(3, static_cast<int64_t>(caller.pid))
      .bind(4, action)
      .bind(5, name)
      .bind(6, result);
  return q.run();
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

Result<UniqueFd> SnapshotStore::open_snapshot(std::string_view name) const {
  HOODY_TRY(s, get(name));
  return sys::openat(store_.get(), s.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
}

Result<std::vector<AuditEntry>> SnapshotStore::audit_log(std::size_t limit) const {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_,
              "SELECT time, uid, pid, action, name, result FROM "
              "(SELECT * FROM audit ORDER BY id DESC LIMIT ?) ORDER BY id");
  q.bind(1, static_cast<int64_t>(limit));
  std::vector<AuditEntry> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) break;
    out.push_back(AuditEntry{from_ns(q.int64(0)), static_cast<uid_t>(q.int64(1)),
                             static_cast<pid_t>(q.int64(2)), q.text(3), q.text(4), q.text(5)});
  }
  return out;
}

// ---- create -------------------------------------------------------------------

// The name rules plus the reserved kLive; refusals are logged and audited.
Status SnapshotStore::check_name(std::string_view action, std::string_view name,
                                 std::string_view what, const Caller& caller) {
  std::string reason;
  Status v = validate_snapshot_name(name, &reason);
  if (v && name == kLive) {
    v = fail(EINVAL);
    reason = "snapshot " + quote_name(name) + ": name is reserved for the live state";
  }
  if (v) return {};
  log::get("snap")->info("op={} uid={} -> {}", action, caller.uid, reason);
  audit_result(caller, action, what, v.error(), reason);
  return v;
}

Result<Snapshot> SnapshotStore::create(std::string_view name, const Caller& caller,
                                       const CreateOptions& opts) {
  std::lock_guard lock(op_mu_);
  return create_locked(name, caller, opts);
}

Result<Snapshot> SnapshotStore::create_locked(std::string_view name, const Caller& caller,
                                              const CreateOptions& opts) {
  auto lg = log::get("snap");
  HOODY_CHECK(check_name("create", name, name, caller));
  if (opts.description.size() > kMaxDescriptionBytes) {
    audit_result(caller, "create", name, Errno(E2BIG), "description too long");
    return fail(E2BIG);
  }
  HOODY_TRY(existing, find(name));
  if (existing) {
    audit_result(caller, "create", name, Errno(EEXIST), "snapshot " + quote_name(name) + " exists");
    return fail(EEXIST);
  }
  HOODY_TRY(subvols, scope());
  if (auto nested = nested_subvolumes(source_.get(), subvols); nested && !nested->empty())
    lg->warn("op=create name={} -> nested subvolume {} (and {} more) is not captured: snapshots "
             "hold an empty directory in its place",
             quote_name(name), nested->front(), nested->size() - 1);

  Snapshot snap;
  snap.name = std::string(name);
  snap.uuid = random_uuid();
  snap.created = Clock::now();
  snap.expires = opts.expires;
  snap.creator = caller.uid;
  snap.description = opts.description;
  auto t0 = std::chrono::steady_clock::now();

  double window_ms = 0;  // from the first subvolume's snapshot to the last one's
  HOODY_TRY(jid, journal_begin("create", name, snap.uuid, json::object().dump()));
  crash_point("create", "journaled");
  const std::string staging = kStagingPrefix + snap.uuid;

  Status st = [&]() -> Status {
    HOODY_CHECK(sys::mkdirat(store_.get(), staging.c_str(), 0700));
    crash_point("create", "staged");
    HOODY_TRY(sfd, btrfs::open_dir(store_.get(), staging.c_str()));
    // BTRFS snapshots one subvolume at a time, each after flushing its dirty
    // data.  Flush all of it first, so that the snapshots follow each other
    // within milliseconds instead of one flush apart ("taken together").
    if (subvols.size() > 1) HOODY_CHECK(btrfs::sync(source_.get()));
    auto first = std::chrono::steady_clock::now();
    int n = 0;
    for (const auto& sv : subvols) {
      HOODY_TRY(src, btrfs::open_dir(source_.get(), sv.c_str()));
      HOODY_CHECK(btrfs::snapshot(src.get(), sfd.get(), sv.c_str(), /*readonly=*/true));
      if (++n == 1) crash_point("create", "subvol-1");
    }
    window_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - first)
                    .count();
    crash_point("create", "snapshotted");
    HOODY_CHECK(sys::renameat2(store_.get(), staging.c_str(), store_.get(), snap.uuid.c_str(),
                               RENAME_NOREPLACE));
    crash_point("create", "renamed");
    // The commit point: the row appears and the journal entry ends together.
    std::lock_guard dl(db_mu_);
    sql::Txn txn(db_);
    HOODY_CHECK(txn.begin());
    sql::Stmt ins(db_,
                  "INSERT INTO snapshots(name, uuid, created, expires, creator, type, description) "
                  "VALUES(?, ?, ?, ?, ?, ?, ?)");
    ins.bind(1, snap.name)
        .bind(2, snap.uuid)
        .bind(3, to_ns(snap.created))
        .bind(4, to_ns(snap.expires))
        .bind(5, static_cast<int64_t>(snap.creator))
        .bind(6, snap.type)
        .bind(7, snap.description);
    HOODY_CHECK(ins.run());
    sql::Stmt del(db_, "DELETE FROM journal WHERE id = ?");
    del.bind(1, jid);
    HOODY_CHECK(del.run());
    HOODY_CHECK(audit(caller, "create", name, "ok"));
    return txn.commit();
  }();
  if (!st) {
    lg->warn("op=create name={} -> {}; undoing", quote_name(name), st.error().message());
    Journal j{jid, "create", snap.name, snap.uuid, 0, json::object()};
    if (undo_create(j)) (void)journal_end(jid);
    audit_result(caller, "create", name, st.error());
    return fail(st.error());
  }
  crash_point("create", "committed");
  lg->info("op=create name={} uuid={} subvolumes={} uid={} -> ok in {:.1f} ms (snapshots within "
           "{:.1f} ms)",
           quote_name(name), snap.uuid, subvols.size(), caller.uid,
           std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
           window_ms);
  return snap;
}

// A create without its row is undone: whether it got as far as <uuid> or not.
Status SnapshotStore::undo_create(const Journal& j) {
  {
    std::lock_guard lock(db_mu_);
    sql::Stmt q(db_, "SELECT 1 FROM snapshots WHERE uuid = ?");
    q.bind(1, j.uuid);
    HOODY_TRY(row, q.step());
    if (row) return {};  // committed after all
  }
  HOODY_CHECK(purge((kStagingPrefix + j.uuid).c_str(), nullptr));
  HOODY_CHECK(purge(j.uuid.c_str(), nullptr));
  return {};
}

// ---- remove, rename, metadata ----------------------------------------------------

Status SnapshotStore::remove(std::string_view name, const Caller& caller) {
  std::lock_guard lock(op_mu_);
  return remove_locked(name, caller);
}

Status SnapshotStore::remove_locked(std::string_view name, const Caller& caller) {
  auto lg = log::get("snap");
  int64_t jid = 0;
  std::string uuid;
  {
    // The commit point comes first: the row goes, the journal entry appears.
    std::lock_guard dl(db_mu_);
    sql::Txn txn(db_);
    HOODY_CHECK(txn.begin());
    sql::Stmt q(db_, "SELECT uuid FROM snapshots WHERE name = ?");
    q.bind(1, name);
    HOODY_TRY(row, q.step());
    if (!row) {
      (void)audit(caller, "remove", name, result_text(Errno(ENOENT), "no such snapshot"));
      (void)txn.commit();
      return fail(ENOENT);
    }
    uuid = q.text(0);
    sql::Stmt del(db_, "DELETE FROM snapshots WHERE name = ?");
    del.bind(1, name);
    HOODY_CHECK(del.run());
    sql::Stmt j(db_, "INSERT INTO journal(op, name, uuid, started) VALUES('remove', ?, ?, ?)");
    j.bind(1, name).bind(2, uuid).bind(3, to_ns(Clock::now()));
    HOODY_CHECK(j.run());
    jid = sqlite3_last_insert_rowid(db_.get());
    HOODY_CHECK(audit(caller, "remove", name, "ok"));
    HOODY_CHECK(txn.commit());
  }
  crash_point("remove", "journaled");
  if (auto s = finish_remove(uuid); !s) {
    // Logically gone; recover() retries the deletion at the next start.
    lg->warn("op=remove name={} uuid={} -> subvolumes not deleted yet: {}", quote_name(name), uuid,
             s.error().message());
    return {};
  }
  (void)journal_end(jid);
  lg->info("op=remove name={} uuid={} uid={} -> ok", quote_name(name), uuid, caller.uid);
  return {};
}

Status SnapshotStore::finish_remove(std::string_view uuid) {
  const std::string u(uuid), trash = kTrashPrefix + u;
  auto r = sys::renameat2(store_.get(), u.c_str(), store_.get(), trash.c_str(), RENAME_NOREPLACE);
  if (!r && r.err() != ENOENT) return r;
  crash_point("remove", "renamed");
  HOODY_CHECK(purge(trash.c_str(), "remove"));
  crash_point("remove", "deleted");
  return {};
}

Status SnapshotStore::rename(std::string_view from, std::string_view to, const Caller& caller) {
  const std::string what = std::string(from) + " -> " + std::string(to);
  for (auto n : {from, to}) HOODY_CHECK(check_name("rename", n, what, caller));
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
  (void)audit(caller, "rename", what, result_text(err, why));
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
  (void)audit(caller, "set_expires", name,
              err.value() ? result_text(err, "no such snapshot")
                          : "ok; expires " + (expires ? utc_stamp(*expires) : std::string("never")));
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

Result<std::vector<std::string>> SnapshotStore::prune_expired(TimePoint now, const Caller& caller) {
  std::lock_guard lock(op_mu_);
  std::vector<std::string> due;
  {
    std::lock_guard dl(db_mu_);
    sql::Stmt q(db_,
                "SELECT name FROM snapshots WHERE expires IS NOT NULL AND expires <= ? "
                "ORDER BY expires, name");
    q.bind(1, to_ns(now));
    for (;;) {
      HOODY_TRY(row, q.step());
      if (!row) break;
      due.push_back(q.text(0));
    }
  }
  std::vector<std::string> pruned;
  for (const auto& n : due) {
    auto s = remove_locked(n, caller);
    if (s) {
      pruned.push_back(n);
    } else if (s.err() != ENOENT) {
      return fail(s.error());
    }
  }
  if (!pruned.empty()) log::get("snap")->info("op=prune count={} -> ok", pruned.size());
  return pruned;
}

// ---- restore ----------------------------------------------------------------------

Result<std::string> SnapshotStore::restore(std::string_view name, const Caller& caller,
                                           bool delete_old_now) {
  std::lock_guard lock(op_mu_);
  auto lg = log::get("snap");
  auto t0 = std::chrono::steady_clock::now();
  auto target_r = find(name);
  if (!target_r) return fail(target_r.error());
  if (!*target_r) {
    audit_result(caller, "restore", name, Errno(ENOENT), "no such snapshot");
    return fail(ENOENT);
  }
  const Snapshot target = **target_r;
  HOODY_TRY(snap_dir, sys::openat(store_.get(), target.uuid.c_str(),
                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(snap_subvols, subvolumes_in(snap_dir.get()));
  HOODY_TRY(live, scope());
  std::vector<std::string> extra;  // live subvolumes the snapshot lacks: moved out
  std::set_difference(live.begin(), live.end(), snap_subvols.begin(), snap_subvols.end(),
                      std::back_inserter(extra));
  // Nested subvolumes are in no snapshot, the safety snapshot included: a
  // restore would drop them from the live state.  Refuse.
  HOODY_TRY(nested, nested_subvolumes(source_.get(), live));
  if (!nested.empty()) {
    std::string why = "the live state holds nested subvolume " + nested.front() +
                      (nested.size() > 1 ? " (and " + std::to_string(nested.size() - 1) + " more)"
                                         : std::string()) +
                      ", which no snapshot captures; move or delete it first";
    lg->warn("op=restore name={} -> {}", quote_name(name), why);
    audit_result(caller, "restore", name, Errno(ENOTSUP), why);
    return fail(ENOTSUP);
  }

  // 1. The safety snapshot of the live state.
  const TimePoint now = Clock::now();
  std::string safety = "pre-restore-" + utc_stamp(now);
  for (int i = 2;; ++i) {
    HOODY_TRY(taken, find(safety));
    if (!taken) break;
    safety = "pre-restore-" + utc_stamp(now) + "-" + std::to_string(i);
  }
  CreateOptions sopts;
  sopts.expires = now + kSafetyKeep;
  sopts.description = "live state before the restore of " + std::string(name);
  if (auto s = create_locked(safety, caller, sopts); !s) {
    audit_result(caller, "restore", name, s.error(), "safety snapshot failed");
    return fail(s.error());
  }
  crash_point("restore", "safety");

  // 2. Journal, then writable copies of the snapshot in .restore-<op>.
  const std::string opid = random_uuid();
  const std::string work = kRestorePrefix + opid;
  json data = {{"opid", opid}, {"subvolumes", snap_subvols}, {"extra", extra},
               {"safety", safety}};
  HOODY_TRY(jid, journal_begin("restore", name, target.uuid, data.dump()));
  crash_point("restore", "journaled");
  Journal j{jid, "restore", std::string(name), target.uuid, 0, data};

  Status st = [&]() -> Status {
    HOODY_CHECK(sys::mkdirat(store_.get(), work.c_str(), 0700));
    HOODY_TRY(wfd, btrfs::open_dir(store_.get(), work.c_str()));
    json copies = json::object();
    int n = 0;
    for (const auto& sv : snap_subvols) {
      HOODY_TRY(src, btrfs::open_dir(snap_dir.get(), sv.c_str()));
      HOODY_CHECK(btrfs::snapshot(src.get(), wfd.get(), sv.c_str(), /*readonly=*/false));
      HOODY_TRY(copy, btrfs::open_dir(wfd.get(), sv.c_str()));
      HOODY_TRY(ci, btrfs::info(copy.get()));
      copies[sv] = ci.uuid;
      if (++n == 1) crash_point("restore", "copy-1");
    }
    // Recorded before any exchange: recovery tells a swapped-in copy by its uuid.
    j.data["copies"] = copies;
    HOODY_CHECK(journal_update(jid, 0, j.data.dump()));
    crash_point("restore", "prepared");

    // 3. The swap: one atomic exchange per subvolume.
    n = 0;
    for (const auto& sv : snap_subvols) {
      HOODY_TRY(present, exists(source_.get(), sv));
      if (present) {
        HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd.get(), sv.c_str(),
                                   RENAME_EXCHANGE));
      } else {
        HOODY_CHECK(sys::renameat2(wfd.get(), sv.c_str(), source_.get(), sv.c_str(),
                                   RENAME_NOREPLACE));
      }
      if (++n == 1) crash_point("restore", "exchange-1");
    }
    for (const auto& x : extra)
      HOODY_CHECK(
          sys::renameat2(source_.get(), x.c_str(), wfd.get(), x.c_str(), RENAME_NOREPLACE));
    crash_point("restore", "exchanged");
    return {};
  }();
  if (!st) {
    lg->warn("op=restore name={} -> {}; undoing", quote_name(name), st.error().message());
    if (recover_restore(j)) (void)journal_end(jid);
    audit_result(caller, "restore", name, st.error());
    return fail(st.error());
  }

  // 4. Commit: from here on recovery finishes instead of undoing.
  Status committed = [&]() -> Status {
    std::lock_guard dl(db_mu_);
    sql::Txn txn(db_);
    HOODY_CHECK(txn.begin());
    sql::Stmt q(db_, "UPDATE journal SET step = 1 WHERE id = ?");
    q.bind(1, jid);
    HOODY_CHECK(q.run());
    HOODY_CHECK(audit(caller, "restore", name, "ok; safety snapshot " + safety));
    return txn.commit();
  }();
  if (!committed) {
    lg->error("op=restore name={} -> commit failed: {}; undoing", quote_name(name),
              committed.error().message());
    if (recover_restore(j)) (void)journal_end(jid);
    audit_result(caller, "restore", name, committed.error(), "commit failed");
    return fail(committed.error());
  }
  crash_point("restore", "committed");
  auto t_swap = std::chrono::steady_clock::now();
  reattach_mounts(source_.get(), work);

  // 5. The old live subvolumes go (now, or at the next recover()).
  if (!delete_old_now) {
    lg->info("op=restore name={} safety={} subvolumes={} uid={} -> ok; swap {:.1f} ms, deletion "
             "deferred",
             quote_name(name), safety, snap_subvols.size(), caller.uid,
             std::chrono::duration<double, std::milli>(t_swap - t0).count());
    return safety;
  }
  if (auto s = purge_restored(work); !s) {
    lg->warn("op=restore name={} -> old live subvolumes not deleted yet ({}); retried by recover()",
             quote_name(name), s.error().message());
  } else {
    crash_point("restore", "deleted");
    (void)journal_end(jid);
  }
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  lg->info("op=restore name={} safety={} subvolumes={} uid={} -> ok; swap {:.1f} ms, total {:.1f} ms",
           quote_name(name), safety, snap_subvols.size(), caller.uid, ms(t0, t_swap),
           ms(t0, std::chrono::steady_clock::now()));
  return safety;
}

// Delete the old live subvolumes of a committed restore, unless one is still
// the root of a mount here (EBUSY: re-mount the new one first, then recover()).
Status SnapshotStore::purge_restored(const std::string& work) {
  reattach_mounts(source_.get(), work);  // also after a crash past the commit
  if (mounted_beneath(work)) {
    log::get("snap")->warn(
        "op=restore dir={} -> an old live subvolume is still mounted (a bind mount of the "
        "state before the restore); re-mount the restored subvolume, then recover()",
        work);
    return fail(EBUSY);
  }
  return purge(work.c_str(), "restore");
}

// Undo (step 0) or finish (step 1) a restore.
Status SnapshotStore::recover_restore(const Journal& j) {
  const std::string work = kRestorePrefix + j.data.value("opid", std::string());
  if (j.step >= 1) return purge_restored(work);

  auto wfd = sys::openat(store_.get(), work.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!wfd) return wfd.err() == ENOENT ? Status() : fail(wfd.error());
  if (j.data.contains("copies")) {
    int swapped_back = 0;
    for (auto& [sv, copy_uuid] : j.data["copies"].items()) {
      auto live = btrfs::open_dir(source_.get(), sv.c_str());
      if (!live) {
        if (live.err() == ENOENT) continue;
        return fail(live.error());
      }
      HOODY_TRY(li, btrfs::info(live->get()));
      live->reset();
      if (li.uuid != copy_uuid.get<std::string>()) continue;  // not swapped in
      HOODY_TRY(old_there, exists(wfd->get(), sv));
      if (old_there) {
        HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd->get(), sv.c_str(),
                                   RENAME_EXCHANGE));
      } else {
        HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd->get(), sv.c_str(),
                                   RENAME_NOREPLACE));
      }
      if (++swapped_back == 1) crash_point("recover", "swapback-1");
    }
  }
  for (const auto& x : j.data.value("extra", std::vector<std::string>())) {
    HOODY_TRY(in_work, exists(wfd->get(), x));
    HOODY_TRY(in_live, exists(source_.get(), x));
    if (in_work && !in_live)
      HOODY_CHECK(
          sys::renameat2(wfd->get(), x.c_str(), source_.get(), x.c_str(), RENAME_NOREPLACE));
  }
  wfd->reset();
  // Only the writable copies are left in the work directory now.
  return purge(work.c_str(), nullptr);
}

// ---- recovery ------------------------------------------------------------------------

Status SnapshotStore::recover_one(const Journal& j) {
  if (j.op == "create") return undo_create(j);
  if (j.op == "remove") return finish_remove(j.uuid);
  if (j.op == "restore") return recover_restore(j);
  log::get("snap")->warn("op=recover journal={} kind={} -> unknown, dropped", j.id, j.op);
  return {};
}

Status SnapshotStore::recover() {
  std::lock_guard lock(op_mu_);
  auto lg = log::get("snap");
  std::vector<Journal> pending;
  {
    std::lock_guard dl(db_mu_);
    sql::Stmt q(db_, "SELECT id, op, name, uuid, step, data FROM journal ORDER BY id");
    for (;;) {
      HOODY_TRY(row, q.step());
      if (!row) break;
      Journal j{q.int64(0), q.text(1), q.text(2), q.text(3), static_cast<int>(q.int64(4)), {}};
      j.data = json::parse(q.text(5), nullptr, /*allow_exceptions=*/false);
      if (j.data.is_discarded()) j.data = json::object();
      pending.push_back(std::move(j));
    }
  }
  // Newest first: a restore journaled after its safety snapshot's create is
  // undone before that create is looked at.
  std::reverse(pending.begin(), pending.end());
  Caller self{::geteuid(), ::getpid()};
  for (const auto& j : pending) {
    auto s = recover_one(j);
    std::string what = j.op + " step " + std::to_string(j.step);
    if (s) {
      (void)journal_end(j.id);
      lg->warn("op=recover journal={} kind={} name={} step={} -> {}", j.id, j.op,
               quote_name(j.name), j.step,
               j.op == "create" ? "undone" : (j.op == "restore" && j.step == 0 ? "undone" : "finished"));
      audit_result(self, "recover", j.name, Errno(), {});
    } else {
      lg->error("op=recover journal={} kind={} name={} -> {}; left for the next start", j.id, j.op,
                quote_name(j.name), s.error().message());
      audit_result(self, "recover", j.name, s.error(), what);
    }
  }
  // Work directories without a journal entry are leftovers (a purge that
  // failed after its entry ended): they hold nothing listed, so they go.  Not
  // while an entry is still pending: its work directory may hold live data.
  HOODY_TRY(left, pending_operations());
  if (left > 0) return {};
  HOODY_TRY(dir, sys::opendir_at(store_.get(), "."));
  std::vector<std::string> stray;
  std::set<std::string> listed;
  {
    HOODY_TRY(all, list());
    for (auto& s : all) listed.insert(s.uuid);
  }
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(dir.get());
    if (!e) break;
    std::string_view n = e->d_name;
    if (n == "." || n == ".." || n == kLockFile || n.substr(0, 8) == kIndexDb) continue;
    bool work = n.rfind(kStagingPrefix, 0) == 0 || n.rfind(kTrashPrefix, 0) == 0 ||
                n.rfind(kRestorePrefix, 0) == 0 || n.rfind(kDiffPrefix, 0) == 0;
    if (work) stray.emplace_back(n);
    else if (n.empty() || n[0] != '.') {
      if (!listed.count(std::string(n)))
        lg->warn("op=recover dir={} -> not in the index; left alone", n);
    }
  }
  for (const auto& n : stray) {
    lg->warn("op=recover dir={} -> stray work directory, deleted", n);
    if (auto s = purge(n.c_str(), nullptr); !s)
      lg->error("op=recover dir={} -> {}", n, s.error().message());
  }
  return {};
}

// ---- diff ----------------------------------------------------------------------------

Result<std::vector<send::Change>> SnapshotStore::diff(std::string_view from,
                                                      std::string_view to) {
  // Held while temporary snapshots of the live state exist: recover() must
  // not sweep them, restore() must not swap the live state under them.
  std::unique_lock lock(op_mu_, std::defer_lock);
  if (from == kLive || to == kLive) lock.lock();
  std::string live_dir;  // .diff-<uuid>, deleted on every return
  struct Cleanup {
    SnapshotStore* st;
    std::string* dir;
    ~Cleanup() {
      if (!dir->empty() && !st->purge(dir->c_str(), nullptr))
        log::get("snap")->warn("op=diff dir={} -> not deleted; recover() will", *dir);
    }
  } cleanup{this, &live_dir};
  auto side = [&](std::string_view name) -> Result<UniqueFd> {
    if (name != kLive) return open_snapshot(name);
    if (live_dir.empty()) {
      HOODY_TRY(subvols, scope());
      std::string dir = kDiffPrefix + random_uuid();
      HOODY_CHECK(sys::mkdirat(store_.get(), dir.c_str(), 0700));
      live_dir = dir;
      HOODY_TRY(dfd, btrfs::open_dir(store_.get(), dir.c_str()));
      for (const auto& sv : subvols) {
        HOODY_TRY(src, btrfs::open_dir(source_.get(), sv.c_str()));
        HOODY_CHECK(btrfs::snapshot(src.get(), dfd.get(), sv.c_str(), /*readonly=*/true));
      }
    }
    return btrfs::open_dir(store_.get(), live_dir.c_str());
  };
  HOODY_TRY(a, side(from));
  HOODY_TRY(b, side(to));
  HOODY_TRY(sa, subvolumes_in(a.get()));
  HOODY_TRY(sb, subvolumes_in(b.get()));
  std::vector<send::Change> out;
  std::set<std::string> all(sa.begin(), sa.end());
  all.insert(sb.begin(), sb.end());
  for (const auto& sv : all) {
    bool in_a = std::binary_search(sa.begin(), sa.end(), sv);
    bool in_b = std::binary_search(sb.begin(), sb.end(), sv);
    if (!in_a) {
      out.push_back({send::ChangeKind::added, sv, {}});
      continue;
    }
    if (!in_b) {
      out.push_back({send::ChangeKind::removed, sv, {}});
      continue;
    }
    HOODY_TRY(fa, btrfs::open_dir(a.get(), sv.c_str()));
    HOODY_TRY(fb, btrfs::open_dir(b.get(), sv.c_str()));
    HOODY_TRY(changes, send::diff_subvolumes(fa.get(), fb.get()));
    for (auto& c : changes) {
      c.path = sv + "/" + c.path;
      if (!c.to.empty()) c.to = sv + "/" + c.to;
      out.push_back(std::move(c));
    }
  }
  return out;
}

}  // namespace hoody::snapfs
