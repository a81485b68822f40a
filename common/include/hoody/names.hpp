// Names a user gives to snapshots and shares.
//
// A name is 1-255 bytes of [A-Za-z0-9._:@+-] and does not start with '.' or
// '-' (names beginning with '.' are reserved for the control directory; a
// leading '-' reads as an option to every shell tool).  A bad name gives
// EINVAL (ENAMETOOLONG above 255 bytes) and a reason a person can act on:
//   snapshot "x/y": name may not contain '/'
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "hoody/result.hpp"

namespace hoody {

inline constexpr std::size_t kMaxNameBytes = 255;

// Why `name` is not a valid name ("name may not contain '/'"), or nullopt.
std::optional<std::string> name_problem(std::string_view name);

// `name` quoted for a message: printable ASCII as is, '"' and '\' escaped,
// anything else as \xNN; cut after 64 bytes with "...".
std::string quote_name(std::string_view name);

// Ok, or EINVAL/ENAMETOOLONG; *reason (if given) gets the full message,
// `<kind> "<name>": <problem>`.
Status validate_name(std::string_view kind, std::string_view name, std::string* reason = nullptr);

inline Status validate_snapshot_name(std::string_view name, std::string* reason = nullptr) {
  return validate_name("snapshot", name, reason);
}
inline Status validate_share_name(std::string_view name, std::string* reason = nullptr) {
  return validate_name("share", name, reason);
}

}  // namespace hoody
