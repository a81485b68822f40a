#include "hoody/io_engine.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "hoody/sys.hpp"

using namespace hoody;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/hoody-io-test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
  UniqueFd open(const char* name, int flags = O_RDWR | O_CREAT) const {
    auto r = sys::open((path + "/" + name).c_str(), flags, 0644);
    REQUIRE(r.ok());
    return std::move(*r);
  }
};

// Waits for one done; checks it runs exactly once.
class Waiter {
public:
  io::Done done() {
    return [this](ssize_t res) {
      std::lock_guard lk(mu_);
      CHECK_FALSE(res_.has_value());
      res_ = res;
      cv_.notify_all();
    };
  }
  ssize_t wait() {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return res_.has_value(); });
    return *res_;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<ssize_t> res_;
};

ssize_t read_sync(io::Engine& e, int fd, void* buf, size_t n, off_t off) {
  Waiter w;
  e.read(fd, buf, n, off, w.done());
  return w.wait();
}
ssize_t write_sync(io::Engine& e, int fd, const void* buf, size_t n, off_t off) {
  Waiter w;
  e.write(fd, buf, n, off, w.done());
  return w.wait();
}
ssize_t fsync_sync(io::Engine& e, int fd, bool datasync) {
  Waiter w;
  e.fsync(fd, datasync, w.done());
  return w.wait();
}

// The engines under test: sync, uring with its RWF_NOWAIT fast path, uring
// with every request through the ring, and uring writing in the caller.
struct Config {
  const char* name;
  io::Kind kind;
  bool nowait_first;
  bool writes_inline;
};
const Config kConfigs[] = {
    {"sync", io::Kind::sync, false, false},
    {"uring", io::Kind::uring, true, false},
    {"uring-ring-only", io::Kind::uring, false, false},
    {"uring-writes-inline", io::Kind::uring, true, true},
};

std::unique_ptr<io::Engine> make(const Config& cfg, io::Options opts = {}) {
  if (cfg.kind == io::Kind::sync) return io::make_sync_engine();
  opts.nowait_first = cfg.nowait_first;
  opts.writes_inline = cfg.writes_inline;
  auto r = io::make_uring_engine(opts);
  REQUIRE_MESSAGE(r.ok(), "io_uring_queue_init: " << r.error().message());
  return std::move(*r);
}

std::string pattern(size_t n, unsigned seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed * 7 + i / 4096) & 0xff);
  return s;
}


}  // namespace

TEST_CASE("parse_kind") {
  CHECK(io::parse_kind("uring") == io::Kind::uring);
  CHECK(io::parse_kind("sync") == io::Kind::sync);
  CHECK_FALSE(io::parse_kind("URING").has_value());
  CHECK_FALSE(io::parse_kind("").has_value());
  CHECK(std::string(io::to_string(io::Kind::uring)) == "uring");
}

TEST_CASE("reads and writes at offsets, short read at EOF") {
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    auto e = make(cfg);
    CHECK(std::string(e->name()) == io::to_string(cfg.kind));
    auto fd = t.open("f");

    auto a = pattern(10000, 1);
    CHECK(write_sync(*e, fd.get(), a.data(), a.size(), 0) == 10000);
    auto b = pattern(4096, 2);
    CHECK(write_sync(*e, fd.get(), b.data(), b.size(), 3000) == 4096);
    a.replace(3000, 4096, b);

    std::string got(10000, '\0');
    CHECK(read_sync(*e, fd.get(), got.data(), got.size(), 0) == 10000);
    CHECK(got == a);

    // Short read at EOF; read past EOF; zero-length read.
    std::string tail(8192, 'x');
    CHECK(read_sync(*e, fd.get(), tail.data(), tail.size(), 8192) == 10000 - 8192);
    CHECK(tail.substr(0, 10000 - 8192) == a.substr(8192));
    CHECK(read_sync(*e, fd.get(), tail.data(), tail.size(), 20000) == 0);
    CHECK(read_sync(*e, fd.get(), tail.data(), 0, 0) == 0);

    // A large transfer (several MiB) in one request, with a hole before it.
    auto big = pattern(5 << 20, 3);
    CHECK(write_sync(*e, fd.get(), big.data(), big.size(), 1 << 20) == ssize_t(big.size()));
    std::string big_got(big.size() + 4096, '\0');
    CHECK(read_sync(*e, fd.get(), big_got.data(), big_got.size(), 1 << 20) == ssize_t(big.size()));
    CHECK(big_got.substr(0, big.size()) == big);
    std::string hole(4096, 'x');
    CHECK(read_sync(*e, fd.get(), hole.data(), hole.size(), 20000) == 4096);
    CHECK(hole == std::string(4096, '\0'));
  }
}

