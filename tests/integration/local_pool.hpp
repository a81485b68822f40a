// A minimal loop-mounted BTRFS pool for integration tests, until the shared
// rig (tests/support/: guard main, BtrfsPool fixture, capability checks)
// lands on main.  Kept small on purpose so that it can be swapped for it.
//
//   require_capabilities();          // exit 77 (skip) or, under CI=true, 1
//   LocalPool pool;                  // temp dir, 1 GiB sparse image, mkfs, loop, mount
//   pool.path()  pool.fd()           // the mounted filesystem
//   ~LocalPool                       // umount, losetup -d, rm -rf: also on failure,
//                                    // and by a janitor child if the test dies
#pragma once

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <stdexcept>
#include <string>

#include "hoody/unique_fd.hpp"

namespace hoody::test {

// Run a shell command; its stdout (trimmed of one trailing newline), or throw.
inline std::string sh(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    throw std::runtime_error("command failed (" + std::to_string(st) + "): " + cmd);
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

// Exit 77 (meson: skipped) when the machine cannot run BTRFS tests; under
// CI=true a missing capability is a failure (exit 1).
inline void require_capabilities() {
  std::string missing;
  if (::geteuid() != 0) missing = "root";
  else if (::access("/dev/loop-control", F_OK) != 0) missing = "/dev/loop-control";
  else if (std::system("command -v mkfs.btrfs >/dev/null 2>&1 && command -v losetup >/dev/null 2>&1") != 0)
    missing = "mkfs.btrfs/losetup";
  else {
    std::ifstream fs("/proc/filesystems");
    std::string all((std::istreambuf_iterator<char>(fs)), std::istreambuf_iterator<char>());
    if (all.find("btrfs") == std::string::npos &&
        std::system("modprobe btrfs >/dev/null 2>&1") != 0)
      missing = "btrfs in the kernel";
  }
  if (missing.empty()) return;
  const char* ci = std::getenv("CI");
  bool strict = ci && std::string(ci) == "true";
  std::fprintf(stderr, "%s: needs %s\n", strict ? "FAIL (CI=true)" : "SKIP", missing.c_str());
  std::exit(strict ? 1 : 77);
}

class LocalPool {
public:
  explicit LocalPool(const std::string& size = "1G") {
    char tmpl[] = "/tmp/hoody-it.XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    image_ = dir_ + "/pool.img";
    mnt_ = dir_ + "/mnt";
    start_janitor();
    try {
      sh("truncate -s " + size + " '" + image_ + "'");
      sh("mkfs.btrfs -q -f '" + image_ + "' >/dev/null");
      loop_ = sh("losetup --find --show '" + image_ + "'");
      if (::mkdir(mnt_.c_str(), 0755) != 0) throw std::runtime_error("mkdir mnt failed");
      if (::mount(loop_.c_str(), mnt_.c_str(), "btrfs", 0, nullptr) != 0)
        throw std::runtime_error("mount " + loop_ + " failed");
      mounted_ = true;
      fd_.reset(::open(mnt_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!fd_) throw std::runtime_error("open mnt failed");
    } catch (...) {
      cleanup();
      throw;
    }
  }
  LocalPool(const LocalPool&) = delete;
  LocalPool& operator=(const LocalPool&) = delete;
  ~LocalPool() { cleanup(); }

  const std::string& path() const { return mnt_; }
  int fd() const { return fd_.get(); }

private:
  // A child that waits for this process to close the pipe (on cleanup, or by
  // dying: a crash, SIGKILL) and then removes whatever is left: the mount,
  // the loop device of the image, the directory.
  void start_janitor() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error("fork failed");
    if (pid == 0) {
      ::dup2(p[0], 3);  // dup2 clears O_CLOEXEC; every other fd goes
      ::close_range(4, ~0U, 0);
      if (p[0] != 3) ::close(p[0]);
      ::setsid();  // out of the test's process group: meson's kill must not reach it
      char c;
      while (::read(3, &c, 1) > 0 || errno == EINTR) {
      }
      const std::string cmd = "mountpoint -q '" + mnt_ + "' && umount -l '" + mnt_ +
                              "'; losetup -j '" + image_ +
                              "' -O NAME -n | xargs -r -n1 losetup -d; rm -rf '" + dir_ + "'";
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(p[0]);
    janitor_pipe_.reset(p[1]);
    janitor_ = pid;
  }

  void cleanup() noexcept {
    fd_.reset();
    if (mounted_) {
      if (::umount2(mnt_.c_str(), 0) != 0) {
        std::system(("sync; umount '" + mnt_ + "' 2>/dev/null").c_str());
        ::umount2(mnt_.c_str(), MNT_DETACH);
      }
      mounted_ = false;
    }
    if (!loop_.empty()) {
      std::system(("losetup -d '" + loop_ + "'").c_str());
      loop_.clear();
    }
    if (!dir_.empty()) {
      std::system(("rm -rf '" + dir_ + "'").c_str());
      dir_.clear();
    }
    janitor_pipe_.reset();
    if (janitor_ > 0) {
      ::waitpid(janitor_, nullptr, 0);
      janitor_ = -1;
    }
  }

  std::string dir_, image_, mnt_, loop_;
  bool mounted_ = false;
  UniqueFd fd_;
  UniqueFd janitor_pipe_;
  pid_t janitor_ = -1;
};

}  // namespace hoody::test
