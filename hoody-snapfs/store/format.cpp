#include "format.hpp"

#include <cctype>
#include <charconv>
#include <ctime>

namespace hoody::snapfs {

std::string format_utc(TimePoint t) {
  auto secs = std::chrono::floor<std::chrono::seconds>(t);
  std::time_t tt = static_cast<std::time_t>(secs.time_since_epoch().count());
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

namespace {

Result<std::optional<TimePoint>> invalid(std::string_view text, std::string* reason,
                                         const std::string& why) {
  if (reason) {
    std::string shown(text.substr(0, 64));
    for (char& c : shown)
      if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
    *reason = "expiry \"" + shown + "\": " + why;
  }
  return fail(EINVAL);
}

bool digits(std::string_view s, std::size_t pos, std::size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (std::size_t i = pos; i < pos + n; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

constexpr auto kMaxAhead = std::chrono::hours(24 * 366 * 100);
constexpr const char* kForms =
    "use +<n>{s,m,h,d,w}, YYYY-MM-DD, YYYY-MM-DDTHH:MM:SSZ (or +HH:MM offset), or never";

}  // namespace

Result<std::optional<TimePoint>> parse_expiry(std::string_view text, TimePoint now,
                                              std::string* reason) {
  // Tolerate the newline `echo` adds.
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  if (text.empty() || text == "never") return std::optional<TimePoint>();

  TimePoint when;
  if (text[0] == '+') {
    if (text.size() < 3) return invalid(text, reason, kForms);
    uint64_t n = 0;
    auto num = text.substr(1, text.size() - 2);
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
    if (ec != std::errc() || p != num.data() + num.size() || n == 0)
      return invalid(text, reason, kForms);
    if (n > 100ULL * 366 * 24 * 3600) return invalid(text, reason, "more than 100 years ahead");
    std::chrono::seconds unit;
    switch (text.back()) {
      case 's': unit = std::chrono::seconds(1); break;
      case 'm': unit = std::chrono::minutes(1); break;
      case 'h': unit = std::chrono::hours(1); break;
      case 'd': unit = std::chrono::hours(24); break;
      case 'w': unit = std::chrono::hours(24 * 7); break;
      default: return invalid(text, reason, kForms);
    }
    auto ahead = unit * static_cast<int64_t>(n);
    if (ahead > kMaxAhead) return invalid(text, reason, "more than 100 years ahead");
    when = now + std::chrono::duration_cast<Clock::duration>(ahead);
  } else {
    std::tm tm{};
    int y, mo, d, h = 0, mi = 0, s = 0;
    if (!digits(text, 0, 4, y) || text.size() < 10 || text[4] != '-' || !digits(text, 5, 2, mo) ||
        text[7] != '-' || !digits(text, 8, 2, d))
      return invalid(text, reason, kForms);
    long offset = 0;
    if (text.size() > 10) {
      if (text.size() < 19 || (text[10] != 'T' && text[10] != ' ') || !digits(text, 11, 2, h) ||
          text[13] != ':' || !digits(text, 14, 2, mi) || text[16] != ':' ||
          !digits(text, 17, 2, s))
        return invalid(text, reason, kForms);
      std::string_view zone = text.substr(19);
      int oh, om;
      if (zone == "Z") {
        offset = 0;
      } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && digits(zone, 1, 2, oh) &&
                 zone[3] == ':' && digits(zone, 4, 2, om) && oh < 24 && om < 60) {
        offset = (oh * 3600L + om * 60L) * (zone[0] == '+' ? 1 : -1);
      } else {
        return invalid(text, reason, "a time needs a zone: Z or +HH:MM");
      }
    }
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    std::tm check = tm;
    std::time_t t = ::timegm(&tm);
    if (t == static_cast<std::time_t>(-1) || tm.tm_mday != check.tm_mday ||
        tm.tm_mon != check.tm_mon || tm.tm_hour != check.tm_hour || tm.tm_min != check.tm_min ||
        tm.tm_sec != check.tm_sec)
      return invalid(text, reason, "no such date or time");
    when = Clock::from_time_t(t - offset);
    if (when - now > kMaxAhead) return invalid(text, reason, "more than 100 years ahead");
  }
  return std::optional<TimePoint>(when);
}

nlohmann::json to_json(const Snapshot& s) {
  return nlohmann::json{
      {"name", s.name},
      {"uuid", s.uuid},
      {"created", format_utc(s.created)},
      {"expires", s.expires ? nlohmann::json(format_utc(*s.expires)) : nlohmann::json(nullptr)},
      {"creator", s.creator},
      {"type", s.type},
      {"description", s.description},
  };
}

std::string to_json_line(const AuditEntry& e) {
  nlohmann::json j{{"time", format_utc(e.time)}, {"uid", e.uid},   {"pid", e.pid},
                   {"action", e.action},         {"name", e.name}, {"result", e.result}};
  // Names are bytes, not necessarily UTF-8: replace what JSON cannot carry.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace hoody::snapfs
