// hoody::send — the BTRFS send stream: run BTRFS_IOC_SEND, parse the stream,
// and fold it into a diff (`+ path`, `- path`, `M path`, `R old -> new`).
//
// Stream format (btrfs-progs kernel-shared/send.h): a header "btrfs-stream\0"
// + le32 version, then commands: le32 len (payload only), le16 cmd, le32 crc,
// then `len` bytes of TLVs (le16 type, le16 len, value).  The crc is crc32c
// (Castagnoli, seed 0, no final inversion) over header+payload with the crc
// field zeroed.  From version 2 on, A_DATA carries no length: it is the rest
// of the command.
//
// Send needs CAP_SYS_ADMIN and read-only subvolumes (EPERM otherwise).
#pragma once

#include <time.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "hoody/result.hpp"

namespace hoody::send {

enum class Cmd : uint16_t {
  unspec = 0,
  subvol = 1,
  snapshot = 2,
  mkfile = 3,
  mkdir = 4,
  mknod = 5,
  mkfifo = 6,
  mksock = 7,
  symlink = 8,
  rename = 9,
  link = 10,
  unlink = 11,
  rmdir = 12,
  set_xattr = 13,
  remove_xattr = 14,
  write = 15,
  clone = 16,
  truncate = 17,
  chmod = 18,
  chown = 19,
  utimes = 20,
  end = 21,
  update_extent = 22,
  // version 2
  fallocate = 23,
  setflags = 24,
  encoded_write = 25,
  // version 3
  enable_verity = 26,
};

enum class Attr : uint16_t {
  unspec = 0,
  uuid = 1,
  ctransid = 2,
  ino = 3,
  size = 4,
  mode = 5,
  uid = 6,
  gid = 7,
  rdev = 8,
  ctime = 9,
  mtime = 10,
  atime = 11,
  otime = 12,
  xattr_name = 13,
  xattr_data = 14,
  path = 15,
  path_to = 16,
  path_link = 17,
  file_offset = 18,
  data = 19,
  clone_uuid = 20,
  clone_ctransid = 21,
  clone_path = 22,
  clone_offset = 23,
  clone_len = 24,
};

inline constexpr std::string_view kStreamMagic{"btrfs-stream\0", 13};
inline constexpr std::size_t kStreamHeaderSize = 13 + 4;
inline constexpr std::size_t kCmdHeaderSize = 4 + 2 + 4;
inline constexpr std::size_t kTlvHeaderSize = 2 + 2;
inline constexpr uint32_t kMaxStreamVersion = 3;

// "mkfile", "rename", ...; "cmd<N>" for an unknown number.
std::string cmd_name(uint16_t cmd);

// One command with the attributes diff and inspection need.  File data is
// not kept (only its length).  Fields an attribute did not set stay empty/0.
struct Command {
  uint16_t cmd = 0;        // a Cmd value, or an unknown number (kept, ignored by diff)
  std::string path;        // A_PATH, relative to the subvolume root ("" is the root)
  std::string path_to;     // A_PATH_TO: rename destination
  std::string path_link;   // A_PATH_LINK: link target (existing name) or symlink contents
  std::string clone_path;  // A_CLONE_PATH
  std::string xattr_name;  // A_XATTR_NAME
  std::string uuid;        // A_UUID, formatted
  std::string clone_uuid;  // A_CLONE_UUID, formatted
  uint64_t ino = 0, size = 0, mode = 0, uid = 0, gid = 0, rdev = 0;
  uint64_t ctransid = 0, clone_ctransid = 0;
  uint64_t file_offset = 0, clone_offset = 0, clone_len = 0;
  uint64_t data_len = 0;   // bytes of A_DATA / A_XATTR_DATA
  struct timespec atime {}, mtime {}, ctime {};
};

struct Stream {
  uint32_t version = 0;
  std::vector<Command> commands;
};

// crc32c (Castagnoli) with `seed` and no pre/post inversion, as btrfs send uses it.
uint32_t crc32c(uint32_t seed, const void* data, std::size_t n);

// Parse a whole stream.  EBADMSG for a bad magic, a truncated command or TLV,
// or a crc mismatch (logged at debug with the offset); EPROTONOSUPPORT for a
// version above kMaxStreamVersion.
Result<Stream> parse(std::string_view bytes);
// The same, one command at a time (none kept); returns the stream's version.
// fn may have seen the commands before an error.
Result<uint32_t> parse_each(std::string_view bytes, const std::function<void(Command&&)>& fn);

struct SendOptions {
  int parent_fd = -1;             // older read-only snapshot: incremental stream
  std::vector<int> clone_fds;     // extra clone sources (read-only subvolumes)
  bool no_file_data = true;       // BTRFS_SEND_FLAG_NO_FILE_DATA
  uint32_t version = 0;           // stream protocol: 0 = the kernel's default (1), or 2
};

// BTRFS_IOC_SEND of the read-only subvolume `subvol_fd` into a pipe drained
// by a thread; returns the raw stream.
Result<std::string> run_send(int subvol_fd, const SendOptions& opts = {});

// ---- diff ----------------------------------------------------------------

// not_captured: a subvolume nested in a snapshotted one, which BTRFS holds as
// an empty directory (never from a send stream; added by the snapshot store).
enum class ChangeKind { added, removed, modified, renamed, not_captured };

struct Change {
  ChangeKind kind = ChangeKind::modified;
  std::string path;  // the path (the old path for `renamed`)
  std::string to;    // the new path for `renamed`, else ""
  friend bool operator==(const Change&, const Change&) = default;
};

// Fold the commands of an incremental stream into changes:
//  - entries created under orphan names (o<ino>-<gen>-<idx>) and renamed into
//    place are `+ final`; an existing entry moved to an orphan name and then
//    removed is `- original`;
//  - rename, and link+unlink of one inode, are `R old -> new`; a link kept
//    beside its original name is `+ new`;
//  - data (write, update_extent, clone, truncate, fallocate), metadata (chmod,
//    chown, xattrs, setflags) and utimes of existing entries are `M path`;
//    utimes alone on a renamed entry is not reported (the rename is);
//  - the subvolume root itself is never reported.
// The result is deduplicated and sorted by path, then kind.
std::vector<Change> diff(const std::vector<Command>& commands);

// "+ a", "- a", "M a", "R a -> b"; bytes outside printable ASCII and '\' are
// escaped as \n, \t, \\ or \xNN so that one change is one line.
std::string format(const Change& c);
std::string escape_path(std::string_view path);

// run_send(new, parent=old) + parse + diff.  Both must be read-only
// snapshots of one subvolume lineage.
Result<std::vector<Change>> diff_subvolumes(int old_fd, int new_fd);

}  // namespace hoody::send
