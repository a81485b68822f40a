// The schedule's retention (btrbk's preserve policy), with an injected clock.
#include <doctest/doctest.h>

#include <algorithm>
#include <ctime>
#include <set>

#include "store/format.hpp"
#include "store/retention.hpp"

using namespace hoody;
using namespace hoody::snapfs;
using namespace std::chrono;

namespace {

// "2026-11-03T10:30:00Z" -> a time point (test input, always well formed).
TimePoint utc(const char* text) {
  std::tm tm{};
  REQUIRE(::strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm) != nullptr);
  return Clock::from_time_t(::timegm(&tm));
}

Preserve policy(const char* text) {
  auto p = parse_preserve(text);
  REQUIRE(p.ok());
  return *p;
}

// Hourly snapshots on the hour from `first` to `last`, named as the daemon names them.
std::vector<Dated> hourly(TimePoint first, TimePoint last) {
  std::vector<Dated> out;
  for (auto t = first; t <= last; t += hours(1)) out.push_back({scheduled_name(t), t});
  return out;
}

std::set<std::string> survivors(const std::vector<Dated>& all, TimePoint now, const Preserve& p) {
  auto gone = to_prune(all, now, p);
  std::set<std::string> out;
  for (auto& d : all)
    if (std::find(gone.begin(), gone.end(), d.name) == gone.end()) out.insert(d.name);
  return out;
}

}  // namespace

TEST_CASE("scheduled names and slots") {
  CHECK(scheduled_name(utc("2026-12-01T19:00:00Z")) == "auto-20261201T1900Z");
  CHECK(slot_start(utc("2026-12-01T19:42:17Z"), hours(1)) == utc("2026-12-01T19:00:00Z"));
  CHECK(slot_start(utc("2026-12-01T19:42:17Z"), minutes(30)) == utc("2026-12-01T19:30:00Z"));
  CHECK(slot_start(utc("2026-12-01T19:42:17Z"), hours(24)) == utc("2026-12-01T00:00:00Z"));
}

TEST_CASE("parse_preserve and parse_duration") {
  auto p = policy("24h 7d 4w 12m");
  CHECK(p.hours == 24);
  CHECK(p.days == 7);
  CHECK(p.weeks == 4);
  CHECK(p.months == 12);
  CHECK(p.years == 0);
  CHECK(format_preserve(p) == "24h 7d 4w 12m");
  CHECK(format_preserve(policy("  *d   2y ")) == "*d 2y");
  CHECK(policy("all").all);
  std::string why;
  for (const char* bad : {"", "7x", "7d 7d", "d", "-1d", "7", "24h garbage"}) {
    CAPTURE(bad);
    CHECK(parse_preserve(bad, &why).err() == EINVAL);
    CHECK_FALSE(why.empty());
  }
  CHECK(*parse_duration("hourly", kMinEvery) == hours(1));
  CHECK(*parse_duration("daily", kMinEvery) == hours(24));
  CHECK(*parse_duration("30m", kMinEvery) == minutes(30));
  CHECK(*parse_duration("2w", kMinEvery) == hours(24 * 14));
  CHECK(parse_duration("30s", kMinEvery, &why).err() == EINVAL);
  CHECK(why.find("minimum") != std::string::npos);
  CHECK(parse_duration("0h", kMinEvery).err() == EINVAL);
  CHECK(parse_duration("1x", kMinEvery).err() == EINVAL);
  CHECK(parse_duration("99999w", kMinEvery).err() == EINVAL);
  CHECK(format_duration(hours(1)) == "1h");
  CHECK(format_duration(minutes(90)) == "90m");
  CHECK(format_duration(hours(48)) == "2d");
}

TEST_CASE("parse_schedule_request") {
  std::string why;
  auto off = parse_schedule_request("off\n", &why);
  REQUIRE(off.ok());
  CHECK_FALSE(off->has_value());
  auto s = parse_schedule_request(
      R"({"every":"1h","preserve":"24h 7d","preserve_min":"6h","onchange":true})", &why);
  REQUIRE(s.ok());
  REQUIRE(s->has_value());
  CHECK((*s)->every == hours(1));
  CHECK((*s)->preserve.hours == 24);
  CHECK((*s)->preserve.min == hours(6));
  CHECK((*s)->onchange);
  auto dflt = parse_schedule_request(R"({"every":"daily"})", &why);
  REQUIRE(dflt.ok());
  CHECK(format_preserve((*dflt)->preserve) == kDefaultPreserve);
  CHECK_FALSE((*dflt)->onchange);
  for (const char* bad : {"", "on", "[]", R"({"preserve":"7d"})", R"({"every":"10s"})",
                          R"({"every":"1h","bogus":1})", R"({"every":"1h","onchange":"yes"})",
                          R"({"every":"1h","preserve":"7q"})"}) {
    CAPTURE(bad);
    CHECK(parse_schedule_request(bad, &why).err() == EINVAL);
  }
}

