#include "hoody/readiness.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "hoody/log.hpp"
#include "hoody/mountinfo.hpp"

namespace hoody {

namespace {

// The device of the FUSE mount at `mountpoint` (the last one: the top of a
// stack), or 0 when there is none.
dev_t fuse_device(const std::string& mountpoint) {
  auto mounts = mountinfo::read();
  if (!mounts) return 0;
  dev_t dev = 0;
  for (auto& m : *mounts)
    if (m.mount_point == mountpoint && m.fstype.rfind("fuse", 0) == 0)
      dev = makedev(m.major, m.minor);
  return dev;
}

}  // namespace

Readiness::Readiness(std::string program, std::string mountpoint)
    : program_(std::move(program)), mountpoint_(std::move(mountpoint)), enabled_(wanted()) {}

Readiness::~Readiness() { stop(); }

bool Readiness::wanted() {
  const char* s = std::getenv("NOTIFY_SOCKET");
  return s && *s;
}

void Readiness::start() {
  if (!enabled_ || thread_.joinable()) return;
  thread_ = std::thread([this] { wait_and_notify(); });
}

void Readiness::wait_and_notify() {
  auto log = log::get("fuse");
  dev_t want = fuse_device(mountpoint_);
  struct stat st;
  // Blocks until the loop has answered FUSE_INIT and the root's GETATTR.
  if (::stat(mountpoint_.c_str(), &st) < 0) {
    int e = errno;
    log->warn("ready: mountpoint={} stat failed: {} -> READY=1 not sent", mountpoint_,
              std::strerror(e));
    return;
  }
  if (want == 0 || st.st_dev != want) {
    log->warn("ready: mountpoint={} answered from device {}:{}, not the FUSE mount's {}:{} "
              "-> READY=1 not sent",
              mountpoint_, major(st.st_dev), minor(st.st_dev), major(want), minor(want));
    return;
  }
  std::lock_guard g(mu_);
  if (stopping_) return;
  int r = sd_notifyf(0, "READY=1\nSTATUS=serving %s", mountpoint_.c_str());
  if (r < 0) {
    log->warn("ready: sd_notify(READY=1) failed: {}", std::strerror(-r));
    return;
  }
  ready_sent_ = true;
  log->info("ready: mountpoint={} answers (root {}:{} ino={}) -> READY=1", mountpoint_,
            major(st.st_dev), minor(st.st_dev), static_cast<unsigned long long>(st.st_ino));
}

void Readiness::stopping() {
  if (!enabled_) return;
  std::lock_guard g(mu_);
  if (stopping_) return;
  stopping_ = true;
  int r = sd_notifyf(0, "STOPPING=1\nSTATUS=unmounting %s", mountpoint_.c_str());
  if (r < 0) log::get("fuse")->warn("ready: sd_notify(STOPPING=1) failed: {}", std::strerror(-r));
}

void Readiness::stop() {
  if (thread_.joinable()) thread_.join();
}

bool Readiness::ready_sent() const {
  std::lock_guard g(mu_);
  return ready_sent_;
}

}  // namespace hoody
