// Tests of the integration rig itself: the guard, BtrfsPool, Daemon and the
// process helpers.  The cases marked skip() exist to prove the guard's
// cleanup by hand (run with --no-skip -tc='guard*'); see the report in git log.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <fstream>
#include <sstream>
#include <thread>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

TEST_CASE("run captures output and exit codes") {
  auto ok = run({"sh", "-c", "echo out; echo err >&2; exit 3"});
  CHECK(ok.exit_code == 3);
  CHECK(ok.output == "out\nerr\n");
  auto missing = run({"/nonexistent/program"});
  CHECK(missing.exit_code == 127);
  auto slow = run({"sleep", "10"}, 200ms);
  CHECK(slow.timed_out);
  CHECK(slow.signal == SIGKILL);
}

TEST_CASE("run_child runs a lambda, optionally as nobody") {
  auto e = run_child([] {
    std::printf("pid %d\n", ::getpid());
    return 7;
  });
  CHECK(e.exit_code == 7);
  CHECK(e.output.rfind("pid ", 0) == 0);
  require_root();
  auto n = run_child([] { return ::geteuid() == kNobodyUid && ::getegid() == kNobodyGid ? 0 : 1; },
                     {.as_nobody = true});
  CHECK(n.exit_code == 0);
  auto crash = run_child([]() -> int { ::raise(SIGSEGV); return 0; });
  CHECK(crash.signal == SIGSEGV);
}

TEST_CASE("BtrfsPool and Daemon: mount, use, clean up") {
  require_mount_capabilities();
  std::string pool_dir, mnt, loop;
  {
    BtrfsPool pool;
    pool_dir = pool.dir();
    loop = pool.loop_device();
    CHECK(is_mounted(pool.path(), "btrfs"));
    auto src = pool.make_subvolume("databases");
    mnt = pool.make_temp_dir("mnt");
    {
      Daemon d(dbfs_argv(src, mnt), mnt, pool.dir() + "/daemon.log");
      CHECK(is_mounted(mnt, "fuse"));
      std::ofstream(mnt + "/hello") << "world";
      CHECK(slurp(src + "/hello") == "world");
    }
    CHECK_FALSE(is_mounted(mnt));
  }
  CHECK_FALSE(is_mounted(pool_dir + "/pool"));
  CHECK(::access(pool_dir.c_str(), F_OK) != 0);
  CHECK(run({find_tool("losetup"), "-j", pool_dir + "/pool.img"}).output.empty());
}

TEST_CASE("Daemon reports a daemon that exits before mounting, with its log") {
  require_mount_capabilities();
  BtrfsPool pool;
  auto mnt = pool.make_temp_dir("mnt");
  try {
    Daemon d({"sh", "-c", "echo cannot start: no such thing >&2; exit 2"}, mnt,
             pool.dir() + "/daemon.log");
    FAIL("Daemon did not throw");
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    CHECK(msg.find("exit 2") != std::string::npos);
    CHECK(msg.find("cannot start: no such thing") != std::string::npos);
  }
}

// --- Hand-run proofs of the guard (skipped by default) ---------------------
// HOODY_TEST_TIMEOUT=5 build/tests/integration/integration-rig --no-skip -tc='guard: hang*'
namespace {
struct Mounted {
  BtrfsPool pool;
  std::string mnt = pool.make_temp_dir("mnt");
  std::string src = pool.make_dir("src");
  Daemon daemon{dbfs_argv(src, mnt), mnt, pool.dir() + "/daemon.log"};
};
}  // namespace

TEST_CASE("guard: failing check prints the daemon log" * doctest::skip()) {
  require_mount_capabilities();
  Mounted m;
  CHECK_MESSAGE(false, "deliberate failure");
}

TEST_CASE("guard: crash leaves cleanup to the guard" * doctest::skip()) {
  require_mount_capabilities();
  Mounted m;
  std::fflush(nullptr);
  ::raise(SIGSEGV);
}

TEST_CASE("guard: hang until the deadline or SIGTERM" * doctest::skip()) {
  require_mount_capabilities();
  Mounted m;
  std::fprintf(stderr, "hanging with %s mounted\n", m.mnt.c_str());
  std::fflush(nullptr);
  for (;;) std::this_thread::sleep_for(1s);
}

TEST_CASE("cleanup_registry undoes unreleased resources newest first, skips released ones") {
  require_root();
  const std::string base = session_dir() + "/registry-test";
  REQUIRE(::mkdir(base.c_str(), 0755) == 0);
  const std::string kept = base + "/kept", gone = base + "/gone";
  REQUIRE(::mkdir(kept.c_str(), 0755) == 0);
  REQUIRE(::mkdir(gone.c_str(), 0755) == 0);
  Child sleeper([] {
    ::pause();
    return 0;
  });
  std::string start = slurp("/proc/" + std::to_string(sleeper.pid()) + "/stat");
  auto paren = start.rfind(')');
  std::istringstream ss(start.substr(paren + 2));
  std::string field;
  for (int i = 3; i <= 22; ++i) ss >> field;
  {
    std::ofstream reg(base + "/registry");
    reg << "+1 dir " << gone << "\n"
        << "+2 dir " << kept << "\n-2\n"
        << "+3 pid " << sleeper.pid() << " " << field << "\n"
        << "+4 pid " << ::getpid() << " 1\n"  // wrong start time: must not be killed
        << "+5 loop_image " << base << "/no-such.img\n"
        << "+6 fuse_mount " << base << "/not-mounted\n";
  }
  cleanup_registry(base + "/registry", false);
  CHECK(::access(gone.c_str(), F_OK) != 0);
  CHECK(::access(kept.c_str(), F_OK) == 0);
  ExitInfo e = sleeper.wait();
  CHECK(e.signal == SIGKILL);
}

