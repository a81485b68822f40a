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
// - Real roots: the mount serves one or more backing directories.  SOURCE is
//   root 0 (it is the mount root, unless Config::virtual_root); add_root()
//   adds more at run time (hoody-sharefs: one per accepted share).  Every
//   Inode is tagged with the Root it was found under (inherited on lookup),
//   and the inode table is keyed by (root, st_dev, st_ino), so one backing
//   file reached through two roots is two inodes with two policies.
// - Each root has an epoch: reroot() (a restore exchanged the subvolume at
//   SOURCE) starts a new one for root 0, remove_root() a last one for any
//   root (revoke).  Inodes and open files of an older epoch are stale: the
//   daemon closes its fds into the old tree, requests relative to a stale
//   inode give ESTALE, changes through a stale file give EIO (logged once per
//   pid); unlock, flush, release and reads still work.  Of a removed root
//   nothing works: its open files refuse reads too (EACCES), their backing
//   fds are replaced by /dev/null at once.
// - Policy: every operation on a real inode passes check() before it acts:
//   a removed root gives ESTALE (EACCES for I/O on an open file), a mutating
//   operation on a read-only mount or root gives EROFS, and then the daemon's
//   allow() hook decides (it sees the Op, the inode, its root, the name).
//   Renames and links between two roots give EXDEV.
// - Virtual nodes: node ids with bit 63 set (and the mount root when
//   Config::virtual_root) are the daemon's own directories and files.  Every
//   op on them is routed to the v*() hooks (lookup, attributes, listing,
//   open with a per-open VirtualFile, writes, mkdir/rmdir/unlink/rename);
//   the core keeps their open handles, listings, offsets and replies, and
//   runs the slow ones where the daemon says (vdefer).  A lookup in a
//   virtual directory may answer a real inode: a root (root_entry()), or any
//   entry the daemon looks up under root 0 (do_lookup), e.g. hoody-snapfs's
//   snapshot directories next to its virtual .hoody/.
//
// Daemons build on it by subclassing PassthroughFs and overriding the hooks at
// the bottom (lock handling for hoody-dbfs; access policy, read-only and
// special-file refusal for hoody-sharefs and hoody-snapfs).
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
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
  // With readdirplus: let the kernel choose (READDIRPLUS_AUTO: plus for a
  // listing's first chunk, then only where names were looked up).  false:
  // every chunk is plus.
  bool readdirplus_auto = true;
  bool splice_write = true;       // replies to reads spliced from the backing file
  bool splice_read = false;       // receiving WRITE data by splice measured 20% slower
  bool writeback_cache = false;   // buys write() latency, not commit throughput
  bool read_only = false;         // every mutating request gets EROFS
  // The mount root is a virtual directory (the v*() hooks), not SOURCE; the
  // real roots are added with add_root() (hoody-sharefs).  source may be "".
  bool virtual_root = false;
  // With virtual_root: SOURCE is served all the same, as root 0, but not as
  // the mount root: the daemon's vlookup answers its entries (do_lookup from
  // root_ino(kSourceRoot)).  hoody-snapfs: SOURCE/.snapshots, the <uuid>
  // directories of its snapshots.  statfs of a virtual node is SOURCE's.
  bool source_under_virtual_root = false;
  // Lookups do not cross into another mount (a mount point inside a root is
  // hidden: ENOENT).  BTRFS subvolumes are not mounts and are served.
  bool cross_mounts = true;
  // The kernel drops cached pages of a file whose size or mtime changed when
  // it refreshes the attributes (for backing files written by others too).
  bool auto_inval_data = false;
  size_t fd_budget = 0;           // O_PATH fds kept open; 0: 3/4 of RLIMIT_NOFILE
  // Backing I/O engine, "sync" or "uring": the meson option io_default,
  // chosen by tests/bench/fs_bench (sync won 5 of 6 workloads).
  std::string io = HOODY_IO_DEFAULT;
};

// Adds the core's -o options (entry_timeout=, attr_timeout=, ...) to a table.
void add_options(OptionTable& table);
// Reads them back into a Config (source from the positional argument).
Config config_from(const MountArgs& args);

