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
#pragma once

#include <fuse_lowlevel.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "hoody/result.hpp"

struct nfs_context;

namespace hoody::sharefs {

inline constexpr uint64_t kRemoteBits = (1ull << 63) | (1ull << 62);
inline constexpr double kAttrTimeout = 0.5;

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

  // Runs f(ctx) under the share's lock.
  template <typename F> auto with(F&& f) {
    std::lock_guard g(m_);
    return f(ctx_);
  }

private:
  RemoteShare(std::string n, std::string u) : name(std::move(n)), url(std::move(u)) {}
  std::mutex m_;
  nfs_context* ctx_ = nullptr;
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
  void forget(fuse_ino_t ino, uint64_t n);
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
