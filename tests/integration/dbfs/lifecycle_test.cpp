// The daemon's life cycle as DESIGN.md promises it: the mount.fuse3 command
// line (options also after the positionals), a clean unmount on SIGTERM and
// SIGINT, a non-zero exit with a reason when it cannot start, and a refusal
// of a second daemon over the same backing directory.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <cstring>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

namespace {

struct Pool {
  bool capable = (require_mount_capabilities(), true);
  BtrfsPool pool;
  std::string backing = pool.make_subvolume("databases");
  std::string mnt = pool.make_temp_dir("mnt");
  std::string log = pool.dir() + "/daemon.log";
};

// As mount.fuse3 calls it: DAEMON SOURCE MOUNTPOINT -o OPTIONS (plus -f).
std::vector<std::string> options_last(const std::string& src, const std::string& mnt) {
  std::vector<std::string> argv{dbfs_command().program, src, mnt, "-f", "-o",
                                "allow_other,default_permissions"};
  if (dbfs_command().is_bindfs) argv.insert(argv.begin() + 1, "--multithreaded");
  return argv;
}

}  // namespace

TEST_CASE("options after the positionals (mount.fuse3 style) are honoured") {
  Pool p;
  Daemon d(options_last(p.backing, p.mnt), p.mnt, p.log);
  // allow_other took effect: another user can look at the mount.
  ExitInfo e = run_child([&] {
    struct stat st;
    return ::stat(p.mnt.c_str(), &st) == 0 ? 0 : 1;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.ok(), "nobody cannot stat the mount: allow_other was not applied: " << e.describe());
}

TEST_CASE("SIGTERM and SIGINT unmount cleanly") {
  for (int sig : {SIGTERM, SIGINT}) {
    CAPTURE(sigabbrev_np(sig));
    Pool p;
    Daemon d(dbfs_argv(p.backing, p.mnt), p.mnt, p.log);
    {
      int fd = ::open((p.mnt + "/file").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      REQUIRE(fd >= 0);
      CHECK(::write(fd, "data", 4) == 4);
      ::close(fd);
    }
    std::string how = d.terminate(sig);
    CHECK_MESSAGE(how == "exit 0", "after " << sigabbrev_np(sig) << ": " << how << "\n" << d.log());
    CHECK_FALSE(is_mounted(p.mnt));
    CHECK(slurp(p.backing + "/file") == "data");
  }
}

TEST_CASE("a daemon that cannot start exits non-zero with a reason") {
  Pool p;
  try {
    Daemon d(dbfs_argv(p.backing + "/missing", p.mnt), p.mnt, p.log, {.start_timeout = 5s});
    FAIL("the daemon mounted a missing source");
  } catch (const std::runtime_error& e) {
    std::string msg = e.what();
    CHECK_MESSAGE(msg.find("daemon exited before mounting (exit ") != std::string::npos, msg);
    CHECK_MESSAGE(msg.find("(exit 0)") == std::string::npos, msg);
    std::string log = slurp(p.log);
    CHECK_MESSAGE(!log.empty(), "no reason given on stderr");
  }
  CHECK_FALSE(is_mounted(p.mnt));
}

TEST_CASE("a second daemon over the same backing directory refuses to start") {
  Pool p;
  Daemon first(dbfs_argv(p.backing, p.mnt), p.mnt, p.log);
  std::string mnt2 = p.pool.make_temp_dir("mnt2");
  bool refused = false;
  std::string why;
  try {
    Daemon second(dbfs_argv(p.backing, mnt2), mnt2, p.pool.dir() + "/daemon2.log", {.start_timeout = 5s});
  } catch (const std::runtime_error& e) {
    refused = true;
    why = e.what();
  }
  if (dbfs_command().is_bindfs && !refused) {
    MESSAGE("known divergence (bindfs): a second bindfs over the same source mounts; "
            "hoody-dbfs must refuse (DESIGN.md: WAL coherence)");
  } else {
    CHECK_MESSAGE(refused, "the second daemon mounted the same backing directory");
    MESSAGE("refused: " << why);
  }
  CHECK(is_mounted(p.mnt, "fuse"));
}

TEST_CASE("each reason not to start is one line that names it (exit 1, nothing mounted)") {
  Pool p;
  if (dbfs_command().is_bindfs) return;  // the messages are hoody's
  const std::string& prog = dbfs_command().program;
  auto start = [&](const std::string& src, const std::string& mnt) {
    return run({prog, "-f", src, mnt}, 10s);
  };
  auto one_line = [](const std::string& out) {
    return out.find("hoody-dbfs: ") != std::string::npos;
  };
  SUBCASE("missing source") {
    auto e = start(p.backing + "/nope", p.mnt);
    CHECK(e.exit_code == 1);
    CHECK_MESSAGE(one_line(e.output), e.output);
    CHECK_MESSAGE(e.output.find("/nope: No such file or directory") != std::string::npos, e.output);
  }
  SUBCASE("missing mountpoint") {
    auto e = start(p.backing, p.mnt + "/nope");
    CHECK(e.exit_code == 1);
    CHECK_MESSAGE(e.output.find("does not exist") != std::string::npos, e.output);
  }
  SUBCASE("mountpoint is a file") {
    std::string f = p.pool.dir() + "/plainfile";
    ::close(::open(f.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    auto e = start(p.backing, f);
    CHECK(e.exit_code == 1);
    CHECK_MESSAGE(e.output.find("is not a directory") != std::string::npos, e.output);
  }
  SUBCASE("mountpoint busy with another FUSE mount") {
    std::string other = p.pool.make_subvolume("other");
    Daemon first(dbfs_argv(other, p.mnt), p.mnt, p.log);
    auto e = start(p.backing, p.mnt);
    CHECK(e.exit_code == 1);
    CHECK_MESSAGE(e.output.find("is busy") != std::string::npos, e.output);
  }
  SUBCASE("a FUSE mount hidden under a later mount (a tmpfs over /run) is not busy") {
    // The host's /run/hoody/C mounts stay in a container's mountinfo under
    // its own /run: only what the path shows may make it busy.
    std::string other = p.pool.make_subvolume("other");
    std::string hide = p.pool.make_temp_dir("hide");
    std::string m = hide + "/m";
    REQUIRE(::mkdir(m.c_str(), 0755) == 0);
    Daemon first(dbfs_argv(other, m), m, p.log);
    std::string script =
        "mount -t tmpfs hide '" + hide + "' && mkdir '" + m + "' && { '" + prog + "' -f '" + p.backing + "' '" +
        m + "' & pid=$!; i=0; until [ \"$(stat -f -c %T '" + m + "')\" = fuseblk ] || "
        "grep -q ' " + m + " .* fuse.hoody-dbfs ' /proc/self/mountinfo && [ \"$(stat -c %d '" + m +
        "')\" != \"$(stat -c %d '" + hide + "')\" ]; do i=$((i+1)); [ $i -lt 100 ] || { kill $pid; exit 3; }; "
        "kill -0 $pid 2>/dev/null || exit 4; sleep 0.1; done; echo started; fusermount3 -u '" + m + "'; wait $pid; }";
    auto e = run({"unshare", "-m", "--propagation", "private", "sh", "-c", script}, 20s);
    CHECK_MESSAGE(e.output.find("started") != std::string::npos, e.describe());
    CHECK_MESSAGE(e.output.find("is busy") == std::string::npos, e.output);
    CHECK(is_mounted(m, "fuse"));  // the first one, outside
  }
  SUBCASE("bad option: exit 2") {
    auto e = run({prog, "-f", "-o", "allow_other,nonsense=3", p.backing, p.mnt}, 10s);
    CHECK(e.exit_code == 2);
    CHECK_MESSAGE(e.output.find("unknown option 'nonsense'") != std::string::npos, e.output);
  }
  CHECK_FALSE(is_mounted(p.mnt));
}

// nosuid,nodev are forced (given first): an operator's -o suid or -o dev, or
// the "suid,dev" that mount.fuse3 adds as root, must not undo them.
TEST_CASE("-o suid or -o dev cannot undo the forced nosuid,nodev") {
  Pool p;
  if (dbfs_command().is_bindfs) return;  // hoody's own promise
  for (const char* extra : {"allow_other,suid", "allow_other,dev", "allow_other,suid,dev,exec"}) {
    CAPTURE(extra);
    Daemon d({dbfs_command().program, "-f", "-o", extra, p.backing, p.mnt}, p.mnt, p.log);
    struct statvfs sv;
    REQUIRE(::statvfs(p.mnt.c_str(), &sv) == 0);
    CHECK((sv.f_flag & ST_NOSUID) != 0);
    CHECK((sv.f_flag & ST_NODEV) != 0);
  }
}
