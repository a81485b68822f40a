// The one snapshot type and the one audit entry of hoody-snapfs: what the
// store (store/) keeps in its index and what the daemon shows (vdir/ renders
// them as snapshots.json, user.hoody.* xattrs and .hoody/log).  Plain data,
// no store or FUSE headers, so vdir/ can use them.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

namespace hoody::snapfs {

using Clock = std::chrono::system_clock;
using TimePoint = Clock::time_point;

inline constexpr const char* kTransaction = "transaction";
inline constexpr const char* kCrash = "crash";
// The longest description (E2BIG above it).
inline constexpr std::size_t kMaxDescriptionBytes = 4096;

struct Snapshot {
  std::string name;
  std::string uuid;  // the directory .snapshots/<uuid>
  TimePoint created{};
  std::optional<TimePoint> expires;
  uid_t creator = 0;
  // "filesystem", or "scheduled" for the schedule's (store/retention.hpp).
  std::string type = "filesystem";
  std::string description;
  // "transaction": every database server of the scope was quiesced, no
  // snapshot holds half a transaction; "crash": not (no server, a transaction
  // outlasted the quiesce timeout, a server did not answer), as after a power
  // cut.  `busy` names what was not quiesced ("databases/app.db").
  std::string consistency = kCrash;
  std::vector<std::string> busy;
  // Subvolumes nested in the scope when it was taken ("storage/docker"):
  // BTRFS holds an empty directory in their place.
  std::vector<std::string> nested;
  // The scope subvolumes it holds, sorted: not in the index (the directory
  // .snapshots/<uuid> is their truth); filled by the daemon where shown
  // (snapshots.json), empty elsewhere.
  std::vector<std::string> subvolumes;
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
};

// One row of the audit trail (.hoody/log).
struct AuditEntry {
  TimePoint time{};
  uid_t uid = 0;
  pid_t pid = 0;
  // create, delete, rename, restore, set_expires, set_description, prune, schedule, recover
  std::string action;
  std::string name;
  // "ok", "ok; detail", or "EPERM: why" (errno name, then the reason for a person)
  std::string result;
  std::string target{};  // the other name: a rename's new name, an expiry, a schedule
};

}  // namespace hoody::snapfs
