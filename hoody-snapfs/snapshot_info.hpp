// A snapshot as the daemon shows it (xattrs, snapshots.json): the store's
// Snapshot (store/snapshot_store.hpp) in plain numbers, plus the scope
// subvolumes it holds.  Kept apart so that vdir/ needs no store headers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hoody::snapfs {

struct SnapshotInfo {
  std::string name;
  std::string uuid;                 // the directory SOURCE/.snapshots/<uuid>
  int64_t created = 0;              // unix seconds
  uint32_t creator = 0;             // uid
  std::optional<int64_t> expires;   // unix seconds; none: kept until deleted
  std::string description;
  std::string type;                 // as the store names it
  std::vector<std::string> subvolumes;  // filled where shown (snapshots.json)
  std::string consistency;          // "transaction" or "crash"
  std::vector<std::string> busy;    // databases not quiesced ("databases/app.db")
  std::vector<std::string> nested;  // nested subvolumes, not captured ("storage/docker")
};

}  // namespace hoody::snapfs
