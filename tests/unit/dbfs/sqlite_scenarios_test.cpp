// SQLite's lock sequences (research/sqlite-locking.md §1.2, §1.3) replayed as
// fcntl calls from several owners: no step may answer EAGAIN where SQLite would
// surface SQLITE_BUSY; the token is FIFO; SQLite's try-locks stay try-locks.
#include <doctest/doctest.h>

#include <cerrno>
#include <thread>

#include "lock_test_util.hpp"

using namespace hoody::dbfs::lock;
using namespace hoody::dbfs::lock::test;

namespace {
constexpr FileId kDb = 100;
constexpr FileId kJournal = 101;
constexpr FileId kWal = 102;
constexpr FileId kShm = 103;
const std::string kDomain = "1/app.db";

struct Fixture {
  LockManager m;
  explicit Fixture(JournalMode mode, Config cfg = {}) : m(cfg) {
    m.register_file(kDb, FileKind::sqlite_db, kDomain);
    m.register_file(kJournal, FileKind::journal, kDomain);
    m.register_file(kWal, FileKind::wal, kDomain);
    m.register_file(kShm, FileKind::shm, kDomain);
    m.set_journal_mode(kDomain, mode);
  }
  std::size_t eagain_total() const { return m.stats().eagain_total(); }
  std::size_t eagain(EagainCause c) const {
    return m.stats().eagain[static_cast<std::size_t>(c)];
  }
};

// --- rollback mode, one process's calls (strace of 3.40.1, §1.2) ---------------
// NONE -> SHARED; the first call is the transaction start.
Pending shared_start(Proc& p) { return p.rd(kDb, kPendingByte); }
void shared_rest(Proc& p) {
  CHECK(p.rd(kDb, kSharedFirst, kSharedSize).err() == 0);
  CHECK(p.un(kDb, kPendingByte).err() == 0);
}
void reserved(Proc& p) { CHECK(p.wr(kDb, kReservedByte).err() == 0); }
void exclusive(Proc& p) {
  CHECK(p.wr(kDb, kPendingByte).err() == 0);
  CHECK(p.wr(kDb, kSharedFirst, kSharedSize).err() == 0);
}
void commit_end(Proc& p) {
  CHECK(p.rd(kDb, kSharedFirst, kSharedSize).err() == 0);  // downgrade
  CHECK(p.un(kDb, kPendingByte, 2).err() == 0);            // PENDING+RESERVED
  CHECK(p.un(kDb, 0, 0).err() == 0);                       // NONE
}
void autocommit_insert(Proc& p) {
  CHECK(shared_start(p).err() == 0);
  shared_rest(p);
  reserved(p);
  exclusive(p);
  commit_end(p);
}

// --- WAL mode (§1.3) --------------------------------------------------------------
void wal_connect(Proc& p, bool first) {
  CHECK(p.rd(kDb, kPendingByte).err() == 0);
  CHECK(p.rd(kDb, kSharedFirst, kSharedSize).err() == 0);
  CHECK(p.un(kDb, kPendingByte).err() == 0);
  auto dms = p.m.getlk(kShm, p.owner, LockType::write, kWalDms, kWalDms);
  CHECK(first == !dms.has_value());
  if (first) CHECK(p.wr(kShm, kWalDms).err() == 0);
  CHECK(p.rd(kShm, kWalDms).err() == 0);
  if (first) {  // header bad -> walLockWriter -> walIndexRecover
    CHECK(p.wr(kShm, kWalWriteLock).err() == 0);
    CHECK(p.wr(kShm, kWalCkptLock, 2).err() == 0);
    for (std::uint64_t b = 124; b <= 127; ++b) {
      CHECK(p.wr(kShm, b).err() == 0);
      CHECK(p.un(kShm, b).err() == 0);
    }
    CHECK(p.un(kShm, kWalCkptLock, 2).err() == 0);
    CHECK(p.un(kShm, kWalWriteLock).err() == 0);
  }
}
// INSERT after the read-mark (first call is the transaction start, passed in).
void wal_insert_rest(Proc& p) {
  CHECK(p.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(p.un(kShm, 123).err() == 0);
  CHECK(p.wr(kShm, 124).err() == 0);
  CHECK(p.un(kShm, 124).err() == 0);
  CHECK(p.rd(kShm, 124).err() == 0);
  CHECK(p.un(kShm, kWalWriteLock).err() == 0);
  CHECK(p.un(kShm, 124).err() == 0);
}
}  // namespace

TEST_CASE("rollback: autocommit INSERT of one owner, then a second, no EAGAIN") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  autocommit_insert(a);
  autocommit_insert(b);
  CHECK(fx.eagain_total() == 0);
  CHECK_FALSE(fx.m.token_holder(kDomain));
  CHECK(fx.m.stats().token_grants == 2);
}

