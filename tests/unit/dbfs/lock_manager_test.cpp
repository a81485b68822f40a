// LockManager: POSIX semantics, waits, interrupts, timeouts, deadlocks, flock, stats.
#include <doctest/doctest.h>

#include <cerrno>
#include <thread>

#include "lock_test_util.hpp"

using namespace hoody::dbfs::lock;
using namespace hoody::dbfs::lock::test;

namespace {
constexpr FileId kFile = 10;
constexpr FileId kFile2 = 11;
constexpr auto R = LockType::read;
constexpr auto W = LockType::write;

std::size_t eagain(const LockManager& m, EagainCause c) {
  return m.stats().eagain[static_cast<std::size_t>(c)];
}
}  // namespace

TEST_CASE("pidfile-style try-lock on a plain file fails at once with EAGAIN") {
  LockManager m;
  Proc a{m, 0xa, 100}, b{m, 0xb, 200};
  auto p1 = a.wr(kFile, 0, 0);
  CHECK(p1.err() == 0);  // completed inline
  auto p2 = b.wr(kFile, 0, 0);
  CHECK(p2.done());  // inline, no waiting
  CHECK(p2.err() == EAGAIN);
  CHECK(eagain(m, EagainCause::try_conflict) == 1);
  CHECK(m.stats().waits == 0);
  // Same on the non-SQLite bytes of an SQLite database file.
  m.register_file(kFile2, FileKind::sqlite_db, "d");
  CHECK(a.wr(kFile2, 0, 100).err() == 0);
  auto p3 = b.wr(kFile2, 50, 1);
  CHECK(p3.done());
  CHECK(p3.err() == EAGAIN);
}

TEST_CASE("getlk ignores the caller's own locks and reports the first conflict") {
  LockManager m;
  Proc a{m, 0xa, 100}, b{m, 0xb, 200};
  CHECK(a.rd(kFile, 100, 10).err() == 0);
  CHECK(a.wr(kFile, 200, 0).err() == 0);  // to EOF
  CHECK_FALSE(m.getlk(kFile, 0xa, W, 0, kToEof));
  CHECK_FALSE(m.getlk(kFile, 0xb, R, 100, 109));
  auto c = m.getlk(kFile, 0xb, W, 0, kToEof);
  REQUIRE(c);
  CHECK(c->type == R);
  CHECK(c->start == 100);
  CHECK(c->end == 109);
  CHECK(c->pid == 100);
  CHECK(c->owner == 0xa);
  c = m.getlk(kFile, 0xb, R, 1000000, 1000000);
  REQUIRE(c);
  CHECK(c->type == W);
  CHECK(c->end == kToEof);
  CHECK_FALSE(m.getlk(kFile, 0xb, W, 110, 199));
  CHECK(b.rd(kFile, 100, 10).err() == 0);  // read/read
}

TEST_CASE("split, merge, upgrade and downgrade through setlk") {
  LockManager m;
  Proc a{m, 0xa, 1};
  CHECK(a.rd(kFile, 0, 100).err() == 0);
  CHECK(a.wr(kFile, 10, 10).err() == 0);
  CHECK(m.locks(kFile).size() == 3);
  CHECK(a.rd(kFile, 10, 10).err() == 0);  // downgrade: merges back
  REQUIRE(m.locks(kFile).size() == 1);
  CHECK(m.locks(kFile)[0].end == 99);
  CHECK(a.un(kFile, 0, 0).err() == 0);
  CHECK(m.locks(kFile).empty());
}

TEST_CASE("F_SETLKW waits and is granted when the holder unlocks or is flushed") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 10).err() == 0);
  auto w = b.wrw(kFile, 5, 1);
  CHECK_FALSE(w.done());
  CHECK(m.stats().queue_depth == 1);
  CHECK(a.un(kFile, 0, 5).err() == 0);  // bytes 0..4: 5 is still locked
  CHECK_FALSE(w.done());
  CHECK(a.un(kFile, 5, 1).err() == 0);
  CHECK(w.err() == 0);
  CHECK(m.stats().queue_depth == 0);

  auto w2 = a.wrw(kFile, 5, 1);
  CHECK_FALSE(w2.done());
  m.release_owner(kFile, 0xb);  // FLUSH of b: all of b's locks go
  CHECK(w2.err() == 0);
  CHECK(w2.calls() == 1);
  CHECK(m.stats().waits == 2);
}

