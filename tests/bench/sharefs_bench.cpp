// sharefs_bench: a share of hoody-sharefs against the same directory reached
// other ways, all in the same run on the same BTRFS loop image (issue 8 item 8):
//
//   native          c1's storage/data itself
//   bind            a bind mount of storage/data (the reference for reads)
//   bindfs          Debian's bindfs 1.14.7 --multithreaded (libfuse 2)
//   passthrough_ll  libfuse 3.14's lowlevel example, cache=always
//   dbfs            hoody-dbfs on storage/data: the same passthrough core
//                   without the share layer (no roots, no revoke check)
//   sharefs         hoody-sharefs for c2, the share MNT/data (c1:data, rw)
//   sharefs-nocheck the same, started with HOODY_BENCH_NO_REVOKE_CHECK=1
//   sharefs-2k      the same share in a pool whose registry holds 2000 more
//                   shares (offered, accepted, revoked; 50 containers): a
//                   second pool dir whose c1 storage is a bind mount of the
//                   first's, so the data and page cache are the same
//
// Workloads (HOODY_BENCH_ROUNDS rounds, default 5; all candidates mounted at
// once and run in turn, rotated each round; the ratio to bind is taken per
// round and its median printed, so that a busy machine's load, which drifts
// over minutes, falls on both sides of a ratio):
//   seq read cold   1 MiB reads of a 1 GiB file, page cache dropped for the
//                   file first (posix_fadvise DONTNEED on the backing file
//                   and on the candidate's fd): target >= 0.9x bind
//   seq read hot    the same file again, all cached
//   cached 4k rand  pread 4 KiB at random offsets of a cached 128 MiB file:
//                   target >= 0.95x bind
//   find 50k        `find DIR -printf '%s'` (a stat per entry) over 50 000
//                   files in 100 dirs, the first run after the mount (the
//                   backing dentries are warm for all), and again: target:
//                   sharefs at least as fast as bindfs and passthrough_ll
//                   (0 = find failed: passthrough_ll holds an fd per inode
//                   and hits RLIMIT_NOFILE when it cannot be raised)
//   find 15k        the same over 15 000 files (fits under a 20000 fd limit)
//   open+read+close 4 KiB files, 2000 of them, cached: every open reaches
//                   the daemon (where a revoke check must run)
//   O_DIRECT 4k     random 4 KiB O_DIRECT preads: every read reaches the daemon
//
// HOODY_BENCH_FUSE_RA_KB=N sets the FUSE mounts' readahead window (KiB);
// HOODY_BENCH_ONLY=sharefs,dbfs keeps some candidates (and bind);
// HOODY_BENCH_LOADS=find keeps the workloads whose name holds "find";
// HOODY_BENCH_HOODY_OPTS=io=uring,max_threads=2 adds -o options to the hoody
// daemons (dbfs, sharefs, sharefs-2k).
//
// The revoke check's cost: sharefs-nocheck is the same daemon started with
// HOODY_BENCH_NO_REVOKE_CHECK=1 (read once at start: the core's check()
// skips the removed-root test); sharefs/sharefs-nocheck is the check's cost
// on the cached read path (pread on an open fd whose pages are cached: no
// request reaches the daemon at all) and where every request reaches the
// daemon (open+read+close, O_DIRECT reads).  The gap sharefs/dbfs bounds the
// whole share layer's cost (routing plus check) from above, and
// sharefs-2k/sharefs shows whether the check grows with the registry.
// Timings of requests that reach the daemon are noisy on a busy machine, so
// the check is also counted in instructions, which repeat: hoody-dbfs (the
// same core check()) under valgrind's callgrind with and without the check
// over a fixed workload (callgrind_dbfs; HOODY_BENCH_LOADS=revoke runs only
// this).
//
// The summary prints every target of item 8 with its value and MET or NOT
// MET, and each candidate's value in every round.  Not a timed test: it
// prints, it never fails on speed.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"
#include "share/registry.hpp"

using namespace hoody::test;
using Clock = std::chrono::steady_clock;

namespace {

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

int env_int(const char* name, int dflt) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : dflt;
}

