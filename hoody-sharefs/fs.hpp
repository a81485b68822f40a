// hoody-sharefs: the daemon object (the fuse userdata).
//
// The passthrough core with a virtual mount root (Config::virtual_root) and
// one real root per share this container accepted, each resolved from the
// registry with Registry::open_storage + open_source (openat2
// RESOLVE_BENEATH from the owner's storage; the registry's string is never
// used as a path).  On top of the core:
//  - the root lists the accepted shares, .pending/ (the offers) and .hoody/;
//  - `mv .pending/NAME NAME` accepts, `rmdir .pending/NAME` rejects and
//    `rmdir NAME` leaves, through the registry (vrename, vrmdir);
//  - .hoody/shares.json is produced at open (share/json.hpp);
//  - a watcher thread waits on the pool's ChangeSignal, rereads shares_for
//    on a new generation and applies it (sync): new shares are added, ro<->rw
//    changes set the root's read-only flag, revoked/left shares are removed
//    (the core's remove_root: ESTALE/EACCES at once) and the kernel's caches
//    of them dropped -- from the watcher thread only, never from a request;
//  - policy (allow, present): special files (devices, FIFOs, sockets) show as
//    empty regular files of mode 0000 and never open; mknod is refused;
//    mount points inside a share are hidden (Config::cross_mounts=false);
//    read-only shares give EROFS for every change (the core, per root).
//  - a share from another server (Received::url) is served by RemoteFs
//    (remote.hpp: libnfs, its own node ids); the ops below send its nodes
//    there before the core sees them.
//  - -o exports: the owner's side of cross-server shares.  Instead of one
//    container's shares the mount serves every share offered to another
//    server as ID/ (its registry id), with the same policy; nfs-ganesha
//    exports MNT/ID to the peer (ganesha cannot export BTRFS subvolumes).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "hoody/daemon.hpp"
#include "hoody/passthrough.hpp"
#include "remote.hpp"
#include "share/registry.hpp"
#include "share/view.hpp"

namespace hoody::sharefs {

struct Config {
  pt::Config core;       // core.source: POOL (for messages and fsname)
  std::string pool;      // POOL
  std::string registry;  // POOL/shares.db unless -o registry=
  std::string container; // C: whose shares
  bool exports = false;  // the export view of the shares offered to other servers
};

OptionTable options();
Config config_from(const MountArgs& args);

class Fs final : public pt::PassthroughFs, public DaemonFs {
public:
  explicit Fs(Config cfg);
  ~Fs() override;

  // DaemonFs
  Status start(std::string* why) override;
  fuse_lowlevel_ops ops() override;
  void* userdata() override { return static_cast<pt::PassthroughFs*>(this); }
  // The core clears setuid/setgid itself (pt::kill_suidgid); splice_read
  // would hide the kill flags from the request hook.
  bool handle_killpriv_v2() override { return !config().splice_read; }
  // After fuse_daemonize: the watcher thread starts.
  void attached(fuse_session* se) override;
  void destroy() override;
  // open(O_TMPFILE): EROFS in a read-only share, EPERM at the root and in
  // .pending/.hoody, EOPNOTSUPP in a read-write share (libfuse 3.14 has no
  // tmpfile op), ESTALE in a revoked one.
  std::function<int(uint64_t nodeid)> tmpfile_errno() override;

  // Rereads the registry through `reg` and applies it.  Kernel notifications
  // for removed shares are queued for the watcher (notify_pending), so a
  // request may call it.  Serialized.
  Status sync(Registry& reg);
  // How many syncs changed something (tests read it in the log).
  uint64_t applied_generation() const { return applied_gen_.load(); }

  // The ops, for remote shares' nodes first (RemoteFs), then the core.
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  void forget(fuse_ino_t ino, uint64_t nlookup) override;
  void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) override;
  void readlink(fuse_req_t req, fuse_ino_t ino) override;
  void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) override;
  void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) override;
  void symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) override;
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) override;
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned flags) override;
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) override;
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) override;
  void write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) override;
  void flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) override;
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus) override;
  void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) override;
  void statfs(fuse_req_t req, fuse_ino_t ino) override;
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) override;
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) override;
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) override;
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) override;
  void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info* fi) override;
  void copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                       fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                       int flags) override;
  void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) override;
  void getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) override;
  void setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
             int sleep) override;
  void flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) override;
  bool lock_grant_hook(fuse_ino_t ino) override;
  void lock_granted(fuse_ino_t ino) override;

protected:
  Status allow(fuse_req_t req, const pt::Access& a) override;
  void present(struct stat& st) override;

  Result<fuse_entry_param> vlookup(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  Result<struct stat> vgetattr(fuse_req_t req, fuse_ino_t ino) override;
  Result<std::vector<pt::VEntry>> vreaddir(fuse_req_t req, fuse_ino_t ino) override;
  Result<std::string> vread(fuse_req_t req, fuse_ino_t ino) override;
  Status vrmdir(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  Status vrename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                 const char* newname, unsigned flags) override;

private:
  void watch_loop();
  // Accepted, rejected or left through the mount: a share from another
  // server tells its owner's server (server.conf's peer_command), async.
  void tell_owner(const std::optional<Received>& share, const char* verb);
  std::optional<Received> served_or_offered(const std::string& name);
  // Sends the queued kernel notifications (watcher thread only).
  void notify_pending();

  Config scfg_;
  fuse_session* se_ = nullptr;
  int64_t started_ = 0;
  std::atomic<int64_t> changed_{0};  // the root's mtime: the last change of the view

  // The registry of requests (accept, reject, leave, shares.json).  req_m_
  // is taken before sync_m_.
  std::mutex req_m_;
  std::optional<Registry> req_reg_;
  // The watcher's own connection (a Registry is used by one thread at a time).
  std::optional<Registry> watch_reg_;

  // Serializes sync().  Before view_m_ and the core's locks.
  std::mutex sync_m_;
  // Guards accepted_, offered_ and pending_.  A leaf lock.
  std::mutex view_m_;
  struct Accepted {
    Received share;
    pt::RootId root = 0;
    std::shared_ptr<RemoteShare> remote;  // a share from another server (no root)
    // The owner's storage subvolume it is served from (st_dev): a restore of
    // the owner swaps in another one, and the share is served again from it.
    dev_t storage_dev = 0;
  };
  // Shares whose owner's storage is no longer the subvolume they are served
  // from (a restore swapped it): their names.
  std::vector<std::string> storage_replaced(Registry& reg);
  // What this container (or the export view) is given now.
  Result<std::vector<Received>> wanted(Registry& reg);
  std::map<std::string, Accepted> accepted_;  // by name
  std::map<std::string, Received> offered_;   // by name
  std::unordered_map<int64_t, std::string> offer_names_;  // share id -> name
  // Kernel notifications to send: names to drop at the root, nodes to invalidate.
  struct Notice {
    std::string name;
    std::vector<fuse_ino_t> nodes;
  };
  std::vector<Notice> pending_;
  RemoteFs remote_;
  std::atomic<uint64_t> applied_gen_{0};
  // Locks on a share from another server: one memfd per node locked, here
  // (NFSv3 through libnfs has no lock protocol).  See remote_lock_target().
  std::mutex remote_locks_mu_;
  std::unordered_map<fuse_ino_t, UniqueFd> remote_lock_files_;
  Result<UniqueFd> remote_lock_target(fuse_ino_t ino);
  std::atomic<bool> retry_{false};  // a share could not be served: sync again

  std::atomic<bool> stop_{false};
  std::thread watcher_;
};

}  // namespace hoody::sharefs
