// .hoody/diff/A..B on a real mount: computed once per pair and shared by its
// readers, interruptible while it waits, bounded in memory, and filtered by
// what the reader could reach in the trees (issue 7, items 3 and 6).
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::string env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}

void write_file(const std::string& path, const std::string& data, mode_t mode = 0644) {
  std::ofstream(path) << data;
  ::chmod(path.c_str(), mode);
}

int err_of(int r) { return r < 0 ? errno : 0; }

double secs_since(SteadyClock::time_point t) {
  return std::chrono::duration<double>(SteadyClock::now() - t).count();
}

// A container directory with a storage subvolume and hoody-snapfs on it, at
// log level debug: every computation of a diff is one "op=diff_compute" line.
struct Snapfs {
  BtrfsPool pool;
  std::string source, storage, mnt;
  std::unique_ptr<Daemon> daemon;
  Snapfs() {
    pool.make_dir("containers");
    source = pool.make_dir("containers/c1");
    storage = pool.make_subvolume("containers/c1/storage");
    mnt = pool.make_temp_dir("mnt");
  }
  void start(const std::string& opts = "allow_other") {
    daemon = std::make_unique<Daemon>(
        std::vector<std::string>{env_or("HOODY_SNAPFS", "hoody-snapfs"), "-f", "--log-level",
                                 "debug", "-o", opts, source, mnt},
        mnt, pool.dir() + "/daemon.log");
  }
  std::string at(const std::string& rel) const { return mnt + "/" + rel; }
  size_t computations() const {
    auto log = daemon->log();
    size_t n = 0;
    for (size_t p = log.find("op=diff_compute"); p != std::string::npos;
         p = log.find("op=diff_compute", p + 1))
      ++n;
    return n;
  }
  // VmRSS of the daemon, in KiB.
  long rss_kib() const {
    std::ifstream in("/proc/" + std::to_string(daemon->pid()) + "/status");
    for (std::string l; std::getline(in, l);)
      if (l.rfind("VmRSS:", 0) == 0) return std::atol(l.c_str() + 6);
    return -1;
  }
};

// n empty files in directories of 1000 below `dir`.
void make_files(const std::string& dir, int n) {
  for (int d = 0; d < (n + 999) / 1000; ++d) {
    std::string sub = dir + "/d" + std::to_string(d);
    ::mkdir(sub.c_str(), 0755);
    for (int i = 0; i < 1000 && d * 1000 + i < n; ++i) {
      int fd = ::open((sub + "/f" + std::to_string(i)).c_str(),
                      O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      REQUIRE(fd >= 0);
      ::close(fd);
    }
  }
}

// In a child: read `path` whole and print "<size> <fnv1a-64>"; exit 0.
int print_digest(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::printf("open: %s\n", std::strerror(errno));
    return 1;
  }
  uint64_t h = 1469598103934665603ull, size = 0;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      std::printf("read: %s\n", std::strerror(errno));
      return 1;
    }
    if (n == 0) break;
    for (ssize_t i = 0; i < n; ++i) h = (h ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
    size += static_cast<uint64_t>(n);
  }
  ::close(fd);
  std::printf("%llu %llx\n", static_cast<unsigned long long>(size),
              static_cast<unsigned long long>(h));
  return 0;
}

std::string digest(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (char c : text) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  char out[64];
  std::snprintf(out, sizeof out, "%zu %llx\n", text.size(), static_cast<unsigned long long>(h));
  return out;
}

