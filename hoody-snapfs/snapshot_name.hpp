// The one check of a snapshot name, for the store, the daemon, the control
// files and hoody-snap alike: the name rules of hoody/names.hpp, plus the one
// reserved name, kLive.
#pragma once

#include <string>
#include <string_view>

#include "hoody/names.hpp"
#include "hoody/result.hpp"

namespace hoody::snapfs {

// The live state, as the right side of a diff ("A..@live"); no snapshot can be named so.
inline constexpr std::string_view kLive = "@live";

// A new name (create, the target of a rename) may not contain ".."; the name of
// an existing snapshot (delete, restore, diff, clone, the source of a rename)
// may, so that a snapshot named before that rule is still reached.
enum class NameUse { new_name, existing };

// Ok, or EINVAL/ENAMETOOLONG with *reason `snapshot "<name>": <problem>`.
inline Status check_snapshot_name(std::string_view name, std::string* reason = nullptr,
                                  NameUse use = NameUse::new_name) {
  HOODY_CHECK(use == NameUse::new_name ? validate_snapshot_name(name, reason)
                                       : validate_existing_snapshot_name(name, reason));
  if (name == kLive) {
    if (reason) *reason = "snapshot " + quote_name(name) + ": name is reserved for the live state";
    return fail(EINVAL);
  }
  return {};
}

}  // namespace hoody::snapfs
