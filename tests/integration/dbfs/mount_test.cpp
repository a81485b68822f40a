// hoody-dbfs mounted the way operators mount it: mount(8) with the
// fuse.hoody-dbfs type, and an fstab line (mount -T FILE -a), both through the
// real mount.fuse3 helper, which finds the daemon on its default PATH and lets
// it daemonize; then umount(8) stops it.
//
// mount(8) runs its helpers without the caller's PATH, so the daemon under
// test must be where an installed one would be: each scenario runs in a
// private mount namespace (unshare -m) in which a directory holding the built
// hoody-dbfs is bind-mounted over /usr/local/sbin.  Nothing installed on the
// machine is used or changed.
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

namespace {

struct Setup {
  bool capable = (require_mount_capabilities(), true);
  BtrfsPool pool;
  std::string src = pool.make_subvolume("databases");
  std::string mnt = pool.make_temp_dir("mnt");
  std::string bindir = pool.make_temp_dir("sbin");

  Setup() {
    const char* dbfs = std::getenv("HOODY_DBFS");
    REQUIRE_MESSAGE(dbfs, "HOODY_DBFS must name the hoody-dbfs binary");
    REQUIRE(::symlink(dbfs, (bindir + "/hoody-dbfs").c_str()) == 0);
  }

  // Runs `script` (sh -e) in a private mount namespace with the daemon on
  // mount.fuse3's PATH.  Whatever it mounts is gone with the namespace; the
  // script unmounts first so the daemon exits too.
  ExitInfo in_namespace(const std::string& script) {
    std::string full =
        "set -e\n"
        "mount --make-rprivate /\n"
        "mount --bind '" + bindir + "' /usr/local/sbin\n"
        "trap 'umount -l \"" + mnt + "\" 2>/dev/null || true' EXIT\n" +
        script;
    return run({"unshare", "-m", "sh", "-c", full}, std::chrono::seconds(60));
  }
};

// Shell: wait until no hoody-dbfs serves SRC (after umount).
std::string wait_daemon_gone(const std::string& src) {
  return "for i in $(seq 50); do pgrep -f '^[^ ]*hoody-dbfs .*" + src +
         "' >/dev/null || break; sleep 0.1; done\n"
         "if pgrep -f '^[^ ]*hoody-dbfs .*" + src + "' >/dev/null; then echo DAEMON_LEFT; else echo DAEMON_GONE; fi\n";
}

std::string use_it(const std::string& mnt, const std::string& src) {
  return "grep -q ' " + mnt + " .* fuse.hoody-dbfs ' /proc/self/mountinfo && echo MOUNTED\n"
         "echo 'through the mount' > '" + mnt + "/hello'\n"
         "echo \"CONTENT=$(cat '" + src + "/hello')\"\n";
}

}  // namespace

TEST_CASE("mount -t fuse.hoody-dbfs SOURCE MOUNTPOINT, then umount") {
  Setup s;
  ExitInfo e = s.in_namespace("mount -t fuse.hoody-dbfs -o allow_other '" + s.src + "' '" + s.mnt +
                              "'\n" + use_it(s.mnt, s.src) + "umount '" + s.mnt +
                              "' && echo UMOUNT_OK\n" + wait_daemon_gone(s.src));
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(e.output.find("MOUNTED") != std::string::npos, e.output);
  CHECK_MESSAGE(e.output.find("CONTENT=through the mount") != std::string::npos, e.output);
  CHECK_MESSAGE(e.output.find("UMOUNT_OK") != std::string::npos, e.output);
  CHECK_MESSAGE(e.output.find("DAEMON_GONE") != std::string::npos, e.output);
}

TEST_CASE("an fstab line, mounted with mount -T FILE -a") {
  Setup s;
  std::string fstab = s.pool.dir() + "/fstab";
  std::ofstream(fstab) << "# hoody test fstab\n"
                       << s.src << "  " << s.mnt
                       << "  fuse.hoody-dbfs  allow_other,nosuid,nodev,noatime,_netdev,"
                          "x-systemd.requires=local-fs.target  0 0\n";
  ExitInfo e = s.in_namespace(
      "mount -T '" + fstab + "' -a\n" + use_it(s.mnt, s.src) +
      "grep ' " + s.mnt + " ' /proc/self/mountinfo | sed 's/^/INFO /'\n"
      "umount '" + s.mnt + "' && echo UMOUNT_OK\n" + wait_daemon_gone(s.src));
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(e.output.find("MOUNTED") != std::string::npos, e.output);
  CHECK_MESSAGE(e.output.find("CONTENT=through the mount") != std::string::npos, e.output);
  auto info_at = e.output.find("INFO ");
  REQUIRE_MESSAGE(info_at != std::string::npos, e.output);
  std::string info = e.output.substr(info_at, e.output.find('\n', info_at) - info_at);
  CHECK_MESSAGE(info.find("nosuid") != std::string::npos, info);
  CHECK_MESSAGE(info.find("allow_other") != std::string::npos, info);
  CHECK_MESSAGE(info.find(s.src) != std::string::npos, info);  // fsname is the source
  CHECK_MESSAGE(e.output.find("UMOUNT_OK") != std::string::npos, e.output);
  CHECK_MESSAGE(e.output.find("DAEMON_GONE") != std::string::npos, e.output);
}

TEST_CASE("a bad option in fstab fails the mount with a line naming it") {
  Setup s;
  std::string fstab = s.pool.dir() + "/fstab";
  std::ofstream(fstab) << s.src << " " << s.mnt << " fuse.hoody-dbfs allow_other,frobnicate 0 0\n";
  ExitInfo e = s.in_namespace("if mount -T '" + fstab + "' -a; then echo MOUNTED_ANYWAY; fi\n");
  CHECK_MESSAGE(e.output.find("unknown option 'frobnicate'") != std::string::npos, e.output);
  CHECK(e.output.find("MOUNTED_ANYWAY") == std::string::npos);
  CHECK_FALSE(is_mounted(s.mnt));
}
