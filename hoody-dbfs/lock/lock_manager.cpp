#include "lock/lock_manager.hpp"

#include <algorithm>
#include <cerrno>
#include <string_view>

#include <nlohmann/json.hpp>

#include "hoody/log.hpp"

namespace hoody::dbfs::lock {

namespace {

const char* err_name(int err) {
  switch (err) {
    case 0: return "granted";
    case EAGAIN: return "EAGAIN";
    case EDEADLK: return "EDEADLK";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    default: return "error";
  }
}

// A byte range for log lines, formatted only when the line is written.
struct RangeFmt {
  std::uint64_t start;
  std::uint64_t end;
};
RangeFmt range_str(std::uint64_t start, std::uint64_t end) { return {start, end}; }

std::int64_t ms_since(Clock::time_point t, Clock::time_point now) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(now - t).count();
}

}  // namespace
}  // namespace hoody::dbfs::lock

template <> struct fmt::formatter<hoody::dbfs::lock::RangeFmt> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <typename Ctx> auto format(const hoody::dbfs::lock::RangeFmt& r, Ctx& ctx) const {
    if (r.end == hoody::dbfs::lock::kToEof) return fmt::format_to(ctx.out(), "[{},EOF]", r.start);
    return fmt::format_to(ctx.out(), "[{},+{}]", r.start, r.end - r.start + 1);
  }
};

namespace hoody::dbfs::lock {

struct LockManager::Domain {
  struct OwnerFacts {
    std::optional<bool> db_writable;  // from the owner's requests on the db file
    std::uint64_t snap_epoch = 0;     // commit_epoch when its WAL read txn started
    std::deque<std::chrono::milliseconds> gaps;  // recent token->write gaps (lease learning)
  };
  std::string key;
  JournalMode mode = JournalMode::rollback;
  std::optional<FileId> db;
  std::optional<FileId> shm;
  // The writer token.
  std::optional<OwnerId> holder;
  std::uint32_t holder_pid = 0;
  bool wrote = false;       // the current tenure asked for a write lock
  bool soft = false;        // released, kept for the holder until grace_until
  bool handed_off = false;  // the current tenure came from the FIFO (it waited)
  Clock::time_point since{};
  Clock::time_point grace_until{};
  std::deque<TicketId> fifo;  // token waiters, in order
  std::uint64_t commit_epoch = 0;
  std::unordered_map<OwnerId, OwnerFacts> owners;
  std::unordered_map<OwnerId, Clock::time_point> passes;  // re-queue at the FIFO head until
  // A quiesce wants the token next (ahead of the FIFO); it takes it in pump_locked().
  bool q_pending = false;
};

struct LockManager::FileState {
  FileId id = 0;
  FileKind kind = FileKind::plain;
  Domain* domain = nullptr;  // set for sqlite_db, journal, wal, shm with a domain
  RangeTable table;
  struct Flock {
    bool exclusive;
    std::uint32_t pid;
  };
  std::unordered_map<OwnerId, Flock> flocks;
};

struct LockManager::Waiter {
  TicketId id = 0;
  LockRequest req;
  Completion done;
  bool is_flock = false;
  FlockOp fop = FlockOp::unlock;
  bool nonblock = false;
  Action action = Action::plain;
  Clock::time_point submitted{};
  Clock::time_point deadline = Clock::time_point::max();
  bool waiting = false;     // in waiting_
  bool in_fifo = false;     // queued for the token
  bool took_token = false;  // this request obtained the token
};

struct LockManager::Batch {
  std::vector<std::pair<Completion, int>> items;
};

void LockManager::run(Batch& batch) {
  for (auto& [done, err] : batch.items) {
    if (!done) continue;
    try {
      done(err);
    } catch (const std::exception& e) {
      hoody::log::get("lock")->error("op=complete err={} -> completion threw: {}", err, e.what());
    } catch (...) {
      hoody::log::get("lock")->error("op=complete err={} -> completion threw", err);
    }
  }
  batch.items.clear();
}

LockManager::LockManager(Config cfg) : cfg_(cfg), log_(hoody::log::get("lock")) {
  timer_ = std::thread([this] { timer_main(); });
}

LockManager::~LockManager() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  timer_cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  Batch batch;
  {
    std::lock_guard lk(mu_);
    if (quiesce_ && !quiesce_->reported) quiesce_report_locked(batch);
    for (auto& [id, w] : waiting_) {
      ++stats_.shutdown_cancels;
      complete_locked(*w, EINTR, batch);
    }
    waiting_.clear();
  }
  run(batch);
}

// ---- files and domains --------------------------------------------------------

LockManager::FileState& LockManager::file_locked(FileId file) {
  auto it = files_.find(file);
  if (it == files_.end()) {
    auto f = std::make_unique<FileState>();
    f->id = file;
    it = files_.emplace(file, std::move(f)).first;
  }
  return *it->second;
}

LockManager::Domain* LockManager::domain_locked(const std::string& key) {
  auto it = domains_.find(key);
  if (it == domains_.end()) {
    auto d = std::make_unique<Domain>();
    d->key = key;
    if (quiesce_) {  // a database that appears while quiesced is held from the start
      d->holder = kQuiesceOwner;
      d->since = Clock::now();
      log_->debug("op=quiesce domain={} -> held at creation", key);
    }
    it = domains_.emplace(key, std::move(d)).first;
  }
  return it->second.get();
}

void LockManager::register_file(FileId file, FileKind kind, const std::string& domain) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    FileState& f = file_locked(file);
    if (f.domain) {  // re-registration: drop the old roles
      if (f.domain->db == file) f.domain->db.reset();
      if (f.domain->shm == file) f.domain->shm.reset();
    }
    f.kind = kind;
    std::string key = domain;
    if (key.empty() && (kind == FileKind::sqlite_db || kind == FileKind::shm))
      key = fmt::format("ino:{}", file);
    f.domain = (kind == FileKind::plain || key.empty()) ? nullptr : domain_locked(key);
    if (f.domain && kind == FileKind::sqlite_db) f.domain->db = file;
    if (f.domain && kind == FileKind::shm) f.domain->shm = file;
    log_->debug("op=register file={} kind={} domain={}", file, to_string(kind), key);
    pump_locked(batch);
  }
  run(batch);
}