constexpr size_t kBig = 1ull << 30;
constexpr size_t kRand = 128u << 20;
constexpr int kFindDirs = 100, kFindPerDir = 500;
constexpr int kSmall = 2000;

void fill(const std::string& path, size_t size) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  std::vector<char> chunk(1 << 20);
  std::mt19937_64 rng(1);
  for (auto& c : chunk) c = static_cast<char>(rng());
  for (size_t off = 0; off < size; off += chunk.size())
    REQUIRE(::pwrite(fd, chunk.data(), std::min(chunk.size(), size - off), static_cast<off_t>(off)) > 0);
  ::fsync(fd);
  ::close(fd);
}

void drop_file_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

// ---- workloads: each returns a rate (higher is better) --------------------

double seq_read(const std::string& dir, const std::string& backing_file, bool cold) {
  std::string p = dir + "/big.dat";
  if (cold) drop_file_cache(backing_file);
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  if (cold) ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  std::vector<char> buf(1 << 20);
  size_t total = 0;
  auto t0 = Clock::now();
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    REQUIRE(n >= 0);
    if (n == 0) break;
    total += static_cast<size_t>(n);
  }
  double mbs = static_cast<double>(total >> 20) / seconds_since(t0);
  ::close(fd);
  REQUIRE(total == kBig);
  return mbs;
}

double cached_random_read(const std::string& dir) {
  int fd = ::open((dir + "/rr.dat").c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  std::vector<char> buf(1 << 20);
  for (size_t off = 0; off < kRand; off += buf.size())  // warm through this path
    REQUIRE(::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off)) > 0);
  std::mt19937_64 rng(42);
  size_t ops = 0;
  auto t0 = Clock::now();
  while (seconds_since(t0) < 1.0) {
    for (int i = 0; i < 1000; ++i) {
      off_t off = static_cast<off_t>((rng() % (kRand / 4096)) * 4096);
      if (::pread(fd, buf.data(), 4096, off) != 4096) std::abort();
    }
    ops += 1000;
  }
  double r = static_cast<double>(ops) / seconds_since(t0);
  ::close(fd);
  return r;
}

double direct_random_read(const std::string& dir) {
  int fd = ::open((dir + "/rr.dat").c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return 0;  // the candidate does not do O_DIRECT
  void* buf = nullptr;
  REQUIRE(::posix_memalign(&buf, 4096, 4096) == 0);
  std::mt19937_64 rng(43);
  size_t ops = 0;
  auto t0 = Clock::now();
  while (seconds_since(t0) < 1.0) {
    for (int i = 0; i < 200; ++i) {
      off_t off = static_cast<off_t>((rng() % (kRand / 4096)) * 4096);
      if (::pread(fd, buf, 4096, off) != 4096) {
        std::free(buf);
        ::close(fd);
        return 0;
      }
    }
    ops += 200;
  }
  double r = static_cast<double>(ops) / seconds_since(t0);
  std::free(buf);
  ::close(fd);
  return r;
}

double open_read_close(const std::string& dir) {
  char b[4096];
  auto pass = [&] {
    for (int i = 0; i < kSmall; ++i) {
      std::string p = dir + "/small/s" + std::to_string(i);
      int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0 || ::read(fd, b, sizeof b) != 4096) return false;
      ::close(fd);
    }
    return true;
  };
  if (!pass()) return 0;  // warm
  auto t0 = Clock::now();
  int passes = 0;
  while (seconds_since(t0) < 1.0) {
    if (!pass()) return 0;
    ++passes;
  }
  return passes * kSmall / seconds_since(t0);
}

// `find` over TREE (dirs x files): entries per second, or 0 when find
// failed (passthrough_ll keeps an fd per inode and runs out of them past
// RLIMIT_NOFILE: 20000 on this machine, without CAP_SYS_RESOURCE to raise it).
double find_files(const std::string& dir, const std::string& tree, int dirs, int files) {
  auto t0 = Clock::now();
  auto r = run({"sh", "-c", "find '" + dir + "/" + tree + "' -printf '%s\\n' 2>/tmp/.sharefs-bench-find.err | wc -l; "
                "head -c 300 /tmp/.sharefs-bench-find.err; rm -f /tmp/.sharefs-bench-find.err"}, 300s);
  double s = seconds_since(t0);
  REQUIRE_MESSAGE(r.ok(), r.describe());
  long n = std::atol(r.output.c_str());
  if (n != static_cast<long>(dirs) * files + dirs + 1) {
    std::printf("  find in %s saw %ld entries of %d: %s\n", dir.c_str(), n, dirs * files + dirs + 1,
                r.output.substr(r.output.find('\n') + 1, 200).c_str());
    return 0;
  }
  return static_cast<double>(n) / s;
}

