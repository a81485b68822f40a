// LockManager: hoody-dbfs's POSIX/flock lock service with SQLite scheduling.
//
// Driven by the FUSE adapter (ops/lock.cpp), which converts getlk/setlk/flock/
// flush requests into calls here.  No FUSE headers: files are FileId (the
// adapter's inode number), owners are FUSE lock_owner values.
//
// Completion contract (setlk, flock):
//  - `done(err)` is called EXACTLY ONCE: 0 granted; EAGAIN conflict / SQLite
//    scheduling refusal / wait bound expired / cancelled by release_owner;
//    EDEADLK a plain F_SETLKW (non-SQLite bytes) would deadlock; EINTR
//    interrupted or manager destroyed; EIO its file was retired (a restore
//    replaced the tree it was in) while it waited.
//  - It may run inline, before setlk() returns (immediate answer), or later on
//    another thread: the thread that calls release_owner()/setlk(F_UNLCK)/
//    interrupt()/set_journal_mode() which lets the request proceed, or the
//    manager's timer thread (wait bounds, token grace).
//  - It is never called with the manager's mutex held, so it may call back
//    into the manager (e.g. reply and submit the next request).
//  - No call ever blocks its caller waiting for a lock.
//
// Interrupts: new_ticket() gives an id; the adapter registers it with libfuse's
// interrupt callback, then submits setlk/flock with it.  interrupt(id) may come
// at any time: unknown or finished ids are ignored; a waiting request completes
// with EINTR; an interrupt that arrives before submission makes a later
// submission that would have to wait complete at once with EINTR (an
// immediate grant or refusal is still given).
//
// SQLite scheduling (research/sqlite-locking.md §2.3/§2.4): files registered
// as sqlite_db/shm of a domain get a per-database FIFO writer token, taken at
// transaction start by owners whose db handle is writable and held until the
// transaction ends; SQLite's try-locks stay try-locks; every other byte range
// and every plain/-journal/-wal file keeps exact POSIX semantics.
//
// Thread-safe: every public function may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "lock/range_table.hpp"
#include "lock/sqlite_policy.hpp"
#include "lock/stats.hpp"

namespace spdlog {
class logger;
}

namespace hoody::dbfs::lock {

using FileId = std::uint64_t;    // the adapter's inode number
using TicketId = std::uint64_t;  // interrupt handle of one request; 0 = none
using Completion = std::function<void(int err)>;
using Clock = std::chrono::steady_clock;

struct Config {
  // Bound of every SQLite-scheduled wait (token queue, connect behind PENDING,
  // read-mark, write lock): expiry -> EAGAIN (honest SQLITE_BUSY) + warn log.
  std::chrono::milliseconds sqlite_wait{30000};
  // Bound of a commit (RESERVED -> EXCLUSIVE) waiting for readers to drain;
  // expiry -> EAGAIN, the COMMIT returns BUSY and the transaction stays open.
  std::chrono::milliseconds commit_wait{30000};
  // Bound of a DMS attach (RDLCK 128) behind an initializer's WRLCK.
  std::chrono::milliseconds dms_wait{100};
  // Bound of a plain F_SETLKW (and blocking flock); 0 = unbounded (but
  // interruptible, cancelled by release_owner, broken by deadlock detection).
  std::chrono::milliseconds plain_wait{0};
  // WAL only: a token tenure that was handed off after a wait (or whose
  // read-mark request failed) and ends without writing within this time of its
  // grant is kept for the same owner for this long, so SQLite's WAL_RETRY
  // unlock/relock in walTryBeginRead keeps its turn.  0 disables.
  std::chrono::milliseconds token_grace{2};
  // Lease (§2.3), off by default (0 = strict token: the only policy measured
  // at 0 BUSY for deferred transactions).  When on, a holder that has not
  // asked for a write lock `lease` after taking the token, while others queue,
  // is demoted: it keeps its byte locks and loses the token; its later write
  // goes through the non-holder rules (rollback: EAGAIN; WAL: snapshot check).
  std::chrono::milliseconds lease{0};
  // With a lease: learn it per owner as 2 x the longest of its last 16
  // start->write gaps, clamped to [lease, lease_max].
  bool lease_learned = true;
  std::chrono::milliseconds lease_max{2000};
  // An owner whose token wait was interrupted re-queues at the FIFO head if it
  // asks again within this time (the kernel restarts the fcntl).
  std::chrono::milliseconds interrupt_pass{200};
};

// A lock request (one FUSE setlk).
struct LockRequest {
  FileId file = 0;
  OwnerId owner = 0;  // fi->lock_owner
  LockType type = LockType::read;
  std::uint64_t start = 0;
  std::uint64_t end = kToEof;  // inclusive; kToEof = to EOF (l_len == 0)
  std::uint32_t pid = 0;       // fuse_req_ctx(req)->pid (diagnostics only)
  bool writable = false;       // the handle (fi) was opened O_RDWR or O_WRONLY
  bool wait = false;           // F_SETLKW (FUSE setlk sleep=1)
};

enum class FlockOp : std::uint8_t { shared, exclusive, unlock };

// The pseudo-owner that holds every writer token during a quiesce.
inline constexpr OwnerId kQuiesceOwner = ~OwnerId{0};

// What a quiesce achieved when it was reported (all tokens held, or its timeout).
struct QuiesceResult {
  std::size_t databases = 0;      // domains the quiesce covers
  std::vector<std::string> busy;  // domain keys still in a transaction at the timeout
  Clock::duration took{};
};

class LockManager {
public:
  explicit LockManager(Config cfg = {});
  // Completes every waiting request with EINTR and joins the timer thread.
  // The caller must make sure no other call is in flight.
  ~LockManager();
  LockManager(const LockManager&) = delete;
  LockManager& operator=(const LockManager&) = delete;