void LockManager::set_journal_mode(const std::string& domain, JournalMode mode) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    Domain* d = domain_locked(domain);
    if (d->mode != mode) {
      log_->debug("op=journal_mode domain={} mode={}", domain, to_string(mode));
      d->mode = mode;
      if (d->holder) token_check_end_locked(*d, *d->holder, "mode_change");
      pump_locked(batch);
    }
  }
  run(batch);
}

void LockManager::forget_file(FileId file) {
  std::lock_guard lk(mu_);
  auto it = files_.find(file);
  if (it == files_.end()) return;
  const FileState& f = *it->second;
  if (!f.table.empty() || !f.flocks.empty()) return;
  for (const auto& [id, w] : waiting_)
    if (w->req.file == file) return;
  if (f.domain) {
    if (f.domain->db == file) f.domain->db.reset();
    if (f.domain->shm == file) f.domain->shm.reset();
  }
  files_.erase(it);
}

// ---- tickets, interrupts ------------------------------------------------------

TicketId LockManager::new_ticket() {
  std::lock_guard lk(mu_);
  const TicketId id = next_ticket_++;
  issued_.insert(id);
  return id;
}

void LockManager::interrupt(TicketId ticket) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    auto it = waiting_.find(ticket);
    if (it != waiting_.end()) {
      Waiter& w = *it->second;
      const bool token_wait = w.in_fifo;
      FileState& f = file_locked(w.req.file);
      log_->trace("op=interrupt ticket={} file={} owner={:#x} -> EINTR", ticket, w.req.file,
                  w.req.owner);
      ++stats_.interrupts;
      const OwnerId owner = w.req.owner;
      complete_locked(w, EINTR, batch);
      waiting_.erase(it);
      if (token_wait && f.domain) f.domain->passes[owner] = Clock::now() + cfg_.interrupt_pass;
      pump_locked(batch);
    } else if (issued_.count(ticket)) {
      log_->trace("op=interrupt ticket={} -> before submission", ticket);
      early_intr_.insert(ticket);
      ++stats_.interrupts_early;
    }
  }
  run(batch);
}

void LockManager::cancel_ticket(TicketId ticket) {
  std::lock_guard lk(mu_);
  issued_.erase(ticket);
  early_intr_.erase(ticket);
}

// ---- setlk / getlk / flush ----------------------------------------------------------

void LockManager::setlk(TicketId ticket, const LockRequest& req, Completion done) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    const bool interrupted = early_intr_.erase(ticket) > 0;
    issued_.erase(ticket);
    Waiter w;
    w.id = (ticket == 0 || waiting_.count(ticket)) ? next_ticket_++ : ticket;
    const FileId file_id = req.file;
    w.req = req;
    if (w.req.end < w.req.start) w.req.end = w.req.start;
    w.done = std::move(done);
    w.submitted = Clock::now();
    submit_locked(std::move(w), interrupted, batch);
    pump_locked(batch);
    gc_file_locked(file_id);
  }
  run(batch);
}

void LockManager::flock(TicketId ticket, FileId file, OwnerId owner, FlockOp op, bool nonblock,
                        std::uint32_t pid, Completion done) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    const bool interrupted = early_intr_.erase(ticket) > 0;
    issued_.erase(ticket);
    Waiter w;
    w.id = (ticket == 0 || waiting_.count(ticket)) ? next_ticket_++ : ticket;
    const FileId file_id = file;
    w.is_flock = true;
    w.fop = op;
    w.nonblock = nonblock;
    w.req.file = file;
    w.req.owner = owner;
    w.req.pid = pid;
    w.req.wait = !nonblock;
    w.done = std::move(done);
    w.submitted = Clock::now();
    submit_locked(std::move(w), interrupted, batch);
    pump_locked(batch);
    gc_file_locked(file_id);
  }
  run(batch);
}

std::optional<HeldLock> LockManager::getlk(FileId file, OwnerId owner, LockType type,
                                           std::uint64_t start, std::uint64_t end) const {
  std::lock_guard lk(mu_);
  if (type == LockType::unlock) return std::nullopt;
  auto it = files_.find(file);
  if (it == files_.end()) return std::nullopt;
  auto c = it->second->table.first_conflict(owner, type, start, std::max(start, end));
  log_->trace("op=getlk file={} owner={:#x} range={} type={} -> {}", file, owner,
              range_str(start, end), to_string(type), c ? to_string(c->type) : "U");
  return c;
}

void LockManager::release_owner(FileId file, OwnerId owner) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Waiter& w = *it->second;
      if (!w.is_flock && w.req.file == file && w.req.owner == owner) {
        complete_locked(w, EAGAIN, batch, EagainCause::flush);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    if (auto fit = files_.find(file); fit != files_.end()) {  // FLUSH comes on every close
      FileState& f = *fit->second;
      const bool held_res =
          f.kind == FileKind::sqlite_db &&
          f.table.holds_in(owner, kReservedByte, kReservedByte, LockType::write);
      const bool held_w120 =
          f.kind == FileKind::shm &&
          f.table.holds_in(owner, kWalWriteLock, kWalWriteLock, LockType::write);
      const bool had = f.table.release_owner(owner);
      log_->trace("op=flush file={} owner={:#x} had_locks={}", file, owner, had);
      if (f.domain) {
        Domain& d = *f.domain;
        if (held_res || held_w120) ++d.commit_epoch;
        if (d.holder == owner && (d.soft || !owner_in_txn_locked(d, owner))) {
          ++stats_.token_flush_releases;
          token_release_locked(d, "flush", false);
        }
        forget_owner_locked(d, owner);
      }
    }
    pump_locked(batch);
    gc_file_locked(file);
  }
  run(batch);
}

