// hoody::errno_name: the one errno-to-name helper (control channels, audit, logs).
#include "hoody/errno_name.hpp"

#include <doctest/doctest.h>

#include <cerrno>

using namespace hoody;

TEST_CASE("errno names round-trip") {
  CHECK(errno_name(EBUSY) == "EBUSY");
  CHECK(errno_name(-ENOENT) == "ENOENT");
  CHECK(errno_name(0) == "ok");
  CHECK(errno_name(4000) == "E4000");
  CHECK(errno_from_name("EBUSY") == EBUSY);
  CHECK(errno_from_name("ETIMEDOUT") == ETIMEDOUT);
  CHECK(errno_from_name("E77") == 77);
  CHECK(errno_from_name(errno_name(4000)) == 4000);
  CHECK(errno_from_name("nonsense") == EIO);
  for (int e : {EPERM, ENOENT, EEXIST, EROFS, ENOSPC, EDEADLK}) CHECK(errno_from_name(errno_name(e)) == e);
}
