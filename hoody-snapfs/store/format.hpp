// Text forms of the store's data, for the FUSE layer (xattrs, snapshots.json,
// the audit log) and its tests.  Pure: no I/O.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "hoody/result.hpp"
#include "snapshot_store.hpp"

namespace hoody::snapfs {

// "2026-11-26T14:50:23Z" (UTC, whole seconds, rounded down).
std::string format_utc(TimePoint t);

// An expiry as a user writes it (setfattr -n user.hoody.expires -v ...):
//   "+<n><unit>"  relative to `now`; unit s, m (minutes), h, d, w; n >= 1
//   "YYYY-MM-DDTHH:MM:SSZ", "YYYY-MM-DDTHH:MM:SS+HH:MM" (or -HH:MM), "YYYY-MM-DD" (00:00 UTC)
//   "never" or ""  no expiry (nullopt)
// EINVAL with *reason for anything else, or for more than 100 years ahead.
Result<std::optional<TimePoint>> parse_expiry(std::string_view text, TimePoint now,
                                              std::string* reason = nullptr);

// {"name", "uuid", "created", "expires" (null if none), "creator", "type", "description"}
nlohmann::json to_json(const Snapshot& s);
// One line of .hoody/log: {"time", "uid", "pid", "action", "name", "result"}, no newline.
std::string to_json_line(const AuditEntry& e);

}  // namespace hoody::snapfs
