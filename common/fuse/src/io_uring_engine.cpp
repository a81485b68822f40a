// The "uring" engine: one io_uring shared by every submitting thread.
//
// Submission: any thread takes sq_mu_, fills one SQE and calls io_uring_enter
// itself (no hand-off to another thread, so no extra wakeup on the way in).
//
// Completion ("submitters reap, a reaper thread backs them up"):
//  - Right after submitting, the submitter tries cq_mu_ and reaps whatever is
//    in the CQ.  A read served from the page cache completes inside
//    io_uring_enter, so its CQE is already there: its done runs inline on the
//    submitting thread, with no thread switch (the common case for cached I/O).
//  - Requests that go asynchronous (io-wq for fsync, a page-cache miss, device
//    I/O) are reaped by the reaper thread.  It sleeps on a condition variable
//    while every submitted SQE has been reaped (so inline completions do not
//    wake it), and otherwise waits in io_uring_enter(GETEVENTS).
//  - CQEs are copied out under cq_mu_; done runs after cq_mu_ is released.
//
// Ring flags: no IORING_SETUP_SINGLE_ISSUER (many threads submit: the kernel
// would refuse every task but the first with EEXIST) and no COOP_TASKRUN or
// DEFER_TASKRUN (completion task_work queued on a submitter must run even while
// that FUSE worker sleeps in read(/dev/fuse); with COOP_TASKRUN it would wait
// until the worker next enters the kernel on its own).
//
// Backpressure: at most queue_depth requests are in flight (each has at most
// one SQE in the kernel, so the SQ never fills and the CQ, twice as big, never
// overflows).  A submitter that finds no free slot waits on slot_cv_.  The
// reaper thread never waits for a slot (a done that submits from it would
// deadlock): it may exceed the bound, and the kernel's IORING_FEAT_NODROP
// keeps any CQ overflow.
#include <liburing.h>
#include <sys/uio.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "hoody/io_engine.hpp"
#include "hoody/log.hpp"
#include "io_engine_detail.hpp"

namespace hoody::io {

namespace {

struct RingDeleter {
  void operator()(io_uring* ring) const {
    io_uring_queue_exit(ring);
    delete ring;
  }
};
using UniqueRing = std::unique_ptr<io_uring, RingDeleter>;

enum class OpKind : std::uint8_t { read, write, fsync };

// One request; lives from submission until its done has been called.
struct Op {
  OpKind kind;
  bool datasync = false;
  int fd;
  char* buf = nullptr;
  size_t n = 0;     // bytes requested
  size_t moved = 0; // bytes transferred so far (short transfers resubmit the rest)
  off_t off = 0;
  unsigned retries = 0;  // -EAGAIN/-EINTR resubmissions
  Done done;
};

// A CQE's res is an int: keep each SQE's length well below INT_MAX; the
// short-transfer loop issues the rest.
constexpr size_t kMaxChunk = size_t{1} << 30;
// How often a request is resubmitted after -EAGAIN/-EINTR before the error is
// passed to done (an O_NONBLOCK pipe could return EAGAIN forever).
constexpr unsigned kMaxRetries = 64;
constexpr unsigned kReapBatch = 64;
// A submitting thread reaps at most this many batches before it returns.
constexpr unsigned kMaxInlineBatches = 4;

// The engine on this thread is running reap(): a nested submission does not
// reap inline (the outer loop picks its CQE up), which bounds the recursion of
// a done that submits again.
thread_local bool tl_reaping = false;
// This thread is a reaper thread: it never waits for a slot.
thread_local bool tl_reaper = false;
// How many fast-path dones are running on this thread, nested.  Past
// kMaxInlineDepth a request goes through the ring even if it could complete
// at once, so a done that submits again cannot recurse without bound.
thread_local unsigned tl_inline_depth = 0;
constexpr unsigned kMaxInlineDepth = 8;

// One ring with its locks and its reaper thread.
class Shard {
public:
  Shard(UniqueRing ring, unsigned depth) : ring_(std::move(ring)), depth_(depth) {
    reaper_ = std::thread([this] { reaper_main(); });
  }
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  ~Shard() {
    // 1. Drain: wait until every request's done has returned.
    {
      std::unique_lock lk(state_mu_);
      refs_.fetch_or(kStopping);
      drain_cv_.wait(lk, [&] { return refs_.load() == kStopping; });
      exit_ = true;
    }
    // 2. Kick the reaper out of its wait: the cv if it sleeps there, a NOP if
    //    it waits in io_uring_enter.  It exits once the NOP is reaped.
    {
      std::lock_guard lk(sq_mu_);
      io_uring_sqe* sqe = get_sqe_locked();
      io_uring_prep_nop(sqe);
      io_uring_sqe_set_data(sqe, nullptr);
      unreaped_.fetch_add(1);
      submit_locked();
    }
    {
      std::lock_guard lk(state_mu_);
      reaper_cv_.notify_one();
    }
    reaper_.join();
  }