  // --- files --------------------------------------------------------------
  // Declares what a file is.  `domain` names the database a file belongs to,
  // the same for the db file and its -journal, -wal and -shm (e.g.
  // "<parent ino>/" + database_name(name)); empty for plain files.  Files
  // never registered are plain.  May be called again (kind or domain changed).
  void register_file(FileId file, FileKind kind, const std::string& domain = {});
  // The journal mode of a domain, from db header bytes 18/19; re-tell on change.
  void set_journal_mode(const std::string& domain, JournalMode mode);
  // Forgets a file that has no locks and no waiters (FUSE forget).
  void forget_file(FileId file);

  // --- POSIX locks -----------------------------------------------------------
  TicketId new_ticket();
  void setlk(TicketId ticket, const LockRequest& req, Completion done);
  // F_GETLK: the first lock of another owner conflicting with type/range
  // (the caller's own locks are ignored); nullopt = F_UNLCK.
  std::optional<HeldLock> getlk(FileId file, OwnerId owner, LockType type, std::uint64_t start,
                                std::uint64_t end) const;
  // FUSE FLUSH: drops every POSIX lock of the owner on the file and cancels its
  // queued requests there with EAGAIN; hands the writer token on if needed.
  void release_owner(FileId file, OwnerId owner);
  void interrupt(TicketId ticket);
  // A ticket that will not be submitted after all (the adapter answered the
  // request itself, e.g. EINVAL): forget it.  Unknown ids are ignored.
  void cancel_ticket(TicketId ticket);

  // --- flock (BSD semantics, own namespace, owner = fi->lock_owner) ----------
  void flock(TicketId ticket, FileId file, OwnerId owner, FlockOp op, bool nonblock,
             std::uint32_t pid, Completion done);
  // FUSE RELEASE with FUSE_RELEASE_FLOCK_UNLOCK.
  void release_flock(FileId file, OwnerId owner);

  // --- quiesce (snapshots and restores, issue 11) -----------------------------
  // The pseudo-owner kQuiesceOwner takes the writer token of every domain, at
  // the FIFO head: the current holder's transaction finishes, requests already
  // queued and new ones wait (SQLite's transaction start waits for the token
  // even for a try-lock, so they never fail).  A domain created while quiesced
  // is held from its creation.  `done` runs once (never under the mutex):
  // when every token is held, or after `timeout` with the domains still in a
  // transaction listed as busy; those are then not taken at all.  After `hold`
  // the manager resumes on its own (warn line).  Time a request spends waiting
  // for a quiesce does not count toward its wait bound (sqlite_wait).
  // Returns the quiesce's id, or 0 (and `done` is not called) when one is
  // already active.
  std::uint64_t quiesce(Clock::duration timeout, Clock::duration hold,
                        std::function<void(QuiesceResult)> done);
  // Ends quiesce `id` (0: whichever is active): every token it holds goes to
  // its FIFO head; a quiesce not yet reported reports now (what it did not
  // hold is busy).  Returns how long it was active, or nullopt when no such
  // quiesce is active (a no-op).
  std::optional<Clock::duration> resume(std::uint64_t id = 0);
  bool quiesced() const;

