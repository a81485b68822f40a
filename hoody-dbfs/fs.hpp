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
#include <string>
#include <unordered_map>

#include "hoody/daemon.hpp"
#include "hoody/passthrough.hpp"
#include "hoody/source_watch.hpp"
#include "hoody/unique_fd.hpp"
#include "lock/lock_manager.hpp"

namespace hoody::dbfs {

class StatusServer;

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
  void attached(fuse_session* se) override { se_ = se; }

  // The lock ops (ops/lock.cpp).
  void getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) override;
  void setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock,
             int sleep) override;
  void flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) override;

  lock::LockManager& locks() { return locks_; }
  // Everything --status prints, as JSON text.
  std::string status_json();

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
  void source_replaced();

  Config dcfg_;
  UniqueFd exclusive_;  // flock(LOCK_EX) on the backing directory while we serve it
  lock::LockManager locks_;
  // Guards meta_.  Lock order: innermost; never held across a LockManager call
  // whose completion could take it.
  std::mutex meta_mu_;
  std::unordered_map<fuse_ino_t, FileMeta> meta_;
  std::unique_ptr<StatusServer> status_;
  std::atomic<fuse_session*> se_{nullptr};
  std::unique_ptr<SourceWatch> watch_;  // last: its thread uses the members above
};

}  // namespace hoody::dbfs
