// The parity harness: run the same calls on a FUSE mount and on a plain
// directory of the same BTRFS pool, compare what they return (mergerfs
// tests/posix_parity.py, compare_calls).
//
// A check is a lambda (const Tree&, Trace&) that performs calls on the tree
// and records each result in the Trace: return values, errno names, and the
// facts that must match (sizes, modes, nlink, types, contents, names, xattr
// values).  Inode numbers, device numbers and times that legitimately differ
// are never recorded.  The two traces must be equal.
#pragma once

#include <doctest/doctest.h>
#include <sys/stat.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/errno_name.hpp"
#include "hoody/test/daemon.hpp"

namespace hoody::test {

struct Tree {
  std::string label;  // "native" or "mount"
  std::string root;
  std::string operator/(std::string_view rel) const { return root + "/" + std::string(rel); }
};

using ::hoody::errno_name;  // "ENOENT"
std::string describe_stat(const struct stat& st);  // type mode nlink size uid gid

class Trace {
public:
  // The result of a call: "label=r", or "label=ENOENT" when r < 0 (errno is
  // read first thing, so pass the call's return value straight in).
  Trace& rc(std::string_view label, long r);
  Trace& val(std::string_view label, std::string_view value);
  Trace& stat(std::string_view label, const std::string& path, bool follow = true);
  Trace& fstat(std::string_view label, int fd);
  Trace& content(std::string_view label, const std::string& path);  // whole file (hashed if big)
  const std::string& text() const { return text_; }

private:
  std::string text_;
};

// Short form of data for a trace: itself when short and printable, else size+hash.
std::string summarize(std::string_view data);

// Divergences accepted (and reported as a message) for a daemon.
struct Known {
  const char* bindfs = nullptr;  // accepted when the daemon under test is bindfs
  const char* fuse = nullptr;    // accepted for any FUSE daemon: no daemon can do better
  const char* sharefs = nullptr;  // accepted for hoody-sharefs: its policy (no special files, ...)
};

using Check = std::function<void(const Tree&, Trace&)>;

// How the mount under test is made.  The default (Parity()) is the dbfs
// area's daemon on a plain directory of the pool; another area passes its
// own (hoody-sharefs: the tree is a share under the mount).
struct MountSetup {
  std::vector<std::string> argv;  // the daemon
  std::string mountpoint;         // what Daemon waits for
  std::string root;               // the tree under test: the mountpoint or a dir below it
  std::string backing;            // where root's content lives on the pool
};
using Setup = std::function<MountSetup(BtrfsPool&)>;

// What Parity() mounts: one definition per binary (posix/dbfs_setup.cpp for
// the posix area, sharefs-security/parity_setup.cpp for sharefs-parity), so that the
// same checks run against each daemon.
MountSetup default_mount_setup(BtrfsPool& pool);
// "dbfs" or "sharefs": which Known reasons apply.
const char* parity_daemon();

class Parity {
public:
  Parity();
  explicit Parity(const Setup& setup);
  ~Parity();

  const Tree& native() const { return native_; }
  const Tree& mount() const { return mount_; }
  BtrfsPool& pool() { return pool_; }
  // The backing directory of the mount (on the pool), for setup that cannot
  // go through FUSE (subvolumes); relative paths map 1:1 to mount().
  const std::string& backing() const { return backing_; }

  // Run fn on the native tree, then on the mount, and compare the traces.
  void check(const std::string& what, const Check& fn, Known known = {});
  // The same, each run in a forked child as nobody (65534:65534).
  void check_as_nobody(const std::string& what, const Check& fn, Known known = {});

private:
  void compare(const std::string& what, const std::string& a, const std::string& b, Known known);

  bool capable_;  // first: the capability checks run before anything is made
  BtrfsPool pool_;
  MountSetup setup_;
  std::string backing_;
  Daemon daemon_;
  Tree native_, mount_;
};

}  // namespace hoody::test
