// The passthrough core: an inode-based FUSE lowlevel filesystem over a backing
// directory, in the manner of libfuse's example/passthrough_hp.cc.
//
// - The inode table is keyed by the backing (st_dev, st_ino); each Inode holds
//   an O_PATH|O_NOFOLLOW fd and every access is fd-relative (no path strings,
//   no realpath).  The FUSE node id is the Inode's address.
// - Lookup counts are kept exactly; an Inode leaves the table at its last forget.
// - O_PATH fds are budgeted: past the budget the least recently pinned idle
//   inodes give up their fd and keep a file handle (name_to_handle_at), reopened
//   with open_by_handle_at on the next use.
// - Creation runs with the caller's fsuid/fsgid, so new files belong to the
//   caller and the backing filesystem applies setgid-directory rules.
// - The source has an epoch: reroot() (a restore exchanged the subvolume at
//   SOURCE) starts a new one.  Inodes and open files of an older epoch are
//   stale: the daemon closes its fds into the old tree, requests relative to
//   a stale inode give ESTALE, changes through a stale file give EIO (logged
//   once per pid); unlock, flush, release and reads still work.
//
// Daemons build on it by subclassing PassthroughFs and overriding the hooks at
// the bottom (lock handling for hoody-dbfs; access policy, read-only and
// special-file refusal for hoody-sharefs and hoody-snapfs).
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "hoody/result.hpp"
#include "hoody/sys.hpp"
#include "hoody/io_engine.hpp"
#include "hoody_config.h"
#include "hoody/unique_fd.hpp"

struct file_handle;

namespace hoody {

class MountArgs;
class OptionTable;

namespace pt {

struct Config {
  std::string source;
  double entry_timeout = 1.0;     // see fuse-limits.md: 1 s gives the full benefit of 86400 s
  double attr_timeout = 1.0;
  double negative_timeout = 1.0;  // SQLite probes -journal/-wal on every transaction
  bool keep_cache = true;         // keep the page cache across opens (the daemon is the only writer)
  bool cache_readdir = true;
  bool readdirplus = true;
  bool splice_write = true;       // replies to reads spliced from the backing file
  bool splice_read = false;       // receiving WRITE data by splice measured 20% slower
  bool writeback_cache = false;   // buys write() latency, not commit throughput
  bool read_only = false;         // every mutating request gets EROFS
  size_t fd_budget = 0;           // O_PATH fds kept open; 0: 3/4 of RLIMIT_NOFILE
  // Backing I/O engine, "sync" or "uring": the meson option io_default,
  // chosen by tests/bench/fs_bench (sync won 5 of 6 workloads).
  std::string io = HOODY_IO_DEFAULT;
};

// Adds the core's -o options (entry_timeout=, attr_timeout=, ...) to a table.
void add_options(OptionTable& table);
// Reads them back into a Config (source from the positional argument).
Config config_from(const MountArgs& args);

// One backing inode.
struct Inode {
  Inode(UniqueFd fd, dev_t dev, ino_t ino, mode_t mode, uint64_t epoch_of_source = 0)
      : src_dev(dev), src_ino(ino), type(mode & S_IFMT), epoch(epoch_of_source),
        fd_(std::move(fd)) {}

  const dev_t src_dev;
  const ino_t src_ino;
  const mode_t type;  // S_IFMT bits; an inode never changes type
  // The epoch of the source it was found in (PassthroughFs::epoch()).  An
  // inode of an older epoch is stale: its fd is closed, requests on it give ESTALE.
  const uint64_t epoch;

  // Guarded by PassthroughFs::mutex_.
  uint64_t nlookup = 0;
  // Where it was last looked up (parent's backing key and the name): for the
  // paths of holders() and messages only, best effort.
  std::pair<dev_t, ino_t> parent_key{0, 0};
  std::string name;

  // Guards fd_, handle_, pins_, mount_id_.  Lock order: PassthroughFs::mutex_
  // before Inode::m; never take PassthroughFs::mutex_ while holding it.
  std::mutex m;
  UniqueFd fd_;                    // O_PATH|O_NOFOLLOW, or invalid when evicted
  std::unique_ptr<char[]> handle_; // struct file_handle, kept once evicted
  int mount_id_ = -1;
  unsigned pins_ = 0;
  uint64_t last_use_ = 0;          // budget clock
  bool retired_ = false;           // stale: fd_ closes when the last pin goes
};

// A pinned O_PATH fd of an inode: the fd stays open while the FdRef lives.
class FdRef {
public:
  FdRef() = default;
  FdRef(Inode* inode, int fd) : inode_(inode), fd_(fd) {}
  FdRef(FdRef&& o) noexcept : inode_(std::exchange(o.inode_, nullptr)), fd_(o.fd_) {}
  FdRef& operator=(FdRef&&) = delete;
  ~FdRef();
  int get() const { return fd_; }

private:
  Inode* inode_ = nullptr;
  int fd_ = -1;
};

// An open file: fuse_file_info::fh points to one.
struct File {
  UniqueFd fd;
  int flags = 0;  // the open(2) flags the kernel passed
  Inode* inode = nullptr;
  uint64_t epoch = 0;  // the source epoch it was opened in (stale when older)
  pid_t pid = 0;       // the opener (fuse_req_ctx), for holders()
  std::string path;    // the name it was opened under, relative to the mount
};

// A process with a file open through the mount (holders()).
struct Holder {
  pid_t pid = 0;
  std::string comm;  // from /proc/PID/comm; "" when the process is gone
  std::string path;  // relative to the mount
};

// What reroot() did.
struct Reroot {
  bool changed = false;
  uint64_t epoch = 0;                  // the epoch now served
  std::vector<fuse_ino_t> stale;       // node ids of the old tree still known to the kernel
  std::vector<std::string> old_names;  // the old root's listing
  std::vector<std::string> new_names;  // the new root's listing
};

class PassthroughFs {
public:
  explicit PassthroughFs(Config cfg);
  virtual ~PassthroughFs();
  PassthroughFs(const PassthroughFs&) = delete;
  PassthroughFs& operator=(const PassthroughFs&) = delete;

