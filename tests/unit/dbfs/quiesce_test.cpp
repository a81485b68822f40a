// LockManager::quiesce/resume (issue 11): the pseudo-owner takes every writer
// token behind the current holder; new transactions wait (never EAGAIN) and
// go on after resume; a transaction longer than the timeout is reported busy.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <thread>

#include "lock_test_util.hpp"

using namespace hoody::dbfs::lock;
using namespace hoody::dbfs::lock::test;

namespace {
constexpr FileId kDb = 100;
constexpr FileId kShm = 103;
constexpr FileId kDb2 = 200;
const std::string kDomain = "1/app.db";
const std::string kDomain2 = "1/other.db";

struct Fixture {
  LockManager m;
  explicit Fixture(JournalMode mode = JournalMode::rollback, Config cfg = {}) : m(cfg) {
    m.register_file(kDb, FileKind::sqlite_db, kDomain);
    m.register_file(kShm, FileKind::shm, kDomain);
    m.set_journal_mode(kDomain, mode);
  }
};

// A quiesce's outcome, waited for by the test.
struct QOutcome {
  std::mutex mu;
  std::condition_variable cv;
  std::optional<QuiesceResult> r;
  int calls = 0;
  std::function<void(QuiesceResult)> fn() {
    return [this](QuiesceResult res) {
      std::lock_guard lk(mu);
      ++calls;
      r = std::move(res);
      cv.notify_all();
    };
  }
  bool done() {
    std::lock_guard lk(mu);
    return r.has_value();
  }
  QuiesceResult wait(std::chrono::milliseconds max = 3000ms) {
    std::unique_lock lk(mu);
    cv.wait_for(lk, max, [&] { return r.has_value(); });
    REQUIRE(r.has_value());
    return *r;
  }
};

// Rollback: NONE -> SHARED -> RESERVED -> EXCLUSIVE -> NONE, as SQLite 3.40 does it.
Pending txn_start(Proc& p) { return p.rd(kDb, kPendingByte); }
void txn_rest(Proc& p) {
  CHECK(p.rd(kDb, kSharedFirst, kSharedSize).err() == 0);
  CHECK(p.un(kDb, kPendingByte).err() == 0);
  CHECK(p.wr(kDb, kReservedByte).err() == 0);
  CHECK(p.wr(kDb, kPendingByte).err() == 0);
  CHECK(p.wr(kDb, kSharedFirst, kSharedSize).err() == 0);
}
void txn_end(Proc& p) {
  CHECK(p.rd(kDb, kSharedFirst, kSharedSize).err() == 0);
  CHECK(p.un(kDb, kPendingByte, 2).err() == 0);
  CHECK(p.un(kDb, 0, 0).err() == 0);
}
}  // namespace

TEST_CASE("quiesce of idle databases is reported at once and holds every token") {
  Fixture f;
  f.m.register_file(kDb2, FileKind::sqlite_db, kDomain2);
  QOutcome q;
  auto id = f.m.quiesce(2s, 60s, q.fn());
  CHECK(id != 0);
  CHECK(q.done());  // inline: nothing to wait for
  auto r = q.wait();
  CHECK(r.databases == 2);
  CHECK(r.busy.empty());
  CHECK(f.m.token_holder(kDomain) == kQuiesceOwner);
  CHECK(f.m.token_holder(kDomain2) == kQuiesceOwner);
  CHECK(f.m.quiesced());
  auto held = f.m.resume(id);
  CHECK(held.has_value());
  CHECK_FALSE(f.m.quiesced());
  CHECK_FALSE(f.m.token_holder(kDomain).has_value());
  CHECK(q.calls == 1);
}

TEST_CASE("quiesce waits for the holder's transaction to end") {
  Fixture f;
  Proc a{f.m, 0xa, 100};
  CHECK(txn_start(a).err() == 0);
  txn_rest(a);
  QOutcome q;
  auto id = f.m.quiesce(2s, 60s, q.fn());
  REQUIRE(id != 0);
  CHECK_FALSE(q.done());                  // a's transaction is in flight
  CHECK(f.m.token_holder(kDomain) == 0xa);
  txn_end(a);  // the commit finishes: the quiesce takes the token
  auto r = q.wait();
  CHECK(r.busy.empty());
  CHECK(r.databases == 1);
  CHECK(f.m.token_holder(kDomain) == kQuiesceOwner);
  f.m.resume(id);
}

