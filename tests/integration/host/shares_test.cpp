// Shares between two containers on one host (issue 8 item 7), as the README
// walks through it: scripts/hoody-up brings up c1 and c2 of project web, each
// container (a mount namespace) mounts its fragment with mount -T -a; c1
// offers a directory of its storage with hoody-share, c2 accepts it with
// `mv .pending/NAME NAME` in its /hoody/shares, reads and writes it, and c1
// revokes it while c2 holds a file open: c2's next read fails (EACCES or
// ESTALE), and the share is gone from c2's /hoody/shares.
//
// Needs hoody-sharefs ($HOODY_SHAREFS, set by meson when the target exists):
// without it this area fails after the offer, by design, until the daemon is
// in the build.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "host.hpp"
#include "hoody/test/capability.hpp"

using namespace hoody::test;
using namespace std::chrono_literals;

namespace {

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::trunc) << data;
}

// 0 once `path` exists (exists = true) or is gone (false) within `limit`.
int wait_for(const std::string& path, bool exists, std::chrono::milliseconds limit = 2s) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    struct stat st;
    bool there = ::lstat(path.c_str(), &st) == 0;
    if (there == exists) return 0;
    if (std::chrono::steady_clock::now() > end) {
      std::printf("%s is %s after %lld ms (%s)\n", path.c_str(), there ? "still there" : "not there",
                  static_cast<long long>(limit.count()), std::strerror(errno));
      return 1;
    }
    std::this_thread::sleep_for(20ms);
  }
}

std::string names_in(const std::string& dir) {
  std::string out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (auto* e = ::readdir(d))
      if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out += std::string(e->d_name) + " ";
    ::closedir(d);
  }
  return out;
}

}  // namespace