  // Opens the backing directory; a one-line reason on failure.
  virtual Status open_source(std::string* why);
  // Serves SOURCE anew after the directory at that path was replaced (a
  // snapshot restore swaps subvolumes with RENAME_EXCHANGE), and starts a new
  // epoch: every inode of the old tree becomes stale (its O_PATH fd is closed
  // and its file handle dropped, so the daemon keeps nothing open in the old
  // tree; requests on it give ESTALE), and files opened before refuse every
  // change (stale_refusal()).  `changed` is false when SOURCE is still the
  // same directory.  Not thread-safe with itself: the caller serializes.
  Result<Reroot> reroot();
  // Drops what the kernel cached of the old tree after a reroot: the root's
  // attributes and listing, and every name of the old and the new root (a
  // dentry invalidated drops its subtree), so the next lookup, open and
  // readdir reach the new tree.  Never call it from a request of this mount.
  void invalidate_kernel(fuse_session* se, const Reroot& r);
  uint64_t epoch() const { return epoch_.load(); }
  bool stale(const File& f) const { return f.epoch != epoch_.load(); }
  bool stale(const Inode& in) const { return in.epoch != epoch_.load(); }
  // Processes with files open through the mount (only those opened in an
  // older epoch when stale_only), one row per (pid, path).
  std::vector<Holder> holders(bool stale_only);
  // The path of the directory with backing key (dev, ino) relative to the
  // mount ("" for the root), as far as the inode table knows it.
  std::string dir_path(dev_t dev, ino_t ino);

  // The operations table of this filesystem (lock ops only when wanted).
  struct OpsFeatures {
    bool posix_locks = false;  // getlk/setlk answered by the daemon
    bool flock = false;
  };
  static fuse_lowlevel_ops make_ops(OpsFeatures f);

  const Config& config() const { return cfg_; }
  int root_fd() const { return root_.load()->fd_.get(); }
  Inode* inode(fuse_ino_t ino);
  Result<FdRef> pin(Inode* inode);
  size_t inode_count();
  size_t open_path_fds() const { return path_fds_.load(); }

  // ---- the operations (ops_*.cpp); each replies exactly once -------------
  virtual void init(fuse_conn_info* conn);
  virtual void destroy() {}
  virtual void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  virtual void forget(fuse_ino_t ino, uint64_t nlookup);
  virtual void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  virtual void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                       fuse_file_info* fi);
  virtual void readlink(fuse_req_t req, fuse_ino_t ino);
  virtual void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  virtual void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  virtual void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name);
  virtual void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
  virtual void unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  virtual void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  virtual void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                      const char* newname, unsigned flags);
  virtual void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  virtual void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                      fuse_file_info* fi);
  virtual void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  virtual void write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off,
                         fuse_file_info* fi);
  virtual void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  virtual void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  virtual void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  virtual void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  virtual void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       fuse_file_info* fi, bool plus);
  virtual void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  virtual void fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  virtual void statfs(fuse_req_t req, fuse_ino_t ino);
  virtual void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                        size_t size, int flags);
  virtual void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  virtual void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  virtual void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  virtual void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                         fuse_file_info* fi);
  virtual void copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in,
                               fuse_file_info* fi_in, fuse_ino_t ino_out, off_t off_out,
                               fuse_file_info* fi_out, size_t len, int flags);
  virtual void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);
  virtual void getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock);
  virtual void setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
                     int sleep);
  virtual void flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op);

