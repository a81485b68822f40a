// FUSE over io_uring (kernel fs/fuse/dev_uring.c, uapi fuse.h 7.42) for a
// libfuse 3.14 session.  Overview in fuse_uring.hpp.
//
// The kernel side, as far as it shapes this file:
//  - one queue per possible CPU; a request goes to the queue of the CPU its
//    caller runs on and stays there (task_cpu(current));
//  - an entry is a header buffer (fuse_in_header / fuse_out_header, the op's
//    fixed header, commit id and payload size) and a payload buffer of at least
//    max(8 KiB, max_write, max_pages * page size);
//  - REGISTER hands an entry to the kernel; its CQE arrives when a request was
//    copied into it.  COMMIT_AND_FETCH answers the request of an entry and, in
//    the same step, gives the entry the next request queued on that CPU;
//  - a request that finds no free entry waits in the queue's list, and only a
//    COMMIT_AND_FETCH takes it from there (a later REGISTER does not);
//  - until every queue has an entry, requests wait (fuse_block_alloc); a
//    REGISTER that fails turns the ring off for the connection (fc->io_uring =
//    0) and the waiting requests go to /dev/fuse;
//  - FORGET, BATCH_FORGET and INTERRUPT always go to /dev/fuse.
//
// Requests answered later (parked).  A request whose reply is not written
// while fuse_session_process_buf runs keeps its entry until the reply comes
// (a lock waiting for the writer token, a read on the io_uring engine).  So
// that parked requests never use up a queue:
//  1. every parked request is replaced at once by a new entry (REGISTER), so
//     that the entries not parked stay >= depth; the number of entries grows
//     to depth + the most requests parked at once on that CPU (capped at
//     kMaxEntries; each parked request is a caller thread blocked in the
//     kernel, so the count is bounded by the threads of the machine);
//  2. a request that arrived while every entry was taken waits in the
//     kernel's list, and a new entry does not fetch it: only a commit does.
//     When a request parks, no other request of the queue is being served
//     (none will be committed soon) and a request may be waiting in that
//     list (update_queued tells from each reap), one of the queue's kicker threads,
//     pinned to the same CPU, makes one GETATTR on the mount root (statx with
//     AT_STATX_FORCE_SYNC), once the replacement entries of that round are
//     registered.  It lands on this CPU's queue, takes a free entry (there
//     are >= depth), and its commit fetches the oldest waiting request; if
//     that one parks too, the next kick follows.  So the token holder's
//     unlock, queued behind any number of waiters, is always served.  A kick
//     whose GETATTR found no free entry waits in that list itself, with its
//     kicker: hence several kickers (kicker_main).
//  3. A request can also wait in that list while entries are free: the
//     kernel moves background requests (RELEASE, readahead) into it at a
//     commit and fetches only one.  A watchdog thread per queue: while
//     requests are parked and nothing was committed on its queue for 20 ms
//     (backing off to 500 ms while that stays so), it asks for a kick.
//  I/O ops answered later (READ, WRITE, FSYNC, ...) do not kick: their
//  completion does not depend on another FUSE request, and their commit fetches.
//
// One thread serves a CPU's queue, so an op that blocks in a long syscall
// would hold up every request of that CPU.  FSYNC, FSYNCDIR and FALLOCATE
// therefore run on a small pool (Offload) and come back as replies made later.
//
// Replies.  libfuse writes every reply through the session's custom io
// (writev, or splice_send for spliced data); the out header's unique finds the
// entry (inflight_ map), the body is copied into the entry's payload and the
// entry is committed by its ring thread: at once when the reply came while
// that thread was dispatching it, else through the queue's ready list and
// eventfd (so every SQE of a ring is submitted by its own pinned thread, and
// the kernel's task work for the next request runs there too).
#include "fuse_uring.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "hoody/fuse_transport.hpp"
#include "hoody/log.hpp"
#include "request_info.hpp"

