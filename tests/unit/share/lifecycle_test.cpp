// The share lifecycle as a pure state machine: one case per transition and
// one per refusal.
#include <doctest/doctest.h>

#include <cerrno>

#include "share/lifecycle.hpp"

using namespace hoody::sharefs;

namespace {
void allowed(State from, Action a, Role who, State to) {
  auto t = transition(from, a, who);
  INFO(to_string(from), " --", to_string(a), "-> ", to_string(to));
  CHECK(t.ok());
  CHECK(t.err == 0);
  CHECK(t.to == to);
}
void refused(State from, Action a, Role who, int err, const char* reason_part) {
  auto t = transition(from, a, who);
  INFO(to_string(from), " --", to_string(a), "-> refused: ", t.reason);
  CHECK_FALSE(t.ok());
  CHECK(t.err == err);
  CHECK(t.reason.find(reason_part) != std::string::npos);
}
}  // namespace

TEST_CASE("transition: offered -> accepted by the receiver") {
  allowed(State::offered, Action::accept, Role::receiver, State::accepted);
}
TEST_CASE("transition: offered -> rejected by the receiver") {
  allowed(State::offered, Action::reject, Role::receiver, State::rejected);
}
TEST_CASE("transition: accepted -> left by the receiver") {
  allowed(State::accepted, Action::leave, Role::receiver, State::left);
}
TEST_CASE("transition: offered and accepted -> revoked by the owner") {
  allowed(State::offered, Action::revoke, Role::owner, State::revoked);
  allowed(State::accepted, Action::revoke, Role::owner, State::revoked);
}
TEST_CASE("transition: revoke keeps what a gone receiver said (rejected, left)") {
  allowed(State::rejected, Action::revoke, Role::owner, State::rejected);
  allowed(State::left, Action::revoke, Role::owner, State::left);
}

TEST_CASE("refusal: revoke by a non-owner is EPERM, not yours to revoke") {
  for (State s : {State::offered, State::accepted, State::rejected, State::left, State::revoked}) {
    refused(s, Action::revoke, Role::receiver, EPERM, "not yours to revoke");
    refused(s, Action::revoke, Role::other, EPERM, "not yours to revoke");
  }
}
TEST_CASE("refusal: revoke of a revoked share is EALREADY") {
  refused(State::revoked, Action::revoke, Role::owner, EALREADY, "revoked already");
}
TEST_CASE("refusal: accept, reject or leave of a revoked share is ESTALE") {
  refused(State::revoked, Action::accept, Role::receiver, ESTALE, "revoked by its owner");
  refused(State::revoked, Action::reject, Role::receiver, ESTALE, "revoked by its owner");
  refused(State::revoked, Action::leave, Role::receiver, ESTALE, "revoked by its owner");
}
TEST_CASE("refusal: the owner cannot accept, reject or leave its own share") {
  refused(State::offered, Action::accept, Role::owner, EPERM, "its own share");
  refused(State::offered, Action::reject, Role::owner, EPERM, "its own share");
  refused(State::accepted, Action::leave, Role::owner, EPERM, "its own share");
}
TEST_CASE("refusal: a container outside the audience cannot accept, reject or leave") {
  refused(State::offered, Action::accept, Role::other, EPERM, "not offered to you");
  refused(State::offered, Action::reject, Role::other, EPERM, "not offered to you");
  refused(State::accepted, Action::leave, Role::other, EPERM, "not offered to you");
}
TEST_CASE("refusal: accept twice is EALREADY") {
  refused(State::accepted, Action::accept, Role::receiver, EALREADY, "accepted already");
}
TEST_CASE("refusal: accept after reject or leave is EINVAL, offer again") {
  refused(State::rejected, Action::accept, Role::receiver, EINVAL, "offer it again");
  refused(State::left, Action::accept, Role::receiver, EINVAL, "offer it again");
}
TEST_CASE("refusal: reject twice, reject an accepted share, reject after leave") {
  refused(State::rejected, Action::reject, Role::receiver, EALREADY, "rejected already");
  refused(State::accepted, Action::reject, Role::receiver, EINVAL, "leave it instead");
  refused(State::left, Action::reject, Role::receiver, EINVAL, "left already");
}
TEST_CASE("refusal: leave twice, leave a pending share, leave after reject") {
  refused(State::left, Action::leave, Role::receiver, EALREADY, "left already");
  refused(State::offered, Action::leave, Role::receiver, EINVAL, "reject it instead");
  refused(State::rejected, Action::leave, Role::receiver, EINVAL, "rejected already");
}
TEST_CASE("visible: a receiver sees offered and accepted shares only") {
  CHECK(visible(State::offered));
  CHECK(visible(State::accepted));
  CHECK_FALSE(visible(State::rejected));
  CHECK_FALSE(visible(State::revoked));
  CHECK_FALSE(visible(State::left));
}
TEST_CASE("names of states and modes round-trip") {
  for (State s : {State::offered, State::accepted, State::rejected, State::revoked, State::left})
    CHECK(parse_state(to_string(s)) == s);
  CHECK(parse_mode("ro") == Mode::ro);
  CHECK(parse_mode("rw") == Mode::rw);
  CHECK_FALSE(parse_mode("wo"));
  CHECK_FALSE(parse_state("pending"));
}