TEST_CASE("rollback: two owners' autocommit INSERTs interleave without EAGAIN") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  CHECK(shared_start(a).err() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xa);
  shared_rest(a);
  auto bs = shared_start(b);  // natively: SHARED granted, then b's RESERVED is BUSY
  CHECK_FALSE(bs.done());
  reserved(a);
  exclusive(a);  // b holds nothing: no wait
  // Journal fd closed by a while it still holds db locks (FLUSH on the journal).
  fx.m.release_owner(kJournal, 0xa);
  CHECK(fx.m.token_holder(kDomain) == 0xa);
  commit_end(a);
  CHECK(bs.err() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xb);
  shared_rest(b);
  reserved(b);
  exclusive(b);
  commit_end(b);
  CHECK(fx.eagain_total() == 0);
  CHECK(fx.m.stats().token_handoffs == 1);
}

TEST_CASE("rollback: BEGIN IMMEDIATE from three owners, token FIFO") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, c{fx.m, 0xc, 3};
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  reserved(a);  // BEGIN IMMEDIATE
  auto bs = shared_start(b);
  auto cs = shared_start(c);
  CHECK(fx.m.token_queue(kDomain) == std::vector<OwnerId>{0xb, 0xc});
  const auto state = fx.m.state_json();
  CHECK(state.find("\"fifo\":[{\"owner\":11,\"pid\":2},{\"owner\":12,\"pid\":3}]") !=
        std::string::npos);
  CHECK(state.find("\"action\":\"txn_start\"") != std::string::npos);
  exclusive(a);
  commit_end(a);
  CHECK(bs.err() == 0);
  CHECK_FALSE(cs.done());
  shared_rest(b);
  reserved(b);
  exclusive(b);
  commit_end(b);
  CHECK(cs.err() == 0);
  shared_rest(c);
  reserved(c);
  exclusive(c);
  commit_end(c);
  CHECK(fx.eagain_total() == 0);
}

TEST_CASE("rollback: deferred BEGIN; SELECT; INSERT; COMMIT from two owners") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  CHECK(shared_start(a).err() == 0);  // BEGIN; SELECT
  shared_rest(a);
  auto bs = shared_start(b);  // b's BEGIN; SELECT waits for the token
  CHECK_FALSE(bs.done());
  reserved(a);  // INSERT: the read->write upgrade never conflicts
  exclusive(a);
  commit_end(a);
  CHECK(bs.err() == 0);
  shared_rest(b);
  reserved(b);
  exclusive(b);
  commit_end(b);
  CHECK(fx.eagain_total() == 0);
}

TEST_CASE("rollback: read-only owners run concurrently; commit waits for them to drain") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  Proc r1{fx.m, 0x1, 11, false}, r2{fx.m, 0x2, 12, false}, r3{fx.m, 0x3, 13, false};
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  auto bs = shared_start(b);  // a writer queued
  CHECK_FALSE(bs.done());
  CHECK(shared_start(r1).err() == 0);  // read-only owners never take the token
  shared_rest(r1);
  CHECK(shared_start(r2).err() == 0);
  shared_rest(r2);
  reserved(a);
  CHECK(a.wr(kDb, kPendingByte).err() == 0);
  auto excl = a.wr(kDb, kSharedFirst, kSharedSize);  // COMMIT waits for readers
  CHECK_FALSE(excl.done());
  auto r3s = shared_start(r3);  // a new reader queues behind PENDING
  CHECK_FALSE(r3s.done());
  CHECK(r1.un(kDb, 0, 0).err() == 0);
  CHECK_FALSE(excl.done());
  CHECK(r2.un(kDb, 0, 0).err() == 0);
  CHECK(excl.err() == 0);
  CHECK_FALSE(r3s.done());
  commit_end(a);
  CHECK(r3s.err() == 0);
  CHECK(bs.err() == 0);
  shared_rest(r3);
  shared_rest(b);
  CHECK(fx.eagain_total() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xb);
}