// Node ids with this bit are virtual (the daemon's own nodes).  Real node ids
// are Inode* addresses: user-space pointers never have bit 63 set.
inline constexpr uint64_t kVirtualBit = 1ull << 63;
inline constexpr bool is_virtual_id(uint64_t ino) { return (ino & kVirtualBit) != 0; }

using RootId = uint32_t;
inline constexpr RootId kSourceRoot = 0;  // SOURCE (when not virtual_root)

struct Inode;

// A real root served under the mount.  Never freed while the daemon runs
// (inodes and files point to it); a removed root stays, revoked.
struct Root {
  Root(RootId i, std::string n) : id(i), name(std::move(n)) {}
  const RootId id;
  const std::string name;  // for messages
  // Inodes and files of another epoch are stale.  Changed under the core's mutex_.
  std::atomic<uint64_t> epoch{0};
  // Removed (revoked): every request on its inodes gives ESTALE, I/O on its
  // open files EACCES.  Read without a lock on the I/O path.
  std::atomic<bool> revoked{false};
  // Every mutating request on its inodes gives EROFS (set_read_only()).
  std::atomic<bool> read_only{false};
  std::atomic<Inode*> inode{nullptr};  // its current root directory
  int mnt_id = -1;                     // its mount (cross_mounts=false)
  // For the daemon (hoody-sharefs: the share id).
  std::atomic<uint64_t> tag{0};
};

// The inode table's key.
struct Key {
  RootId root = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  bool operator==(const Key&) const = default;
};

// One backing inode.
struct Inode {
  Inode(UniqueFd fd, dev_t dev, ino_t ino, mode_t mode, Root* of_root, uint64_t epoch_of_root)
      : src_dev(dev), src_ino(ino), type(mode & S_IFMT), root(of_root), epoch(epoch_of_root),
        fd_(std::move(fd)) {}

  const dev_t src_dev;
  const ino_t src_ino;
  const mode_t type;  // S_IFMT bits; an inode never changes type
  Root* const root;   // the root it was found under (a lookup's child inherits it)
  // The epoch of its root when it was found.  An inode of an older epoch is
  // stale: its fd is closed, requests on it give ESTALE.
  const uint64_t epoch;
  Key key() const { return {root->id, src_dev, src_ino}; }

  // Guarded by PassthroughFs::mutex_.
  uint64_t nlookup = 0;
  bool is_root = false;  // a root's directory: never leaves memory
  // Where it was last looked up (parent's key and the name): for the paths
  // of holders() and messages only, best effort.
  Key parent_key{};
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
  Root* root = nullptr;  // its inode's root
  uint64_t epoch = 0;  // the root's epoch it was opened in (stale when older)
  pid_t pid = 0;       // the opener (fuse_req_ctx), for holders()
  std::string path;    // the name it was opened under, relative to the mount
};

// An open virtual file: fuse_file_info::fh of a virtual node, made by
// vopen() and deleted at release.  Reads see its contents: a shared buffer
// (one computed result may serve many opens) that the daemon may replace
// while the file is open (hoody-snapfs: the result of a write).  A daemon
// derives from it to keep per-open state.
class VirtualFile {
public:
  explicit VirtualFile(fuse_ino_t node, std::string content = {})
      : ino(node), contents_(std::make_shared<const std::string>(std::move(content))) {}
  VirtualFile(fuse_ino_t node, std::shared_ptr<const std::string> content)
      : ino(node), contents_(content ? std::move(content) : std::make_shared<const std::string>()) {}
  virtual ~VirtualFile() = default;
  VirtualFile(const VirtualFile&) = delete;
  VirtualFile& operator=(const VirtualFile&) = delete;

  const fuse_ino_t ino;
  std::shared_ptr<const std::string> contents() const {
    std::lock_guard g(m_);
    return contents_;
  }
  void set_contents(std::string c) {
    auto p = std::make_shared<const std::string>(std::move(c));
    std::lock_guard g(m_);
    contents_ = std::move(p);
  }

private:
  mutable std::mutex m_;  // a leaf lock: guards contents_
  std::shared_ptr<const std::string> contents_;  // never null
};

