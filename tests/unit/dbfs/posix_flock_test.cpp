#include <doctest/doctest.h>

#include <cerrno>
#include <limits>

#include "lock/posix_flock.hpp"

using namespace hoody::dbfs::lock;

TEST_CASE("struct flock ranges to inclusive ranges") {
  auto r = range_from_flock(0, 0);
  REQUIRE(r.ok());
  CHECK(r->start == 0);
  CHECK(r->end == kToEof);
  r = range_from_flock(0x40000002, 510);
  REQUIRE(r.ok());
  CHECK(r->end == 0x400001FF);
  r = range_from_flock(100, -10);
  REQUIRE(r.ok());
  CHECK(r->start == 90);
  CHECK(r->end == 99);
  constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
  r = range_from_flock(1, kMax);  // ends at OFFSET_MAX: to EOF
  REQUIRE(r.ok());
  CHECK(r->end == kToEof);
  CHECK(range_from_flock(2, kMax).err() == EINVAL);
  CHECK(range_from_flock(-1, 1).err() == EINVAL);
  CHECK(range_from_flock(5, -6).err() == EINVAL);
}

TEST_CASE("lock types and the F_GETLK answer") {
  CHECK(*lock_type_from_fcntl(F_RDLCK) == LockType::read);
  CHECK(*lock_type_from_fcntl(F_WRLCK) == LockType::write);
  CHECK(*lock_type_from_fcntl(F_UNLCK) == LockType::unlock);
  CHECK(lock_type_from_fcntl(42).err() == EINVAL);
  struct flock fl {};
  fl.l_type = F_WRLCK;
  to_flock(std::nullopt, fl);
  CHECK(fl.l_type == F_UNLCK);
  to_flock(HeldLock{LockType::read, 10, kToEof, 1234, 7}, fl);
  CHECK(fl.l_type == F_RDLCK);
  CHECK(fl.l_start == 10);
  CHECK(fl.l_len == 0);
  CHECK(fl.l_pid == 1234);
  to_flock(HeldLock{LockType::write, 10, 19, 1, 7}, fl);
  CHECK(fl.l_len == 10);
}