// The lines of `text` that do not contain `needle`.
std::string without(const std::string& text, const std::string& needle) {
  std::string out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size() - 1;
    std::string line = text.substr(start, end + 1 - start);
    if (line.find(needle) == std::string::npos) out += line;
    start = end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("diff: each reader sees only the paths it can reach in the tree(s) where they exist") {
  require_mount_capabilities();
  Snapfs fs;
  auto s = fs.storage;
  ::mkdir((s + "/privdir").c_str(), 0700);
  ::mkdir((s + "/tunnel").c_str(), 0711);
  ::mkdir((s + "/closing").c_str(), 0755);
  ::mkdir((s + "/owned").c_str(), 0700);
  ::chown((s + "/owned").c_str(), 65534, 65534);
  write_file(s + "/closing/kept", "1\n");
  write_file(s + "/privdir/old", "1\n");
  fs.start();
  REQUIRE(::mkdir(fs.at("a").c_str(), 0755) == 0);
  write_file(s + "/privdir/inner", "secret\n");
  ::unlink((s + "/privdir/old").c_str());
  write_file(s + "/tunnel/file", "x\n");
  write_file(s + "/pub", "x\n");
  write_file(s + "/owned/mine", "x\n");
  write_file(s + "/closing/kept", "2\n");
  ::chmod((s + "/closing").c_str(), 0700);
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);

  auto as_root = slurp(fs.at(".hoody/diff/a..b"));
  for (const char* l : {"+ storage/privdir/inner\n", "- storage/privdir/old\n",
                        "+ storage/tunnel/file\n", "+ storage/pub\n", "+ storage/owned/mine\n",
                        "M storage/closing/kept\n", "M storage/closing\n"})
    CHECK_MESSAGE(as_root.find(l) != std::string::npos, l, " in:\n", as_root);

  auto as_nobody = run_child([&] {
    std::string d = slurp(fs.at(".hoody/diff/a..b"));
    std::fputs(d.c_str(), stdout);
    return 0;
  }, {.as_nobody = true});
  REQUIRE(as_nobody.ok());
  auto& n = as_nobody.output;
  CHECK_MESSAGE(n.find("privdir/inner") == std::string::npos, n);   // 0700 root, in b
  CHECK_MESSAGE(n.find("privdir/old") == std::string::npos, n);     // 0700 root, in a
  CHECK_MESSAGE(n.find("closing/kept") == std::string::npos, n);    // 0700 in b (0755 in a)
  CHECK_MESSAGE(n.find("+ storage/tunnel/file\n") != std::string::npos, n);  // 0711
  CHECK_MESSAGE(n.find("+ storage/pub\n") != std::string::npos, n);
  CHECK_MESSAGE(n.find("+ storage/owned/mine\n") != std::string::npos, n);  // nobody's own 0700
  CHECK_MESSAGE(n.find("M storage/closing\n") != std::string::npos, n);  // the dir itself
  // Exactly the root's lines minus the hidden ones, in the same order.
  CHECK(n == without(without(without(as_root, "privdir/inner"), "privdir/old"), "closing/kept"));
  // The same for @live (the live tree is the new side).
  auto live_nobody = run_child([&] {
    std::fputs(slurp(fs.at(".hoody/diff/a..@live")).c_str(), stdout);
    return 0;
  }, {.as_nobody = true});
  REQUIRE(live_nobody.ok());
  CHECK(live_nobody.output == n);
  CHECK(slurp(fs.at(".hoody/diff/a..@live")) == as_root);
  // One computation for a..b (cached; the nobody open filtered it), and one
  // per open of a..@live, which is never kept.
  CHECK(fs.computations() == 3);

  // The diff directory is unchanged: empty listing, nodes by lookup only.
  auto ls = run({"ls", "-A", fs.at(".hoody/diff")});
  CHECK(ls.ok());
  CHECK(ls.output.empty());
  CHECK(err_of(::access(fs.at(".hoody/diff/a..nope").c_str(), F_OK)) == ENOENT);
  CHECK(err_of(::access(fs.at(".hoody/diff/garbage").c_str(), F_OK)) == ENOENT);
  struct stat st {};
  REQUIRE(::stat(fs.at(".hoody/diff/a..b").c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 07777) == 0444);
  // A rename keeps the pair (the key is the uuid), a new snapshot of the old
  // name is another pair.
  REQUIRE(::rename(fs.at("b").c_str(), fs.at("b2").c_str()) == 0);
  CHECK(slurp(fs.at(".hoody/diff/a..b2")) == as_root);
  CHECK(fs.computations() == 3);
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);
  CHECK(slurp(fs.at(".hoody/diff/a..b")) == as_root);
  CHECK(fs.computations() == 4);
  CHECK(slurp(fs.at(".hoody/diff/b..b2")) == "");
}

