// Many containers on one host (issue 8 item 7): scripts/hoody-up brings up
// c1 and c2 on a temp pool, each "container" is a mount namespace of its own
// that mounts its fstab fragment with mount -T FRAGMENT -a onto the same
// target paths, and sees its own tree there.  Then: the ramdisk's size from a
// memory limit, hoody-up twice, a dead daemon restarted under a running
// container, hoody-down of one container, a restore reaching a running
// container, and the embedded pool made from an image.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "host.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/guard.hpp"

using namespace hoody::test;
using namespace std::chrono_literals;

namespace {

bool contains(const std::string& s, const std::string& what) { return s.find(what) != std::string::npos; }

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::trunc) << data;
}

// Returns 0 when `path` holds exactly `want` (for children: prints otherwise).
int expect_file(const std::string& path, const std::string& want) {
  std::string got = slurp(path);
  if (got == want) return 0;
  std::printf("%s holds '%s', not '%s' (%s)\n", path.c_str(), got.c_str(), want.c_str(), std::strerror(errno));
  return 1;
}

// Run SQL on `db` (C API, busy_timeout 0); 0 when it worked, else prints.
int sql(const std::string& db, const std::string& q, int* count = nullptr) {
  sqlite3* h = nullptr;
  int rc = sqlite3_open(db.c_str(), &h);
  sqlite3_stmt* st = nullptr;
  if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(h, q.c_str(), -1, &st, nullptr);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && count) *count = sqlite3_column_int(st, 0);
    if (rc == SQLITE_ROW || rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK) std::printf("%s: %s: %s\n", db.c_str(), q.c_str(), sqlite3_errmsg(h));
  sqlite3_finalize(st);
  sqlite3_close(h);
  return rc == SQLITE_OK ? 0 : 1;
}

std::uint64_t fs_bytes(const std::string& path) {
  struct statfs s{};
  if (::statfs(path.c_str(), &s) != 0) return 0;
  return static_cast<std::uint64_t>(s.f_blocks) * static_cast<std::uint64_t>(s.f_bsize);
}

bool alive(pid_t pid) {
  std::string st = slurp("/proc/" + std::to_string(pid) + "/stat");
  if (st.empty()) return false;
  auto paren = st.rfind(')');
  return paren != std::string::npos && paren + 2 < st.size() && st[paren + 2] != 'Z';
}

bool gone_within(const std::vector<pid_t>& pids, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    bool any = false;
    for (pid_t p : pids) any = any || alive(p);
    if (!any) return true;
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(50ms);
  }
}

std::vector<pid_t> daemons_of_container(const Host& host, const std::string& c) {
  std::vector<pid_t> out;
  for (auto* m : {"/databases", "/.snapshots", "/shares"})
    for (pid_t p : daemons_of(host.run_dir + "/" + c + m)) out.push_back(p);
  return out;
}

// The mounts under `dir` as one comparable text: id, point, type, options.
std::string mount_table(const std::string& dir) {
  std::string out;
  for (auto& m : mounts_under(dir))
    out += std::to_string(m.id) + " " + m.mount_point + " " + m.fstype + " " + m.options + "\n";
  return out;
}

bool sharefs_built() { return std::getenv("HOODY_SHAREFS") && *std::getenv("HOODY_SHAREFS"); }

}  // namespace