  void start(Op* op) {
    // Two references: the request (until its done returned) and this call (it
    // touches the shard after the request may have completed, so the
    // destructor must wait for the call to return too).
    refs_.fetch_add(2);
    acquire_slot();
    submit(op);
    if (!tl_reaping) reap(/*blocking=*/false);
    // Anything still unreaped (our request went async, or another thread's
    // CQE was left behind): make sure the reaper thread is watching.
    if (unreaped_.load() > 0 && reaper_sleeping_.load()) {
      std::lock_guard lk(state_mu_);
      reaper_cv_.notify_one();
    }
    unref();  // the last access to *this in this call
  }

private:
  void acquire_slot() {
    std::unique_lock lk(state_mu_);
    if (tl_reaper) {
      ++slots_used_;  // never wait on the reaper thread (see the top of the file)
      return;
    }
    slot_cv_.wait(lk, [&] { return slots_used_ < depth_; });
    ++slots_used_;
  }

  void release_slot() {
    std::lock_guard lk(state_mu_);
    --slots_used_;
    slot_cv_.notify_one();
  }

  // Drop a reference (a request whose done returned, or a finished call).
  // One atomic operation decides whether the destructor waits for us, so
  // nothing of *this is touched after the decrement unless it does (and then
  // it cannot get past state_mu_ before we unlock it).
  void unref() {
    if (refs_.fetch_sub(1) == (kStopping | 1)) {
      std::lock_guard lk(state_mu_);
      drain_cv_.notify_all();
    }
  }

  io_uring_sqe* get_sqe_locked() {
    io_uring_sqe* sqe;
    // Only reachable past the slot bound (reaper-thread submissions): flush the SQ.
    while ((sqe = io_uring_get_sqe(ring_.get())) == nullptr) submit_locked();
    return sqe;
  }

  void submit_locked() {
    for (;;) {
      int r = io_uring_submit(ring_.get());
      if (r >= 0) return;
      if (r == -EINTR) continue;
      if (r == -EAGAIN || r == -EBUSY) {  // kernel memory or CQ overflow backlog: let reapers run
        sched_yield();
        continue;
      }
      // The SQEs stay in the SQ and go with the next submission.
      log::get("io")->error("engine=uring io_uring_submit failed: {} (errno={})",
                            Errno(-r).message(), -r);
      return;
    }
  }

  void submit(Op* op) {
    std::lock_guard lk(sq_mu_);  // leaf lock: nothing else is taken while holding it
    io_uring_sqe* sqe = get_sqe_locked();
    size_t len = op->n - op->moved;
    if (len > kMaxChunk) len = kMaxChunk;
    const auto off = static_cast<std::uint64_t>(op->off) + op->moved;
    switch (op->kind) {
      case OpKind::read:
        io_uring_prep_read(sqe, op->fd, op->buf + op->moved, static_cast<unsigned>(len), off);
        break;
      case OpKind::write:
        io_uring_prep_write(sqe, op->fd, op->buf + op->moved, static_cast<unsigned>(len), off);
        break;
      case OpKind::fsync:
        io_uring_prep_fsync(sqe, op->fd, op->datasync ? IORING_FSYNC_DATASYNC : 0);
        break;
    }
    io_uring_sqe_set_data(sqe, op);
    unreaped_.fetch_add(1);
    submit_locked();
  }

  // Reap what is in the CQ, in batches; run each done with no lock held.
  // Returns the number of CQEs reaped.
  size_t reap(bool blocking) {
    size_t total = 0;
    const bool outer = !tl_reaping;
    tl_reaping = true;
    struct Reset {
      bool outer;
      ~Reset() {
        if (outer) tl_reaping = false;
      }
    } reset{outer};
    for (unsigned batches = 0; blocking || batches < kMaxInlineBatches; ++batches) {
      struct Cqe {
        Op* op;
        int res;
      } got[kReapBatch];
      unsigned n = 0;
      {
        std::unique_lock lk(cq_mu_, std::defer_lock);  // leaf lock
        if (blocking)
          lk.lock();
        else if (!lk.try_lock())
          return total;
        io_uring_cqe* cqes[kReapBatch];
        n = io_uring_peek_batch_cqe(ring_.get(), cqes, kReapBatch);
        for (unsigned i = 0; i < n; ++i)
          got[i] = {static_cast<Op*>(io_uring_cqe_get_data(cqes[i])), cqes[i]->res};
        io_uring_cq_advance(ring_.get(), n);
      }
      if (n == 0) return total;
      unreaped_.fetch_sub(n);
      total += n;
      for (unsigned i = 0; i < n; ++i)
        if (got[i].op) complete(got[i].op, got[i].res);  // null: the shutdown NOP
      // Go round until the CQ is empty (callbacks may have submitted more);
      // a submitter stops after a few batches and leaves the rest to the reaper.
    }
    return total;
  }