TEST_CASE("retention: a hand-worked example (3h 2d 2w 2m)") {
  // Hourly from Tuesday 2026-10-20 00:00 to Tuesday 2026-11-03 10:00, now 10:30.
  //   3h: 11-03 10:00, 09:00, 08:00
  //   2d: today (10:00, kept) and Monday 11-02 (23:00)
  //   2w: this ISO week from Monday 11-02 (10:00, kept) and the week ending
  //       Sunday 11-01 (23:00)
  //   2m: November (10:00, kept) and October (10-31 23:00)
  auto all = hourly(utc("2026-10-20T00:00:00Z"), utc("2026-11-03T10:00:00Z"));
  REQUIRE(all.size() == 14 * 24 + 11);
  auto kept = survivors(all, utc("2026-11-03T10:30:00Z"), policy("3h 2d 2w 2m"));
  CHECK(kept == std::set<std::string>{"auto-20261031T2300Z", "auto-20261101T2300Z",
                                      "auto-20261102T2300Z", "auto-20261103T0800Z",
                                      "auto-20261103T0900Z", "auto-20261103T1000Z"});
}

TEST_CASE("retention: nine weeks of hourly snapshots, pruned every hour (24h 7d 4w 12m)") {
  // The daemon's loop with a simulated clock: take the hour's snapshot, then
  // prune at half past.  The survivors at 2026-12-01T19:30Z (a Tuesday):
  //   24h: 11-30 20:00 .. 12-01 19:00                              (24)
  //   7d:  12-01 and 11-30 (kept), 11-29 .. 11-25 at 23:00        (+5)
  //   4w:  weeks from 11-30 and 11-23 (kept), 11-22 and 11-15 23:00 (+2)
  //   12m: December and November (kept), October 10-31 23:00      (+1)
  auto p = policy("24h 7d 4w 12m");
  std::vector<Dated> live;
  size_t most = 0;
  for (auto t = utc("2026-10-01T00:00:00Z"); t <= utc("2026-12-01T19:00:00Z"); t += hours(1)) {
    live.push_back({scheduled_name(t), t});
    auto gone = to_prune(live, t + minutes(30), p);
    std::erase_if(live, [&](const Dated& d) {
      return std::find(gone.begin(), gone.end(), d.name) != gone.end();
    });
    most = std::max(most, live.size());
  }
  std::set<std::string> kept;
  for (auto& d : live) kept.insert(d.name);
  std::set<std::string> want = {"auto-20261031T2300Z", "auto-20261115T2300Z",
                                "auto-20261122T2300Z", "auto-20261125T2300Z",
                                "auto-20261126T2300Z", "auto-20261127T2300Z",
                                "auto-20261128T2300Z", "auto-20261129T2300Z"};
  for (auto t = utc("2026-11-30T20:00:00Z"); t <= utc("2026-12-01T19:00:00Z"); t += hours(1))
    want.insert(scheduled_name(t));
  CHECK(want.size() == 32);
  CHECK(kept == want);
  // Pruning every hour and pruning once at the end agree.
  CHECK(survivors(hourly(utc("2026-10-01T00:00:00Z"), utc("2026-12-01T19:00:00Z")),
                  utc("2026-12-01T19:30:00Z"), p) == want);
  // Never more than the policy's own bound plus the hour in progress.
  CHECK(most <= 24 + 7 + 4 + 12 + 1);
}

TEST_CASE("retention: preserve_min, all, '*', the newest, a clock set back") {
  auto all = hourly(utc("2026-11-01T00:00:00Z"), utc("2026-11-02T23:00:00Z"));
  auto now = utc("2026-11-02T23:30:00Z");
  // 1h alone keeps the newest; preserve_min 6h keeps everything younger than 6 hours.
  CHECK(survivors(all, now, policy("1h")) == std::set<std::string>{"auto-20261102T2300Z"});
  auto p = policy("1h");
  p.min = hours(6);
  auto kept = survivors(all, now, p);
  CHECK(kept.size() == 6);  // 18:00 .. 23:00 (ages 5.5 h .. 0.5 h)
  CHECK(kept.count("auto-20261102T1800Z") == 1);
  CHECK(kept.count("auto-20261102T1700Z") == 0);
  CHECK(to_prune(all, now, policy("all")).empty());
  CHECK(survivors(all, now, policy("*d")) ==
        std::set<std::string>{"auto-20261101T2300Z", "auto-20261102T2300Z"});
  // A policy that keeps no period still keeps the newest snapshot.
  Preserve none;
  CHECK(survivors(all, now, none) == std::set<std::string>{"auto-20261102T2300Z"});
  // Snapshots dated after "now" (the clock went back) are kept.
  auto future = all;
  future.push_back({"auto-20261110T0000Z", utc("2026-11-10T00:00:00Z")});
  CHECK(survivors(future, now, policy("1h")) ==
        std::set<std::string>{"auto-20261102T2300Z", "auto-20261110T0000Z"});
  // No snapshots, nothing to do.
  CHECK(to_prune({}, now, policy("1h")).empty());
}
