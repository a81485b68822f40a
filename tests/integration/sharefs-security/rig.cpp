#include "rig.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "hoody/errno_name.hpp"
#include "hoody/test/capability.hpp"

namespace hoody::test {

namespace fs = std::filesystem;

std::string sharefs_exe() {
  const char* e = std::getenv("HOODY_SHAREFS");
  REQUIRE_MESSAGE(e, "HOODY_SHAREFS is not set (meson sets it to the built hoody-sharefs)");
  return e;
}

std::string errname(int e) { return errno_name(e); }

ShareMount::ShareMount(const std::string& exe, const std::string& pool, const std::string& container,
                       const std::string& mountpoint, const std::string& log,
                       const std::string& extra)
    : mnt_(mountpoint) {
  std::string o = "container=" + container + ",registry=" + pool + "/shares.db";
  if (!extra.empty()) o += "," + extra;
  daemon_ = std::make_unique<Daemon>(std::vector<std::string>{exe, "-f", "-o", o, pool, mountpoint},
                                     mountpoint, log);
}

ShareRig::ShareRig() : ShareRig(BtrfsPool::Options{}) {}

ShareRig::ShareRig(BtrfsPool::Options opts) : pool_((require_mount_capabilities(), opts)) {
  pool_.make_dir("containers");
  std::string why;
  auto r = sharefs::Registry::open(pool_.path(), &why);
  REQUIRE_MESSAGE(r.ok(), "registry: ", why);
  reg_.emplace(std::move(*r));
}

ShareRig::~ShareRig() {
  reg_.reset();
  // The pool's change signal is named after the pool directory's dev and inode.
  struct stat st;
  if (::stat(pool_.path().c_str(), &st) == 0)
    ::shm_unlink(("/hoody-shares-" + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino)).c_str());
}

std::string ShareRig::storage(const std::string& c) const {
  return pool_.path() + "/containers/" + c + "/storage";
}

void ShareRig::container(const std::string& c, const std::string& project) {
  pool_.make_dir("containers/" + c);
  pool_.make_subvolume("containers/" + c + "/storage");
  std::string why;
  auto s = reg_->add_container(c, project, &why);
  REQUIRE_MESSAGE(s.ok(), "container add ", c, ": ", why);
}

