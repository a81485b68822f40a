// SnapshotStore: the snapshots of one container directory on BTRFS (no FUSE).
//
//   SOURCE/                      a container directory (POOL/containers/<id>)
//   ├── storage/, databases/     subvolumes directly inside SOURCE: the scope
//   └── .snapshots/              0700, the store
//       ├── index.db             SQLite (WAL): snapshots, audit, journal, schedule
//                                (PRAGMA user_version 2; a version 1 index is upgraded at open)
//       ├── lock                 flock'ed by the one store instance
//       ├── <uuid>/<subvol>      a snapshot: one read-only snapshot per scope subvolume
//       ├── .staging-<uuid>/     a snapshot being taken
//       ├── .trash-<uuid>/       a snapshot being deleted
//       ├── .restore-<op>/       restore work: writable copies, then the old live subvolumes
//       └── .diff-<uuid>/        read-only snapshots of the live state for a diff
//
// Names are user-facing (index.db); directories are uuids, so a rename touches
// only the index.  A snapshot is listed iff its row exists: the row is written
// in the same transaction that ends the journal entry of a create.
//
// Crash safety: every multi-step operation writes a journal row first and
// recover() (run by open()) finishes or undoes it:
//   create   undone (staging dir or <uuid> deleted): its row and the end of its
//            journal entry are one transaction, so a pending create never committed
//   remove   the row goes first, with the journal entry: always finished
//   restore  before its first exchange: undone (a swapped-in copy is told by
//            its uuid, journaled before the first exchange); from its first
//            exchange on (the safety snapshot is taken by then): finished, as
//            hoody-dbfs follows an exchange by itself and what its writers
//            wrote since is in the restored subvolumes; after the commit step:
//            the old live subvolumes are deleted.  The safety snapshot stays.
// recover() is idempotent, so a crash during recovery is recovered next time.
// HOODY_CRASH_AT=<op>:<step> (crash_points()) kills the process at a step.
//
// Threads: any member may be called from any thread.  Mutating operations
// are serialised by op_mu_; list()/get()/audit_log() only wait for the short
// index transactions (db_mu_), never for a snapshot being taken.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "diff_cache.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/result.hpp"
#include "hoody/send_stream.hpp"
#include "hoody/unique_fd.hpp"
#include "../snapshot.hpp"       // Snapshot, AuditEntry, Clock, TimePoint
#include "../snapshot_name.hpp"  // kLive, check_snapshot_name
#include "hoody/sqlite.hpp"
#include "quiesce.hpp"

namespace hoody::snapfs {

inline constexpr const char* kStoreDir = ".snapshots";
inline constexpr const char* kIndexDb = "index.db";
inline constexpr auto kSafetyKeep = std::chrono::hours(24 * 7);

// Who asked: recorded in the audit log (and as the creator of a snapshot).
struct Caller {
  uid_t uid = 0;
  pid_t pid = 0;
};

struct CreateOptions {
  std::optional<TimePoint> expires;
  std::string description;
  std::string type = "filesystem";  // "scheduled" for the schedule's (retention.hpp)
  // Quiesced while the scope subvolumes are snapshotted (nullptr: nobody to ask).
  Quiescer* quiescer = nullptr;
};

struct RestoreOptions {
  // false: return right after the swap is committed and leave the deletion
  // of the old live subvolumes to the next recover() (see restore()).
  bool delete_old_now = true;
  // Refuse (EBUSY, nothing done) while a process uses the live state.
  bool if_idle = false;
  // Quiesced from before the safety snapshot until the servers serve the
  // restored subvolumes (nullptr: nobody to ask).
  Quiescer* quiescer = nullptr;
};

// What a restore did, or why it did not (filled on success and on failure).
struct RestoreReport {
  std::string safety;            // the safety snapshot ("" when none was taken)
  std::string consistency;       // of the safety snapshot
  std::vector<std::string> busy;
  // After a restore: the processes that still hold files, a cwd or a root in
  // the state before it (restart them).  For an if_idle refusal: those using
  // the live state now.
  std::vector<Holder> holders;
  std::string error;             // why it failed, for a person
  double ms = 0;                 // the whole restore
  double quiesced_ms = 0;        // how long the databases were held
};

// What a receive did (store/transfer.cpp).
struct ReceiveReport {
  uint64_t bytes = 0;      // of the btrfs send streams
  double seconds = 0;
  std::string parent;      // the local parent of an incremental stream, "" for a full one
  std::size_t subvolumes = 0;
};

struct SendOptions {
  std::string parent;      // incremental against this snapshot ("" for a full stream)
  // Measure the file data first (a metadata-only send) so that the receiver
  // can show an ETA: header estimated_bytes.
  bool estimate = false;
  std::function<void(uint64_t bytes)> progress;
  uint64_t* sent = nullptr;  // the bytes of the btrfs streams, when done
};

struct ReceiveOptions {
  std::string as_name;     // "" for the sender's name
  uint64_t max_size = 0;   // bytes of the whole stream; 0: no bound
  std::string btrfs = "btrfs";  // btrfs-progs, for `btrfs receive`
  std::function<void(uint64_t bytes, uint64_t expected)> progress;
  ReceiveReport* report = nullptr;
};

// The schedule (store/retention.hpp).
struct Schedule;
struct ScheduleState;
struct Preserve;

class SnapshotStore {
public:
  // Opens the store of the container directory `source_fd` (which must be on
  // BTRFS: EMEDIUMTYPE otherwise), creating .snapshots (0700) and index.db,
  // and runs recover().  EBUSY if another store instance holds it.
  static Result<std::unique_ptr<SnapshotStore>> open(int source_fd);
  // The index connection closed, and opened again.  A daemon closes it
  // before fuse_daemonize() forks and opens it again in the child: a SQLite
  // connection must not cross a fork (the child holds none of the parent's
  // POSIX locks on index.db, so the next other opener, taking itself for
  // the last connection, would checkpoint and delete the WAL under it and
  // the daemon's later rows would be lost).  No other call may run between.
  void close_index();
  Status reopen_index();

