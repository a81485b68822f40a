// DiffText (per-reader filtering) and DiffCache (one computation per key,
// queueing, budget, interrupts), without BTRFS or FUSE.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "store/diff_cache.hpp"

using namespace hoody;
using namespace hoody::snapfs;
using namespace std::chrono_literals;
using send::Change;
using send::ChangeKind;

namespace {

constexpr uint32_t kNobody = 65534;

DirMode dir(uint32_t mode, uint32_t uid = 0, uint32_t gid = 0) { return {true, mode, uid, gid}; }

// A tree as a map of directory modes; counts the stat calls.
struct Tree {
  std::map<std::string, DirMode> dirs;
  std::map<std::string, int> asked;
  DiffText::StatDir stat() {
    return [this](const std::string& p) {
      ++asked[p];
      auto it = dirs.find(p);
      return it == dirs.end() ? DirMode{} : it->second;
    };
  }
};

std::string lines_of(const std::shared_ptr<const std::string>& s) { return s ? *s : "<null>"; }

// A gate that computations wait at until the test opens it.
struct Gate {
  std::mutex m;
  std::condition_variable cv;
  bool open = false;
  void wait() {
    std::unique_lock g(m);
    cv.wait(g, [&] { return open; });
  }
  void release() {
    {
      std::lock_guard g(m);
      open = true;
    }
    cv.notify_all();
  }
};

DiffCache::Runner threads() {
  return [](std::function<void()> job) { std::thread(std::move(job)).detach(); };
}

std::shared_ptr<const DiffText> text_of(std::vector<Change> changes) {
  Tree t;
  return DiffText::build(changes, t.stat(), t.stat());
}

// Waits (bounded) until pred holds.
template <typename F> bool eventually(F pred) {
  for (int i = 0; i < 500; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

}  // namespace

TEST_CASE("Reader::may_search: owner, group, others, root; no ACLs") {
  Reader nobody{kNobody, kNobody, {}};
  CHECK(!nobody.may_search(dir(0700)));
  CHECK(nobody.may_search(dir(0711)));
  CHECK(nobody.may_search(dir(0755)));
  CHECK(!nobody.may_search(dir(0750, 0, 100)));
  CHECK(!nobody.may_search(DirMode{}));  // missing, or not a directory
  Reader alice{1000, 1000, {100, 27}};
  CHECK(alice.may_search(dir(0700, 1000, 0)));
  CHECK(!alice.may_search(dir(0077, 1000, 0)));  // the owner gets the owner's bits only
  CHECK(alice.may_search(dir(0750, 0, 1000)));   // primary group
  CHECK(alice.may_search(dir(0750, 0, 100)));    // supplementary group
  CHECK(!alice.may_search(dir(0705, 0, 100)));   // a member gets the group's bits only
  CHECK(alice.may_search(dir(0701, 0, 5)));
  Reader root{0, 0, {}};
  CHECK(root.may_search(dir(0000, 1000, 1000)));
  CHECK(root.may_search(DirMode{}));
}

TEST_CASE("DiffText: a line is shown iff every ancestor is searchable where the path exists") {
  Tree a, b;  // old and new trees
  for (Tree* t : {&a, &b}) {
    t->dirs["storage"] = dir(0755);
    t->dirs["storage/privdir"] = dir(0700);
    t->dirs["storage/tunnel"] = dir(0711);
    t->dirs["storage/pub"] = dir(0755);
    t->dirs["storage/pub/deep"] = dir(0755);
    t->dirs["storage/privdir/sub"] = dir(0755);  // open, but below a closed one
  }
  a.dirs["storage/closing"] = dir(0755);  // open in the old tree, closed in the new
  b.dirs["storage/closing"] = dir(0700);
  a.dirs["storage/opening"] = dir(0700);  // the other way round
  b.dirs["storage/opening"] = dir(0755);
  std::vector<Change> changes = {
      {ChangeKind::added, "databases", ""},  // a subvolume: no ancestor
      {ChangeKind::added, "storage/privdir", ""},
      {ChangeKind::added, "storage/privdir/inner", ""},
      {ChangeKind::added, "storage/privdir/sub/x", ""},
      {ChangeKind::added, "storage/tunnel/file", ""},
      {ChangeKind::modified, "storage/pub/deep/f", ""},
      {ChangeKind::removed, "storage/privdir/gone", ""},
      {ChangeKind::added, "storage/closing/new", ""},    // new tree: closed
      {ChangeKind::removed, "storage/closing/old", ""},  // old tree: open
      {ChangeKind::modified, "storage/closing/m", ""},   // both: closed in one
      {ChangeKind::modified, "storage/opening/m", ""},
      {ChangeKind::renamed, "storage/pub/r", "storage/privdir/r"},
      {ChangeKind::renamed, "storage/opening/r", "storage/pub/r2"},  // old path closed
      {ChangeKind::renamed, "storage/closing/r", "storage/pub/r3"},  // old path open
      {ChangeKind::added, "storage/nowhere/x", ""},  // a parent that is no directory
  };
  auto t = DiffText::build(changes, a.stat(), b.stat());
  CHECK(t->lines() == changes.size());
  // Each directory is asked once per tree, parents included.
  for (auto& [p, n] : a.asked) CHECK_MESSAGE(n == 1, p);
  for (auto& [p, n] : b.asked) CHECK_MESSAGE(n == 1, p);
  CHECK(a.asked.count("storage/privdir"));
  CHECK(!a.asked.count("storage/tunnel"));  // only `+` below it: the new tree only
  CHECK(b.asked.count("storage/tunnel"));

  std::string all =
      "+ databases\n"
      "+ storage/privdir\n"
      "+ storage/privdir/inner\n"
      "+ storage/privdir/sub/x\n"
      "+ storage/tunnel/file\n"
      "M storage/pub/deep/f\n"
      "- storage/privdir/gone\n"
      "+ storage/closing/new\n"
      "- storage/closing/old\n"
      "M storage/closing/m\n"
      "M storage/opening/m\n"
      "R storage/pub/r -> storage/privdir/r\n"
      "R storage/opening/r -> storage/pub/r2\n"
      "R storage/closing/r -> storage/pub/r3\n"
      "+ storage/nowhere/x\n";
  CHECK(*t->text() == all);
  auto root = t->text_for(Reader{0, 0, {}});
  CHECK(root == t->text());  // the same buffer, not a copy

  auto nobody = t->text_for(Reader{kNobody, kNobody, {}});
  CHECK(lines_of(nobody) ==
        "+ databases\n"
        "+ storage/privdir\n"
        "+ storage/tunnel/file\n"
        "M storage/pub/deep/f\n"
        "- storage/closing/old\n"
        "R storage/closing/r -> storage/pub/r3\n");
  // Concurrent readers with the same ids share one filtered copy.
  auto again = t->text_for(Reader{kNobody, kNobody, {}});
  CHECK(again == nobody);
  // The owner of privdir sees into it.
  Tree c;
  c.dirs["storage"] = dir(0755);
  c.dirs["storage/privdir"] = dir(0700, 1000, 1000);
  auto owned =
      DiffText::build({{ChangeKind::added, "storage/privdir/inner", ""}}, c.stat(), c.stat());
  CHECK(owned->text_for(Reader{1000, 1000, {}}) == owned->text());
  CHECK(*owned->text_for(Reader{1001, 1000, {}}) == "");         // group has no x
  CHECK(*owned->text_for(Reader{kNobody, kNobody, {}}) == "");
}

TEST_CASE("DiffText: escaped names and empty diffs") {
  auto t = text_of({{ChangeKind::added, "storage/a\nb", ""}});
  CHECK(*t->text() == "+ storage/a\\nb\n");
  auto e = text_of({});
  CHECK(*e->text() == "");
  CHECK(*e->text_for(Reader{kNobody, kNobody, {}}) == "");
  CHECK(e->bytes() > 0);
}

TEST_CASE("DiffCache: concurrent gets of one key compute it once and share the buffer") {
  DiffCache cache({64 << 20, 2}, threads());
  std::atomic<int> calls{0};
  Gate gate;
  auto compute = [&]() -> Result<std::shared_ptr<const DiffText>> {
    ++calls;
    gate.wait();
    return text_of({{ChangeKind::added, "storage/x", ""}});
  };
  std::vector<std::future<Result<std::shared_ptr<const DiffText>>>> got;
  for (int i = 0; i < 40; ++i)
    got.push_back(std::async(std::launch::async, [&] {
      return cache.get("a..b", true, cache.ticket(), compute);
    }));
  CHECK(eventually([&] { return cache.stats().joined == 39; }));
  gate.release();
  std::shared_ptr<const DiffText> first;
  for (auto& f : got) {
    auto r = f.get();
    REQUIRE(r);
    if (!first) first = *r;
    CHECK(*r == first);
  }
  CHECK(calls == 1);
  auto s = cache.stats();
  CHECK(s.computed == 1);
  CHECK(s.entries == 1);
  CHECK(s.bytes == first->bytes());
  // Cached: a later get does not compute.
  auto later = cache.get("a..b", true, cache.ticket(), compute);
  REQUIRE(later);
  CHECK(*later == first);
  CHECK(calls == 1);
  CHECK(cache.stats().hits == 1);
}

TEST_CASE("DiffCache: keep=false shares a computation in flight but never caches it") {
  DiffCache cache({64 << 20, 2}, threads());
  std::atomic<int> calls{0};
  Gate gate;
  auto compute = [&]() -> Result<std::shared_ptr<const DiffText>> {
    ++calls;
    gate.wait();
    return text_of({{ChangeKind::added, "storage/x", ""}});
  };
  auto live = [&] { return cache.get("a..@live", false, cache.ticket(), compute); };
  auto a = std::async(std::launch::async, live);
  auto b = std::async(std::launch::async, live);
  CHECK(eventually([&] { return cache.stats().joined == 1; }));
  gate.release();
  auto ra = a.get(), rb = b.get();
  REQUIRE(ra);
  REQUIRE(rb);
  CHECK(*ra == *rb);
  CHECK(calls == 1);
  CHECK(cache.stats().entries == 0);
  CHECK(cache.get("a..@live", false, cache.ticket(), compute));
  CHECK(calls == 2);
}

TEST_CASE("DiffCache: at most max_running distinct computations; the rest queue in order") {
  DiffCache cache({64 << 20, 2}, threads());
  std::mutex m;
  std::map<std::string, Gate> gates;
  std::atomic<int> running{0}, most{0};
  std::vector<std::string> order;
  auto compute_for = [&](std::string key) {
    return [&, key]() -> Result<std::shared_ptr<const DiffText>> {
      int now = ++running;
      int prev = most.load();
      while (now > prev && !most.compare_exchange_weak(prev, now)) {}
      {
        std::lock_guard g(m);
        order.push_back(key);
      }
      gates[key].wait();
      --running;
      return text_of({{ChangeKind::added, key, ""}});
    };
  };
  for (auto k : {"k1", "k2", "k3", "k4"}) gates[k];
  std::vector<std::future<Result<std::shared_ptr<const DiffText>>>> got;
  for (auto k : {"k1", "k2", "k3", "k4"}) {
    got.push_back(std::async(std::launch::async, [&, k] {
      return cache.get(k, true, cache.ticket(), compute_for(k));
    }));
    CHECK(eventually([&] { auto s = cache.stats(); return s.running + s.queued == got.size(); }));
  }
  CHECK(cache.stats().running == 2);
  CHECK(cache.stats().queued == 2);
  auto started = [&] {
    std::lock_guard g(m);
    return order;
  };
  CHECK(eventually([&] { return started().size() == 2; }));
  gates["k2"].release();  // k3 takes its place
  CHECK(eventually([&] { return started().size() == 3; }));
  CHECK(started()[2] == "k3");
  CHECK(cache.stats().queued == 1);
  gates["k1"].release();  // then k4
  CHECK(eventually([&] { return started().size() == 4; }));
  CHECK(started()[3] == "k4");
  gates["k3"].release();
  gates["k4"].release();
  for (auto& f : got) CHECK(f.get());
  CHECK(most == 2);
  CHECK(cache.stats().computed == 4);
}

TEST_CASE("DiffCache: the byte budget evicts the least recently used") {
  auto big = [](char c) {
    return [c]() -> Result<std::shared_ptr<const DiffText>> {
      return text_of({{ChangeKind::added, std::string(100000, c), ""}});
    };
  };
  size_t one = (*big('a')())->bytes();
  DiffCache cache({one * 2 + one / 2, 2}, threads());
  auto first = cache.get("a", true, cache.ticket(), big('a'));
  REQUIRE(first);
  CHECK(cache.get("b", true, cache.ticket(), big('b')));
  CHECK(cache.get("a", true, cache.ticket(), big('a')));  // a is now the most recent
  CHECK(cache.stats().hits == 1);
  CHECK(cache.get("c", true, cache.ticket(), big('c')));  // evicts b
  auto s = cache.stats();
  CHECK(s.evicted == 1);
  CHECK(s.entries == 2);
  CHECK(s.bytes <= one * 2 + one / 2);
  CHECK(cache.get("a", true, cache.ticket(), big('a')));
  CHECK(cache.stats().computed == 3);  // a still cached
  CHECK(cache.get("b", true, cache.ticket(), big('b')));
  CHECK(cache.stats().computed == 4);  // b was not
  // An open reader keeps an evicted diff alive.
  CHECK(first->get() != nullptr);
  CHECK((*first)->text()->size() == 100003);
  // Larger than the whole budget: served, not kept.
  DiffCache tiny({10, 2}, threads());
  CHECK(tiny.get("a", true, tiny.ticket(), big('a')));
  CHECK(tiny.stats().entries == 0);
  CHECK(tiny.stats().bytes == 0);
  cache.clear();
  CHECK(cache.stats().entries == 0);
  CHECK(cache.stats().bytes == 0);
}

TEST_CASE("DiffCache: a failed computation reaches its waiters and is not cached") {
  DiffCache cache({64 << 20, 2}, threads());
  int calls = 0;
  auto bad = [&]() -> Result<std::shared_ptr<const DiffText>> {
    ++calls;
    return fail(EIO);
  };
  CHECK(cache.get("x", true, cache.ticket(), bad).err() == EIO);
  CHECK(cache.get("x", true, cache.ticket(), bad).err() == EIO);
  CHECK(calls == 2);
  CHECK(cache.stats().entries == 0);
}

TEST_CASE("DiffCache: an interrupted get answers EINTR; the computation goes on for the others") {
  DiffCache cache({64 << 20, 1}, threads());
  Gate gate;
  std::atomic<int> calls{0};
  auto slow = [&]() -> Result<std::shared_ptr<const DiffText>> {
    ++calls;
    gate.wait();
    return text_of({{ChangeKind::added, "storage/x", ""}});
  };
  auto t1 = cache.ticket(), t2 = cache.ticket();
  auto a = std::async(std::launch::async, [&] { return cache.get("k", true, t1, slow); });
  auto b = std::async(std::launch::async, [&] { return cache.get("k", true, t2, slow); });
  CHECK(eventually([&] { return cache.stats().joined == 1; }));
  cache.interrupt(t2);
  CHECK(b.wait_for(5s) == std::future_status::ready);
  CHECK(b.get().err() == EINTR);
  CHECK(a.wait_for(50ms) == std::future_status::timeout);  // still waiting
  gate.release();
  CHECK(a.get());
  CHECK(calls == 1);
  CHECK(cache.stats().interrupted == 1);
  CHECK(cache.stats().entries == 1);

  // An interrupt before the get waits (already pending when it registered).
  auto t3 = cache.ticket();
  cache.interrupt(t3);
  Gate never;
  CHECK(cache.get("other", true, t3, [&]() -> Result<std::shared_ptr<const DiffText>> {
          never.wait();
          return fail(EIO);
        }).err() == EINTR);
  // ...its computation started (a slot was free) and still runs: let it end.
  never.release();
  CHECK(eventually([&] { return cache.stats().running == 0; }));
  // An interrupt after the get answered is ignored (the ticket is gone).
  auto t4 = cache.ticket();
  CHECK(cache.get("k", true, t4, slow));
  cache.interrupt(t4);
}

TEST_CASE("DiffCache: a queued computation nobody waits for any more is dropped") {
  DiffCache cache({64 << 20, 1}, threads());
  Gate gate;
  auto slow = [&]() -> Result<std::shared_ptr<const DiffText>> {
    gate.wait();
    return text_of({});
  };
  std::atomic<bool> queued_ran{false};
  auto queued = [&]() -> Result<std::shared_ptr<const DiffText>> {
    queued_ran = true;
    return text_of({});
  };
  auto a =
      std::async(std::launch::async, [&] { return cache.get("busy", true, cache.ticket(), slow); });
  CHECK(eventually([&] { return cache.stats().running == 1; }));
  auto t = cache.ticket();
  auto b = std::async(std::launch::async, [&] { return cache.get("later", true, t, queued); });
  CHECK(eventually([&] { return cache.stats().queued == 1; }));
  cache.interrupt(t);
  CHECK(b.get().err() == EINTR);
  CHECK(cache.stats().queued == 0);
  gate.release();
  CHECK(a.get());
  CHECK(eventually([&] { return cache.stats().running == 0; }));
  CHECK(!queued_ran);
  CHECK(cache.stats().computed == 1);
}

TEST_CASE("share_text frees and trims") {
  auto s = share_text(std::string(2 << 20, 'x'));
  CHECK(s->size() == (2u << 20));
  s.reset();
  CHECK(trim_heap(kTrimThreshold));
  CHECK(!trim_heap(10));
}

TEST_CASE("DiffCache: many threads, random keys, interrupts and evictions stay consistent") {
  auto text_for_key = [](const std::string& k) {
    return text_of({{ChangeKind::added, k + std::string(1000, 'x'), ""}});
  };
  size_t one = text_for_key("k0")->bytes();
  DiffCache cache({one * 3, 2}, threads());
  std::atomic<int> computed{0}, ok{0}, eintr{0}, wrong{0};
  std::mutex tm;
  std::vector<DiffCache::Ticket> pending;
  std::vector<std::thread> workers;
  for (int w = 0; w < 8; ++w)
    workers.emplace_back([&, w] {
      unsigned seed = static_cast<unsigned>(w) * 7919u + 1;
      for (int i = 0; i < 200; ++i) {
        seed = seed * 1103515245u + 12345u;
        std::string key = "k" + std::to_string((seed >> 16) % 6);
        bool keep = (seed >> 8) % 4 != 0;
        auto t = cache.ticket();
        {
          std::lock_guard g(tm);
          pending.push_back(t);
        }
        auto r = cache.get(key, keep, t, [&, key]() -> Result<std::shared_ptr<const DiffText>> {
          ++computed;
          std::this_thread::sleep_for(std::chrono::microseconds(200));
          return text_for_key(key);
        });
        if (r) {
          ++ok;
          if (*(*r)->text() != "+ " + key + std::string(1000, 'x') + "\n") ++wrong;
        } else if (r.err() == EINTR) {
          ++eintr;
        } else {
          ++wrong;
        }
      }
    });
  std::atomic<bool> stop{false};
  std::thread interrupter([&] {
    unsigned seed = 42;
    while (!stop) {
      DiffCache::Ticket t = 0;
      {
        std::lock_guard g(tm);
        seed = seed * 1103515245u + 12345u;
        // One of the newest tickets: likely still waiting.
        size_t window = std::min<size_t>(pending.size(), 8);
        if (window) t = pending[pending.size() - 1 - (seed >> 16) % window];
      }
      if (t) cache.interrupt(t);
      std::this_thread::sleep_for(std::chrono::microseconds(300));
    }
  });
  for (auto& w : workers) w.join();
  stop = true;
  interrupter.join();
  CHECK(wrong == 0);
  CHECK(ok + eintr == 8 * 200);
  CHECK(eintr > 0);
  CHECK(eventually([&] { return cache.stats().running == 0; }));
  auto s = cache.stats();
  CHECK(s.queued == 0);
  CHECK(s.bytes <= one * 3);
  CHECK(s.entries <= 3);
  CHECK(s.bytes == s.entries * one);
  MESSAGE("gets ", ok + eintr, ": ", ok.load(), " ok, ", eintr.load(), " EINTR; ",
          computed.load(), " computed, ", s.hits, " hits, ", s.joined, " joined, ", s.evicted,
          " evicted");
}

TEST_CASE("DiffCache: drop_idle drops the diffs unused for opts.idle") {
  DiffCache cache({64 << 20, 2, std::chrono::milliseconds(300)}, threads());
  auto make = [](const char* k) {
    return [k]() -> Result<std::shared_ptr<const DiffText>> {
      return text_of({{ChangeKind::added, k, ""}});
    };
  };
  CHECK(cache.get("old", true, cache.ticket(), make("old")));
  CHECK(cache.get("new", true, cache.ticket(), make("new")));
  cache.drop_idle(std::chrono::steady_clock::now());
  CHECK(cache.stats().entries == 2);
  std::this_thread::sleep_for(400ms);
  auto reused = std::chrono::steady_clock::now();
  CHECK(cache.get("old", true, cache.ticket(), make("old")));  // used again: kept longer
  // "new" was last used 400 ms or more before `reused`, "old" after it.
  cache.drop_idle(reused + std::chrono::milliseconds(299));
  CHECK(cache.stats().entries == 1);  // "new" went
  CHECK(cache.get("old", true, cache.ticket(), make("old")));
  CHECK(cache.stats().computed == 2);
  cache.drop_idle(std::chrono::steady_clock::now() + std::chrono::seconds(1));
  auto s = cache.stats();
  CHECK(s.entries == 0);
  CHECK(s.bytes == 0);
  CHECK(s.expired == 2);
  CHECK(cache.get("old", true, cache.ticket(), make("old")));
  CHECK(cache.stats().computed == 3);
}
