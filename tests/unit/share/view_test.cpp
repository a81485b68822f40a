// The daemon's view of a container's shares (share/view.hpp): node ids and
// the plan from what is served to what the registry says.
#include <doctest/doctest.h>

#include "share/view.hpp"

using namespace hoody::sharefs;

namespace {
Received rec(int64_t id, const std::string& name, State st, Mode m = Mode::ro) {
  Received r;
  r.share_id = id;
  r.name = name;
  r.owner = "c1";
  r.source = "data";
  r.mode = m;
  r.state = st;
  return r;
}
}  // namespace

TEST_CASE("view: offer nodes carry the share id, have bit 63, and never meet the fixed nodes") {
  CHECK(view::offer_of(view::offer_node(7)) == 7);
  CHECK((view::offer_node(0) & view::kVirtualBit) != 0);
  CHECK_FALSE(view::offer_of(view::kPendingDir));
  CHECK_FALSE(view::offer_of(view::kSharesJson));
  CHECK_FALSE(view::offer_of(42));
}

TEST_CASE("view: plan adds accepted shares, drops what is no longer accepted, follows mode changes") {
  std::vector<view::Served> served = {{1, "a", Mode::ro}, {2, "b", Mode::rw}, {3, "c", Mode::ro}};
  std::vector<Received> now = {
      rec(1, "a", State::accepted, Mode::rw),  // mode changed
      rec(2, "b", State::accepted, Mode::rw),  // unchanged
      // 3 gone (revoked, left): removed
      rec(4, "d", State::accepted),            // new
      rec(5, "e", State::offered),             // only an offer: not served
  };
  auto p = view::plan(served, now);
  REQUIRE(p.remove.size() == 1);
  CHECK(p.remove[0].share_id == 3);
  REQUIRE(p.add.size() == 1);
  CHECK(p.add[0].share_id == 4);
  REQUIRE(p.mode.size() == 1);
  CHECK(p.mode[0].share_id == 1);
  CHECK(p.mode[0].mode == Mode::rw);
  CHECK(view::plan({}, {}).empty());
}

TEST_CASE("view: a name revoked and offered again is another share: the old root goes, the new one comes") {
  std::vector<view::Served> served = {{1, "a", Mode::ro}};
  auto p = view::plan(served, {rec(9, "a", State::accepted)});
  REQUIRE(p.remove.size() == 1);
  CHECK(p.remove[0].share_id == 1);
  REQUIRE(p.add.size() == 1);
  CHECK(p.add[0].share_id == 9);
}