TEST_CASE("rollback: a commit waiting too long for a reader gets EAGAIN and keeps its locks") {
  Config cfg;
  cfg.commit_wait = 50ms;
  Fixture fx(JournalMode::rollback, cfg);
  Proc a{fx.m, 0xa, 1}, r{fx.m, 0x1, 4321, false};
  CHECK(shared_start(r).err() == 0);
  shared_rest(r);
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  reserved(a);
  CHECK(a.wr(kDb, kPendingByte).err() == 0);
  auto excl = a.wr(kDb, kSharedFirst, kSharedSize);
  CHECK(excl.wait() == EAGAIN);
  CHECK(fx.eagain(EagainCause::timeout) == 1);
  CHECK(fx.m.token_holder(kDomain) == 0xa);  // the transaction stays open
  CHECK(r.un(kDb, 0, 0).err() == 0);
  CHECK(a.wr(kDb, kSharedFirst, kSharedSize).err() == 0);  // COMMIT retried
  commit_end(a);
}

TEST_CASE("rollback: RESERVED by a non-holder holding SHARED fails fast") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  Proc bro{fx.m, 0xb, 2, false};  // b's start without the token (e.g. classified reader)
  CHECK(shared_start(bro).err() == 0);
  shared_rest(bro);
  SUBCASE("token held by another: EAGAIN at once (waiting could only deadlock)") {
    CHECK(shared_start(a).err() == 0);
    shared_rest(a);
    auto res = b.wr(kDb, kReservedByte);
    CHECK(res.done());
    CHECK(res.err() == EAGAIN);
    CHECK(fx.eagain(EagainCause::deadlock_avoid) == 1);
  }
  SUBCASE("token free and nobody queued: granted, b becomes the holder") {
    reserved(b);
    CHECK(fx.m.token_holder(kDomain) == 0xb);
    exclusive(b);
    commit_end(b);
    CHECK_FALSE(fx.m.token_holder(kDomain));
  }
}

TEST_CASE("rollback: exclusive probes without RESERVED are try-locks; both forms") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, r{fx.m, 0x1, 11, false}, p{fx.m, 0x2, 12, false};
  CHECK(shared_start(r).err() == 0);
  shared_rest(r);
  CHECK(shared_start(p).err() == 0);
  shared_rest(p);
  // 3.40.1 form: PENDING then SHARED range; trunk form: SHARED range directly.
  CHECK(p.wr(kDb, kPendingByte).err() == 0);
  auto x = p.wr(kDb, kSharedFirst, kSharedSize);
  CHECK(x.done());
  CHECK(x.err() == EAGAIN);
  CHECK(p.un(kDb, kPendingByte).err() == 0);
  auto y = p.wr(kDb, kSharedFirst, kSharedSize);
  CHECK(y.done());
  CHECK(y.err() == EAGAIN);
  CHECK(fx.eagain(EagainCause::probe) == 2);
  // The token holder's hot-journal rollback (SHARED -> EXCLUSIVE) may wait.
  CHECK(p.un(kDb, 0, 0).err() == 0);
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  CHECK(a.wr(kDb, kPendingByte).err() == 0);
  auto hot = a.wr(kDb, kSharedFirst, kSharedSize);
  CHECK_FALSE(hot.done());
  CHECK(r.un(kDb, 0, 0).err() == 0);
  CHECK(hot.err() == 0);
}

TEST_CASE("rollback: a killed token holder hands the token on at FLUSH") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, c{fx.m, 0xc, 3};
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  reserved(a);
  auto bs = shared_start(b);
  auto cs = shared_start(c);
  fx.m.release_owner(kDb, 0xa);  // SIGKILL: exit closes the fd
  CHECK(bs.err() == 0);
  CHECK_FALSE(cs.done());
  CHECK(fx.m.stats().token_flush_releases == 1);
  CHECK(fx.m.locks(kDb).size() == 1);  // b's PENDING read lock only
  // A killed waiter: its queued request goes, the FIFO moves on.
  fx.m.release_owner(kDb, 0xc);
  CHECK(cs.err() == EAGAIN);
  shared_rest(b);
  reserved(b);
  exclusive(b);
  commit_end(b);
  CHECK_FALSE(fx.m.token_holder(kDomain));
}