// A process with a file open through the mount (holders()).
struct Holder {
  pid_t pid = 0;
  std::string comm;  // from /proc/PID/comm; "" when the process is gone
  std::string path;  // relative to the mount
};

// The operations, as the policy hooks see them.
enum class Op : uint8_t {
  lookup, getattr, setattr, readlink, mknod, mkdir, symlink, link, unlink, rmdir,
  rename_from, rename_to, open, create, read, write, flush, release, fsync, fallocate,
  copy_from, copy_to, lseek, opendir, readdir, fsyncdir, statfs, getxattr, listxattr,
  setxattr, removexattr, lock,
};
// Whether an op changes the backing tree (EROFS on a read-only mount or root).
// open and create with write access or O_TRUNC mutate too (Access::mutates()).
bool mutates(Op op);

// Clears setuid, and setgid where group-exec is set (or the caller of req is
// not in the file's group), of the file `fd` (a real fd, or an O_PATH fd when
// `o_path`): what a write or truncate by a caller without CAP_FSETID does
// natively (the kernel's setattr_should_drop_suidgid).  For the requests that carry the kernel's
// kill flag (fuse_request_kills_suidgid, FATTR_KILL_SUIDGID); the backing
// filesystem itself drops security.capability on the daemon's write,
// truncate and chown.
Status kill_suidgid(fuse_req_t req, int fd, bool o_path);
const char* op_name(Op op);

// What a policy hook sees: the op, the inode it acts on (for name ops the
// directory; for link the target directory, with Op::link), the name in it,
// the open flags (open, create) or setattr's `valid` bits, the open file.
struct Access {
  Op op;
  const Inode& inode;
  const char* name = nullptr;
  int flags = 0;
  const struct File* file = nullptr;
  const Root& root() const { return *inode.root; }
  bool mutates() const;
};

// An entry of a virtual directory (vreaddir).  The listing shows shown_ino
// and the type of mode; readdirplus asks vdirentry() for its entry.
struct VEntry {
  std::string name;
  mode_t mode = S_IFDIR | 0555;
  ino_t shown_ino = 0;  // st_ino in the listing
};

// What remove_root() did.
struct Removed {
  RootId id = 0;
  std::vector<fuse_ino_t> nodes;  // node ids of the root's inodes the kernel may hold
  size_t files = 0;               // open files whose backing fd was dropped
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
  // The epoch of root 0 (SOURCE).
  uint64_t epoch() const;
  bool stale(const File& f) const { return f.epoch != f.root->epoch.load(std::memory_order_relaxed); }
  bool stale(const Inode& in) const {
    return in.epoch != in.root->epoch.load(std::memory_order_relaxed);
  }

  // ---- roots ------------------------------------------------------------------
  // Serves the directory `dir` (an O_PATH or O_RDONLY directory fd the daemon
  // resolved safely, e.g. with openat2 RESOLVE_BENEATH) as a new root.
  Result<RootId> add_root(UniqueFd dir, std::string name, bool read_only, uint64_t tag = 0);
  // Revokes a root for good: a new epoch makes every inode of it stale (its
  // O_PATH fds close, requests give ESTALE), its open files refuse all I/O
  // (EACCES) and their backing fds are swapped for /dev/null at once (no fd
  // of the daemon stays in the tree).  Returns the node ids to invalidate in
  // the kernel (invalidate_nodes); the daemon drops the root's name itself.
  Result<Removed> remove_root(RootId id);
  // Every later mutating request on the root gives EROFS, also through files
  // opened for writing before.
  Status set_read_only(RootId id, bool ro);
  Root* root(RootId id);
  // The root's directory as a lookup answer (one lookup counted): what a
  // virtual directory's vlookup() returns for a root.
  Result<fuse_entry_param> root_entry(RootId id);
  fuse_ino_t root_ino(RootId id);
  // Drops the kernel's cached attributes and pages of these nodes (after
  // remove_root or set_read_only).  Never call it from a request of this mount.
  void invalidate_nodes(fuse_session* se, const std::vector<fuse_ino_t>& nodes);
  // Node ids the kernel holds of a root's inodes.
  std::vector<fuse_ino_t> nodes_of(RootId id);
  // Whether node id `ino` is virtual (bit 63, or the virtual mount root).
  bool is_vnode(fuse_ino_t ino) const {
    return is_virtual_id(ino) || (ino == FUSE_ROOT_ID && cfg_.virtual_root);
  }
  // Processes with files open through the mount (only those opened in an
  // older epoch when stale_only), one row per (pid, path).
  std::vector<Holder> holders(bool stale_only);
  // The path of the directory with backing key (dev, ino) relative to the
  // mount ("" for the root), as far as the inode table knows it.
  std::string dir_path(dev_t dev, ino_t ino);
  // The node id of the directory node `ino` was last looked up in, and its
  // name there, as far as the inode table knows them (false: unknown).
  bool parent_entry(fuse_ino_t ino, fuse_ino_t* parent, std::string* name);

