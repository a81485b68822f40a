// SnapshotStore: what changed between two snapshots, or a snapshot and the live state.
#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
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
  // Held while temporary snapshots of the live state exist: recover() must
  // not sweep them, restore() must not swap the live state under them.
  std::unique_lock lock(op_mu_, std::defer_lock);
  if (from == kLive || to == kLive) lock.lock();
  std::string live_dir;  // .diff-<uuid>, deleted on every return
  struct Cleanup {
    SnapshotStore* st;
    std::string* dir;
    ~Cleanup() {
      if (!dir->empty() && !st->purge(dir->c_str(), nullptr))
        log::get("snap")->warn("op=diff dir={} -> not deleted; recover() will", *dir);
    }
  } cleanup{this, &live_dir};
  auto side = [&](std::string_view name) -> Result<UniqueFd> {
    if (name != kLive) return open_snapshot(name);
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
  return out;
}

}  // namespace hoody::snapfs