void make_tree(const std::string& root, int dirs, int files) {
  REQUIRE(::mkdir(root.c_str(), 0755) == 0);
  for (int d = 0; d < dirs; ++d) {
    std::string dd = root + "/d" + std::to_string(d);
    REQUIRE(::mkdir(dd.c_str(), 0755) == 0);
    for (int f = 0; f < files; ++f) {
      int fd = ::open((dd + "/f" + std::to_string(f)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      REQUIRE(fd >= 0);
      ::close(fd);
    }
  }
}

struct Workload {
  const char* name;
  const char* unit;
  std::function<double(const std::string& dir, const std::string& backing)> run;
};

struct Candidate {
  std::string name;
  // Mount it; returns the dir to work in.  Empty function: native.
  std::function<std::string()> up;
  std::function<void()> down;
};

std::string build_passthrough_ll(const std::string& out_dir) {
  const std::string src = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c";
  if (::access(src.c_str(), R_OK) != 0) return "";
  std::string bin = out_dir + "/passthrough_ll";
  auto r = run({"sh", "-c", "cc -O2 -o " + bin + " " + src + " $(pkg-config fuse3 --cflags --libs)"},
               120s);
  return r.ok() ? bin : "";
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// HOODY_BENCH_FUSE_RA_KB=N: the FUSE mount's readahead (its bdi's
// read_ahead_kb, 128 by default whatever the daemon asks) set to N KiB after
// the mount: what the cold sequential read gains from a larger window.
void set_fuse_readahead(const std::string& mnt) {
  const char* kb = std::getenv("HOODY_BENCH_FUSE_RA_KB");
  if (!kb) return;
  struct stat st;
  if (::stat(mnt.c_str(), &st) < 0) return;
  std::string path = "/sys/class/bdi/" + std::to_string(major(st.st_dev)) + ":" +
                     std::to_string(minor(st.st_dev)) + "/read_ahead_kb";
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0 || ::write(fd, kb, std::strlen(kb)) < 0) std::printf("note: cannot set %s\n", path.c_str());
  if (fd >= 0) ::close(fd);
}

std::string shm_name(const std::string& pool) {
  struct stat st;
  if (::stat(pool.c_str(), &st) < 0) return "";
  return "/hoody-shares-" + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino);
}

// A pool dir with containers c1 (c1's storage is `storage`, bound there when
// it is not already the pool's own) and c2, and c1:data shared rw to c2;
// `extra` more shares around it.
void make_registry(const std::string& pool, int extra) {
  std::string why;
  auto reg = hoody::sharefs::Registry::open(pool, &why);
  REQUIRE_MESSAGE(reg.ok(), why);
  REQUIRE_MESSAGE(reg->add_container("c1", "p", &why).ok(), why);
  REQUIRE_MESSAGE(reg->add_container("c2", "p", &why).ok(), why);
  using hoody::sharefs::Mode;
  for (int i = 0; i < extra / 40 && i < 48; ++i)
    REQUIRE_MESSAGE(reg->add_container("x" + std::to_string(i), "p", &why).ok(), why);
  for (int i = 0; i < extra; ++i) {
    std::string name = "e" + std::to_string(i);
    bool to_c2 = i % 2 == 0;
    auto o = reg->offer({.from = "c1", .source = "extra/" + std::to_string(i % 100), .to_container = to_c2 ? "c2" : "x" + std::to_string(i % 48),
                         .to_project = "", .mode = i % 3 ? Mode::ro : Mode::rw, .name = name},
                        &why);
    REQUIRE_MESSAGE(o.ok(), why);
    if (to_c2 && i % 4 == 0) REQUIRE_MESSAGE(reg->accept("c2", name, &why).ok(), why);
    if (i % 5 == 1) REQUIRE_MESSAGE(reg->revoke("c1", name, &why).ok(), why);
  }
  REQUIRE_MESSAGE(reg->offer({.from = "c1", .source = "data", .to_container = "c2", .to_project = "",
                              .mode = Mode::rw, .name = "data"},
                             &why)
                      .ok(),
                  why);
  REQUIRE_MESSAGE(reg->accept("c2", "data", &why).ok(), why);
}

// The revoke check's cost in instructions, repeatable where timings are not:
// hoody-dbfs (the same core and the same check(); valgrind 3.19 has no
// openat2, which hoody-sharefs needs to open a share) under callgrind, once
// with the check and once with HOODY_BENCH_NO_REVOKE_CHECK=1, over a fixed
// workload: 2000 O_DIRECT 4 KiB reads and 300 open+read4k+close.  Counted
// inside the request handlers only (--toggle-collect: the ops' entry
// points), so the watcher and the daemon's start do not blur it; kernel time
// is not counted, so the share is an upper bound of the check's share of a
// request's whole cost.
struct CallgrindCount {
  double total = 0;  // instructions in the request handlers
  double check = 0;  // of which in PassthroughFs::check (inclusive)
};

double number_at_line_start(const std::string& line) {
  std::string digits;
  for (char c : line) {
    if (c == ',' || c == ' ') continue;
    if (c < '0' || c > '9') break;
    digits += c;
  }
  return digits.empty() ? 0 : std::atof(digits.c_str());
}

CallgrindCount callgrind_dbfs(const std::string& valgrind, const std::string& dbfs, const std::string& data,
                              const std::string& mnt, const std::string& work_dir, bool nocheck) {
  const std::string out = work_dir + (nocheck ? "/callgrind.nocheck.out" : "/callgrind.check.out");
  std::vector<std::string> argv = {"env", std::string("HOODY_BENCH_NO_REVOKE_CHECK=") + (nocheck ? "1" : "0"),
                                   valgrind, "--tool=callgrind", "--toggle-collect=*::op_*",
                                   "--callgrind-out-file=" + out, dbfs, "-f", "-o", "allow_other", data, mnt};
  {
    Daemon d(argv, mnt, work_dir + (nocheck ? "/callgrind.nocheck.log" : "/callgrind.check.log"),
             Daemon::Options{std::chrono::seconds(60), std::chrono::seconds(60)});
    int fd = ::open((mnt + "/rr.dat").c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    REQUIRE(fd >= 0);
    void* buf = nullptr;
    REQUIRE(::posix_memalign(&buf, 4096, 4096) == 0);
    std::mt19937_64 rng(44);
    for (int i = 0; i < 2000; ++i)
      REQUIRE(::pread(fd, buf, 4096, static_cast<off_t>((rng() % (kRand / 4096)) * 4096)) == 4096);
    std::free(buf);
    ::close(fd);
    char b[4096];
    for (int i = 0; i < 300; ++i) {
      int f = ::open((mnt + "/small/s" + std::to_string(i)).c_str(), O_RDONLY | O_CLOEXEC);
      REQUIRE(f >= 0);
      REQUIRE(::read(f, b, sizeof b) == 4096);
      ::close(f);
    }
    d.stop();  // callgrind writes its counts as the daemon exits
  }
  auto r = run({"callgrind_annotate", "--inclusive=yes", "--threshold=100", out}, 120s);
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CallgrindCount c;
  size_t pos = 0;
  while (pos < r.output.size()) {
    size_t end = r.output.find('\n', pos);
    if (end == std::string::npos) end = r.output.size();
    std::string line = r.output.substr(pos, end - pos);
    pos = end + 1;
    if (line.find("PROGRAM TOTALS") != std::string::npos) c.total = number_at_line_start(line);
    // The function's summary line (demangled: "fuse_req*"), not its
    // annotated source line ("fuse_req_t req").
    else if (c.check == 0 && line.find("PassthroughFs::check(fuse_req*") != std::string::npos)
      c.check = number_at_line_start(line);
  }
  return c;
}

}  // namespace

TEST_CASE("sharefs_bench: a share vs a bind mount, bindfs, passthrough_ll and hoody-dbfs") {
  require_mount_capabilities();
  // passthrough_ll (and a passthrough core) keeps an O_PATH fd per inode:
  // 50k files need more than a default limit.  Raise the soft limit to the
  // hard one (and the hard one where CAP_SYS_RESOURCE allows); the daemons
  // inherit it.  "find 15k" fits under a 20000 limit.
  struct rlimit rl;
  ::getrlimit(RLIMIT_NOFILE, &rl);
  struct rlimit want = {262144, 262144};
  if (::setrlimit(RLIMIT_NOFILE, &want) != 0) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  ::getrlimit(RLIMIT_NOFILE, &rl);
  std::printf("RLIMIT_NOFILE for the daemons: %llu\n", static_cast<unsigned long long>(rl.rlim_cur));
  const char* sharefs = std::getenv("HOODY_SHAREFS");
  const char* dbfs = std::getenv("HOODY_DBFS");
  REQUIRE_MESSAGE(sharefs, "HOODY_SHAREFS must name the hoody-sharefs binary");
  BtrfsPool pool(BtrfsPool::Options{6ull << 30});
  const std::string P = pool.path();
  pool.make_dir("containers");
  pool.make_dir("containers/c1");
  pool.make_dir("containers/c2");
  const std::string storage = pool.make_subvolume("containers/c1/storage");
  pool.make_subvolume("containers/c2/storage");
  const std::string data = pool.make_dir("containers/c1/storage/data");
  pool.make_dir("containers/c1/storage/extra");
  for (int i = 0; i < 100; ++i) pool.make_dir("containers/c1/storage/extra/" + std::to_string(i));

  std::printf("sharefs_bench: writing 1 GiB, 128 MiB, %d small files, %d files for find...\n", kSmall,
              kFindDirs * kFindPerDir);
  std::fflush(stdout);
  fill(data + "/big.dat", kBig);
  fill(data + "/rr.dat", kRand);
  pool.make_dir("containers/c1/storage/data/small");
  {
    std::string block(4096, 's');
    for (int i = 0; i < kSmall; ++i) {
      int fd = ::open((data + "/small/s" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      REQUIRE(::write(fd, block.data(), block.size()) == 4096);
      ::close(fd);
    }
  }
  make_tree(data + "/tree", kFindDirs, kFindPerDir);
  make_tree(data + "/tree15k", 30, kFindPerDir);
  ::sync();

  // Pools: P itself (few shares) and P/pool2k (2000 more; c1's storage bound in).
  make_registry(P, 0);
  const std::string P2 = pool.make_dir("pool2k");
  pool.make_dir("pool2k/containers");
  pool.make_dir("pool2k/containers/c1");
  pool.make_dir("pool2k/containers/c2");
  pool.make_dir("pool2k/containers/c1/storage");
  pool.make_dir("pool2k/containers/c2/storage");
  auto bind2 = register_resource(Resource::mount, P2 + "/containers/c1/storage");
  REQUIRE(::mount(storage.c_str(), (P2 + "/containers/c1/storage").c_str(), nullptr, MS_BIND, nullptr) == 0);
  make_registry(P2, 2000);

  const std::string ll = build_passthrough_ll(pool.dir());
  const std::string bindfs = find_tool("bindfs");
  // Every candidate has its own mountpoint and stays mounted: the
  // workloads run interleaved, one short run per candidate in turn, so that
  // the load of a busy machine falls on all of them alike; a ratio is taken
  // per round against bind's run of the same round, and the median printed.
  std::vector<Candidate> cands;
  std::vector<std::unique_ptr<Daemon>> daemons;
  cands.push_back({"native", [&] { return data; }, [] {}});
  const std::string bind_mnt = pool.make_temp_dir("mnt-bind");
  uint64_t bind_id = register_resource(Resource::mount, bind_mnt);
  REQUIRE(::mount(data.c_str(), bind_mnt.c_str(), nullptr, MS_BIND, nullptr) == 0);
  cands.push_back({"bind", [&] { return bind_mnt; }, [] {}});
  auto daemon = [&](std::string name, std::function<std::vector<std::string>(const std::string&)> argv,
                    std::string sub) {
    std::string mnt = pool.make_temp_dir("mnt-" + name);
    size_t i = daemons.size();
    daemons.emplace_back();
    // up(): mounts it if it is not mounted; down(): unmounts it.
    return Candidate{name,
                     [&, i, name, argv, sub, mnt] {
                       if (!daemons[i]) {
                         daemons[i] = std::make_unique<Daemon>(argv(mnt), mnt, pool.dir() + "/" + name + ".log");
                         set_fuse_readahead(mnt);
                       }
                       return mnt + sub;
                     },
                     [&, i] { daemons[i].reset(); }};
  };
  if (!bindfs.empty())
    cands.push_back(daemon("bindfs", [&](auto& m) { return std::vector<std::string>{bindfs, "-f", "--multithreaded", data, m}; }, ""));
  if (!ll.empty())
    cands.push_back(daemon("passthrough_ll", [&](auto& m) {
      return std::vector<std::string>{ll, "-f", "-o", "source=" + data + ",cache=always", m};
    }, ""));
  // HOODY_BENCH_HOODY_OPTS=a,b: more -o options for the hoody daemons.
  const std::string more = std::getenv("HOODY_BENCH_HOODY_OPTS") ? std::getenv("HOODY_BENCH_HOODY_OPTS") : "";
  auto with_more = [&](std::string o) { return more.empty() ? o : o + "," + more; };
  if (dbfs) cands.push_back(daemon("dbfs", [&](auto& m) {
    return std::vector<std::string>{dbfs, "-f", "-o", with_more("allow_other"), data, m};
  }, ""));
  cands.push_back(daemon("sharefs", [&](auto& m) {
    return std::vector<std::string>{sharefs, "-f", "-o", with_more("container=c2,registry=" + P + "/shares.db"), P, m};
  }, "/data"));
  // The same daemon with the revoke check switched off (a benchmark switch
  // read once at start): sharefs/sharefs-nocheck is the check's cost.
  cands.push_back(daemon("sharefs-nocheck", [&](auto& m) {
    return std::vector<std::string>{"env", "HOODY_BENCH_NO_REVOKE_CHECK=1", sharefs, "-f", "-o",
                                    with_more("container=c2,registry=" + P + "/shares.db"), P, m};
  }, "/data"));
  cands.push_back(daemon("sharefs-2k", [&](auto& m) {
    return std::vector<std::string>{sharefs, "-f", "-o", with_more("container=c2,registry=" + P2 + "/shares.db"), P2, m};
  }, "/data"));

  const std::string big_backing = data + "/big.dat";
  // Interleaved (all mounted).
  std::vector<Workload> loads = {
      {"seq read cold", "MB/s", [&](auto& dir, auto&) { return seq_read(dir, big_backing, true); }},
      {"seq read hot", "MB/s", [&](auto& dir, auto&) { return seq_read(dir, big_backing, false); }},
      {"cached 4k rand read", "IOPS", [](auto& dir, auto&) { return cached_random_read(dir); }},
      {"open+read4k+close", "files/s", [](auto& dir, auto&) { return open_read_close(dir); }},
      {"O_DIRECT 4k rand", "IOPS", [](auto& dir, auto&) { return direct_random_read(dir); }},
  };
  // Per fresh mount, in this order (passthrough_ll runs out of fds over 50k
  // files and then fails everything until it is unmounted).
  std::vector<Workload> finds = {
      {"find 15k (first)", "ent/s", [](auto& dir, auto&) { return find_files(dir, "tree15k", 30, kFindPerDir); }},
      {"find 50k (first)", "ent/s", [](auto& dir, auto&) { return find_files(dir, "tree", kFindDirs, kFindPerDir); }},
      {"find 50k (again)", "ent/s", [](auto& dir, auto&) { return find_files(dir, "tree", kFindDirs, kFindPerDir); }},
  };

  // HOODY_BENCH_ONLY=a,b: only these candidates (bind is always kept: the reference).
  if (const char* only = std::getenv("HOODY_BENCH_ONLY")) {
    std::string keep = std::string(",") + only + ",bind,";
    std::erase_if(cands, [&](const Candidate& c) { return keep.find("," + c.name + ",") == std::string::npos; });
  }
  // HOODY_BENCH_LOADS=substring: only the workloads whose name holds it.
  if (const char* l = std::getenv("HOODY_BENCH_LOADS")) {
    auto drop = [&](const Workload& w) { return std::string(w.name).find(l) == std::string::npos; };
    std::erase_if(loads, drop);
    std::erase_if(finds, drop);
  }
  const int rounds = env_int("HOODY_BENCH_ROUNDS", 5);
  std::map<std::string, std::map<std::string, std::vector<double>>> results;  // [workload][cand][round]
  for (auto& c : cands) c.up();
  for (auto& w : loads)
    for (int round = 0; round < rounds; ++round)
      for (size_t k = 0; k < cands.size(); ++k) {
        auto& c = cands[(k + static_cast<size_t>(round)) % cands.size()];
        results[w.name][c.name].push_back(w.run(c.up(), data));
      }
  for (int round = 0; round < rounds && !finds.empty(); ++round)
    for (size_t k = 0; k < cands.size(); ++k) {
      auto& c = cands[(k + static_cast<size_t>(round)) % cands.size()];
      c.down();
      std::string dir = c.up();
      for (auto& w : finds) results[w.name][c.name].push_back(w.run(dir, data));
    }
  for (auto& c : cands) c.down();
  ::umount2(bind_mnt.c_str(), MNT_DETACH);
  release(bind_id);
  loads.insert(loads.end(), finds.begin(), finds.end());

  // The median of per-round ratios a/b (rounds where b ran: b > 0).
  auto ratio = [&](const std::string& w, const std::string& a, const std::string& b) {
    auto& x = results[w][a];
    auto& y = results[w][b];
    std::vector<double> r;
    for (size_t i = 0; i < x.size() && i < y.size(); ++i)
      if (y[i] > 0) r.push_back(x[i] / y[i]);
    return median(r);
  };
  std::printf("\nsharefs_bench: %d rounds on a BTRFS loop image; median value, and in () the median of "
              "the per-round ratios to bind\n", rounds);
  std::printf("%-20s", "workload");
  for (auto& c : cands) std::printf(" %22s", c.name.c_str());
  std::printf("\n");
  for (auto& w : loads) {
    std::printf("%-20s", w.name);
    for (auto& c : cands) {
      char cell[64];
      std::snprintf(cell, sizeof cell, "%.0f %s (%.2fx)", median(results[w.name][c.name]), w.unit,
                    ratio(w.name, c.name, "bind"));
      std::printf(" %22s", cell);
    }
    std::printf("\n");
  }
  std::printf("\nper round (in the order run):\n");
  for (auto& w : loads) {
    for (auto& c : cands) {
      std::printf("  %-20s %-16s", w.name, c.name.c_str());
      for (double v : results[w.name][c.name]) std::printf(" %9.0f", v);
      std::printf("\n");
    }
  }
  // The revoke check in instructions (see callgrind_dbfs), unless
  // HOODY_BENCH_LOADS leaves it out or valgrind or hoody-dbfs is missing.
  const char* lf = std::getenv("HOODY_BENCH_LOADS");
  const std::string valgrind = find_tool("valgrind");
  bool want_cg = (!lf || std::string("revoke check (callgrind)").find(lf) != std::string::npos);
  CallgrindCount cg_on, cg_off;
  std::string cg_note;
  if (!want_cg) cg_note = "not run (HOODY_BENCH_LOADS)";
  else if (valgrind.empty() || find_tool("callgrind_annotate").empty()) cg_note = "not run (no valgrind)";
  else if (!dbfs) cg_note = "not run (HOODY_DBFS unset)";
  else {
    const std::string mnt = pool.make_temp_dir("mnt-callgrind");
    cg_on = callgrind_dbfs(valgrind, dbfs, data, mnt, pool.dir(), false);
    cg_off = callgrind_dbfs(valgrind, dbfs, data, mnt, pool.dir(), true);
    if (cg_on.total <= 0 || cg_on.check <= 0 || cg_off.check <= 0)
      cg_note = "callgrind gave no counts (see " + pool.dir() + "/callgrind.*.log)";
  }

  // Every target with its value and whether it is met (never a failure:
  // this is not a timed test).
  auto has = [&](const std::string& w, const std::string& c) {
    auto it = results.find(w);
    return it != results.end() && it->second.count(c) && !it->second.at(c).empty();
  };
  auto target = [&](const char* what, const std::string& w, const std::string& a, const std::string& b,
                    double want) {
    if (!has(w, a) || !has(w, b)) {
      std::printf("  %-46s not run\n", what);
      return;
    }
    double v = ratio(w, a, b);
    if (v <= 0) {
      std::printf("  %-46s n/a: %s failed this walk in every round (out of fds)\n", what, b.c_str());
      return;
    }
    std::printf("  %-46s %6.3f  target >= %.2f  %s\n", what, v, want, v >= want ? "MET" : "NOT MET");
  };
  std::printf("\ntargets (issue 8 item 8): medians of the per-round ratios over %d rounds\n", rounds);
  target("seq read cold: sharefs/bind", "seq read cold", "sharefs", "bind", 0.90);
  target("seq read hot: sharefs/bind", "seq read hot", "sharefs", "bind", 0.90);
  target("cached 4k rand read: sharefs/bind", "cached 4k rand read", "sharefs", "bind", 0.95);
  for (const char* f : {"find 15k (first)", "find 50k (first)", "find 50k (again)"}) {
    target((std::string(f) + ": sharefs/bindfs").c_str(), f, "sharefs", "bindfs", 1.00);
    target((std::string(f) + ": sharefs/passthrough_ll").c_str(), f, "sharefs", "passthrough_ll", 1.00);
  }
  std::printf("the revoke check costs < 2%% (sharefs with it / sharefs-nocheck, the same daemon without it):\n");
  target("cached 4k rand read: sharefs/sharefs-nocheck", "cached 4k rand read", "sharefs", "sharefs-nocheck", 0.98);
  target("open+read4k+close: sharefs/sharefs-nocheck", "open+read4k+close", "sharefs", "sharefs-nocheck", 0.98);
  target("O_DIRECT 4k rand: sharefs/sharefs-nocheck", "O_DIRECT 4k rand", "sharefs", "sharefs-nocheck", 0.98);
  if (cg_note.empty()) {
    // The check's own instructions with and without the revoke test, as a
    // share of all instructions in the request handlers.
    double cost = (cg_on.check - cg_off.check) / cg_on.total;
    std::printf("  %-46s %6.3f%% of the request handlers' instructions (check() %.0f Ir with the test, "
                "%.0f without, of %.0f; hoody-dbfs under callgrind, 2000 O_DIRECT reads + 300 "
                "open+read+close; whole check() incl. policy: %.2f%%)  target < 2%%  %s\n",
                "revoke check, instructions (callgrind):", 100 * cost, cg_on.check, cg_off.check, cg_on.total,
                100 * cg_on.check / cg_on.total, cost < 0.02 ? "MET" : "NOT MET");
  } else {
    std::printf("  %-46s %s\n", "revoke check, instructions (callgrind):", cg_note.c_str());
  }
  std::printf("the share layer (requests that reach the daemon; on the cached path none do):\n");
  for (const char* w : {"open+read4k+close", "O_DIRECT 4k rand"}) {
    if (!has(w, "sharefs")) continue;
    std::printf("  %-18s sharefs/dbfs %.3f (the share layer against the same core without it)  "
                "sharefs-2k/sharefs %.3f (2000 more shares)\n",
                w, ratio(w, "sharefs", "dbfs"), ratio(w, "sharefs-2k", "sharefs"));
  }
  std::fflush(stdout);

  ::umount2((P2 + "/containers/c1/storage").c_str(), MNT_DETACH);
  release(bind2);
  for (auto& p : {P, P2}) ::shm_unlink(shm_name(p).c_str());
}
