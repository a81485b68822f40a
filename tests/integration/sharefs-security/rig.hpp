// The sharefs test rig: a BTRFS pool laid out as hoody-sharefs expects it
// (POOL/containers/<C>/storage, each a subvolume; POOL/shares.db), the
// registry driven through its library, and one hoody-sharefs mount per
// receiving container.
//
//   ShareRig rig;
//   rig.container("c1", "p");  rig.container("c2", "p");
//   rig.write("c1", "data/f", "hello");
//   rig.offer("c1", "data", "c2", Mode::ro, "s");  rig.accept("c2", "s");
//   auto m = rig.mount("c2");           // m->root() == MNT, MNT/s is the share
//
// Helpers for what a security test needs: a snapshot of a directory tree
// (types, modes, owners, sizes, times, contents, xattrs) to prove that nothing
// changed, and a "jail" child: a process in its own mount namespace, chrooted
// into an empty directory where the mount is the only thing visible at /m, so
// that a symlink the caller's kernel follows lands in the jail and anything
// from the daemon's namespace can only have come through the daemon.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"
#include "share/registry.hpp"

namespace hoody::test {

using sharefs::Mode;

// $HOODY_SHAREFS (meson sets it once the hoody-sharefs target exists).
std::string sharefs_exe();

class ShareMount {
public:
  ShareMount(const std::string& exe, const std::string& pool, const std::string& container,
             const std::string& mountpoint, const std::string& log, const std::string& extra);
  const std::string& root() const { return mnt_; }
  std::string operator/(std::string_view rel) const { return mnt_ + "/" + std::string(rel); }
  Daemon& daemon() { return *daemon_; }

private:
  std::string mnt_;
  std::unique_ptr<Daemon> daemon_;
};

class ShareRig {
public:
  ShareRig();
  explicit ShareRig(BtrfsPool::Options opts);
  ~ShareRig();

  BtrfsPool& pool() { return pool_; }
  const std::string& path() const { return pool_.path(); }  // POOL
  sharefs::Registry& registry() { return *reg_; }

  // Adds container C (its storage subvolume, its registry row).
  void container(const std::string& c, const std::string& project = "");
  std::string storage(const std::string& c) const;  // POOL/containers/C/storage
  // Files and dirs in a container's storage, made directly (as the owner would).
  void write(const std::string& c, const std::string& rel, std::string_view data, mode_t mode = 0644);
  void mkdir(const std::string& c, const std::string& rel, mode_t mode = 0755);

  void offer(const std::string& owner, const std::string& source, const std::string& to,
             Mode mode, const std::string& name);
  void offer_project(const std::string& owner, const std::string& source,
                     const std::string& project, Mode mode, const std::string& name);
  void accept(const std::string& c, const std::string& name);
  void revoke(const std::string& owner, const std::string& name);

  // hoody-sharefs -f -o container=C,registry=POOL/shares.db[,extra] POOL MNT
  std::unique_ptr<ShareMount> mount(const std::string& c, const std::string& extra = "allow_other");

private:
  BtrfsPool pool_;
  std::optional<sharefs::Registry> reg_;
  int mounts_ = 0;
};

// Waits until `path` exists (true) or the deadline passes (false): registry
// changes reach a daemon through the change signal, not at once.
bool wait_for_path(const std::string& path, bool exists = true,
                   std::chrono::milliseconds timeout = std::chrono::seconds(3));

// Everything about a tree that a mutation could change, one line per entry,
// sorted: "path type mode uid:gid size mtime.ns ctime? content-hash xattrs".
// (ctime is left out: reading never changes it, but it is not what we assert.)
std::string snapshot_tree(const std::string& root);

// Runs fn in a forked child that unshares its mount namespace, binds `mnt`
// at JAIL/m and chroots into JAIL (an empty dir): the caller's "/" is then
// the jail.  as_nobody drops to 65534 after the chroot.  fn's return value
// is the exit code; its stdout/stderr go to ExitInfo::output.
ExitInfo in_jail(const std::string& jail, const std::string& mnt, std::function<int()> fn,
                 bool as_nobody = false, std::chrono::milliseconds timeout = std::chrono::seconds(60));
// The same, started and not waited for.
Child start_in_jail(const std::string& jail, const std::string& mnt, std::function<int()> fn,
                    bool as_nobody = false, std::chrono::milliseconds timeout = std::chrono::seconds(60));

// A child that runs fn and reports errno names: helpers for checks in children.
std::string errname(int e);

// /proc/self/mountinfo's per-mount options for `mountpoint` ("" when absent).
std::string mount_options(const std::string& mountpoint);

}  // namespace hoody::test
