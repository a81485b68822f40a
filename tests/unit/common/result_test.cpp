#include <doctest/doctest.h>

#include "hoody/result.hpp"

using hoody::Errno;
using hoody::fail;
using hoody::Result;
using hoody::Status;

namespace {
Result<int> half(int x) {
  if (x % 2) return fail(EINVAL);
  return x / 2;
}
Result<int> quarter(int x) {
  HOODY_TRY(h, half(x));
  HOODY_TRY(q, half(h));
  return q;
}
Status check_even(int x) {
  HOODY_CHECK(half(x));
  return {};
}
}  // namespace

TEST_CASE("Result holds a value or a positive errno") {
  Result<int> ok = 42;
  CHECK(ok.ok());
  CHECK(*ok == 42);
  CHECK(ok.err() == 0);

  Result<int> bad = fail(ENOENT);
  CHECK_FALSE(bad.ok());
  CHECK(bad.error() == Errno(ENOENT));
  CHECK(bad.err() == ENOENT);
  CHECK(bad.value_or(7) == 7);
  CHECK(Errno(-EPERM).value() == EPERM);
}

TEST_CASE("HOODY_TRY propagates the first failure") {
  CHECK(*quarter(8) == 2);
  CHECK(quarter(6).err() == EINVAL);
  CHECK(quarter(3).err() == EINVAL);
  CHECK(check_even(4).ok());
  CHECK(check_even(5).err() == EINVAL);
}

TEST_CASE("Status default is success") {
  Status s;
  CHECK(s.ok());
  Status f = fail(EIO);
  CHECK(f.err() == EIO);
  CHECK(Errno(EIO).message() == std::string(strerror(EIO)));
}