  // Opens a new open file description of the file a lock request is about
  // (a real inode's backing file; a daemon may lock something else for nodes
  // of its own, see lock_setlk).
  using LockTarget = std::function<Result<UniqueFd>()>;

  // The operations table of this filesystem (lock ops only when wanted).
  struct OpsFeatures {
    bool posix_locks = false;  // getlk/setlk answered by the daemon
    bool flock = false;
  };
  static fuse_lowlevel_ops make_ops(OpsFeatures f);

  const Config& config() const { return cfg_; }
  int root_fd() const { return source_root_.load()->inode.load()->fd_.get(); }
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
  // ---- policy -----------------------------------------------------------------
  // Runs before every operation on a real inode: ESTALE for a removed root
  // (EACCES for read/write/... on an open file of one), EROFS for a mutating
  // op on a read-only mount or root, then allow().  Lock-free: two atomic
  // loads and the hook.
  Status check(fuse_req_t req, const Access& a);
  // The daemon's policy (default: everything).  hoody-sharefs refuses
  // special files and mknod; hoody-snapfs refuses every change.
  virtual Status allow(fuse_req_t /*req*/, const Access& /*a*/) { return {}; }

  // ---- virtual nodes (is_vnode) -------------------------------------------------
  // Each is called only for a virtual node id; the defaults describe a
  // daemon without virtual nodes.  Replies are the core's.
  // A name in virtual directory `parent`: a virtual node's entry (virtual_entry
  // helps) or a real root's (root_entry).  ENOENT is not cached.
  virtual Result<fuse_entry_param> vlookup(fuse_req_t, fuse_ino_t, const char*) {
    return fail(ENOENT);
  }
  // The kernel forgot n lookups of a virtual node.
  virtual void vforget(fuse_ino_t, uint64_t) {}
  virtual Result<struct stat> vgetattr(fuse_req_t, fuse_ino_t) { return fail(ENOENT); }
  // How long the kernel keeps a virtual node's attributes (getattr).
  virtual double vattr_timeout(fuse_ino_t) { return 0; }
  // setattr of a virtual node: its attributes after (timeout 0).  Default EPERM.
  virtual Result<struct stat> vsetattr(fuse_req_t, fuse_ino_t, const struct stat& /*attr*/,
                                       int /*valid*/) {
    return fail(EPERM);
  }
  // An extended attribute of a virtual node (listxattr shows none).  Default ENODATA.
  virtual Result<std::string> vgetxattr(fuse_req_t, fuse_ino_t, const char* /*name*/) {
    return fail(ENODATA);
  }
  // The entries of a virtual directory, taken at opendir.  The core adds "."
  // and ".." (st_ino of vgetattr, and 1) unless the list begins with "."
  // (then the daemon gives both, e.g. to show a parent's number).
  virtual Result<std::vector<VEntry>> vreaddir(fuse_req_t, fuse_ino_t) { return fail(ENOTDIR); }
  // A name of a virtual directory's listing as readdirplus sends it (not for
  // "." and ".."), asked at readdir time.  Default: no node id (the kernel
  // looks the name up when used).  An entry with a node id counts a lookup,
  // which the core gives back if it does not fit the reply; an error leaves
  // the name out (gone since opendir).
  virtual Result<fuse_entry_param> vdirentry(fuse_req_t req, fuse_ino_t dir, const VEntry& e);
  // Opens a virtual file with open(2) flags `flags`; the core keeps the
  // VirtualFile (fi->fh, direct_io: its size shows as 0, reads go to EOF)
  // until release.  Default: EISDIR for a directory, EACCES for a write or
  // O_TRUNC, else a file of the contents vread() produces.  A daemon with
  // writable files or per-open state overrides it; one whose open waits
  // (a computation) runs it elsewhere (vdefer) and may arrange for a FUSE
  // interrupt (fuse_req_interrupt_func) to end the wait.
  virtual Result<std::unique_ptr<VirtualFile>> vopen(fuse_req_t req, fuse_ino_t ino, int flags);
  // The contents of a virtual file for the default vopen().
  virtual Result<std::string> vread(fuse_req_t, fuse_ino_t) { return fail(EACCES); }
  // A write to an open virtual file (the data is copied: any size reaches
  // here): the bytes taken.  The file stays open until this is answered.
  // Default EBADF.
  virtual Result<size_t> vwrite(fuse_req_t, VirtualFile&, std::string /*data*/, off_t) {
    return fail(EBADF);
  }
  // SEEK_DATA/SEEK_HOLE in an open virtual file (the kernel answers the
  // other whences itself).  Default: by its contents.
  virtual Result<off_t> vlseek(fuse_req_t, VirtualFile& f, off_t off, int whence);
  // Name changes in virtual directories.  Default EPERM.
  virtual Result<fuse_entry_param> vmkdir(fuse_req_t, fuse_ino_t, const char*, mode_t) {
    return fail(EPERM);
  }
  virtual Status vrmdir(fuse_req_t, fuse_ino_t, const char*) { return fail(EPERM); }
  virtual Status vunlink(fuse_req_t, fuse_ino_t, const char*) { return fail(EPERM); }
  virtual Status vrename(fuse_req_t, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
    return fail(EPERM);
  }
  // A link or rename between a virtual node and a real directory; `real` is
  // the real side as check() sees it (Op::link, rename_from or rename_to).
  // Default: EXDEV (another filesystem), for a rename after the real side's
  // check (a read-only root: EROFS).
  virtual Status vcross(fuse_req_t req, const Access& real);
  // Runs `job` (which replies) for a virtual open, write, mkdir, rmdir,
  // unlink or rename (Op::rename_from) on node `ino` (the file, or the
  // directory of the name).  Default: here, in the FUSE worker.  A daemon
  // whose hooks may wait long (hoody-snapfs: a snapshot, a restore, a diff)
  // runs it on a thread of its own, so that no worker of the loop is pinned.
  virtual void vdefer(Op /*op*/, fuse_ino_t /*ino*/, std::function<void()> job) { job(); }
  // A virtual node's entry with attributes from vgetattr; timeouts 0 (the
  // daemon changes virtual nodes without telling the kernel).
  Result<fuse_entry_param> virtual_entry(fuse_req_t req, fuse_ino_t ino);
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
  void show(struct stat& st) {
    st.st_ino = shown_ino(st.st_dev, st.st_ino);
    present(st);
  }
  // How the attributes of a real inode are shown (after st_ino): hoody-sharefs
  // shows special files as empty regular files of mode 0000.  Also called on
  // a listing's entries (only st_mode's type is set then).
  virtual void present(struct stat& /*st*/) {}