TEST_CASE("errors: EBADF, EISDIR, write to a read-only fd") {
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    auto e = make(cfg);
    char buf[512];

    int closed = t.open("f").release();
    ::close(closed);
    CHECK(read_sync(*e, closed, buf, sizeof buf, 0) == -EBADF);
    CHECK(write_sync(*e, closed, buf, sizeof buf, 0) == -EBADF);
    CHECK(fsync_sync(*e, closed, false) == -EBADF);
    CHECK(fsync_sync(*e, closed, true) == -EBADF);

    auto dir = sys::open(t.path.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir.ok());
    CHECK(read_sync(*e, dir->get(), buf, sizeof buf, 0) == -EISDIR);

    auto ro = t.open("f", O_RDONLY);
    CHECK(write_sync(*e, ro.get(), buf, sizeof buf, 0) == -EBADF);
  }
}

TEST_CASE("partial write then error reports the part (RLIMIT_FSIZE)") {
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    auto e = make(cfg);
    auto fd = t.open("f");
    auto data = pattern(16384, 4);

    struct rlimit old {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    auto old_sig = ::signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim = old;
    lim.rlim_cur = 6000;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &lim) == 0);
    ssize_t partial = write_sync(*e, fd.get(), data.data(), data.size(), 0);
    ssize_t none = write_sync(*e, fd.get(), data.data(), data.size(), 8192);
    ::setrlimit(RLIMIT_FSIZE, &old);
    ::signal(SIGXFSZ, old_sig);

    CHECK(partial == 6000);
    CHECK(none == -EFBIG);
    std::string got(6000, '\0');
    CHECK(read_sync(*e, fd.get(), got.data(), got.size(), 0) == 6000);
    CHECK(got == data.substr(0, 6000));
  }
}

TEST_CASE("fsync and fdatasync") {
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    auto e = make(cfg);
    auto fd = t.open("f");
    auto a = pattern(4096, 5);
    CHECK(write_sync(*e, fd.get(), a.data(), a.size(), 0) == 4096);
    CHECK(fsync_sync(*e, fd.get(), false) == 0);
    CHECK(write_sync(*e, fd.get(), a.data(), a.size(), 4096) == 4096);
    CHECK(fsync_sync(*e, fd.get(), true) == 0);
  }
}

TEST_CASE("many concurrent submitters, data verified") {
  constexpr int kThreads = 8;
  constexpr int kBlocksPerThread = 64;
  constexpr size_t kBlock = 4096;
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    // A small queue depth so that the submitters hit the backpressure.
    auto e = make(cfg, io::Options{.queue_depth = 8, .rings = 2});
    auto fd = t.open("f");

    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int th = 0; th < kThreads; ++th) {
      threads.emplace_back([&, th] {
        // Phase 1: submit every write at once, without waiting in between.
        std::vector<std::string> blocks;
        for (int b = 0; b < kBlocksPerThread; ++b)
          blocks.push_back(pattern(kBlock, static_cast<unsigned>(th * 1000 + b)));
        std::mutex mu;
        std::condition_variable cv;
        int left = kBlocksPerThread;
        for (int b = 0; b < kBlocksPerThread; ++b) {
          off_t off = static_cast<off_t>((b * kThreads + th) * kBlock);
          e->write(fd.get(), blocks[size_t(b)].data(), kBlock, off, [&](ssize_t res) {
            if (res != ssize_t(kBlock)) failures.fetch_add(1);
            std::lock_guard lk(mu);
            if (--left == 0) cv.notify_all();
          });
        }
        {
          std::unique_lock lk(mu);
          cv.wait(lk, [&] { return left == 0; });
        }
        // Phase 2: read back with many reads in flight, then verify.
        std::vector<std::string> got(kBlocksPerThread, std::string(kBlock, '\0'));
        left = kBlocksPerThread;
        for (int b = 0; b < kBlocksPerThread; ++b) {
          off_t off = static_cast<off_t>((b * kThreads + th) * kBlock);
          e->read(fd.get(), got[size_t(b)].data(), kBlock, off, [&](ssize_t res) {
            if (res != ssize_t(kBlock)) failures.fetch_add(1);
            std::lock_guard lk(mu);
            if (--left == 0) cv.notify_all();
          });
        }
        {
          std::unique_lock lk(mu);
          cv.wait(lk, [&] { return left == 0; });
        }
        for (int b = 0; b < kBlocksPerThread; ++b)
          if (got[size_t(b)] != blocks[size_t(b)]) failures.fetch_add(1);
        if (fsync_sync(*e, fd.get(), th % 2 == 0) != 0) failures.fetch_add(1);
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
  }
}

TEST_CASE("a done that submits again (chained reads) does not recurse without bound") {
  for (const auto& cfg : kConfigs) {
    if (cfg.kind == io::Kind::sync) continue;  // sync recursion is the caller's business
    TempDir t;
    auto e = make(cfg);
    auto fd = t.open("f");
    auto a = pattern(4096, 6);
    REQUIRE(write_sync(*e, fd.get(), a.data(), a.size(), 0) == 4096);

    constexpr int kChain = 20000;
    std::atomic<int> remaining{kChain};
    std::atomic<int> bad{0};
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    char buf[4096];
    std::function<void(ssize_t)> next = [&](ssize_t res) {
      if (res != 4096) bad.fetch_add(1);
      if (remaining.fetch_sub(1) > 1) {
        e->read(fd.get(), buf, sizeof buf, 0, next);
      } else {
        std::lock_guard lk(mu);
        finished = true;
        cv.notify_all();
      }
    };
    // Start the chain on a thread with a small stack: an unbounded recursion
    // of inline completions would overflow it.
    struct Start {
      io::Engine* e;
      int fd;
      char* buf;
      std::function<void(ssize_t)>* next;
    } start{e.get(), fd.get(), buf, &next};
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);
    pthread_t tid;
    REQUIRE(pthread_create(
                &tid, &attr,
                [](void* p) -> void* {
                  auto* s = static_cast<Start*>(p);
                  s->e->read(s->fd, s->buf, 4096, 0, *s->next);
                  return nullptr;
                },
                &start) == 0);
    pthread_attr_destroy(&attr);
    pthread_join(tid, nullptr);
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return finished; });
    CHECK(bad.load() == 0);
  }
}

