// The change signal across processes (fork): latency from a committed change
// to a waiter's wake-up, and waiters that never hang on a writer killed with
// SIGKILL at any point (mid-publish, mid-transaction).
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "share/change_signal.hpp"
#include "share/registry.hpp"
#include "temp_pool.hpp"

using namespace hoody::sharefs;
using namespace std::chrono_literals;
using share_test::TempPool;

namespace {

int64_t mono_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string unique_name() {
  static int n = 0;
  return "hoody-shares-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

struct SignalName {
  std::string name = unique_name();
  ~SignalName() { ChangeSignal::remove(name); }
};

bool read_full(int fd, void* buf, size_t n) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

void write_full(int fd, const void* buf, size_t n) {
  auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    ssize_t r = ::write(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return;
    p += r;
    n -= static_cast<size_t>(r);
  }
}

// A child that opens `open_signal()`, says it is ready, waits for a change
// after the value it saw, and reports {wake time, value seen, value before}.
struct Waiter {
  pid_t pid = -1;
  int fd = -1;
  template <typename Open> Waiter(Open open_signal, std::chrono::milliseconds timeout) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(p[0]);
      auto sig = open_signal();
      if (!sig) ::_exit(3);
      uint64_t before = sig->current();
      char ready = 'r';
      write_full(p[1], &ready, 1);
      uint64_t seen = sig->wait_for_change(before, timeout);
      int64_t woke[3] = {mono_ns(), static_cast<int64_t>(seen), static_cast<int64_t>(before)};
      write_full(p[1], woke, sizeof woke);
      ::_exit(0);
    }
    ::close(p[1]);
    fd = p[0];
    char ready;
    REQUIRE(read_full(fd, &ready, 1));
  }
  // {wake time, value seen, value before}
  std::vector<int64_t> result() {
    int64_t woke[3] = {0, 0, 0};
    bool ok = read_full(fd, woke, sizeof woke);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ::close(fd);
    pid = -1;
    REQUIRE(ok);
    REQUIRE(WIFEXITED(st));
    return {woke[0], woke[1], woke[2]};
  }
  ~Waiter() {
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      ::close(fd);
    }
  }
};

double ms(int64_t ns) { return static_cast<double>(ns) / 1e6; }

}  // namespace

TEST_CASE("wait_for_change: a publish in another process wakes the waiter in well under 100 ms") {
  SignalName n;
  auto sig = ChangeSignal::open(n.name);
  REQUIRE(sig.ok());
  std::vector<double> lat;
  for (int i = 0; i < 20; ++i) {
    Waiter w([&] { return ChangeSignal::open(n.name); }, 5s);
    std::this_thread::sleep_for(5ms);  // let it reach FUTEX_WAIT
    int64_t t0 = mono_ns();
    sig->publish();
    auto r = w.result();
    CHECK(r[1] == r[2] + 1);
    lat.push_back(ms(r[0] - t0));
  }
  std::sort(lat.begin(), lat.end());
  MESSAGE("publish -> wake latency over 20 runs: median ", lat[10], " ms, max ", lat.back(), " ms");
  CHECK(lat.back() < 100.0);
}

