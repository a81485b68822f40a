// hoody::io — the backing I/O engine of the passthrough core.
//
// The FUSE op handlers call an Engine from libfuse's worker threads for the
// reads, writes and fsyncs on backing files, and reply to FUSE from `done`.
//
// Contract, common to both engines:
//  - `done(res)` is called exactly once per request: res >= 0 is the number of
//    bytes transferred (0 for fsync), res < 0 is -errno.
//  - Transfers are complete: a read returns fewer than n bytes only at EOF (or
//    when an error follows a partial transfer: then the bytes done so far); a
//    write returns n, or the bytes done before an error, or -errno if none.
//  - `done` MAY RUN INLINE, on the calling thread, before read/write/fsync
//    returns: always for "sync"; for "uring" when the request needs no
//    waiting (a read served from the page cache by the RWF_NOWAIT fast path,
//    every write with Options::writes_inline, a request that completed
//    inside io_uring_enter), and it may also run the done of another
//    thread's request that it found completed.  Otherwise done runs on the
//    completion thread of the ring ("uring" only).  So: after the call, do
//    not touch state that `done` may have released (e.g. the fuse_req_t).
//  - Which calls block the caller: "sync" all of them; "uring" a write with
//    writes_inline (pwrite, as "sync"), a submitter when queue_depth requests
//    are in flight (backpressure), and never a read miss or an fsync.
//  - `done` runs with no engine lock held; it may call the engine again
//    (e.g. to issue the next request).  It must not throw (an exception is
//    caught, logged and dropped) and should not block for long: on the
//    completion thread it delays every other completion.
//  - `buf` and the fd belong to the caller and must stay valid until `done` runs.
//  - For regular files (and block devices).  Not for pipes or sockets: a
//    short read is continued until EOF, which on a stream waits for more data.
//  - Thread-safe: any number of threads may submit at once.
//  - Destroying an Engine waits for every request in flight to finish and its
//    `done` to return; no request may be submitted once destruction began.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string_view>

#include "hoody/result.hpp"

namespace hoody::io {

// res >= 0: bytes transferred (0 for fsync); res < 0: -errno.  Called exactly once.
using Done = std::function<void(ssize_t res)>;

class Engine {
public:
  virtual ~Engine() = default;
  virtual const char* name() const = 0;  // "uring" or "sync"
  virtual void read(int fd, void* buf, size_t n, off_t off, Done done) = 0;
  virtual void write(int fd, const void* buf, size_t n, off_t off, Done done) = 0;
  // datasync: fdatasync instead of fsync.
  virtual void fsync(int fd, bool datasync, Done done) = 0;
};

enum class Kind { uring, sync };

// "uring" or "sync" (for "-o io=uring|sync"); nullopt otherwise.
std::optional<Kind> parse_kind(std::string_view s);
const char* to_string(Kind kind);

struct Options {
  // io_uring SQ entries (the CQ gets twice as many).  It also bounds the
  // requests in flight: a submitter that finds them all taken waits for one
  // to complete (backpressure), it never fails.  0 is invalid: io_uring_queue_init
  // then fails with EINVAL, which tests use to exercise the fallback.
  unsigned queue_depth = 256;
  // Number of rings (each with its own locks and completion thread).  The kernel
  // serializes the submissions to one ring, and a cached read is copied during
  // submission, so one ring would serialize all cached reads.  A thread always
  // submits to the same ring (threads are spread round-robin).  0: the number
  // of CPUs, at most 4.
  unsigned rings = 0;
  // uring: try each read and write first in the calling thread with
  // preadv2/pwritev2(RWF_NOWAIT), and only go through the ring when that would
  // block (a page-cache miss, a write that must wait for locks or allocation)
  // or transferred only part.  io_uring makes the same non-blocking attempt
  // inside io_uring_enter, at a higher fixed cost; the fast path gives cached
  // I/O the speed of "sync" while I/O that blocks still frees the caller.
  // Switched off for the engine's lifetime on EOPNOTSUPP (e.g. ext4 buffered
  // writes).  fsync always goes through the ring.
  bool nowait_first = true;
  // uring: do writes with pwrite in the calling thread, like "sync" (reads
  // and fsyncs still use the ring).  On by default, because for buffered
  // writes the ring measured slower (tests/bench/io_engine_bench): on ext4
  // (no RWF_NOWAIT buffered writes) and on btrfs COW files (RWF_NOWAIT gives
  // EAGAIN) io_uring hands every write to an io-wq worker, and io-wq runs the
  // buffered writes to one inode one at a time: two thread switches per write
  // and no parallelism (4k writes on ext4: 0.16-0.24 of sync through the ring,
  // about 1.0 inline).  false: writes go through the ring (with the
  // RWF_NOWAIT attempt first if nowait_first).
  bool writes_inline = true;
};

// The "sync" engine: pread/pwrite/fsync/fdatasync in the calling thread.
std::unique_ptr<Engine> make_sync_engine();

// The "uring" engine, or the errno of io_uring_queue_init (ENOSYS, EPERM when
// kernel.io_uring_disabled forbids it, ENOMEM, EINVAL).  Does not fall back.
Result<std::unique_ptr<Engine>> make_uring_engine(const Options& opts = {});

// The engine of that kind.  Kind::uring falls back to "sync" with one log line
// on the "io" logger: info when $HOODY_IO_URING_DISABLE=1 asks for it, warn
// when io_uring_queue_init fails.  Never returns null.
std::unique_ptr<Engine> make_engine(Kind kind, const Options& opts = {});

}  // namespace hoody::io