protected:
  // ---- extension points ---------------------------------------------------
  // Decides whether a request may change anything (EROFS for read-only).
  virtual Status may_mutate(fuse_req_t req, const char* what);
  // Decides whether an inode may be opened with these flags (sharefs refuses
  // device nodes, FIFOs and sockets).
  virtual Status may_open(fuse_req_t req, Inode& inode, int flags);
  // A name was looked up or created in a directory (dbfs classifies SQLite files).
  virtual void on_entry(Inode& /*parent*/, Inode& /*child*/, const char* /*name*/) {}
  // A file was opened; fi->fh is set.
  virtual void on_open(fuse_req_t /*req*/, File& /*file*/, fuse_file_info* /*fi*/) {}
  // FLUSH (every close(2) of a descriptor) and RELEASE (the last one).
  virtual void on_flush(fuse_req_t /*req*/, File& /*file*/, fuse_file_info* /*fi*/) {}
  virtual void on_release(File& /*file*/, fuse_file_info* /*fi*/) {}
  // Data was written (dbfs watches the SQLite header bytes 18-19).
  virtual void on_write(File& /*file*/, off_t /*off*/, size_t /*len*/) {}
  // The kernel forgot the inode; it leaves the table after this returns.
  // Called with mutex_ held: do not call back into the table.
  virtual void on_forget(Inode& /*inode*/) {}

  // The answer to a change through a File of an older epoch: EIO, logged at
  // warn once per process ("file opened before a restore of the source").
  Status stale_refusal(fuse_req_t req, const char* op, const File& f);

  // The st_ino shown for a backing (st_dev, st_ino).  Every file of one
  // mount shares one st_dev, so inodes of other subvolumes (snapshots, nested
  // subvolumes) get a per-device prefix in the top 16 bits; the source's own
  // numbers stay as they are.  Keeps du, tar and cp -a from taking files of
  // two snapshots for hard links of each other.
  ino_t shown_ino(dev_t dev, ino_t ino);
  void show(struct stat& st) { st.st_ino = shown_ino(st.st_dev, st.st_ino); }

  // Looks `name` up in `parent` and returns the entry with its lookup counted.
  Result<fuse_entry_param> do_lookup(fuse_ino_t parent, const char* name);
  void reply_entry(fuse_req_t req, fuse_ino_t parent, const char* name, Status made);
  void forget_one(Inode* inode, uint64_t n);
  static File* file_of(fuse_file_info* fi) { return reinterpret_cast<File*>(fi->fh); }
  fuse_ino_t ino_of(Inode* in) const {
    return in == root_.load() ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(in);
  }

  Config cfg_;
  // The backing I/O engine; null for io=sync (reads are spliced, writes
  // copied by libfuse, fsyncs done in the worker).
  std::unique_ptr<io::Engine> io_;

private:
  void evict_over_budget();
  std::string path_locked(const Inode* in);
  void track(File* f, fuse_req_t req);
  void untrack(File* f);
  // open and create: the File of a backing fd, tracked, in fi->fh, on_open
  // told; and its undoing when the opener was gone before the reply.
  File* new_file(fuse_req_t req, Inode* in, UniqueFd fd, fuse_file_info* fi);
  void drop_file(File* f, fuse_file_info* fi);

  // Guards inodes_ and every Inode::nlookup.  Lock order: before any Inode::m.
  std::mutex mutex_;
  struct KeyHash {
    size_t operator()(const std::pair<dev_t, ino_t>& k) const {
      return std::hash<uint64_t>()(k.first * 0x9e3779b97f4a7c15ULL ^ k.second);
    }
  };
  std::unordered_map<std::pair<dev_t, ino_t>, std::unique_ptr<Inode>, KeyHash> inodes_;
  // The root inode.  Atomic because reroot() replaces it while requests run;
  // replaced roots stay alive (without their fd) in old_roots_ (guarded by
  // mutex_) for requests that still hold them.
  std::atomic<Inode*> root_{nullptr};
  std::vector<std::unique_ptr<Inode>> old_roots_;
  // Inodes of older epochs the kernel still knows (until their forget); never
  // found by a lookup.  Guarded by mutex_.
  std::unordered_map<Inode*, std::unique_ptr<Inode>> stale_;
  std::atomic<uint64_t> epoch_{0};  // changed under mutex_
  // Guards open_files_ and stale_logged_.  Innermost.
  std::mutex files_mu_;
  std::unordered_set<File*> open_files_;
  std::unordered_set<pid_t> stale_logged_;
  std::unordered_map<int, UniqueFd> mount_fds_;  // mount id -> an fd on it; under mutex_
  std::atomic<size_t> path_fds_{0};
  // Guards dev_index_.  Innermost.
  std::mutex dev_mu_;
  std::unordered_map<dev_t, ino_t> dev_index_;  // st_dev -> prefix (the source's: 0)
  ino_t next_prefix_ = 1;
  std::atomic<uint64_t> clock_{0};
  size_t budget_ = 0;
};

// The filesystem object of a request.
inline PassthroughFs& fs_of(fuse_req_t req) {
  return *static_cast<PassthroughFs*>(fuse_req_userdata(req));
}

// Runs `f` with the caller's fsuid/fsgid on this thread (creation ops).
class CallerCreds {
public:
  explicit CallerCreds(fuse_req_t req);
  ~CallerCreds();
  CallerCreds(const CallerCreds&) = delete;
  CallerCreds& operator=(const CallerCreds&) = delete;

private:
  bool changed_ = false;
};

}  // namespace pt
}  // namespace hoody
