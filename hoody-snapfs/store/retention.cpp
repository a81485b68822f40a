#include "retention.hpp"

#include <algorithm>
#include <cctype>
#include <ctime>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "format.hpp"

namespace hoody::snapfs {

namespace {

using std::chrono::seconds;

detail::Unexpected invalid(std::string* why, std::string text) {
  if (why) *why = std::move(text);
  return fail(EINVAL);
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<seconds>(t.time_since_epoch()).count();
}

enum class Period { hour, day, week, month, year };

// The number of the period `t` falls in (consecutive periods differ by 1).
int64_t bucket(Period p, int64_t t) {
  switch (p) {
    case Period::hour: return floor_div(t, 3600);
    case Period::day: return floor_div(t, 86400);
    // 1970-01-01 was a Thursday: +3 days puts Mondays on multiples of 7.
    case Period::week: return floor_div(floor_div(t, 86400) + 3, 7);
    case Period::month:
    case Period::year: {
      std::time_t tt = static_cast<std::time_t>(t);
      std::tm tm{};
      ::gmtime_r(&tt, &tm);
      int64_t y = tm.tm_year + 1900;
      return p == Period::year ? y : y * 12 + tm.tm_mon;
    }
  }
  return 0;
}

// Parses "<n><unit>" with unit in `units`; n may be '*' when star_ok.
bool split_count(std::string_view tok, int* n, char* unit, bool star_ok) {
  if (tok.size() < 2) return false;
  *unit = tok.back();
  auto num = tok.substr(0, tok.size() - 1);
  if (num == "*") {
    if (!star_ok) return false;
    *n = Preserve::kAll;
    return true;
  }
  if (num.size() > 6) return false;
  int v = 0;
  for (char c : num) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  *n = v;
  return true;
}

std::vector<std::string_view> words(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
    size_t j = i;
    while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
    if (j > i) out.push_back(s.substr(i, j - i));
    i = j;
  }
  return out;
}

}  // namespace

Result<Preserve> parse_preserve(std::string_view text, std::string* why) {
  Preserve p;
  auto toks = words(text);
  if (toks.empty())
    return invalid(why, "preserve: give periods to keep, such as \"24h 7d 4w 12m\" (or \"all\")");
  if (toks.size() == 1 && toks[0] == "all") {
    p.all = true;
    return p;
  }
  std::set<char> seen;
  for (auto t : toks) {
    int n = 0;
    char unit = 0;
    auto bad = [&](const std::string& what) -> detail::Unexpected {
      return invalid(why, "preserve \"" + std::string(t) + "\": " + what +
                              " (write N or * followed by h, d, w, m or y: \"24h 7d 4w 12m\")");
    };
    if (!split_count(t, &n, &unit, true)) return bad("not a count and a period");
    int* slot = unit == 'h' ? &p.hours
                : unit == 'd' ? &p.days
                : unit == 'w' ? &p.weeks
                : unit == 'm' ? &p.months
                : unit == 'y' ? &p.years
                              : nullptr;
    if (!slot) return bad("unknown period");
    if (!seen.insert(unit).second) return bad("period given twice");
    *slot = n;
  }
  return p;
}

std::string format_preserve(const Preserve& p) {
  if (p.all) return "all";
  std::string out;
  auto add = [&](int n, char u) {
    if (n == 0) return;
    if (!out.empty()) out += ' ';
    out += n == Preserve::kAll ? std::string("*") : std::to_string(n);
    out += u;
  };
  add(p.hours, 'h');
  add(p.days, 'd');
  add(p.weeks, 'w');
  add(p.months, 'm');
  add(p.years, 'y');
  return out.empty() ? "0h" : out;
}

Result<seconds> parse_duration(std::string_view text, seconds min, std::string* why) {
  seconds d{0};
  if (text == "hourly") {
    d = seconds(3600);
  } else if (text == "daily") {
    d = seconds(86400);
  } else if (text == "weekly") {
    d = seconds(7 * 86400);
  } else {
    int n = 0;
    char unit = 0;
    if (!split_count(text, &n, &unit, false) || n <= 0)
      return invalid(why, "\"" + std::string(text) +
                              "\" is not a duration (N followed by s, m, h, d or w: 30m, 1h, 2d; "
                              "or hourly, daily, weekly)");
    int64_t mult = unit == 's' ? 1 : unit == 'm' ? 60 : unit == 'h' ? 3600 : unit == 'd' ? 86400
                   : unit == 'w' ? 7 * 86400 : 0;
    if (!mult)
      return invalid(why, "\"" + std::string(text) + "\": unknown unit (s, m, h, d or w)");
    d = seconds(n * mult);
  }
  if (d < min)
    return invalid(why, "\"" + std::string(text) + "\" is below the minimum of " + format_duration(min));
  if (d > seconds(int64_t{10} * 366 * 86400))
    return invalid(why, "\"" + std::string(text) + "\" is more than 10 years");
  return d;
}

std::string format_duration(seconds d) {
  int64_t s = d.count();
  if (s == 0) return "0s";
  if (s % (7 * 86400) == 0) return std::to_string(s / (7 * 86400)) + "w";
  if (s % 86400 == 0) return std::to_string(s / 86400) + "d";
  if (s % 3600 == 0) return std::to_string(s / 3600) + "h";
  if (s % 60 == 0) return std::to_string(s / 60) + "m";
  return std::to_string(s) + "s";
}