  // A read-only snapshot of every scope subvolume, taken together under
  // `name`.  EINVAL/ENAMETOOLONG for a bad name, EEXIST for a taken one.
  Result<Snapshot> create(std::string_view name, const Caller& caller,
                          const CreateOptions& opts = {});
  // ENOENT if there is no such snapshot.  The subvolumes are deleted before
  // this returns (BTRFS reclaims their space in the background).
  Status remove(std::string_view name, const Caller& caller);
  // Index-only; EEXIST if `to` is taken, ENOENT if `from` is missing.
  Status rename(std::string_view from, std::string_view to, const Caller& caller);
  Status set_expires(std::string_view name, std::optional<TimePoint> expires,
                     const Caller& caller);
  // E2BIG above kMaxDescriptionBytes.
  Status set_description(std::string_view name, std::string_view description,
                         const Caller& caller);

  // Marks a snapshot taken as "filesystem" as a sync snapshot (type "sync",
  // hoody-snap sync through a mount).  EPERM for any other change of type
  // (a type says how a snapshot was taken), ENOENT if there is no such one.
  Status set_type_sync(std::string_view name, const Caller& caller);

  // Oldest first (created, then name).
  Result<std::vector<Snapshot>> list() const;
  Result<Snapshot> get(std::string_view name) const;
  // The names of the removed snapshots whose expiry is at or before `now`.
  Result<std::vector<std::string>> prune_expired(TimePoint now, const Caller& caller);

  // Destructive restore of the live state to snapshot `name`: first a safety
  // snapshot "pre-restore-<UTC YYYYMMDDTHHMMSSZ>" (expiring in 7 days), then
  // every scope subvolume swapped by renameat2(RENAME_EXCHANGE) for a writable
  // snapshot of `name`; scope subvolumes the snapshot lacks are moved out, and
  // the old live subvolumes are deleted.  Returns the safety snapshot's name.
  // ENOTSUP (nothing done) while a scope subvolume holds a nested subvolume:
  // BTRFS snapshots those as empty directories, so the restore would lose them.
  // Bind mounts of the old live subvolumes keep showing the old tree: whoever
  // mounted them must re-mount after a restore.  While such a mount is visible
  // in this mount namespace the old subvolume is not deleted (it would show
  // an empty, deleted directory); recover() deletes it once it is unmounted.
  //
  // Deleting a subvolume evicts its cached pages, which takes time in
  // proportion to the cached data (~110 ms for 384 MiB here).  With
  // delete_old_now=false restore() returns right after the swap is committed
  // (constant time) and leaves the deletion to the next recover(), which the
  // daemon runs from a worker thread.
  Result<std::string> restore(std::string_view name, const Caller& caller,
                              bool delete_old_now = true);
  // The same with the servers of the scope subvolumes (issue 11), in this
  // order: quiesce -> safety snapshot -> exchange -> commit -> each server
  // told (replaced(), it serves the restored subvolume when it returns) ->
  // resume.  Any failure after the quiesce resumes before returning.  A
  // server that does not answer the quiesce in time: ETIMEDOUT, nothing done.
  // A server that exited after the quiesce (Quiescer::still_held, checked
  // before the exchange): ECONNRESET, undone.  From the exchange on, a dead
  // server does not stop the restore (replaced() tells whoever serves now).
  // `report` says what was done, or why not (the nested subvolume's name, the
  // server that did not answer, the processes for an if_idle refusal).
  Status restore(std::string_view name, const Caller& caller, const RestoreOptions& opts,
                 RestoreReport& report);