  // Looks `name` up in `parent` and returns the entry with its lookup counted.
  // open_first: the name is probably new to the table (skips a statx that
  // would only tell so); *was_new: whether it was.
  Result<fuse_entry_param> do_lookup(fuse_ino_t parent, const char* name, bool open_first = false,
                                     bool* was_new = nullptr);
  // The attributes of `name` in directory fd `dfd` (one component, not
  // followed), or of `dfd` itself for name ""; ENOENT for a mount point
  // inside root `r` unless cross_mounts.
  Result<struct stat> stat_entry(int dfd, const char* name, const Root& r);
  void reply_entry(fuse_req_t req, fuse_ino_t parent, const char* name, Status made);
  void forget_one(Inode* inode, uint64_t n);
  static File* file_of(fuse_file_info* fi) { return reinterpret_cast<File*>(fi->fh); }
  static VirtualFile* virtual_file_of(fuse_file_info* fi) { return reinterpret_cast<VirtualFile*>(fi->fh); }
  fuse_ino_t ino_of(Inode* in) const {
    Root* src = source_root_.load();
    return src && !cfg_.virtual_root && in == src->inode.load() ? FUSE_ROOT_ID
                                                                : reinterpret_cast<fuse_ino_t>(in);
  }

  Config cfg_;
  // False only under HOODY_BENCH_NO_REVOKE_CHECK=1 (read once, at start,
  // logged as a warning): check() then skips the removed-root test, so that
  // tests/bench/sharefs_bench measures what that test costs.  Never for use.
  bool revoke_check_ = true;
  // The backing I/O engine; null for io=sync (reads are spliced, writes
  // copied by libfuse, fsyncs done in the worker).
  std::unique_ptr<io::Engine> io_;

private:
  void evict_over_budget();
  std::string path_locked(const Inode* in);
  // Moves every inode of `r` out of the table into stale_ (with mutex_ held);
  // returns them (and the root's directory) for closing.
  std::vector<Inode*> retire_locked(Root& r, std::vector<fuse_ino_t>* nodes);
  void close_retired(const std::vector<Inode*>& retired, size_t* closed);
  // Virtual-node halves of the ops (ops_virtual.cpp).
  void vopen_reply(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void vwrite_reply(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi);
  void vopendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void vreaddir_reply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                      bool plus);

