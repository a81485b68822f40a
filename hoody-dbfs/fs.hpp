// hoody-dbfs: the daemon object (the fuse userdata).
//
// The passthrough core over the backing directory, plus what makes SQLite
// safe to share: one daemon per backing directory (a second one refuses to
// start), the lock manager that answers the POSIX and flock requests
// (ops/lock.cpp), the classification of SQLite files it needs, and a status
// socket with the lock counters.
#pragma once

#include <atomic>
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

class StatusServer;
class ControlServer;

struct Config {
  pt::Config core;
  lock::Config locks;
  std::string mountpoint;  // absolute; names the status socket
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
  // After fuse_daemonize: starts the threads (lock manager timer, status
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
  // Everything --status prints, as JSON text.
  std::string status_json();

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
  // What a name says about a file: its SQLite role and database ("domain").
  struct FileMeta {
    lock::FileKind kind = lock::FileKind::plain;
    std::string domain;
    bool checked = false;  // header read (plain-named files)
  };
  void classify_on_open(fuse_ino_t ino, pt::File& file);
  Status lock_source(std::string* why);
  std::string database_name(const std::string& domain);
  bool is_shm(fuse_ino_t ino);

  Config dcfg_;
  UniqueFd exclusive_;  // flock(LOCK_EX) on the backing directory while we serve it
  std::optional<lock::LockManager> locks_;  // made in attached(): it has a thread
  // Guards meta_.  Lock order: innermost; never held across a LockManager call
  // whose completion could take it.
  std::mutex meta_mu_;
  std::unordered_map<fuse_ino_t, FileMeta> meta_;
  std::unique_ptr<StatusServer> status_;
  std::atomic<fuse_session*> se_{nullptr};
  // Serializes source_replaced() (control thread, watch thread).  Taken by no
  // request handler: the kernel notifications it makes may wait for requests.
  std::mutex change_mu_;
  std::unique_ptr<ControlServer> control_;  // its thread uses the members above
  std::unique_ptr<SourceWatch> watch_;  // last: its thread uses the members above
};

}  // namespace hoody::dbfs
