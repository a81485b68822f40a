// hoody-dbfs: the daemon object (the fuse userdata).
//
// The passthrough core over the backing directory, plus what makes SQLite
// safe to share: one daemon per backing directory (a second one refuses to
// start), the lock manager that answers the POSIX and flock requests
// (ops/lock.cpp), the classification of SQLite files it needs, and the lock
// counters that --status shows.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "hoody/daemon.hpp"
#include "hoody/passthrough.hpp"
#include "hoody/source_watch.hpp"
#include "hoody/unique_fd.hpp"
#include "lock/lock_manager.hpp"

namespace hoody::dbfs {

class ControlServer;

struct Config {
  pt::Config core;
  lock::Config locks;
  std::string mountpoint;  // absolute
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
  // After fuse_daemonize: starts the threads (lock manager timer, control
  // socket, source watch); threads made before the fork would be lost.
  void attached(fuse_session* se) override;
  // The session ends: no kernel notification may use it any more.
  void destroy() override;

  // The lock ops (ops/lock.cpp).
  void getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) override;
  void setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
             int sleep) override;
  void flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) override;

  lock::LockManager& locks() { return *locks_; }
  // What --status prints beyond every daemon's part (daemon_main adds the
  // program, pid and transport): the lock counters, tokens and waiters.
  nlohmann::json status() override;

  // The subvolume at SOURCE was replaced (a restore): serve the new one, make
  // every inode and file of the old tree stale, retire their locks, drop the
  // kernel's caches of the old tree.  Called by the control socket
  // ("source-replaced") and by the inotify watch; serialized and idempotent:
  // it returns when the last change's invalidation is complete.  The reply
  // body of "source-replaced": changed, epoch, stale_holders (or ok:false).
  // Never call it from a request of this mount (the kernel notifications
  // would wait for it).
  nlohmann::json source_replaced();

protected:
  void on_entry(pt::Inode& parent, pt::Inode& child, const char* name) override;
  void on_open(fuse_req_t req, pt::File& file, fuse_file_info* fi) override;
  void on_flush(fuse_req_t req, pt::File& file, fuse_file_info* fi) override;
  void on_release(pt::File& file, fuse_file_info* fi) override;
  void on_write(pt::File& file, off_t off, size_t len) override;
  void on_forget(pt::Inode& inode) override;

private:
  // What a file is, for the lock manager.  "SQLite" is decided from what the
  // file is, never from its name or the offsets locked: a file named like a
  // database is one when its header says "SQLite format 3\0" (or while it is
  // empty: SQLite locks a new database before it writes page 1); a -journal,
  // -wal or -shm only when the database beside it is one.  Everything else is
  // plain: exact POSIX semantics, F_SETLK answers at once.
  enum class Header : std::uint8_t { unread, empty, sqlite, other };
  struct FileMeta {
    lock::FileKind named = lock::FileKind::plain;  // what the name's suffix suggests
    std::string domain;                            // parent + database name
    Header header = Header::unread;  // files named like a database: last read at open/write
    lock::FileKind told = lock::FileKind::plain;   // what locks_ was last told
    std::string told_domain;
  };
  void classify_on_open(fuse_ino_t ino, pt::File& file);
  // Reads the header of `file` (after an open, or a write to it) and tells the
  // lock manager what the file is now.  Through the handle's own descriptor
  // when `through_handle` (and it is readable), else an O_NOATIME one.
  void read_header(fuse_ino_t ino, pt::File& file, bool through_handle);
  // Tells the lock manager what `ino` is now (before each lock request: the
  // database beside a -shm may have become SQLite, or stopped being it).
  void classify_for_lock(fuse_ino_t ino);
  Status lock_source(std::string* why);
  std::string database_name(const std::string& domain);
  bool is_shm(fuse_ino_t ino);

  Config dcfg_;
  UniqueFd exclusive_;  // flock(LOCK_EX) on the backing directory while we serve it
  std::optional<lock::LockManager> locks_;  // made in attached(): it has a thread
  // Serialises classify_for_lock, so that what locks_ was told is the newest.
  // Lock order: before meta_mu_ and the lock manager's mutex.  Held across
  // LockManager::register_file (rarely: only when a file's kind changes),
  // whose completions only reply and never take it.
  std::mutex classify_mu_;
  // Guards meta_ and db_of_domain_.  Lock order: innermost; never held across
  // a LockManager call whose completion could take it.
  std::mutex meta_mu_;
  std::unordered_map<fuse_ino_t, FileMeta> meta_;
  std::unordered_map<std::string, fuse_ino_t> db_of_domain_;  // domain -> its database file
  std::atomic<fuse_session*> se_{nullptr};
  // Serializes source_replaced() (control thread, watch thread).  Taken by no
  // request handler: the kernel notifications it makes may wait for requests.
  std::mutex change_mu_;
  std::unique_ptr<ControlServer> control_;  // its thread uses the members above
  std::unique_ptr<SourceWatch> watch_;  // last: its thread uses the members above
};

}  // namespace hoody::dbfs
