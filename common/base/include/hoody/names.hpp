// Names a user gives to snapshots and shares.
//
// A name is 1-255 bytes of [A-Za-z0-9._:@+-] and does not start with '.' or
// '-' (names beginning with '.' are reserved for the control directory; a
// leading '-' reads as an option to every shell tool).  A bad name gives
// EINVAL (ENAMETOOLONG above 255 bytes) and a reason a person can act on:
//   snapshot "x/y": name may not contain '/'
// A new snapshot name may not contain ".." either (validate_snapshot_name).
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

// `text` (a description, a name, a path: bytes from a user) made safe to print
// on a terminal or in a log line, so that it cannot forge lines or send escape
// sequences: C0 controls and DEL as \n, \t, \r or \xNN (ESC is \x1b), C1
// controls as \u0080..\u009f (UTF-8) or \xNN (a lone byte), every byte that is
// not part of valid UTF-8 as \xNN, and '\' as "\\" (unless escape_backslash is
// false, for text whose backslashes are escapes already).  Printable ASCII and
// other UTF-8 pass as they are.
std::string escape_control(std::string_view text, bool escape_backslash = true);

// Ok, or EINVAL/ENAMETOOLONG; *reason (if given) gets the full message,
// `<kind> "<name>": <problem>`.
Status validate_name(std::string_view kind, std::string_view name, std::string* reason = nullptr);

// A NEW snapshot name (mkdir, the target of a rename): the rules above, and no
// ".." anywhere in it, so that ".hoody/diff/A..B" always names two snapshots.
Status validate_snapshot_name(std::string_view name, std::string* reason = nullptr);
// The name of an EXISTING snapshot (delete, restore, diff, the source of a
// rename): the rules above only, so that a name with ".." taken before that rule
// still reaches its snapshot.
inline Status validate_existing_snapshot_name(std::string_view name,
                                              std::string* reason = nullptr) {
  return validate_name("snapshot", name, reason);
}
inline Status validate_share_name(std::string_view name, std::string* reason = nullptr) {
  return validate_name("share", name, reason);
}

}  // namespace hoody