namespace hoody::fuse_uring {

namespace {

// The kernel ABI (uapi linux/fuse.h; Debian 12's copy is 7.38 and lacks the ring).
constexpr std::uint32_t kOpGetlk = 31, kOpSetlk = 32;
constexpr std::uint32_t kOpRead = 15, kOpWrite = 16, kOpFsync = 20, kOpFsyncdir = 30,
                        kOpInit = 26, kOpFallocate = 43, kOpLseek = 46, kOpCopyFileRange = 47,
                        kOpTmpfile = 51;
constexpr std::uint32_t kInitExt = 1u << 30;        // FUSE_INIT_EXT
constexpr std::uint32_t kMaxPagesFlag = 1u << 22;   // FUSE_MAX_PAGES
constexpr std::uint32_t kOverIoUring2 = 1u << 9;    // FUSE_OVER_IO_URING (1ULL << 41) in flags2
constexpr std::uint32_t kCmdRegister = 1, kCmdCommitAndFetch = 2;
constexpr std::uint32_t kDefaultMaxPages = 32;      // FUSE_DEFAULT_MAX_PAGES_PER_REQ
constexpr std::size_t kMinReadBuffer = 8192;        // FUSE_MIN_READ_BUFFER
constexpr std::size_t kMaxEntries = 4096;           // per queue
constexpr std::uint64_t kEventTag = 1;              // user_data of the eventfd read

struct InHeader {
  std::uint32_t len, opcode;
  std::uint64_t unique, nodeid;
  std::uint32_t uid, gid, pid;
  std::uint16_t total_extlen, padding;
};
static_assert(sizeof(InHeader) == 40);
struct OutHeader {
  std::uint32_t len;
  std::int32_t error;
  std::uint64_t unique;
};
static_assert(sizeof(OutHeader) == 16);
struct InitIn {
  std::uint32_t major, minor, max_readahead, flags, flags2;
};
struct InitOut {
  std::uint32_t major, minor, max_readahead, flags;
  std::uint16_t max_background, congestion_threshold;
  std::uint32_t max_write, time_gran;
  std::uint16_t max_pages, map_alignment;
  std::uint32_t flags2;
};
struct RingEntInOut {
  std::uint64_t flags, commit_id;
  std::uint32_t payload_sz, padding;
  std::uint64_t reserved;
};
struct RingReqHeader {
  char in_out[128];
  char op_in[128];
  RingEntInOut ent;
};
static_assert(sizeof(RingReqHeader) == 288);
struct RingCmdReq {
  std::uint64_t flags, commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};

enum class State : std::uint8_t { fetching, dispatching, replied, queued, parked };

struct Queue;

// One ring entry: an mmap of one header page and the payload.  The request is
// rebuilt at the end of the header page, right before the payload, as the
// contiguous bytes /dev/fuse would give (fuse_in_header, op header, payload),
// so the payload itself is never copied.
struct Entry {
  Queue* q = nullptr;
  char* mem = nullptr;
  std::size_t mem_len = 0;
  RingReqHeader* hdr = nullptr;
  char* payload = nullptr;
  iovec iov[2]{};
  std::uint64_t unique = 0;
  std::uint32_t opcode = 0;
  State state = State::fetching;  // guarded by Queue::mu
  bool was_parked = false;        // guarded by Queue::mu
  bool registered = false;        // ring thread only
  // Ring thread only, for Queue::may_queued: the round whose reap saw a CQE
  // of this entry; waiting for a request since the previous reap (so free in
  // the kernel all along); committed in the SQEs submitted before this reap.
  std::uint64_t cqe_round = 0;
  bool carry = false, committed_now = false;
};

struct Queue {
  unsigned qid = 0;
  io_uring ring{};
  bool ring_ok = false;
  int evfd = -1;
  std::uint64_t ev_buf = 0;
  std::thread thread, watchdog;
  std::vector<std::thread> kickers;
  // Kicks in flight (a kicker's GETATTR not answered yet), and the extra
  // kickers the watchdog started when every kicker was stuck (joined at stop).
  std::atomic<unsigned> kicks_in_flight{0};
  struct ExtraKicker {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::mutex extra_mu;
  std::vector<ExtraKicker> extra_kickers;
  // Ring thread only.
  std::vector<std::unique_ptr<Entry>> entries;
  std::uint64_t parked = 0;       // entries whose request is parked
  std::uint64_t in_userspace = 0; // entries with a request, not parked, not committed
  bool cap_warned = false;
  // Whether a request may wait in the kernel's list (arrived while no entry
  // of this queue was free), so that a park must kick (see update_queued).
  bool may_queued = false;
  std::uint64_t round = 0;
  // Replies from other threads, to commit.  Lock order: Transport::map_mu
  // is never held while taking mu.
  std::mutex mu;
  std::vector<Entry*> ready;
  // The kickers and the watchdog (see kicker_main).
  std::mutex kick_mu;
  std::condition_variable kick_cv, watch_cv;
  bool kick_wanted = false;
  // Ring thread only: a request parked in this round; the kick is made after
  // the round's REGISTERs are submitted.
  bool kick_after_submit = false;
  // Counters (read by fuse_transport_info()).
  std::atomic<std::uint64_t> n_requests{0}, n_entries{0}, n_parked{0}, n_parked_max{0},
      n_kicks{0}, n_commits{0};
  // Time from a request's CQE to its commit SQE for requests answered while
  // dispatched (libfuse's dispatch + the op + the reply copy), per opcode class.
  std::atomic<std::uint64_t> n_sync{0}, sync_ns{0}, n_sync_lock{0}, sync_lock_ns{0};
};

// Ops that block for long in a syscall (an fsync: 0.5 ms and more on a loop
// device) run on these threads, so that the other requests of their CPU
// queue do not wait behind them; their replies come back like any reply
// made later.
class Offload {
public:
  void push(Entry* e, fuse_session* se, fuse_buf buf) {
    {
      std::lock_guard g(mu_);
      if (threads_.empty()) {
        unsigned n = std::max(4u, 2 * std::thread::hardware_concurrency());
        for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { run(); });
      }
      work_.push_back({e, se, buf});
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard g(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }

private:
  struct Work {
    Entry* e;
    fuse_session* se;
    fuse_buf buf;
  };
  void run() {
    for (;;) {
      Work w;
      {
        std::unique_lock l(mu_);
        cv_.wait(l, [&] { return stop_ || !work_.empty(); });
        if (work_.empty()) return;
        w = work_.front();
        work_.pop_front();
      }
      fuse_session_process_buf(w.se, &w.buf);
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Work> work_;
  std::vector<std::thread> threads_;
  bool stop_ = false;
};

class Transport {
public:
  Offload offload;
  fuse_session* se = nullptr;
  int fd = -1;
  Options opts;
  std::size_t payload_sz = 0;
  std::vector<std::unique_ptr<Queue>> queues;

  // 0: nothing; 1: prepared, waiting for INIT; 2: INIT offered the ring, reply
  // pending; 3: running; 4: stopped or given up.
  std::atomic<int> phase{0};
  std::uint64_t init_unique = 0;
  std::atomic<bool> stopping{false};

  std::mutex start_mu;
  std::condition_variable start_cv;
  bool started = false;
  std::atomic<unsigned> registered_queues{0};

  std::mutex map_mu;
  std::unordered_map<std::uint64_t, Entry*> inflight;

  std::mutex info_mu;
  TransportInfo info;

  Entry* take(std::uint64_t unique) {
    std::lock_guard g(map_mu);
    auto it = inflight.find(unique);
    if (it == inflight.end()) return nullptr;
    Entry* e = it->second;
    inflight.erase(it);
    return e;
  }

  void give_up(const std::string& why) {
    int was = phase.exchange(4);
    if (was == 4) return;
    {
      std::lock_guard g(info_mu);
      info.name = "dev";
      info.reason = why;
    }
    log::get("fuse")->warn("transport=dev reason=\"{}\" (requests go through /dev/fuse)", why);
  }
};

// One session per process (daemon_main runs one); libfuse's custom-io hooks
// get only the filesystem's userdata, so the transport is found here.  It is
// never freed: replies may still arrive from a daemon's destructor after the
// session ended (they are dropped).
std::atomic<Transport*> g_transport{nullptr};
std::mutex g_transport_mu;
thread_local Queue* tls_queue = nullptr;

Transport& transport() {
  std::lock_guard g(g_transport_mu);
  if (!g_transport.load()) g_transport.store(new Transport);
  return *g_transport.load();
}

bool offloaded(std::uint32_t opcode) {
  return opcode == kOpFsync || opcode == kOpFsyncdir || opcode == kOpFallocate;
}

bool io_op(std::uint32_t opcode) {
  switch (opcode) {
    case kOpRead: case kOpWrite: case kOpFsync: case kOpFsyncdir: case kOpFallocate:
    case kOpLseek: case kOpCopyFileRange:
      return true;
    default:
      return false;
  }
}

io_uring_sqe* get_sqe(Queue& q) {
  io_uring_sqe* sqe = io_uring_get_sqe(&q.ring);
  if (!sqe) {
    io_uring_submit(&q.ring);
    sqe = io_uring_get_sqe(&q.ring);
  }
  return sqe;
}

bool prep_cmd(Queue& q, Entry& e, std::uint32_t cmd, std::uint64_t commit_id) {
  io_uring_sqe* sqe = get_sqe(q);
  if (!sqe) return false;
  std::memset(sqe, 0, 128);  // SQE128
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = g_transport.load()->fd;
  sqe->cmd_op = cmd;
  if (cmd == kCmdRegister) {
    sqe->addr = reinterpret_cast<std::uint64_t>(e.iov);
    sqe->len = 2;
  }
  auto* req = reinterpret_cast<RingCmdReq*>(sqe->cmd);
  req->qid = static_cast<std::uint16_t>(q.qid);
  req->commit_id = commit_id;
  io_uring_sqe_set_data(sqe, &e);
  return true;
}

void prep_event_read(Queue& q) {
  io_uring_sqe* sqe = get_sqe(q);
  if (!sqe) return;
  io_uring_prep_read(sqe, q.evfd, &q.ev_buf, sizeof q.ev_buf, 0);
  io_uring_sqe_set_data64(sqe, kEventTag);
}

bool add_entry(Queue& q) {
  auto& t = *g_transport.load();
  long page = ::sysconf(_SC_PAGESIZE);
  auto e = std::make_unique<Entry>();
  e->q = &q;
  e->mem_len = static_cast<std::size_t>(page) + t.payload_sz;
  void* m = ::mmap(nullptr, e->mem_len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return false;
  e->mem = static_cast<char*>(m);
  e->hdr = reinterpret_cast<RingReqHeader*>(e->mem);
  e->payload = e->mem + page;
  e->iov[0] = {e->hdr, sizeof(RingReqHeader)};
  e->iov[1] = {e->payload, t.payload_sz};
  if (!prep_cmd(q, *e, kCmdRegister, 0)) {
    ::munmap(e->mem, e->mem_len);
    return false;
  }
  e->registered = true;
  q.entries.push_back(std::move(e));
  q.n_entries.store(q.entries.size(), std::memory_order_relaxed);
  return true;
}

void commit(Queue& q, Entry& e) {
  e.committed_now = true;
  q.n_commits.fetch_add(1, std::memory_order_relaxed);
  e.state = State::fetching;
  prep_cmd(q, e, kCmdCommitAndFetch, e.unique);
}

// The reply of e is in its buffers: commit from the ring thread.
void finish(Entry& e) {
  Queue& q = *e.q;
  bool wake = false;
  {
    std::lock_guard g(q.mu);
    if (e.state == State::dispatching && tls_queue == &q) {
      e.state = State::replied;
    } else {
      e.was_parked = e.state == State::parked;
      e.state = State::queued;
      q.ready.push_back(&e);
      wake = tls_queue != &q;
    }
  }
  if (wake) {
    std::uint64_t one = 1;
    if (::write(q.evfd, &one, sizeof one) < 0) {
    }
  }
}

// An answer made here, without libfuse (a malformed request, FUSE_TMPFILE).
void reply_direct(Entry& e, int err) {
  OutHeader out{sizeof(OutHeader), -err, e.unique};
  std::memcpy(e.hdr->in_out, &out, sizeof out);
  e.hdr->ent.payload_sz = 0;
  {
    std::lock_guard g(e.q->mu);
    e.state = State::replied;
  }
}

void kick(Queue& q) {
  {
    std::lock_guard g(q.kick_mu);
    q.kick_wanted = true;
  }
  q.kick_cv.notify_one();
}

void pin(unsigned cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof set, &set) != 0)
    log::get("fuse")->debug("transport=uring qid={} -> cannot pin to its CPU: {}", cpu,
                            std::strerror(errno));
}

// The kickers: kKickers threads per queue, pinned to its CPU, each making
// one GETATTR on the mount root per kick (statx with AT_STATX_FORCE_SYNC).
// Several, because a kick's GETATTR can itself end up in the kernel's list
// of waiting requests (it arrived while every entry of the queue was taken,
// and the entries registered afterwards do not fetch it): its kicker then
// waits with the rest, and only another kicker's GETATTR, taking a free
// entry, gets a commit that fetches the list again.  With one kicker that
// was the 30 s stall of issue 10: the kicker, the token holder's next
// request and every waiter of that CPU waited until the lock-wait bound.
constexpr unsigned kKickers = 3;
// At most this many extra one-shot kickers per queue at once (the watchdog
// starts one only when every kicker is stuck).
constexpr std::size_t kMaxExtraKickers = 16;

// One GETATTR of the mount root from this thread (pinned to q's CPU).
void kick_once(Queue& q, const std::string& mountpoint) {
  // Opened for each kick: an fd kept open would make the unmount EBUSY.
  int root = ::open(mountpoint.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (root < 0) return;
  q.kicks_in_flight.fetch_add(1);
  struct statx stx;
  (void)::statx(root, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_MODE, &stx);
  q.kicks_in_flight.fetch_sub(1);
  ::close(root);
  q.n_kicks.fetch_add(1, std::memory_order_relaxed);
}

void kicker_main(Queue* q) {
  pin(q->qid);
  auto& t = *g_transport.load();
  for (;;) {
    {
      std::unique_lock l(q->kick_mu);
      q->kick_cv.wait(l, [&] { return q->kick_wanted || t.stopping.load(); });
      if (t.stopping.load()) break;
      q->kick_wanted = false;
    }
    kick_once(*q, t.opts.mountpoint);
  }
}

// The watchdog: while requests are parked and nothing was committed on its
// queue for 20 ms (backing off to 500 ms while that stays so), it asks for a
// kick.  A request can wait in the kernel's list while entries are free
// (moved there from the background list at a commit, or queued while every
// entry was taken: REGISTER does not fetch it), and only a commit takes it
// out.
void watchdog_main(Queue* q) {
  pin(q->qid);
  auto& t = *g_transport.load();
  using namespace std::chrono_literals;
  auto idle = 20ms;
  std::uint64_t commits = 0;
  for (;;) {
    {
      std::unique_lock l(q->kick_mu);
      q->watch_cv.wait_for(l, idle, [&] { return t.stopping.load(); });
      if (t.stopping.load()) break;
    }
    std::uint64_t now = q->n_commits.load(std::memory_order_relaxed);
    bool stalled = now == commits && q->n_parked.load(std::memory_order_relaxed) > 0;
    commits = now;
    if (!stalled) {
      idle = 20ms;
      continue;
    }
    if (q->kicks_in_flight.load() >= kKickers) {
      // Every kicker waits with the rest: their GETATTRs were queued while
      // no entry was free, and the entries registered since do not fetch
      // them (a 30 s stall in CI with three kickers).  A GETATTR made now
      // takes a free entry, and its commit fetches the list.
      std::lock_guard g(q->extra_mu);
      std::erase_if(q->extra_kickers, [](Queue::ExtraKicker& k) {
        if (!k.done->load()) return false;
        k.thread.join();
        return true;
      });
      if (q->extra_kickers.size() < kMaxExtraKickers) {
        auto done = std::make_shared<std::atomic<bool>>(false);
        q->extra_kickers.push_back({std::thread([q, done, mp = t.opts.mountpoint] {
                                      pin(q->qid);
                                      kick_once(*q, mp);
                                      done->store(true);
                                    }),
                                    done});
      }
    } else {
      kick(*q);
    }
    idle = std::min<std::chrono::milliseconds>(idle * 2, 500ms);
  }
}

std::uint64_t now_ns() {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

void dispatch(Queue& q, Entry& e) {
  auto& t = *g_transport.load();
  std::uint64_t t0 = now_ns();
  InHeader in;
  std::memcpy(&in, e.hdr->in_out, sizeof in);
  std::size_t payload = e.hdr->ent.payload_sz;
  e.unique = e.hdr->ent.commit_id;
  e.opcode = in.opcode;
  q.in_userspace++;
  q.n_requests.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard g(q.mu);
    e.state = State::dispatching;
  }
  std::size_t opsz = in.len >= sizeof in + payload ? in.len - sizeof in - payload : SIZE_MAX;
  if (opsz > sizeof e.hdr->op_in || payload > t.payload_sz) {
    log::get("fuse")->error("transport=uring op={} len={} payload={} -> malformed ring request",
                            in.opcode, in.len, payload);
    reply_direct(e, EIO);
  } else if (in.opcode == kOpTmpfile && t.opts.tmpfile_errno &&
             t.opts.tmpfile_errno(in.nodeid) != 0) {
    reply_direct(e, t.opts.tmpfile_errno(in.nodeid));
  } else {
    fuse_req::note(in.opcode, e.hdr->op_in, opsz);
    char* start = e.payload - opsz - sizeof in;
    std::memcpy(start, &in, sizeof in);
    std::memcpy(start + sizeof in, e.hdr->op_in, opsz);
    {
      std::lock_guard g(t.map_mu);
      t.inflight[e.unique] = &e;
    }
    fuse_buf buf{};
    buf.mem = start;
    buf.size = in.len;
    if (offloaded(in.opcode))
      t.offload.push(&e, t.se, buf);
    else
      fuse_session_process_buf(t.se, &buf);
  }
  State s;
  {
    std::lock_guard g(q.mu);
    s = e.state;
    if (s == State::dispatching) e.state = State::parked;
  }
  if (s == State::replied) {
    q.in_userspace--;
    commit(q, e);
    std::uint64_t ns = now_ns() - t0;
    q.n_sync.fetch_add(1, std::memory_order_relaxed);
    q.sync_ns.fetch_add(ns, std::memory_order_relaxed);
    if (e.opcode == kOpGetlk || e.opcode == kOpSetlk) {
      q.n_sync_lock.fetch_add(1, std::memory_order_relaxed);
      q.sync_lock_ns.fetch_add(ns, std::memory_order_relaxed);
    }
    return;
  }
  if (s != State::dispatching) return;  // queued: replied by another thread meanwhile
  // Parked: replace the entry, so that the queue keeps `depth` entries free.
  q.in_userspace--;
  q.parked++;
  q.n_parked.store(q.parked, std::memory_order_relaxed);
  if (q.parked > q.n_parked_max.load(std::memory_order_relaxed))
    q.n_parked_max.store(q.parked, std::memory_order_relaxed);
  if (q.entries.size() - q.parked < t.opts.depth) {
    if (q.entries.size() < kMaxEntries) {
      add_entry(q);
    } else if (!q.cap_warned) {
      q.cap_warned = true;
      log::get("fuse")->warn("transport=uring qid={} parked={} -> entry cap {} reached", q.qid,
                             q.parked, kMaxEntries);
    }
  }
  // After the replacement entry is registered (ring_main): a kick made
  // before would find no free entry and wait in the kernel's list itself.
  if (!io_op(e.opcode) && q.in_userspace == 0 && q.may_queued) q.kick_after_submit = true;
}

void drain_ready(Queue& q) {
  std::vector<Entry*> ready;
  {
    std::lock_guard g(q.mu);
    ready.swap(q.ready);
  }
  for (Entry* e : ready) {
    if (e->was_parked) {
      q.parked--;
      q.n_parked.store(q.parked, std::memory_order_relaxed);
    } else {
      q.in_userspace--;
    }
    commit(q, *e);
  }
}

// Whether a request may be waiting in the kernel's list of this queue, from
// what this reap saw (before its requests are dispatched).  The kernel lists
// a request only when no entry is free, and fetches from the list only at a
// commit.  Between two reaps the free entries only get taken (new ones come
// only from our submits), so:
//  - an entry committed in the last submit that got no request: the list was
//    empty at that commit, and that entry has been free since: nothing waits;
//  - else, every entry that was free at the last reap got a request: there
//    may have been a moment with none free: something may wait;
//  - else one stayed free all along: nothing new waits (what waited before
//    still may).
// The kicks are made only while something may wait: a park that kicked
// every time made a GETATTR per transaction with 8 writers.  The watchdog
// still kicks after 20 ms without commits (the background requests a commit
// moves to the list are not seen here).
void update_queued(Queue& q, const std::vector<std::pair<std::uint64_t, int>>& batch) {
  ++q.round;
  for (auto [data, res] : batch)
    if (data != kEventTag) reinterpret_cast<Entry*>(data)->cqe_round = q.round;
  bool commit_found_empty = false, carry_all_taken = true;
  for (auto& up : q.entries) {
    Entry& x = *up;
    bool waiting = x.state == State::fetching && x.cqe_round != q.round;
    if (waiting && x.committed_now) commit_found_empty = true;
    if (waiting && x.carry) carry_all_taken = false;
  }
  if (commit_found_empty)
    q.may_queued = false;
  else if (carry_all_taken)
    q.may_queued = true;
  for (auto& up : q.entries) {
    Entry& x = *up;
    x.carry = x.state == State::fetching && x.cqe_round != q.round;
    x.committed_now = false;
  }
}

void ring_main(Queue* qp) {
  Queue& q = *qp;
  auto& t = *g_transport.load();
  tls_queue = &q;
  pin(q.qid);
  {
    std::unique_lock l(t.start_mu);
    t.start_cv.wait(l, [&] { return t.started || t.stopping.load(); });
  }
  if (t.stopping.load() || t.phase.load() != 3) return;
  for (unsigned i = 0; i < t.opts.depth; ++i)
    if (!add_entry(q)) {
      t.give_up("cannot allocate ring entries");
      return;
    }
  prep_event_read(q);
  int rc = io_uring_submit(&q.ring);
  if (rc < 0) {
    t.give_up(std::string("io_uring_submit: ") + std::strerror(-rc));
    return;
  }
  bool announced = false;
  std::vector<std::pair<std::uint64_t, int>> batch;
  for (;;) {
    io_uring_cqe* cqe = nullptr;
    if (!announced && t.registered_queues.fetch_add(1) + 1 == t.queues.size()) {
      // Every queue handed its entries in; an error would already be in the CQ
      // of its queue (REGISTER fails inline).
      std::lock_guard g(t.info_mu);
      if (t.phase.load() == 3) t.info.name = "uring";
    }
    announced = true;
    if (q.kick_after_submit) {
      q.kick_after_submit = false;
      io_uring_submit(&q.ring);  // the REGISTERs of this round's replacement entries
      kick(q);
    }
    // The commits of the last round and the wait for the next requests in
    // one io_uring_enter.
    rc = io_uring_submit_and_wait(&q.ring, 1);
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
      // The requests of this CPU can no longer be served: end the session
      // rather than leave its callers hanging.
      log::get("fuse")->error("transport=uring qid={} -> ring failed: {}; ending the session",
                              q.qid, std::strerror(-rc));
      t.give_up(std::string("ring failed: ") + std::strerror(-rc));
      fuse_session_exit(t.se);
      return;
    }
    batch.clear();
    unsigned head, n = 0;
    io_uring_for_each_cqe(&q.ring, head, cqe) {
      batch.emplace_back(cqe->user_data, cqe->res);
      ++n;
    }
    io_uring_cq_advance(&q.ring, n);
    update_queued(q, batch);
    bool exit = false;
    for (auto [data, res] : batch) {
      if (data == kEventTag) {
        if (t.stopping.load()) exit = true;
        else prep_event_read(q);
        continue;
      }
      Entry& e = *reinterpret_cast<Entry*>(data);
      if (res == 0) {
        dispatch(q, e);
        continue;
      }
      if (res == -EINTR || res == -EAGAIN) {  // resubmit as it was
        if (e.state == State::fetching && e.unique != 0) {
          prep_cmd(q, e, kCmdCommitAndFetch, e.unique);
          e.committed_now = true;
        } else {
          prep_cmd(q, e, kCmdRegister, 0);
        }
        continue;
      }
      if (res == -ENOTCONN || res == -ECANCELED || res == -ECONNABORTED) continue;  // unmount
      // A REGISTER refused (the kernel has turned the ring off and sends the
      // requests to /dev/fuse) or a commit refused.
      if (e.unique == 0) {
        t.give_up(std::string("ring registration refused: ") + std::strerror(-res));
        return;
      }
      log::get("fuse")->error("transport=uring qid={} unique={} -> commit failed: {}", q.qid,
                              e.unique, std::strerror(-res));
    }
    drain_ready(q);
    if (exit) {
      io_uring_submit(&q.ring);
      return;
    }
  }
}

void start_rings(const InitOut& out) {
  auto& t = *g_transport.load();
  std::size_t max_pages = (out.flags & kMaxPagesFlag) ? out.max_pages : kDefaultMaxPages;
  long page = ::sysconf(_SC_PAGESIZE);
  std::size_t sz = std::max({kMinReadBuffer, static_cast<std::size_t>(out.max_write),
                             max_pages * static_cast<std::size_t>(page)});
  t.payload_sz = (sz + static_cast<std::size_t>(page) - 1) / static_cast<std::size_t>(page) *
                 static_cast<std::size_t>(page);
  t.phase.store(3);
  {
    std::lock_guard g(t.start_mu);
    t.started = true;
  }
  t.start_cv.notify_all();
  log::get("fuse")->info("transport=uring queues={} depth={} payload={}", t.queues.size(),
                         t.opts.depth, t.payload_sz);
}

bool read_full(int fd, void* buf, std::size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

}  // namespace

bool available(std::string* why) {
  std::ifstream f("/sys/module/fuse/parameters/enable_uring");
  std::string v;
  if (!(f >> v)) {
    *why = "this kernel has no FUSE over io_uring (no /sys/module/fuse/parameters/enable_uring)";
    return false;
  }
  if (v != "Y" && v != "1") {
    *why = "FUSE over io_uring is off (echo 1 > /sys/module/fuse/parameters/enable_uring)";
    return false;
  }
  io_uring ring;
  io_uring_params p{};
  p.flags = IORING_SETUP_SQE128;
  int rc = io_uring_queue_init_params(4, &ring, &p);
  if (rc < 0) {
    *why = std::string("cannot create an io_uring with 128-byte SQEs: ") + std::strerror(-rc);
    return false;
  }
  io_uring_queue_exit(&ring);
  return true;
}

bool prepare(fuse_session* se, int fuse_fd, const Options& opts, std::string* why) {
  auto& t = transport();
  t.se = se;
  t.fd = fuse_fd;
  t.opts = opts;
  if (t.opts.depth == 0) t.opts.depth = 1;
  int n = ::get_nprocs_conf();  // the kernel makes num_possible_cpus() queues
  for (int i = 0; i < n; ++i) {
    auto q = std::make_unique<Queue>();
    q->qid = static_cast<unsigned>(i);
    io_uring_params p{};
    p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    p.cq_entries = 2 * kMaxEntries;
    int rc = io_uring_queue_init_params(256, &q->ring, &p);
    if (rc < 0) {
      *why = std::string("cannot create the ring of queue ") + std::to_string(i) + ": " +
             std::strerror(-rc);
      for (auto& done : t.queues) io_uring_queue_exit(&done->ring);
      t.queues.clear();
      return false;
    }
    q->ring_ok = true;
    q->evfd = ::eventfd(0, EFD_CLOEXEC);
    t.queues.push_back(std::move(q));
  }
  {
    std::lock_guard g(t.info_mu);
    t.info.depth = t.opts.depth;
  }
  for (auto& q : t.queues) {
    q->thread = std::thread(ring_main, q.get());
    q->watchdog = std::thread(watchdog_main, q.get());
    for (unsigned k = 0; k < kKickers; ++k) q->kickers.emplace_back(kicker_main, q.get());
  }
  t.phase.store(1);
  return true;
}

void saw_request(const void* buf, size_t n) {
  Transport* t = g_transport.load();
  if (!t || t->phase.load() != 1 || n < sizeof(InHeader) + sizeof(InitIn)) return;
  InHeader in;
  std::memcpy(&in, buf, sizeof in);
  if (in.opcode != kOpInit) return;
  InitIn init;
  std::memcpy(&init, static_cast<const char*>(buf) + sizeof in, sizeof init);
  if ((init.flags & kInitExt) && (init.flags2 & kOverIoUring2)) {
    t->init_unique = in.unique;
    t->phase.store(2);
  } else {
    t->give_up("the kernel did not offer FUSE over io_uring at INIT");
  }
}

ssize_t writev(int fd, struct iovec* iov, int count) {
  Transport* t = g_transport.load();
  int phase = t ? t->phase.load() : 0;
  if (phase < 2 || count < 1 || iov[0].iov_len < sizeof(OutHeader)) return ::writev(fd, iov, count);
  OutHeader out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (phase == 2 && out.unique == t->init_unique) {
    if (out.error != 0 || count < 2 || iov[1].iov_len < sizeof(InitOut)) {
      t->give_up("INIT failed");
      return ::writev(fd, iov, count);
    }
    InitOut init;
    std::memcpy(&init, iov[1].iov_base, sizeof init);
    init.flags |= kInitExt;
    init.flags2 |= kOverIoUring2;
    std::memcpy(iov[1].iov_base, &init, sizeof init);
    ssize_t r = ::writev(fd, iov, count);
    if (r < 0) {
      int e = errno;
      t->give_up("INIT reply failed");
      errno = e;
      return r;
    }
    start_rings(init);
    return r;
  }
  ssize_t total = 0;
  for (int i = 0; i < count; ++i) total += static_cast<ssize_t>(iov[i].iov_len);
  Entry* e = phase >= 3 ? t->take(out.unique) : nullptr;
  if (!e) return ::writev(fd, iov, count);
  if (phase == 4) return total;  // the ring is gone (stopped): dropped
  std::size_t body = static_cast<std::size_t>(total) - sizeof out;
  if (body > t->payload_sz) {
    out.error = -EIO;
    body = 0;
  } else {
    char* p = e->payload;
    // iov[0] may carry more than the header (libfuse puts it alone, but be exact).
    std::size_t first = iov[0].iov_len - sizeof out;
    std::memcpy(p, static_cast<char*>(iov[0].iov_base) + sizeof out, first);
    p += first;
    for (int i = 1; i < count; ++i) {
      std::memcpy(p, iov[i].iov_base, iov[i].iov_len);
      p += iov[i].iov_len;
    }
  }
  std::memcpy(e->hdr->in_out, &out, sizeof out);
  e->hdr->ent.payload_sz = static_cast<std::uint32_t>(body);
  finish(*e);
  return total;
}

ssize_t splice_send(int fdin, int fdout, size_t len, unsigned int flags) {
  Transport* t = g_transport.load();
  if (!t || t->phase.load() != 3 || len < sizeof(OutHeader))
    return ::splice(fdin, nullptr, fdout, nullptr, len, flags);
  OutHeader out;
  if (!read_full(fdin, &out, sizeof out)) return -1;
  Entry* e = t->take(out.unique);
  std::size_t body = len - sizeof out;
  if (!e || body > t->payload_sz) {
    std::vector<char> msg(len);
    std::memcpy(msg.data(), &out, sizeof out);
    if (!read_full(fdin, msg.data() + sizeof out, body)) return -1;
    if (!e) return ::write(fdout, msg.data(), len);
    out.error = -EIO;
    body = 0;
  } else if (!read_full(fdin, e->payload, body)) {
    out.error = -EIO;
    body = 0;
  }
  std::memcpy(e->hdr->in_out, &out, sizeof out);
  e->hdr->ent.payload_sz = static_cast<std::uint32_t>(body);
  finish(*e);
  return static_cast<ssize_t>(len);
}

void stop() {
  Transport* t = g_transport.load();
  if (!t || t->queues.empty()) return;
  t->stopping.store(true);
  if (t->phase.load() != 4) t->phase.store(4);
  {
    std::lock_guard g(t->start_mu);
  }
  t->start_cv.notify_all();
  for (auto& q : t->queues) {
    std::uint64_t one = 1;
    if (::write(q->evfd, &one, sizeof one) < 0) {
    }
    {
      std::lock_guard g(q->kick_mu);
    }
    q->kick_cv.notify_all();
    q->watch_cv.notify_all();
  }
  for (auto& q : t->queues) {
    if (q->thread.joinable()) q->thread.join();
    if (q->watchdog.joinable()) q->watchdog.join();
    for (auto& k : q->kickers)
      if (k.joinable()) k.join();
    std::lock_guard g(q->extra_mu);
    for (auto& k : q->extra_kickers)
      if (k.thread.joinable()) k.thread.join();
  }
  t->offload.stop();
  for (auto& q : t->queues)
    if (q->ring_ok) io_uring_queue_exit(&q->ring);
  // The entries' memory stays mapped: the process is ending, and a late
  // reply may still look an entry up (it is dropped, see writev()).
  std::lock_guard g(t->info_mu);
  if (t->info.name == "uring") t->info.name = "dev";
  t->info.reason = "stopped";
}

void set_requested(const std::string& transport_name, const std::string& reason) {
  auto& t = transport();
  std::lock_guard g(t.info_mu);
  t.info.requested = transport_name;
  t.info.reason = reason;
}

}  // namespace hoody::fuse_uring

namespace hoody {

TransportInfo fuse_transport_info() {
  fuse_uring::Transport* t = fuse_uring::g_transport.load();
  if (!t) return {};
  TransportInfo info;
  {
    std::lock_guard g(t->info_mu);
    info = t->info;
  }
  if (t->phase.load() == 0) return info;  // queues not made (yet)
  for (auto& q : t->queues) {
    TransportQueueInfo qi;
    qi.qid = q->qid;
    qi.requests = q->n_requests.load();
    qi.entries = q->n_entries.load();
    qi.parked = q->n_parked.load();
    qi.parked_max = q->n_parked_max.load();
    qi.kicks = q->n_kicks.load();
    if (auto n = q->n_sync.load()) qi.dispatch_ns = q->sync_ns.load() / n;
    if (auto n = q->n_sync_lock.load()) qi.lock_dispatch_ns = q->sync_lock_ns.load() / n;
    info.queues.push_back(qi);
  }
  return info;
}

}  // namespace hoody
