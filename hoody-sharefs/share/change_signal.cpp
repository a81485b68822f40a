#include "share/change_signal.hpp"

#include <linux/futex.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <climits>
#include <cstddef>
#include <ctime>

#include "hoody/log.hpp"

namespace hoody::sharefs {

namespace bip = boost::interprocess;

namespace {

// One daemon's acknowledgement slot; all-zero is a free slot.
struct Slot {
  std::atomic<uint64_t> acked;   // the counter it last applied
  std::atomic<int64_t> beat_ms;  // CLOCK_MONOTONIC of its last look, ms
  std::atomic<int32_t> pid;      // 0: free
  std::atomic<uint32_t> pidns;   // its pid namespace (inode number, truncated)
};

// 64 KiB: 2730 slots, more daemons than one pool serves (one per container).
constexpr std::size_t kSize = 65536;
constexpr std::size_t kHeader = 16;
constexpr std::size_t kSlots = (kSize - kHeader) / sizeof(Slot);

// The layout of the shared object; all-zero bytes are its initial state.  The
// first 12 bytes are those of the object before acknowledgements existed
// (counter, seq), which was 64 bytes long: open() grows it, with zero pages.
struct Shared {
  std::atomic<uint64_t> counter;
  std::atomic<uint32_t> seq;
  std::atomic<uint32_t> ack_seq;  // futex word: +1 per ack
  Slot slots[kSlots];
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);
static_assert(std::atomic<int64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word must be 32 bits");
static_assert(offsetof(Shared, slots) == kHeader && sizeof(Shared) <= kSize);

// The pid namespace of this process, so that a waiter in the same one can
// tell a killed daemon at once (kill(pid, 0)); across namespaces only the
// heartbeat tells.
uint32_t own_pidns() {
  static const uint32_t ns = [] {
    struct stat st {};
    return ::stat("/proc/self/ns/pid", &st) == 0 ? static_cast<uint32_t>(st.st_ino) : 0u;
  }();
  return ns;
}

// Whether the daemon in a slot is known to be gone: same pid namespace, and
// no such process.
bool gone(pid_t pid, uint32_t pidns) {
  return pidns != 0 && pidns == own_pidns() && ::kill(pid, 0) != 0 && errno == ESRCH;
}

int64_t now_ms() {
  struct timespec ts {};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

long futex(std::atomic<uint32_t>* word, int op, uint32_t val, const struct timespec* ts) {
  return ::syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), op, val, ts, nullptr, 0);
}

}  // namespace

struct ChangeSignal::Impl {
  bip::mapped_region region;
  Shared* shared() const { return static_cast<Shared*>(region.get_address()); }
};

ChangeSignal::ChangeSignal(std::unique_ptr<Impl> impl, std::string name)
    : impl_(std::move(impl)), name_(std::move(name)) {}
ChangeSignal::ChangeSignal(ChangeSignal&&) noexcept = default;
ChangeSignal& ChangeSignal::operator=(ChangeSignal&&) noexcept = default;
ChangeSignal::~ChangeSignal() = default;

std::string ChangeSignal::name_for_pool(int pool_fd, Errno* err) {
  struct stat st;
  if (::fstat(pool_fd, &st) < 0) {
    if (err) *err = Errno::last();
    return {};
  }
  return "hoody-shares-" + std::to_string(static_cast<unsigned long long>(st.st_dev)) + "-" +
         std::to_string(static_cast<unsigned long long>(st.st_ino));
}

Result<ChangeSignal> ChangeSignal::open_for_pool(int pool_fd) {
  Errno e;
  std::string name = name_for_pool(pool_fd, &e);
  if (name.empty()) return fail(e);
  return open(name);
}

Result<ChangeSignal> ChangeSignal::open(const std::string& shm_name) {
  try {
    bip::permissions perm(0600);
    bip::shared_memory_object shm(bip::open_or_create, shm_name.c_str(), bip::read_write, perm);
    bip::offset_t size = 0;
    // Two creators may race: both truncate to the same size, and the pages a
    // truncate adds are zero, the initial state.  Never shrink.
    if (!shm.get_size(size) || size < static_cast<bip::offset_t>(kSize)) shm.truncate(kSize);
    auto impl = std::make_unique<Impl>();
    impl->region = bip::mapped_region(shm, bip::read_write, 0, kSize);
    return ChangeSignal(std::move(impl), shm_name);
  } catch (const bip::interprocess_exception& ex) {
    int err = ex.get_native_error();
    log::get("share")->warn("op=change_signal shm={} -> {}", shm_name, ex.what());
    return fail(err > 0 ? err : EIO);
  }
}

void ChangeSignal::remove(const std::string& shm_name) {
  bip::shared_memory_object::remove(shm_name.c_str());
}

uint64_t ChangeSignal::current() const {
  return impl_->shared()->counter.load(std::memory_order_acquire);
}

uint64_t ChangeSignal::publish() {
  Shared* s = impl_->shared();
  uint64_t now = s->counter.fetch_add(1, std::memory_order_acq_rel) + 1;
  s->seq.fetch_add(1, std::memory_order_acq_rel);
  futex(&s->seq, FUTEX_WAKE, INT_MAX, nullptr);
  return now;
}

uint64_t ChangeSignal::wait_for_change(uint64_t last_seen, std::chrono::milliseconds timeout) const {
  using clock = std::chrono::steady_clock;
  Shared* s = impl_->shared();
  auto deadline = clock::now() + timeout;
  for (;;) {
    uint32_t seq = s->seq.load(std::memory_order_acquire);
    uint64_t now = s->counter.load(std::memory_order_acquire);
    if (now != last_seen) return now;
    auto left = deadline - clock::now();
    if (left <= clock::duration::zero()) return now;
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
    struct timespec ts {};
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    // EAGAIN (seq moved), EINTR, ETIMEDOUT and a wake all mean: look again.
    futex(&s->seq, FUTEX_WAIT, seq, &ts);
  }
}

int ChangeSignal::claim_slot() {
  Shared* s = impl_->shared();
  const int32_t self = static_cast<int32_t>(::getpid());
  for (std::size_t i = 0; i < kSlots; ++i) {
    Slot& sl = s->slots[i];
    int32_t p = sl.pid.load(std::memory_order_acquire);
    if (p != 0 && now_ms() - sl.beat_ms.load(std::memory_order_acquire) <= kStale.count() &&
        !gone(p, sl.pidns.load(std::memory_order_acquire)))
      continue;
    // Free, or its daemon stopped beating: take it (one claimer wins).
    if (!sl.pid.compare_exchange_strong(p, self, std::memory_order_acq_rel)) continue;
    sl.acked.store(0, std::memory_order_release);  // waited for until its first look
    sl.pidns.store(own_pidns(), std::memory_order_release);
    sl.beat_ms.store(now_ms(), std::memory_order_release);
    return static_cast<int>(i);
  }
  log::get("share")->warn("op=change_signal shm={} -> all {} acknowledgement slots are taken by "
                          "running daemons: changes will not wait for this one",
                          name_, kSlots);
  return -1;
}

void ChangeSignal::release_slot(int slot) {
  if (slot < 0 || static_cast<std::size_t>(slot) >= kSlots) return;
  Slot& sl = impl_->shared()->slots[slot];
  int32_t self = static_cast<int32_t>(::getpid());
  sl.pid.compare_exchange_strong(self, 0, std::memory_order_acq_rel);
}

void ChangeSignal::beat(int slot) {
  if (slot < 0 || static_cast<std::size_t>(slot) >= kSlots) return;
  impl_->shared()->slots[slot].beat_ms.store(now_ms(), std::memory_order_release);
}

void ChangeSignal::ack(int slot, uint64_t counter) {
  if (slot < 0 || static_cast<std::size_t>(slot) >= kSlots) return;
  Shared* s = impl_->shared();
  Slot& sl = s->slots[slot];
  sl.beat_ms.store(now_ms(), std::memory_order_release);
  if (sl.acked.load(std::memory_order_acquire) == counter) return;
  sl.acked.store(counter, std::memory_order_release);
  s->ack_seq.fetch_add(1, std::memory_order_acq_rel);
  futex(&s->ack_seq, FUTEX_WAKE, INT_MAX, nullptr);
}

std::vector<pid_t> ChangeSignal::wait_applied(uint64_t counter,
                                              std::chrono::milliseconds timeout) const {
  using clock = std::chrono::steady_clock;
  Shared* s = impl_->shared();
  auto deadline = clock::now() + timeout;
  for (;;) {
    uint32_t seq = s->ack_seq.load(std::memory_order_acquire);
    std::vector<pid_t> behind;
    for (auto& sl : s->slots) {
      pid_t p = sl.pid.load(std::memory_order_acquire);
      if (p == 0 || now_ms() - sl.beat_ms.load(std::memory_order_acquire) > kStale.count()) continue;
      if (gone(p, sl.pidns.load(std::memory_order_acquire))) continue;  // killed
      if (sl.acked.load(std::memory_order_acquire) < counter) behind.push_back(p);
    }
    if (behind.empty()) return behind;
    auto left = deadline - clock::now();
    if (left <= clock::duration::zero()) return behind;
    // Bounded, so that a daemon that stops beating is let go of in time.
    auto ns = std::min<int64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(left).count(),
                                100'000'000);
    struct timespec ts {};
    ts.tv_sec = static_cast<time_t>(ns / 1000000000);
    ts.tv_nsec = static_cast<long>(ns % 1000000000);
    futex(&s->ack_seq, FUTEX_WAIT, seq, &ts);
  }
}

}  // namespace hoody::sharefs