TEST_CASE("wait_for_change: a committed registry change reaches a waiting process within 100 ms") {
  TempPool pool;
  pool.mkdir("c1", "data");
  pool.mkdir("c2");
  std::string why;
  auto reg = Registry::open(pool.path, &why);
  REQUIRE_MESSAGE(reg.ok(), why);
  REQUIRE(reg->add_container("c1", "", &why));
  REQUIRE(reg->add_container("c2", "", &why));
  std::vector<double> lat;
  for (int i = 0; i < 10; ++i) {
    // The waiter opens the registry as a daemon would: its own connection and mapping.
    Waiter w([&]() -> hoody::Result<ChangeSignal> {
      int fd = ::open(pool.path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      auto s = ChangeSignal::open_for_pool(fd);
      ::close(fd);
      return s;
    }, 5s);
    std::this_thread::sleep_for(5ms);
    int64_t t0 = mono_ns();
    Offer o{"c1", "data", "c2", "", Mode::ro, "s" + std::to_string(i), ""};
    REQUIRE_MESSAGE(reg->offer(o, &why).ok(), why);
    auto r = w.result();
    CHECK(r[1] != r[2]);
    lat.push_back(ms(r[0] - t0));
  }
  std::sort(lat.begin(), lat.end());
  MESSAGE("offer (BEGIN IMMEDIATE .. COMMIT, synchronous=FULL) -> wake over 10 runs: median ",
          lat[5], " ms, max ", lat.back(), " ms");
  CHECK(lat.back() < 100.0);
}

TEST_CASE("wait_for_change: no change returns at the timeout, not before and not much after") {
  SignalName n;
  auto sig = ChangeSignal::open(n.name);
  REQUIRE(sig.ok());
  auto t0 = std::chrono::steady_clock::now();
  uint64_t v = sig->wait_for_change(sig->current(), 150ms);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(v == sig->current());
  CHECK(took >= 150ms);
  CHECK(took < 400ms);
  // A value already different returns at once.
  t0 = std::chrono::steady_clock::now();
  CHECK(sig->wait_for_change(sig->current() + 7, 5s) == sig->current());
  CHECK(std::chrono::steady_clock::now() - t0 < 50ms);
}

TEST_CASE("a writer killed with SIGKILL at any point never makes a waiter hang") {
  SignalName n;
  auto sig = ChangeSignal::open(n.name);
  REQUIRE(sig.ok());
  // Kill a writer that publishes in a tight loop at several points in its life.
  for (int delay_us : {0, 50, 200, 1000, 3000, 10000, 30000}) {
    pid_t writer = ::fork();
    REQUIRE(writer >= 0);
    if (writer == 0) {
      auto s = ChangeSignal::open(n.name);
      if (!s) ::_exit(3);
      for (;;) s->publish();
    }
    std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    ::kill(writer, SIGKILL);
    int st = 0;
    ::waitpid(writer, &st, 0);
    CHECK(WIFSIGNALED(st));
    // A waiter now: nobody publishes, so it must come back at its timeout.
    auto t0 = std::chrono::steady_clock::now();
    uint64_t v = sig->current();
    CHECK(sig->wait_for_change(v, 100ms) == v);
    CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
    // And the signal still works: a waiting process wakes on the next publish.
    Waiter w([&] { return ChangeSignal::open(n.name); }, 5s);
    std::this_thread::sleep_for(2ms);
    int64_t t1 = mono_ns();
    sig->publish();
    auto r = w.result();
    CHECK(r[1] != r[2]);
    CHECK(ms(r[0] - t1) < 100.0);
  }
}

TEST_CASE("a registry writer killed mid-transaction: waiters return, the next writer commits") {
  TempPool pool;
  pool.mkdir("c1", "data");
  pool.mkdir("c2");
  std::string why;
  {
    auto reg = Registry::open(pool.path, &why);
    REQUIRE_MESSAGE(reg.ok(), why);
    REQUIRE(reg->add_container("c1", "", &why));
    REQUIRE(reg->add_container("c2", "", &why));
  }
  for (int delay_ms : {1, 5, 20, 60}) {
    pid_t writer = ::fork();
    REQUIRE(writer >= 0);
    if (writer == 0) {
      std::string w;
      auto reg = Registry::open(pool.path, &w);
      if (!reg) ::_exit(3);
      Offer o{"c1", "data", "c2", "", Mode::rw, "busy", ""};
      for (;;) {
        (void)reg->offer(o, &w);
        (void)reg->revoke("c1", "busy", &w);
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    ::kill(writer, SIGKILL);
    ::waitpid(writer, nullptr, 0);
    auto reg = Registry::open(pool.path, &why);
    REQUIRE_MESSAGE(reg.ok(), why);
    auto t0 = std::chrono::steady_clock::now();
    uint64_t v = reg->signal().current();
    CHECK(reg->signal().wait_for_change(v, 100ms) == v);
    CHECK(std::chrono::steady_clock::now() - t0 < 500ms);
    // The dead writer's transaction is gone (SQLite's locks die with it).
    auto g = reg->generation();
    REQUIRE(g.ok());
    std::string name = "after" + std::to_string(delay_ms);
    Offer o{"c1", "data", "c2", "", Mode::ro, name, ""};
    auto t1 = std::chrono::steady_clock::now();
    REQUIRE_MESSAGE(reg->offer(o, &why).ok(), why);
    CHECK(std::chrono::steady_clock::now() - t1 < 2s);
    CHECK(*reg->generation() == *g + 1);
  }
}

TEST_CASE("wait_applied: waits for every live daemon's acknowledgement; a daemon killed -9 is let go of at once") {
  SignalName n;
  auto sig = ChangeSignal::open(n.name);
  REQUIRE(sig.ok());
  // Nobody listens: nothing to wait for.
  auto t0 = std::chrono::steady_clock::now();
  CHECK(sig->wait_applied(sig->publish(), 2s).empty());
  CHECK(std::chrono::steady_clock::now() - t0 < 100ms);

  // A daemon in another process: it acknowledges each change 50 ms after it
  // sees it, and beats every 20 ms meanwhile, as the watcher does.
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  pid_t d = ::fork();
  REQUIRE(d >= 0);
  if (d == 0) {
    auto s = ChangeSignal::open(n.name);
    if (!s) ::_exit(3);
    int slot = s->claim_slot();
    if (slot < 0) ::_exit(4);
    uint64_t seen = s->current();
    s->ack(slot, seen);
    char c = 1;
    if (::write(ready[1], &c, 1) != 1) ::_exit(5);
    for (;;) {
      uint64_t now = s->wait_for_change(seen, 20ms);
      s->beat(slot);
      if (now != seen) {
        std::this_thread::sleep_for(50ms);
        s->ack(slot, now);
        seen = now;
      }
    }
  }
  char c;
  REQUIRE(::read(ready[0], &c, 1) == 1);
  for (int i = 0; i < 3; ++i) {
    t0 = std::chrono::steady_clock::now();
    auto behind = sig->wait_applied(sig->publish(), 2s);
    auto took = std::chrono::steady_clock::now() - t0;
    CHECK(behind.empty());
    CHECK(took >= 45ms);  // it waited for the acknowledgement...
    CHECK(took < 1s);     // ... and no longer
  }
  // Stopped: named after the bound.
  ::kill(d, SIGSTOP);
  auto behind = sig->wait_applied(sig->publish(), 300ms);
  CHECK(behind == std::vector<pid_t>{d});
  // Killed (in this pid namespace): let go of at once, heartbeat fresh or not.
  ::kill(d, SIGKILL);
  int st = 0;
  ::waitpid(d, &st, 0);
  t0 = std::chrono::steady_clock::now();
  CHECK(sig->wait_applied(sig->publish(), 2s).empty());
  CHECK(std::chrono::steady_clock::now() - t0 < 100ms);
  // Its slot is taken over by the next daemon (the first free one).
  int again = sig->claim_slot();
  CHECK(again == 0);
  sig->ack(again, sig->current());
  CHECK(sig->wait_applied(sig->current(), 100ms).empty());
  CHECK(sig->wait_applied(sig->publish(), 100ms) == std::vector<pid_t>{::getpid()});
  sig->release_slot(again);
  CHECK(sig->wait_applied(sig->publish(), 100ms).empty());
  ::close(ready[0]);
  ::close(ready[1]);
}
