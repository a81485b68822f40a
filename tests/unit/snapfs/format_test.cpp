#include <doctest/doctest.h>

#include <limits>

#include "store/format.hpp"

using namespace hoody;
using namespace hoody::snapfs;
using namespace std::chrono;

namespace {
TimePoint at(time_t t) { return Clock::from_time_t(t); }
constexpr time_t kNow = 1795703423;  // 2026-11-26T14:30:23Z
}  // namespace

TEST_CASE("format_utc") {
  CHECK(format_utc(at(0)) == "1970-01-01T00:00:00Z");
  CHECK(format_utc(at(kNow)) == "2026-11-26T14:30:23Z");
  CHECK(format_utc(at(kNow) + milliseconds(999)) == "2026-11-26T14:30:23Z");
}

TEST_CASE("parse_expiry: relative") {
  auto now = at(kNow);
  CHECK(**parse_expiry("+7d", now) == now + hours(24 * 7));
  CHECK(**parse_expiry("+36h", now) == now + hours(36));
  CHECK(**parse_expiry("+90m", now) == now + minutes(90));
  CHECK(**parse_expiry("+10s", now) == now + seconds(10));
  CHECK(**parse_expiry("+2w\n", now) == now + hours(24 * 14));
  std::string why;
  CHECK(parse_expiry("+0d", now, &why).err() == EINVAL);
  CHECK(parse_expiry("+d", now, &why).err() == EINVAL);
  CHECK(parse_expiry("+7y", now, &why).err() == EINVAL);
  CHECK(why.find("use +<n>") != std::string::npos);
  CHECK(parse_expiry("+-1d", now).err() == EINVAL);
  CHECK(parse_expiry("+1.5d", now).err() == EINVAL);
  CHECK(parse_expiry("+99999999999999999999d", now).err() == EINVAL);
  CHECK(parse_expiry("+40000d", now, &why).err() == EINVAL);
  CHECK(why.find("100 years") != std::string::npos);
}

TEST_CASE("parse_expiry: absolute and never") {
  auto now = at(kNow);
  CHECK(**parse_expiry("2026-12-01T00:00:00Z", now) == at(1796083200));
  CHECK(**parse_expiry("2026-12-01", now) == at(1796083200));
  CHECK(**parse_expiry("2026-12-01T02:00:00+02:00", now) == at(1796083200));
  CHECK(**parse_expiry("2026-11-30T22:30:00-01:30", now) == at(1796083200));
  CHECK(**parse_expiry("2026-12-01 00:00:00Z", now) == at(1796083200));
  CHECK_FALSE(parse_expiry("never", now)->has_value());
  CHECK_FALSE(parse_expiry("never\n", now)->has_value());
  // In the past is allowed: pruned at the next pass.
  CHECK(**parse_expiry("2000-01-01", now) == at(946684800));
  std::string why;
  CHECK(parse_expiry("2026-02-30", now, &why).err() == EINVAL);
  CHECK(why == "expiry \"2026-02-30\": no such date or time");
  CHECK(parse_expiry("2026-12-01T00:00:00", now, &why).err() == EINVAL);
  CHECK(why.find("needs a zone") != std::string::npos);
  CHECK(parse_expiry("2026-12-01T25:00:00Z", now).err() == EINVAL);
  CHECK(parse_expiry("26-12-01", now).err() == EINVAL);
  CHECK(parse_expiry("tomorrow", now).err() == EINVAL);
  CHECK(parse_expiry("2200-01-01", now, &why).err() == EINVAL);
  CHECK(parse_expiry("2026-12-01T00:00:00+24:00", now).err() == EINVAL);
}

TEST_CASE("parse_expiry: an empty value is refused (removexattr clears an expiry)") {
  auto now = at(kNow);
  std::string why;
  CHECK(parse_expiry("", now, &why).err() == EINVAL);
  CHECK(why.find("setfattr -x user.hoody.expires") != std::string::npos);
  CHECK(parse_expiry("\n", now).err() == EINVAL);
  CHECK(parse_expiry(" ", now).err() == EINVAL);
}

