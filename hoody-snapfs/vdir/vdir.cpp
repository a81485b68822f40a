#include "vdir.hpp"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <nlohmann/json.hpp>

#include "hoody/errno_name.hpp"
#include "hoody/names.hpp"

namespace hoody::snapfs::vdir {

uint64_t fixed_child(uint64_t dir, std::string_view name) {
  if (dir == kCtlDir) {
    if (name == "restore") return kRestore;
    if (name == "snapshots.json") return kSnapshotsJson;
    if (name == "log") return kLog;
    if (name == "diff") return kDiffDir;
    if (name == "schedule") return kSchedule;
  }
  return 0;
}

std::vector<Entry> fixed_entries(uint64_t dir) {
  if (dir == kCtlDir)
    return {{"diff", kDiffDir, node_mode(kDiffDir)},
            {"log", kLog, node_mode(kLog)},
            {"restore", kRestore, node_mode(kRestore)},
            {"schedule", kSchedule, node_mode(kSchedule)},
            {"snapshots.json", kSnapshotsJson, node_mode(kSnapshotsJson)}};
  return {};
}

mode_t node_mode(uint64_t ino) {
  switch (ino) {
    case kCtlDir:
    case kDiffDir: return S_IFDIR | 0555;
    case kRestore: return S_IFREG | 0222;
    // Anyone may read it and try to write it; the daemon decides (EPERM).
    case kSchedule: return S_IFREG | 0666;
    // For the users allowed to act only (open() checks; each of them is shown as its owner).
    case kLog: return S_IFREG | 0440;
    case kSnapshotsJson: return S_IFREG | 0444;
    default: return is_diff_node(ino) ? (S_IFREG | 0444) : 0;
  }
}

std::optional<DiffSpec> parse_diff_name(std::string_view name) {
  for (size_t pos = name.find(".."); pos != std::string_view::npos; pos = name.find("..", pos + 1)) {
    auto a = name.substr(0, pos);
    auto b = name.substr(pos + 2);
    if (!check_snapshot_name(a, nullptr, NameUse::existing)) continue;
    if (b != kLive && !check_snapshot_name(b, nullptr, NameUse::existing)) continue;
    return DiffSpec{std::string(a), std::string(b)};
  }
  return std::nullopt;
}

uint64_t DiffTable::lookup(const std::string& name) {
  std::lock_guard g(m_);
  auto it = ids_.find(name);
  uint64_t id;
  if (it != ids_.end()) {
    id = it->second;
  } else {
    id = next_++;
    ids_.emplace(name, id);
    nodes_.emplace(id, std::make_pair(name, 0));
  }
  ++nodes_[id].second;
  return id;
}

void DiffTable::forget(uint64_t id, uint64_t n) {
  std::lock_guard g(m_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return;
  auto& count = it->second.second;
  count = n >= count ? 0 : count - n;
  if (count == 0) {
    ids_.erase(it->second.first);
    nodes_.erase(it);
  }
}

std::optional<std::string> DiffTable::name_of(uint64_t id) const {
  std::lock_guard g(m_);
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return std::nullopt;
  return it->second.first;
}

size_t DiffTable::size() const {
  std::lock_guard g(m_);
  return nodes_.size();
}

// ---- time -------------------------------------------------------------------

std::string format_rfc3339(int64_t t) {
  time_t tt = static_cast<time_t>(t);
  struct tm tm {};
  ::gmtime_r(&tt, &tm);
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string format_rfc3339(TimePoint t) {
  return format_rfc3339(std::chrono::floor<std::chrono::seconds>(t).time_since_epoch().count());
}

// ---- control file contents -----------------------------------------------------

namespace {
nlohmann::ordered_json to_json(const Snapshot& s) {
  nlohmann::ordered_json j;
  j["name"] = s.name;
  j["uuid"] = s.uuid;
  j["created"] = format_rfc3339(s.created);
  j["creator"] = s.creator;
  j["type"] = s.type;
  j["expires"] = s.expires ? nlohmann::ordered_json(format_rfc3339(*s.expires)) : nlohmann::ordered_json(nullptr);
  j["description"] = s.description;
  j["subvolumes"] = s.subvolumes;
  j["consistency"] = s.consistency;
  if (!s.busy.empty()) j["busy"] = s.busy;
  if (!s.nested.empty()) j["nested_subvolumes"] = s.nested;
  return j;
}
// Invalid UTF-8 (a description is bytes) is replaced, never thrown.
std::string dump(const nlohmann::ordered_json& j, int indent) {
  return j.dump(indent, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}
}  // namespace

std::string snapshots_json(const std::vector<Snapshot>& snaps) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (auto& s : snaps) arr.push_back(to_json(s));
  return dump(arr, 2) + "\n";
}

std::string audit_line(const AuditEntry& e) {
  // The store's result is "ok", "ok; detail" or "EPERM: why".
  std::string result = e.result, reason;
  if (auto p = result.find(": "); result.rfind("ok", 0) != 0 && p != std::string::npos) {
    reason = result.substr(p + 2);
    result.resize(p);
  } else if (auto q = result.find("; "); q != std::string::npos) {
    reason = result.substr(q + 2);
    result.resize(q);
  }
  nlohmann::ordered_json j;
  j["time"] = format_rfc3339(e.time);
  j["uid"] = e.uid;
  j["pid"] = e.pid;
  j["action"] = e.action;
  j["name"] = e.name;
  j["result"] = result;
  if (!e.target.empty()) j["to"] = e.target;
  if (!reason.empty()) j["reason"] = reason;
  return dump(j, -1) + "\n";
}

std::string audit_result(int err, const std::string& reason) {
  std::string r = errno_name(err);
  if (!reason.empty()) r += (err ? ": " : "; ") + reason;
  return r;
}

Result<std::string> parse_restore_request(std::string_view data, std::string* why) {
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r' || data.back() == ' '))
    data.remove_suffix(1);
  std::string reason;
  // The live state is not a snapshot: EINVAL, as for mkdir @live.
  if (data == kLive) {
    if (why) *why = "restore: \"@live\" is the live state, not a snapshot; name a snapshot";
    return fail(EINVAL);
  }
  // An existing name: one with ".." taken before that rule can still be restored.
  if (!check_snapshot_name(data, &reason, NameUse::existing)) {
    if (why) *why = "restore: " + reason;
    return fail(EINVAL);
  }
  return std::string(data);
}

Result<RestoreRequest> parse_restore_line(std::string_view data, std::string* why) {
  while (!data.empty() && (data.back() == '\n' || data.back() == '\r' || data.back() == ' '))
    data.remove_suffix(1);
  RestoreRequest r;
  constexpr std::string_view kIfIdle = " if-idle";
  if (data.size() > kIfIdle.size() && data.substr(data.size() - kIfIdle.size()) == kIfIdle) {
    r.if_idle = true;
    data.remove_suffix(kIfIdle.size());
  }
  HOODY_TRY(name, parse_restore_request(data, why));
  r.name = std::move(name);
  return r;
}

// ---- access --------------------------------------------------------------------

bool AccessPolicy::allows(uint32_t uid, uint32_t gid, const std::vector<uint32_t>& groups) const {
  if (uid == 0) return true;
  if (std::find(uids.begin(), uids.end(), uid) != uids.end()) return true;
  if (std::find(gids.begin(), gids.end(), gid) != gids.end()) return true;
  for (auto g : groups)
    if (std::find(gids.begin(), gids.end(), g) != gids.end()) return true;
  return false;
}

namespace {
std::vector<std::string> split_list(std::string_view s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(':', start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool numeric(const std::string& s) {
  return !s.empty() && s.size() <= 10 &&
         std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}
}  // namespace

Result<AccessPolicy> parse_access(std::string_view users, std::string_view groups, std::string* why) {
  AccessPolicy p;
  for (auto& u : split_list(users)) {
    if (numeric(u)) {
      p.uids.push_back(static_cast<uint32_t>(std::stoul(u)));
      continue;
    }
    struct passwd pw, *res = nullptr;
    char buf[4096];
    if (::getpwnam_r(u.c_str(), &pw, buf, sizeof buf, &res) != 0 || !res) {
      if (why) *why = "allow_users: no user named \"" + u + "\" (separate names with ':')";
      return fail(EINVAL);
    }
    p.uids.push_back(res->pw_uid);
  }
  for (auto& g : split_list(groups)) {
    if (numeric(g)) {
      p.gids.push_back(static_cast<uint32_t>(std::stoul(g)));
      continue;
    }
    struct group gr, *res = nullptr;
    char buf[16384];
    if (::getgrnam_r(g.c_str(), &gr, buf, sizeof buf, &res) != 0 || !res) {
      if (why) *why = "allow_groups: no group named \"" + g + "\" (separate names with ':')";
      return fail(EINVAL);
    }
    p.gids.push_back(res->gr_gid);
  }
  return p;
}

}  // namespace hoody::snapfs::vdir