  void complete(Op* op, int res) {
    if ((res == -EAGAIN || res == -EINTR) && op->retries < kMaxRetries) {
      ++op->retries;
      return submit(op);
    }
    ssize_t result = 0;
    if (op->kind == OpKind::fsync) {
      result = res;
    } else if (res > 0) {
      op->moved += static_cast<size_t>(res);
      if (op->moved < op->n) return submit(op);  // short transfer: the rest
      result = static_cast<ssize_t>(op->moved);
    } else if (res == 0) {
      // Read: EOF.  Write: no progress and no error; do not spin.
      if (op->kind == OpKind::write && op->moved == 0)
        result = -EIO;
      else
        result = static_cast<ssize_t>(op->moved);
    } else {
      // An error after a partial transfer reports the part, like pread/pwrite.
      result = op->moved > 0 ? static_cast<ssize_t>(op->moved) : res;
    }
    Done d = std::move(op->done);
    delete op;
    release_slot();  // before done: a done that submits again finds a free slot
    detail::call_done(d, result, "uring");
    unref();
  }

  void reaper_main() {
    tl_reaper = true;
    auto log = log::get("io");
    for (;;) {
      {
        std::unique_lock lk(state_mu_);
        reaper_sleeping_.store(true);
        reaper_cv_.wait(lk, [&] { return unreaped_.load() > 0 || exit_; });
        reaper_sleeping_.store(false);
        if (exit_ && unreaped_.load() == 0) return;
      }
      // Wait in the kernel until the CQ holds at least one CQE.  A submitter may
      // take it first; then this loop just goes round again.
      int r = io_uring_enter(static_cast<unsigned>(ring_->ring_fd), 0, 1, IORING_ENTER_GETEVENTS,
                             nullptr);
      if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
        log->error("engine=uring io_uring_enter(GETEVENTS) failed: {} (errno={})",
                   Errno(-r).message(), -r);
        sched_yield();
      }
      reap(/*blocking=*/true);
    }
  }

  UniqueRing ring_;
  const unsigned depth_;

  // Lock order: sq_mu_ and cq_mu_ are leaves (nothing else is taken while one
  // is held, and never a callback).  state_mu_ is never held while taking
  // sq_mu_ or cq_mu_, nor across a callback or I/O.  sq_mu_ is held across
  // io_uring_enter(to_submit): that does not wait for I/O (io_uring tries
  // each request without blocking and hands the rest to io-wq), and the
  // kernel serializes submissions to one ring under its own lock anyway.
  std::mutex sq_mu_;     // the submission queue: get_sqe, prep, io_uring_submit
  std::mutex cq_mu_;     // consuming the completion queue: peek, advance
  std::mutex state_mu_;  // slots_used_, exit_ and the condition variables
  std::condition_variable slot_cv_;    // a slot was released
  std::condition_variable reaper_cv_;  // unreaped_ became > 0, or exit_
  std::condition_variable drain_cv_;   // refs_ reached kStopping
  unsigned slots_used_ = 0;            // requests holding a slot (state_mu_)
  bool exit_ = false;                  // (state_mu_) reaper: exit once all is reaped
  // Requests whose done has not returned plus calls of start() in progress;
  // the destructor sets kStopping and waits for the count to reach 0.
  static constexpr std::uint64_t kStopping = std::uint64_t{1} << 63;
  std::atomic<std::uint64_t> refs_{0};
  std::atomic<size_t> unreaped_{0};     // SQEs submitted whose CQE was not consumed
  std::atomic<bool> reaper_sleeping_{false};
  std::thread reaper_;
};

// Which shard a thread submits to: threads are numbered on first use and
// spread round-robin, so a thread always uses the same ring.
std::atomic<unsigned> g_next_thread{0};
thread_local const unsigned tl_thread_index = g_next_thread.fetch_add(1);

class UringEngine final : public Engine {
public:
  UringEngine(std::vector<std::unique_ptr<Shard>> shards, const Options& opts)
      : shards_(std::move(shards)),
        writes_inline_(opts.writes_inline),
        read_nowait_(opts.nowait_first),
        write_nowait_(opts.nowait_first) {}

  const char* name() const override { return "uring"; }