TEST_CASE("diff: a read (only atime moves) is no change; a write, a chmod and a touch are") {
  require_mount_capabilities();
  Snapfs fs;
  auto s = fs.storage;
  for (const char* f : {"read", "written", "chmodded", "touched"}) write_file(s + "/" + f, "1\n");
  ::mkdir((s + "/listed").c_str(), 0755);
  write_file(s + "/listed/x", "x\n");
  fs.start();
  REQUIRE(::mkdir(fs.at("a").c_str(), 0755) == 0);
  // relatime (the pool's mount): the first read after a write moves atime.
  struct stat before {}, after {};
  REQUIRE(::stat((s + "/read").c_str(), &before) == 0);
  CHECK(slurp(s + "/read") == "1\n");
  DIR* d = ::opendir((s + "/listed").c_str());
  REQUIRE(d);
  while (::readdir(d)) {
  }
  ::closedir(d);
  REQUIRE(::stat((s + "/read").c_str(), &after) == 0);
  REQUIRE_MESSAGE(after.st_atim.tv_sec * 1000000000L + after.st_atim.tv_nsec >
                      before.st_atim.tv_sec * 1000000000L + before.st_atim.tv_nsec,
                  "the read did not move atime: nothing to test");
  write_file(s + "/written", "2\n");
  ::chmod((s + "/chmodded").c_str(), 0600);
  struct timespec mtime[2] = {{0, UTIME_OMIT}, {1000000, 0}};
  REQUIRE(::utimensat(AT_FDCWD, (s + "/touched").c_str(), mtime, 0) == 0);
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);

  auto diff = slurp(fs.at(".hoody/diff/a..b"));
  MESSAGE(diff);
  CHECK(diff.find("storage/read") == std::string::npos);
  CHECK(diff.find("storage/listed") == std::string::npos);
  for (const char* l : {"M storage/written\n", "M storage/chmodded\n", "M storage/touched\n"})
    CHECK_MESSAGE(diff.find(l) != std::string::npos, l, " in:\n", diff);
}