TEST_CASE("a blocked F_SETLKW is granted from another thread") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);
  auto w = b.wrw(kFile, 0, 0);
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    m.release_owner(kFile, 0xa);
  });
  CHECK(w.wait() == 0);
  t.join();
}

TEST_CASE("release_owner cancels the owner's own queued requests with EAGAIN") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);
  auto w = b.wrw(kFile, 0, 0);
  m.release_owner(kFile, 0xb);
  CHECK(w.err() == EAGAIN);
  CHECK(eagain(m, EagainCause::flush) == 1);
  CHECK(m.locks(kFile).size() == 1);
}

TEST_CASE("interrupts: before submission, during the wait, after completion, unknown") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);

  SUBCASE("before submission: a waiting request completes at once with EINTR") {
    Pending p;
    p.ticket = m.new_ticket();
    m.interrupt(p.ticket);
    auto r = b.req(kFile, W, 0, 0);
    r.wait = true;
    m.setlk(p.ticket, r, p.completion());
    CHECK(p.err() == EINTR);
    CHECK(m.stats().queue_depth == 0);
    CHECK(m.stats().interrupts_early == 1);
  }
  SUBCASE("before submission: an immediate answer is still given") {
    Pending p;
    p.ticket = m.new_ticket();
    m.interrupt(p.ticket);
    m.setlk(p.ticket, b.req(kFile2, W, 0, 0), p.completion());
    CHECK(p.err() == 0);
  }
  SUBCASE("during the wait") {
    auto w = b.wrw(kFile, 0, 0);
    CHECK_FALSE(w.done());
    m.interrupt(w.ticket);
    CHECK(w.err() == EINTR);
    m.interrupt(w.ticket);  // after completion: no-op
    m.release_owner(kFile, 0xa);
    CHECK(w.calls() == 1);
    CHECK(m.stats().interrupts == 1);
    CHECK(m.locks(kFile).empty());
  }
  SUBCASE("after a grant and for unknown ids") {
    auto w = b.wrw(kFile, 0, 0);
    m.release_owner(kFile, 0xa);
    CHECK(w.err() == 0);
    m.interrupt(w.ticket);
    m.interrupt(987654321);
    m.interrupt(0);
    CHECK(w.calls() == 1);
    CHECK(m.stats().interrupts == 0);
  }
  SUBCASE("racing a grant from another thread: exactly one completion") {
    for (int i = 0; i < 50; ++i) {
      auto w = b.wrw(kFile, 0, 0);
      std::thread t1([&] { m.interrupt(w.ticket); });
      std::thread t2([&] { m.release_owner(kFile, 0xa); });
      t1.join();
      t2.join();
      const int e = w.wait();
      CHECK((e == 0 || e == EINTR));
      CHECK(w.calls() == 1);
      m.release_owner(kFile, 0xb);
      CHECK(a.wr(kFile, 0, 0).err() == 0);
    }
  }
}

TEST_CASE("a cancelled ticket is forgotten; a later interrupt of it is a no-op") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);
  const TicketId t = m.new_ticket();
  m.interrupt(t);
  m.cancel_ticket(t);
  m.cancel_ticket(424242);
  // Submitting with it anyway behaves as a ticket never interrupted.
  Pending p;
  p.ticket = t;
  auto r = b.req(kFile, W, 0, 0);
  r.wait = true;
  m.setlk(t, r, p.completion());
  CHECK_FALSE(p.done());
  m.release_owner(kFile, 0xa);
  CHECK(p.err() == 0);
}

TEST_CASE("a bounded plain wait times out with EAGAIN") {
  Config cfg;
  cfg.plain_wait = 50ms;
  LockManager m(cfg);
  Proc a{m, 0xa, 1234}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);
  auto t0 = Clock::now();
  auto w = b.wrw(kFile, 0, 0);
  CHECK(w.wait() == EAGAIN);
  CHECK(Clock::now() - t0 >= 50ms);
  CHECK(eagain(m, EagainCause::timeout) == 1);
  CHECK(m.stats().queue_depth == 0);
}

TEST_CASE("EDEADLK for an F_SETLKW cycle between two owners on two files") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 1).err() == 0);
  CHECK(b.wr(kFile2, 0, 1).err() == 0);
  auto wa = a.wrw(kFile2, 0, 1);
  CHECK_FALSE(wa.done());
  auto wb = b.wrw(kFile, 0, 1);
  CHECK(wb.err() == EDEADLK);
  CHECK_FALSE(wa.done());
  CHECK(m.stats().edeadlk == 1);
  CHECK(m.stats().deadlocks_broken == 1);
  m.release_owner(kFile2, 0xb);
  CHECK(wa.err() == 0);
}

