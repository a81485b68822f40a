// hoody-snap copy, sync and serve (issue 9 items 1, 2): a snapshot sent to
// another server over ssh (`hoody-snap send | ssh PEER hoody-snap serve
// receive ...`), incrementally against the newest snapshot both sides hold;
// a one-way sync that takes a `sync` snapshot, copies it and restores the
// peer's copy to it; and the peer's side, `serve`, the forced command of an
// authorized_keys line that allows only receive, list and sync-apply on its
// own pool.  See hoody-snap(1).
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace hoody::snapcli {

struct RemoteArgs {
  std::string name;           // copy: the snapshot
  std::string to;             // [user@]host[:container]
  std::string pool, container;  // the local container when not through --mount
  std::string ssh;            // the ssh command ($HOODY_SSH or "ssh")
  std::string every;          // sync --every
  unsigned keep = 3;          // sync snapshots kept on both sides
  std::string max_size;       // receive's bound, passed on
  std::vector<std::string> verb;  // serve: VERB ARGS (without a forced command)
  std::vector<std::string> allow;  // serve: containers the peer may name (all when empty)
  std::string remote_snap;    // the peer's hoody-snap (default "hoody-snap")
  bool progress = true;       // copy, sync: the progress line on stderr
};

struct RemoteCommands {
  CLI::App* copy = nullptr;
  CLI::App* sync = nullptr;
  CLI::App* serve = nullptr;
};

RemoteCommands add_remote_commands(CLI::App& app, RemoteArgs& args);

// Runs the parsed command; `mount` is the global --mount.  The exit code.
int run_copy(const RemoteArgs& args, const std::string& mount);
int run_sync(const RemoteArgs& args, const std::string& mount);
int run_serve(const RemoteArgs& args);

}  // namespace hoody::snapcli
