// The share registry POOL/shares.db: containers and their project, shares,
// one receipt per (share, receiver), and an event log.  Many daemons and the
// hoody-share CLI use it at once; every change is one BEGIN IMMEDIATE
// transaction (retried on SQLITE_BUSY), bumps the registry's generation in
// the same transaction and, once committed, the pool's ChangeSignal.
//
// What is unique:
//   - a container id (and it is in at most one project);
//   - a live (not revoked) share's name per owner;
//   - the name a receiver sees: two shares a container sees (offered or
//     accepted) never have the same name.  An offer or a join that would make
//     such a clash is refused with EEXIST, and the reason names the clash.
//   - a project-wide share's name per project (else a container that joins
//     later would get two).
// A project-wide share reaches every container of the project except its
// owner: receipts are made for the members at offer time and for a container
// when it joins.
//
// A source path is checked when it is offered (lexically, then opened with
// openat2 RESOLVE_BENEATH from the owner's storage fd).  The tree can change
// afterwards, so whoever serves a share resolves it again the same way
// (open_storage + open_source) each time it opens its root; the string in
// the registry is never used as a path on its own.
//
// A Registry is one SQLite connection without SQLite's mutex: use it from one
// thread at a time (a daemon gives its watcher thread its own Registry).
//
// Every refusal is an errno plus a reason for a person in *why (raw text: a
// path in it may hold control characters; whoever prints it escapes it):
//   offer "x": path ../x is outside c1's storage
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hoody/result.hpp"
#include "hoody/sqlite.hpp"
#include "hoody/unique_fd.hpp"
#include "share/change_signal.hpp"
#include "share/lifecycle.hpp"

namespace hoody::sharefs {

inline constexpr int kSchemaVersion = 2;
inline constexpr const char* kRegistryFile = "shares.db";

struct Container {
  std::string id;
  std::string project;  // empty: in no project
  int64_t added = 0;
};

struct Receipt {
  std::string container;
  State state = State::offered;
  int64_t changed = 0;
};

struct Share {
  int64_t id = 0;
  std::string name;
  std::string owner;
  std::string source;      // relative to POOL/containers/<owner>/storage
  Mode mode = Mode::ro;
  std::string to_container;  // the audience: one container ...
  std::string to_project;    // ... or a whole project
  State state = State::offered;  // offered or revoked (the owner's side)
  int64_t created = 0;
  int64_t changed = 0;
  std::vector<Receipt> receipts;  // filled by list()
  // Across servers (schema 2).  Offered out: peer is the audience's server
  // and the one receipt is "C@SERVER".  Received in: owner is "C@SERVER",
  // peer that server, url the NFS export (source is empty).
  std::string peer;
  std::string url;
};

// A share as one receiver sees it (what hoody-sharefs of that container serves).
struct Received {
  int64_t share_id = 0;
  std::string name;
  std::string owner;
  std::string source;
  Mode mode = Mode::ro;
  State state = State::offered;  // this receiver's state
  int64_t changed = 0;
  std::string peer;  // a share from another server: that server ...
  std::string url;   // ... and its NFS export (served with libnfs)
};

struct Event {
  int64_t id = 0;
  int64_t time = 0;
  std::string actor;   // the container that acted ("" for the administrator)
  std::string action;  // offer, revoke, accept, reject, leave, container-add, container-remove
  std::string subject;  // OWNER:NAME (offer, revoke), NAME (accept, reject, leave), or a container id
  std::string detail;
  std::string result;  // "ok" or the refusal
};

struct Offer {
  std::string from;    // owner container
  std::string source;  // path inside the owner's storage
  std::string to_container;
  std::string to_project;
  Mode mode = Mode::ro;
  std::string name;
  std::string to_server = {};  // to_container is on that server (exported over NFS)
};

// A share offered by a container on another server (that server's
// `hoody-share offer --to C@SERVER` reports it here).
struct Inbound {
  std::string owner;   // "C@SERVER", as the owner's side calls itself
  std::string peer;    // the owner's server
  std::string url;     // nfs://SERVER/PATH?nfsport=N&mountport=M
  std::string to_container;  // here
  Mode mode = Mode::ro;
  std::string name;
};

// A server name as given after '@' (host name, IPv4 or IPv6 address).
Status check_server(const std::string& server, std::string* why);

// Source path rules, lexical part: relative, no "..", no NUL, valid UTF-8;
// "." (or empty) is the whole storage.  Returns the path normalised
// ("a//b/./c/" -> "a/b/c") or a refusal in *why.
Result<std::string> normalize_source(const std::string& path, const std::string& owner,
                                     std::string* why);
// Opens `path` (normalised) beneath `storage_fd` with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_MAGICLINKS) as an O_PATH directory.
// EXDEV: "path ../x is outside c1's storage"; ENOENT, ENOTDIR likewise named.
Result<UniqueFd> open_source(int storage_fd, const std::string& path, const std::string& owner,
                             std::string* why);

class Registry {
public:
  // Opens (creating, migrating) POOL/shares.db, or the file `db_path` when
  // given (the containers' storage is still under POOL).  `pool` must be a
  // directory.
  static Result<Registry> open(const std::string& pool, std::string* why = nullptr,
                               const std::string& db_path = "");

