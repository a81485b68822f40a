// hoody-snapfs: the daemon object (the fuse userdata).
//
// The passthrough core serves the snapshot contents read-only from O_PATH fds
// into SOURCE/.snapshots (the core's root 0 is the store directory; its
// Inodes are the <uuid> directories and everything beneath them).  The mount
// root and .hoody/ are the core's virtual nodes (Config::virtual_root, the
// v*() hooks; the core routes every op and keeps handles and replies):
//  - the root lists the snapshot names of the store, and .hoody/;
//  - a name at the root is the store's <uuid> directory (the core's Inode),
//    shown with the snapshot's metadata (mode 0777, times = creation);
//  - mkdir/rmdir/rename at the root create, delete and rename snapshots;
//    xattrs user.hoody.* of a snapshot are its metadata;
//  - .hoody/ holds the control files (vdir/), whose node ids have bit 63 set;
//  - a background thread prunes expired snapshots and runs the schedule
//    (schedule.cpp).
// Every other mutating call gives EROFS (the core with read_only).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hoody/daemon.hpp"
#include "hoody/passthrough.hpp"
#include "hoody/unique_fd.hpp"
#include "peers.hpp"
#include "snapshot.hpp"
#include "store/snapshot_store.hpp"
#include "vdir/vdir.hpp"

namespace hoody::snapfs {

struct Config {
  pt::Config core;                    // core.source: SOURCE/.snapshots
  std::string source;                 // SOURCE, the container directory
  std::string default_expiry;         // "+7d", "" for none
  double prune_interval = 60;         // seconds between expiry sweeps
  std::string allow_users, allow_groups;  // ':'-separated
  // How long a create or restore waits for the database transactions in
  // flight to finish (hoody-dbfs quiesce); longer ones make a snapshot
  // crash-consistent.
  double quiesce_timeout = 2;
  uint64_t diff_cache_mb = 64;        // budget of the diff cache (MiB)
};

OptionTable options();
// EINVAL outside the times the store can hold (store/format.hpp time_from_unix).
Result<TimePoint> time_point(int64_t unix_seconds);
Config config_from(const MountArgs& args);

class Fs final : public pt::PassthroughFs, public DaemonFs {
public:
  explicit Fs(Config cfg);
  ~Fs() override;

  // DaemonFs
  Status start(std::string* why) override;
  fuse_lowlevel_ops ops() override;
  void attached(fuse_session* se) override;
  void* userdata() override { return static_cast<pt::PassthroughFs*>(this); }
  // open(O_TMPFILE): EROFS inside a snapshot, EPERM at the root and in .hoody/
  // (as for every other file made there), not libfuse's EOPNOTSUPP.
  std::function<int(uint64_t nodeid)> tmpfile_errno() override;