TEST_CASE("diff: 40 concurrent readers of a large diff share one computation and one buffer") {
  require_mount_capabilities();
  // 100k files changed between two snapshots (60k with HOODY_DIFF_FILES=60000).
  const int files = std::atoi(env_or("HOODY_DIFF_FILES", "100000").c_str());
  const int readers = 40;
  Snapfs fs;
  ::mkdir((fs.storage + "/privdir").c_str(), 0700);
  fs.start();
  REQUIRE(::mkdir(fs.at("a").c_str(), 0755) == 0);
  auto t_make = SteadyClock::now();
  make_files(fs.storage, files);
  for (int i = 0; i < 100; ++i) write_file(fs.storage + "/privdir/p" + std::to_string(i), "x");
  MESSAGE(files, " files made in ", secs_since(t_make), " s");
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);
  REQUIRE(::mkdir(fs.at("c").c_str(), 0755) == 0);  // the same trees as b: another pair
  long rss_before = fs.rss_kib();

  // An open that waits for the computation answers EINTR on a signal, at
  // once; the computation goes on for the reader that started it.
  Pipe started;
  Child first([&] {
    started.signal();
    return print_digest(fs.at(".hoody/diff/a..c"));
  }, {.timeout = 120s});
  REQUIRE(started.wait_signal());
  auto t_cold = SteadyClock::now();
  std::this_thread::sleep_for(100ms);
  Pipe ready;
  Child waiter([&] {
    struct sigaction sa {};
    sa.sa_handler = [](int) {};
    ::sigaction(SIGUSR1, &sa, nullptr);  // no SA_RESTART
    ready.signal();
    auto t = SteadyClock::now();
    int fd = ::open(fs.at(".hoody/diff/a..c").c_str(), O_RDONLY | O_CLOEXEC);
    int e = errno;
    std::printf("open=%d errno=%s after %.3f s\n", fd, std::strerror(e), secs_since(t));
    return fd < 0 && e == EINTR ? 0 : 1;
  }, {.timeout = 120s});
  REQUIRE(ready.wait_signal());
  std::this_thread::sleep_for(300ms);  // in the daemon, waiting
  auto t_sig = SteadyClock::now();
  ::kill(waiter.pid(), SIGUSR1);
  auto w = waiter.wait();
  double answered = secs_since(t_sig);
  auto f = first.wait();
  double cold = secs_since(t_cold);
  CHECK_MESSAGE(w.ok(), w.describe());
  CHECK_MESSAGE(f.ok(), f.describe());
  MESSAGE("cold open+read of a ", files, "-line diff: ", cold, " s; an interrupted waiter "
          "answered in ", answered, " s");
  CHECK_MESSAGE(answered < std::min(1.0, cold / 2), "the waiter was not answered at once");
  CHECK(fs.computations() == 1);

  // 40 readers of a..b (cold), half of them as nobody, all at once.
  long rss_peak = 0;
  std::atomic<bool> sampling{true};
  std::thread sampler([&] {
    while (sampling) {
      rss_peak = std::max(rss_peak, fs.rss_kib());
      std::this_thread::sleep_for(20ms);
    }
  });
  Pipe go;
  std::vector<Child> kids;
  kids.reserve(readers);
  for (int i = 0; i < readers; ++i)
    kids.emplace_back([&] {
      go.wait_signal(60s);
      return print_digest(fs.at(".hoody/diff/a..b"));
    }, ChildOptions{.as_nobody = i % 2 == 1, .timeout = 180s});
  auto t40 = SteadyClock::now();
  for (int i = 0; i < readers; ++i) go.signal();
  std::vector<std::string> root_out, nobody_out;
  for (int i = 0; i < readers; ++i) {
    auto r = kids[static_cast<size_t>(i)].wait();
    CHECK_MESSAGE(r.ok(), r.describe());
    (i % 2 ? nobody_out : root_out).push_back(r.output);
  }
  double all40 = secs_since(t40);
  kids.clear();
  sampling = false;
  sampler.join();
  // Every reader of a kind got the same bytes; nobody got root's minus privdir.
  auto full = slurp(fs.at(".hoody/diff/a..b"));
  size_t lines = static_cast<size_t>(std::count(full.begin(), full.end(), '\n'));
  CHECK(lines >= static_cast<size_t>(files));
  for (auto& o : root_out) CHECK(o == digest(full));
  for (auto& o : nobody_out) CHECK(o == digest(without(full, "storage/privdir/")));
  CHECK(digest(full) != digest(without(full, "storage/privdir/")));
  // One computation for a..b: 2 in all with a..c.
  CHECK(fs.computations() == 2);
  std::this_thread::sleep_for(200ms);
  long rss_after = fs.rss_kib();
  MESSAGE(readers, " concurrent readers of a ", lines, "-line (", full.size() / 1024,
          " KiB) diff: ", all40, " s (a cold single open: ", cold, " s, ratio ", all40 / cold,
          "); daemon VmRSS before ", rss_before / 1024, " MiB, peak ", rss_peak / 1024,
          " MiB, after ", rss_after / 1024, " MiB");
  // Per open, the old daemon took about a cold open each: 40 of them on 2
  // cores took ~20x.  One computation and 40 reads of one buffer:
  CHECK(all40 < 4 * cold + 2);
  // The cache keeps a..b and a..c (text and line table: ~2.3x the text
  // each); the computations' buffers (send stream, fold) and the filtered
  // copies went back to the system.
  long bound = rss_before + static_cast<long>(6 * full.size() / 1024) + 16 * 1024;
  CHECK_MESSAGE(rss_after < bound, "VmRSS after ", rss_after, " KiB; bound ", bound, " KiB");
  // One computation at a time for one pair: the peak is one computation's
  // (~100 MiB at 100k files), not 40 of them.
  CHECK(rss_peak - rss_before < 200 * 1024);

  // Concurrent readers of a..@live share one computation too (never cached).
  std::vector<Child> live;
  for (int i = 0; i < 8; ++i)
    live.emplace_back([&] {
      go.wait_signal(60s);
      return print_digest(fs.at(".hoody/diff/a..@live"));
    }, ChildOptions{.as_nobody = i % 2 == 1, .timeout = 180s});
  for (int i = 0; i < 8; ++i) go.signal();
  for (size_t i = 0; i < live.size(); ++i) {
    auto r = live[i].wait();
    CHECK_MESSAGE(r.ok(), r.describe());
    CHECK(r.output == (i % 2 ? nobody_out[0] : root_out[0]));
  }
  CHECK(fs.computations() == 3);
  auto left = run({"ls", "-A", fs.source + "/.snapshots"});
  CHECK_MESSAGE(left.output.find(".diff-") == std::string::npos, left.output);
}

TEST_CASE("diff: -o diff_cache_mb=0 keeps no diff") {
  require_mount_capabilities();
  Snapfs fs;
  fs.start("allow_other,diff_cache_mb=0");
  REQUIRE(::mkdir(fs.at("a").c_str(), 0755) == 0);
  write_file(fs.storage + "/new", "x\n");
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);
  CHECK(slurp(fs.at(".hoody/diff/a..b")) == "+ storage/new\n");
  CHECK(slurp(fs.at(".hoody/diff/a..b")) == "+ storage/new\n");
  CHECK(fs.computations() == 2);
}