TEST_CASE("a missing capability skips (77), or fails under CI=true") {
  require_root();
  auto probe = [](const char* ci) {
    return run_child(
        [ci] {
          ::setenv("CI", ci, 1);
          require_root();
          return 0;
        },
        {.as_nobody = true});
  };
  ExitInfo skip = probe("false");
  CHECK(skip.exit_code == 77);
  CHECK(skip.output.find("SKIP: missing capability: root") != std::string::npos);
  ExitInfo fail = probe("true");
  CHECK(fail.exit_code != 0);
  CHECK(fail.exit_code != 77);
}

// The example of tests/integration/README.md, verbatim.
TEST_CASE("a file written through the mount lands in the backing subvolume") {
  require_mount_capabilities();                 // skip (77), or fail under CI=true
  BtrfsPool pool;                               // loop image, mkfs.btrfs, mount
  auto src = pool.make_subvolume("databases");
  auto mnt = pool.make_temp_dir("mnt");
  Daemon d(dbfs_argv(src, mnt), mnt, pool.dir() + "/daemon.log");  // waits for the mount
  auto e = run_child([&] { return ::mkdir((mnt + "/x").c_str(), 0755); }, {.as_nobody = true});
  CHECK(e.exit_code != 0);                      // nobody may not write a 0755 root dir
}

// --- The guard proved automatically: this binary runs itself -------------
namespace {

// Everything a nested run made under `base`: mounts, loop devices, dirs.
std::string leftovers(const std::string& base) {
  std::string out;
  std::istringstream mi(slurp("/proc/self/mountinfo"));
  for (std::string line; std::getline(mi, line);)
    if (line.find(base) != std::string::npos) out += "mount: " + line + "\n";
  std::istringstream lo(run({find_tool("losetup"), "-a"}).output);
  for (std::string line; std::getline(lo, line);)
    if (line.find(base) != std::string::npos) out += "loop: " + line + "\n";
  std::istringstream ls(run({"sh", "-c", "ls -d '" + base + "'/hoody-it.* 2>/dev/null"}).output);
  for (std::string line; std::getline(ls, line);) out += "dir: " + line + "\n";
  return out;
}

// Run this binary's guard on one skipped "guard:" case, in its own process
// group, with its session dir under a fresh `base`.
Child run_self(const std::string& base, const std::string& test_case, const char* timeout) {
  return Child(
      [=] {
        ::setpgid(0, 0);
        ::unsetenv("HOODY_TEST_SESSION_DIR");
        ::setenv("HOODY_TEST_TMP", base.c_str(), 1);
        ::setenv("HOODY_TEST_TIMEOUT", timeout, 1);
        std::string tc = "-tc=" + test_case;
        ::execl("/proc/self/exe", "integration-rig", "--no-skip", tc.c_str(), nullptr);
        return 127;
      },
      {.timeout = 60s});
}

std::string fresh_base(const char* name) {
  std::string base = session_dir() + "/" + name;
  REQUIRE(::mkdir(base.c_str(), 0755) == 0);
  return base;
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!cond()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

}  // namespace

TEST_CASE("the guard cleans up after a failed check, a crash and its deadline") {
  require_mount_capabilities();
  struct Case {
    const char* test_case;
    const char* timeout;
    const char* expect;
  };
  for (auto c : {Case{"guard: failing*", "60", "=== daemon log"},
                 Case{"guard: crash*", "60", "killed by SEGV"},
                 Case{"guard: hang*", "2", "deadline of 2 s"}}) {
    CAPTURE(c.test_case);
    std::string base = fresh_base(c.timeout[0] == '2' ? "hang" : c.expect[0] == '=' ? "fail" : "crash");
    ExitInfo e = run_self(base, c.test_case, c.timeout).wait();
    CHECK_MESSAGE(e.exit_code == 1, e.describe());
    CHECK_MESSAGE(e.output.find(c.expect) != std::string::npos, e.describe());
    CHECK_MESSAGE(leftovers(base).empty(), leftovers(base));
  }
}

TEST_CASE("the guard cleans up after meson's timeout (SIGTERM, SIGKILL 0.5 s later)") {
  require_mount_capabilities();
  std::string base = fresh_base("sigterm");
  Child guard = run_self(base, "guard: hang*", "60");
  bool mounted = wait_until([&] { return leftovers(base).find("fuse") != std::string::npos; }, 20s);
  REQUIRE_MESSAGE(mounted, "the nested test did not mount: " << leftovers(base));
  ::killpg(guard.pid(), SIGTERM);  // what meson does on a timeout
  std::this_thread::sleep_for(500ms);
  ::killpg(guard.pid(), SIGKILL);
  ExitInfo e = guard.wait();
  CHECK(e.exit_code == 128 + SIGTERM);
  bool clean = wait_until([&] { return leftovers(base).empty(); }, 20s);
  CHECK_MESSAGE(clean, leftovers(base) << "\njanitor log:\n" << slurp(base + "/hoody-it-janitor.log"));
  CHECK(slurp(base + "/hoody-it-janitor.log").find("losetup -d") != std::string::npos);
}