  // ---- send and receive (store/transfer.cpp, issue 9) ---------------------
  // The store of `source_fd` without its lock and without recover(): for
  // send_to(), list(), receive_from() and recover_receives() while a
  // hoody-snapfs holds the store (no other mutation through it).  ENOENT
  // without an index.db.  Its connection never checkpoints and deletes the
  // WAL at close (a daemonized hoody-snapfs holds no POSIX lock on it).
  // send_to() and receive_from() write to pipes whose other end may go away:
  // the caller ignores SIGPIPE (then EPIPE says it).
  static Result<std::unique_ptr<SnapshotStore>> open_shared(int source_fd);
  // Writes the hoody send stream of snapshot `name` (store/transfer.hpp) to
  // `out`: the header, a btrfs send stream per scope subvolume (incremental
  // against opts.parent's subvolume of the same name where it has one), the
  // trailer.  *why says what failed, for a person.
  Status send_to(std::string_view name, const SendOptions& opts, int out, std::string* why);
  // Reads one stream from `in` and makes it a snapshot of this store:
  // btrfs receive into .snapshots/.receiving-<uuid>/ (0700, flock()ed by
  // this process and its btrfs receive), checks (the header's subvolumes, and
  // nothing else, read-only, received_uuid as sent, the parent matched), then
  // journaled rename to <uuid> and the index row.  Anything else leaves
  // nothing: a truncated or garbled stream, a missing parent, --max-size.
  // EEXIST for a taken name, ENOENT for a missing parent, EFBIG above
  // max_size, EBADMSG for a bad stream.  A running hoody-snapfs is told by a
  // touch of .snapshots (it watches it).
  Result<Snapshot> receive_from(int in, const Caller& caller, const ReceiveOptions& opts,
                                std::string* why);
  // Deletes what interrupted receives left: .receiving-* directories whose
  // lock is free and journaled receives without their row.  Run by
  // receive_from() and recover().
  Status recover_receives();
  // Writable snapshots of `name`'s subvolumes as the live subvolumes that do
  // not exist yet (a container made by a receive); their names.
  Result<std::vector<std::string>> make_live(std::string_view name);
  struct SubvolumeState {
    std::string name;
    btrfs::SubvolumeInfo info;
  };
  // The scope subvolumes of snapshot `name` with their BTRFS identity.
  Result<std::vector<SubvolumeState>> subvolumes_of(std::string_view name) const;
  // The newest snapshot whose subvolumes carry these keys (subvolume ->
  // received_uuid, else uuid): the same snapshot as the sender's.
  Result<std::optional<Snapshot>> find_by_keys(const std::map<std::string, std::string>& keys) const;

  // Finish or undo every journaled operation (see the top of this file), and
  // finish the deletions a restore(..., delete_old_now=false) left.  Run by
  // open(); safe to run again at any time.
  Status recover();

  // The scope: names of the subvolumes directly inside SOURCE (no '.' names).
  Result<std::vector<std::string>> scope() const;
  // Subvolumes nested in the live scope subvolumes ("storage/docker"): no
  // snapshot captures them.
  Result<std::vector<std::string>> live_nested() const;
  // O_RDONLY|O_DIRECTORY fd of .snapshots/<uuid> for browsing `name`.
  Result<UniqueFd> open_snapshot(std::string_view name) const;
  // What changed from snapshot `from` to snapshot `to`, per scope subvolume,
  // with paths prefixed by the subvolume name ("storage/a/b").  A subvolume
  // present in only one of them is one `+`/`-` line.  Either side may be
  // kLive: the live state, through temporary read-only snapshots (.diff-<uuid>,
  // deleted afterwards) so that it is a send-stream diff too, not a tree walk.
  Result<std::vector<send::Change>> diff(std::string_view from, std::string_view to);

  // An audit row for a decision taken before the store was asked (a refusal
  // by the daemon's access policy, a bad argument): .hoody/log shows the
  // store's audit table, so every refusal goes here too.
  Status record(const Caller& caller, std::string_view action, std::string_view name, Errno err,
                std::string_view target = {}, std::string_view reason = {});

  // ---- the schedule (store/schedule.cpp) ----------------------------------
  // The schedule and what it did last.
  Result<ScheduleState> schedule_state() const;
  // Sets the schedule (every == 0: off); audited as "schedule".
  Status set_schedule(const Schedule& s, const Caller& caller);
  // Slot `slot` was handled: a snapshot taken (taken=true) or skipped (onchange).
  Status schedule_done(TimePoint slot, const std::map<std::string, uint64_t>& generations,
                       bool taken);
  // The generation of every scope subvolume (what onchange compares).
  Result<std::map<std::string, uint64_t>> generations() const;
  // Deletes the scheduled snapshots (type "scheduled" and still named
  // auto-*, never others) that `p` does not keep at `now`; audited as
  // "prune".  Their names.
  Result<std::vector<std::string>> prune_scheduled(TimePoint now, const Preserve& p,
                                                   const Caller& caller);

