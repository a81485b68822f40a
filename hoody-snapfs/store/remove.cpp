// SnapshotStore: remove and the pruning of expired snapshots.
#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "crash.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

Status SnapshotStore::remove(std::string_view name, const Caller& caller) {
  std::lock_guard lock(op_mu_);
  return remove_locked(name, caller);
}

// `action` is what the audit row says: "delete" (rmdir), or "prune" (expiry,
// schedule) with `why` as its target ("expired", "schedule 24h 7d").
Status SnapshotStore::remove_locked(std::string_view name, const Caller& caller,
                                    std::string_view action, std::string_view why) {
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
      (void)audit(caller, action, name, result_text(Errno(ENOENT), "no such snapshot"));
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
    HOODY_CHECK(audit(caller, action, name, "ok", why));
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
    auto s = remove_locked(n, caller, "prune", "expired");
    if (s) {
      pruned.push_back(n);
    } else if (s.err() != ENOENT) {
      return fail(s.error());
    }
  }
  if (!pruned.empty()) log::get("snap")->info("op=prune count={} -> ok", pruned.size());
  return pruned;
}

}  // namespace hoody::snapfs
