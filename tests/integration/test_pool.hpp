// What the btrfs and snapfs integration tests share on top of the rig
// (tests/support): a BtrfsPool with an fd of its root, behind the capability
// checks, and sh() for setting up file trees.
#pragma once

#include <fcntl.h>

#include <stdexcept>
#include <string>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/process.hpp"
#include "hoody/unique_fd.hpp"

namespace hoody::test {

// Run `cmd` with sh -c; its output without the last newline; throws on failure.
inline std::string sh(const std::string& cmd) {
  std::string out = run_checked({"sh", "-c", cmd});
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Pool {
public:
  Pool() : checked_(check()), root_(::open(pool_.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (!root_) throw std::runtime_error("open " + pool_.path() + " failed");
  }
  const std::string& path() const { return pool_.path(); }
  int fd() const { return root_.get(); }

private:
  static bool check() {
    require_root();
    require_loop();
    require_btrfs();
    return true;
  }
  bool checked_;  // the capability checks run before the pool is made
  BtrfsPool pool_;
  UniqueFd root_;
};

}  // namespace hoody::test