  // The clock of creation times and audit rows (the daemon's, which tests set).
  void set_clock(std::function<TimePoint()> clock) { clock_ = std::move(clock); }
  TimePoint now() const { return clock_ ? clock_() : Clock::now(); }

  // One side of a diff, resolved: a snapshot by its uuid, or the live state.
  struct DiffSide {
    std::string uuid;      // .snapshots/<uuid>; "" for the live state
    std::string identity;  // the uuid and each subvolume's generation; "@live"
    bool live() const { return uuid.empty(); }
  };
  // ENOENT if there is no such snapshot.  Two snapshots with equal
  // identities hold the same trees: a cache key.
  Result<DiffSide> diff_side(std::string_view name) const;
  // diff() of resolved sides, as a DiffText: the lines, and the owner and
  // mode of every ancestor directory of a changed path in each tree, read
  // while the trees exist (the live state's temporary snapshots included).
  Result<std::shared_ptr<const DiffText>> diff_text(const DiffSide& from, const DiffSide& to);

  // The newest `limit` audit entries, oldest first.
  Result<std::vector<AuditEntry>> audit_log(std::size_t limit = 1000) const;
  // Number of unfinished journal entries (0 after a clean recover()).
  Result<int64_t> pending_operations() const;

  // Every "<op>:<step>" accepted by HOODY_CRASH_AT, in execution order; the
  // "recover:" ones are reached while recover() finishes a killed restore.
  static const std::vector<std::string>& crash_points();

  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

private:
  SnapshotStore() = default;

  struct Journal;
  // `held`: a quiesce the caller (restore) already holds, else opts.quiescer is asked.
  Result<Snapshot> create_locked(std::string_view name, const Caller& caller,
                                 const CreateOptions& opts, const QuiesceResult* held = nullptr);
  Status remove_locked(std::string_view name, const Caller& caller,
                       std::string_view action = "delete", std::string_view why = {});
  Result<std::optional<Snapshot>> find(std::string_view name) const;
  Status audit(const Caller& caller, std::string_view action, std::string_view name,
               std::string_view result, std::string_view target = {});
  // The commit point of a create or receive (db_mu_ held, in a transaction):
  // the snapshot's row appears and its journal entry `jid` ends together.
  Status insert_row_ending_journal(const Snapshot& snap, int64_t jid);
  void audit_result(const Caller& caller, std::string_view action, std::string_view name,
                    Errno err, std::string_view reason = {});
  Result<int64_t> journal_begin(std::string_view op, std::string_view name, std::string_view uuid,
                                const std::string& data);
  Status journal_update(int64_t id, int step, const std::string& data);
  Status journal_end(int64_t id);
  Status recover_one(const Journal& j);
  Status undo_create(const Journal& j);
  // EINPROGRESS while its receiver still runs.
  Status undo_receive(const Journal& j);
  Status finish_remove(std::string_view uuid);
  // roll_back: undo even a restore that began its exchanges (a failure in
  // restore() itself, with the databases still held); else such a restore is
  // finished (recover() after a crash: hoody-dbfs follows an exchange by
  // itself, so what was written since is in the restored subvolume).
  Status recover_restore(const Journal& j, bool roll_back = false);
  Status purge(const char* dir_name, const char* op);
  Status purge_restored(const std::string& work);
  Status check_name(std::string_view action, std::string_view name, std::string_view what,
                    const Caller& caller, NameUse use = NameUse::new_name,
                    std::string_view target = {});
  // diff() of resolved sides; `with_trees` sees the two tree directories
  // (.snapshots/<uuid> or .diff-<uuid>) and the changes before they go.
  using WithTrees = std::function<void(int old_fd, int new_fd, std::vector<send::Change>&)>;
  Result<std::vector<send::Change>> diff_sides(const DiffSide& from, const DiffSide& to,
                                               const WithTrees& with_trees);

  UniqueFd source_;  // SOURCE, O_RDONLY|O_DIRECTORY
  UniqueFd store_;   // SOURCE/.snapshots
  UniqueFd lock_;    // .snapshots/lock, flock(LOCK_EX); none when shared_
  bool shared_ = false;  // open_shared(): a daemon may hold the store
  // Lock order: op_mu_ before db_mu_.  db_mu_ is held only for index
  // statements and transactions, never across a BTRFS call.
  mutable std::mutex op_mu_;  // serialises create/remove/rename/restore/prune/recover
  mutable std::mutex db_mu_;  // guards db_
  sql::Db db_;
  std::function<TimePoint()> clock_;  // set before use from several threads
};

}  // namespace hoody::snapfs