void LockManager::forget_owner_locked(Domain& d, OwnerId owner) {
  if (d.holder == owner) return;
  for (const std::optional<FileId>& id : {d.db, d.shm}) {
    if (!id) continue;
    auto f = files_.find(*id);
    if (f != files_.end() && f->second->table.holds_any(owner)) return;
  }
  for (const auto& [tid, w] : waiting_)
    if (w->req.owner == owner) return;
  d.owners.erase(owner);
  auto pass = d.passes.find(owner);
  if (pass != d.passes.end() && pass->second <= Clock::now()) d.passes.erase(pass);
}

void LockManager::gc_file_locked(FileId file) {
  // Unregistered plain files are remembered only while they have locks or waiters.
  auto it = files_.find(file);
  if (it == files_.end()) return;
  const FileState& f = *it->second;
  if (f.kind != FileKind::plain || f.domain || !f.table.empty() || !f.flocks.empty()) return;
  for (const auto& [id, w] : waiting_)
    if (w->req.file == file) return;
  files_.erase(it);
}

void LockManager::release_flock(FileId file, OwnerId owner) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Waiter& w = *it->second;
      if (w.is_flock && w.req.file == file && w.req.owner == owner) {
        complete_locked(w, EAGAIN, batch, EagainCause::flush);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    if (auto it = files_.find(file); it != files_.end()) it->second->flocks.erase(owner);
    pump_locked(batch);
    gc_file_locked(file);
  }
  run(batch);
}

// ---- the core -----------------------------------------------------------------------

void LockManager::submit_locked(Waiter w, bool interrupted, Batch& batch) {
  ++stats_.requests;
  const Step s = w.is_flock ? advance_flock_locked(w, batch) : advance_locked(w, true, batch);
  if (s == Step::done) return;
  if (interrupted) {
    ++stats_.interrupts;
    log_->trace("op=setlk ticket={} owner={:#x} -> EINTR (interrupted before submission)", w.id,
                w.req.owner);
    complete_locked(w, EINTR, batch);
    return;
  }
  if (!w.is_flock) {
    if (auto victim = find_deadlock_locked(w)) {
      ++stats_.deadlocks_broken;
      auto fail = [&](Waiter& v) {
        const bool plain = v.action == Action::plain && v.req.wait;
        log_->debug("op=setlk file={} owner={:#x} range={} action={} -> {} (deadlock victim)",
                    v.req.file, v.req.owner, range_str(v.req.start, v.req.end),
                    to_string(v.action), plain ? "EDEADLK" : "EAGAIN");
        if (plain)
          complete_locked(v, EDEADLK, batch);
        else
          complete_locked(v, EAGAIN, batch, EagainCause::deadlock);
      };
      if (*victim == w.id) {
        fail(w);
        return;
      }
      auto it = waiting_.find(*victim);
      fail(*it->second);
      waiting_.erase(it);
    }
  }
  const auto now = Clock::now();
  w.waiting = true;
  w.deadline = deadline_for(w, now);
  ++stats_.waits;
  ++stats_.queue_depth;
  stats_.max_queue_depth = std::max(stats_.max_queue_depth, stats_.queue_depth);
  log_->trace("op=setlk ticket={} file={} owner={:#x} range={} action={} -> queued depth={}", w.id,
              w.req.file, w.req.owner, range_str(w.req.start, w.req.end), to_string(w.action),
              stats_.queue_depth);
  const TicketId id = w.id;
  waiting_.emplace(id, std::make_unique<Waiter>(std::move(w)));
  timer_cv_.notify_one();
}

Clock::time_point LockManager::deadline_for(const Waiter& w, Clock::time_point now) const {
  auto bound = cfg_.sqlite_wait;
  if (w.is_flock || w.action == Action::plain) {
    if (cfg_.plain_wait.count() <= 0) return Clock::time_point::max();
    bound = cfg_.plain_wait;
  } else if (w.action == Action::commit || w.action == Action::excl_probe) {
    bound = cfg_.commit_wait;
  } else if (w.action == Action::dms_attach) {
    bound = cfg_.dms_wait;
  }
  return now + bound;
}

void LockManager::complete_locked(Waiter& w, int err, Batch& batch,
                                  std::optional<EagainCause> cause) {
  if (err != 0 && !w.is_flock) {
    FileState& f = file_locked(w.req.file);
    if (f.domain) {
      Domain& d = *f.domain;
      if (w.in_fifo) {
        d.fifo.erase(std::remove(d.fifo.begin(), d.fifo.end(), w.id), d.fifo.end());
        w.in_fifo = false;
      }
      if (w.took_token && d.holder == w.req.owner) {
        w.took_token = false;  // so owner_in_txn does not count this request
        if (!d.soft && !owner_in_txn_locked(d, w.req.owner))
          token_release_locked(d, "failed_start", true);
      }
    }
  }
  if (err == 0) ++stats_.granted;
  if (err == EAGAIN && cause) ++stats_.eagain[static_cast<std::size_t>(*cause)];
  if (err == EDEADLK) ++stats_.edeadlk;
  if (w.waiting) {
    w.waiting = false;
    --stats_.queue_depth;
    const auto waited =
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - w.submitted);
    hist_.add(waited);
    stats_.wait_max_us =
        std::max<std::uint64_t>(stats_.wait_max_us, static_cast<std::uint64_t>(waited.count()));
  }
  if (w.is_flock)
    log_->trace("op=flock ticket={} file={} owner={:#x} -> {}", w.id, w.req.file, w.req.owner,
                err_name(err));
  else
    log_->trace("op=setlk ticket={} file={} owner={:#x} range={} type={} action={} -> {}{}{}",
                w.id, w.req.file, w.req.owner, range_str(w.req.start, w.req.end),
                to_string(w.req.type), to_string(w.action), err_name(err), cause ? " cause=" : "",
                cause ? to_string(*cause) : "");
  batch.items.emplace_back(std::move(w.done), err);
}