TEST_CASE("a new transaction waits during the quiesce (a try-lock too) and proceeds after resume") {
  Fixture f;
  Proc b{f.m, 0xb, 200};
  QOutcome q;
  auto id = f.m.quiesce(2s, 60s, q.fn());
  q.wait();
  auto start = txn_start(b);  // F_SETLK, as SQLite sends it
  std::this_thread::sleep_for(50ms);
  CHECK_FALSE(start.done());  // waits: never EAGAIN
  CHECK(f.m.stats().eagain_total() == 0);
  CHECK(f.m.resume(id).has_value());
  CHECK(start.wait() == 0);
  txn_rest(b);
  txn_end(b);
  CHECK(f.m.stats().eagain_total() == 0);
}

TEST_CASE("WAL: a write transaction's read-mark waits during the quiesce too") {
  Fixture f(JournalMode::wal);
  Proc b{f.m, 0xb, 200};
  // Connect: SHARED on the db, kept for the connection (no token).
  CHECK(b.rd(kDb, kPendingByte).err() == 0);
  CHECK(b.rd(kDb, kSharedFirst, kSharedSize).err() == 0);
  CHECK(b.un(kDb, kPendingByte).err() == 0);
  QOutcome q;
  auto id = f.m.quiesce(2s, 60s, q.fn());
  q.wait();
  auto mark = b.rd(kShm, kWalReadLock0);  // transaction start
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(mark.done());
  f.m.resume(id);
  CHECK(mark.wait() == 0);
  CHECK(f.m.token_holder(kDomain) == 0xb);
}

TEST_CASE("requests queued before the quiesce stay behind it") {
  Fixture f;
  Proc a{f.m, 0xa, 100}, b{f.m, 0xb, 200};
  CHECK(txn_start(a).err() == 0);
  auto bq = txn_start(b);  // queued for the token
  CHECK_FALSE(bq.done());
  QOutcome q;
  auto id = f.m.quiesce(2s, 60s, q.fn());
  txn_rest(a);
  txn_end(a);
  q.wait();
  CHECK(f.m.token_holder(kDomain) == kQuiesceOwner);
  CHECK_FALSE(bq.done());  // the quiesce went first
  f.m.resume(id);
  CHECK(bq.wait() == 0);
  CHECK(f.m.token_holder(kDomain) == 0xb);
}

TEST_CASE("quiesce timeout reports the busy database and does not take it later") {
  Fixture f;
  f.m.register_file(kDb2, FileKind::sqlite_db, kDomain2);
  Proc a{f.m, 0xa, 100}, b{f.m, 0xb, 200};
  CHECK(txn_start(a).err() == 0);
  QOutcome q;
  auto t0 = Clock::now();
  auto id = f.m.quiesce(80ms, 60s, q.fn());
  auto r = q.wait();
  auto took = Clock::now() - t0;
  CHECK(took >= 70ms);
  CHECK(took < 1500ms);
  CHECK(r.databases == 2);
  REQUIRE(r.busy.size() == 1);
  CHECK(r.busy[0] == kDomain);
  CHECK(f.m.token_holder(kDomain2) == kQuiesceOwner);  // the idle one is held
  txn_rest(a);
  txn_end(a);
  CHECK(f.m.token_holder(kDomain) != kQuiesceOwner);  // not taken afterwards
  CHECK(txn_start(b).err() == 0);                      // so b goes on at once
  txn_end(b);
  f.m.resume(id);
}

TEST_CASE("resume with nothing held is a no-op; a second quiesce is refused while one is active") {
  Fixture f;
  CHECK_FALSE(f.m.resume().has_value());
  CHECK_FALSE(f.m.resume(42).has_value());
  Proc a{f.m, 0xa, 100};
  CHECK(txn_start(a).err() == 0);  // nothing changed by the no-op resume
  txn_end(a);
  QOutcome q1, q2;
  auto id = f.m.quiesce(1s, 60s, q1.fn());
  REQUIRE(id != 0);
  CHECK(f.m.quiesce(1s, 60s, q2.fn()) == 0);
  CHECK_FALSE(f.m.resume(id + 1).has_value());  // another quiesce's id: not ours
  CHECK(f.m.quiesced());
  CHECK(f.m.resume(id).has_value());
  CHECK(q2.calls == 0);
  CHECK(f.m.quiesce(1s, 60s, q2.fn()) != 0);  // free again
  f.m.resume();
}

