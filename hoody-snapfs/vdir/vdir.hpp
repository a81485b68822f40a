// The virtual namespace of hoody-snapfs, pure (no FUSE headers): node ids of
// the control files, the diff nodes, the contents of the control files, the
// expiry syntax and the access policy.  Unit-tested without a mount.
//
//   MOUNTPOINT/                   the snapshots (names from the store)
//   MOUNTPOINT/.hoody/            control directory (names beginning with '.' are reserved)
//             restore             write a snapshot name to restore it
//             snapshots.json      every snapshot with its metadata
//             log                 the audit log, one JSON object a line (allowed users only)
//             schedule            the schedule: read it, or write "off" or a JSON object
//             diff/A..B           what changed from A to B (B may be @live)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hoody/result.hpp"
#include "../snapshot.hpp"  // Snapshot, AuditEntry
#include "../snapshot_name.hpp"  // kLive, check_snapshot_name

namespace hoody::snapfs::vdir {

// The core's virtual-node bit (pt::kVirtualBit: this folder includes no FUSE
// header; fs.cpp asserts the two are one): the core routes every op on these
// ids to the daemon's v*() hooks.
inline constexpr uint64_t kVirtualBit = 1ull << 63;
inline constexpr uint64_t kCtlDir = kVirtualBit | 1;
inline constexpr uint64_t kRestore = kVirtualBit | 2;
inline constexpr uint64_t kSnapshotsJson = kVirtualBit | 3;
inline constexpr uint64_t kLog = kVirtualBit | 4;
inline constexpr uint64_t kDiffDir = kVirtualBit | 5;
inline constexpr uint64_t kSchedule = kVirtualBit | 6;
inline constexpr uint64_t kFirstDiffId = kVirtualBit | 0x1000;

inline constexpr std::string_view kCtlName = ".hoody";

inline bool is_virtual(uint64_t ino) { return (ino & kVirtualBit) != 0; }
inline bool is_diff_node(uint64_t ino) { return is_virtual(ino) && ino >= kFirstDiffId; }

struct Entry {
  std::string name;
  uint64_t ino = 0;
  mode_t mode = 0;  // S_IFDIR|0555, S_IFREG|0444, ...
};

// The fixed node `name` in the fixed directory `dir` (0: none).
uint64_t fixed_child(uint64_t dir, std::string_view name);
// The fixed entries of a fixed directory (diff/ has none: its files are made by lookup).
std::vector<Entry> fixed_entries(uint64_t dir);
// Mode of a fixed or diff node (0: not a node).
mode_t node_mode(uint64_t ino);

// "A..B": the two snapshot names of a diff node.  The split is the first
// ".." that leaves a valid name on each side (B may be @live).
struct DiffSpec {
  std::string from, to;
};
std::optional<DiffSpec> parse_diff_name(std::string_view name);

// Diff nodes: made by lookup, counted like inodes, gone at the last forget.
class DiffTable {
public:
  // The id of `name`, one more lookup counted.
  uint64_t lookup(const std::string& name);
  // Drop n lookups; the node disappears at zero.
  void forget(uint64_t id, uint64_t n);
  std::optional<std::string> name_of(uint64_t id) const;
  size_t size() const;

private:
  // Guards everything below; a leaf lock (nothing is called under it).
  mutable std::mutex m_;
  uint64_t next_ = kFirstDiffId;
  std::unordered_map<std::string, uint64_t> ids_;
  std::unordered_map<uint64_t, std::pair<std::string, uint64_t>> nodes_;  // id -> name, nlookup
};

// ---- time -----------------------------------------------------------------
std::string format_rfc3339(int64_t unix_seconds);  // "2026-11-26T15:00:00Z"
std::string format_rfc3339(TimePoint t);          // the same, whole seconds rounded down
// (Expiries are parsed by the store: store/format.hpp parse_expiry.)

// ---- control file contents ---------------------------------------------------
// snapshots.json: a JSON array of every snapshot, oldest first (the one
// renderer of a snapshot's metadata as JSON).
std::string snapshots_json(const std::vector<Snapshot>& snaps);
// One line of .hoody/log: one JSON object and '\n' (the one renderer of an
// audit entry).  The result "EPERM: why" or "ok; detail" is shown as
// "result": "EPERM" and "reason": "why".
std::string audit_line(const AuditEntry& e);
// The result of an audit entry as the store keeps it (AuditEntry::result):
// "ok", "ok; <reason>", "<ENAME>" or "<ENAME>: <reason>".
std::string audit_result(int err, const std::string& reason);

// The snapshot name written to .hoody/restore ("NAME\n" from echo).
Result<std::string> parse_restore_request(std::string_view data, std::string* why);

// A line written to .hoody/restore: "NAME" or "NAME if-idle" (refuse, EBUSY,
// while a process uses the live state).
struct RestoreRequest {
  std::string name;
  bool if_idle = false;
};
Result<RestoreRequest> parse_restore_line(std::string_view data, std::string* why);

// ---- access -----------------------------------------------------------------
// Who may create, delete, rename, restore and set expiry: root, and the users
// and groups named in -o allow_users=alice:bob and allow_groups=ops:admin
// (':'-separated: a ',' would end the -o option).  Names or numeric ids.
struct AccessPolicy {
  std::vector<uint32_t> uids;
  std::vector<uint32_t> gids;
  bool allows(uint32_t uid, uint32_t gid, const std::vector<uint32_t>& groups) const;
};
// Names are resolved with getpwnam/getgrnam; an unknown one is an error naming it.
Result<AccessPolicy> parse_access(std::string_view users, std::string_view groups, std::string* why);

}  // namespace hoody::snapfs::vdir
