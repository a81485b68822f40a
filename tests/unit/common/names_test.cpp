#include <doctest/doctest.h>

#include <string>

#include "hoody/names.hpp"

using namespace hoody;

TEST_CASE("valid names") {
  for (const char* n : {"a", "pre-auth-refactor", "2026-11-26T14:50:00Z", "x.y_z:w@v+u", "A9",
                        "a.b", "a.", "a-"}) {
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

TEST_CASE("a new snapshot name may not contain '..'; an existing one may") {
  std::string why;
  for (const char* n : {"a..b", "a..@live", "v1..", "x...y", "a....b"}) {
    CAPTURE(n);
    CHECK(validate_snapshot_name(n, &why).err() == EINVAL);
    CHECK(why.find("may not contain \"..\"") != std::string::npos);
    // Names taken before the rule still reach their snapshot (delete, restore, rename from).
    CHECK(validate_existing_snapshot_name(n).ok());
    CHECK_FALSE(name_problem(n).has_value());
  }
  CHECK(validate_snapshot_name("v1.0").ok());
  CHECK(validate_existing_snapshot_name("x/y").err() == EINVAL);
  // Share names keep their rules.
  CHECK(validate_share_name("a..b").ok());
}

TEST_CASE("escape_control: nothing a terminal acts on gets through") {
  CHECK(escape_control("plain text, UTF-8 caf\xc3\xa9 ok") == "plain text, UTF-8 caf\xc3\xa9 ok");
  CHECK(escape_control("x\n\x1b[31mFAKE") == "x\\n\\x1b[31mFAKE");
  CHECK(escape_control("a\tb\rc") == "a\\tb\\rc");
  CHECK(escape_control(std::string_view("nul\0del\x7f", 8)) == "nul\\x00del\\x7f");
  CHECK(escape_control("back\\slash") == "back\\\\slash");
  CHECK(escape_control("back\\slash", false) == "back\\slash");
  // C1 controls: U+009B (CSI) in UTF-8, and as a lone byte.
  CHECK(escape_control("\xc2\x9b" "31m") == "\\u009b31m");
  CHECK(escape_control("\x9b" "31m") == "\\x9b31m");
  CHECK(escape_control("\xc2\xa0") == "\xc2\xa0");  // U+00A0 is printable
  // Invalid UTF-8: each byte escaped.
  CHECK(escape_control("\xff\xc3") == "\\xff\\xc3");
  CHECK(escape_control("\xe2\x82\xac") == "\xe2\x82\xac");  // the euro sign
  CHECK(escape_control("\xed\xa0\x80") == "\\xed\\xa0\\x80");  // a surrogate
  // No line breaks at all in the output.
  CHECK(escape_control("a\nb\rc\x0b\x0c\x85").find_first_of("\n\r\x0b\x0c") == std::string::npos);
}
