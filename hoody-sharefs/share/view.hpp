// What a container's hoody-sharefs shows, pure (no FUSE headers): the node
// ids of its virtual entries and the plan that takes the served shares to
// what the registry says now.  Unit-tested without a mount.
//
//   MOUNTPOINT/NAME/               an accepted share: a real root (the core's)
//   MOUNTPOINT/.pending/NAME/      an offer to this container (empty; mv it up to accept)
//   MOUNTPOINT/.hoody/shares.json  every share this container offers or receives
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "share/registry.hpp"

namespace hoody::sharefs::view {

// Virtual node ids have bit 63 set (the core's kVirtualBit).
inline constexpr uint64_t kVirtualBit = 1ull << 63;
inline constexpr uint64_t kPendingDir = kVirtualBit | 1;
inline constexpr uint64_t kCtlDir = kVirtualBit | 2;
inline constexpr uint64_t kSharesJson = kVirtualBit | 3;
// .pending/NAME: kFirstOffer + the share's id.
inline constexpr uint64_t kFirstOffer = kVirtualBit | (1ull << 32);

inline constexpr std::string_view kPendingName = ".pending";
inline constexpr std::string_view kCtlName = ".hoody";
inline constexpr std::string_view kJsonName = "shares.json";

uint64_t offer_node(int64_t share_id);
// The share id of an offer's node (nullopt for any other node).
std::optional<int64_t> offer_of(uint64_t ino);

// A share the daemon serves now.
struct Served {
  int64_t share_id = 0;
  std::string name;
  Mode mode = Mode::ro;
};

// From the served shares to the registry's list for this container
// (Registry::shares_for: offered and accepted).
struct Plan {
  std::vector<Served> remove;   // served, but no longer accepted (revoked, left, ...)
  std::vector<Received> add;    // accepted, not served yet
  std::vector<Received> mode;   // served, and its mode changed
  bool empty() const { return remove.empty() && add.empty() && mode.empty(); }
};
Plan plan(const std::vector<Served>& served, const std::vector<Received>& now);

}  // namespace hoody::sharefs::view