  void track(File* f, fuse_req_t req);
  void untrack(File* f);

  // ---- locks on the backing filesystem (ops_lock.cpp) --------------------------
  // With OpsFeatures::posix_locks and the default getlk/setlk, a POSIX lock is
  // taken on the backing file, so it conflicts with every other mount of the
  // same tree and with the tree's own users.  Each (node, lock owner) has one
  // backing open file description of its own, locked with F_OFD_SETLK: per
  // owner and per file, as POSIX locks are per process and per file; a FLUSH
  // of the owner (any close(2) of that process) closes it, which drops them.
  void drop_root_locks(const Root* r);
  // A blocking lock (SETLKW, blocking flock) waits on a thread of its own,
  // trying again every few milliseconds; `attempt` returns 0 when granted,
  // EAGAIN to try again, another errno to fail.  A grant runs
  // lock_granted(ino) before the reply when lock_grant_hook(ino) says so.
  void wait_for_lock(fuse_req_t req, fuse_ino_t ino, const Root* r, std::function<int()> attempt);
  // Answers a lock request that did not wait: a grant through the grant
  // thread (queue_grant) when lock_grant_hook(ino) says so, else at once.
  void lock_answer(fuse_req_t req, fuse_ino_t ino, int err);

  struct OwnerLocks {
    std::shared_ptr<UniqueFd> fd;
    const Root* root = nullptr;
    pid_t pid = 0;  // the process that last took a lock with it (F_GETLK names it)
  };
  // Grants whose reply waits for lock_granted(): one thread answers them in
  // order (started at the first one).
  void queue_grant(fuse_req_t req, fuse_ino_t ino);
  std::mutex grants_mu_;
  std::condition_variable grants_cv_;
  std::vector<std::pair<fuse_req_t, fuse_ino_t>> grants_;
  bool grants_stop_ = false;
  std::thread grants_thread_;
  std::mutex locks_mu_;  // guards owner_locks_, lock_waiters_.  Innermost.
  std::unordered_map<fuse_ino_t, std::unordered_map<uint64_t, OwnerLocks>> owner_locks_;
  std::condition_variable lock_waiters_cv_;
  int lock_waiters_ = 0;
  std::atomic<bool> locks_stopping_{false};

public:
  // Ends every lock wait (EINTR) and returns once their threads are done: at
  // unmount, before the session goes.
  void stop_lock_waits();

protected:
  // The open file description that carries `owner`'s locks on node `ino`;
  // opened with `open_target` when there is none yet and it is given.  A
  // non-zero `pid` is recorded as the owner's process (F_GETLK names it).
  std::shared_ptr<UniqueFd> owner_lock_fd(fuse_ino_t ino, const Root* root, uint64_t owner,
                                          const LockTarget* open_target, Errno* err,
                                          pid_t pid = 0);
  // Closes it: every lock of `owner` on the node goes.
  void drop_owner_locks(fuse_ino_t ino, uint64_t owner);
  // getlk/setlk of node `ino` on descriptions that `open_target` opens; root
  // (may be null) revoked ends a wait.  For a daemon's own kind of node.
  void lock_getlk(fuse_req_t req, fuse_ino_t ino, uint64_t owner, const Root* root,
                  struct flock* lock, const LockTarget& open_target);
  void lock_setlk(fuse_req_t req, fuse_ino_t ino, uint64_t owner, const Root* root,
                  struct flock* lock, int sleep, const LockTarget& open_target);
  // flock(2) on `fd` (one description per open file); `fd` must stay open
  // while the request runs, which the caller's open file guarantees.
  void lock_flock(fuse_req_t req, fuse_ino_t ino, int fd, const Root* root, int op);
  // Whether a lock granted on node `ino` must run lock_granted() before its
  // reply (else it is answered at once).
  virtual bool lock_grant_hook(fuse_ino_t /*ino*/) { return false; }
  // A lock on node `ino` was granted and its reply is about to go; runs on a
  // thread of its own, never on a request's (it may notify the kernel).
  // hoody-sharefs drops the kernel's cached pages of the file here: another
  // mount may have changed it while the lock was not held (what an NFS
  // client does when it takes a lock).
  virtual void lock_granted(fuse_ino_t /*ino*/) {}

private:
  // open and create: the File of a backing fd, tracked, in fi->fh, on_open
  // told; and its undoing when the opener was gone before the reply.
  File* new_file(fuse_req_t req, Inode* in, UniqueFd fd, fuse_file_info* fi);
  // Whether an open through node `ino` reached a file unlinked since whose
  // name now names another file (answer ESTALE: the kernel looks it up again).
  bool replaced_name(fuse_ino_t ino, const Inode& in, int fd);
  void drop_file(File* f, fuse_file_info* fi);