TEST_CASE("rollback: an interrupted token waiter keeps its place when it asks again") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, c{fx.m, 0xc, 3};
  CHECK(shared_start(a).err() == 0);
  auto bs = shared_start(b);
  auto cs = shared_start(c);
  fx.m.interrupt(bs.ticket);
  CHECK(bs.err() == EINTR);
  CHECK(fx.m.token_queue(kDomain) == std::vector<OwnerId>{0xc});
  auto bs2 = shared_start(b);  // the kernel restarts the fcntl
  CHECK(fx.m.token_queue(kDomain) == std::vector<OwnerId>{0xb, 0xc});
  CHECK(a.un(kDb, 0, 0).err() == 0);
  CHECK(bs2.err() == 0);
  CHECK_FALSE(cs.done());
}

TEST_CASE("journal and plain files keep exact POSIX semantics inside a domain") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  CHECK(a.wr(kJournal, 0, 0).err() == 0);
  auto x = b.wr(kJournal, 0, 0);
  CHECK(x.done());
  CHECK(x.err() == EAGAIN);
  CHECK(fx.eagain(EagainCause::try_conflict) == 1);
  CHECK_FALSE(fx.m.token_holder(kDomain));
}

TEST_CASE("WAL: connect + DMS + read + write, two owners, no EAGAIN") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  wal_connect(a, true);
  CHECK_FALSE(fx.m.token_holder(kDomain));  // the connection SHARED is not a txn start
  wal_connect(b, false);
  // a: schema read txn.
  CHECK(a.rd(kShm, 123).err() == 0);
  CHECK(a.un(kShm, 123).err() == 0);
  // a: INSERT; b's INSERT starts meanwhile and waits for the token.
  CHECK(a.rd(kShm, 123).err() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xa);
  auto bs = b.rd(kShm, 123);
  CHECK_FALSE(bs.done());
  wal_insert_rest(a);
  CHECK(bs.err() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xb);
  wal_insert_rest(b);  // b's snapshot is fresh: no BUSY_SNAPSHOT
  // Deferred BEGIN; SELECT (read-mark update); INSERT; COMMIT.
  CHECK(a.wr(kShm, 124).err() == 0);
  CHECK(a.un(kShm, 124).err() == 0);
  CHECK(a.rd(kShm, 124).err() == 0);
  auto bs2 = b.rd(kShm, 124);
  CHECK_FALSE(bs2.done());
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, 124).err() == 0);
  CHECK(bs2.err() == 0);
  CHECK(b.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, 124).err() == 0);
  CHECK(fx.eagain_total() == 0);
}

TEST_CASE("WAL: read-only owners read concurrently with the token holder") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, r1{fx.m, 0x1, 11, false}, r2{fx.m, 0x2, 12, false};
  wal_connect(a, true);
  wal_connect(r1, false);
  wal_connect(r2, false);
  CHECK(a.rd(kShm, 123).err() == 0);
  CHECK(r1.rd(kShm, 123).err() == 0);
  CHECK(r2.rd(kShm, 123).err() == 0);
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, 123).err() == 0);
  CHECK(r1.un(kShm, 123).err() == 0);
  CHECK(r2.un(kShm, 123).err() == 0);
  CHECK(fx.eagain_total() == 0);
  CHECK(fx.m.stats().token_grants == 2);  // a's recovery and a's txn; readers none
}

TEST_CASE("WAL: SQLite's try-locks stay try-locks") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, r{fx.m, 0x1, 11, false};
  wal_connect(a, true);
  wal_connect(b, false);
  wal_connect(r, false);
  CHECK(r.rd(kShm, 124).err() == 0);  // a reader on slot 1
  auto expect_try_fail = [&](Pending p) {
    CHECK(p.done());
    CHECK(p.err() == EAGAIN);
  };
  // Read-mark exclusive on a busy slot, and the restart n=4.
  expect_try_fail(a.wr(kShm, 124));
  expect_try_fail(a.wr(kShm, 124, 4));
  // Checkpoint lock and recover lock.
  CHECK(a.wr(kShm, kWalCkptLock).err() == 0);
  expect_try_fail(b.wr(kShm, kWalCkptLock));
  expect_try_fail(b.rd(kShm, kWalCkptLock));
  CHECK(a.un(kShm, kWalCkptLock).err() == 0);
  CHECK(a.wr(kShm, kWalCkptLock, 2).err() == 0);
  expect_try_fail(b.rd(kShm, kWalRecoverLock));
  CHECK(a.un(kShm, kWalCkptLock, 2).err() == 0);
  // DMS election while others are attached.
  expect_try_fail(b.wr(kShm, kWalDms));
  // WAL close probe: EXCLUSIVE on the db file while others are connected.
  CHECK(a.wr(kDb, kPendingByte).err() == 0);
  expect_try_fail(a.wr(kDb, kSharedFirst, kSharedSize));
  CHECK(fx.eagain(EagainCause::probe) == 7);
  CHECK(fx.m.stats().waits == 0);
}

