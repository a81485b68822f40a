// Times as the store takes and gives them: UTC text, unix seconds, expiries
// as users write them.  Pure: no I/O.  (snapshots.json and .hoody/log are
// rendered by vdir/: snapshots_json, audit_line.)
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "hoody/result.hpp"
#include "../snapshot.hpp"  // Clock, TimePoint

namespace hoody::snapfs {

// "2026-11-26T14:50:23Z" (UTC, whole seconds, rounded down).
std::string format_utc(TimePoint t);

// The times the store can hold: nanoseconds since 1970-01-01T00:00:00Z in an
// int64 (TimePoint), so 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z.
inline constexpr int64_t kMaxUnixSeconds =
    std::chrono::duration_cast<std::chrono::seconds>(Clock::duration::max()).count();

// `unix_seconds` (+ `nanos`, 0..999999999) as a TimePoint; EINVAL (never a
// wrapped value) outside the range above.
Result<TimePoint> time_from_unix(int64_t unix_seconds, int64_t nanos = 0);
// `from` + `ahead`; EINVAL when the sum is outside the range above.
Result<TimePoint> time_after(TimePoint from, std::chrono::seconds ahead);

// An expiry as a user writes it (setfattr -n user.hoody.expires -v ...):
//   "+<n><unit>"  relative to `now`; unit s, m (minutes), h, d, w; n >= 1
//   an RFC 3339 time: "YYYY-MM-DDTHH:MM:SS[.fraction]Z" or with an offset
//     "+HH:MM"/"-HH:MM"; 'T' and 'Z' in either case, or a space for 'T'
//   "YYYY-MM-DD" (00:00 UTC)
//   "never"  no expiry (nullopt)
// EINVAL with *reason for anything else: an empty value (removexattr clears an
// expiry), a time before 1970 or after 2262-04-11T23:47:16Z (the store keeps
// nanoseconds in an int64), or more than 100 years ahead of `now`.
Result<std::optional<TimePoint>> parse_expiry(std::string_view text, TimePoint now,
                                              std::string* reason = nullptr);

}  // namespace hoody::snapfs
