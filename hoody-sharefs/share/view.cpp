#include "share/view.hpp"

#include <unordered_map>

namespace hoody::sharefs::view {

uint64_t offer_node(int64_t share_id) { return kFirstOffer + static_cast<uint64_t>(share_id); }

std::optional<int64_t> offer_of(uint64_t ino) {
  if (ino < kFirstOffer || (ino & kVirtualBit) == 0) return std::nullopt;
  return static_cast<int64_t>(ino - kFirstOffer);
}

Plan plan(const std::vector<Served>& served, const std::vector<Received>& now) {
  Plan p;
  // Shares are told apart by id: a name revoked and offered again is another share.
  std::unordered_map<int64_t, const Received*> accepted;
  for (const auto& r : now)
    if (r.state == State::accepted) accepted.emplace(r.share_id, &r);
  std::unordered_map<int64_t, const Served*> have;
  for (const auto& s : served) {
    have.emplace(s.share_id, &s);
    auto it = accepted.find(s.share_id);
    if (it == accepted.end())
      p.remove.push_back(s);
    else if (it->second->mode != s.mode)
      p.mode.push_back(*it->second);
  }
  for (const auto& r : now)
    if (r.state == State::accepted && !have.count(r.share_id)) p.add.push_back(r);
  return p;
}

}  // namespace hoody::sharefs::view
