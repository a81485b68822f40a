#include "share/lifecycle.hpp"

#include <cerrno>

namespace hoody::sharefs {

std::string_view to_string(State s) {
  switch (s) {
    case State::offered: return "offered";
    case State::accepted: return "accepted";
    case State::rejected: return "rejected";
    case State::revoked: return "revoked";
    case State::left: return "left";
  }
  return "?";
}

std::string_view to_string(Action a) {
  switch (a) {
    case Action::accept: return "accept";
    case Action::reject: return "reject";
    case Action::leave: return "leave";
    case Action::revoke: return "revoke";
  }
  return "?";
}

std::string_view to_string(Mode m) { return m == Mode::ro ? "ro" : "rw"; }

std::optional<State> parse_state(std::string_view s) {
  for (State st : {State::offered, State::accepted, State::rejected, State::revoked, State::left})
    if (to_string(st) == s) return st;
  return std::nullopt;
}

std::optional<Mode> parse_mode(std::string_view s) {
  if (s == "ro") return Mode::ro;
  if (s == "rw") return Mode::rw;
  return std::nullopt;
}

namespace {
Transition to(State s) { return {s, 0, {}}; }
Transition no(int err, std::string why) { return {State::offered, err, std::move(why)}; }
}  // namespace

Transition transition(State from, Action action, Role who) {
  if (action == Action::revoke) {
    if (who != Role::owner) return no(EPERM, "not yours to revoke");
    switch (from) {
      case State::offered:
      case State::accepted: return to(State::revoked);
      // The receiver is gone already; the receipt keeps what it said.
      case State::rejected:
      case State::left: return to(from);
      case State::revoked: return no(EALREADY, "it is revoked already");
    }
  }
  if (who != Role::receiver)
    return no(EPERM, who == Role::owner ? "the owner cannot " + std::string(to_string(action)) +
                                              " its own share"
                                        : "it was not offered to you");
  if (from == State::revoked) return no(ESTALE, "it was revoked by its owner");
  switch (action) {
    case Action::accept:
      if (from == State::offered) return to(State::accepted);
      if (from == State::accepted) return no(EALREADY, "it is accepted already");
      if (from == State::rejected) return no(EINVAL, "it was rejected; ask the owner to offer it again");
      return no(EINVAL, "it was left; ask the owner to offer it again");
    case Action::reject:
      if (from == State::offered) return to(State::rejected);
      if (from == State::rejected) return no(EALREADY, "it is rejected already");
      if (from == State::accepted) return no(EINVAL, "it is accepted; leave it instead");
      return no(EINVAL, "it was left already");
    case Action::leave:
      if (from == State::accepted) return to(State::left);
      if (from == State::left) return no(EALREADY, "it was left already");
      if (from == State::offered) return no(EINVAL, "it is not accepted; reject it instead");
      return no(EINVAL, "it was rejected already");
    case Action::revoke: break;
  }
  return no(EINVAL, "unknown action");
}

}  // namespace hoody::sharefs
