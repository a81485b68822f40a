// io-engine benchmark: the "uring" engine against the "sync" engine (the
// baseline, measured in the same run) on a temp file in argv[1] (default /tmp).
//
// Each submitting thread keeps one request in flight (submit, wait for done,
// repeat), as one application thread issuing synchronous calls through FUSE
// would.  Workloads: cached 4 KiB random reads, 128 KiB sequential reads,
// 4 KiB random writes, 4 KiB write + fdatasync; each with 1 and 4 threads.
// Prints ops/s, the ratio uring/sync, and the faster engine overall (by the
// geometric mean of the ratios).  Engines alternate in 3 short rounds per
// case; the medians are compared.  Not a timed test: run it with
// `meson test --benchmark` or directly:  io_engine_bench [dir] [seconds-per-case]
// Environment knobs: HOODY_BENCH_ONLY=<substring of a workload label>;
// HOODY_BENCH_RINGS, HOODY_BENCH_NOWAIT, HOODY_BENCH_WRITES_INLINE set the
// uring engine's Options (rings, nowait_first, writes_inline).
#include <fcntl.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "hoody/io_engine.hpp"
#include "hoody/sys.hpp"

using namespace hoody;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kFileSize = size_t{64} << 20;
constexpr size_t kSmall = 4096;
constexpr size_t kLarge = 128 * 1024;

enum class Workload { rand_read_4k, seq_read_128k, rand_write_4k, write_fdatasync_4k };

const char* label(Workload w) {
  switch (w) {
    case Workload::rand_read_4k: return "cached 4k random read";
    case Workload::seq_read_128k: return "128k sequential read";
    case Workload::rand_write_4k: return "4k random write";
    case Workload::write_fdatasync_4k: return "4k write+fdatasync";
  }
  return "?";
}

// One request at a time: submit, then wait for done (which may already have
// run inline).
class Waiter {
public:
  io::Done arm() {
    flag_.store(0, std::memory_order_relaxed);
    return [this](ssize_t res) {
      res_ = res;
      flag_.store(1, std::memory_order_release);
      flag_.notify_one();
    };
  }
  ssize_t wait() {
    flag_.wait(0, std::memory_order_acquire);
    return res_;
  }

private:
  std::atomic<int> flag_{0};
  ssize_t res_ = 0;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "io_engine_bench: %s\n", what.c_str());
  std::exit(1);
}

void check(ssize_t res, ssize_t want, const char* what) {
  if (res != want)
    die(std::string(what) + ": got " + std::to_string(res) +
        (res < 0 ? " (" + std::string(std::strerror(int(-res))) + ")" : ""));
}

double run_case(io::Engine& e, Workload w, int threads, int read_fd, int write_fd, double seconds) {
  std::atomic<bool> measuring{false};
  std::atomic<bool> stop{false};
  std::vector<std::uint64_t> counts(size_t(threads), 0);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      std::vector<char> buf(kLarge, char('a' + t));
      std::mt19937_64 rng(std::uint64_t(t) * 7919 + 1);
      std::uniform_int_distribution<size_t> block(0, kFileSize / kSmall - 1);
      size_t seq = (kFileSize / size_t(threads)) * size_t(t);  // own stream per thread
      Waiter wt;
      std::uint64_t n = 0;
      bool counted = false;
      while (!stop.load(std::memory_order_relaxed)) {
        if (!counted && measuring.load(std::memory_order_relaxed)) {
          n = 0;  // warm-up done
          counted = true;
        }
        switch (w) {
          case Workload::rand_read_4k:
            e.read(read_fd, buf.data(), kSmall, off_t(block(rng) * kSmall), wt.arm());
            check(wt.wait(), kSmall, "read");
            break;
          case Workload::seq_read_128k:
            e.read(read_fd, buf.data(), kLarge, off_t(seq), wt.arm());
            check(wt.wait(), kLarge, "read");
            seq = (seq + kLarge) % kFileSize;
            break;
          case Workload::rand_write_4k:
            e.write(write_fd, buf.data(), kSmall, off_t(block(rng) * kSmall), wt.arm());
            check(wt.wait(), kSmall, "write");
            break;
          case Workload::write_fdatasync_4k:
            e.write(write_fd, buf.data(), kSmall, off_t(block(rng) * kSmall), wt.arm());
            check(wt.wait(), kSmall, "write");
            e.fsync(write_fd, true, wt.arm());
            check(wt.wait(), 0, "fdatasync");
            break;
        }
        ++n;
      }
      counts[size_t(t)] = n;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds * 0.2));  // warm-up
  measuring.store(true);
  auto t0 = Clock::now();
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  stop.store(true);
  auto t1 = Clock::now();
  for (auto& th : pool) th.join();
  std::uint64_t total = 0;
  for (auto c : counts) total += c;
  // The ops finishing after t1 are counted too; at most one per thread.
  return double(total) / std::chrono::duration<double>(t1 - t0).count();
}