TEST_CASE("two containers on one host: each mounts its fragment with mount -T and sees its own tree") {
  require_mount_capabilities();
  Host host;
  auto up = host.up({"c1", "c2"}, {"--project", "web", "--memory", "256M"});
  REQUIRE_MESSAGE(up.ok(), up.describe());
  const std::string T = host.target;

  // What a runtime needs, for each container.
  for (std::string c : {"c1", "c2"}) {
    CAPTURE(c);
    std::string r = host.run_dir + "/" + c;
    CHECK_MESSAGE(contains(up.output, "--mount type=bind,source=" + r + ",target=/hoody,bind-propagation=rslave "
                                      "--mount type=bind,source=" + r + "/ramdisk,target=/ramdisk"), up.output);
    CHECK_MESSAGE(contains(up.output, "--bind=" + r + ":/hoody:rbind --bind=" + r + "/ramdisk:/ramdisk"), up.output);
    CHECK_MESSAGE(contains(up.output, "lxc.mount.entry = " + r + " hoody none rbind,rslave,nosuid,nodev,create=dir 0 0"),
                  up.output);
    std::string frag = slurp(host.fragment(c)), lines;
    std::istringstream in(frag);
    for (std::string l; std::getline(in, l);)
      if (!l.empty() && l[0] != '#') lines += l + "\n";
    CHECK(lines == r + " " + T + "/hoody none rbind,rslave,nosuid,nodev,X-mount.mkdir 0 0\n" +
                       r + "/ramdisk " + T + "/ramdisk none bind,nosuid,nodev,X-mount.mkdir 0 0\n");
    CHECK(contains(slurp(host.run_dir + "/" + c + ".lxc.fstab"),
                   "\n" + r + " hoody none rbind,rslave,nosuid,nodev,create=dir 0 0\n" + r +
                       "/ramdisk ramdisk none bind,nosuid,nodev,create=dir 0 0\n"));
    CHECK_MESSAGE(contains(up.output, lines.substr(0, lines.find('\n'))), "the fragment is printed too");
  }
  // Both are registered in the share registry, in their project.
  auto list = host.share({"container", "list", "--json"});
  REQUIRE_MESSAGE(list.ok(), list.describe());
  auto cs = nlohmann::json::parse(list.output)["containers"];
  REQUIRE(cs.size() == 2);
  for (auto& c : cs) CHECK(c["project"] == "web");

  Container n1("c1", host.fragment("c1")), n2("c2", host.fragment("c2"));
  REQUIRE_MESSAGE(n1.ready(), n1.failure());
  REQUIRE_MESSAGE(n2.ready(), n2.failure());

  // In each namespace: the five mounts, all nosuid,nodev, all slaves of the
  // host's (so what the host mounts later reaches the container).
  for (Container* n : {&n1, &n2}) {
    auto e = n->run([&] {
      int bad = 0;
      std::map<std::string, std::string> want{{T + "/hoody", ""},
                                              {T + "/hoody/storage", "btrfs"},
                                              {T + "/hoody/databases", "fuse.hoody-dbfs"},
                                              {T + "/hoody/.snapshots", "fuse.hoody-snapfs"},
                                              {T + "/hoody/ramdisk", "tmpfs"},
                                              {T + "/ramdisk", "tmpfs"}};
      if (sharefs_built()) want[T + "/hoody/shares"] = "fuse.hoody-sharefs";
      for (auto& m : mounts_under(T)) {
        std::printf("%s %s %s %s\n", m.mount_point.c_str(), m.fstype.c_str(), m.options.c_str(),
                    m.propagation.c_str());
        auto w = want.find(m.mount_point);
        if (w == want.end()) continue;
        if (!w->second.empty() && m.fstype != w->second) bad |= 1;
        if (!contains("," + m.options + ",", ",nosuid,") || !contains("," + m.options + ",", ",nodev,")) bad |= 2;
        if (!contains(m.propagation, "master:")) bad |= 4;
        want.erase(w);
      }
      for (auto& [p, t] : want) std::printf("missing: %s (%s)\n", p.c_str(), t.c_str());
      return bad | (want.empty() ? 0 : 8);
    });
    CHECK_MESSAGE(e.ok(), n->name() << ": " << e.describe());
  }

  // The same path shows each container its own storage, databases, snapshots
  // and ramdisk.
  for (Container* n : {&n1, &n2}) {
    std::string me = n->name();
    auto e = n->run([&] {
      write_file(T + "/hoody/storage/who", me);
      if (sql(T + "/hoody/databases/app.db", "CREATE TABLE who(name)")) return 1;
      if (sql(T + "/hoody/databases/app.db", "INSERT INTO who VALUES ('" + me + "')")) return 2;
      if (::mkdir((T + "/hoody/.snapshots/s-" + me).c_str(), 0755) != 0) return std::perror("mkdir snapshot"), 3;
      if (expect_file(T + "/hoody/.snapshots/s-" + me + "/storage/who", me)) return 4;
      write_file(T + "/ramdisk/scratch", me);
      if (expect_file(T + "/hoody/ramdisk/scratch", me)) return 5;  // the same tmpfs
      return 0;
    });
    CHECK_MESSAGE(e.ok(), me << ": " << e.describe());
  }
  for (std::string c : {"c1", "c2"}) {
    CAPTURE(c);
    CHECK(slurp(host.storage_of(c) + "/who") == c);
    int rows = -1;
    CHECK(sql(host.pool.path() + "/containers/" + c + "/databases/app.db",
              "SELECT count(*) FROM who WHERE name = '" + c + "'", &rows) == 0);
    CHECK(rows == 1);
    CHECK(slurp(host.run_dir + "/" + c + "/ramdisk/scratch") == c);
  }
  // Programs run in a namespace see it too (the README runs mv there).
  auto cat = n1.exec({"cat", T + "/hoody/storage/who"});
  CHECK_MESSAGE((cat.ok() && cat.output == "c1"), cat.describe());
  cat = n2.exec({"cat", T + "/hoody/storage/who"});
  CHECK_MESSAGE((cat.ok() && cat.output == "c2"), cat.describe());
  for (Container* n : {&n1, &n2}) {
    std::string me = n->name(), other = me == "c1" ? "c2" : "c1";
    auto e = n->run([&] {
      int bad = expect_file(T + "/hoody/storage/who", me) + expect_file(T + "/ramdisk/scratch", me);
      struct stat st;
      if (::stat((T + "/hoody/.snapshots/s-" + other).c_str(), &st) == 0) bad += 10;  // not its snapshot
      // The ramdisk is half of --memory 256M.
      if (fs_bytes(T + "/ramdisk") != 128ull << 20) bad += 100;
      return bad;
    });
    CHECK_MESSAGE(e.ok(), me << ": " << e.describe());
  }
}