TEST_CASE("a throwing done is contained") {
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    auto e = make(cfg);
    auto fd = t.open("f");
    char buf[16] = {};
    e->write(fd.get(), buf, sizeof buf, 0, [](ssize_t) { throw std::runtime_error("boom"); });
    CHECK(write_sync(*e, fd.get(), buf, sizeof buf, 0) == 16);
  }
}

TEST_CASE("shutdown with requests in flight calls every done once") {
  for (const auto& cfg : kConfigs) {
    CAPTURE(cfg.name);
    TempDir t;
    auto fd = t.open("f");
    constexpr int kOps = 2000;
    std::vector<std::atomic<int>> calls(kOps);
    auto data = pattern(4096, 7);
    std::vector<std::string> bufs(kOps / 2, std::string(4096, '\0'));
    {
      auto e = make(cfg, io::Options{.queue_depth = 32, .rings = 0});
      std::vector<std::thread> threads;
      for (int th = 0; th < 4; ++th) {
        threads.emplace_back([&, th] {
          for (int i = th; i < kOps; i += 4) {
            // Reads of blocks not yet written may pass EOF: either result is fine.
            auto done = [&calls, i](ssize_t) { calls[size_t(i)].fetch_add(1); };
            if (i % 50 == 0)
              e->fsync(fd.get(), i % 100 == 0, done);
            else if (i % 2 == 0)
              e->write(fd.get(), data.data(), data.size(), off_t(i) * 4096, done);
            else
              e->read(fd.get(), bufs[size_t(i / 2)].data(), 4096, off_t(i - 1) * 4096, done);
          }
        });
      }
      for (auto& th : threads) th.join();
      // e is destroyed here with requests still in flight.
    }
    int wrong = 0;
    for (auto& c : calls)
      if (c.load() != 1) ++wrong;
    CHECK(wrong == 0);
  }
}

TEST_CASE("make_engine falls back to sync") {
  auto normal = io::make_engine(io::Kind::uring);
  REQUIRE(normal);
  CHECK(std::string(normal->name()) == "uring");
  CHECK(std::string(io::make_engine(io::Kind::sync)->name()) == "sync");

  // io_uring_queue_init failing (here with EINVAL) takes the same path as
  // ENOSYS, EPERM (kernel.io_uring_disabled) or ENOMEM.
  auto bad = io::make_uring_engine(io::Options{.queue_depth = 0});
  CHECK(bad.err() == EINVAL);
  auto fallback = io::make_engine(io::Kind::uring, io::Options{.queue_depth = 0});
  REQUIRE(fallback);
  CHECK(std::string(fallback->name()) == "sync");

  ::setenv("HOODY_IO_URING_DISABLE", "1", 1);
  auto disabled = io::make_engine(io::Kind::uring);
  ::unsetenv("HOODY_IO_URING_DISABLE");
  REQUIRE(disabled);
  CHECK(std::string(disabled->name()) == "sync");

  // The fallback engine works.
  TempDir t;
  auto fd = t.open("f");
  CHECK(write_sync(*fallback, fd.get(), "abc", 3, 0) == 3);
  char buf[8];
  CHECK(read_sync(*disabled, fd.get(), buf, sizeof buf, 0) == 3);
}

