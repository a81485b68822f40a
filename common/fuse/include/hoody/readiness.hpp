// Readiness for a service manager (systemd's Type=notify, sd_notify(3)).
//
// A daemon is ready once its mount answers, not once mount(2) returned: the
// mount is there before the loop serves a request, and a unit ordered after
// this one (a bind of the mount into a container, a job that opens a database)
// would otherwise start against a mount whose first request waits, or against
// a daemon that is still about to fail.  So after the mount, a thread stat()s
// the mountpoint: that sends FUSE_INIT and a GETATTR of the root through the
// kernel and returns only when the loop answered both.  When the attributes
// come back from the FUSE mount's own device (the major:minor that
// /proc/self/mountinfo gives the mount), READY=1 is sent with a STATUS= line;
// when the loop ends first, nothing is sent.  STOPPING=1 is sent when the loop
// ends (a signal or an unmount), before the unmount.
//
// Without $NOTIFY_SOCKET (a daemon started by hand, from fstab or a test)
// nothing of this runs: no thread, no extra request.
#pragma once

#include <mutex>
#include <string>
#include <thread>

namespace hoody {

class Readiness {
public:
  // `mountpoint` absolute; `program` for the log.
  Readiness(std::string program, std::string mountpoint);
  ~Readiness();  // stop()
  Readiness(const Readiness&) = delete;
  Readiness& operator=(const Readiness&) = delete;

  // True when a service manager listens ($NOTIFY_SOCKET is set).
  static bool wanted();

  // Start the thread that waits for the mount to answer, then sends READY=1.
  // Call after the mount (and after any fork of daemonizing), before the loop.
  void start();
  // The loop ended: STOPPING=1 (if READY=1 was sent or may still be). No
  // READY=1 is sent after this.
  void stopping();
  // Join the thread.  Call after the unmount: a stat() still waiting then
  // returns (ENOTCONN), so the join cannot hang.
  void stop();

  bool ready_sent() const;

private:
  void wait_and_notify();

  std::string program_, mountpoint_;
  bool enabled_ = false;
  std::thread thread_;
  mutable std::mutex mu_;  // orders READY=1 before STOPPING=1; held across sd_notify (a datagram send)
  bool ready_sent_ = false;
  bool stopping_ = false;
};

}  // namespace hoody