LockManager::Step LockManager::advance_locked(Waiter& w, bool first, Batch& batch) {
  FileState& f = file_locked(w.req.file);
  const LockRequest& r = w.req;
  Domain* d = f.domain;

  if (first) {
    OwnerView v;
    v.holds_any = f.table.holds_any(r.owner);
    if (f.kind == FileKind::sqlite_db) {
      // Only SQLite's bytes count: an application lock elsewhere on the db
      // must not turn a transaction start into a connect.
      v.holds_any = f.table.holds_in(r.owner, kPendingByte, kSharedLast);
      v.holds_reserved = f.table.holds_in(r.owner, kReservedByte, kReservedByte, LockType::write);
      v.holds_shared_w = f.table.holds_in(r.owner, kSharedFirst, kSharedLast, LockType::write);
      if (d) d->owners[r.owner].db_writable = r.writable;
    } else if (f.kind == FileKind::shm) {
      v.holds_read_mark = f.table.holds_in(r.owner, kWalReadLock0, kWalReadLockLast);
      if (d && d->mode != JournalMode::wal && r.type != LockType::unlock &&
          is_sqlite_lock_range(f.kind, r.start, r.end)) {
        // Only WAL mode locks the -shm: the adapter has not told us yet.
        log_->debug("op=journal_mode domain={} mode=wal (inferred from a -shm lock)", d->key);
        d->mode = JournalMode::wal;
        if (d->holder) token_check_end_locked(*d, *d->holder, "mode_change");
      }
    }
    const JournalMode mode = d ? d->mode : JournalMode::rollback;
    w.action = d ? classify_request(f.kind, mode, r.type, r.start, r.end, v)
                 : (r.type == LockType::unlock ? Action::unlock : Action::plain);
    log_->trace("op=setlk ticket={} file={} kind={} owner={:#x} pid={} range={} type={} wait={} "
                "rw={} action={}",
                w.id, r.file, to_string(f.kind), r.owner, r.pid, range_str(r.start, r.end),
                to_string(r.type), r.wait, r.writable, to_string(w.action));
  }

  // The POSIX stage: grant if nothing conflicts, else fail or keep waiting.
  auto posix = [&](bool may_wait, EagainCause cause) -> Step {
    if (f.table.first_conflict(r.owner, r.type, r.start, r.end)) {
      if (!may_wait) {
        complete_locked(w, EAGAIN, batch, cause);
        return Step::done;
      }
      return Step::wait;
    }
    f.table.set(r.owner, r.type, r.start, r.end, r.pid);
    if (d) {
      if (w.action == Action::txn_start && f.kind == FileKind::shm)
        d->owners[r.owner].snap_epoch = d->commit_epoch;
      if ((w.action == Action::write_intent || w.action == Action::wal_write ||
           w.action == Action::commit) &&
          d->holder == r.owner && !d->wrote) {
        d->wrote = true;
        if (cfg_.lease.count() > 0) {
          auto& gaps = d->owners[r.owner].gaps;
          gaps.push_back(
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - d->since));
          if (gaps.size() > 16) gaps.pop_front();
        }
      }
    }
    w.took_token = false;
    complete_locked(w, 0, batch);
    return Step::done;
  };
  // The token stage: true when the owner holds the token.
  auto token = [&]() -> bool {
    if (token_try_take_locked(*d, w)) return true;
    if (!w.in_fifo) {
      auto pass = d->passes.find(r.owner);
      const bool front = pass != d->passes.end() && pass->second > Clock::now();
      if (pass != d->passes.end()) d->passes.erase(pass);
      if (front)
        d->fifo.push_front(w.id);
      else
        d->fifo.push_back(w.id);
      w.in_fifo = true;
      log_->trace("op=token domain={} owner={:#x} holder={:#x} -> queued pos={}", d->key, r.owner,
                  d->holder.value_or(0), front ? 0 : d->fifo.size() - 1);
      return token_try_take_locked(*d, w);
    }
    return false;
  };

  switch (w.action) {
    case Action::unlock: {
      const bool held_res =
          f.kind == FileKind::sqlite_db && r.start <= kReservedByte && r.end >= kReservedByte &&
          f.table.holds_in(r.owner, kReservedByte, kReservedByte, LockType::write);
      const bool held_w120 =
          f.kind == FileKind::shm && r.start <= kWalWriteLock && r.end >= kWalWriteLock &&
          f.table.holds_in(r.owner, kWalWriteLock, kWalWriteLock, LockType::write);
      f.table.set(r.owner, LockType::unlock, r.start, r.end, r.pid);
      complete_locked(w, 0, batch);
      after_unlock_locked(f, r.owner, held_res, held_w120);
      return Step::done;
    }
    case Action::plain: return posix(r.wait, EagainCause::try_conflict);
    case Action::try_only: return posix(r.wait, EagainCause::probe);
    case Action::connect:
      if (f.kind == FileKind::sqlite_db && d->mode == JournalMode::rollback &&
          r.start == kPendingByte && !f.table.holds_in(r.owner, kSharedFirst, kSharedLast) &&
          commit_waiting_locked(f, r.owner))
        return Step::wait;
      return posix(true, EagainCause::probe);
    case Action::downgrade:
    case Action::dms_attach:
    case Action::commit: return posix(true, EagainCause::probe);
    case Action::excl_probe:
      // Hot-journal rollback by the token holder may wait; anyone else: try.
      return posix(r.wait || d->holder == r.owner, EagainCause::probe);
    case Action::txn_start: {
      const bool rw = f.kind == FileKind::sqlite_db
                          ? r.writable
                          : d->owners[r.owner].db_writable.value_or(r.writable);
      if (rw && !token()) return Step::wait;
      // A commit that waits for readers to drain without holding PENDING
      // (a SQLite that skips it) still keeps new readers out.
      if (f.kind == FileKind::sqlite_db && commit_waiting_locked(f, r.owner)) return Step::wait;
      // Rollback: wait behind PENDING/EXCLUSIVE.  WAL: a busy read-mark is
      // SQLite's WAL_RETRY, so fail at once.
      return posix(f.kind == FileKind::sqlite_db || r.wait, EagainCause::probe);
    }
    case Action::write_intent: {
      if (d->holder == r.owner) {
        if (d->soft) {
          d->soft = false;
          d->since = Clock::now();
        }
        return posix(true, EagainCause::probe);
      }
      if (f.table.holds_in(r.owner, kSharedFirst, kSharedLast)) {
        // Waiting here can only deadlock with the committing holder (§2.1).
        // Only a free token with nobody queued lets it through.
        if (!d->holder && !d->q_pending && d->fifo.empty() &&
            !f.table.first_conflict(r.owner, r.type, r.start, r.end)) {
          token_grant_locked(*d, r.owner, r.pid, false);
          return posix(false, EagainCause::deadlock_avoid);
        }
        complete_locked(w, EAGAIN, batch, EagainCause::deadlock_avoid);
        return Step::done;
      }
      return posix(r.wait, EagainCause::probe);
    }
    case Action::wal_write: {
      const bool was_holder = d->holder == r.owner;
      const bool in_read = f.table.holds_in(r.owner, kWalReadLock0, kWalReadLockLast);
      auto stale = [&] {
        auto it = d->owners.find(r.owner);
        return in_read && !was_holder &&
               (it == d->owners.end() || it->second.snap_epoch != d->commit_epoch);
      };
      if (stale()) {
        complete_locked(w, EAGAIN, batch, EagainCause::stale_snapshot);
        return Step::done;
      }
      if (!token()) return Step::wait;
      if (stale()) {  // someone committed while it waited for the token
        complete_locked(w, EAGAIN, batch, EagainCause::stale_snapshot);
        return Step::done;
      }
      return posix(true, EagainCause::probe);
    }
  }
  return posix(r.wait, EagainCause::try_conflict);
}

