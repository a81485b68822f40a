#include "hoody/test/btrfs_pool.hpp"

#include <btrfsutil.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test {

namespace {
std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}
}  // namespace

BtrfsPool::BtrfsPool() : BtrfsPool(Options{}) {}

BtrfsPool::BtrfsPool(Options opts) {
  std::string tmpl = session_dir() + "/pool.XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  dir_ = tmpl;
  dir_id_ = register_resource(Resource::dir, dir_);
  ::chmod(dir_.c_str(), 0755);
  try {
    image_ = dir_ + "/pool.img";
    mnt_ = dir_ + "/pool";
    run_checked({"truncate", "-s", std::to_string(opts.size), image_});
    run_checked({find_tool("mkfs.btrfs"), "-q", image_});
    loop_id_ = register_resource(Resource::loop_image, image_);
    loop_ = trim(run_checked({find_tool("losetup"), "--find", "--show", image_}));
    if (::mkdir(mnt_.c_str(), 0755) < 0)
      throw std::runtime_error("mkdir " + mnt_ + ": " + std::strerror(errno));
    mount_id_ = register_resource(Resource::mount, mnt_);
    if (::mount(loop_.c_str(), mnt_.c_str(), "btrfs", 0, nullptr) < 0)
      throw std::runtime_error("mount " + loop_ + " on " + mnt_ + ": " + std::strerror(errno));
  } catch (...) {
    teardown();
    throw;
  }
}

BtrfsPool::~BtrfsPool() { teardown(); }

// The share change signals of pools in this filesystem (named after the pool
// directory's st_dev, which every plain directory of the mount shares): the
// next loop mount may get the same device number.
static void remove_share_signals(const std::string& mnt) {
  struct stat st;
  if (::stat(mnt.c_str(), &st) != 0) return;
  std::string prefix = "hoody-shares-" + std::to_string(static_cast<unsigned long long>(st.st_dev)) + "-";
  DIR* d = ::opendir("/dev/shm");
  if (!d) return;
  while (auto* e = ::readdir(d))
    if (std::strncmp(e->d_name, prefix.c_str(), prefix.size()) == 0)
      ::unlink(("/dev/shm/" + std::string(e->d_name)).c_str());
  ::closedir(d);
}

void BtrfsPool::teardown() {
  if (mount_id_ && is_mounted(mnt_)) remove_share_signals(mnt_);
  if (mount_id_) {
    if (is_mounted(mnt_) && ::umount(mnt_.c_str()) < 0) {
      std::fprintf(stderr, "BtrfsPool: umount %s: %s; lazy unmount\n", mnt_.c_str(),
                   std::strerror(errno));
      ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    release(std::exchange(mount_id_, 0));
  }
  if (loop_id_) {
    if (!loop_.empty()) run({find_tool("losetup"), "-d", loop_}, 10s);
    release(std::exchange(loop_id_, 0));
  }
  if (dir_id_) {
    run({"rm", "-rf", "--one-file-system", dir_}, 60s);
    release(std::exchange(dir_id_, 0));
  }
}

std::string BtrfsPool::make_subvolume(std::string_view rel) {
  std::string p = mnt_ + "/" + std::string(rel);
  auto err = btrfs_util_create_subvolume(p.c_str(), 0, nullptr, nullptr);
  if (err != BTRFS_UTIL_OK)
    throw std::runtime_error("create subvolume " + p + ": " + btrfs_util_strerror(err) + ": " +
                             std::strerror(errno));
  return p;
}

std::string BtrfsPool::make_dir(std::string_view rel, mode_t mode) {
  std::string p = mnt_ + "/" + std::string(rel);
  if (::mkdir(p.c_str(), mode) < 0)
    throw std::runtime_error("mkdir " + p + ": " + std::strerror(errno));
  ::chmod(p.c_str(), mode);  // not filtered by the umask
  return p;
}

std::string BtrfsPool::make_temp_dir(std::string_view name) {
  std::string p = dir_ + "/" + std::string(name);
  if (::mkdir(p.c_str(), 0755) < 0)
    throw std::runtime_error("mkdir " + p + ": " + std::strerror(errno));
  return p;
}

}  // namespace hoody::test