TEST_CASE("a three-owner cycle is detected too") {
  LockManager m;
  Proc a{m, 1, 1}, b{m, 2, 2}, c{m, 3, 3};
  CHECK(a.wr(1, 0, 1).err() == 0);
  CHECK(b.wr(2, 0, 1).err() == 0);
  CHECK(c.wr(3, 0, 1).err() == 0);
  auto w1 = a.wrw(2, 0, 1);
  auto w2 = b.wrw(3, 0, 1);
  auto w3 = c.wrw(1, 0, 1);
  CHECK_FALSE(w1.done());
  CHECK_FALSE(w2.done());
  CHECK(w3.err() == EDEADLK);
}

TEST_CASE("a completion may call back into the manager") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);
  Pending second;
  auto r = b.req(kFile, W, 0, 0);
  r.wait = true;
  m.setlk(m.new_ticket(), r, [&](int e) {
    CHECK(e == 0);
    second = b.rd(kFile2, 0, 1);  // re-enters the manager from the completion
  });
  m.release_owner(kFile, 0xa);
  CHECK(second.err() == 0);
}

TEST_CASE("destruction completes waiters with EINTR") {
  Pending w;
  {
    LockManager m;
    Proc a{m, 0xa, 1}, b{m, 0xb, 2};
    CHECK(a.wr(kFile, 0, 0).err() == 0);
    w = b.wrw(kFile, 0, 0);
    CHECK_FALSE(w.done());
  }
  CHECK(w.err() == EINTR);
  CHECK(w.calls() == 1);
}

TEST_CASE("flock: BSD semantics in their own namespace") {
  LockManager m;
  auto fl = [&](OwnerId o, FlockOp op, bool nb) {
    Pending p;
    p.ticket = m.new_ticket();
    m.flock(p.ticket, kFile, o, op, nb, 1, p.completion());
    return p;
  };
  CHECK(fl(1, FlockOp::shared, true).err() == 0);
  CHECK(fl(2, FlockOp::shared, true).err() == 0);
  CHECK(fl(3, FlockOp::exclusive, true).err() == EAGAIN);
  // POSIX locks are another namespace.
  Proc c{m, 3, 3};
  CHECK(c.wr(kFile, 0, 0).err() == 0);
  auto w = fl(3, FlockOp::exclusive, false);
  CHECK_FALSE(w.done());
  CHECK(fl(1, FlockOp::unlock, false).err() == 0);
  CHECK_FALSE(w.done());
  m.release_flock(kFile, 2);
  CHECK(w.err() == 0);
  CHECK(fl(1, FlockOp::shared, true).err() == EAGAIN);
  // Interruptible.
  auto w2 = fl(1, FlockOp::shared, false);
  m.interrupt(w2.ticket);
  CHECK(w2.err() == EINTR);
}

TEST_CASE("stats render as JSON") {
  LockManager m;
  Proc a{m, 0xa, 1}, b{m, 0xb, 2};
  CHECK(a.wr(kFile, 0, 0).err() == 0);
  CHECK(b.wr(kFile, 0, 0).err() == EAGAIN);
  auto w = b.wrw(kFile, 0, 0);
  std::this_thread::sleep_for(2ms);
  m.release_owner(kFile, 0xa);
  CHECK(w.err() == 0);
  const auto s = m.stats();
  CHECK(s.requests == 3);
  CHECK(s.granted == 2);
  CHECK(s.waits == 1);
  CHECK(s.wait_p50_us >= 1000);
  CHECK(s.wait_p99_us >= s.wait_p50_us);
  const auto j = m.stats_json();
  CHECK(j.find("\"try_conflict\":1") != std::string::npos);
  CHECK(j.find("\"wait_p99_us\"") != std::string::npos);
  CHECK(j.find("\"token_handoffs\"") != std::string::npos);
}

TEST_CASE("wait histogram quantiles") {
  WaitHistogram h;
  CHECK(h.quantile_us(0.5) == 0);
  for (int i = 0; i < 99; ++i) h.add(std::chrono::microseconds(10));
  h.add(std::chrono::microseconds(100000));
  CHECK(h.quantile_us(0.5) == 15);
  CHECK(h.quantile_us(0.99) == 15);
  CHECK(h.quantile_us(1.0) == 131071);
}
