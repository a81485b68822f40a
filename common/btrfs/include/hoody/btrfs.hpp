// hoody::btrfs — BTRFS subvolume calls as free functions on fds, each reporting
// an errno through Result (the shape of snapper's BtrfsUtils over btrfs_util_*_fd).
//
// libbtrfsutil 6.2 (library 1.2.0) is the floor:
//  - only the old names exist (btrfs_util_create_snapshot_fd2, not _subvolume_snapshot);
//  - its subvolume iterator closes the fd it is given (fixed in 6.9.2), so
//    children() hands it a dup;
//  - RECURSIVE|READ_ONLY snapshots give EINVAL; there is no async flag.
// libbtrfsutil sets errno on failure; where it does not (a pure argument or
// "not a subvolume" result), the error code is mapped by to_errno().
#pragma once

#include <sys/types.h>
#include <time.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "hoody/result.hpp"
#include "hoody/unique_fd.hpp"

namespace hoody::btrfs {

// The inode number of every subvolume root (BTRFS_FIRST_FREE_OBJECTID).
inline constexpr ino_t kSubvolumeRootIno = 256;

struct SubvolumeInfo {
  uint64_t id = 0;
  uint64_t parent_id = 0;   // subvolume that holds this one (0 for the top level)
  uint64_t dir_id = 0;      // inode of the directory holding it in parent_id
  std::string uuid;         // "8-4-4-4-12" lowercase hex
  std::string parent_uuid;  // uuid of the source if this is a snapshot, else ""
  std::string received_uuid;  // "" unless received
  uint64_t generation = 0;
  uint64_t ctransid = 0;    // transaction of the last change of any inode in it
  uint64_t otransid = 0;    // transaction that created it
  struct timespec otime {}; // creation time
  struct timespec ctime {}; // last change of any inode in it
  bool readonly = false;
};

struct Child {
  std::string path;  // relative to the subvolume the listing started from
  uint64_t id = 0;
};

// The libbtrfsutil error code as an errno: errno itself when the library set
// one, else ENOTTY (not btrfs), EINVAL (argument, not a subvolume), ENOENT
// (subvolume not found), ENOMEM.  Exposed for tests.
Errno to_errno(int btrfs_util_error, int saved_errno);

// "0123abcd-..." from 16 bytes; "" when all zero.
std::string format_uuid(const uint8_t (&uuid)[16]);

// statfs magic is BTRFS_SUPER_MAGIC.
Result<bool> is_btrfs(int fd);
// fd is the root of a subvolume (a btrfs directory with inode 256).
Result<bool> is_subvolume(int fd);

// New empty subvolume `name` in dirfd.
Status create_subvolume(int dirfd, const char* name);
// Snapshot the subvolume src_fd as dst_dirfd/name.  Non-recursive: nested
// subvolumes appear as empty stubs.
Status snapshot(int src_fd, int dst_dirfd, const char* name, bool readonly);
// Delete subvolume dirfd/name (read-only ones too).  Without `recursive`, a
// subvolume holding other subvolumes gives ENOTEMPTY; with it, libbtrfsutil
// deletes the nested ones first, non-atomically (CAP_SYS_ADMIN).
Status delete_subvolume(int dirfd, const char* name, bool recursive = false);

Result<SubvolumeInfo> info(int fd);
Result<bool> is_readonly(int fd);
Status set_readonly(int fd, bool readonly);

// Subvolumes beneath the subvolume of fd (any depth), pre-order by default.
// Needs CAP_SYS_ADMIN (top = the fd's own subvolume id).
Result<std::vector<Child>> children(int fd, bool post_order = false);

// Commit the current transaction of the filesystem of fd and wait for it.
Status sync(int fd);
// Start a commit without waiting (BTRFS_IOC_START_SYNC): its transaction id,
// for wait_sync (BTRFS_IOC_WAIT_SYNC) later, e.g. from a worker thread.
Result<uint64_t> start_sync(int fd);
Status wait_sync(int fd, uint64_t transid);

// Open a directory for btrfs ioctls: O_RDONLY|O_DIRECTORY|O_NOFOLLOW|O_CLOEXEC.
Result<UniqueFd> open_dir(int dirfd, const char* name);

}  // namespace hoody::btrfs
