// hoody-sharefs: shares from another server, reached over NFSv3 with libnfs
// (userspace: no kernel NFS client, no mount in the container).
//
// The owner's server exports the share (nfs-ganesha, one export per share,
// this server's address only, ids squashed; see hoody-sharefs(8)); this
// side connects one libnfs context per share (libnfs 4.0 contexts are not
// thread-safe: every call on a share holds its mutex) and serves the tree
// under MNT/NAME with node ids of its own: virtual ids (bit 63) with bit 62
// set, which sharefs::Fs routes here before the passthrough core sees them.
//
// Nodes are named by their path inside the export (libnfs's sync API is
// path-based); a rename moves the paths of the node and everything below.
// Every name from the server is checked (no '/', not "." or "..", at most
// 255 bytes); symlinks are never followed (lstat, readlink verbatim).
// Policy as for a local share: a read-only share gives EROFS for every
// mutating call, special files show as empty mode-0000 files and never
// open, mknod is refused; a revoked share gives ESTALE for every request
// (also on open files) from the moment the registry says so.
// Attributes and entries are kept by the kernel for kAttrTimeout only, and
// a file's cached pages are dropped at each open (close-to-open, as NFS).
// Sequential reads of an open file are pipelined: kAheadChunks reads of the
// next chunks stay in flight (the server works while the kernel is served)
// and FUSE READs are answered from them; a read elsewhere in the file drops
// them and reads just what it asks.  A write, truncate or open(O_TRUNC)
// through this daemon on any file of the share makes every chunk read ahead
// before it stale (never served); a revoked share fails at once.
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <deque>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "hoody/result.hpp"

struct nfs_context;
struct nfsfh;

namespace hoody::sharefs {

inline constexpr uint64_t kRemoteBits = (1ull << 63) | (1ull << 62);
inline constexpr double kAttrTimeout = 0.5;
// Measured on the two-server rig (remote_share_bench.sh): two reads of 1 MiB
// in flight beat eight of 128 KiB (and four of 1 MiB) by far on 2 cores.
inline constexpr size_t kAheadChunks = 2;           // read-ahead requests in flight per file
inline constexpr size_t kAheadChunk = 1024 * 1024;  // bytes each, at most (the server's rtmax if less)

// One NFS export (one accepted remote share).
class RemoteShare {
public:
  // Connects to `url` (nfs://SERVER/PATH?nfsport=N&mountport=M) as NFSv3.
  static Result<std::shared_ptr<RemoteShare>> connect(const std::string& name, const std::string& url,
                                                      bool read_only, std::string* why);
  ~RemoteShare();
  RemoteShare(const RemoteShare&) = delete;
  RemoteShare& operator=(const RemoteShare&) = delete;

  const std::string name;
  const std::string url;
  std::atomic<bool> read_only{false};
  std::atomic<bool> revoked{false};
  // Bumped after each change of file data through this daemon: a read-ahead
  // window fetched under an older value is never served.
  std::atomic<uint64_t> writes{0};

  // Runs f(ctx) under the share's lock.
  template <typename F> auto with(F&& f) {
    std::lock_guard g(m_);
    return f(ctx_);
  }
  // One read of a file sent ahead of the kernel asking for it.
  struct Chunk {
    uint64_t off = 0;
    size_t len = 0;
    uint64_t writes = 0;  // the share's `writes` when it was sent
    std::atomic<bool> done{false};
    int rc = 0;  // bytes read or -errno, once done
    std::vector<char> data;
  };
  // Sends the read of `c` without waiting: its answer is taken in by any
  // later call on the share (the callback keeps `c` alive until then).
  Status send_read(nfsfh* fh, const std::shared_ptr<Chunk>& c);
  // Serves the connection until `c` is answered; EIO after the timeout.
  Status wait(const Chunk& c);
  // The read-ahead chunk size for this server.
  size_t chunk() const { return chunk_; }

private:
  RemoteShare(std::string n, std::string u) : name(std::move(n)), url(std::move(u)) {}
  std::mutex m_;
  nfs_context* ctx_ = nullptr;
  size_t chunk_ = kAheadChunk;
};

// The remote nodes of one mount and the FUSE ops on them.  Each op replies.
class RemoteFs {
public:
  static bool owns(fuse_ino_t ino) { return (ino & kRemoteBits) == kRemoteBits; }

  // The entry of a share's root (MNT/NAME), its lookup counted.
  Result<fuse_entry_param> root_entry(const std::shared_ptr<RemoteShare>& share);
  // Marks the share revoked; returns the node ids the kernel may hold of it.
  std::vector<fuse_ino_t> revoke(const std::shared_ptr<RemoteShare>& share);
  std::vector<fuse_ino_t> nodes_of(const RemoteShare* share);

  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  // True when the node is gone (its last lookup forgotten).
  bool forget(fuse_ino_t ino, uint64_t n);
  void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  void read(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi);
  void write_buf(fuse_req_t req, fuse_bufvec* in, off_t off, fuse_file_info* fi);
  void release(fuse_req_t req, fuse_file_info* fi);
  void fsync(fuse_req_t req, fuse_file_info* fi);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus);
  void releasedir(fuse_req_t req, fuse_file_info* fi);
  void statfs(fuse_req_t req, fuse_ino_t ino);
  void lseek(fuse_req_t req, off_t off, int whence, fuse_file_info* fi);
  // Mutating calls the remote side does not define: EROFS on a read-only
  // share, ESTALE on a revoked one, else `err`.
  void refuse_change(fuse_req_t req, fuse_ino_t ino, int err);
  // errno for open(O_TMPFILE) in a remote directory.
  int tmpfile_errno(fuse_ino_t ino);

private:
  struct Node {
    std::shared_ptr<RemoteShare> share;
    std::string path;  // "/" for the share's root, else "/a/b"
    uint64_t nlookup = 0;
  };
  struct File;
  // The node's share and path, ESTALE when revoked or unknown.
  Result<Node> node(fuse_ino_t ino);
  // The entry for `path` of `share` (a node made or found, its lookup counted).
  Result<fuse_entry_param> entry(const std::shared_ptr<RemoteShare>& share, const std::string& path);
  fuse_ino_t intern(const std::shared_ptr<RemoteShare>& share, const std::string& path);
  void moved(const RemoteShare* share, const std::string& from, const std::string& to);

  std::mutex m_;
  uint64_t next_ = 1;
  std::unordered_map<fuse_ino_t, Node> nodes_;
  std::map<std::pair<const RemoteShare*, std::string>, fuse_ino_t> by_path_;
};

}  // namespace hoody::sharefs
