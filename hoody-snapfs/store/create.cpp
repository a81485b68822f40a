// SnapshotStore: create (and the undo of an interrupted one).
#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <spdlog/fmt/fmt.h>

#include "crash.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

Result<Snapshot> SnapshotStore::create(std::string_view name, const Caller& caller,
                                       const CreateOptions& opts) {
  std::lock_guard lock(op_mu_);
  return create_locked(name, caller, opts);
}

Result<Snapshot> SnapshotStore::create_locked(std::string_view name, const Caller& caller,
                                              const CreateOptions& opts,
                                              const QuiesceResult* held) {
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

  Snapshot snap;
  snap.name = std::string(name);
  snap.uuid = random_uuid();
  snap.created = now();
  snap.expires = opts.expires;
  snap.creator = caller.uid;
  snap.description = opts.description;
  snap.type = opts.type;
  if (auto nested = nested_subvolumes(source_.get(), subvols); nested && !nested->empty()) {
    lg->warn("op=create name={} -> nested subvolume {} (and {} more) is not captured: snapshots "
             "hold an empty directory in its place",
             quote_name(name), nested->front(), nested->size() - 1);
    snap.nested = *nested;
  }
  auto t0 = std::chrono::steady_clock::now();

  double window_ms = 0;  // from the first subvolume's snapshot to the last one's
  double held_ms = 0;    // how long the databases were held (by this create)
  QuiesceResult quiesce;
  bool quiesced = false;
  HOODY_TRY(jid, journal_begin("create", name, snap.uuid, json::object().dump()));
  crash_point("create", "journaled");
  const std::string staging = kStagingPrefix + snap.uuid;

  Status st = [&]() -> Status {
    HOODY_CHECK(sys::mkdirat(store_.get(), staging.c_str(), 0700));
    crash_point("create", "staged");
    HOODY_TRY(sfd, btrfs::open_dir(store_.get(), staging.c_str()));
    // BTRFS snapshots one subvolume at a time, each after flushing its dirty
    // data.  Flush all of it first, before the databases are held, so that
    // the snapshots follow each other within milliseconds ("taken together")
    // and the writers wait only for those.  (Under a restore's quiesce the
    // restore flushed before quiescing.)
    if (!held && (subvols.size() > 1 || opts.quiescer)) HOODY_CHECK(btrfs::sync(source_.get()));
    QuiesceHold hold;
    auto tq = std::chrono::steady_clock::now();
    if (held) {
      quiesce = *held;
      quiesced = true;
    } else if (opts.quiescer) {
      // A transaction that outlasts the quiesce, or a server that does not
      // answer: the snapshot goes on, crash-consistent, and says so.
      std::string why;
      hold.arm(opts.quiescer);
      auto q = opts.quiescer->quiesce(subvols, &why);
      if (q) {
        quiesce = *q;
        quiesced = true;
      } else {
        quiesce.busy.push_back(why.empty() ? q.error().message() : why);
        lg->warn("op=create name={} -> not quiesced ({}): the snapshot is crash-consistent",
                 quote_name(name), quiesce.busy.back());
      }
    }
    crash_point("create", "quiesced");
    auto first = std::chrono::steady_clock::now();
    int n = 0;
    for (const auto& sv : subvols) {
      HOODY_TRY(src, btrfs::open_dir(source_.get(), sv.c_str()));
      HOODY_CHECK(btrfs::snapshot(src.get(), sfd.get(), sv.c_str(), /*readonly=*/true));
      if (++n == 1) crash_point("create", "subvol-1");
    }
    auto last = std::chrono::steady_clock::now();
    hold.release();
    window_ms = std::chrono::duration<double, std::milli>(last - first).count();
    if (!held && opts.quiescer)
      held_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - tq)
                    .count();
    crash_point("create", "snapshotted");
    snap.consistency =
        quiesced && !quiesce.served.empty() && quiesce.busy.empty() ? kTransaction : kCrash;
    snap.busy = quiesce.busy;
    HOODY_CHECK(sys::renameat2(store_.get(), staging.c_str(), store_.get(), snap.uuid.c_str(),
                               RENAME_NOREPLACE));
    crash_point("create", "renamed");
    // The commit point: the row appears and the journal entry ends together.
    std::lock_guard dl(db_mu_);
    sql::Txn txn(db_);
    HOODY_CHECK(txn.begin());
    HOODY_CHECK(insert_row_ending_journal(snap, jid));
    HOODY_CHECK(audit(caller, "create", name,
                      snap.consistency == kCrash && !snap.busy.empty()
                          ? "ok; crash-consistent: not quiesced: " + describe_busy(snap.busy)
                          : std::string("ok"),
                      snap.type == "filesystem" ? "" : snap.type));
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
  auto line = fmt::format(
      "op=create name={} uuid={} subvolumes={} uid={} consistency={} -> ok in {:.1f} ms "
      "(snapshots within {:.1f} ms; databases={} held {:.1f} ms{}{})",
      quote_name(name), snap.uuid, subvols.size(), caller.uid, snap.consistency,
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count(),
      window_ms, quiesce.databases, held_ms,
      snap.busy.empty() ? "" : "; crash-consistent, not quiesced: ",
      describe_busy(snap.busy));
  if (snap.consistency == kCrash && !snap.busy.empty())
    lg->warn("{}", line);
  else
    lg->info("{}", line);
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

}  // namespace hoody::snapfs