LockManager::Step LockManager::advance_flock_locked(Waiter& w, Batch& batch) {
  FileState& f = file_locked(w.req.file);
  const OwnerId owner = w.req.owner;
  if (w.fop == FlockOp::unlock) {
    f.flocks.erase(owner);
    complete_locked(w, 0, batch);
    return Step::done;
  }
  const bool excl = w.fop == FlockOp::exclusive;
  auto mine = f.flocks.find(owner);
  if (mine != f.flocks.end()) {
    if (mine->second.exclusive == excl) {
      complete_locked(w, 0, batch);
      return Step::done;
    }
    f.flocks.erase(mine);  // BSD: a conversion drops the old lock first (as Linux does)
  }
  for (const auto& [o, fl] : f.flocks) {
    if (o != owner && (fl.exclusive || excl)) {
      if (w.nonblock) {
        complete_locked(w, EAGAIN, batch, EagainCause::try_conflict);
        return Step::done;
      }
      return Step::wait;
    }
  }
  f.flocks[owner] = FileState::Flock{excl, w.req.pid};
  complete_locked(w, 0, batch);
  return Step::done;
}

void LockManager::pump_locked(Batch& batch) {
  bool progress = true;
  while (progress) {
    progress = false;
    if (quiesce_) quiesce_take_locked(batch);
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Waiter& w = *it->second;
      const Step s = w.is_flock ? advance_flock_locked(w, batch) : advance_locked(w, false, batch);
      if (s == Step::done) {
        it = waiting_.erase(it);
        progress = true;
      } else {
        ++it;
      }
    }
  }
}

bool LockManager::commit_waiting_locked(const FileState& f, OwnerId owner) const {
  for (const auto& [id, w] : waiting_)
    if (w->action == Action::commit && w->req.file == f.id && w->req.owner != owner) return true;
  return false;
}

// ---- the writer token -------------------------------------------------------------

bool LockManager::token_try_take_locked(Domain& d, Waiter& w) {
  const OwnerId owner = w.req.owner;
  auto leave_fifo = [&] {
    if (w.in_fifo) {
      d.fifo.erase(std::remove(d.fifo.begin(), d.fifo.end(), w.id), d.fifo.end());
      w.in_fifo = false;
    }
  };
  if (d.holder == owner) {
    if (d.soft) {
      d.soft = false;
      d.since = Clock::now();
      log_->debug("op=token domain={} owner={:#x} -> resumed in grace", d.key, owner);
    }
    leave_fifo();
    return true;
  }
  if (!d.holder && !d.q_pending && (d.fifo.empty() || d.fifo.front() == w.id)) {
    const bool handoff = w.in_fifo && w.waiting;
    leave_fifo();
    token_grant_locked(d, owner, w.req.pid, handoff);
    w.took_token = true;
    return true;
  }
  return false;
}

void LockManager::token_grant_locked(Domain& d, OwnerId owner, std::uint32_t pid, bool handoff) {
  d.holder = owner;
  d.holder_pid = pid;
  d.wrote = false;
  d.soft = false;
  d.handed_off = handoff;
  d.since = Clock::now();
  ++stats_.token_grants;
  if (handoff) ++stats_.token_handoffs;
  log_->debug("op=token domain={} owner={:#x} pid={} -> granted{} queue={}", d.key, owner, pid,
              handoff ? " (hand-off)" : "", d.fifo.size());
}

void LockManager::token_release_locked(Domain& d, const char* why, bool allow_grace) {
  if (!d.holder) return;
  const auto now = Clock::now();
  // Grace only where SQLite retries at once: a WAL read-mark lock obtained after
  // a wait (the header changed meanwhile: WAL_RETRY) or one that failed.  A
  // rollback NONE->SHARED failure is a final BUSY, no retry follows.
  const bool retry_likely = d.handed_off || std::string_view(why) == "failed_start";
  if (allow_grace && retry_likely && d.mode == JournalMode::wal && !d.wrote &&
      cfg_.token_grace.count() > 0 && now - d.since < cfg_.token_grace) {
    d.soft = true;
    d.grace_until = now + cfg_.token_grace;
    ++stats_.token_graces;
    log_->debug("op=token domain={} owner={:#x} -> grace {}ms ({})", d.key, *d.holder,
                cfg_.token_grace.count(), why);
    timer_cv_.notify_one();
    return;
  }
  log_->debug("op=token domain={} owner={:#x} held={}ms wrote={} -> released ({}) queue={}", d.key,
              *d.holder, ms_since(d.since, now), d.wrote, why, d.fifo.size());
  d.holder.reset();
  d.soft = false;
  d.wrote = false;
  // The FIFO head takes it in pump_locked().
}