  // Guards inodes_ and every Inode::nlookup.  Lock order: before any Inode::m.
  std::mutex mutex_;
  struct KeyHash {
    size_t operator()(const Key& k) const {
      return std::hash<uint64_t>()((k.dev * 0x9e3779b97f4a7c15ULL ^ k.ino) + k.root * 0x85ebca6bULL);
    }
  };
  std::unordered_map<Key, std::unique_ptr<Inode>, KeyHash> inodes_;
  // Every root, by id (never shrinks; guarded by mutex_, the Roots themselves
  // are stable).  Root 0 is SOURCE unless virtual_root.
  std::vector<std::unique_ptr<Root>> roots_;
  std::atomic<Root*> source_root_{nullptr};
  // The root directories, current and replaced (reroot) or revoked: they
  // stay alive (without their fd) for requests that still hold them.
  // Guarded by mutex_.
  std::vector<std::unique_ptr<Inode>> old_roots_;
  // Inodes of older epochs the kernel still knows (until their forget); never
  // found by a lookup.  Guarded by mutex_.
  std::unordered_map<Inode*, std::unique_ptr<Inode>> stale_;
  uint64_t next_epoch_ = 1;  // guarded by mutex_: epochs are unique across roots
  // Guards open_files_ and stale_logged_.  Innermost.
  std::mutex files_mu_;
  std::unordered_set<File*> open_files_;
  std::unordered_set<pid_t> stale_logged_;
  std::unordered_map<int, UniqueFd> mount_fds_;  // mount id -> an fd on it; under mutex_
  std::unordered_map<int, RootId> mount_owner_;  // mount id -> the added root whose dir it is; under mutex_
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
