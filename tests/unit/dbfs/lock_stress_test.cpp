// Several threads as SQLite processes (and plain F_SETLKW users) hammering one
// manager: no EAGAIN for SQLite writers, mutual exclusion holds, every
// completion exactly once, no hang.  Bounded to well under 5 s.
#include <doctest/doctest.h>

#include <atomic>
#include <cerrno>
#include <random>
#include <thread>
#include <vector>

#include "lock_test_util.hpp"

using namespace hoody::dbfs::lock;
using namespace hoody::dbfs::lock::test;

namespace {
constexpr FileId kDb = 1;
constexpr FileId kShm = 2;
const std::string kDomain = "d";

struct Counters {
  std::atomic<int> in_write{0};
  std::atomic<int> violations{0};
  std::atomic<int> eagain{0};
  std::atomic<int> other_err{0};
  std::atomic<int> double_calls{0};
  std::atomic<int> txns{0};
};

void yield_a_bit() { std::this_thread::sleep_for(std::chrono::microseconds(30)); }

// One fcntl, restarted on EINTR like the kernel does (ERESTARTSYS).
int step(Proc& p, Counters& c, std::atomic<TicketId>* last, LockType t, FileId f,
         std::uint64_t start, std::uint64_t len = 1) {
  for (;;) {
    Pending pd;
    pd.ticket = p.m.new_ticket();
    if (last) last->store(pd.ticket);
    p.m.setlk(pd.ticket, p.req(f, t, start, len), pd.completion());
    const int e = pd.wait(4000ms);
    if (pd.calls() > 1) ++c.double_calls;
    if (e == EINTR) continue;
    if (e == EAGAIN) ++c.eagain;
    else if (e != 0) ++c.other_err;
    return e;
  }
}

void rollback_writer(Proc& p, Counters& c, std::atomic<TicketId>* last, int n) {
  using enum LockType;
  for (int i = 0; i < n; ++i) {
    if (step(p, c, last, read, kDb, kPendingByte)) return;
    step(p, c, last, read, kDb, kSharedFirst, kSharedSize);
    step(p, c, last, unlock, kDb, kPendingByte);
    yield_a_bit();
    step(p, c, last, write, kDb, kReservedByte);
    step(p, c, last, write, kDb, kPendingByte);
    if (step(p, c, last, write, kDb, kSharedFirst, kSharedSize) == 0) {
      if (c.in_write.fetch_add(1) != 0) ++c.violations;
      yield_a_bit();
      c.in_write.fetch_sub(1);
    }
    step(p, c, last, read, kDb, kSharedFirst, kSharedSize);
    step(p, c, last, unlock, kDb, kPendingByte, 2);
    step(p, c, last, unlock, kDb, 0, 0);
    ++c.txns;
  }
}

void rollback_reader(Proc& p, Counters& c, std::atomic<TicketId>* last, int n) {
  using enum LockType;
  for (int i = 0; i < n; ++i) {
    if (step(p, c, last, read, kDb, kPendingByte)) return;
    step(p, c, last, read, kDb, kSharedFirst, kSharedSize);
    step(p, c, last, unlock, kDb, kPendingByte);
    if (c.in_write.load() != 0) ++c.violations;
    yield_a_bit();
    step(p, c, last, unlock, kDb, 0, 0);
  }
}

void wal_writer(Proc& p, Counters& c, std::atomic<TicketId>* last, int n) {
  using enum LockType;
  for (int i = 0; i < n; ++i) {
    if (step(p, c, last, read, kShm, 123)) return;
    if (step(p, c, last, write, kShm, kWalWriteLock) == 0) {
      if (c.in_write.fetch_add(1) != 0) ++c.violations;
      yield_a_bit();
      c.in_write.fetch_sub(1);
      step(p, c, last, unlock, kShm, kWalWriteLock);
    }
    step(p, c, last, unlock, kShm, 123);
    ++c.txns;
  }
}

void run_threads(std::vector<std::thread>& ts) {
  for (auto& t : ts) t.join();
}
}  // namespace