void ShareRig::write(const std::string& c, const std::string& rel, std::string_view data, mode_t mode) {
  std::string p = storage(c) + "/" + rel;
  fs::create_directories(fs::path(p).parent_path());
  int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  REQUIRE_MESSAGE(fd >= 0, p, ": ", std::strerror(errno));
  REQUIRE(::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  ::fchmod(fd, mode);
  ::close(fd);
}

void ShareRig::mkdir(const std::string& c, const std::string& rel, mode_t mode) {
  std::string p = storage(c) + "/" + rel;
  fs::create_directories(p);
  ::chmod(p.c_str(), mode);
}

void ShareRig::offer(const std::string& owner, const std::string& source, const std::string& to,
                     Mode mode, const std::string& name) {
  std::string why;
  auto r = reg_->offer({.from = owner, .source = source, .to_container = to, .to_project = "",
                        .mode = mode, .name = name},
                       &why);
  REQUIRE_MESSAGE(r.ok(), "offer ", name, ": ", why);
}

void ShareRig::offer_project(const std::string& owner, const std::string& source,
                             const std::string& project, Mode mode, const std::string& name) {
  std::string why;
  auto r = reg_->offer({.from = owner, .source = source, .to_container = "", .to_project = project,
                        .mode = mode, .name = name},
                       &why);
  REQUIRE_MESSAGE(r.ok(), "offer ", name, ": ", why);
}

void ShareRig::accept(const std::string& c, const std::string& name) {
  std::string why;
  auto s = reg_->accept(c, name, &why);
  REQUIRE_MESSAGE(s.ok(), "accept ", name, " by ", c, ": ", why);
}

void ShareRig::revoke(const std::string& owner, const std::string& name) {
  std::string why;
  auto s = reg_->revoke(owner, name, &why);
  REQUIRE_MESSAGE(s.ok(), "revoke ", name, ": ", why);
}

std::unique_ptr<ShareMount> ShareRig::mount(const std::string& c, const std::string& extra) {
  std::string mnt = pool_.make_temp_dir("mnt-" + c + "-" + std::to_string(mounts_));
  std::string log = pool_.dir() + "/sharefs-" + c + "-" + std::to_string(mounts_) + ".log";
  ++mounts_;
  return std::make_unique<ShareMount>(sharefs_exe(), pool_.path(), c, mnt, log, extra);
}

bool wait_for_path(const std::string& path, bool exists, std::chrono::milliseconds timeout) {
  auto end = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    struct stat st;
    bool there = ::lstat(path.c_str(), &st) == 0;
    if (there == exists) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

namespace {

std::string hash_fd(int fd) {
  // FNV-1a over the whole content: enough to see a change.
  uint64_t h = 1469598103934665603ull;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    for (ssize_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
  }
  char out[17];
  std::snprintf(out, sizeof out, "%016llx", static_cast<unsigned long long>(h));
  return out;
}

std::string xattrs_of(const std::string& p) {
  char names[4096];
  ssize_t n = ::llistxattr(p.c_str(), names, sizeof names);
  if (n <= 0) return "";
  std::vector<std::string> all;
  for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(std::strlen(names + i)) + 1) {
    std::string name(names + i);
    char val[1024];
    ssize_t v = ::lgetxattr(p.c_str(), name.c_str(), val, sizeof val);
    all.push_back(name + "=" + (v >= 0 ? std::string(val, static_cast<size_t>(v)) : "?"));
  }
  std::sort(all.begin(), all.end());
  std::string s;
  for (auto& a : all) s += a + ";";
  return s;
}

}  // namespace

std::string snapshot_tree(const std::string& root) {
  std::vector<std::string> lines;
  std::error_code ec;
  std::vector<std::string> paths{root};
  for (auto it = fs::recursive_directory_iterator(root, fs::directory_options::none, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    paths.push_back(it->path().string());
  for (auto& p : paths) {
    struct stat st;
    if (::lstat(p.c_str(), &st) < 0) continue;
    std::ostringstream l;
    l << p.substr(root.size()) << " mode=" << std::oct << st.st_mode << std::dec << " "
      << st.st_uid << ":" << st.st_gid << " size=" << st.st_size << " nlink=" << st.st_nlink
      << " mtime=" << st.st_mtim.tv_sec << "." << st.st_mtim.tv_nsec;
    if (S_ISREG(st.st_mode)) {
      int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
      if (fd >= 0) {
        l << " data=" << hash_fd(fd);
        ::close(fd);
      }
    } else if (S_ISLNK(st.st_mode)) {
      char t[4096];
      ssize_t n = ::readlink(p.c_str(), t, sizeof t);
      l << " link=" << std::string(t, n > 0 ? static_cast<size_t>(n) : 0);
    }
    l << " xattr=" << xattrs_of(p);
    lines.push_back(l.str());
  }
  std::sort(lines.begin(), lines.end());
  std::string s;
  for (auto& l : lines) s += l + "\n";
  return s;
}

ExitInfo in_jail(const std::string& jail, const std::string& mnt, std::function<int()> fn,
                 bool as_nobody, std::chrono::milliseconds timeout) {
  return start_in_jail(jail, mnt, std::move(fn), as_nobody, timeout).wait();
}

Child start_in_jail(const std::string& jail, const std::string& mnt, std::function<int()> fn,
                    bool as_nobody, std::chrono::milliseconds timeout) {
  ::mkdir((jail + "/m").c_str(), 0755);
  return Child(
      [=]() -> int {
        if (::unshare(CLONE_NEWNS) < 0) return std::printf("unshare: %s\n", std::strerror(errno)), 120;
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0)
          return std::printf("private: %s\n", std::strerror(errno)), 120;
        if (::mount(mnt.c_str(), (jail + "/m").c_str(), nullptr, MS_BIND, nullptr) < 0)
          return std::printf("bind: %s\n", std::strerror(errno)), 120;
        if (::chroot(jail.c_str()) < 0 || ::chdir("/") < 0)
          return std::printf("chroot: %s\n", std::strerror(errno)), 120;
        if (as_nobody) {
          if (::setgroups(0, nullptr) < 0 || ::setresgid(kNobodyGid, kNobodyGid, kNobodyGid) < 0 ||
              ::setresuid(kNobodyUid, kNobodyUid, kNobodyUid) < 0)
            return std::printf("drop: %s\n", std::strerror(errno)), 120;
        }
        return fn();
      },
      {.as_nobody = false, .timeout = timeout});
}

std::string mount_options(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string id, parent, devs, root, mp, opts;
    ss >> id >> parent >> devs >> root >> mp >> opts;
    if (mp == mountpoint) return opts;
  }
  return "";
}

}  // namespace hoody::test
