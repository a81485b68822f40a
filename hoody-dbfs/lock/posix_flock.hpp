// Conversions between struct flock (as libfuse hands it to getlk/setlk) and the
// lock manager's types.  <fcntl.h> only, no FUSE headers.
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <optional>

#include "hoody/result.hpp"
#include "lock/range_table.hpp"

namespace hoody::dbfs::lock {

// F_RDLCK/F_WRLCK/F_UNLCK -> LockType; EINVAL for anything else.
Result<LockType> lock_type_from_fcntl(short l_type);
short fcntl_from_lock_type(LockType t);

struct ByteRange {
  std::uint64_t start;
  std::uint64_t end;  // inclusive; kToEof = to EOF
};
// l_start/l_len (libfuse gives SEEK_SET-relative values; l_len 0 = to EOF;
// a negative l_len covers [l_start + l_len, l_start - 1]) -> inclusive range.
// EINVAL for a negative start or an overflow.
Result<ByteRange> range_from_flock(std::int64_t l_start, std::int64_t l_len);

// The F_GETLK answer: the conflicting lock, or F_UNLCK with the rest untouched.
void to_flock(const std::optional<HeldLock>& conflict, struct flock& out);

}  // namespace hoody::dbfs::lock