TEST_CASE("WAL: a read-mark held exclusively fails a txn start at once (WAL_RETRY)") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  wal_connect(a, true);
  wal_connect(b, false);
  CHECK(a.wr(kShm, 124).err() == 0);  // a updates read-mark 1 (no txn yet)
  auto x = b.rd(kShm, 124);
  CHECK(x.done());
  CHECK(x.err() == EAGAIN);
  CHECK(b.rd(kShm, 123).err() == 0);  // SQLite retries another slot
  CHECK(fx.m.token_holder(kDomain) == 0xb);
}

TEST_CASE("WAL: WAL_RETRY keeps the token for a short grace; then it is handed on") {
  Config cfg;
  cfg.token_grace = 200ms;  // generous, so a slow machine does not make it flaky
  Fixture fx(JournalMode::wal, cfg);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, c{fx.m, 0xc, 3};
  wal_connect(a, true);
  wal_connect(b, false);
  wal_connect(c, false);
  CHECK(a.rd(kShm, 123).err() == 0);
  auto bs = b.rd(kShm, 123);
  auto cs = c.rd(kShm, 123);
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, 123).err() == 0);
  CHECK(bs.err() == 0);
  // b sees the header changed while it waited: WAL_RETRY unlocks and relocks.
  CHECK(b.un(kShm, 123).err() == 0);
  CHECK_FALSE(cs.done());
  CHECK(b.rd(kShm, 123).err() == 0);  // keeps its turn
  CHECK(b.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, 123).err() == 0);
  CHECK(cs.err() == 0);
  // A tenure that ends without writing and does not come back: handed on after the grace.
  auto as = a.rd(kShm, 123);
  CHECK(c.un(kShm, 123).err() == 0);
  CHECK(as.wait() == 0);
  CHECK(fx.m.stats().token_graces >= 1);
  CHECK(fx.eagain_total() == 0);
}

TEST_CASE("WAL: write lock by a non-holder with a stale snapshot fails fast") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, r{fx.m, 0x1, 11, false}, s{fx.m, 0x2, 12, false};
  wal_connect(a, true);
  wal_connect(r, false);
  wal_connect(s, false);
  CHECK(r.rd(kShm, 124).err() == 0);  // r's snapshot
  CHECK(a.rd(kShm, 123).err() == 0);
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, kWalWriteLock).err() == 0);  // a committed
  CHECK(a.un(kShm, 123).err() == 0);
  auto x = r.wr(kShm, kWalWriteLock);
  CHECK(x.done());
  CHECK(x.err() == EAGAIN);
  CHECK(fx.eagain(EagainCause::stale_snapshot) == 1);
  // A fresh non-holder reader queues for the token instead.
  CHECK(s.rd(kShm, 125).err() == 0);
  CHECK(a.rd(kShm, 123).err() == 0);
  auto y = s.wr(kShm, kWalWriteLock);
  CHECK_FALSE(y.done());
  CHECK(a.un(kShm, 123).err() == 0);  // a's read-only tenure: no commit
  CHECK(y.wait() == 0);
}

TEST_CASE("WAL: connect waits behind a close probe's PENDING; DMS attach behind its initializer") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, c{fx.m, 0xc, 3};
  wal_connect(a, true);
  wal_connect(b, false);
  CHECK(a.wr(kDb, kPendingByte).err() == 0);  // close probe
  CHECK(a.wr(kDb, kSharedFirst, kSharedSize).err() == EAGAIN);  // b connected: keeps PENDING
  auto cc = c.rd(kDb, kPendingByte);
  CHECK_FALSE(cc.done());
  fx.m.release_owner(kShm, 0xa);
  fx.m.release_owner(kDb, 0xa);  // a closes its fd
  CHECK(cc.err() == 0);
  CHECK(c.rd(kDb, kSharedFirst, kSharedSize).err() == 0);
  CHECK(c.un(kDb, kPendingByte).err() == 0);
  // All detach; c initializes the shm again while d attaches.
  fx.m.release_owner(kShm, 0xb);
  Proc d{fx.m, 0xd, 4};
  CHECK(c.wr(kShm, kWalDms).err() == 0);
  auto dd = d.rd(kShm, kWalDms);
  CHECK_FALSE(dd.done());
  CHECK(c.rd(kShm, kWalDms).err() == 0);  // downgrade after ftruncate
  CHECK(dd.err() == 0);
}

