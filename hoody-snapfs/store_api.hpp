// What the daemon needs from the snapshot store over SOURCE/.snapshots.
//
// The store proper (hoody::snapfs::SnapshotStore in store/, branch btrfs) does
// the work: index, journal, btrfs calls.  The daemon speaks to it only through
// this interface, so that the FUSE layer is written and tested once; an
// adapter maps the store's own types onto it.  Every call may block on btrfs
// (a snapshot flushes dirty data): callers never hold a daemon lock across one.
// Errors are errnos the daemon replies with as they are (EEXIST, ENOENT,
// EBUSY, EINVAL, ...).  Implementations are thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "hoody/result.hpp"

namespace hoody::snapfs {

struct SnapshotInfo {
  std::string name;
  std::string uuid;                 // also the directory SOURCE/.snapshots/<uuid>
  int64_t created = 0;              // unix seconds
  uint32_t creator = 0;             // uid
  std::optional<int64_t> expires;   // unix seconds; none: kept until deleted
  std::string description;
  std::string type = "btrfs";       // the filesystem the snapshot lives on
  std::vector<std::string> subvolumes;  // scope subvolumes it holds, sorted
};

class StoreApi {
public:
  virtual ~StoreApi() = default;

  // A read-only snapshot of every scope subvolume under `name`; EEXIST when
  // the name is taken (also by a create still running).
  virtual Result<SnapshotInfo> create(const std::string& name, uint32_t creator,
                                      std::optional<int64_t> expires,
                                      const std::string& description) = 0;
  virtual Status remove(const std::string& name) = 0;
  // EEXIST when `to` exists; renaming to the same name succeeds.
  virtual Status rename(const std::string& from, const std::string& to) = 0;
  virtual Result<SnapshotInfo> get(const std::string& name) = 0;
  virtual Result<std::vector<SnapshotInfo>> list() = 0;  // sorted by name
  virtual Status set_expires(const std::string& name, std::optional<int64_t> expires) = 0;
  virtual Status set_description(const std::string& name, const std::string& text) = 0;
  // Removes every snapshot whose expiry is at or before `now`; their names.
  virtual Result<std::vector<std::string>> prune_expired(int64_t now) = 0;
  // Replaces the live scope subvolumes with writable copies of `name`, after
  // a safety snapshot of the live state; returns the safety snapshot's name.
  virtual Result<std::string> restore(const std::string& name, uint32_t uid) = 0;
  // The scope subvolumes of the live state (names directly inside SOURCE).
  virtual Result<std::vector<std::string>> live_subvolumes() = 0;
};

}  // namespace hoody::snapfs
