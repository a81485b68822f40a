#include <doctest/doctest.h>

#include <algorithm>
#include <array>

#include "lock/range_table.hpp"

using namespace hoody::dbfs::lock;

namespace {
constexpr auto R = LockType::read;
constexpr auto W = LockType::write;
constexpr auto U = LockType::unlock;

HeldLock L(LockType t, std::uint64_t s, std::uint64_t e, OwnerId o, std::uint32_t pid = 0) {
  return HeldLock{t, s, e, pid, o};
}
}  // namespace

TEST_CASE("a lock on the middle of an owner's range splits it") {
  RangeTable t;
  t.set(1, R, 0, 99, 10);
  t.set(1, W, 40, 59, 10);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 39, 1, 10), L(W, 40, 59, 1, 10), L(R, 60, 99, 1, 10)});
  t.set(1, U, 45, 49, 10);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 39, 1, 10), L(W, 40, 44, 1, 10), L(W, 50, 59, 1, 10),
                                     L(R, 60, 99, 1, 10)});
}

TEST_CASE("adjacent and overlapping ranges of one type merge") {
  RangeTable t;
  t.set(1, R, 0, 9, 1);
  t.set(1, R, 10, 19, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 19, 1, 1)});
  t.set(1, R, 15, 30, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 30, 1, 1)});
  t.set(1, R, 40, 50, 1);
  t.set(1, R, 31, 39, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 50, 1, 1)});
  // A different type next to it does not merge.
  t.set(1, W, 51, 60, 1);
  CHECK(t.locks_of(1).size() == 2);
}

TEST_CASE("upgrade and downgrade in place") {
  RangeTable t;
  t.set(1, R, 100, 100, 1);
  t.set(1, W, 100, 100, 1);
  CHECK(t.locks_of(1) == std::vector{L(W, 100, 100, 1, 1)});
  t.set(1, R, 100, 100, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 100, 100, 1, 1)});
  // Downgrade of a part of a write range.
  t.set(1, W, 0, 9, 1);
  t.set(1, R, 0, 4, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 4, 1, 1), L(W, 5, 9, 1, 1), L(R, 100, 100, 1, 1)});
}

TEST_CASE("to-EOF ranges and whole-file unlock") {
  RangeTable t;
  t.set(1, W, 10, kToEof, 1);
  t.set(1, R, 0, 9, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 9, 1, 1), L(W, 10, kToEof, 1, 1)});
  t.set(1, U, 20, kToEof, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 9, 1, 1), L(W, 10, 19, 1, 1)});
  t.set(1, W, 20, kToEof, 1);
  CHECK(t.locks_of(1) == std::vector{L(R, 0, 9, 1, 1), L(W, 10, kToEof, 1, 1)});
  t.set(1, U, 0, kToEof, 1);
  CHECK(t.empty());
}

TEST_CASE("conflicts ignore the caller's own locks and report the lowest start") {
  RangeTable t;
  t.set(1, R, 0, 99, 11);
  t.set(2, W, 200, 299, 22);
  t.set(3, W, 150, 160, 33);
  CHECK_FALSE(t.first_conflict(1, W, 0, 99));  // own lock
  CHECK_FALSE(t.first_conflict(4, R, 0, 99));  // read/read
  auto c = t.first_conflict(4, W, 50, kToEof);
  REQUIRE(c);
  CHECK(*c == L(R, 0, 99, 1, 11));
  c = t.first_conflict(4, R, 100, kToEof);
  REQUIRE(c);
  CHECK(*c == L(W, 150, 160, 3, 33));
  auto owners = t.conflicting_owners(4, W, 0, kToEof);
  std::sort(owners.begin(), owners.end());
  CHECK(owners == std::vector<OwnerId>{1, 2, 3});
  CHECK_FALSE(t.first_conflict(4, W, 100, 149));
}

TEST_CASE("release_owner drops only that owner's locks") {
  RangeTable t;
  t.set(1, R, 0, 9, 1);
  t.set(2, R, 0, 9, 2);
  CHECK(t.release_owner(1));
  CHECK_FALSE(t.release_owner(1));
  CHECK(t.owners() == std::vector<OwnerId>{2});
  CHECK(t.holds_any(2));
  CHECK(t.holds_in(2, 5, 5, R));
  CHECK_FALSE(t.holds_in(2, 5, 5, W));
  CHECK(t.covers(2, 0, 9, R));
  CHECK_FALSE(t.covers(2, 0, 10, R));
}

TEST_CASE("random operations match a byte-by-byte model") {
  // Bytes 0..63 plus one cell standing for everything from 64 to EOF.
  constexpr std::uint64_t kCells = 65;
  auto cell_end = [](std::uint64_t c) { return c == kCells - 1 ? kToEof : c; };
  std::uint32_t seed = 12345;
  auto rnd = [&](std::uint32_t n) {
    seed = seed * 1103515245u + 12345u;
    return (seed >> 8) % n;
  };
  RangeTable t;
  std::array<std::array<LockType, kCells>, 3> model{};
  for (auto& o : model) o.fill(U);
  for (int i = 0; i < 5000; ++i) {
    const OwnerId owner = rnd(3);
    const LockType type = std::array{R, W, U}[rnd(3)];
    const std::uint64_t s = rnd(64);
    const bool eof = rnd(8) == 0;
    const std::uint64_t e = eof ? kToEof : s + rnd(static_cast<std::uint32_t>(64 - s));
    t.set(owner, type, s, e, 7);
    for (std::uint64_t c = s; c <= (eof ? kCells - 1 : e); ++c) model[owner][c] = type;

    // Every owner's segments are the maximal runs of the model.
    for (OwnerId o = 0; o < 3; ++o) {
      std::vector<HeldLock> runs;
      for (std::uint64_t c = 0; c < kCells; ++c) {
        if (model[o][c] == U) continue;
        if (!runs.empty() && runs.back().type == model[o][c] && runs.back().end + 1 == c)
          runs.back().end = c;
        else
          runs.push_back(HeldLock{model[o][c], c, c, 7, o});
      }
      for (auto& r : runs) r.end = cell_end(r.end);
      REQUIRE(t.locks_of(o) == runs);
    }
    // first_conflict against brute force.
    const OwnerId q = rnd(4);
    const LockType qt = rnd(2) ? R : W;
    const std::uint64_t qs = rnd(64);
    const std::uint64_t qe = qs + rnd(static_cast<std::uint32_t>(64 - qs));
    std::optional<std::uint64_t> lowest;
    for (OwnerId o = 0; o < 3; ++o) {
      if (o == q) continue;
      for (std::uint64_t c = qs; c <= qe; ++c)
        if (conflicts(qt, model[o][c])) {
          // The conflicting segment's start.
          std::uint64_t st = c;
          while (st > 0 && model[o][st - 1] == model[o][c]) --st;
          if (!lowest || st < *lowest) lowest = st;
          break;
        }
    }
    auto c = t.first_conflict(q, qt, qs, qe);
    REQUIRE(c.has_value() == lowest.has_value());
    if (c) CHECK(c->start == *lowest);
  }
}