bool LockManager::owner_in_txn_locked(const Domain& d, OwnerId owner) const {
  for (const auto& [id, w] : waiting_)
    if (w->took_token && w->req.owner == owner) {
      auto f = files_.find(w->req.file);
      if (f != files_.end() && f->second->domain == &d) return true;
    }
  if (d.mode == JournalMode::rollback) {
    if (!d.db) return false;
    auto f = files_.find(*d.db);
    return f != files_.end() && f->second->table.holds_in(owner, kPendingByte, kSharedLast);
  }
  if (!d.shm) return false;
  auto f = files_.find(*d.shm);
  return f != files_.end() && f->second->table.holds_in(owner, kWalWriteLock, kWalReadLockLast);
}

void LockManager::token_check_end_locked(Domain& d, OwnerId owner, const char* why) {
  if (owner == kQuiesceOwner) return;  // held until resume()
  if (d.holder == owner && !d.soft && !owner_in_txn_locked(d, owner))
    token_release_locked(d, why, true);
}

void LockManager::after_unlock_locked(FileState& f, OwnerId owner, bool held_reserved,
                                      bool held_write120) {
  if (!f.domain) return;
  Domain& d = *f.domain;
  if (held_reserved || held_write120) ++d.commit_epoch;
  token_check_end_locked(d, owner, "txn_end");
}

std::chrono::milliseconds LockManager::lease_for_locked(const Domain& d, OwnerId owner) const {
  auto lease = cfg_.lease;
  if (!cfg_.lease_learned) return lease;
  auto it = d.owners.find(owner);
  if (it == d.owners.end() || it->second.gaps.empty()) return lease;
  const auto longest = *std::max_element(it->second.gaps.begin(), it->second.gaps.end());
  return std::clamp(2 * longest, lease, std::max(lease, cfg_.lease_max));
}

// ---- deadlock detection -------------------------------------------------------------

std::vector<OwnerId> LockManager::blockers_locked(const Waiter& w) const {
  std::vector<OwnerId> out;
  if (w.is_flock) return out;
  auto fit = files_.find(w.req.file);
  if (fit == files_.end()) return out;
  const FileState& f = *fit->second;
  out = f.table.conflicting_owners(w.req.owner, w.req.type, w.req.start, w.req.end);
  if ((w.action == Action::txn_start || w.action == Action::connect) &&
      f.kind == FileKind::sqlite_db) {
    for (const auto& [id, x] : waiting_)  // a waiting commit keeps new readers out
      if (x->action == Action::commit && x->req.file == f.id && x->req.owner != w.req.owner)
        out.push_back(x->req.owner);
  }
  if (w.in_fifo && f.domain) {
    const Domain& d = *f.domain;
    if (d.holder && *d.holder != w.req.owner) out.push_back(*d.holder);
    for (TicketId id : d.fifo) {
      if (id == w.id) break;
      auto it = waiting_.find(id);
      if (it != waiting_.end() && it->second->req.owner != w.req.owner)
        out.push_back(it->second->req.owner);
    }
  }
  return out;
}

std::optional<TicketId> LockManager::find_deadlock_locked(const Waiter& w) const {
  // Wait-for graph over owners: an owner waits for the blockers of each of its
  // waiting requests.  A cycle exists if w's owner is reachable from w's blockers.
  std::unordered_map<OwnerId, std::vector<const Waiter*>> by_owner;
  for (const auto& [id, x] : waiting_) by_owner[x->req.owner].push_back(x.get());
  std::unordered_map<OwnerId, OwnerId> parent;  // DFS tree: owner -> owner that waits on it
  std::vector<OwnerId> stack;
  for (OwnerId b : blockers_locked(w))
    if (!parent.count(b)) {
      parent[b] = w.req.owner;
      stack.push_back(b);
    }
  bool found = false;
  OwnerId last = 0;
  while (!stack.empty() && !found) {
    const OwnerId o = stack.back();
    stack.pop_back();
    if (o == w.req.owner) {
      found = true;
      break;
    }
    auto it = by_owner.find(o);
    if (it == by_owner.end()) continue;
    for (const Waiter* x : it->second)
      for (OwnerId b : blockers_locked(*x)) {
        if (b == w.req.owner) {
          found = true;
          last = o;
          break;
        }
        if (!parent.count(b)) {
          parent[b] = o;
          stack.push_back(b);
        }
      }
  }
  if (!found) return std::nullopt;
  if (w.action != Action::commit) return w.id;
  // Prefer the newest waiting request on the cycle that is not a COMMIT.
  std::vector<OwnerId> cycle;
  for (OwnerId o = last; o != w.req.owner && cycle.size() <= parent.size(); o = parent[o])
    cycle.push_back(o);
  std::optional<TicketId> victim;
  for (OwnerId o : cycle) {
    auto it = by_owner.find(o);
    if (it == by_owner.end()) continue;
    for (const Waiter* x : it->second)
      if (x->action != Action::commit && (!victim || x->id > *victim)) victim = x->id;
  }
  return victim ? victim : std::optional<TicketId>(w.id);
}

// ---- timer ------------------------------------------------------------------------------

