// hoody-snap send | hoody-snap receive against `btrfs send | btrfs receive`
// of the same subvolumes through the same kind of pipe, between two loop
// pools (issue 9 item 6):
//  - a full copy of a container with 1 GiB in 10 000 files (target: hoody's
//    rate >= 0.8x the raw rate);
//  - an incremental copy of 100 changed files among 100 000 (target < 1 s).
// Each run ends with `sync` of the receiving pool inside the timing; the best
// of HOODY_SEND_ROUNDS (2) runs of each, alternating.  Prints ratios; never
// fails on speed.  HOODY_SEND_MB / HOODY_SEND_FILES change the full copy's size.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hoody/sys.hpp"
#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/process.hpp"
#include "store/snapshot_store.hpp"

using namespace hoody::test;
using Clock = std::chrono::steady_clock;

namespace {

long env_long(const char* name, long dflt) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtol(v, nullptr, 10) : dflt;
}
std::string snap_bin() {
  const char* v = std::getenv("HOODY_SNAP");
  return v && *v ? v : "hoody-snap";
}

double secs_of(const std::function<void()>& f) {
  auto t = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void sh(const std::string& cmd) {
  auto r = run({"bash", "-c", "set -o pipefail; " + cmd}, std::chrono::minutes(10));
  REQUIRE_MESSAGE(r.ok(), cmd << ": " << r.describe());
}

// `n` files of `size` bytes of incompressible data in dir/dNNN/ (100 per dir).
void make_files(const std::string& dir, long n, size_t size) {
  std::mt19937_64 rng(42);
  std::string data(size, '\0');
  for (long i = 0; i < n; ++i) {
    std::string sub = dir + "/d" + std::to_string(i / 100);
    if (i % 100 == 0) ::mkdir(sub.c_str(), 0755);
    for (size_t j = 0; j + 8 <= data.size(); j += 8) {
      uint64_t v = rng();
      std::memcpy(&data[j], &v, 8);
    }
    int fd = ::open((sub + "/f" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    ::close(fd);
  }
}

struct Side {
  BtrfsPool pool{BtrfsPool::Options{8ull << 30}};
  Side() { pool.make_dir("containers"); }
  std::string c(const std::string& id) const { return pool.path() + "/containers/" + id; }
  std::string args(const std::string& id) const {
    return "--pool " + pool.path() + " --container " + id;
  }
};

// A snapshot taken through the store (no daemon needed); its directory.
std::string take(const std::string& container, const std::string& name) {
  auto src = hoody::sys::open(container.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(src);
  auto store = hoody::snapfs::SnapshotStore::open(src->get());
  REQUIRE(store);
  auto s = (*store)->create(name, hoody::snapfs::Caller{0, ::getpid()});
  REQUIRE(s);
  return container + "/.snapshots/" + s->uuid;
}

}  // namespace

TEST_CASE("full copy: hoody-snap send|receive vs btrfs send|receive") {
  require_mount_capabilities();
  long mb = env_long("HOODY_SEND_MB", 1024), files = env_long("HOODY_SEND_FILES", 10000);
  int rounds = static_cast<int>(env_long("HOODY_SEND_ROUNDS", 2));
  Side a, b;
  a.pool.make_dir("containers/c1");
  a.pool.make_subvolume("containers/c1/storage");
  a.pool.make_subvolume("containers/c1/databases");
  make_files(a.c("c1") + "/storage", files, static_cast<size_t>(mb) * (1 << 20) / static_cast<size_t>(files));
  std::string snap = take(a.c("c1"), "s1");
  sh("sync");
  std::vector<double> raw, hoody;
  for (int r = 0; r < rounds; ++r) {
    std::string rawdir = b.pool.make_dir("raw" + std::to_string(r));
    raw.push_back(secs_of([&] {
      sh("btrfs send -q " + snap + "/databases " + snap + "/storage | btrfs receive -q " + rawdir +
         " && sync -f " + rawdir);
    }));
    std::string id = "h" + std::to_string(r);
    hoody.push_back(secs_of([&] {
      sh(snap_bin() + " send s1 " + a.args("c1") + " | " + snap_bin() + " receive " + b.args(id) +
         " >/dev/null && sync -f " + b.c(id));
    }));
    // Space for the next round.
    sh("btrfs -q subvolume delete " + rawdir + "/storage " + rawdir + "/databases");
    sh("btrfs -q subvolume delete " + b.c(id) + "/.snapshots/*/* " + b.c(id) + "/storage " +
       b.c(id) + "/databases && btrfs filesystem sync " + b.pool.path());
  }
  double best_raw = *std::min_element(raw.begin(), raw.end());
  double best_hoody = *std::min_element(hoody.begin(), hoody.end());
  double bytes = static_cast<double>(mb) * (1 << 20);
  std::printf("full copy of %ld MiB in %ld files: btrfs send|receive %.2f s (%.0f MiB/s), "
              "hoody-snap send|receive %.2f s (%.0f MiB/s): rate ratio %.2f (target >= 0.8)\n",
              mb, files, best_raw, bytes / best_raw / (1 << 20), best_hoody,
              bytes / best_hoody / (1 << 20), best_raw / best_hoody);
  for (int r = 0; r < rounds; ++r)
    std::printf("  round %d: raw %.2f s, hoody %.2f s\n", r + 1, raw[static_cast<size_t>(r)],
                hoody[static_cast<size_t>(r)]);
}

TEST_CASE("incremental copy: 100 changed files among 100 000") {
  require_mount_capabilities();
  long files = env_long("HOODY_SEND_INCR_FILES", 100000);
  Side a, b;
  a.pool.make_dir("containers/c1");
  std::string storage = a.pool.make_subvolume("containers/c1/storage");
  a.pool.make_subvolume("containers/c1/databases");
  make_files(storage, files, 100);
  std::string p1 = take(a.c("c1"), "p1");
  sh(snap_bin() + " send p1 " + a.args("c1") + " | " + snap_bin() + " receive " + b.args("c9") +
     " >/dev/null");
  // The same parent for the raw baseline.
  std::string rawdir = b.pool.make_dir("raw");
  sh("btrfs send -q " + p1 + "/storage | btrfs receive -q " + rawdir);
  for (long i = 0; i < 100; ++i) {
    long f = i * (files / 100);
    std::string p = storage + "/d" + std::to_string(f / 100) + "/f" + std::to_string(f);
    int fd = ::open(p.c_str(), O_WRONLY | O_APPEND);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, "changed\n", 8) == 8);
    ::close(fd);
  }
  std::string p2 = take(a.c("c1"), "p2");
  std::string raw2 = b.pool.make_dir("raw2");
  sh("sync");
  double raw = secs_of([&] {
    sh("btrfs send -q -p " + p1 + "/storage " + p2 + "/storage | btrfs receive -q " + raw2 +
       " && sync -f " + raw2);
  });
  double hoody = secs_of([&] {
    sh(snap_bin() + " send p2 --parent p1 " + a.args("c1") + " | " + snap_bin() + " receive " +
       b.args("c9") + " >/dev/null && sync -f " + b.c("c9"));
  });
  std::printf("incremental copy of 100 changed files among %ld: hoody-snap send|receive %.3f s "
              "(target < 1 s), btrfs send|receive of storage alone %.3f s\n",
              files, hoody, raw);
}
