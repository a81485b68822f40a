#include "hoody/test/capability.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test {

namespace {

void missing(const std::string& what) {
  std::string msg = "missing capability: " + what;
  if (in_ci()) {
    if (doctest::is_running_in_test) FAIL(msg << " (CI=true: a missing capability is a failure)");
    std::fprintf(stderr, "FAIL: %s (CI=true: a missing capability is a failure)\n", msg.c_str());
    std::fflush(nullptr);
    ::_exit(1);
  }
  std::fprintf(stderr, "SKIP: %s; skipping this test binary (exit 77)\n", msg.c_str());
  std::fflush(nullptr);
  ::_exit(77);
}

}  // namespace

void require_root() {
  if (::geteuid() != 0) missing("root (euid " + std::to_string(::geteuid()) + ")");
}

void require_fuse() {
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) missing("/dev/fuse cannot be opened");
  ::close(fd);
  if (find_tool("fusermount3").empty()) missing("fusermount3 not found");
}

void require_btrfs() {
  if (find_tool("mkfs.btrfs").empty()) missing("mkfs.btrfs not found (btrfs-progs)");
  if (slurp("/proc/filesystems").find("\tbtrfs") == std::string::npos) {
    if (auto modprobe = find_tool("modprobe"); !modprobe.empty()) run({modprobe, "btrfs"}, 10s);
    if (slurp("/proc/filesystems").find("\tbtrfs") == std::string::npos)
      missing("btrfs not in /proc/filesystems");
  }
}

void require_loop() {
  if (::access("/dev/loop-control", R_OK | W_OK) != 0) missing("/dev/loop-control");
  if (find_tool("losetup").empty()) missing("losetup not found");
}

void require_mount_capabilities() {
  require_root();
  require_fuse();
  require_btrfs();
  require_loop();
}

std::string require_tool(const std::string& name, const std::string& package) {
  std::string path = find_tool(name);
  if (path.empty()) missing(name + " not found (Debian package " + package + ")");
  return path;
}

}  // namespace hoody::test
