// The passthrough core's O_PATH fd budget: with -o fd_budget=N the daemon
// keeps at most about N inode fds open however many inodes the kernel holds;
// idle inodes keep a file handle and are reopened (open_by_handle_at) on
// their next use, so every file stays reachable and correct.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

namespace {
// Number of /proc/PID/fd entries that are O_PATH-looking (every fd, in fact):
// the daemon's total descriptor count.
size_t fd_count(pid_t pid) {
  auto r = run({"sh", "-c", "ls /proc/" + std::to_string(pid) + "/fd | wc -l"});
  return static_cast<size_t>(std::stoul(r.output));
}
}  // namespace

TEST_CASE("fd budget: 3000 inodes through 200 fds, all readable and writable") {
  require_mount_capabilities();
  BtrfsPool pool;
  std::string src = pool.make_subvolume("databases");
  std::string mnt = pool.make_temp_dir("mnt");
  Daemon d(dbfs_argv(src, mnt, "allow_other,fd_budget=200,entry_timeout=3600,attr_timeout=3600"),
           mnt, pool.dir() + "/daemon.log");
  const int kFiles = 3000;
  ::mkdir((mnt + "/many").c_str(), 0755);
  for (int i = 0; i < kFiles; ++i) {
    std::string p = mnt + "/many/f" + std::to_string(i);
    int fd = ::open(p.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    std::string data = "file " + std::to_string(i);
    REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
    ::close(fd);
  }
  // The kernel now holds 3000 inodes (long entry timeout); the daemon must not.
  size_t fds = fd_count(d.pid());
  CHECK_MESSAGE(fds < 400, "daemon holds " << fds << " fds with a budget of 200");
  // Every inode still works: evicted ones are reopened from their handle.
  for (int i = 0; i < kFiles; i += 7) {
    std::string p = mnt + "/many/f" + std::to_string(i);
    struct stat st;
    REQUIRE(::stat(p.c_str(), &st) == 0);
    CHECK(st.st_size == static_cast<off_t>(("file " + std::to_string(i)).size()));
    int fd = ::open(p.c_str(), O_RDWR | O_APPEND | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "+", 1) == 1);
    ::close(fd);
    CHECK(slurp(src + "/many/f" + std::to_string(i)) == "file " + std::to_string(i) + "+");
    CHECK(::chmod(p.c_str(), 0600) == 0);
  }
  CHECK(fd_count(d.pid()) < 400);
  // Rename and unlink through evicted inodes' parents.
  CHECK(::rename((mnt + "/many/f1").c_str(), (mnt + "/many/g1").c_str()) == 0);
  CHECK(::unlink((mnt + "/many/f2").c_str()) == 0);
  CHECK(::access((src + "/many/g1").c_str(), F_OK) == 0);
  CHECK(::access((src + "/many/f2").c_str(), F_OK) != 0);
  std::string status = run({std::getenv("HOODY_DBFS"), "--status", mnt}).output;
  CHECK(status.find("\"open_path_fds\"") != std::string::npos);
}
