#include "lock/range_table.hpp"

#include <algorithm>
#include <iterator>

namespace hoody::dbfs::lock {

const char* to_string(LockType t) {
  switch (t) {
    case LockType::read: return "R";
    case LockType::write: return "W";
    case LockType::unlock: return "U";
  }
  return "?";
}

RangeTable::Segs::const_iterator RangeTable::first_overlap(const Segs& segs, std::uint64_t start) {
  auto it = segs.upper_bound(start);
  if (it != segs.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end >= start) return prev;
  }
  return it;
}

std::optional<HeldLock> RangeTable::first_conflict(OwnerId owner, LockType type,
                                                   std::uint64_t start, std::uint64_t end) const {
  std::optional<HeldLock> best;
  for (const auto& [o, segs] : owners_) {
    if (o == owner) continue;
    for (auto it = first_overlap(segs, start); it != segs.end() && it->first <= end; ++it) {
      if (!conflicts(type, it->second.type)) continue;
      if (!best || it->first < best->start)
        best = HeldLock{it->second.type, it->first, it->second.end, it->second.pid, o};
      break;  // later segments of this owner start higher
    }
  }
  return best;
}

std::vector<OwnerId> RangeTable::conflicting_owners(OwnerId owner, LockType type,
                                                    std::uint64_t start, std::uint64_t end) const {
  std::vector<OwnerId> out;
  for (const auto& [o, segs] : owners_) {
    if (o == owner) continue;
    for (auto it = first_overlap(segs, start); it != segs.end() && it->first <= end; ++it) {
      if (conflicts(type, it->second.type)) {
        out.push_back(o);
        break;
      }
    }
  }
  return out;
}

void RangeTable::set(OwnerId owner, LockType type, std::uint64_t start, std::uint64_t end,
                     std::uint32_t pid) {
  if (end < start) return;
  auto oit = owners_.find(owner);
  if (oit == owners_.end()) {
    if (type == LockType::unlock) return;
    oit = owners_.emplace(owner, Segs{}).first;
  }
  Segs& segs = oit->second;

  // Cut [start, end] out of the owner's segments, keeping the parts outside.
  auto it = segs.upper_bound(start);
  if (it != segs.begin() && std::prev(it)->second.end >= start) it = std::prev(it);
  while (it != segs.end() && it->first <= end) {
    const std::uint64_t s0 = it->first;
    const Seg s = it->second;
    it = segs.erase(it);
    if (s0 < start) segs.emplace(s0, Seg{start - 1, s.type, s.pid});
    if (s.end > end) segs.emplace(end + 1, Seg{s.end, s.type, s.pid});  // end < s.end: no overflow
  }

  if (type != LockType::unlock) {
    std::uint64_t new_start = start;
    std::uint64_t new_end = end;
    // Merge with an adjacent lower segment of the same type.
    auto next = segs.lower_bound(start);
    if (next != segs.begin()) {
      auto prev = std::prev(next);
      if (prev->second.type == type && prev->second.end + 1 == start) {
        new_start = prev->first;
        segs.erase(prev);
      }
    }
    // Merge with an adjacent upper segment of the same type.
    if (end != kToEof) {
      auto up = segs.find(end + 1);
      if (up != segs.end() && up->second.type == type) {
        new_end = up->second.end;
        segs.erase(up);
      }
    }
    segs.emplace(new_start, Seg{new_end, type, pid});
  }
  if (segs.empty()) owners_.erase(oit);
}

bool RangeTable::release_owner(OwnerId owner) { return owners_.erase(owner) > 0; }

bool RangeTable::holds_any(OwnerId owner) const { return owners_.count(owner) > 0; }

bool RangeTable::holds_in(OwnerId owner, std::uint64_t start, std::uint64_t end,
                          std::optional<LockType> type) const {
  auto oit = owners_.find(owner);
  if (oit == owners_.end()) return false;
  const Segs& segs = oit->second;
  for (auto it = first_overlap(segs, start); it != segs.end() && it->first <= end; ++it)
    if (!type || it->second.type == *type) return true;
  return false;
}

bool RangeTable::covers(OwnerId owner, std::uint64_t start, std::uint64_t end,
                        LockType type) const {
  auto oit = owners_.find(owner);
  if (oit == owners_.end()) return false;
  const Segs& segs = oit->second;
  std::uint64_t next = start;
  for (auto it = first_overlap(segs, start); it != segs.end() && it->first <= end; ++it) {
    if (it->first > next || it->second.type != type) return false;
    if (it->second.end >= end) return true;
    next = it->second.end + 1;
  }
  return false;
}

std::vector<HeldLock> RangeTable::locks_of(OwnerId owner) const {
  std::vector<HeldLock> out;
  auto oit = owners_.find(owner);
  if (oit == owners_.end()) return out;
  for (const auto& [s, seg] : oit->second) out.push_back({seg.type, s, seg.end, seg.pid, owner});
  return out;
}

std::vector<HeldLock> RangeTable::all() const {
  std::vector<HeldLock> out;
  for (OwnerId o : owners()) {
    auto l = locks_of(o);
    out.insert(out.end(), l.begin(), l.end());
  }
  return out;
}

std::vector<OwnerId> RangeTable::owners() const {
  std::vector<OwnerId> out;
  out.reserve(owners_.size());
  for (const auto& [o, segs] : owners_) out.push_back(o);
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace hoody::dbfs::lock