TEST_CASE("WAL: a killed holder's FLUSH of db and shm hands the token on") {
  Fixture fx(JournalMode::wal);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  wal_connect(a, true);
  wal_connect(b, false);
  CHECK(a.rd(kShm, 123).err() == 0);
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  auto bs = b.rd(kShm, 123);
  fx.m.release_owner(kDb, 0xa);
  CHECK_FALSE(bs.done());  // still holds its shm locks
  fx.m.release_owner(kShm, 0xa);
  CHECK(bs.err() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xb);
  CHECK(b.wr(kShm, kWalWriteLock).err() == 0);
}

TEST_CASE("WAL: a token wait is bounded and logged") {
  Config cfg;
  cfg.sqlite_wait = 50ms;
  Fixture fx(JournalMode::wal, cfg);
  Proc a{fx.m, 0xa, 1234}, b{fx.m, 0xb, 2};
  wal_connect(a, true);
  wal_connect(b, false);
  CHECK(a.rd(kShm, 123).err() == 0);
  auto bs = b.rd(kShm, 123);
  CHECK(bs.wait() == EAGAIN);
  CHECK(fx.eagain(EagainCause::timeout) == 1);
  CHECK(fx.m.token_queue(kDomain).empty());
  CHECK(fx.m.token_holder(kDomain) == 0xa);
}

TEST_CASE("journal mode change: the holder's rollback locks do not pin the WAL token") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  reserved(a);
  exclusive(a);  // PRAGMA journal_mode=WAL writes header bytes 18/19
  fx.m.set_journal_mode(kDomain, JournalMode::wal);
  CHECK_FALSE(fx.m.token_holder(kDomain));
  commit_end(a);
  wal_connect(a, true);
  wal_connect(b, false);
  CHECK(b.rd(kShm, 123).err() == 0);
  CHECK(fx.m.token_holder(kDomain) == 0xb);
}

TEST_CASE("rollback: a commit without PENDING (newer SQLite) still keeps new readers out") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, r1{fx.m, 0x1, 11, false}, r2{fx.m, 0x2, 12, false};
  CHECK(shared_start(r1).err() == 0);
  shared_rest(r1);
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  reserved(a);
  auto excl = a.wr(kDb, kSharedFirst, kSharedSize);  // RESERVED -> EXCLUSIVE, no PENDING
  CHECK_FALSE(excl.done());
  auto r2s = shared_start(r2);
  CHECK_FALSE(r2s.done());  // queued behind the waiting commit
  CHECK(r1.un(kDb, 0, 0).err() == 0);
  CHECK(excl.err() == 0);
  CHECK(r2s.err() == 0);  // PENDING is free: the reader goes on to the SHARED range
  auto r2sh = r2.rd(kDb, kSharedFirst, kSharedSize);
  CHECK_FALSE(r2sh.done());  // and waits there behind EXCLUSIVE
  commit_end(a);
  CHECK(r2sh.err() == 0);
  CHECK(fx.eagain_total() == 0);
}

TEST_CASE("WAL mode is inferred from -shm locks when the adapter has not said so") {
  Fixture fx(JournalMode::rollback);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  wal_connect(a, true);  // db SHARED taken as a rollback txn start, then -shm locks
  CHECK_FALSE(fx.m.token_holder(kDomain));
  wal_connect(b, false);
  CHECK(a.rd(kShm, 123).err() == 0);
  auto bs = b.rd(kShm, 123);
  CHECK_FALSE(bs.done());
  wal_insert_rest(a);
  CHECK(bs.err() == 0);
  CHECK(fx.eagain_total() == 0);
}