TEST_CASE("the ramdisk is half of the container's memory limit: given, found in its cgroup, or the host's") {
  require_mount_capabilities();
  Host host;
  auto ramdisk = [&](const std::string& c) { return fs_bytes(host.run_dir + "/" + c + "/ramdisk"); };

  // A given cgroup: its memory.max.
  std::string given = host.pool.make_temp_dir("given-cgroup");
  write_file(given + "/memory.max", "268435456\n");
  auto e = host.up({"c1"}, {"--cgroup", given});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(ramdisk("c1") == 128ull << 20);
  CHECK_MESSAGE(contains(e.output, "tmpfs of 128 MiB (half of " + given + "/memory.max)"), e.output);

  // Found: LXC's cgroup of c2 says max, its parent 192 MiB: the effective limit is the parent's.
  ::mkdir((host.cgroups + "/lxc.payload.c2").c_str(), 0755);
  write_file(host.cgroups + "/lxc.payload.c2/memory.max", "max\n");
  write_file(host.cgroups + "/memory.max", "201326592\n");
  e = host.up({"c2"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(ramdisk("c2") == 96ull << 20);

  // Nothing: half the host's memory.
  std::uint64_t total_kb = 0;
  {
    std::ifstream mi("/proc/meminfo");
    std::string key;
    mi >> key >> total_kb;
    REQUIRE(key == "MemTotal:");
  }
  e = host.up({"c3"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(ramdisk("c3") == total_kb * 1024 / 2 / 4096 * 4096);

  // --memory resizes it in place (its files stay); a run without a limit keeps the size.
  write_file(host.run_dir + "/c3/ramdisk/keep", "x");
  e = host.up({"c3"}, {"--memory", "64M"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(ramdisk("c3") == 32ull << 20);
  CHECK(slurp(host.run_dir + "/c3/ramdisk/keep") == "x");
  e = host.up({"c3"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(ramdisk("c3") == 32ull << 20);

  // A limit that is not one.
  e = host.up({"c3"}, {"--memory", "lots"});
  CHECK(e.exit_code == 1);
  CHECK_MESSAGE(contains(e.output, "--memory lots"), e.output);
  e = host.up({"c3"}, {"--cgroup", host.pool.dir() + "/no-such-cgroup"});
  CHECK(e.exit_code == 1);
  CHECK_MESSAGE(contains(e.output, "no memory.max"), e.output);
}

TEST_CASE("hoody-up twice (also at once) changes nothing; a dead daemon is restarted and a running container sees the new one") {
  require_mount_capabilities();
  Host host;
  // Two at once (units may start them together): one waits for the other.
  host.guard("c1");
  host.guard("c2");
  ExitInfo other;
  std::thread t([&] { other = host.up({"c1", "c2"}, {"--project", "web"}); });
  auto e = host.up({"c2", "c1"}, {"--project", "web"});
  t.join();
  REQUIRE_MESSAGE(e.ok(), e.describe());
  REQUIRE_MESSAGE(other.ok(), other.describe());
  const std::string T = host.target;
  for (std::string c : {"c1", "c2"})
    for (auto* m : {"/databases", "/.snapshots"}) {
      CAPTURE(c + m);
      CHECK(daemons_of(host.run_dir + "/" + c + m).size() == 1);
      CHECK(mounts_under(host.run_dir + "/" + c + m).size() == 1);
    }
  CHECK(mounts_under(host.run_dir + "/c1/storage").size() == 1);

  std::string table = mount_table(host.run_dir);
  auto pids = daemons_of_container(host, "c1"), pids2 = daemons_of_container(host, "c2");
  auto snapfs = daemons_of(host.run_dir + "/c1/.snapshots");
  REQUIRE(pids.size() >= 2);
  std::string frag = slurp(host.fragment("c1"));
  auto events = [&] {
    auto l = host.share({"log", "--json", "--limit", "1000"});
    return l.ok() ? nlohmann::json::parse(l.output)["events"].size() : 0;
  };
  auto n_events = events();

  e = host.up({"c1", "c2"}, {"--project", "web"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  // The same mounts (same ids: nothing remounted), daemons, fragment, registry.
  CHECK(mount_table(host.run_dir) == table);
  CHECK(daemons_of_container(host, "c1") == pids);
  CHECK(daemons_of_container(host, "c2") == pids2);
  CHECK(slurp(host.fragment("c1")) == frag);
  CHECK(events() == n_events);
  CHECK_MESSAGE(!contains(e.output, "->"), "a second run mounted or started something:\n" << e.output);

  // A container runs; the dbfs of c1 dies.
  Container n1("c1", host.fragment("c1"));
  REQUIRE_MESSAGE(n1.ready(), n1.failure());
  const std::string db = T + "/hoody/databases/app.db";
  e = n1.run([&] { return sql(db, "CREATE TABLE t(x)") + sql(db, "INSERT INTO t VALUES (1)"); });
  REQUIRE_MESSAGE(e.ok(), e.describe());
  auto dbfs = daemons_of(host.run_dir + "/c1/databases");
  REQUIRE(dbfs.size() == 1);
  REQUIRE(::kill(dbfs[0], SIGKILL) == 0);
  REQUIRE(gone_within(dbfs, 5s));
  e = n1.run([&] {
    // statfs (a stat may be answered from the kernel's attribute cache); the
    // connection goes when the last thread of the killed daemon is gone.
    struct statfs st;
    int rc = 0, err = 0;
    for (int i = 0; i < 100; ++i) {
      rc = ::statfs((T + "/hoody/databases").c_str(), &st);
      err = errno;
      if (rc != 0 && err == ENOTCONN) return 0;
      std::this_thread::sleep_for(50ms);
    }
    std::printf("statfs: %d (%s)\n", rc, rc ? std::strerror(err) : "answered");
    return 1;
  });
  CHECK_MESSAGE(e.ok(), "the dead dbfs does not answer ENOTCONN in the container: " << e.describe());

  // hoody-up again restarts it, and the container (not remounted) uses the new one.
  e = host.up({"c1"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(contains(e.output, "hoody-dbfs is gone: restarting it"), e.output);
  auto dbfs2 = daemons_of(host.run_dir + "/c1/databases");
  REQUIRE(dbfs2.size() == 1);
  CHECK(dbfs2[0] != dbfs[0]);
  e = n1.run([&] {
    int rows = -1;
    if (sql(db, "INSERT INTO t VALUES (2)") || sql(db, "SELECT count(*) FROM t", &rows)) return 1;
    return rows == 2 ? 0 : 2;
  });
  CHECK_MESSAGE(e.ok(), "the running container does not see the restarted hoody-dbfs: " << e.describe());
  // The rest of c1 and all of c2 were left alone.
  CHECK(daemons_of(host.run_dir + "/c1/.snapshots") == snapfs);
  CHECK(daemons_of_container(host, "c2") == pids2);

  // A daemon that does not answer (stopped here) may be busy: left alone, and said.
  auto dbfs_c2 = daemons_of(host.run_dir + "/c2/databases");
  REQUIRE(dbfs_c2.size() == 1);
  std::string table2 = mount_table(host.run_dir + "/c2");
  REQUIRE(::kill(dbfs_c2[0], SIGSTOP) == 0);
  e = host.up({"c2"});
  ::kill(dbfs_c2[0], SIGCONT);
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(contains(e.output, "hoody-dbfs does not answer within 5 s: left alone"), e.output);
  CHECK(daemons_of(host.run_dir + "/c2/databases") == dbfs_c2);
  CHECK(mount_table(host.run_dir + "/c2") == table2);
}

TEST_CASE("a dead mount whose daemon has not exited yet: hoody-up stops it and waits before it starts the new one") {
  require_mount_capabilities();
  Host host;
  auto e = host.up({"c1"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  const std::string mnt = host.run_dir + "/c1/databases";
  auto old = daemons_of(mnt);
  REQUIRE(old.size() == 1);
  struct stat st;
  REQUIRE(::stat(mnt.c_str(), &st) == 0);
  // The connection is aborted (fusectl, mounted in a namespace of its own)
  // while the daemon is stopped: the mount answers ENOTCONN, its daemon is
  // still there and holds its source, as one that is slow to exit would.
  REQUIRE(::kill(old[0], SIGSTOP) == 0);
  std::string abort = "/sys/fs/fuse/connections/" + std::to_string(minor(st.st_dev)) + "/abort";
  auto a = run({"unshare", "-m", "sh", "-c",
                "mount -t fusectl fusectl /sys/fs/fuse/connections && echo 1 >" + abort},
               std::chrono::seconds(20));
  if (!a.ok()) ::kill(old[0], SIGCONT);
  REQUIRE_MESSAGE(a.ok(), a.describe());
  struct statfs sf;
  CHECK(::statfs(mnt.c_str(), &sf) != 0);
  CHECK(errno == ENOTCONN);
  REQUIRE(alive(old[0]));

  e = host.up({"c1"});
  ::kill(old[0], SIGCONT);  // (when the script did not)
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(contains(e.output, "hoody-dbfs is gone: restarting it"), e.output);
  CHECK_FALSE(alive(old[0]));
  auto now = daemons_of(mnt);
  CHECK(now.size() == 1);
  CHECK(now != old);
  CHECK(mounts_under(mnt).size() == 1);
  CHECK(::statfs(mnt.c_str(), &sf) == 0);
}

TEST_CASE("hoody-down of one container leaves the other running; without names it takes all") {
  require_mount_capabilities();
  Host host;
  auto e = host.up({"c1", "c2"}, {"--project", "web"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  const std::string T = host.target;
  Container n1("c1", host.fragment("c1")), n2("c2", host.fragment("c2"));
  REQUIRE_MESSAGE(n1.ready(), n1.failure());
  REQUIRE_MESSAGE(n2.ready(), n2.failure());
  auto pids1 = daemons_of_container(host, "c1"), pids2 = daemons_of_container(host, "c2");
  std::string table2 = mount_table(host.run_dir + "/c2");

  // c1 is busy: a process in it holds a database open (the unmount is lazy then).
  Pipe holding, done;
  Child holder = n1.start([&] {
    int fd = ::open((T + "/hoody/databases/busy").c_str(), O_RDWR | O_CREAT, 0644);
    if (fd < 0) return 1;
    holding.signal();
    done.wait_signal(30s);
    return 0;
  });
  REQUIRE(holding.wait_signal());

  e = host.down({"c1"});
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(mount_table(host.run_dir + "/c1").empty());
  CHECK_MESSAGE(gone_within(pids1, 10s), "c1's daemons are still running");
  CHECK(::access(host.fragment("c1").c_str(), F_OK) != 0);
  // In c1's namespace the mounts went with them (propagated unmounts).
  e = n1.run([&] {
    for (auto& m : mounts_under(T + "/hoody"))
      if (m.mount_point != T + "/hoody") return std::printf("still mounted: %s\n", m.mount_point.c_str()), 1;
    return 0;
  });
  CHECK_MESSAGE(e.ok(), e.describe());
  done.signal();
  holder.wait();

  // c2 is untouched and works.
  CHECK(mount_table(host.run_dir + "/c2") == table2);
  CHECK(daemons_of_container(host, "c2") == pids2);
  e = n2.run([&] {
    write_file(T + "/hoody/storage/still", "here");
    return expect_file(T + "/hoody/storage/still", "here") + sql(T + "/hoody/databases/a.db", "CREATE TABLE t(x)");
  });
  CHECK_MESSAGE(e.ok(), e.describe());

  // c1 comes back by itself, and its running namespace (not remounted) has
  // its tree again.
  e = host.up({"c1"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(mounts_under(host.run_dir + "/c1").size() >= 4);
  e = n1.run([&] { return sql(T + "/hoody/databases/back.db", "CREATE TABLE t(x)"); });
  CHECK_MESSAGE(e.ok(), "c1's running namespace does not see c1 back up: " << e.describe());

  // Everything, with one of c2's daemons stuck (stopped: SIGTERM stays
  // pending): hoody-down says so and kills it rather than leave it behind.
  auto stuck = daemons_of(host.run_dir + "/c2/shares");
  REQUIRE(stuck.size() == 1);
  REQUIRE(::kill(stuck[0], SIGSTOP) == 0);
  e = host.down();
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(e.output.find("killing them: " + std::to_string(stuck[0])) != std::string::npos, e.output);
  CHECK(mount_table(host.run_dir).empty());
  CHECK_MESSAGE(gone_within(pids2, 10s), "c2's daemons are still running");
  CHECK(gone_within(daemons_of_container(host, "c1"), 10s));
}

TEST_CASE("a restore in a running container shows in its /hoody/storage without a remount") {
  require_mount_capabilities();
  Host host;
  auto e = host.up({"c1"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  const std::string T = host.target;
  Container n1("c1", host.fragment("c1"));
  REQUIRE_MESSAGE(n1.ready(), n1.failure());
  e = n1.run([&] {
    write_file(T + "/hoody/storage/config", "v1");
    if (::mkdir((T + "/hoody/.snapshots/good").c_str(), 0755) != 0) return 1;
    write_file(T + "/hoody/storage/config", "v2 (broken)");
    int fd = ::open((T + "/hoody/.snapshots/.hoody/restore").c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ::write(fd, "good\n", 5) != 5) return std::perror("restore"), 2;
    ::close(fd);
    // snapfs re-attached RUN/c1/storage on the host; the container's copy follows.
    return expect_file(T + "/hoody/storage/config", "v1") ? 3 : 0;
  });
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(slurp(host.run_dir + "/c1/storage/config") == "v1");
}

TEST_CASE("this machine's view of c1 (the README's first command): a restore through /hoody shows in /hoody/storage") {
  require_mount_capabilities();
  Host host;
  host.guard("c1");
  auto e = host.up({});  // no name: c1, shown here at TARGET/hoody
  REQUIRE_MESSAGE(e.ok(), e.describe());
  const std::string H = host.target + "/hoody";
  write_file(H + "/storage/config", "v1");
  REQUIRE(sql(H + "/databases/app.db", "CREATE TABLE t(x)") == 0);
  REQUIRE(::mkdir((H + "/.snapshots/good").c_str(), 0755) == 0);
  write_file(H + "/storage/config", "v2 (broken)");
  REQUIRE(sql(H + "/databases/app.db", "DROP TABLE t") == 0);
  int fd = ::open((H + "/.snapshots/.hoody/restore").c_str(), O_WRONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  CHECK(::write(fd, "good\n", 5) == 5);
  ::close(fd);
  CHECK(slurp(H + "/storage/config") == "v1");
  CHECK(slurp(host.run_dir + "/c1/storage/config") == "v1");
  int rows = -1;
  for (int i = 0; i < 50 && rows != 0; ++i) {
    if (sql(H + "/databases/app.db", "SELECT count(*) FROM t", &rows) != 0) rows = -1;
    if (rows != 0) std::this_thread::sleep_for(100ms);
  }
  CHECK_MESSAGE(rows == 0, "the restored table t is not back in " << H << "/databases");
}

TEST_CASE("this machine's view: an older hoody-up's tree is refused and taken down; --host; hoody-down of it") {
  require_mount_capabilities();
  Host host;
  const std::string T = host.target;
  // What the single-container hoody-up mounted: each path on its own.
  host.pool.make_dir("containers");
  host.pool.make_dir("containers/c1");
  std::string storage = host.pool.make_subvolume("containers/c1/storage");
  std::string databases = host.pool.make_subvolume("containers/c1/databases");
  for (auto* d : {"/hoody", "/hoody/storage", "/hoody/databases", "/ramdisk"})
    REQUIRE(::mkdir((T + d).c_str(), 0755) == 0);
  std::vector<std::uint64_t> ids{register_resource(Resource::mount, T + "/hoody/storage"),
                                 register_resource(Resource::mount, T + "/ramdisk"),
                                 register_resource(Resource::fuse_mount, T + "/hoody/databases"),
                                 register_resource(Resource::mount, T + "/hoody"),
                                 register_resource(Resource::mount, T + "/ramdisk")};
  run_checked({"mount", "--bind", storage, T + "/hoody/storage"});
  run_checked({"mount", "-t", "tmpfs", "-o", "size=1m,nosuid,nodev", "hoody-ramdisk", T + "/ramdisk"});
  const char* dbfs = std::getenv("HOODY_DBFS");
  REQUIRE(dbfs);
  run_checked({dbfs, "-o", "allow_other", databases, T + "/hoody/databases"});
  auto old_dbfs = daemons_of(T + "/hoody/databases");
  REQUIRE(old_dbfs.size() == 1);

  host.guard("c1");
  auto e = host.up({});  // no name: c1, shown here at TARGET/hoody
  CHECK(e.exit_code == 1);
  CHECK_MESSAGE(contains(e.output, "an older hoody-up's tree is mounted here (" + T + "/hoody/databases " + T +
                                       "/hoody/storage " + T + "/ramdisk)"),
                e.output);
  e = host.down();
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK_MESSAGE(contains(e.output, "unmounted " + T + "/hoody/databases (an older hoody-up's)"), e.output);
  CHECK(mounts_under(T).empty());
  CHECK(gone_within(old_dbfs, 10s));

  e = host.up({});
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(is_mounted(T + "/hoody"));
  CHECK(is_mounted(T + "/hoody/databases", "fuse.hoody-dbfs"));
  CHECK(is_mounted(T + "/ramdisk", "tmpfs"));
  e = host.down();
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(mounts_under(T).empty());

  // --host shows a named container here; hoody-down of it takes that view down too.
  e = host.up({"c2"}, {"--host"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  write_file(host.storage_of("c2") + "/mine", "c2");
  CHECK(slurp(T + "/hoody/storage/mine") == "c2");
  CHECK(is_mounted(T + "/ramdisk", "tmpfs"));
  e = host.down({"c2"});
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(mounts_under(T).empty());
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) release(*it);
}

TEST_CASE("the embedded pool: an image where the pool is not BTRFS, loop-mounted, destroyed on request") {
  require_mount_capabilities();
  BtrfsPool scratch;  // only for its temp dir and run dir
  std::string dir = scratch.make_temp_dir("embedded");
  std::string pool = dir + "/pool", img = dir + "/pool.img", run_dir = dir + "/run";
  auto img_id = register_resource(Resource::loop_image, img);
  auto pool_id = register_resource(Resource::mount, pool);
  auto run_id = register_resource(Resource::mount, run_dir);
  std::vector<std::uint64_t> ids;
  for (auto* m : {"/target/hoody", "/target/ramdisk"}) ids.push_back(register_resource(Resource::mount, dir + m));
  for (auto* m : {"/c1/storage", "/c1/ramdisk"}) ids.push_back(register_resource(Resource::mount, run_dir + m));
  for (auto* m : {"/c1/databases", "/c1/.snapshots", "/c1/shares"})
    ids.push_back(register_resource(Resource::fuse_mount, run_dir + m));
  const char* scripts = std::getenv("HOODY_SCRIPTS");
  std::string s = scripts ? scripts : "scripts";
  std::vector<std::string> env{"env", "HOODY_POOL=" + pool, "HOODY_RUN=" + run_dir, "HOODY_POOL_SIZE=256M",
                               "HOODY_TARGET_ROOT=" + dir + "/target", "HOODY_SKIP_BUILD=1",
                               "HOODY_CGROUP_ROOT=" + dir};
  for (auto* var : {"HOODY_DBFS", "HOODY_SNAPFS", "HOODY_SHAREFS", "HOODY_SHARE"}) {
    const char* v = std::getenv(var);
    env.push_back(std::string(var) + "=" + (v && *v ? v : "none"));
  }
  auto cmd = [&](std::vector<std::string> tail) {
    auto argv = env;
    argv.insert(argv.end(), tail.begin(), tail.end());
    return run(argv, 90s);
  };
  auto e = cmd({s + "/hoody-up"});  // no container named: c1, shown here too
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(contains(e.output, "making the embedded pool " + img));
  struct statfs st{};
  REQUIRE(::statfs(pool.c_str(), &st) == 0);
  CHECK(st.f_type == 0x9123683E);  // BTRFS_SUPER_MAGIC
  CHECK(is_mounted(run_dir + "/c1/databases", "fuse.hoody-dbfs"));
  // This machine's view of c1, at TARGET/hoody (/hoody without HOODY_TARGET_ROOT).
  CHECK(is_mounted(dir + "/target/hoody"));
  CHECK(is_mounted(dir + "/target/hoody/databases", "fuse.hoody-dbfs"));
  // Again: nothing changes, here either.
  std::string table = mount_table(dir);
  e = cmd({s + "/hoody-up"});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  CHECK(mount_table(dir) == table);

  e = cmd({"HOODY_DESTROY=1", s + "/hoody-down"});
  CHECK_MESSAGE(e.ok(), e.describe());
  CHECK(!is_mounted(dir + "/target/hoody"));
  CHECK(!is_mounted(pool));
  CHECK(::access(img.c_str(), F_OK) != 0);
  auto loops = run({"losetup", "-j", img});
  CHECK(loops.output.empty());
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) release(*it);
  release(run_id);
  release(pool_id);
  release(img_id);
}