TEST_CASE("c1 offers, c2 accepts with mv, reads and writes; a revoke reaches a file c2 holds open") {
  require_mount_capabilities();
  Host host;
  auto up = host.up({"c1", "c2"}, {"--project", "web"});
  REQUIRE_MESSAGE(up.ok(), up.describe());
  const std::string T = host.target, shares = T + "/hoody/shares";
  Container n1("c1", host.fragment("c1")), n2("c2", host.fragment("c2"));
  REQUIRE_MESSAGE(n1.ready(), n1.failure());
  REQUIRE_MESSAGE(n2.ready(), n2.failure());

  // c1 has a directory to share.
  auto e = n1.run([&] {
    if (::mkdir((T + "/hoody/storage/datasets").c_str(), 0755) != 0) return 1;
    write_file(T + "/hoody/storage/datasets/a.txt", "from c1\n");
    return 0;
  });
  REQUIRE_MESSAGE(e.ok(), e.describe());

  // c1 offers it to c2, read-write.
  e = host.share({"offer", "--from", "c1:datasets", "--to", "c2", "--rw", "datasets"});
  REQUIRE_MESSAGE(e.ok(), e.describe());

  auto pending = host.share({"list", "--container", "c2", "--json"});
  CHECK_MESSAGE(pending.output.find("\"offered\"") != std::string::npos, pending.output);

  // From here on it takes the daemon.
  const char* sharefs = std::getenv("HOODY_SHAREFS");
  REQUIRE_MESSAGE((sharefs && *sharefs),
                  "hoody-sharefs is not in this build (it comes with branch sharefs-daemon); "
                  "without it /hoody/shares is an empty directory and nothing can be accepted");

  // c2 sees the offer under .pending and accepts it with mv.
  e = n2.run([&] { return wait_for(shares + "/.pending/datasets", true); });
  REQUIRE_MESSAGE(e.ok(), "no offer in c2's " << shares << "/.pending: " << e.describe());
  e = n2.exec({"mv", shares + "/.pending/datasets", shares + "/datasets"});
  REQUIRE_MESSAGE(e.ok(), "mv .pending/datasets datasets: " << e.describe());
  auto list = host.share({"list", "--container", "c2", "--json"});
  CHECK_MESSAGE(list.output.find("accepted") != std::string::npos, list.output);

  // c2 reads and writes it; the writes land in c1's storage.
  e = n2.run([&] {
    if (slurp(shares + "/datasets/a.txt") != "from c1\n") return 1;
    int fd = ::open((shares + "/datasets/b.txt").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return std::perror("create b.txt"), 2;
    bool ok = ::write(fd, "from c2\n", 8) == 8;
    ::close(fd);
    return ok ? 0 : 3;
  });
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(slurp(host.storage_of("c1") + "/datasets/b.txt") == "from c2\n");
  e = n1.run([&] { return slurp(T + "/hoody/storage/datasets/b.txt") == "from c2\n" ? 0 : 1; });
  CHECK(e.ok());
  // c1 receives nothing: its own /hoody/shares has no datasets.
  e = n1.run([&] {
    struct stat st;
    return ::lstat((shares + "/datasets").c_str(), &st) == 0 ? 1 : 0;
  });
  CHECK_MESSAGE(e.ok(), "c1 sees the share it offered in its own /hoody/shares");

  // c1 snapshots its container (c2's b.txt is in it), c2 writes c.txt, c1
  // restores the snapshot: once the restore has returned, c2 sees the restored
  // state at once (no c.txt), and what c2 writes then lands in c1's restored
  // storage, not in the old subvolume the restore deletes.
  const std::string snaps = T + "/hoody/.snapshots";
  e = n1.run([&] {
    if (::mkdir((snaps + "/with-b").c_str(), 0755) != 0) return std::perror("mkdir snapshot"), 1;
    return 0;
  });
  REQUIRE_MESSAGE(e.ok(), e.describe());
  e = n2.run([&] {
    write_file(shares + "/datasets/c.txt", "gone with the restore\n");
    return 0;
  });
  REQUIRE_MESSAGE(e.ok(), e.describe());
  // c2's hoody-sharefs is stopped while c1 restores (hoody-up's wiring: the
  // restore finds the pool's registry and waits for the daemon).
  auto d2 = daemons_of(host.run_dir + "/c2/shares");
  REQUIRE(d2.size() == 1);
  REQUIRE(::kill(d2[0], SIGSTOP) == 0);
  Pipe restored;
  Child restore = n1.start([&] {
    int ctl = ::open((snaps + "/.hoody/restore").c_str(), O_RDWR | O_TRUNC | O_CLOEXEC);
    if (ctl < 0) return std::perror("open .hoody/restore"), 1;
    char result[4096] = {};
    bool ok = ::write(ctl, "with-b\n", 7) == 7 && ::pread(ctl, result, sizeof result - 1, 0) > 0;
    ::close(ctl);
    std::printf("restore: %s\n", result);
    restored.signal();
    return ok && std::strstr(result, "\"ok\":true") ? 0 : 2;
  });
  CHECK_FALSE_MESSAGE(restored.wait_signal(400ms),
                      "c1's restore returned while c2's hoody-sharefs had not followed it");
  ::kill(d2[0], SIGCONT);
  CHECK(restored.wait_signal(10s));
  e = restore.wait();
  REQUIRE_MESSAGE(e.ok(), e.describe());
  e = n2.run([&] {
    struct stat st;
    if (::lstat((shares + "/datasets/c.txt").c_str(), &st) == 0) return std::puts("c.txt still shown"), 1;
    if (slurp(shares + "/datasets/b.txt") != "from c2\n") return std::puts("b.txt not restored"), 2;
    write_file(shares + "/datasets/d.txt", "after the restore\n");
    return 0;
  });
  CHECK_MESSAGE(e.ok(), "c2's share right after c1's restore: " << e.describe());
  CHECK(slurp(host.storage_of("c1") + "/datasets/d.txt") == "after the restore\n");

  // c2 holds a file of the share open; c1 revokes; c2's next read fails.
  Pipe held, go;
  Child holder = n2.start([&] {
    int fd = ::open((shares + "/datasets/a.txt").c_str(), O_RDONLY);
    char buf[64];
    if (fd < 0 || ::pread(fd, buf, sizeof buf, 0) != 8) return 200;
    held.signal();
    if (!go.wait_signal(30s)) return 201;
    ssize_t n = ::pread(fd, buf, sizeof buf, 0);
    int err = errno;
    std::printf("read after the revoke: %zd (%s)\n", n, n < 0 ? std::strerror(err) : "data");
    return n < 0 ? err : 0;
  });
  REQUIRE(held.wait_signal());
  e = host.share({"revoke", "--from", "c1", "datasets"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  // No wait: hoody-share returns once every running daemon has applied it.
  go.signal();
  auto r = holder.wait();
  CHECK_MESSAGE((r.exit_code == EACCES || r.exit_code == ESTALE),
                "c2 still reads the revoked share through a file it held open: " << r.describe());
  // And the share is gone from c2's /hoody/shares; c1's files are intact.
  e = n2.run([&] {
    int bad = wait_for(shares + "/datasets", false);
    int fd = ::open((shares + "/datasets/a.txt").c_str(), O_RDONLY);
    if (fd >= 0) ::close(fd), bad += 10;
    std::printf("c2's shares: %s\n", names_in(shares).c_str());
    return bad;
  });
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(slurp(host.storage_of("c1") + "/datasets/a.txt") == "from c1\n");
}