TEST_CASE("stress: rollback writers and read-only readers") {
  LockManager m;
  m.register_file(kDb, FileKind::sqlite_db, kDomain);
  Counters c;
  std::vector<Proc> procs;
  for (int i = 0; i < 6; ++i) procs.push_back(Proc{m, OwnerId(100 + i), std::uint32_t(i), i < 4});
  std::vector<std::thread> ts;
  for (int i = 0; i < 6; ++i)
    ts.emplace_back([&, i] {
      if (i < 4)
        rollback_writer(procs[i], c, nullptr, 150);
      else
        rollback_reader(procs[i], c, nullptr, 300);
    });
  run_threads(ts);
  CHECK(c.violations == 0);
  CHECK(c.eagain == 0);
  CHECK(c.other_err == 0);
  CHECK(c.double_calls == 0);
  CHECK(c.txns == 600);
  CHECK(m.stats().queue_depth == 0);
  CHECK(m.locks(kDb).empty());
  CHECK_FALSE(m.token_holder(kDomain));
}

TEST_CASE("stress: WAL writers with an interrupt storm (restarted like SA_RESTART)") {
  LockManager m;
  m.register_file(kDb, FileKind::sqlite_db, kDomain);
  m.register_file(kShm, FileKind::shm, kDomain);
  m.set_journal_mode(kDomain, JournalMode::wal);
  Counters c;
  std::vector<Proc> procs;
  for (int i = 0; i < 4; ++i) procs.push_back(Proc{m, OwnerId(200 + i), std::uint32_t(i), true});
  std::vector<std::atomic<TicketId>> last(4);
  std::atomic<bool> stop{false};
  std::thread storm([&] {
    std::mt19937 rng(42);
    while (!stop) {
      m.interrupt(last[rng() % 4].load());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i) ts.emplace_back([&, i] { wal_writer(procs[i], c, &last[i], 300); });
  run_threads(ts);
  stop = true;
  storm.join();
  CHECK(c.violations == 0);
  CHECK(c.eagain == 0);
  CHECK(c.other_err == 0);
  CHECK(c.double_calls == 0);
  CHECK(c.txns == 1200);
  CHECK(m.stats().queue_depth == 0);
  CHECK_FALSE(m.token_holder(kDomain));
}

TEST_CASE("stress: plain F_SETLKW on two files in random order; EDEADLK breaks cycles") {
  LockManager m;
  Counters c;
  std::atomic<int> in_both{0};
  std::atomic<int> deadlocks{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 4; ++i)
    ts.emplace_back([&, i] {
      Proc p{m, OwnerId(300 + i), std::uint32_t(i), true};
      std::mt19937 rng(static_cast<unsigned>(i));
      for (int n = 0; n < 200; ++n) {
        const FileId first = 10 + rng() % 2;
        const FileId second = first == 10 ? 11 : 10;
        for (;;) {
          auto a = p.req(first, LockType::write, 0, 1);
          a.wait = true;
          if (submit(m, a).wait(4000ms) != 0) ++c.other_err;
          std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
          auto b = p.req(second, LockType::write, 0, 1);
          b.wait = true;
          const int e = submit(m, b).wait(4000ms);
          if (e == EDEADLK) {
            ++deadlocks;
            m.release_owner(first, p.owner);
            continue;
          }
          if (e != 0) ++c.other_err;
          break;
        }
        if (in_both.fetch_add(1) != 0) ++c.violations;
        yield_a_bit();
        in_both.fetch_sub(1);
        m.release_owner(10, p.owner);
        m.release_owner(11, p.owner);
      }
    });
  run_threads(ts);
  CHECK(c.violations == 0);
  CHECK(c.other_err == 0);
  CHECK(m.stats().edeadlk == static_cast<std::uint64_t>(deadlocks.load()));
  CHECK(m.stats().queue_depth == 0);
  MESSAGE("deadlocks broken: " << deadlocks.load());
}