  // ---- ops (ops/*.cpp) --------------------------------------------------------
  void init(fuse_conn_info* conn) override;
  void destroy() override;
  // ops/attr.cpp: a snapshot's directory (a real inode) shows its metadata.
  void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) override;
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) override;
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) override;
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) override;
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) override;

  // For tests and the benchmark.
  SnapshotStore& store() { return *store_; }

  // ---- shared by the op families ------------------------------------------------
  // Who sent a request.
  struct Who {
    uint32_t uid = 0, gid = 0;
    int32_t pid = 0;
    std::vector<uint32_t> groups;
    Caller store() const { return Caller{static_cast<uid_t>(uid), static_cast<pid_t>(pid)}; }
  };
  static Who caller_of(fuse_req_t req);
  bool allowed(const Who& c) const { return access_.allows(c.uid, c.gid, c.groups); }
  // A decision the store never saw (a refusal by the access policy, a bad
  // argument): one row in the store's audit table, and a log line.
  void audit(const Who& c, const std::string& action, const std::string& name, int err,
             const std::string& to = "", const std::string& reason = "");
  // The outcome of a store call, which the store audited itself: a log line only.
  void done(const Who& c, const std::string& action, const std::string& name, int err,
            const std::string& to = "", const std::string& reason = "");
  // .hoody/log: the store's audit table, one JSON object a line.
  Result<std::string> audit_text();

  // "Now" for the schedule, expiry and creation times: the system clock, or
  // the unix seconds in $HOODY_TEST_CLOCK_FILE (for tests only: it lets a
  // test drive weeks of hourly snapshots in seconds).
  TimePoint now() const;

  // The store's snapshot `name` in the daemon's terms (subvolumes filled if asked).
  Result<Snapshot> get_info(const std::string& name, bool with_subvolumes = false);
  Result<std::vector<Snapshot>> list_info(bool with_subvolumes);
  // The snapshot shown by a top-level directory Inode (nullopt for any other inode).
  std::optional<Snapshot> snapshot_of(fuse_ino_t ino);
  // Seconds the kernel keeps the name and attributes of a snapshot's directory.
  static constexpr double kTopTimeout = 3600;
  // Entry for snapshot `s` (lookup counted on the core's Inode of its directory).
  Result<fuse_entry_param> snapshot_entry(const Snapshot& s);
  struct stat snapshot_attr(const Snapshot& s, const struct stat& dir, size_t subvolumes);
  size_t subvolume_count(const std::string& uuid);
  struct stat root_attr();
  // A control file as `caller` sees it (.hoody/log shows the caller as its
  // owner when the caller may read it: the kernel checks the mode bits).
  struct stat virtual_attr(uint64_t ino, const Who* caller = nullptr);
  // st_ino of a virtual node as attributes and listings show it.
  static ino_t shown_ino_of(uint64_t ino);
  fuse_entry_param ctl_entry(uint64_t ino, const Who* caller = nullptr);
  bool is_root(fuse_ino_t ino) const { return ino == FUSE_ROOT_ID; }

  // Runs fn (which replies to its request) on a thread of its own: a request
  // that waits on BTRFS (a snapshot flushing dirty data, a delete, a restore,
  // a send stream) never pins a worker of the FUSE loop.  destroy() waits for
  // every such job.
  void offload(std::function<void()> fn);
  // Every snapshot the daemon takes (mkdir and the schedule) is taken here:
  // what must happen around a snapshot (quiescing databases) goes here once.
  Result<Snapshot> take_snapshot(std::string_view name, const Who& c, CreateOptions opts);
  // The set of snapshots changed (times and counts of the root follow).
  void changed();
  // Wakes the background thread to finish a restore's deletions (recover()).
  void recover_soon();
  // Wakes the background thread to run the schedule now (it was just set).
  void schedule_soon();
  // .hoody/schedule: read, and a write sets it (schedule.cpp).
  Result<std::string> schedule_text();
  Status set_schedule(const Who& c, std::string_view request);
  // The hoody-dbfs daemons of the scope subvolumes, for one create or restore.
  std::unique_ptr<DbfsPeers> peers();
  // .hoody/restore: one restore at a time.  A restore fd remembers the
  // generation it was opened (or last restored) at; a write on it after
  // another restore ran, or any open while one runs, gives EBUSY.
  struct RestoreGate {
    std::mutex m;  // a leaf lock: guards the fields below
    bool running = false;
    uint64_t generation = 0;
  };
  RestoreGate restore_gate_;

  // The contents of .hoody/diff/A..B as `c` may see them (DiffText::text_for),
  // from the diff cache: a pair of snapshots is computed once and kept within
  // the budget; concurrent opens of one pair (@live too) share one
  // computation.  on_wait(ticket) runs before the open may wait: it arranges
  // for diff_cache().interrupt(ticket) on a FUSE interrupt (then EINTR).
  Result<std::shared_ptr<const std::string>> open_diff(
      const std::string& node_name, const Who& c,
      const std::function<void(DiffCache::Ticket)>& on_wait);
  DiffCache& diff_cache() { return *diff_cache_; }

  vdir::DiffTable diffs_;
  // A rename at the root: the top-level directories follow it.
  void renamed(const std::string& from, const std::string& to);
  // A snapshot is gone: its top-level directory no longer shows it.
  void removed(const std::string& name);

protected:
  Status allow(fuse_req_t req, const pt::Access& a) override;
  void on_forget(pt::Inode& inode) override;

  // ---- the virtual nodes: the root and .hoody/ (the core routes to these) -----
  // ops/entry.cpp: names.  At the root they are the snapshot verbs (mkdir
  // creates, rmdir deletes, rename renames); in .hoody/ nothing changes.
  Result<fuse_entry_param> vlookup(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  void vforget(fuse_ino_t ino, uint64_t n) override;
  Result<fuse_entry_param> vmkdir(fuse_req_t req, fuse_ino_t parent, const char* name,
                                  mode_t mode) override;
  Status vrmdir(fuse_req_t req, fuse_ino_t parent, const char* name) override;
  Status vrename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                 const char* newname, unsigned flags) override;
  Status vcross(fuse_req_t req, const pt::Access& real) override;
  // ops/attr.cpp
  Result<struct stat> vgetattr(fuse_req_t req, fuse_ino_t ino) override;
  double vattr_timeout(fuse_ino_t ino) override;
  Result<struct stat> vsetattr(fuse_req_t req, fuse_ino_t ino, const struct stat& attr,
                               int valid) override;
  Result<std::string> vgetxattr(fuse_req_t req, fuse_ino_t ino, const char* name) override;
  // ops/control.cpp: the listings and the control files.
  Result<std::vector<pt::VEntry>> vreaddir(fuse_req_t req, fuse_ino_t ino) override;
  Result<fuse_entry_param> vdirentry(fuse_req_t req, fuse_ino_t dir, const pt::VEntry& e) override;
  Result<std::unique_ptr<pt::VirtualFile>> vopen(fuse_req_t req, fuse_ino_t ino, int flags) override;
  Result<size_t> vwrite(fuse_req_t req, pt::VirtualFile& f, std::string data, off_t off) override;
  Result<off_t> vlseek(fuse_req_t req, pt::VirtualFile& f, off_t off, int whence) override;
  // Snapshot verbs, restores and diffs run on threads of their own (offload).
  void vdefer(pt::Op op, fuse_ino_t ino, std::function<void()> job) override;

