// hoody-dbfs mounted the way operators mount it: mount(8) with the
// fuse.hoody-dbfs type, and an fstab line (mount -T FILE -a), both through the
// real mount.fuse3 helper, which finds the daemon on $PATH and lets it
// daemonize.  Then umount(8) stops it.
#include <doctest/doctest.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

namespace {

// mount.fuse3 runs the program named after "fuse." from $PATH.
void put_daemon_on_path() {
  const char* dbfs = std::getenv("HOODY_DBFS");
  REQUIRE_MESSAGE(dbfs, "HOODY_DBFS must name the hoody-dbfs binary");
  std::string dir = dbfs;
  dir = dir.substr(0, dir.rfind('/'));
  std::string path = dir + ":" + (std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin");
  ::setenv("PATH", path.c_str(), 1);
}

bool wait_unmounted(const std::string& mnt) {
  for (int i = 0; i < 100; ++i) {
    if (!is_mounted(mnt)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// No hoody-dbfs serving `source` is left (the flock is gone with it).
bool daemon_gone(const std::string& source) {
  for (int i = 0; i < 100; ++i) {
    if (!run({"pgrep", "-f", "hoody-dbfs.*" + source}).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

struct Setup {
  bool capable = (require_mount_capabilities(), true);
  BtrfsPool pool;
  std::string src = pool.make_subvolume("databases");
  std::string mnt = pool.make_temp_dir("mnt");
  Setup() { put_daemon_on_path(); }
};

void use_it(const std::string& mnt, const std::string& src) {
  std::ofstream(mnt + "/hello") << "through the mount";
  std::ifstream in(src + "/hello");
  std::string got;
  std::getline(in, got);
  CHECK(got == "through the mount");
}

}  // namespace

TEST_CASE("mount -t fuse.hoody-dbfs SOURCE MOUNTPOINT") {
  Setup s;
  auto id = register_resource(Resource::fuse_mount, s.mnt);
  ExitInfo m = run({"mount", "-t", "fuse.hoody-dbfs", "-o", "allow_other", s.src, s.mnt});
  REQUIRE_MESSAGE(m.ok(), m.describe());
  CHECK(is_mounted(s.mnt, "fuse.hoody-dbfs"));
  use_it(s.mnt, s.src);
  ExitInfo u = run({"umount", s.mnt});
  CHECK_MESSAGE(u.ok(), u.describe());
  CHECK(wait_unmounted(s.mnt));
  CHECK_MESSAGE(daemon_gone(s.src), "hoody-dbfs still runs after umount");
  release(id);
}

TEST_CASE("an fstab line, mounted with mount -T FILE -a") {
  Setup s;
  std::string fstab = s.pool.dir() + "/fstab";
  std::ofstream(fstab) << "# hoody test fstab\n"
                       << s.src << "  " << s.mnt
                       << "  fuse.hoody-dbfs  allow_other,nosuid,nodev,noatime,_netdev,x-systemd.requires=local-fs.target  0 0\n";
  auto id = register_resource(Resource::fuse_mount, s.mnt);
  ExitInfo m = run({"mount", "-T", fstab, "-a"});
  REQUIRE_MESSAGE(m.ok(), m.describe());
  REQUIRE(is_mounted(s.mnt, "fuse.hoody-dbfs"));
  std::string info = slurp("/proc/self/mountinfo");
  auto line_at = info.find(" " + s.mnt + " ");
  REQUIRE(line_at != std::string::npos);
  std::string line = info.substr(line_at, info.find('\n', line_at) - line_at);
  CHECK(line.find("nosuid") != std::string::npos);
  CHECK(line.find("allow_other") != std::string::npos);
  CHECK(line.find(s.src) != std::string::npos);  // fsname is the source
  use_it(s.mnt, s.src);
  // Unmount by mountpoint through the same fstab, as `umount /hoody/databases` does.
  ExitInfo u = run({"umount", s.mnt});
  CHECK_MESSAGE(u.ok(), u.describe());
  CHECK(wait_unmounted(s.mnt));
  CHECK(daemon_gone(s.src));
  release(id);
}

TEST_CASE("a bad option in fstab fails the mount with a line naming it") {
  Setup s;
  std::string fstab = s.pool.dir() + "/fstab";
  std::ofstream(fstab) << s.src << " " << s.mnt << " fuse.hoody-dbfs allow_other,frobnicate 0 0\n";
  auto id = register_resource(Resource::fuse_mount, s.mnt);
  ExitInfo m = run({"mount", "-T", fstab, "-a"});
  CHECK_FALSE(m.ok());
  CHECK_MESSAGE(m.output.find("unknown option 'frobnicate'") != std::string::npos, m.output);
  CHECK_FALSE(is_mounted(s.mnt));
  release(id);
}
