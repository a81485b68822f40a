// What the snapshot store asks of the servers of its scope subvolumes while it
// snapshots and restores them (issue 11, DESIGN.md "Snapshots and running
// applications"): hoody-dbfs holds every database's writer token (quiesce),
// follows a restore (replaced), lets go (resume), and names the processes
// that have files open through it (holders).  The store stays pure: the
// daemon implements Quiescer over the control channel (hoody-snapfs/peers.*),
// a test with a fake.
//
// Also here: the processes that hold files, a cwd or a root directory on a
// subvolume, found in /proc (a bind mount such as /hoody/storage has no
// server to ask).
#pragma once

#include <sys/types.h>

#include <string>
#include <utility>
#include <vector>

#include "hoody/result.hpp"

namespace hoody::snapfs {

// A process using files of a subvolume.
struct Holder {
  pid_t pid = 0;
  std::string comm;  // /proc/PID/comm
  std::string path;  // what it holds: a file, or "cwd <dir>" / "root <dir>"
  friend bool operator==(const Holder&, const Holder&) = default;
};

// What a quiesce got.
struct QuiesceResult {
  int databases = 0;                // databases whose writer token is held
  std::vector<std::string> busy;    // "databases/app.db": a transaction outlasted the timeout
  std::vector<std::string> served;  // the scope subvolumes a server answered for
  double ms = 0;                    // how long the quiesce took
};

class Quiescer {
public:
  virtual ~Quiescer() = default;
  // Holds every database served from the scope subvolumes `subvols` (names in
  // SOURCE), each server within its bound.  A server that does not answer in
  // time or refuses: the error (ETIMEDOUT, EBUSY, ...) and *why naming it.
  // Whatever was held stays held until resume(), also after a failure.
  virtual Result<QuiesceResult> quiesce(const std::vector<std::string>& subvols,
                                        std::string* why) = 0;
  // Whether every server held by quiesce() still holds: a server that exited
  // since (kill -9, a crash) let its databases go with its connection, and a
  // server mounted again on the subvolume since then holds nothing.  The
  // error (ECONNRESET) and *why naming it.  Asks no server (no round trip).
  virtual Status still_held(std::string* why) {
    (void)why;
    return {};
  }
  // Lets every held server go on.  Idempotent; never fails (a server whose
  // connection is closed resumes by itself).
  virtual void resume() = 0;
  // Scope subvolume `sv` was exchanged: returns once its server (if any)
  // serves the new one, with the processes that still hold files of the old.
  virtual Result<std::vector<Holder>> replaced(const std::string& sv, std::string* why) = 0;
  // The processes that have files open through the servers of `subvols` now.
  virtual Result<std::vector<Holder>> holders(const std::vector<std::string>& subvols,
                                              std::string* why) = 0;
  // The servers' own pids: they hold their subvolumes open by design, so a
  // /proc scan leaves them out.
  virtual std::vector<pid_t> server_pids() const = 0;
};

// Resumes at the end of its scope (or at release()): every path out of an
// operation that quiesced lets the servers go.
class QuiesceHold {
public:
  QuiesceHold() = default;
  explicit QuiesceHold(Quiescer* q) : q_(q) {}
  ~QuiesceHold() { release(); }
  QuiesceHold(const QuiesceHold&) = delete;
  QuiesceHold& operator=(const QuiesceHold&) = delete;
  // From now on, resume at the end (a hold made empty, then armed).
  void arm(Quiescer* q) {
    release();
    q_ = q;
  }
  void release() {
    if (q_) std::exchange(q_, nullptr)->resume();
  }
  bool held() const { return q_ != nullptr; }

private:
  Quiescer* q_ = nullptr;
};

// The processes (other than `exclude`) with an open file, a cwd or a root
// directory on one of the filesystems `devs` (st_dev of subvolumes), one entry
// per process, in pid order.  Reads /proc without touching the files
// (statx AT_STATX_DONT_SYNC: no request reaches a FUSE server).
std::vector<Holder> processes_using(const std::vector<dev_t>& devs,
                                    const std::vector<pid_t>& exclude);

// "123 python3 (/hoody/storage/app.log), 456 bash (cwd /hoody/storage)"
std::string describe(const std::vector<Holder>& holders);

}  // namespace hoody::snapfs