void LockManager::timer_main() {
  std::unique_lock lk(mu_);
  while (!stopping_) {
    const auto now = Clock::now();
    Batch batch;
    bool changed = false;
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      Waiter& w = *it->second;
      if (w.deadline > now || quiesce_blocks_locked(w)) {
        ++it;
        continue;
      }
      OwnerId holder = 0;
      std::uint32_t holder_pid = 0;
      FileState& f = file_locked(w.req.file);
      if (!w.is_flock) {
        if (auto c = f.table.first_conflict(w.req.owner, w.req.type, w.req.start, w.req.end)) {
          holder = c->owner;
          holder_pid = c->pid;
        } else if (f.domain && f.domain->holder) {
          holder = *f.domain->holder;
          holder_pid = f.domain->holder_pid;
        }
      }
      log_->warn("op={} file={} owner={:#x} pid={} range={} action={} waited={}ms "
                 "holder_owner={:#x} holder_pid={} -> EAGAIN",
                 w.is_flock ? "flock" : "setlk", w.req.file, w.req.owner, w.req.pid,
                 range_str(w.req.start, w.req.end), to_string(w.action),
                 ms_since(w.submitted, now), holder, holder_pid);
      complete_locked(w, EAGAIN, batch, EagainCause::timeout);
      it = waiting_.erase(it);
      changed = true;
    }
    for (auto& [key, d] : domains_) {
      if (d->holder && d->soft && d->grace_until <= now) {
        token_release_locked(*d, "grace_expired", false);
        changed = true;
      } else if (d->holder && *d->holder != kQuiesceOwner && !d->soft && !d->wrote &&
                 !d->fifo.empty() && cfg_.lease.count() > 0 &&
                 now - d->since >= lease_for_locked(*d, *d->holder)) {
        ++stats_.token_demotions;
        log_->debug("op=token domain={} owner={:#x} pid={} held={}ms -> demoted (lease) queue={}",
                    d->key, *d->holder, d->holder_pid, ms_since(d->since, now), d->fifo.size());
        d->holder.reset();
        changed = true;
      }
    }
    if (quiesce_ && !quiesce_->reported && quiesce_->report_at <= now) {
      quiesce_report_locked(batch);
      changed = true;
    }
    if (quiesce_ && quiesce_->hold_until <= now) {
      log_->warn("op=quiesce id={} held={}ms -> resumed on its own: hold time over (the peer "
                 "that quiesced did not resume)",
                 quiesce_->id, ms_since(quiesce_->start, now));
      resume_locked(batch, "hold expired");
      changed = true;
    }
    if (changed) pump_locked(batch);
    if (!batch.items.empty()) {
      lk.unlock();
      run(batch);
      lk.lock();
      continue;
    }
    auto next = Clock::time_point::max();
    for (const auto& [id, w] : waiting_)
      if (!quiesce_blocks_locked(*w)) next = std::min(next, w->deadline);
    for (const auto& [key, d] : domains_) {
      if (d->holder && d->soft) next = std::min(next, d->grace_until);
      if (d->holder && *d->holder != kQuiesceOwner && !d->soft && !d->wrote &&
          !d->fifo.empty() && cfg_.lease.count() > 0)
        next = std::min(next, d->since + lease_for_locked(*d, *d->holder));
    }
    if (quiesce_) {
      if (!quiesce_->reported) next = std::min(next, quiesce_->report_at);
      next = std::min(next, quiesce_->hold_until);
    }
    if (next == Clock::time_point::max())
      timer_cv_.wait(lk);
    else
      timer_cv_.wait_until(lk, next);
  }
}

// ---- observation ------------------------------------------------------------------------

Stats LockManager::stats() const {
  std::lock_guard lk(mu_);
  Stats s = stats_;
  s.wait_p50_us = hist_.quantile_us(0.50);
  s.wait_p99_us = hist_.quantile_us(0.99);
  return s;
}

std::string LockManager::stats_json() const { return to_json(stats()); }

std::vector<HeldLock> LockManager::locks(FileId file) const {
  std::lock_guard lk(mu_);
  auto it = files_.find(file);
  if (it == files_.end()) return {};
  return it->second->table.all();
}

std::optional<OwnerId> LockManager::token_holder(const std::string& domain) const {
  std::lock_guard lk(mu_);
  auto it = domains_.find(domain);
  if (it == domains_.end() || !it->second->holder || it->second->soft) return std::nullopt;
  return it->second->holder;
}

std::vector<OwnerId> LockManager::token_queue(const std::string& domain) const {
  std::lock_guard lk(mu_);
  std::vector<OwnerId> out;
  auto it = domains_.find(domain);
  if (it == domains_.end()) return out;
  for (TicketId id : it->second->fifo) {
    auto w = waiting_.find(id);
    if (w != waiting_.end()) out.push_back(w->second->req.owner);
  }
  return out;
}

std::string LockManager::state_json() const {
  std::lock_guard lk(mu_);
  const auto now = Clock::now();
  nlohmann::json domains = nlohmann::json::array();
  for (const auto& [key, d] : domains_) {
    nlohmann::json fifo = nlohmann::json::array();
    for (TicketId id : d->fifo)
      if (auto w = waiting_.find(id); w != waiting_.end())
        fifo.push_back({{"owner", w->second->req.owner}, {"pid", w->second->req.pid}});
    nlohmann::json j = {{"domain", key},
                        {"mode", to_string(d->mode)},
                        {"commit_epoch", d->commit_epoch},
                        {"fifo", fifo}};
    if (d->q_pending) j["quiesce_pending"] = true;
    if (d->holder == kQuiesceOwner)
      j["token"] = {{"quiesce", true}, {"held_ms", ms_since(d->since, now)}};
    else if (d->holder)
      j["token"] = {{"owner", *d->holder},
                    {"pid", d->holder_pid},
                    {"held_ms", ms_since(d->since, now)},
                    {"wrote", d->wrote},
                    {"grace", d->soft}};
    domains.push_back(j);
  }
  nlohmann::json waits = nlohmann::json::array();
  for (const auto& [id, w] : waiting_)
    waits.push_back({{"ticket", id},
                     {"file", w->req.file},
                     {"owner", w->req.owner},
                     {"pid", w->req.pid},
                     {"start", w->req.start},
                     {"end", w->req.end},
                     {"type", w->is_flock ? "flock" : to_string(w->req.type)},
                     {"action", to_string(w->action)},
                     {"age_ms", ms_since(w->submitted, now)}});
  nlohmann::json j{{"domains", domains}, {"waits", waits}};
  if (quiesce_)
    j["quiesce"] = {{"id", quiesce_->id},
                    {"held_ms", ms_since(quiesce_->start, now)},
                    {"reported", quiesce_->reported}};
  return j.dump();
}

}  // namespace hoody::dbfs::lock

