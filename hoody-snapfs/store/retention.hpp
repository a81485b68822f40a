// Scheduled snapshots and their retention, in btrbk's terms (no I/O, no FUSE):
// which interval slot is due, what a scheduled snapshot is named, and which
// scheduled snapshots a preserve policy keeps.  The daemon supplies "now" and
// the list; the unit tests supply a clock of their own.
//
// Preserve policy "24h 7d 4w 12m" (btrbk's snapshot_preserve syntax; y for
// years, '*' instead of a number for "all", "all" alone keeps everything):
//   Nh  the newest snapshot of each of the last N hours      (the current one included)
//   Nd  the newest snapshot of each of the last N days
//   Nw  the newest snapshot of each of the last N ISO weeks  (Monday to Sunday)
//   Nm  the newest snapshot of each of the last N months
//   Ny  the newest snapshot of each of the last N years
// All periods are UTC.  A snapshot is kept if any rule keeps it, if it is
// younger than preserve_min (btrbk's snapshot_preserve_min as a duration),
// if it is dated after "now" (a clock set back), or if it is the newest one.
// btrbk keeps the first snapshot of a period; hoody keeps the newest, so the
// hourly snapshot of the current hour is always the latest state.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hoody/result.hpp"
#include "snapshot_store.hpp"

namespace hoody::snapfs {

inline constexpr const char* kTypeFilesystem = "filesystem";  // taken by a user (mkdir, restore's safety)
inline constexpr const char* kTypeScheduled = "scheduled";    // taken by the schedule: pruned by it
inline constexpr std::string_view kScheduledPrefix = "auto-";

struct Preserve {
  static constexpr int kAll = -1;  // '*'
  int hours = 0, days = 0, weeks = 0, months = 0, years = 0;
  bool all = false;                       // "all": nothing is pruned
  std::chrono::seconds min{0};            // preserve_min: everything younger is kept
  friend bool operator==(const Preserve&, const Preserve&) = default;
};

// "24h 7d 4w 12m", "*d 4w", "all".  EINVAL with *why otherwise (an empty policy too).
Result<Preserve> parse_preserve(std::string_view text, std::string* why = nullptr);
// The canonical text of the rules ("24h 7d 4w 12m"; "all"); preserve_min is apart.
std::string format_preserve(const Preserve& p);

// A duration: "30m", "1h", "2d", "1w", "90s"; also "hourly", "daily", "weekly".
// `min` is the smallest accepted (EINVAL with *why below it, or above 10 years).
Result<std::chrono::seconds> parse_duration(std::string_view text, std::chrono::seconds min,
                                            std::string* why = nullptr);
// "1h", "30m", "1d", "90s": the largest unit that divides it.
std::string format_duration(std::chrono::seconds d);

struct Schedule {
  std::chrono::seconds every{0};  // 0: no schedule
  Preserve preserve;
  bool onchange = false;          // skip a slot when no scope subvolume changed
  bool on() const { return every.count() > 0; }
  friend bool operator==(const Schedule&, const Schedule&) = default;
};
inline constexpr std::chrono::seconds kMinEvery{60};
// The default policy when none is given.
inline constexpr std::string_view kDefaultPreserve = "24h 7d 4w 12m";

// What .hoody/schedule takes: "off", or a JSON object
//   {"every": "1h", "preserve": "24h 7d 4w 12m", "preserve_min": "6h", "onchange": true}
// ("every" required; "preserve" defaults to kDefaultPreserve).  nullopt: off.
Result<std::optional<Schedule>> parse_schedule_request(std::string_view text, std::string* why);

// The start of the slot `t` falls in: slots are multiples of `every` since
// the epoch (hourly on the hour, daily at 00:00 UTC).
TimePoint slot_start(TimePoint t, std::chrono::seconds every);
// "auto-20261201T1900Z" for the slot starting at `slot`.
std::string scheduled_name(TimePoint slot);

struct Dated {
  std::string name;
  TimePoint created{};
};
// The names of `snaps` (scheduled snapshots) that `p` does not keep at `now`,
// oldest first.
std::vector<std::string> to_prune(std::vector<Dated> snaps, TimePoint now, const Preserve& p);

// What the schedule did last (kept in index.db with the schedule).
struct ScheduleState {
  Schedule schedule;
  std::optional<TimePoint> last_slot;            // the last slot handled (taken or skipped)
  std::map<std::string, uint64_t> generations;   // scope subvolume -> generation after it
  std::optional<TimePoint> last_taken;           // when the last scheduled snapshot was taken
};
// The text of .hoody/schedule: one JSON object and '\n'.
std::string schedule_json(const ScheduleState& s, std::optional<TimePoint> checked);

}  // namespace hoody::snapfs