  Registry(Registry&&) noexcept = default;
  Registry& operator=(Registry&&) noexcept = default;

  const std::string& pool() const { return pool_; }

  // Membership.  add: creates C, or puts it into `project` if it is in none;
  // EEXIST if it is in another project or a join would make a name clash.
  Status add_container(const std::string& id, const std::string& project, std::string* why);
  // Revokes what C offers, leaves what it receives, forgets C.
  Status remove_container(const std::string& id, std::string* why);
  Result<std::vector<Container>> containers();
  Result<std::optional<Container>> container(const std::string& id);

  Result<Share> offer(const Offer& o, std::string* why);
  // `owner` empty: the one live share called `name` (EINVAL if several own one).
  // `owner` given and not the owner of `name`: EPERM "not yours to revoke".
  Status revoke(const std::string& owner, const std::string& name, std::string* why);
  // The owner changes a live share's mode (ro <-> rw) for every receiver;
  // `owner` as for revoke.  Running daemons apply it at once.
  Status set_mode(const std::string& owner, const std::string& name, Mode mode, std::string* why);
  // A share offered from another server to a container here (its receipt
  // is `offered`; accept, reject, leave and revoke then work as for a local
  // one, revoke and mode with owner = "C@SERVER").
  Result<Share> receive(const Inbound& in, std::string* why);
  // The live shares offered out to other servers that some receiver still
  // has (offered or accepted): one NFS export each.
  Result<std::vector<Share>> exports();
  // Container `receiver` on another server accepted, rejected or left
  // `owner`'s share `name` (its server reports it; the receipt is the
  // "C@SERVER" of the offer).
  Status remote_state(const std::string& owner, const std::string& receiver, const std::string& name,
                      Action action, std::string* why);
  Status accept(const std::string& container, const std::string& name, std::string* why);
  Status reject(const std::string& container, const std::string& name, std::string* why);
  Status leave(const std::string& container, const std::string& name, std::string* why);

  // What `container` receives: offered and accepted (all states with `all`).
  Result<std::vector<Received>> shares_for(const std::string& container, bool all = false);
  // What `owner` offers (live ones; all with `all`), with their receipts.
  Result<std::vector<Share>> offered_by(const std::string& owner, bool all = false);
  // Every share (live ones; all with `all`), with their receipts.
  Result<std::vector<Share>> list(bool all = false);
  // The last `limit` events, oldest first.
  Result<std::vector<Event>> events(int limit = 100);

  // The registry's generation: +1 per committed change (persistent).
  Result<uint64_t> generation();
  // The pool's change signal (wait on it, then reread generation()).
  ChangeSignal& signal() { return *signal_; }
  // Waits until every running hoody-sharefs of the pool has applied the
  // changes this object made (none made: returns at once), at most `timeout`;
  // the pids of the daemons that had not (see ChangeSignal::wait_applied).
  std::vector<pid_t> wait_applied(std::chrono::milliseconds timeout) const {
    return published_ ? signal_->wait_applied(published_, timeout) : std::vector<pid_t>{};
  }

  // The owner's storage directory POOL/containers/<owner>/storage (O_PATH).
  Result<UniqueFd> open_storage(const std::string& owner, std::string* why);

private:
  Registry() = default;
  template <typename F> Status write(const char* action, const std::string& actor,
                                     const std::string& subject, F&& body, std::string* why);
  Status log_event(const std::string& actor, const char* action, const std::string& subject,
                   const std::string& detail, const std::string& result);
  Status bump_generation();
  Result<std::vector<Receipt>> receipts_of(int64_t share_id);
  Result<std::vector<Share>> select_shares(const std::string& where, const std::string& arg,
                                           bool all);
  Status migrate();
  Status apply(const std::string& container, const std::string& name, Action action,
               std::string* why);
  // The live share `owner` means by `name` (owner empty: the one live share
  // of that name), inside a write transaction.  Refusals in *why: no such
  // share or container, several owners, or `not_owner` when another owns it.
  struct LiveShare {
    int64_t id = 0;
    std::string owner, mode;
  };
  Result<LiveShare> live_share(const std::string& owner, const std::string& name,
                               int not_owner_err, const std::string& not_owner, std::string* why);

  std::string pool_;
  UniqueFd pool_fd_;
  std::optional<ChangeSignal> signal_;
  uint64_t published_ = 0;  // the counter of this object's last change
  sql::Db db_;  // declared last: closed first
};

}  // namespace hoody::sharefs