constexpr int kRounds = 3;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string fmt_ops(double v) {
  char b[32];
  if (v >= 1e6)
    std::snprintf(b, sizeof b, "%.2fM", v / 1e6);
  else if (v >= 1e4)
    std::snprintf(b, sizeof b, "%.1fk", v / 1e3);
  else
    std::snprintf(b, sizeof b, "%.0f", v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = argc > 1 ? argv[1] : "/tmp";
  double seconds = argc > 2 ? std::atof(argv[2]) : 1.0;
  if (seconds <= 0) die("seconds-per-case must be > 0");

  std::string tmpl = dir + "/hoody-io-bench.XXXXXX";
  if (!mkdtemp(tmpl.data())) die("mkdtemp in " + dir + ": " + std::strerror(errno));
  std::string rpath = tmpl + "/read", wpath = tmpl + "/write";
  auto rfd = sys::open(rpath.c_str(), O_RDWR | O_CREAT, 0644);
  auto wfd = sys::open(wpath.c_str(), O_RDWR | O_CREAT, 0644);
  if (!rfd || !wfd) die("open in " + tmpl + " failed");
  // Unlink at once: an interrupted run leaves nothing behind.
  ::unlink(rpath.c_str());
  ::unlink(wpath.c_str());
  ::rmdir(tmpl.c_str());
  {
    std::vector<char> chunk(1 << 20);
    for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = char(i * 131);
    for (size_t off = 0; off < kFileSize; off += chunk.size()) {
      if (!sys::pwrite(rfd->get(), chunk.data(), chunk.size(), off_t(off)) ||
          !sys::pwrite(wfd->get(), chunk.data(), chunk.size(), off_t(off)))
        die("filling the test files failed");
    }
    (void)sys::fsync(rfd->get());
    (void)sys::fsync(wfd->get());
    for (size_t off = 0; off < kFileSize; off += chunk.size())  // into the page cache
      (void)sys::pread(rfd->get(), chunk.data(), chunk.size(), off_t(off));
  }

  auto sync = io::make_sync_engine();
  io::Options opts;
  // Knobs for comparing variants of the uring engine.
  if (const char* r = std::getenv("HOODY_BENCH_RINGS")) opts.rings = unsigned(std::atoi(r));
  if (const char* r = std::getenv("HOODY_BENCH_NOWAIT")) opts.nowait_first = std::atoi(r) != 0;
  if (const char* r = std::getenv("HOODY_BENCH_WRITES_INLINE")) opts.writes_inline = std::atoi(r) != 0;
  auto uring_r = io::make_uring_engine(opts);
  if (!uring_r) die("io_uring unavailable: " + uring_r.error().message());
  auto uring = std::move(*uring_r);

  utsname u{};
  ::uname(&u);
  std::printf(
      "io-engine bench: dir=%s file=%zu MiB kernel=%s cpus=%u %.1f s/case/engine (median of %d "
      "rounds), QD1 per thread, "
      "uring rings=%u nowait_first=%d writes_inline=%d\n",
      dir.c_str(), kFileSize >> 20, u.release, std::thread::hardware_concurrency(), seconds, kRounds,
      opts.rings, int(opts.nowait_first), int(opts.writes_inline));
  std::printf("%-24s %7s %12s %12s %11s\n", "workload", "threads", "sync ops/s", "uring ops/s",
              "uring/sync");
  double log_sum = 0;
  int cases = 0;
  for (auto w : {Workload::rand_read_4k, Workload::seq_read_128k, Workload::rand_write_4k,
                 Workload::write_fdatasync_4k}) {
    const char* only = std::getenv("HOODY_BENCH_ONLY");  // a substring of the workload label
    if (only && !std::strstr(label(w), only)) continue;
    for (int threads : {1, 4}) {
      // Alternate the engines in short rounds and take each one's median, so
      // that load from other processes hits both alike.
      std::vector<double> ss, qs;
      for (int round = 0; round < kRounds; ++round) {
        ss.push_back(run_case(*sync, w, threads, rfd->get(), wfd->get(), seconds / kRounds));
        qs.push_back(run_case(*uring, w, threads, rfd->get(), wfd->get(), seconds / kRounds));
      }
      double s = median(ss), q = median(qs);
      double ratio = q / s;
      log_sum += std::log(ratio);
      ++cases;
      std::printf("%-24s %7d %12s %12s %11.2f\n", label(w), threads, fmt_ops(s).c_str(),
                  fmt_ops(q).c_str(), ratio);
      std::fflush(stdout);
    }
  }
  if (cases == 0) die("HOODY_BENCH_ONLY matched no workload");
  double geo = std::exp(log_sum / cases);
  std::printf("overall: uring/sync geometric mean %.2f -> faster engine: %s\n", geo,
              geo >= 1.0 ? "uring" : "sync");

  return 0;
}
