// SnapshotStore: what changed between two snapshots, or a snapshot and the live state.
#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "crash.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

Result<std::vector<send::Change>> SnapshotStore::diff(std::string_view from,
                                                      std::string_view to) {
  HOODY_TRY(a, diff_side(from));
  HOODY_TRY(b, diff_side(to));
  return diff_sides(a, b, {});
}

Result<SnapshotStore::DiffSide> SnapshotStore::diff_side(std::string_view name) const {
  if (name == kLive) return DiffSide{"", std::string(kLive)};
  HOODY_TRY(s, get(name));
  HOODY_TRY(dir, sys::openat(store_.get(), s.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(subs, subvolumes_in(dir.get()));
  // A read-only snapshot never changes; its generation moves if someone
  // made it writable and wrote to it.
  DiffSide side{s.uuid, s.uuid};
  for (const auto& sv : subs) {
    HOODY_TRY(fd, btrfs::open_dir(dir.get(), sv.c_str()));
    HOODY_TRY(i, btrfs::info(fd.get()));
    side.identity += "/" + sv + ":" + std::to_string(i.generation) + "." +
                     std::to_string(i.ctransid);
  }
  return side;
}

namespace {
// Owner and mode of directory `path` beneath the tree `tree_fd`, resolved one
// component at a time without following a symlink (the tree is user data).
DirMode stat_dir(int tree_fd, const std::string& path) {
  auto fd = sys::open_beneath(tree_fd, path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW, 0,
                              RESOLVE_NO_SYMLINKS);
  if (!fd) return {};
  auto st = sys::fstat(fd->get());
  if (!st || !S_ISDIR(st->st_mode)) return {};
  return DirMode{true, st->st_mode & 07777, st->st_uid, st->st_gid};
}
}  // namespace

Result<std::shared_ptr<const DiffText>> SnapshotStore::diff_text(const DiffSide& from,
                                                                 const DiffSide& to) {
  std::shared_ptr<const DiffText> text;
  HOODY_TRY(changes,
            diff_sides(from, to, [&](int old_fd, int new_fd, std::vector<send::Change>& c) {
              text = DiffText::build(
                  c, [&](const std::string& p) { return stat_dir(old_fd, p); },
                  [&](const std::string& p) { return stat_dir(new_fd, p); });
              c = {};  // the text holds it all now
            }));
  (void)changes;
  return text;
}

Result<std::vector<send::Change>> SnapshotStore::diff_sides(const DiffSide& from,
                                                            const DiffSide& to,
                                                            const WithTrees& with_trees) {
  // Held while temporary snapshots of the live state exist: recover() must
  // not sweep them, restore() must not swap the live state under them.
  std::unique_lock lock(op_mu_, std::defer_lock);
  if (from.live() || to.live()) lock.lock();
  std::string live_dir;  // .diff-<uuid>, deleted on every return
  struct Cleanup {
    SnapshotStore* st;
    std::string* dir;
    ~Cleanup() {
      if (!dir->empty() && !st->purge(dir->c_str(), nullptr))
        log::get("snap")->warn("op=diff dir={} -> not deleted; recover() will", *dir);
    }
  } cleanup{this, &live_dir};
  auto side = [&](const DiffSide& s) -> Result<UniqueFd> {
    if (!s.live())
      return sys::openat(store_.get(), s.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    if (live_dir.empty()) {
      HOODY_TRY(subvols, scope());
      std::string dir = kDiffPrefix + random_uuid();
      HOODY_CHECK(sys::mkdirat(store_.get(), dir.c_str(), 0700));
      live_dir = dir;
      HOODY_TRY(dfd, btrfs::open_dir(store_.get(), dir.c_str()));
      for (const auto& sv : subvols) {
        HOODY_TRY(src, btrfs::open_dir(source_.get(), sv.c_str()));
        HOODY_CHECK(btrfs::snapshot(src.get(), dfd.get(), sv.c_str(), /*readonly=*/true));
      }
    }
    return btrfs::open_dir(store_.get(), live_dir.c_str());
  };
  HOODY_TRY(a, side(from));
  HOODY_TRY(b, side(to));
  HOODY_TRY(sa, subvolumes_in(a.get()));
  HOODY_TRY(sb, subvolumes_in(b.get()));
  std::vector<send::Change> out;
  std::set<std::string> all(sa.begin(), sa.end());
  all.insert(sb.begin(), sb.end());
  for (const auto& sv : all) {
    bool in_a = std::binary_search(sa.begin(), sa.end(), sv);
    bool in_b = std::binary_search(sb.begin(), sb.end(), sv);
    if (!in_a) {
      out.push_back({send::ChangeKind::added, sv, {}});
      continue;
    }
    if (!in_b) {
      out.push_back({send::ChangeKind::removed, sv, {}});
      continue;
    }
    HOODY_TRY(fa, btrfs::open_dir(a.get(), sv.c_str()));
    HOODY_TRY(fb, btrfs::open_dir(b.get(), sv.c_str()));
    HOODY_TRY(changes, send::diff_subvolumes(fa.get(), fb.get()));
    for (auto& c : changes) {
      c.path = sv + "/" + c.path;
      if (!c.to.empty()) c.to = sv + "/" + c.to;
      out.push_back(std::move(c));
    }
  }
  // A nested subvolume is an empty directory in a snapshot (BTRFS stops at
  // subvolume boundaries): said as what it is, for either side.
  std::set<std::string> nested;
  for (const DiffSide* s : {&from, &to}) {
    if (s->live()) {
      HOODY_TRY(subvols, scope());
      HOODY_TRY(n, nested_subvolumes(source_.get(), subvols));
      nested.insert(n.begin(), n.end());
      continue;
    }
    std::lock_guard dl(db_mu_);
    sql::Stmt q(db_, "SELECT nested FROM snapshots WHERE uuid = ?");
    q.bind(1, s->uuid);
    HOODY_TRY(row, q.step());
    if (row)
      for (auto& n : from_json_text(q.text(0))) nested.insert(n);
  }
  for (const auto& n : nested) out.push_back({send::ChangeKind::not_captured, n, {}});
  if (with_trees) with_trees(a.get(), b.get(), out);
  return out;
}

}  // namespace hoody::snapfs
