// RangeTable: the POSIX byte-range locks of one file, per owner.
//
// Exact fcntl(F_SETLK) semantics: [start, end] inclusive (end == kToEof means
// "to EOF", l_len == 0); a new lock replaces the owner's own locks on the range
// (split, upgrade, downgrade in place); adjacent or overlapping ranges of one
// owner and one type merge.  Locks of one owner never conflict with each other.
// Not thread-safe: the LockManager serializes access.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <unordered_map>
#include <vector>

namespace hoody::dbfs::lock {

using OwnerId = std::uint64_t;  // FUSE lock_owner, never a pid
inline constexpr std::uint64_t kToEof = UINT64_MAX;

enum class LockType : std::uint8_t { read, write, unlock };

const char* to_string(LockType t);

// Two lock types conflict when at least one is a write lock.
constexpr bool conflicts(LockType a, LockType b) {
  return a != LockType::unlock && b != LockType::unlock &&
         (a == LockType::write || b == LockType::write);
}

// A granted lock.
struct HeldLock {
  LockType type = LockType::unlock;
  std::uint64_t start = 0;
  std::uint64_t end = 0;  // inclusive; kToEof = to EOF
  std::uint32_t pid = 0;
  OwnerId owner = 0;
  friend bool operator==(const HeldLock&, const HeldLock&) = default;
};

class RangeTable {
public:
  // The conflicting lock of another owner with the lowest start, if any
  // (what F_GETLK reports; the caller's own locks are ignored).
  std::optional<HeldLock> first_conflict(OwnerId owner, LockType type, std::uint64_t start,
                                         std::uint64_t end) const;
  // Every other owner holding a lock that conflicts with the request.
  std::vector<OwnerId> conflicting_owners(OwnerId owner, LockType type, std::uint64_t start,
                                          std::uint64_t end) const;

  // Sets (read/write) or removes (unlock) the owner's locks on [start, end].
  // Does not check conflicts.
  void set(OwnerId owner, LockType type, std::uint64_t start, std::uint64_t end,
           std::uint32_t pid);
  // Drops every lock of the owner; true if it had any.
  bool release_owner(OwnerId owner);

  bool holds_any(OwnerId owner) const;
  // True if the owner holds a lock intersecting [start, end] (of `type`, if given).
  bool holds_in(OwnerId owner, std::uint64_t start, std::uint64_t end,
                std::optional<LockType> type = std::nullopt) const;
  // True if the owner holds a lock of `type` covering every byte of [start, end].
  bool covers(OwnerId owner, std::uint64_t start, std::uint64_t end, LockType type) const;
  std::vector<HeldLock> locks_of(OwnerId owner) const;  // sorted by start
  std::vector<HeldLock> all() const;                    // by owner, then start
  std::vector<OwnerId> owners() const;
  bool empty() const { return owners_.empty(); }

private:
  struct Seg {
    std::uint64_t end;
    LockType type;
    std::uint32_t pid;
  };
  using Segs = std::map<std::uint64_t, Seg>;  // start -> segment; never overlapping

  static Segs::const_iterator first_overlap(const Segs& segs, std::uint64_t start);

  std::unordered_map<OwnerId, Segs> owners_;
};

}  // namespace hoody::dbfs::lock
