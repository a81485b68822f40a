// InterimStore: a minimal StoreApi over SOURCE/.snapshots, used until the
// snapshot store of branch btrfs (hoody-snapfs/store/, SnapshotStore: SQLite
// index.db, journal, crash recovery) is merged; then an adapter of that store
// replaces this file.  It has no journal: a crash in the middle of a create
// leaves a ".tmp-<uuid>" directory that the next start deletes, and the index
// (interim-index.json, replaced atomically) is the truth.
//
//   SOURCE/.snapshots/             0700
//     interim-index.json           name, uuid, created, creator, expires, description
//     <uuid>/<subvol>              read-only btrfs snapshots
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "hoody/unique_fd.hpp"
#include "../store_api.hpp"

namespace hoody::snapfs {

class InterimStore final : public StoreApi {
public:
  // Opens (creating .snapshots if needed) the store of `source`; a one-line
  // reason in *why when source is missing or not on BTRFS.
  static Result<std::unique_ptr<InterimStore>> open(const std::string& source, std::string* why);

  Result<SnapshotInfo> create(const std::string& name, uint32_t creator,
                              std::optional<int64_t> expires, const std::string& description) override;
  Status remove(const std::string& name) override;
  Status rename(const std::string& from, const std::string& to) override;
  Result<SnapshotInfo> get(const std::string& name) override;
  Result<std::vector<SnapshotInfo>> list() override;
  Status set_expires(const std::string& name, std::optional<int64_t> expires) override;
  Status set_description(const std::string& name, const std::string& text) override;
  Result<std::vector<std::string>> prune_expired(int64_t now) override;
  Result<std::string> restore(const std::string& name, uint32_t uid) override;
  Result<std::vector<std::string>> live_subvolumes() override;

  int source_fd() const { return source_.get(); }
  int store_fd() const { return store_.get(); }

private:
  InterimStore() = default;
  Status load();
  // Writes the index (a copy taken under m_, written and fsynced outside it).
  Status save();
  Status delete_tree(const std::string& uuid);

  UniqueFd source_;  // O_RDONLY|O_DIRECTORY of SOURCE
  UniqueFd store_;   // O_RDONLY|O_DIRECTORY of SOURCE/.snapshots

  // Orders index writes.  Lock order: save_m_ before m_.
  std::mutex save_m_;
  // Guards snaps_, pending_.  Never held across a btrfs call or any file I/O.
  std::mutex m_;
  std::map<std::string, SnapshotInfo> snaps_;
  std::set<std::string> pending_;  // names being created
  // Serialises restores (one at a time: EBUSY for the second).
  std::mutex restore_m_;
};

}  // namespace hoody::snapfs
