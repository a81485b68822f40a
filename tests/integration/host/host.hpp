// A host that runs containers, as scripts/hoody-up makes it, on a temp pool:
// Host runs hoody-up and hoody-down with the pool, the run dir (instead of
// /run/hoody), the fragment's target root (instead of /) and the cgroup root
// (instead of /sys/fs/cgroup) all in the test's temp dir; Container plays a
// container with a mount namespace of its own that mounts its fstab fragment
// with `mount -T FRAGMENT -a`, as a runtime would.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test {

class Host {
public:
  Host();
  ~Host();  // hoody-down (all), then the guard's records are released
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  // scripts/hoody-up OPTIONS... CONTAINERS... (registers what it will mount
  // with the guard first).  extra_env: more NAME=VALUE for this run.
  ExitInfo up(const std::vector<std::string>& containers, const std::vector<std::string>& options = {},
              const std::vector<std::string>& extra_env = {});
  ExitInfo down(const std::vector<std::string>& containers = {});
  // Register RUN/C's mounts with the guard (up() does it; call it first
  // when up() runs on several threads).
  void guard(const std::string& c);
  // hoody-share --pool POOL ARGS...
  ExitInfo share(const std::vector<std::string>& args);

  BtrfsPool pool;
  std::string run_dir;  // RUN: RUN/C/{storage,databases,.snapshots,shares,ramdisk}, RUN/C.fstab
  std::string target;   // the fragment's target root: TARGET/hoody, TARGET/ramdisk
  std::string cgroups;  // HOODY_CGROUP_ROOT: an empty dir unless a test fills it

  std::string fragment(const std::string& c) const { return run_dir + "/" + c + ".fstab"; }
  std::string storage_of(const std::string& c) const { return pool.path() + "/containers/" + c + "/storage"; }

private:
  ExitInfo script(const std::string& name, const std::vector<std::string>& args,
                  const std::vector<std::string>& extra_env = {});
  std::vector<std::uint64_t> ids_;
  std::set<std::string> guarded_;
  bool downed_ = false;
};

// A container: a process in a mount namespace of its own (a slave of the
// host's, as runtimes make them) that has mounted FRAGMENT with mount -T -a.
class Container {
public:
  Container(std::string name, const std::string& fragment);
  ~Container();
  Container(const Container&) = delete;
  Container& operator=(const Container&) = delete;

  pid_t pid() const { return child_.pid(); }
  const std::string& name() const { return name_; }
  bool ready() const { return ready_ok_; }
  std::string failure();  // why it did not come up (its output)

  // Run fn in a child process inside this container's mount namespace.
  ExitInfo run(std::function<int()> fn, ChildOptions opts = {});
  // A child inside the namespace that lives on (for files held open).
  Child start(std::function<int()> fn, ChildOptions opts = {});
  // Run a program inside the namespace.
  ExitInfo exec(const std::vector<std::string>& argv);

private:
  std::string name_;
  Pipe ready_;
  Child child_;
  bool ready_ok_ = false;
};

// The mounts of this namespace at or under `dir` (after the test entered one).
struct MountLine {
  int id = 0;
  std::string mount_point, fstype, options, propagation;
};
std::vector<MountLine> mounts_under(const std::string& dir);

// The pids of the hoody daemons serving `mountpoint` (the last argument of a
// hoody-dbfs/snapfs/sharefs command line), as hoody-down finds them.
std::vector<pid_t> daemons_of(const std::string& mountpoint);

}  // namespace hoody::test