Result<std::optional<Schedule>> parse_schedule_request(std::string_view text, std::string* why) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  if (text == "off") return std::optional<Schedule>();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const std::exception&) {
    return invalid(why, "schedule: write \"off\" or a JSON object such as "
                        "{\"every\":\"1h\",\"preserve\":\"24h 7d 4w 12m\",\"onchange\":true}");
  }
  if (!j.is_object()) return invalid(why, "schedule: not a JSON object");
  for (auto& [k, v] : j.items())
    if (k != "every" && k != "preserve" && k != "preserve_min" && k != "onchange")
      return invalid(why, "schedule: unknown key \"" + k +
                              "\" (every, preserve, preserve_min, onchange)");
  Schedule s;
  if (!j.contains("every") || !j["every"].is_string())
    return invalid(why, "schedule: \"every\" is required (\"1h\", \"30m\", \"daily\")");
  HOODY_TRY(every, parse_duration(j["every"].get<std::string>(), kMinEvery, why));
  s.every = every;
  std::string pres(kDefaultPreserve);
  if (j.contains("preserve")) {
    if (!j["preserve"].is_string()) return invalid(why, "schedule: \"preserve\" is a string");
    pres = j["preserve"].get<std::string>();
  }
  HOODY_TRY(p, parse_preserve(pres, why));
  s.preserve = p;
  if (j.contains("preserve_min")) {
    if (!j["preserve_min"].is_string()) return invalid(why, "schedule: \"preserve_min\" is a string");
    auto m = j["preserve_min"].get<std::string>();
    if (!m.empty() && m != "0") {
      HOODY_TRY(d, parse_duration(m, seconds(1), why));
      s.preserve.min = d;
    }
  }
  if (j.contains("onchange")) {
    if (!j["onchange"].is_boolean()) return invalid(why, "schedule: \"onchange\" is true or false");
    s.onchange = j["onchange"].get<bool>();
  }
  return std::optional<Schedule>(s);
}

TimePoint slot_start(TimePoint t, seconds every) {
  int64_t e = every.count() > 0 ? every.count() : 1;
  return TimePoint(seconds(floor_div(unix_seconds(t), e) * e));
}

std::string scheduled_name(TimePoint slot) {
  std::time_t tt = static_cast<std::time_t>(unix_seconds(slot));
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%MZ", &tm);
  return std::string(kScheduledPrefix) + buf;
}

std::vector<std::string> to_prune(std::vector<Dated> snaps, TimePoint now, const Preserve& p) {
  if (p.all || snaps.empty()) return {};
  std::sort(snaps.begin(), snaps.end(), [](const Dated& a, const Dated& b) {
    return a.created != b.created ? a.created < b.created : a.name < b.name;
  });
  std::vector<bool> keep(snaps.size(), false);
  keep.back() = true;  // the newest, whatever the rules
  const int64_t n = unix_seconds(now);
  for (size_t i = 0; i < snaps.size(); ++i) {
    if (snaps[i].created > now) keep[i] = true;
    if (p.min.count() > 0 && now - snaps[i].created < p.min) keep[i] = true;
  }
  const std::pair<Period, int> rules[] = {{Period::hour, p.hours},
                                          {Period::day, p.days},
                                          {Period::week, p.weeks},
                                          {Period::month, p.months},
                                          {Period::year, p.years}};
  for (auto [period, count] : rules) {
    if (count == 0) continue;
    const int64_t current = bucket(period, n);
    std::unordered_map<int64_t, size_t> newest;  // period -> index of its newest snapshot
    for (size_t i = 0; i < snaps.size(); ++i) {
      if (snaps[i].created > now) continue;
      int64_t b = bucket(period, unix_seconds(snaps[i].created));
      if (count != Preserve::kAll && current - b >= count) continue;
      newest[b] = i;  // ascending order: the last one seen is the newest
    }
    for (auto& [b, i] : newest) keep[i] = true;
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < snaps.size(); ++i)
    if (!keep[i]) out.push_back(snaps[i].name);
  return out;
}

std::string schedule_json(const ScheduleState& s, std::optional<TimePoint> checked) {
  nlohmann::ordered_json j;
  const auto& sc = s.schedule;
  j["enabled"] = sc.on();
  j["every"] = sc.on() ? nlohmann::ordered_json(format_duration(sc.every)) : nlohmann::ordered_json(nullptr);
  j["preserve"] = sc.on() ? nlohmann::ordered_json(format_preserve(sc.preserve)) : nlohmann::ordered_json(nullptr);
  j["preserve_min"] = sc.on() && sc.preserve.min.count() > 0
                          ? nlohmann::ordered_json(format_duration(sc.preserve.min))
                          : nlohmann::ordered_json(nullptr);
  j["onchange"] = sc.onchange;
  j["last_slot"] = s.last_slot ? nlohmann::ordered_json(format_utc(*s.last_slot)) : nlohmann::ordered_json(nullptr);
  j["last_taken"] = s.last_taken ? nlohmann::ordered_json(format_utc(*s.last_taken)) : nlohmann::ordered_json(nullptr);
  j["checked"] = checked ? nlohmann::ordered_json(format_utc(*checked)) : nlohmann::ordered_json(nullptr);
  return j.dump() + "\n";
}

}  // namespace hoody::snapfs