TEST_CASE("waits behind a quiesce do not count toward sqlite_wait") {
  Config cfg;
  cfg.sqlite_wait = 60ms;
  Fixture f(JournalMode::rollback, cfg);
  Proc b{f.m, 0xb, 200};
  QOutcome q;
  auto id = f.m.quiesce(1s, 10s, q.fn());
  q.wait();
  auto start = txn_start(b);
  std::this_thread::sleep_for(300ms);  // 5x the bound
  CHECK_FALSE(start.done());
  f.m.resume(id);
  CHECK(start.wait() == 0);
  CHECK(f.m.stats().eagain_total() == 0);
  txn_end(b);
}

TEST_CASE("the hold time ends a quiesce nobody resumes") {
  Fixture f;
  Proc b{f.m, 0xb, 200};
  QOutcome q;
  auto t0 = Clock::now();
  f.m.quiesce(50ms, 150ms, q.fn());
  q.wait();
  auto start = txn_start(b);
  CHECK(start.wait(3000ms) == 0);
  auto took = Clock::now() - t0;
  CHECK(took >= 140ms);
  CHECK(took < 2000ms);
  CHECK_FALSE(f.m.quiesced());
  txn_end(b);
}

TEST_CASE("a database that appears while quiesced is held from its creation") {
  Fixture f;
  QOutcome q;
  auto id = f.m.quiesce(1s, 60s, q.fn());
  q.wait();
  f.m.register_file(kDb2, FileKind::sqlite_db, kDomain2);
  CHECK(f.m.token_holder(kDomain2) == kQuiesceOwner);
  Proc c{f.m, 0xc, 300};
  LockRequest r = c.req(kDb2, LockType::read, kPendingByte, 1);
  auto p = submit(f.m, r);
  std::this_thread::sleep_for(30ms);
  CHECK_FALSE(p.done());
  f.m.resume(id);
  CHECK(p.wait() == 0);
}

TEST_CASE("a mode change or a lease never takes the token from the quiesce") {
  Config cfg;
  cfg.lease = std::chrono::milliseconds(20);
  Fixture f(JournalMode::rollback, cfg);
  Proc b{f.m, 0xb, 200};
  QOutcome q;
  auto id = f.m.quiesce(1s, 60s, q.fn());
  q.wait();
  auto start = txn_start(b);
  f.m.set_journal_mode(kDomain, JournalMode::wal);
  f.m.set_journal_mode(kDomain, JournalMode::rollback);
  std::this_thread::sleep_for(100ms);
  CHECK(f.m.token_holder(kDomain) == kQuiesceOwner);
  CHECK_FALSE(start.done());
  f.m.resume(id);
  CHECK(start.wait() == 0);
}

TEST_CASE("retire_files: waiters complete with EIO, the domain leaves the quiesce") {
  Fixture f;
  Proc a{f.m, 0xa, 100}, b{f.m, 0xb, 200};
  CHECK(txn_start(a).err() == 0);
  auto bq = txn_start(b);
  CHECK_FALSE(bq.done());
  QOutcome q;
  auto id = f.m.quiesce(5s, 60s, q.fn());
  CHECK_FALSE(q.done());  // a holds the token
  f.m.retire_files({kDb, kShm});
  CHECK(bq.wait() == EIO);
  auto r = q.wait(500ms);  // nothing left to wait for
  CHECK(r.busy.empty());
  // The old owner's cleanup still works on its retired file.
  txn_end(a);
  // A new database under the same key starts fresh (and held: still quiesced).
  f.m.register_file(kDb2, FileKind::sqlite_db, kDomain);
  CHECK(f.m.token_holder(kDomain) == kQuiesceOwner);
  f.m.resume(id);
  CHECK_FALSE(f.m.token_holder(kDomain).has_value());
}
