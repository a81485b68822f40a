#include "format.hpp"

#include <cctype>
#include <charconv>
#include <ctime>

#include "hoody/names.hpp"

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

Result<TimePoint> time_from_unix(int64_t unix_seconds, int64_t nanos) {
  if (unix_seconds < 0 || unix_seconds > kMaxUnixSeconds || nanos < 0 || nanos > 999999999)
    return fail(EINVAL);
  auto whole = std::chrono::duration_cast<Clock::duration>(std::chrono::seconds(unix_seconds));
  auto frac = std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(nanos));
  if (frac > Clock::duration::max() - whole) return fail(EINVAL);
  return TimePoint(whole + frac);
}

Result<TimePoint> time_after(TimePoint from, std::chrono::seconds ahead) {
  auto base = from.time_since_epoch();
  if (base < Clock::duration::zero()) return fail(EINVAL);
  // In seconds first: `ahead` as nanoseconds could overflow by itself.
  auto room = std::chrono::duration_cast<std::chrono::seconds>(Clock::duration::max() - base);
  if (ahead > room || ahead < -std::chrono::duration_cast<std::chrono::seconds>(base))
    return fail(EINVAL);
  return from + std::chrono::duration_cast<Clock::duration>(ahead);
}

namespace {

Result<std::optional<TimePoint>> invalid(std::string_view text, std::string* reason,
                                         const std::string& why) {
  if (reason) *reason = "expiry " + quote_name(text) + ": " + why;
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

constexpr auto kMaxAhead = std::chrono::seconds(int64_t{24} * 3600 * 366 * 100);
constexpr const char* kForms =
    "use +<n>{s,m,h,d,w}, YYYY-MM-DD, an RFC 3339 time (YYYY-MM-DDTHH:MM:SS[.frac]Z or "
    "+HH:MM offset), or never";
constexpr const char* kRange =
    "out of range: the store holds times from 1970-01-01T00:00:00Z to 2262-04-11T23:47:16Z";

}  // namespace

Result<std::optional<TimePoint>> parse_expiry(std::string_view text, TimePoint now,
                                              std::string* reason) {
  // Tolerate the newline `echo` adds.
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ' || text.back() == '\r'))
    text.remove_suffix(1);
  if (text.empty())
    return invalid(text, reason,
                   "empty; to clear an expiry remove it (setfattr -x user.hoody.expires NAME) "
                   "or write never");
  if (text == "never") return std::optional<TimePoint>();

  TimePoint when;
  if (text[0] == '+') {
    if (text.size() < 3) return invalid(text, reason, kForms);
    uint64_t n = 0;
    auto num = text.substr(1, text.size() - 2);
    auto [p, ec] = std::from_chars(num.data(), num.data() + num.size(), n);
    if (ec == std::errc::result_out_of_range) return invalid(text, reason, "more than 100 years ahead");
    if (ec != std::errc() || p != num.data() + num.size() || n == 0)
      return invalid(text, reason, kForms);
    std::chrono::seconds unit;
    switch (text.back()) {
      case 's': unit = std::chrono::seconds(1); break;
      case 'm': unit = std::chrono::minutes(1); break;
      case 'h': unit = std::chrono::hours(1); break;
      case 'd': unit = std::chrono::hours(24); break;
      case 'w': unit = std::chrono::hours(24 * 7); break;
      default: return invalid(text, reason, kForms);
    }
    // Compare before multiplying: n * unit must not overflow.
    if (n > static_cast<uint64_t>(kMaxAhead / unit))
      return invalid(text, reason, "more than 100 years ahead");
    auto w = time_after(now, unit * static_cast<int64_t>(n));
    if (!w) return invalid(text, reason, kRange);
    when = *w;
  } else {
    int y, mo, d, h = 0, mi = 0, s = 0;
    if (text.size() < 10 || !digits(text, 0, 4, y) || text[4] != '-' || !digits(text, 5, 2, mo) ||
        text[7] != '-' || !digits(text, 8, 2, d))
      return invalid(text, reason, kForms);
    int64_t offset = 0, nanos = 0;
    if (text.size() > 10) {
      char t = text[10];
      if (text.size() < 19 || (t != 'T' && t != 't' && t != ' ') || !digits(text, 11, 2, h) ||
          text[13] != ':' || !digits(text, 14, 2, mi) || text[16] != ':' ||
          !digits(text, 17, 2, s))
        return invalid(text, reason, kForms);
      std::string_view zone = text.substr(19);
      if (!zone.empty() && zone[0] == '.') {
        // Fractional seconds: at least one digit; beyond nanoseconds they are dropped.
        std::size_t i = 1;
        int64_t scale = 100000000;
        for (; i < zone.size() && std::isdigit(static_cast<unsigned char>(zone[i])); ++i) {
          nanos += (zone[i] - '0') * scale;
          scale /= 10;
        }
        if (i == 1) return invalid(text, reason, kForms);
        zone.remove_prefix(i);
      }
      int oh, om;
      if (zone == "Z" || zone == "z") {
        offset = 0;
      } else if (zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && digits(zone, 1, 2, oh) &&
                 zone[3] == ':' && digits(zone, 4, 2, om) && oh < 24 && om < 60) {
        offset = (oh * int64_t{3600} + om * int64_t{60}) * (zone[0] == '+' ? 1 : -1);
      } else {
        return invalid(text, reason, "a time needs a zone: Z or +HH:MM");
      }
    }
    using namespace std::chrono;
    year_month_day ymd{year(y), month(static_cast<unsigned>(mo)), day(static_cast<unsigned>(d))};
    if (!ymd.ok() || h > 23 || mi > 59 || s > 59) return invalid(text, reason, "no such date or time");
    // Years are 4 digits: this sum stays far inside int64.
    int64_t secs = sys_days(ymd).time_since_epoch().count() * int64_t{86400} + h * int64_t{3600} +
                   mi * int64_t{60} + s - offset;
    auto w = time_from_unix(secs, nanos);
    if (!w) return invalid(text, reason, kRange);
    when = *w;
    if (when > now && when - now > kMaxAhead) return invalid(text, reason, "more than 100 years ahead");
  }
  return std::optional<TimePoint>(when);
}

}  // namespace hoody::snapfs
