// The change signal of a share registry: every writer of POOL/shares.db bumps
// it after a committed change, and every running hoody-sharefs waits on it, so
// a change reaches each daemon at once without polling the database on every
// request.
//
// It is a small POSIX shared-memory object (Boost.Interprocess
// shared_memory_object + mapped_region, i.e. /dev/shm/hoody-shares-DEV-INO, one
// per pool, named after the pool directory's st_dev/st_ino so that two
// spellings of one pool meet) holding two lock-free atomics:
//   counter  64-bit, +1 per published change;
//   seq      32-bit futex word, +1 per published change after `counter`.
// A waiter reads seq, then counter; if counter moved it returns, else it sleeps
// in FUTEX_WAIT on seq (without FUTEX_PRIVATE_FLAG, so it works across
// processes on a shared mapping) with the remaining timeout.  A publish that
// lands between the two reads changed seq, so FUTEX_WAIT returns at once.
//
// Why no mutex and no interprocess condition: a process killed while holding
// an interprocess mutex leaves it locked for ever (Boost's interprocess_mutex
// is not robust), and robust pthread mutexes still need every waiter to handle
// EOWNERDEAD.  Here there is nothing to hold: a writer killed at any point
// leaves the counters either bumped (waiters wake) or not (waiters time out),
// and every wait is bounded by its timeout.  The object starts as zero pages,
// which is a valid state, so creating it needs no constructor race either.
//
// The object is created 0600 (root's, like the pool).  Anyone who can write it
// can only cause spurious wake-ups: a waiter rereads the registry, which is
// the truth.  The name uses the pool's st_dev/st_ino rather than a hash of
// its path, so no path spelling (symlinks, trailing slashes) splits a pool.
//
// Acknowledgements: a writer that must know its change is in force (a revoke,
// a restore of shared storage) waits until every running daemon has applied
// it.  Each daemon's watcher holds one slot of the object (claim_slot): the
// counter value it last applied (ack) and a heartbeat it renews at every look
// (at least every 200 ms).  wait_applied(counter) waits, on a second futex
// word, until every slot with a fresh heartbeat (renewed within kStale) has
// acknowledged `counter`, up to a bound, and names the daemons that had not.
// A daemon that was killed is let go of at once when it ran in the waiter's
// pid namespace (kill(pid, 0) says ESRCH), and otherwise once it has not
// beaten for kStale; a hanging one is waited for up to the writer's bound.
// Such slots are taken over by the next daemon that starts.  The heartbeat
// is CLOCK_MONOTONIC, which every pid namespace shares.
//
// The counter is a hint, not the truth: the registry's own generation (a row
// in shares.db, bumped in the same transaction as the change) is.  A daemon
// waits with a timeout of about a second and rereads the registry's
// generation on every wake-up, so a lost or recreated /dev/shm object (a
// reboot, someone deleting it) costs at most that timeout, never a change.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <sys/types.h>

#include "hoody/result.hpp"

namespace hoody::sharefs {

class ChangeSignal {
public:
  // The signal of the pool whose directory is `pool_fd`; creates it if missing.
  static Result<ChangeSignal> open_for_pool(int pool_fd);
  // The signal with this shm name (for tests).
  static Result<ChangeSignal> open(const std::string& shm_name);
  // Deletes the shm object (tests; running waiters keep their mapping).
  static void remove(const std::string& shm_name);
  static std::string name_for_pool(int pool_fd, Errno* err = nullptr);

  ChangeSignal(ChangeSignal&&) noexcept;
  ChangeSignal& operator=(ChangeSignal&&) noexcept;
  ~ChangeSignal();

  const std::string& name() const { return name_; }
  // The current counter.
  uint64_t current() const;
  // Bump the counter and wake every waiter; returns the new counter.
  uint64_t publish();
  // Returns the counter once it differs from `last_seen`, or when `timeout`
  // has passed (then the counter may still equal last_seen).
  uint64_t wait_for_change(uint64_t last_seen, std::chrono::milliseconds timeout) const;

  // A slot without a heartbeat for this long belongs to no running daemon.
  static constexpr std::chrono::milliseconds kStale{3000};
  // Claims a slot for this process's watcher (-1: every slot is taken by a
  // live daemon; then this daemon is never waited for).
  int claim_slot();
  // Gives the slot back (a daemon that stops).
  void release_slot(int slot);
  // The daemon in `slot` is alive (renews its heartbeat).
  void beat(int slot);
  // The daemon in `slot` has applied every change up to `counter` (and beats).
  void ack(int slot, uint64_t counter);
  // Waits until every live daemon has acknowledged `counter`, at most
  // `timeout`; returns the pids of those that had not (empty: all had).
  std::vector<pid_t> wait_applied(uint64_t counter, std::chrono::milliseconds timeout) const;

private:
  struct Impl;
  explicit ChangeSignal(std::unique_ptr<Impl> impl, std::string name);
  std::unique_ptr<Impl> impl_;
  std::string name_;
};

}  // namespace hoody::sharefs
