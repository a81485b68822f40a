#include "lock/posix_flock.hpp"

#include <cerrno>
#include <cstdio>
#include <limits>

namespace hoody::dbfs::lock {

Result<LockType> lock_type_from_fcntl(short l_type) {
  switch (l_type) {
    case F_RDLCK: return LockType::read;
    case F_WRLCK: return LockType::write;
    case F_UNLCK: return LockType::unlock;
    default: return fail(EINVAL);
  }
}

short fcntl_from_lock_type(LockType t) {
  switch (t) {
    case LockType::read: return F_RDLCK;
    case LockType::write: return F_WRLCK;
    case LockType::unlock: break;
  }
  return F_UNLCK;
}

Result<ByteRange> range_from_flock(std::int64_t l_start, std::int64_t l_len) {
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();  // OFFSET_MAX
  if (l_start < 0) return fail(EINVAL);
  if (l_len == 0) return ByteRange{static_cast<std::uint64_t>(l_start), kToEof};
  if (l_len > 0) {
    if (l_len - 1 > kMax - l_start) return fail(EINVAL);
    const std::int64_t end = l_start + (l_len - 1);
    return ByteRange{static_cast<std::uint64_t>(l_start),
                     end == kMax ? kToEof : static_cast<std::uint64_t>(end)};
  }
  if (l_len == std::numeric_limits<std::int64_t>::min() || l_start + l_len < 0)
    return fail(EINVAL);
  return ByteRange{static_cast<std::uint64_t>(l_start + l_len),
                   static_cast<std::uint64_t>(l_start - 1)};
}

void to_flock(const std::optional<HeldLock>& conflict, struct flock& out) {
  if (!conflict) {
    out.l_type = F_UNLCK;
    return;
  }
  out.l_type = fcntl_from_lock_type(conflict->type);
  out.l_whence = SEEK_SET;
  out.l_start = static_cast<off_t>(conflict->start);
  out.l_len = conflict->end == kToEof ? 0
                                      : static_cast<off_t>(conflict->end - conflict->start + 1);
  out.l_pid = static_cast<pid_t>(conflict->pid);
}

}  // namespace hoody::dbfs::lock