private:
  void prune_loop();
  void prune_once();
  // One step of the schedule at `now` (schedule.cpp): take the due slot's
  // snapshot (unless onchange finds nothing changed), then prune by the policy.
  void schedule_once(TimePoint now);
  // Tells the kernel that names it may have cached are gone (from the
  // background thread only, never inside a request on the root).
  void forget_names(const std::vector<std::string>& names);

  // The snapshots as the daemon shows them, rebuilt from the store only when
  // changes_ moved: lookup, getattr, getxattr and readdir of 1000 snapshots
  // cost no index query each.
  struct Listing {
    uint64_t gen = 0;
    std::vector<Snapshot> all;                   // oldest first
    std::unordered_map<std::string, size_t> by_name;
    std::unordered_map<std::string, size_t> by_uuid;
  };
  Result<std::shared_ptr<const Listing>> listing();


  Config scfg_;
  vdir::AccessPolicy access_;
  std::optional<int64_t> default_expiry_offset_;  // seconds from creation
  std::unique_ptr<SnapshotStore> store_;
  // Computations run on offload() threads: made in start(), destroyed after
  // wait_jobs() (its destructor waits for its computations too).
  std::unique_ptr<DiffCache> diff_cache_;
  dev_t store_dev_ = 0;  // st_dev of SOURCE/.snapshots: the <uuid> dirs live on it
  UniqueFd source_fd_;   // SOURCE, O_RDONLY|O_DIRECTORY
  std::string source_real_;  // realpath(SOURCE): the dbfs control sockets are named after it
  UniqueFd store_fd_;    // SOURCE/.snapshots, O_RDONLY|O_DIRECTORY
  std::string clock_file_;  // $HOODY_TEST_CLOCK_FILE (tests only), "" for the system clock
  fuse_session* se_ = nullptr;            // for notifications; set once mounted
  std::atomic<int64_t> schedule_checked_{INT64_MIN};  // "now" of the last schedule step
  std::atomic<int64_t> root_mtime_{0};  // last create/delete/rename/prune/restore
  // The root's snapshot count, recounted only after a change: a getattr of
  // the root (every path walk checks its permission) must not list the store.
  std::atomic<uint64_t> changes_{1};
  std::atomic<uint64_t> counted_at_{0};
  std::atomic<size_t> count_{0};

  // Held while listing_ is rebuilt (before listing_m_; the store's locks inside).
  std::mutex rebuild_m_;
  // Guards listing_ and subvols_.  A leaf lock.
  std::mutex listing_m_;
  std::shared_ptr<const Listing> listing_;
  std::unordered_map<std::string, size_t> subvols_;  // uuid -> scope subvolumes in it (fixed)

  // Guards tops_ and in_kernel_.  A leaf lock: nothing is called under it
  // (on_forget takes it under the core's mutex_).
  std::mutex tops_m_;
  struct Top {
    std::string uuid, name;
  };
  std::unordered_map<ino_t, Top> tops_;  // backing ino of a <uuid> dir -> its snapshot
  // The uuids of the snapshot directories the kernel holds (looked up, not
  // yet forgotten): readdirplus leaves their cached entries alone.
  std::unordered_set<std::string> in_kernel_;
  bool in_kernel(const std::string& uuid);

  // Guards jobs_ (offloaded requests in flight).  A leaf lock.
  std::mutex jobs_m_;
  std::condition_variable jobs_cv_;
  size_t jobs_ = 0;
  void wait_jobs();

  // Guards stop_ (the prune thread's sleep).  A leaf lock.
  std::mutex prune_m_;
  std::condition_variable prune_cv_;
  bool stop_ = false;
  bool recover_due_ = false;  // a restore left old live subvolumes to delete
  bool schedule_due_ = false;  // the schedule was set: run it now
  std::thread prune_thread_;
  // Watches SOURCE/.snapshots for a touch of its attributes: `hoody-snap
  // receive` (another process, sharing the index) published a snapshot.
  std::thread watch_thread_;
  UniqueFd watch_stop_;  // eventfd: written when the daemon stops
  void watch_loop();
  void stop_watch();
};

// The daemon object of a request.
inline Fs& snapfs_of(fuse_req_t req) { return static_cast<Fs&>(pt::fs_of(req)); }

}  // namespace hoody::snapfs