TEST_CASE("WAL: flushing a holder in its grace hands the token on at once") {
  Config cfg;
  cfg.token_grace = 10s;
  Fixture fx(JournalMode::wal, cfg);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2}, c{fx.m, 0xc, 3};
  wal_connect(a, true);
  wal_connect(b, false);
  wal_connect(c, false);
  CHECK(a.rd(kShm, 123).err() == 0);
  auto bs = b.rd(kShm, 123);
  auto cs = c.rd(kShm, 123);
  CHECK(a.un(kShm, 123).err() == 0);
  CHECK(bs.err() == 0);
  CHECK(b.un(kShm, 123).err() == 0);  // b in grace
  CHECK_FALSE(cs.done());
  fx.m.release_owner(kShm, 0xb);  // b dies
  CHECK(cs.err() == 0);
}

TEST_CASE("lease (optional, off by default): a holder that does not write is demoted") {
  Config cfg;
  cfg.lease = 20ms;
  cfg.lease_learned = false;
  Fixture fx(JournalMode::rollback, cfg);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  CHECK(shared_start(a).err() == 0);  // deferred BEGIN; SELECT ... with a long read phase
  shared_rest(a);
  std::this_thread::sleep_for(40ms);
  CHECK(fx.m.token_holder(kDomain) == 0xa);  // nobody waits: no demotion
  auto bs = shared_start(b);
  CHECK(bs.wait() == 0);  // a demoted after its lease
  CHECK(fx.m.token_holder(kDomain) == 0xb);
  CHECK(fx.m.stats().token_demotions == 1);
  auto res = a.wr(kDb, kReservedByte);  // a's INSERT now: the documented lease residual
  CHECK(res.err() == EAGAIN);
  CHECK(fx.eagain(EagainCause::deadlock_avoid) == 1);
  CHECK(a.un(kDb, 0, 0).err() == 0);
  shared_rest(b);
  reserved(b);
  exclusive(b);
  commit_end(b);
}

TEST_CASE("lease off (default): no demotion however long the read phase") {
  Config cfg;
  cfg.sqlite_wait = 500ms;
  Fixture fx(JournalMode::rollback, cfg);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  CHECK(shared_start(a).err() == 0);
  shared_rest(a);
  auto bs = shared_start(b);
  std::this_thread::sleep_for(60ms);
  CHECK_FALSE(bs.done());
  reserved(a);
  exclusive(a);
  commit_end(a);
  CHECK(bs.err() == 0);
  CHECK(fx.m.stats().token_demotions == 0);
}

TEST_CASE("learned lease: an owner's observed start->write gap protects its next read phase") {
  Config cfg;
  cfg.lease = 10ms;
  Fixture fx(JournalMode::wal, cfg);
  Proc a{fx.m, 0xa, 1}, b{fx.m, 0xb, 2};
  wal_connect(a, true);
  wal_connect(b, false);
  // a learns: 200 ms between its transaction start and its write (wide
  // margins: the checks below must hold on a loaded 2-core machine).
  CHECK(a.rd(kShm, 123).err() == 0);
  std::this_thread::sleep_for(200ms);
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, 123).err() == 0);
  // Next transaction, with b waiting: a's lease is now ~400 ms, not 10.
  CHECK(a.rd(kShm, 123).err() == 0);
  auto bs = b.rd(kShm, 123);
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(bs.done());
  CHECK(a.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, kWalWriteLock).err() == 0);
  CHECK(a.un(kShm, 123).err() == 0);
  CHECK(bs.err() == 0);
  CHECK(fx.m.stats().token_demotions == 0);
  // A demoted WAL reader whose snapshot went stale gets EAGAIN at its write.
  auto as = a.rd(kShm, 124);
  CHECK_FALSE(as.done());
  CHECK(b.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, 123).err() == 0);
  CHECK(as.wait() == 0);
  auto cs_b = b.rd(kShm, 123);  // b waits behind a's read phase
  CHECK(cs_b.wait(5000ms) == 0);  // a demoted after its learned lease
  CHECK(fx.m.stats().token_demotions == 1);
  CHECK(b.wr(kShm, kWalWriteLock).err() == 0);
  CHECK(b.un(kShm, kWalWriteLock).err() == 0);  // b commits
  CHECK(b.un(kShm, 123).err() == 0);
  auto late = a.wr(kShm, kWalWriteLock);
  CHECK(late.err() == EAGAIN);
  CHECK(fx.eagain(EagainCause::stale_snapshot) == 1);
}
