#include "lock/stats.hpp"

#include <bit>
#include <nlohmann/json.hpp>

namespace hoody::dbfs::lock {

const char* to_string(EagainCause c) {
  switch (c) {
    case EagainCause::try_conflict: return "try_conflict";
    case EagainCause::probe: return "probe";
    case EagainCause::deadlock_avoid: return "deadlock_avoid";
    case EagainCause::stale_snapshot: return "stale_snapshot";
    case EagainCause::timeout: return "timeout";
    case EagainCause::deadlock: return "deadlock";
    case EagainCause::flush: return "flush";
    case EagainCause::kCount: break;
  }
  return "?";
}

void WaitHistogram::add(std::chrono::microseconds d) {
  const auto us = static_cast<std::uint64_t>(d.count() < 0 ? 0 : d.count());
  std::size_t b = us == 0 ? 0 : static_cast<std::size_t>(std::bit_width(us) - 1);
  if (b >= kBuckets) b = kBuckets - 1;
  ++buckets_[b];
  ++count_;
}

std::uint64_t WaitHistogram::quantile_us(double q) const {
  if (count_ == 0) return 0;
  const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_ - 1)) + 1;
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    if (seen >= rank) return (std::uint64_t{2} << i) - 1;
  }
  return UINT64_MAX;
}

std::uint64_t Stats::eagain_total() const {
  std::uint64_t n = 0;
  for (auto v : eagain) n += v;
  return n;
}

std::string to_json(const Stats& s) {
  nlohmann::json eagain = nlohmann::json::object();
  for (std::size_t i = 0; i < s.eagain.size(); ++i)
    eagain[to_string(static_cast<EagainCause>(i))] = s.eagain[i];
  nlohmann::json j = {
      {"requests", s.requests},
      {"granted", s.granted},
      {"waits", s.waits},
      {"queue_depth", s.queue_depth},
      {"max_queue_depth", s.max_queue_depth},
      {"wait_p50_us", s.wait_p50_us},
      {"wait_p99_us", s.wait_p99_us},
      {"wait_max_us", s.wait_max_us},
      {"eagain", eagain},
      {"eagain_total", s.eagain_total()},
      {"edeadlk", s.edeadlk},
      {"deadlocks_broken", s.deadlocks_broken},
      {"interrupts", s.interrupts},
      {"interrupts_early", s.interrupts_early},
      {"shutdown_cancels", s.shutdown_cancels},
      {"token_grants", s.token_grants},
      {"token_handoffs", s.token_handoffs},
      {"token_graces", s.token_graces},
      {"token_flush_releases", s.token_flush_releases},
      {"token_demotions", s.token_demotions},
  };
  return j.dump();
}

}  // namespace hoody::dbfs::lock