  // --- retirement (a restore replaced the tree these files were in) -------------
  // Waiting requests on these files complete with EIO; their domains leave
  // the table (a quiesce no longer covers them; a new domain under the same
  // key starts fresh).  Their granted locks stay until released as usual.
  void retire_files(const std::vector<FileId>& files);

  // --- observation ---------------------------------------------------------------
  Stats stats() const;
  std::string stats_json() const;
  std::vector<HeldLock> locks(FileId file) const;
  std::optional<OwnerId> token_holder(const std::string& domain) const;
  std::vector<OwnerId> token_queue(const std::string& domain) const;  // FIFO order
  // Diagnostics: every domain (mode, token holder/pid/age, FIFO) and every
  // waiting request (file, owner, pid, range, action, age) as JSON text.
  std::string state_json() const;

private:
  struct Domain;
  struct FileState;
  struct Waiter;
  struct Batch;  // completions to run after the mutex is released
  enum class Step : std::uint8_t { done, wait };

  FileState& file_locked(FileId file);
  Domain* domain_locked(const std::string& key);
  void submit_locked(Waiter w, bool interrupted, Batch& batch);
  Step advance_locked(Waiter& w, bool first, Batch& batch);
  Step advance_flock_locked(Waiter& w, Batch& batch);
  void complete_locked(Waiter& w, int err, Batch& batch, std::optional<EagainCause> cause = {});
  void pump_locked(Batch& batch);
  bool token_try_take_locked(Domain& d, Waiter& w);
  void token_grant_locked(Domain& d, OwnerId owner, std::uint32_t pid, bool handoff);
  void token_release_locked(Domain& d, const char* why, bool allow_grace);
  void token_check_end_locked(Domain& d, OwnerId owner, const char* why);
  bool owner_in_txn_locked(const Domain& d, OwnerId owner) const;
  bool commit_waiting_locked(const FileState& f, OwnerId owner) const;
  void forget_owner_locked(Domain& d, OwnerId owner);
  void gc_file_locked(FileId file);
  void after_unlock_locked(FileState& f, OwnerId owner, bool held_reserved, bool held_write120);
  std::chrono::milliseconds lease_for_locked(const Domain& d, OwnerId owner) const;
  std::vector<OwnerId> blockers_locked(const Waiter& w) const;
  std::optional<TicketId> find_deadlock_locked(const Waiter& w) const;
  Clock::time_point deadline_for(const Waiter& w, Clock::time_point now) const;
  void timer_main();
  static void run(Batch& batch);
  void quiesce_take_locked(Batch& batch);
  void quiesce_report_locked(Batch& batch);
  void resume_locked(Batch& batch, const char* why);
  bool quiesce_blocks_locked(const Waiter& w) const;
  void restart_bounds_locked(Domain& d, Clock::time_point now);

  const Config cfg_;
  std::shared_ptr<spdlog::logger> log_;

  // Guards everything below.  Lock order: mu_ is the manager's only mutex and
  // the innermost lock of the adapter: it may be taken while libfuse holds a
  // request's lock (interrupt callback -> interrupt()), and it is never held
  // while a Completion runs or while calling out of the manager, so nothing can
  // be taken after it except spdlog's sink mutex (logging under mu_ is fine).
  mutable std::mutex mu_;
  std::condition_variable timer_cv_;  // wakes the timer thread (with mu_)
  bool stopping_ = false;
  TicketId next_ticket_ = 1;
  std::unordered_set<TicketId> issued_;       // tickets not yet submitted
  std::unordered_set<TicketId> early_intr_;   // interrupted before submission
  std::map<TicketId, std::unique_ptr<Waiter>> waiting_;  // submission order (ids grow)
  std::unordered_map<FileId, std::unique_ptr<FileState>> files_;
  std::unordered_map<std::string, std::unique_ptr<Domain>> domains_;
  Stats stats_;
  WaitHistogram hist_;
  struct Quiesce {
    std::uint64_t id = 0;
    Clock::time_point start{};
    Clock::time_point report_at{};  // the timeout
    Clock::time_point hold_until{};
    bool reported = false;
    std::function<void(QuiesceResult)> done;
  };
  std::optional<Quiesce> quiesce_;
  std::uint64_t next_quiesce_ = 1;
  std::vector<std::unique_ptr<Domain>> retired_;  // still referenced by stale files

  std::thread timer_;  // last member: started after everything else exists
};

}  // namespace hoody::dbfs::lock
