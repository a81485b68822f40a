// The lifecycle of a share as a pure state machine (no SQLite, no FUSE).
//
// A share has one state on the owner's side (offered, then revoked) and one
// state per receiver (a project-wide share reaches many containers, and each
// accepts, rejects or leaves on its own):
//
//   offered --accept--> accepted --leave--> left
//      |                    |
//      +---reject--> rejected
//   offered, accepted --revoke (owner)--> revoked
//
// rejected and left are final for that receiver (the owner offers again under
// a new name, or revokes and offers again); revoked is final for everyone.
// Every refusal carries an errno and a reason a person can act on.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "hoody/result.hpp"

namespace hoody::sharefs {

enum class State { offered, accepted, rejected, revoked, left };
enum class Action { accept, reject, leave, revoke };
// Who asks: the share's owner, one of its receivers, or anybody else.
enum class Role { owner, receiver, other };
enum class Mode { ro, rw };

std::string_view to_string(State s);
std::string_view to_string(Action a);
std::string_view to_string(Mode m);
std::optional<State> parse_state(std::string_view s);
std::optional<Mode> parse_mode(std::string_view s);

// A receiver sees a share (as .pending/NAME or NAME) in these states; the
// name is then taken for that receiver.
inline bool visible(State s) { return s == State::offered || s == State::accepted; }

struct Transition {
  State to = State::offered;
  int err = 0;         // 0: allowed; else the errno of the refusal
  std::string reason;  // for a refusal: "it was revoked by its owner"
  bool ok() const { return err == 0; }
};

// The per-receiver state after `who` does `action` on a receipt in state `from`.
// revoke is the owner's; accept, reject and leave are the receiver's.
Transition transition(State from, Action action, Role who);

}  // namespace hoody::sharefs
