// Tests of the integration rig itself: the guard, BtrfsPool, Daemon and the
// process helpers.  The cases marked skip() exist to prove the guard's
// cleanup by hand (run with --no-skip -tc='guard*'); see the report in git log.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
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
