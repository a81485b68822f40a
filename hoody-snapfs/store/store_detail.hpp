// Internals of SnapshotStore shared by its operation files (create.cpp,
// remove.cpp, restore.cpp, recover.cpp, diff.cpp): the store's directory
// names, time and uuid helpers, the index row mapping.  Not installed.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "snapshot_store.hpp"

namespace hoody::snapfs {

struct SnapshotStore::Journal {
  int64_t id = 0;
  std::string op, name, uuid;
  int step = 0;
  nlohmann::json data;
};

namespace detail {

inline constexpr const char* kStagingPrefix = ".staging-";
inline constexpr const char* kTrashPrefix = ".trash-";
inline constexpr const char* kRestorePrefix = ".restore-";
inline constexpr const char* kDiffPrefix = ".diff-";
inline constexpr const char* kLockFile = "lock";
inline constexpr const char* kSelect =
    "SELECT name, uuid, created, expires, creator, type, description, consistency, busy, nested "
    "FROM snapshots";

int64_t to_ns(TimePoint t);
TimePoint from_ns(int64_t ns);
std::optional<int64_t> to_ns(std::optional<TimePoint> t);
std::string random_uuid();
// "YYYYMMDDTHHMMSSZ"
std::string utc_stamp(TimePoint t);
// "ok", or "EEXIST: <reason>" for the audit log.
std::string result_text(Errno e, std::string_view reason);
Result<bool> exists(int dirfd, const std::string& name);
// Subvolume roots directly inside dirfd, skipping '.' names, sorted.
Result<std::vector<std::string>> subvolumes_in(int dirfd);
// Subvolumes nested in the scope subvolumes ("storage/docker/btrfs/...").
Result<std::vector<std::string>> nested_subvolumes(int source_fd,
                                                   const std::vector<std::string>& scope);
Snapshot row_to_snapshot(const sql::Stmt& s);
// Columns added after the first schema (consistency, busy, nested), for an
// index.db made before them.
Status migrate(sql::Db& db);
// JSON array text <-> names.
std::string to_json_text(const std::vector<std::string>& v);
std::vector<std::string> from_json_text(const std::string& t);
// "databases/app.db, databases/b.db"
std::string describe_busy(const std::vector<std::string>& busy);

}  // namespace detail
}  // namespace hoody::snapfs
