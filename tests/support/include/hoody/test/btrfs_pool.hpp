// BtrfsPool: a BTRFS filesystem on a loop device made from a sparse image in a
// temp dir, for one test.  The destructor unmounts it, detaches the loop device
// and removes the dir; every step is registered with the guard first, so the
// guard undoes it when the test crashes or times out.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace hoody::test {

class BtrfsPool {
public:
  struct Options {
    std::uint64_t size = 1ull << 30;  // sparse: costs only what is written
  };

  BtrfsPool();  // throws std::runtime_error (with the tool's output) on failure
  explicit BtrfsPool(Options opts);
  ~BtrfsPool();
  BtrfsPool(const BtrfsPool&) = delete;
  BtrfsPool& operator=(const BtrfsPool&) = delete;

  const std::string& path() const { return mnt_; }  // the mounted filesystem root
  const std::string& dir() const { return dir_; }   // the temp dir (image, logs, mountpoints)
  const std::string& loop_device() const { return loop_; }

  // Create a subvolume / a directory at `rel` under path(); return its full path.
  std::string make_subvolume(std::string_view rel);
  std::string make_dir(std::string_view rel, mode_t mode = 0755);
  // A fresh empty directory in dir() (not on BTRFS), e.g. for a mountpoint.
  std::string make_temp_dir(std::string_view name);

private:
  void teardown();

  std::string dir_, image_, mnt_, loop_;
  std::uint64_t dir_id_ = 0, loop_id_ = 0, mount_id_ = 0;
};

}  // namespace hoody::test
