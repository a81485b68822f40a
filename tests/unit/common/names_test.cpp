#include <doctest/doctest.h>

#include <string>

#include "hoody/names.hpp"

using namespace hoody;

TEST_CASE("valid names") {
  for (const char* n : {"a", "pre-auth-refactor", "2026-11-26T14:50:00Z", "x.y_z:w@v+u", "A9",
                        "a..b", "a-"}) {
    CAPTURE(n);
    CHECK(validate_snapshot_name(n).ok());
    CHECK_FALSE(name_problem(n).has_value());
  }
  CHECK(validate_snapshot_name(std::string(255, 'a')).ok());
}

TEST_CASE("invalid names give EINVAL and a reason") {
  std::string why;
  CHECK(validate_snapshot_name("x/y", &why).err() == EINVAL);
  CHECK(why == "snapshot \"x/y\": name may not contain '/' (allowed: A-Z a-z 0-9 . _ : @ + -)");
  CHECK(validate_snapshot_name("", &why).err() == EINVAL);
  CHECK(why == "snapshot \"\": name may not be empty");
  CHECK(validate_snapshot_name(".hidden", &why).err() == EINVAL);
  CHECK(why.find("may not start with '.'") != std::string::npos);
  CHECK(validate_snapshot_name(".", &why).err() == EINVAL);
  CHECK(validate_snapshot_name("..", &why).err() == EINVAL);
  CHECK(why == "snapshot \"..\": name may not be '.' or '..'");
  CHECK(validate_snapshot_name("-rf", &why).err() == EINVAL);
  CHECK(why == "snapshot \"-rf\": name may not start with '-'");
  CHECK(validate_snapshot_name("a b", &why).err() == EINVAL);
  CHECK(why.find("a space") != std::string::npos);
  CHECK(validate_share_name("a\nb", &why).err() == EINVAL);
  CHECK(why.rfind("share \"a\\x0ab\": name may not contain a newline", 0) == 0);
  CHECK(validate_snapshot_name(std::string_view("a\0b", 3), &why).err() == EINVAL);
  CHECK(why.find("a NUL byte") != std::string::npos);
  CHECK(validate_snapshot_name("caf\xc3\xa9", &why).err() == EINVAL);
  CHECK(why.find("the byte 0xc3") != std::string::npos);
  for (const char* n : {"a*", "a?", "a\\b", "a\"", "a'", "a$", "a%", "a,b", "a;b", "a=b", "~a"}) {
    CAPTURE(n);
    CHECK(validate_snapshot_name(n).err() == EINVAL);
  }
}

TEST_CASE("too long names give ENAMETOOLONG") {
  std::string why;
  CHECK(validate_snapshot_name(std::string(256, 'a'), &why).err() == ENAMETOOLONG);
  CHECK(why.find("256 bytes, at most 255") != std::string::npos);
  // The quoted name is cut so that a log line stays short.
  CHECK(why.find("...\"") != std::string::npos);
}

TEST_CASE("reason is optional") {
  CHECK(validate_snapshot_name("x/y").err() == EINVAL);
  CHECK(quote_name("a\"b\\c") == "\"a\\\"b\\\\c\"");
}