TEST_CASE("parse_expiry: RFC 3339 fractions, lowercase t and z, numeric offsets") {
  auto now = at(kNow);
  CHECK(**parse_expiry("2027-01-01T00:00:00.5Z", now) == at(1798761600) + milliseconds(500));
  CHECK(**parse_expiry("2027-01-01T00:00:00.123456789Z", now) ==
        at(1798761600) + nanoseconds(123456789));
  // Beyond nanoseconds the digits are dropped.
  CHECK(**parse_expiry("2027-01-01T00:00:00.1234567891234Z", now) ==
        at(1798761600) + nanoseconds(123456789));
  CHECK(**parse_expiry("2027-01-01t00:00:00z", now) == at(1798761600));
  CHECK(**parse_expiry("2027-01-01t02:00:00.25+02:00", now) == at(1798761600) + milliseconds(250));
  CHECK(**parse_expiry("2026-12-31T23:00:00-01:00", now) == at(1798761600));
  CHECK(parse_expiry("2027-01-01T00:00:00.Z", now).err() == EINVAL);
  CHECK(parse_expiry("2027-01-01T00:00:00.5", now).err() == EINVAL);
  CHECK(parse_expiry("2027-01-01X00:00:00Z", now).err() == EINVAL);
  CHECK(parse_expiry("2027-01-01T00:00:00+0200", now).err() == EINVAL);
}

TEST_CASE("parse_expiry: times the store cannot hold are EINVAL, never wrapped") {
  auto now = at(kNow);
  std::string why;
  // Nanoseconds in an int64 end at 2262-04-11T23:47:16Z; these used to wrap to 1816 and 1829.
  for (const char* t : {"9999-12-31T23:59:59Z", "2999-01-01", "2262-04-12", "2263-01-01T00:00:00Z"}) {
    CAPTURE(t);
    CHECK(parse_expiry(t, now, &why).err() == EINVAL);
    CHECK(why.find("out of range") != std::string::npos);
    CHECK(why.find(t) != std::string::npos);  // the message names the bad value
  }
  // Before 1970: used to be accepted as 1753.
  for (const char* t : {"0000-01-01", "1969-12-31T23:59:59Z", "1970-01-01T00:30:00+01:00"}) {
    CAPTURE(t);
    CHECK(parse_expiry(t, now, &why).err() == EINVAL);
    CHECK(why.find("out of range") != std::string::npos);
  }
  CHECK(**parse_expiry("1970-01-01T00:00:00Z", now) == at(0));
  // Within the range but more than 100 years ahead: refused as before.
  CHECK(parse_expiry("2200-01-01", now, &why).err() == EINVAL);
  CHECK(why.find("100 years") != std::string::npos);
  // Relative: no overflow, however large.
  for (const char* t : {"+99999999999d", "+99999999999w", "+9223372036854775807s",
                        "+18446744073709551615s", "+99999999999999999999999d"}) {
    CAPTURE(t);
    CHECK(parse_expiry(t, now).err() == EINVAL);
  }
  // Relative from a `now` near the end of the range: the sum is checked.
  auto late = TimePoint(Clock::duration::max() - hours(1));
  CHECK(parse_expiry("+2h", late, &why).err() == EINVAL);
  CHECK(why.find("out of range") != std::string::npos);
  CHECK(parse_expiry("+1m", late).ok());
}

TEST_CASE("time_from_unix and time_after: range-checked") {
  CHECK(*time_from_unix(0) == at(0));
  CHECK(*time_from_unix(kNow, 5) == at(kNow) + nanoseconds(5));
  CHECK(time_from_unix(-1).err() == EINVAL);
  CHECK(time_from_unix(kMaxUnixSeconds).ok());
  CHECK(time_from_unix(kMaxUnixSeconds + 1).err() == EINVAL);
  CHECK(time_from_unix(253402300799).err() == EINVAL);  // 9999-12-31T23:59:59Z
  CHECK(time_from_unix(kMaxUnixSeconds, 999999999).err() == EINVAL);
  CHECK(format_utc(*time_from_unix(kMaxUnixSeconds)) == "2262-04-11T23:47:16Z");
  CHECK(*time_after(at(kNow), hours(1)) == at(kNow) + hours(1));
  CHECK(time_after(at(kNow), seconds(std::numeric_limits<int64_t>::max())).err() == EINVAL);
  CHECK(time_after(at(kNow), seconds(-kNow - 1)).err() == EINVAL);
}
