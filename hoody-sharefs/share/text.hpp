// Text that came from users (source paths may hold any byte but NUL), made
// safe for a line-oriented listing or a message: a newline in a path must not
// forge a row.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace hoody::sharefs {

// hoody::escape_control (names.hpp): controls as \n, \t, \r, \xNN or \u0080..,
// bytes that are not UTF-8 as \xNN, backslash as "\\"; the rest as is.
std::string escape(std::string_view s);
bool valid_utf8(std::string_view s);
// Seconds since the epoch as RFC 3339 UTC ("2026-12-01T19:25:25Z").
std::string rfc3339(int64_t t);

}  // namespace hoody::sharefs
