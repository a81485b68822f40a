// Helpers for the lock manager tests: submit a request, look at its completion.
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>

#include "lock/lock_manager.hpp"

namespace hoody::dbfs::lock::test {

using namespace std::chrono_literals;

struct Outcome {
  std::mutex m;
  std::condition_variable cv;
  std::optional<int> err;
  int calls = 0;
};

// One submitted request.
struct Pending {
  std::shared_ptr<Outcome> o = std::make_shared<Outcome>();
  TicketId ticket = 0;

  bool done() const {
    std::lock_guard lk(o->m);
    return o->err.has_value();
  }
  int calls() const {
    std::lock_guard lk(o->m);
    return o->calls;
  }
  // The errno (0 = granted); -1 if still pending.
  int err() const {
    std::lock_guard lk(o->m);
    return o->err.value_or(-1);
  }
  // Waits (in the test thread) for a completion from another thread.
  int wait(std::chrono::milliseconds max = 2000ms) const {
    std::unique_lock lk(o->m);
    o->cv.wait_for(lk, max, [&] { return o->err.has_value(); });
    return o->err.value_or(-1);
  }
  Completion completion() const {
    return [o = o](int e) {
      std::lock_guard lk(o->m);
      CHECK_MESSAGE(o->calls == 0, "completion called twice");
      ++o->calls;
      o->err = e;
      o->cv.notify_all();
    };
  }
};

inline Pending submit(LockManager& m, const LockRequest& r) {
  Pending p;
  p.ticket = m.new_ticket();
  m.setlk(p.ticket, r, p.completion());
  return p;
}

constexpr int kPendingErr = -1;

// An SQLite-like process: one lock owner with fcntl-shaped calls
// (l_start, l_len; len 0 = to EOF).
struct Proc {
  LockManager& m;
  OwnerId owner;
  std::uint32_t pid;
  bool rw = true;

  LockRequest req(FileId f, LockType t, std::uint64_t start, std::uint64_t len) const {
    LockRequest r;
    r.file = f;
    r.owner = owner;
    r.type = t;
    r.start = start;
    r.end = len == 0 ? kToEof : start + len - 1;
    r.pid = pid;
    r.writable = rw;
    return r;
  }
  Pending rd(FileId f, std::uint64_t start, std::uint64_t len = 1) {
    return submit(m, req(f, LockType::read, start, len));
  }
  Pending wr(FileId f, std::uint64_t start, std::uint64_t len = 1) {
    return submit(m, req(f, LockType::write, start, len));
  }
  Pending un(FileId f, std::uint64_t start, std::uint64_t len = 1) {
    return submit(m, req(f, LockType::unlock, start, len));
  }
  Pending wrw(FileId f, std::uint64_t start, std::uint64_t len = 1) {  // F_SETLKW
    auto r = req(f, LockType::write, start, len);
    r.wait = true;
    return submit(m, r);
  }
};

}  // namespace hoody::dbfs::lock::test
