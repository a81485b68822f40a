#include "interim_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/sys.hpp"

namespace hoody::snapfs {

namespace {
constexpr const char* kIndex = "interim-index.json";
constexpr const char* kStoreDir = ".snapshots";

std::string random_uuid() {
  uint8_t b[16];
  if (::getrandom(b, sizeof b, 0) != sizeof b) {
    for (auto& x : b) x = static_cast<uint8_t>(std::rand());
  }
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  char out[40];
  std::snprintf(out, sizeof out,
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return out;
}

Result<std::vector<std::string>> dir_names(int dirfd, const char* name) {
  HOODY_TRY(d, sys::opendir_at(dirfd, name));
  std::vector<std::string> out;
  while (auto* e = ::readdir(d.get())) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

int64_t now_seconds() { return static_cast<int64_t>(::time(nullptr)); }
}  // namespace

Result<std::unique_ptr<InterimStore>> InterimStore::open(const std::string& source, std::string* why) {
  std::unique_ptr<InterimStore> s(new InterimStore);
  auto src = sys::open(source.c_str(), O_RDONLY | O_DIRECTORY);
  if (!src) {
    *why = "source " + source + ": " + src.error().message();
    return fail(src.error());
  }
  auto btrfs = btrfs::is_btrfs(src->get());
  if (!btrfs || !*btrfs) {
    *why = "source " + source +
           " is not on BTRFS: snapshots need a BTRFS filesystem (a container directory "
           "POOL/containers/<id> whose subvolumes are the snapshot scope)";
    return fail(btrfs ? Errno(ENOTSUP) : btrfs.error());
  }
  if (::mkdirat(src->get(), kStoreDir, 0700) < 0 && errno != EEXIST) {
    int e = errno;
    *why = "source " + source + ": cannot make " + kStoreDir + ": " + std::strerror(e);
    return fail(e);
  }
  auto store = sys::openat(src->get(), kStoreDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!store) {
    *why = "source " + source + "/" + kStoreDir + ": " + store.error().message();
    return fail(store.error());
  }
  ::fchmod(store->get(), 0700);
  s->source_ = std::move(*src);
  s->store_ = std::move(*store);
  if (auto st = s->load(); !st) {
    *why = "source " + source + "/" + kStoreDir + "/" + kIndex + ": " + st.error().message() +
           " (the index cannot be read; move it away to start with an empty store)";
    return fail(st.error());
  }
  // A create that crashed left a staging directory: undo it.
  if (auto names = dir_names(s->store_.get(), "."); names) {
    for (auto& n : *names)
      if (n.rfind(".tmp-", 0) == 0) {
        log::get("snap")->warn("store: removing staging directory {} of an interrupted create", n);
        (void)s->delete_tree(n);
      }
  }
  return s;
}

Status InterimStore::load() {
  auto text = sys::read_file(store_.get(), kIndex);
  if (!text) return text.error() == Errno(ENOENT) ? Status{} : Status(text.error());
  try {
    auto j = nlohmann::json::parse(*text);
    for (auto& o : j) {
      SnapshotInfo s;
      s.name = o.at("name").get<std::string>();
      s.uuid = o.at("uuid").get<std::string>();
      s.created = o.at("created").get<int64_t>();
      s.creator = o.at("creator").get<uint32_t>();
      if (!o.at("expires").is_null()) s.expires = o.at("expires").get<int64_t>();
      s.description = o.value("description", "");
      s.subvolumes = o.at("subvolumes").get<std::vector<std::string>>();
      snaps_.emplace(s.name, std::move(s));
    }
  } catch (const std::exception&) {
    return fail(EBADMSG);
  }
  return {};
}

Status InterimStore::save() {
  std::lock_guard sg(save_m_);
  nlohmann::json arr = nlohmann::json::array();
  std::unique_lock g(m_);
  for (auto& [name, s] : snaps_) {
    nlohmann::json o;
    o["name"] = s.name;
    o["uuid"] = s.uuid;
    o["created"] = s.created;
    o["creator"] = s.creator;
    o["expires"] = s.expires ? nlohmann::json(*s.expires) : nlohmann::json(nullptr);
    o["description"] = s.description;
    o["subvolumes"] = s.subvolumes;
    arr.push_back(std::move(o));
  }
  g.unlock();
  std::string text = arr.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string tmp = std::string(kIndex) + ".new";
  HOODY_TRY(fd, sys::openat(store_.get(), tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600));
  HOODY_CHECK(sys::write_all(fd.get(), text));
  HOODY_CHECK(sys::fsync(fd.get()));
  return sys::renameat2(store_.get(), tmp.c_str(), store_.get(), kIndex, 0);
}

Status InterimStore::delete_tree(const std::string& dir) {
  auto names = dir_names(store_.get(), dir.c_str());
  if (names) {
    HOODY_TRY(dfd, sys::openat(store_.get(), dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    for (auto& n : *names) {
      auto s = btrfs::delete_subvolume(dfd.get(), n.c_str());
      if (!s && ::unlinkat(dfd.get(), n.c_str(), AT_REMOVEDIR) < 0)
        log::get("snap")->warn("store: cannot delete {}/{}: {}", dir, n, s.error().message());
    }
  }
  return sys::unlinkat(store_.get(), dir.c_str(), AT_REMOVEDIR);
}

Result<std::vector<std::string>> InterimStore::live_subvolumes() {
  HOODY_TRY(names, dir_names(source_.get(), "."));
  std::vector<std::string> out;
  for (auto& n : names) {
    if (n[0] == '.') continue;
    auto fd = sys::openat(source_.get(), n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (!fd) continue;
    auto sv = btrfs::is_subvolume(fd->get());
    if (sv && *sv) out.push_back(n);
  }
  return out;
}

Result<SnapshotInfo> InterimStore::create(const std::string& name, uint32_t creator,
                                          std::optional<int64_t> expires,
                                          const std::string& description) {
  {
    std::lock_guard g(m_);
    if (snaps_.count(name) || pending_.count(name)) return fail(EEXIST);
    pending_.insert(name);
  }
  auto done = [&](auto r) {
    std::lock_guard g(m_);
    pending_.erase(name);
    return r;
  };
  SnapshotInfo s;
  s.name = name;
  s.uuid = random_uuid();
  s.created = now_seconds();
  s.creator = creator;
  s.expires = expires;
  s.description = description;
  auto subs = live_subvolumes();
  if (!subs) return done(Result<SnapshotInfo>(subs.error()));
  s.subvolumes = *subs;
  std::string staging = ".tmp-" + s.uuid;
  Status made = [&]() -> Status {
    HOODY_CHECK(sys::mkdirat(store_.get(), staging.c_str(), 0755));
    HOODY_TRY(dfd, sys::openat(store_.get(), staging.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    for (auto& sub : s.subvolumes) {
      HOODY_TRY(sfd, btrfs::open_dir(source_.get(), sub.c_str()));
      HOODY_CHECK(btrfs::snapshot(sfd.get(), dfd.get(), sub.c_str(), true));
    }
    return sys::renameat2(store_.get(), staging.c_str(), store_.get(), s.uuid.c_str(), RENAME_NOREPLACE);
  }();
  if (!made) {
    (void)delete_tree(staging);
    return done(Result<SnapshotInfo>(made.error()));
  }
  {
    std::lock_guard g(m_);
    pending_.erase(name);
    snaps_.emplace(name, s);
  }
  HOODY_CHECK(save());
  return s;
}

Status InterimStore::remove(const std::string& name) {
  std::string uuid;
  {
    std::lock_guard g(m_);
    auto it = snaps_.find(name);
    if (it == snaps_.end()) return fail(pending_.count(name) ? EBUSY : ENOENT);
    uuid = it->second.uuid;
    snaps_.erase(it);
  }
  HOODY_CHECK(save());
  // Out of the index: the subvolumes go now (btrfs reclaims space in the background).
  if (auto st = delete_tree(uuid); !st)
    log::get("snap")->warn("store: snapshot {} deleted from the index, its directory {} stays: {}",
                           name, uuid, st.error().message());
  return {};
}

Status InterimStore::rename(const std::string& from, const std::string& to) {
  {
    std::lock_guard g(m_);
    auto it = snaps_.find(from);
    if (it == snaps_.end()) return fail(pending_.count(from) ? EBUSY : ENOENT);
    if (from == to) return {};
    if (snaps_.count(to) || pending_.count(to)) return fail(EEXIST);
    auto s = it->second;
    snaps_.erase(it);
    s.name = to;
    snaps_.emplace(to, std::move(s));
  }
  return save();
}

Result<SnapshotInfo> InterimStore::get(const std::string& name) {
  std::lock_guard g(m_);
  auto it = snaps_.find(name);
  if (it == snaps_.end()) return fail(ENOENT);
  return it->second;
}

Result<std::vector<SnapshotInfo>> InterimStore::list() {
  std::lock_guard g(m_);
  std::vector<SnapshotInfo> out;
  out.reserve(snaps_.size());
  for (auto& [n, s] : snaps_) out.push_back(s);
  return out;
}

Status InterimStore::set_expires(const std::string& name, std::optional<int64_t> expires) {
  {
    std::lock_guard g(m_);
    auto it = snaps_.find(name);
    if (it == snaps_.end()) return fail(ENOENT);
    it->second.expires = expires;
  }
  return save();
}

Status InterimStore::set_description(const std::string& name, const std::string& text) {
  {
    std::lock_guard g(m_);
    auto it = snaps_.find(name);
    if (it == snaps_.end()) return fail(ENOENT);
    it->second.description = text;
  }
  return save();
}

Result<std::vector<std::string>> InterimStore::prune_expired(int64_t now) {
  std::vector<std::string> due;
  {
    std::lock_guard g(m_);
    for (auto& [n, s] : snaps_)
      if (s.expires && *s.expires <= now) due.push_back(n);
  }
  std::vector<std::string> removed;
  for (auto& n : due)
    if (remove(n)) removed.push_back(n);
  return removed;
}

Result<std::string> InterimStore::restore(const std::string& name, uint32_t uid) {
  std::unique_lock rg(restore_m_, std::try_to_lock);
  if (!rg.owns_lock()) return fail(EBUSY);
  HOODY_TRY(snap, get(name));
  // 1. A safety snapshot of the live state.
  char stamp[32];
  time_t t = ::time(nullptr);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::string safety = "pre-restore-" + std::string(stamp) + "-" + random_uuid().substr(0, 8);
  HOODY_TRY(safe, create(safety, uid, std::nullopt, "state before restoring " + name));
  (void)safe;
  // 2. Per subvolume: a writable copy beside the live one, swapped in atomically.
  HOODY_TRY(sdir, sys::openat(store_.get(), snap.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  for (auto& sub : snap.subvolumes) {
    std::string tmp = ".restore-" + sub + "-" + random_uuid().substr(0, 8);
    HOODY_TRY(from, btrfs::open_dir(sdir.get(), sub.c_str()));
    HOODY_CHECK(btrfs::snapshot(from.get(), source_.get(), tmp.c_str(), false));
    auto swapped = sys::renameat2(source_.get(), tmp.c_str(), source_.get(), sub.c_str(), RENAME_EXCHANGE);
    if (!swapped && swapped.error() == Errno(ENOENT)) {
      HOODY_CHECK(sys::renameat2(source_.get(), tmp.c_str(), source_.get(), sub.c_str(), RENAME_NOREPLACE));
      continue;
    }
    if (!swapped) {
      (void)btrfs::delete_subvolume(source_.get(), tmp.c_str());
      return fail(swapped.error());
    }
    // The old live subvolume is now at tmp (kept in the safety snapshot).
    if (auto d = btrfs::delete_subvolume(source_.get(), tmp.c_str()); !d)
      log::get("snap")->warn("restore {}: the replaced live subvolume {} stays as {}: {}", name, sub,
                             tmp, d.error().message());
  }
  return safety;
}

}  // namespace hoody::snapfs