namespace hoody::dbfs::lock {

// ---- quiesce ------------------------------------------------------------------------------

std::uint64_t LockManager::quiesce(Clock::duration timeout, Clock::duration hold,
                                   std::function<void(QuiesceResult)> done) {
  Batch batch;
  std::uint64_t id = 0;
  {
    std::lock_guard lk(mu_);
    if (quiesce_) return 0;
    const auto now = Clock::now();
    id = next_quiesce_++;
    quiesce_.emplace();
    quiesce_->id = id;
    quiesce_->start = now;
    quiesce_->report_at = now + timeout;
    quiesce_->hold_until = now + std::max(hold, timeout);
    quiesce_->done = std::move(done);
    for (auto& [key, d] : domains_) d->q_pending = true;  // behind the holder, ahead of the FIFO
    log_->debug("op=quiesce id={} domains={} timeout={}ms hold={}ms -> started", id,
                domains_.size(), std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count(),
                std::chrono::duration_cast<std::chrono::milliseconds>(hold).count());
    pump_locked(batch);
    timer_cv_.notify_one();
  }
  run(batch);
  return id;
}

void LockManager::quiesce_take_locked(Batch& batch) {
  bool all = true;
  for (auto& [key, d] : domains_) {
    if (!d->q_pending) continue;
    if (d->holder && d->soft) token_release_locked(*d, "quiesce", false);  // grace yields
    if (d->holder) {
      all = false;
      continue;
    }
    d->q_pending = false;
    d->holder = kQuiesceOwner;
    d->holder_pid = 0;
    d->wrote = false;
    d->soft = false;
    d->handed_off = false;
    d->since = Clock::now();
    log_->debug("op=quiesce domain={} -> token held queue={}", key, d->fifo.size());
  }
  if (all && !quiesce_->reported) quiesce_report_locked(batch);
}

void LockManager::quiesce_report_locked(Batch& batch) {
  QuiesceResult r;
  r.databases = domains_.size();
  for (auto& [key, d] : domains_) {
    if (!d->q_pending) continue;
    // Still in a transaction at the timeout: not taken (crash-consistent for it).
    d->q_pending = false;
    restart_bounds_locked(*d, Clock::now());
    r.busy.push_back(key);
  }
  std::sort(r.busy.begin(), r.busy.end());
  r.took = Clock::now() - quiesce_->start;
  quiesce_->reported = true;
  log_->debug("op=quiesce id={} databases={} busy={} took={}us -> reported", quiesce_->id,
              r.databases, r.busy.size(),
              std::chrono::duration_cast<std::chrono::microseconds>(r.took).count());
  if (quiesce_->done)
    batch.items.emplace_back([done = std::move(quiesce_->done), r](int) { done(r); }, 0);
  quiesce_->done = nullptr;
}

std::optional<Clock::duration> LockManager::resume(std::uint64_t id) {
  Batch batch;
  std::optional<Clock::duration> held;
  {
    std::lock_guard lk(mu_);
    if (!quiesce_ || (id != 0 && quiesce_->id != id)) return std::nullopt;
    held = Clock::now() - quiesce_->start;
    resume_locked(batch, "resume");
    pump_locked(batch);
  }
  run(batch);
  return held;
}

void LockManager::resume_locked(Batch& batch, const char* why) {
  if (!quiesce_->reported) quiesce_report_locked(batch);
  const auto now = Clock::now();
  std::size_t released = 0;
  for (auto& [key, d] : domains_) {
    const bool blocked = d->q_pending || d->holder == kQuiesceOwner;
    d->q_pending = false;
    if (blocked) restart_bounds_locked(*d, now);
    if (d->holder != kQuiesceOwner) continue;
    d->holder.reset();
    ++released;
  }
  for (auto& d : retired_)
    if (d->holder == kQuiesceOwner) d->holder.reset();
  log_->debug("op=quiesce id={} held={}ms released={} -> {}", quiesce_->id,
              ms_since(quiesce_->start, now), released, why);
  quiesce_.reset();
  timer_cv_.notify_one();
  // The FIFO heads take the tokens in pump_locked().
}

void LockManager::restart_bounds_locked(Domain& d, Clock::time_point now) {
  // The wait behind the quiesce did not count: a fresh bound from now on.
  for (TicketId t : d.fifo)
    if (auto it = waiting_.find(t); it != waiting_.end())
      it->second->deadline = std::max(it->second->deadline, deadline_for(*it->second, now));
}

bool LockManager::quiesce_blocks_locked(const Waiter& w) const {
  if (!quiesce_ || !w.in_fifo) return false;
  auto f = files_.find(w.req.file);
  if (f == files_.end() || !f->second->domain) return false;
  const Domain& d = *f->second->domain;
  return d.holder == kQuiesceOwner || d.q_pending;
}

bool LockManager::quiesced() const {
  std::lock_guard lk(mu_);
  return quiesce_.has_value();
}

// ---- retirement ---------------------------------------------------------------------------

void LockManager::retire_files(const std::vector<FileId>& files) {
  Batch batch;
  {
    std::lock_guard lk(mu_);
    std::unordered_set<FileId> set(files.begin(), files.end());
    for (auto it = waiting_.begin(); it != waiting_.end();) {
      if (set.count(it->second->req.file)) {
        log_->debug("op=retire file={} owner={:#x} -> EIO (its tree was replaced)",
                    it->second->req.file, it->second->req.owner);
        complete_locked(*it->second, EIO, batch);
        it = waiting_.erase(it);
      } else {
        ++it;
      }
    }
    for (FileId id : files) {
      auto f = files_.find(id);
      if (f == files_.end() || !f->second->domain) continue;
      Domain* d = f->second->domain;
      auto it = domains_.find(d->key);
      if (it == domains_.end() || it->second.get() != d) continue;  // retired already
      d->q_pending = false;
      log_->debug("op=retire domain={} -> retired", d->key);
      retired_.push_back(std::move(it->second));
      domains_.erase(it);
    }
    pump_locked(batch);
  }
  run(batch);
}

}  // namespace hoody::dbfs::lock