  void read(int fd, void* buf, size_t n, off_t off, Done done) override {
    if (n == 0) return detail::call_done(done, 0, "uring");
    size_t moved = 0;
    if (read_nowait_.load(std::memory_order_relaxed) && tl_inline_depth < kMaxInlineDepth) {
      iovec iov{buf, n};
      ssize_t r = ::preadv2(fd, &iov, 1, off, RWF_NOWAIT);
      // All of it, or EOF: done.  A short read may be EOF or a partly cached
      // range: the ring reads the rest (and finds EOF if it was).
      if (r == ssize_t(n) || r == 0) return done_inline(done, r);
      if (r > 0)
        moved = size_t(r);
      else if (fast_path_error(errno, read_nowait_))
        return done_inline(done, -errno);
    }
    shard().start(new Op{OpKind::read, false, fd, static_cast<char*>(buf), n, moved, off, 0,
                         std::move(done)});
  }

  void write(int fd, const void* buf, size_t n, off_t off, Done done) override {
    if (n == 0) return detail::call_done(done, 0, "uring");
    if (writes_inline_) return done_inline(done, detail::pwrite_full(fd, buf, n, off));
    size_t moved = 0;
    if (write_nowait_.load(std::memory_order_relaxed) && tl_inline_depth < kMaxInlineDepth) {
      iovec iov{const_cast<void*>(buf), n};
      ssize_t r = ::pwritev2(fd, &iov, 1, off, RWF_NOWAIT);
      if (r == ssize_t(n)) return done_inline(done, r);
      if (r > 0)
        moved = size_t(r);
      else if (r < 0 && fast_path_error(errno, write_nowait_))
        return done_inline(done, -errno);
    }
    // The buffer is only read (IORING_OP_WRITE); Op keeps one pointer type.
    shard().start(new Op{OpKind::write, false, fd, const_cast<char*>(static_cast<const char*>(buf)),
                         n, moved, off, 0, std::move(done)});
  }

  void fsync(int fd, bool datasync, Done done) override {
    shard().start(new Op{OpKind::fsync, datasync, fd, nullptr, 0, 0, 0, 0, std::move(done)});
  }

private:
  Shard& shard() { return *shards_[tl_thread_index % shards_.size()]; }

  static void done_inline(Done& done, ssize_t res) {
    ++tl_inline_depth;
    detail::call_done(done, res, "uring");
    --tl_inline_depth;
  }

  // After a failed RWF_NOWAIT attempt: true if `err` is the request's own
  // result (EBADF, EISDIR, EFBIG, ...), false if the ring should do it
  // (EAGAIN: it would block; EINTR).  EOPNOTSUPP means the file system cannot
  // do this without blocking (ext4 buffered writes): stop trying on this engine.
  static bool fast_path_error(int err, std::atomic<bool>& enabled) {
    if (err == EAGAIN || err == EINTR) return false;
    if (err == EOPNOTSUPP) {
      if (enabled.exchange(false))
        log::get("io")->debug("engine=uring RWF_NOWAIT not supported here; fast path off");
      return false;
    }
    return true;
  }

  std::vector<std::unique_ptr<Shard>> shards_;  // destroyed in order; each drains first
  const bool writes_inline_;  // Options::writes_inline
  // Try the request with RWF_NOWAIT in the caller first (see Options::nowait_first).
  std::atomic<bool> read_nowait_;
  std::atomic<bool> write_nowait_;
};

Result<UniqueRing> make_ring(unsigned depth, unsigned* sq_entries) {
  auto ring = UniqueRing(new io_uring{});
  io_uring_params p{};
  p.flags = IORING_SETUP_SUBMIT_ALL;
  int r = io_uring_queue_init_params(depth, ring.get(), &p);
  if (r == -EINVAL && depth != 0) {  // a kernel older than 5.18: no SUBMIT_ALL
    p = io_uring_params{};
    r = io_uring_queue_init_params(depth, ring.get(), &p);
  }
  if (r < 0) {
    // The deleter must not io_uring_queue_exit a ring that was never set up.
    delete ring.release();
    return fail(-r);
  }
  log::get("io")->debug("engine=uring sq_entries={} cq_entries={} features=0x{:x}", p.sq_entries,
                        p.cq_entries, p.features);
  *sq_entries = p.sq_entries;
  return ring;
}

}  // namespace

Result<std::unique_ptr<Engine>> make_uring_engine(const Options& opts) {
  unsigned rings = opts.rings;
  if (rings == 0) rings = std::clamp(std::thread::hardware_concurrency(), 1u, 4u);
  std::vector<std::unique_ptr<Shard>> shards;
  for (unsigned i = 0; i < rings; ++i) {
    unsigned sq_entries = 0;
    HOODY_TRY(ring, make_ring(opts.queue_depth, &sq_entries));
    shards.push_back(std::make_unique<Shard>(std::move(ring), sq_entries));
  }
  return std::unique_ptr<Engine>(new UringEngine(std::move(shards), opts));
}

}  // namespace hoody::io
