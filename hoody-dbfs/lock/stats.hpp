// Counters of the lock manager, readable at any time (LockManager::stats()).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>

namespace hoody::dbfs::lock {

// Why a request was answered EAGAIN (each one is a potential SQLITE_BUSY).
enum class EagainCause : std::uint8_t {
  try_conflict,    // plain POSIX F_SETLK conflict (pidfile-style try-lock)
  probe,           // an SQLite try-lock (§2.4) found a conflict
  deadlock_avoid,  // RESERVED by a non-holder holding SHARED (rollback write-write)
  stale_snapshot,  // WAL write lock by a non-holder whose snapshot is stale
  timeout,         // a bounded wait expired
  deadlock,        // victim of a wait-for cycle on SQLite bytes (EDEADLK is counted apart)
  flush,           // a queued request cancelled by release_owner (FLUSH)
  kCount,
};
const char* to_string(EagainCause c);

// Wait times in log2 buckets of microseconds: bucket i holds [2^i, 2^(i+1)) us
// (bucket 0 also holds 0).
class WaitHistogram {
public:
  static constexpr std::size_t kBuckets = 40;
  void add(std::chrono::microseconds d);
  std::uint64_t count() const { return count_; }
  // Upper bound of the bucket holding quantile q (0..1), in microseconds; 0 if empty.
  std::uint64_t quantile_us(double q) const;

private:
  std::array<std::uint64_t, kBuckets> buckets_{};
  std::uint64_t count_ = 0;
};

struct Stats {
  std::uint64_t requests = 0;      // setlk submissions (POSIX and flock)
  std::uint64_t granted = 0;       // completed with 0
  std::uint64_t waits = 0;         // requests that had to wait
  std::uint64_t queue_depth = 0;   // requests waiting now
  std::uint64_t max_queue_depth = 0;
  std::uint64_t wait_p50_us = 0;   // of completed waits (bucket upper bound)
  std::uint64_t wait_p99_us = 0;
  std::uint64_t wait_max_us = 0;
  std::array<std::uint64_t, static_cast<std::size_t>(EagainCause::kCount)> eagain{};
  std::uint64_t edeadlk = 0;           // EDEADLK answers (plain F_SETLKW cycles)
  std::uint64_t deadlocks_broken = 0;  // cycles broken (EDEADLK or EAGAIN victim)
  std::uint64_t interrupts = 0;        // waits ended with EINTR by interrupt()
  std::uint64_t interrupts_early = 0;  // interrupt() before submission
  std::uint64_t shutdown_cancels = 0;  // waits ended by the destructor
  std::uint64_t token_grants = 0;      // token given to an owner (free or hand-off)
  std::uint64_t token_handoffs = 0;    // token given to a queued owner on release
  std::uint64_t token_graces = 0;      // soft releases kept for a WAL_RETRY
  std::uint64_t token_flush_releases = 0;  // token released because its holder was flushed
  std::uint64_t token_demotions = 0;       // lease expired: holder lost the token (lease on)

  std::uint64_t eagain_total() const;
};

// {"requests":..,"eagain":{"try_conflict":..,...},...}
std::string to_json(const Stats& s);

}  // namespace hoody::dbfs::lock
