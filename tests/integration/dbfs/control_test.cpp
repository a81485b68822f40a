// hoody-dbfs's control socket across a simulated restore (issue 11, issue 7
// item 2): what hoody-snapfs's restore does, done by hand here (a writable
// snapshot of the databases subvolume, renameat2(RENAME_EXCHANGE) with the
// live one, then "source-replaced" through hoody::ctl::Client), and quiesce.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "hoody/btrfs.hpp"
#include "hoody/dbfs_control.hpp"
#include "hoody/sys.hpp"
#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;
using nlohmann::json;
namespace ctl = hoody::ctl;

namespace {

constexpr auto kCallTimeout = std::chrono::milliseconds(20000);

// A container directory with a databases subvolume served by hoody-dbfs.
struct Rig {
  bool capable = (require_mount_capabilities(), true);
  BtrfsPool pool;
  std::string c1, live, mnt;
  std::unique_ptr<Daemon> daemon;
  hoody::UniqueFd c1_fd;
  int round = 0;

  explicit Rig(const std::string& options =
                   "allow_other,default_permissions,entry_timeout=30,attr_timeout=30,"
                   "negative_timeout=30") {
    pool.make_dir("containers");
    c1 = pool.make_dir("containers/c1");
    live = pool.make_subvolume("containers/c1/databases");
    mnt = pool.make_temp_dir("mnt");
    daemon = std::make_unique<Daemon>(dbfs_argv(live, mnt, options), mnt,
                                      pool.dir() + "/daemon.log");
    auto fd = hoody::sys::open(c1.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(fd.ok());
    c1_fd = std::move(*fd);
  }

  // A writable snapshot of the live subvolume now, as the state to restore.
  std::string snapshot() {
    std::string name = ".restore-" + std::to_string(++round);
    auto live_fd = hoody::sys::open(live.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(live_fd.ok());
    ::syncfs(live_fd->get());
    REQUIRE(hoody::btrfs::snapshot(live_fd->get(), c1_fd.get(), name.c_str(), false).ok());
    return name;
  }
  // The exchange of store/restore.cpp: the snapshot becomes the live one,
  // the old live one is then at c1/<name>.
  void exchange(const std::string& name) {
    REQUIRE(::renameat2(c1_fd.get(), name.c_str(), c1_fd.get(), "databases", RENAME_EXCHANGE) ==
            0);
  }
  ctl::Client client() {
    auto c = ctl::Client::connect(live);
    REQUIRE_MESSAGE(c.ok(), "connect: " << c.error().message());
    return std::move(*c);
  }
  json call(ctl::Client& c, const json& req) {
    auto r = c.call(req, kCallTimeout);
    REQUIRE_MESSAGE(r.ok(), req.dump() << ": " << r.error().message() << "\n" << daemon->log());
    return *r;
  }
  json source_replaced() {
    auto c = client();
    json r = call(c, {{"op", "source-replaced"}});
    REQUIRE_MESSAGE(r["ok"] == true, r.dump());
    return r;
  }
};

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
void write_text(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
}
bool exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}
std::set<std::string> listing(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d))
    if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.insert(e->d_name);
  ::closedir(d);
  return out;
}
long long rows(const std::string& db) {
  Db h = open_db(db, 2000, SQLITE_OPEN_READWRITE);
  return query_int(h.get(), "SELECT count(*) FROM t");
}
std::string digest(const std::string& path) {  // the bytes, for "unchanged" checks
  return read_text(path);
}
// The targets of the daemon's open fds.
std::vector<std::string> daemon_fds(pid_t pid) {
  std::vector<std::string> out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  for (const auto& n : listing(dir)) {
    auto t = hoody::sys::read_link(AT_FDCWD, (dir + "/" + n).c_str());
    if (t.ok()) out.push_back(*t);
  }
  return out;
}

}  // namespace

TEST_CASE("source-replaced: right after the reply, lookups, opens and readdir see the restored tree") {
  Rig r;
  std::string db = r.mnt + "/app.db";
  {
    Db h = open_db(db, 2000);
    exec(h.get(), "CREATE TABLE t(x); WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 "
                  "FROM c WHERE i<10) INSERT INTO t SELECT i FROM c;");
  }
  REQUIRE(::mkdir((r.mnt + "/sub").c_str(), 0755) == 0);
  write_text(r.mnt + "/kept.txt", "v1");
  write_text(r.mnt + "/sub/inner.txt", "v1");
  write_text(r.mnt + "/only_in_snapshot.txt", "old");
  std::string snap = r.snapshot();
  const auto restored_names = listing(r.mnt);

  // The state that the restore discards, with the kernel caching all of it.
  {
    Db h = open_db(db, 2000);
    exec(h.get(), "INSERT INTO t VALUES (11), (12), (13)");
  }
  write_text(r.mnt + "/kept.txt", "v2");
  write_text(r.mnt + "/sub/inner.txt", "v2");
  write_text(r.mnt + "/only_after.txt", "new");
  REQUIRE(::unlink((r.mnt + "/only_in_snapshot.txt").c_str()) == 0);
  CHECK_FALSE(exists(r.mnt + "/only_in_snapshot.txt"));  // a negative entry now
  CHECK(exists(r.mnt + "/only_after.txt"));
  CHECK(read_text(r.mnt + "/sub/inner.txt") == "v2");
  CHECK(rows(db) == 13);
  CHECK(listing(r.mnt).count("only_after.txt"));

  r.exchange(snap);
  json rep = r.source_replaced();
  // The inotify watch may have followed the exchange first: then "changed"
  // is false, but the reply still comes after its invalidation completed.
  CHECK(rep["epoch"] == 1);

  // At once, with entry/attr/negative timeouts of 30 s.
  CHECK(rows(db) == 10);
  CHECK(read_text(r.mnt + "/kept.txt") == "v1");
  CHECK(read_text(r.mnt + "/sub/inner.txt") == "v1");
  CHECK(exists(r.mnt + "/only_in_snapshot.txt"));
  CHECK_FALSE(exists(r.mnt + "/only_after.txt"));
  CHECK(listing(r.mnt) == restored_names);
  CHECK(listing(r.mnt + "/sub") == std::set<std::string>{"inner.txt"});

  // New writes land in the restored subvolume, the one at the SOURCE path.
  {
    Db h = open_db(db, 2000);
    exec(h.get(), "INSERT INTO t VALUES (100)");
  }
  CHECK(rows(r.live + "/app.db") == 11);
  CHECK(rows(r.c1 + "/" + snap + "/app.db") == 13);  // the old tree untouched

  // Idempotent: nothing changed since.
  json again = r.source_replaced();
  CHECK(again["changed"] == false);
  CHECK(again["epoch"] == 1);
  auto st = status_of(r.mnt);
  CHECK(st["epoch"] == 1);
  CHECK(st["quiesced"] == false);
}

TEST_CASE("a connection held across the restore: its next write fails (SQLITE_IOERR), nothing "
          "reaches the old subvolume, its close succeeds") {
  Rig r;
  for (std::string mode : {"delete", "wal"}) {
    CAPTURE(mode);
    std::string db = r.mnt + "/held-" + mode + ".db";
    create_db(db, mode);
    {
      Db h = open_db(db, 2000);
      exec(h.get(), insert_sql(0, 0, 0));
    }
    std::string snap = r.snapshot();
    Pipe opened, go;
    auto sh = make_shared_mem<Shared>();
    Child holder([&] {
      Db h = open_db(db, 0);
      if (exec_rc(h.get(), insert_sql(1, 0, 0)) != SQLITE_OK) return 10;  // 2 rows
      opened.signal();
      if (!go.wait_signal(20s)) return 11;
      int rc = exec_rc(h.get(), insert_sql(1, 1, 0));
      sh->procs[0].other_errors = rc;
      std::snprintf(sh->procs[0].last_error, sizeof sh->procs[0].last_error, "%s",
                    sqlite3_errmsg(h.get()));
      int rc2 = exec_rc(h.get(), "BEGIN IMMEDIATE; " + insert_sql(1, 2, 0) + "; COMMIT");
      sh->procs[1].other_errors = rc2;
      if (!sqlite3_get_autocommit(h.get())) exec_rc(h.get(), "ROLLBACK");
      int closed = sqlite3_close(h.release());
      sh->procs[2].other_errors = closed;
      return 0;
    });
    REQUIRE(opened.wait_signal(20s));
    r.exchange(snap);
    json rep = r.source_replaced();
    // The holder is named.
    bool named = false;
    for (auto& h : rep["stale_holders"])
      if (h["pid"] == holder.pid() && h["path"] == "held-" + mode + ".db") named = true;
    CHECK_MESSAGE(named, rep.dump());
    std::string old_db = r.c1 + "/" + snap + "/held-" + mode + ".db";
    std::string before = digest(old_db), before_wal = digest(old_db + "-wal");
    go.signal();
    auto ex = holder.wait();
    CHECK_MESSAGE(ex.exit_code == 0, ex.describe());
    int rc = sh->procs[0].other_errors.load();
    CHECK_MESSAGE((rc & 0xff) == SQLITE_IOERR, "write after the restore gave " << rc << " "
                                                 << sqlite3_errstr(rc) << ": "
                                                 << sh->procs[0].last_error);
    int rc2 = sh->procs[1].other_errors.load();
    CHECK_MESSAGE((rc2 & 0xff) == SQLITE_IOERR, "second transaction gave " << rc2);
    CHECK(sh->procs[2].other_errors.load() == SQLITE_OK);  // close
    CHECK(digest(old_db) == before);
    CHECK(digest(old_db + "-wal") == before_wal);
    {
      Db h = open_db(r.c1 + "/" + snap + "/held-" + mode + ".db", 0, SQLITE_OPEN_READONLY);
      CHECK(query_int(h.get(), "SELECT count(*) FROM t WHERE p = 1 AND s > 0") == 0);
    }
    // A new connection sees the restored state and writes into it.
    CHECK(rows(db) == 1);
    {
      Db h = open_db(db, 0);
      CHECK(exec_rc(h.get(), insert_sql(2, 0, 0)) == SQLITE_OK);
      CHECK(query(h.get(), "PRAGMA integrity_check") == "ok");
    }
    CHECK(rows(r.live + "/held-" + mode + ".db") == 2);
    CHECK(r.daemon->log().find("file opened before a restore of the source") != std::string::npos);
  }
}

TEST_CASE("Python's sqlite3 holding a connection across the restore gets an error, not a lost "
          "commit") {
  std::string py = find_tool("python3");
  if (py.empty()) {
    if (std::getenv("CI")) FAIL("python3 is missing");
    MESSAGE("python3 not found: skipped");
    return;
  }
  Rig r;
  std::string db = r.mnt + "/py.db";
  create_db(db, "wal");
  std::string snap = r.snapshot();
  std::string ready = r.pool.dir() + "/py.ready", go = r.pool.dir() + "/py.go";
  const char* script = R"PY(
import os, sqlite3, sys, time
db, ready, go = sys.argv[1:4]
c = sqlite3.connect(db)  # timeout=5 s by default
c.execute("INSERT INTO t(p, s, k, v) VALUES (3, 0, 0, x'00')"); c.commit()
open(ready, "w").close()
while not os.path.exists(go): time.sleep(0.01)
try:
    c.execute("INSERT INTO t(p, s, k, v) VALUES (3, 1, 0, x'00')"); c.commit()
    print("WROTE")
except sqlite3.Error as e:
    print("ERROR", e)
c.close()
print("CLOSED")
)PY";
  std::string script_path = r.pool.dir() + "/held.py";
  write_text(script_path, script);
  Child holder([&] {
    ::execl(py.c_str(), py.c_str(), script_path.c_str(), db.c_str(), ready.c_str(), go.c_str(),
            nullptr);
    return 127;
  });
  for (int i = 0; i < 2000 && !exists(ready); ++i) ::usleep(10000);
  REQUIRE(exists(ready));
  std::string old_wal = r.c1 + "/" + snap + "/py.db-wal";
  r.exchange(snap);
  r.source_replaced();
  std::string before = digest(old_wal);
  write_text(go, "");
  auto ex = holder.wait();
  CHECK_MESSAGE(ex.exit_code == 0, ex.describe());
  CHECK_MESSAGE(ex.output.find("ERROR disk I/O error") != std::string::npos, ex.output);
  CHECK(ex.output.find("CLOSED") != std::string::npos);
  CHECK(ex.output.find("WROTE") == std::string::npos);
  CHECK(digest(old_wal) == before);
  CHECK(rows(db) == 0);  // the restored state: the snapshot was taken before its first row
}

TEST_CASE("plain files opened before the restore: writes, fsync, truncate and locks give EIO; "
          "unlock, reads and close work") {
  Rig r;
  std::string path = r.mnt + "/plain.txt";
  write_text(path, "hello");
  std::string snap = r.snapshot();
  int fd = ::open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  struct flock fl{};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  REQUIRE(::fcntl(fd, F_SETLK, &fl) == 0);  // held across the change
  r.exchange(snap);
  r.source_replaced();
  char buf[16] = {};
  CHECK(::pread(fd, buf, 5, 0) == 5);  // reads: the old file, like a deleted one
  CHECK(::pwrite(fd, "x", 1, 0) == -1);
  CHECK(errno == EIO);
  CHECK(::fsync(fd) == -1);
  CHECK(errno == EIO);
  CHECK(::ftruncate(fd, 0) == -1);
  CHECK(errno == EIO);
  struct flock fl2 = fl;
  fl2.l_start = 10;
  CHECK(::fcntl(fd, F_SETLK, &fl2) == -1);
  CHECK(errno == EIO);
  fl.l_type = F_UNLCK;
  CHECK(::fcntl(fd, F_SETLK, &fl) == 0);
  CHECK(::close(fd) == 0);
  CHECK(read_text(r.c1 + "/" + snap + "/plain.txt") == "hello");
}

TEST_CASE("issue 7 item 2: dbfs keeps no fd in a replaced subvolume; 8 rounds, the fd count "
          "stays flat, each old subvolume can be deleted") {
  Rig r("allow_other,default_permissions");
  std::string db = r.mnt + "/app.db";
  create_db(db, "wal");
  ::mkdir((r.mnt + "/d1").c_str(), 0755);
  ::mkdir((r.mnt + "/d1/d2").c_str(), 0755);
  size_t first = 0, last = 0;
  for (int i = 0; i < 8; ++i) {
    CAPTURE(i);
    // Work through the mount: the daemon holds inodes of the tree.
    {
      Db h = open_db(db, 2000);
      exec(h.get(), insert_sql(0, i, 0));
    }
    write_text(r.mnt + "/d1/d2/f" + std::to_string(i), "x");
    listing(r.mnt + "/d1/d2");
    std::string snap = r.snapshot();
    r.exchange(snap);
    r.source_replaced();
    std::string old_tree = r.c1 + "/" + snap;
    for (const auto& t : daemon_fds(r.daemon->pid()))
      CHECK_MESSAGE(t.rfind(old_tree, 0) != 0, "the daemon holds " << t);
    CHECK(hoody::btrfs::delete_subvolume(r.c1_fd.get(), snap.c_str()).ok());
    auto fds = daemon_fds(r.daemon->pid());
    for (const auto& t : fds) CHECK_MESSAGE(t.find("(deleted)") == std::string::npos, t);
    // The fds into the pool (the root's O_PATH fd, the mount fd, the
    // exclusivity lock): as many after each round as after the first.
    // (libfuse's per-thread splice pipes come and go with its worker threads.)
    size_t pool_fds = 0;
    std::string all;
    for (const auto& t : fds) {
      all += t + "\n";
      if (t.rfind(r.pool.path(), 0) == 0) ++pool_fds;
    }
    if (i == 0) first = pool_fds;
    last = pool_fds;
    CHECK_MESSAGE(pool_fds == first, "round " << i << ": " << pool_fds << " fds into the pool:\n"
                                              << all);
  }
  CHECK_MESSAGE(last == first, "fds into the pool after round 1: " << first << ", after 8: "
                                                                 << last);
  CHECK(first <= 3);
  CHECK(rows(db) == 8);
  CHECK(status_of(r.mnt)["epoch"] == 8);
}

TEST_CASE("quiesce waits for a writer's transaction; timeout lists it busy; resume hands on") {
  Rig r;
  std::string db = r.mnt + "/app.db";
  create_db(db, "delete");
  Pipe in_txn, finish;
  auto sh = make_shared_mem<Shared>();
  Child writer([&] {
    Db h = open_db(db, 0);
    if (exec_rc(h.get(), "BEGIN IMMEDIATE") != SQLITE_OK) return 10;
    if (exec_rc(h.get(), insert_sql(0, 0, 0)) != SQLITE_OK) return 11;
    in_txn.signal();
    ::usleep(400 * 1000);
    return exec_rc(h.get(), "COMMIT") == SQLITE_OK ? 0 : 12;
  });
  REQUIRE(in_txn.wait_signal(20s));
  auto c = r.client();
  json q = r.call(c, {{"op", "quiesce"}, {"timeout_ms", 5000}, {"hold_ms", 60000}});
  CHECK(q["ok"] == true);
  CHECK(q["busy"].empty());
  CHECK(q["databases"].get<int>() >= 1);
  CHECK_MESSAGE(q["ms"].get<double>() >= 200, q.dump());  // it waited for the commit
  CHECK(writer.wait().exit_code == 0);
  CHECK(status_of(r.mnt)["quiesced"] == true);
  json res = r.call(c, {{"op", "resume"}});
  CHECK(res["ok"] == true);
  CHECK(res["was_quiesced"] == true);
  CHECK(status_of(r.mnt)["quiesced"] == false);

  // A transaction longer than the timeout: reported busy, not held.
  Child slow([&] {
    Db h = open_db(db, 0);
    if (exec_rc(h.get(), "BEGIN IMMEDIATE") != SQLITE_OK) return 10;
    if (exec_rc(h.get(), insert_sql(1, 0, 0)) != SQLITE_OK) return 11;
    in_txn.signal();
    if (!finish.wait_signal(20s)) return 12;
    return exec_rc(h.get(), "COMMIT") == SQLITE_OK ? 0 : 13;
  });
  REQUIRE(in_txn.wait_signal(20s));
  q = r.call(c, {{"op", "quiesce"}, {"timeout_ms", 200}, {"hold_ms", 60000}});
  CHECK(q["ok"] == true);
  CHECK(q["busy"] == json::array({"app.db"}));
  CHECK(q["ms"].get<double>() >= 190);
  finish.signal();
  CHECK(slow.wait().exit_code == 0);  // its commit went through
  r.call(c, {{"op", "resume"}});
  CHECK(rows(db) == 2);
}

TEST_CASE("quiesce: new writers wait (busy_timeout 0, no BUSY) and commit after resume") {
  Rig r;
  for (std::string mode : {"delete", "wal"}) {
    CAPTURE(mode);
    std::string db = r.mnt + "/q-" + mode + ".db";
    create_db(db, mode);
    auto c = r.client();
    json q = r.call(c, {{"op", "quiesce"}, {"timeout_ms", 2000}, {"hold_ms", 60000}});
    REQUIRE(q["ok"] == true);
    auto sh = make_shared_mem<Shared>();
    sh->go = 1;
    std::vector<Child> writers;
    for (int p = 0; p < 4; ++p)
      writers.emplace_back([&, p] { return worker(*sh, p, db, Kind::autocommit, 5, 0); });
    ::usleep(500 * 1000);
    CHECK(sh->committed_total() == 0);  // all wait
    CHECK(sh->busy_total() == 0);
    json res = r.call(c, {{"op", "resume"}});
    CHECK(res["held_ms"].get<double>() >= 400);
    for (auto& w : writers) CHECK(w.wait().exit_code == 0);
    CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report());
    CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
    CHECK(sh->committed_total() == 20);
    Db h = open_db(db, 2000);
    check_rows(h.get(), *sh, 4, 1);
  }
}

TEST_CASE("kill -9 of the process holding a quiesce: writers go on within a second") {
  Rig r;
  std::string db = r.mnt + "/app.db";
  create_db(db, "wal");
  Pipe held;
  std::string live = r.live;
  Child quiescer([&] {
    auto c = ctl::Client::connect(live);
    if (!c) return 10;
    auto q = c->call({{"op", "quiesce"}, {"timeout_ms", 2000}, {"hold_ms", 60000}}, 10s);
    if (!q || (*q)["ok"] != true) return 11;
    held.signal();
    ::pause();
    return 0;
  });
  REQUIRE(held.wait_signal(20s));
  auto sh = make_shared_mem<Shared>();
  sh->go = 1;
  Child writer([&] { return worker(*sh, 0, db, Kind::autocommit, 1, 0); });
  ::usleep(300 * 1000);
  CHECK(sh->committed_total() == 0);
  auto t0 = Clock::now();
  ::kill(quiescer.pid(), SIGKILL);
  quiescer.wait();
  while (sh->committed_total() == 0 && Clock::now() - t0 < 5s) ::usleep(1000);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0);
  CHECK(writer.wait().exit_code == 0);
  CHECK(sh->committed_total() == 1);
  CHECK_MESSAGE(took < 1000ms, "the writer went on " << took.count() << " ms after the kill");
  MESSAGE("writer committed " << took.count() << " ms after kill -9 of the quiescer");
  CHECK(status_of(r.mnt)["quiesced"] == false);
}

TEST_CASE("a second quiesce waits for the first, then EBUSY; hold_ms ends a forgotten one") {
  Rig r;
  create_db(r.mnt + "/app.db", "delete");
  auto a = r.client();
  auto b = r.client();
  json q = r.call(a, {{"op", "quiesce"}, {"timeout_ms", 1000}, {"hold_ms", 1500}});
  REQUIRE(q["ok"] == true);
  auto t0 = Clock::now();
  json q2 = r.call(b, {{"op", "quiesce"}, {"timeout_ms", 300}, {"hold_ms", 1000}});
  CHECK(q2["ok"] == false);
  CHECK(q2["errno"] == "EBUSY");
  CHECK(Clock::now() - t0 >= 280ms);
  // a's hold time ends it (nobody resumed): b may quiesce then.
  json q3 = r.call(b, {{"op", "quiesce"}, {"timeout_ms", 3000}, {"hold_ms", 60000}});
  CHECK(q3["ok"] == true);
  CHECK(Clock::now() - t0 >= 1400ms);
  CHECK(r.daemon->log().find("hold time over") != std::string::npos);
  json res = r.call(b, {{"op", "resume"}});
  CHECK(res["was_quiesced"] == true);
  json none = r.call(a, {{"op", "resume"}});  // nothing held: a no-op
  CHECK(none["ok"] == true);
  CHECK(none["was_quiesced"] == false);
}

TEST_CASE("control socket: peer credentials (nobody is refused), holders, bad requests") {
  Rig r;
  std::string live = r.live;
  auto ex = run_child([&] {
    // connect() may succeed (the server refuses at accept and closes): the
    // first call then finds the connection reset.
    auto c = ctl::Client::connect(live);
    if (!c) {
      std::fprintf(stderr, "connect: %s\n", c.error().message().c_str());
      return 10;
    }
    auto rep = c->call({{"op", "holders"}}, 5s);
    if (rep.ok()) std::fprintf(stderr, "reply: %s\n", rep->dump().c_str());
    else std::fprintf(stderr, "call: %s\n", rep.error().message().c_str());
    return rep.ok() ? 11 : (rep.error().value() == ECONNRESET ? 0 : 12);
  }, {.as_nobody = true});
  CHECK_MESSAGE(ex.exit_code == 0, ex.describe());
  CHECK(r.daemon->log().find("uid=65534") != std::string::npos);

  // holders: a process with a file open through the mount.
  ::mkdir((r.mnt + "/dir").c_str(), 0755);
  write_text(r.mnt + "/dir/open.txt", "x");
  Pipe opened, done;
  std::string path = r.mnt + "/dir/open.txt";
  Child h([&] {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) return 10;
    opened.signal();
    done.wait_signal(20s);
    ::close(fd);
    return 0;
  });
  REQUIRE(opened.wait_signal(20s));
  auto c = r.client();
  json hs = r.call(c, {{"op", "holders"}});
  bool seen = false;
  for (auto& row : hs["holders"])
    if (row["pid"] == h.pid() && row["path"] == "dir/open.txt" && !row["comm"].get<std::string>().empty())
      seen = true;
  CHECK_MESSAGE(seen, hs.dump());
  done.signal();
  CHECK(h.wait().exit_code == 0);

  json bad = r.call(c, {{"op", "frobnicate"}});
  CHECK(bad["ok"] == false);
  CHECK(bad["errno"] == "EINVAL");
  // No dbfs on this path: ECONNREFUSED, as snapfs expects.
  auto none = ctl::Client::connect(r.pool.path() + "/nothing-here");
  REQUIRE_FALSE(none.ok());
  CHECK(none.error().value() == ECONNREFUSED);
}

TEST_CASE("timings: quiesce with 8 idle connections, source-replaced with 10k names in the root") {
  Rig r("allow_other,default_permissions");
  std::string db = r.mnt + "/app.db";
  create_db(db, "wal");
  auto sh = make_shared_mem<Shared>();
  std::vector<Child> idle;
  for (int p = 0; p < 8; ++p)
    idle.emplace_back([&] {
      Db h = open_db(db, 0);
      query(h.get(), "SELECT count(*) FROM t");
      sh->flag[0].fetch_add(1);
      while (!sh->stop.load()) ::usleep(1000);
      return 0;
    });
  while (sh->flag[0].load() < 8) ::usleep(1000);
  auto c = r.client();
  double worst = 0;
  for (int i = 0; i < 5; ++i) {
    auto t0 = Clock::now();
    json q = r.call(c, {{"op", "quiesce"}, {"timeout_ms", 2000}});
    r.call(c, {{"op", "resume"}});
    double rt = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count() /
                1000.0;
    CHECK(q["busy"].empty());
    worst = std::max(worst, rt);
  }
  MESSAGE("quiesce+resume round trip with 8 idle connections: worst of 5 = " << worst << " ms");
  CHECK(worst < 100);  // a bound for a loaded 2-core machine; the target is < 5 ms
  sh->stop = 1;
  for (auto& ch : idle) CHECK(ch.wait().exit_code == 0);

  for (int i = 0; i < 10000; ++i) {
    int fd = ::open((r.live + "/f" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  CHECK(listing(r.mnt).size() >= 10000);  // the kernel caches 10k entries
  std::string snap = r.snapshot();
  r.exchange(snap);
  auto t0 = Clock::now();
  json rep = r.source_replaced();
  double rt = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t0).count() /
              1000.0;
  MESSAGE("source-replaced with 10k names in the root: " << rt << " ms (daemon: " << rep["ms"]
                                                         << " ms, changed=" << rep["changed"] << ")");
  CHECK(rt < 2000);
}

TEST_CASE("8 writers through a restore (quiesce, exchange, source-replaced, resume): no commit is "
          "lost, none lands in the old tree, 0 BUSY") {
  Rig r("allow_other,default_permissions");
  for (std::string mode : {"delete", "wal"}) {
    CAPTURE(mode);
    std::string db = r.mnt + "/w-" + mode + ".db";
    create_db(db, mode);
    std::string target = r.snapshot();  // the state to restore: an empty table
    constexpr int kWriters = 8;
    auto sh = make_shared_mem<Shared>();
    std::vector<Child> writers;
    for (int p = 0; p < kWriters; ++p)
      writers.emplace_back([&, p] {
        ProcStats& me = sh->procs[p];
        int gen = 0;
        Db h = open_db(db, 0);
        sh->flag[0].fetch_add(1);
        for (int s = 0; s < kMaxTxns && !sh->stop.load(); ++s) {
          int rc = exec_rc(h.get(), insert_sql(p, s, gen));
          if (rc == SQLITE_OK) {
            me.txn_committed[s] = static_cast<unsigned char>(gen + 1);
            me.committed.fetch_add(1);
          } else if ((rc & 0xff) == SQLITE_IOERR && gen == 0) {
            h.reset();  // as after a cold start: reconnect
            gen = 1;
            h = open_db(db, 0);
            sh->flag[1].fetch_add(1);
          } else {
            record_error(me, h.get(), rc, "INSERT");
          }
          ::usleep(2000);
        }
        return 0;
      });
    while (sh->flag[0].load() < kWriters) ::usleep(1000);
    ::usleep(300 * 1000);
    auto c = r.client();
    json q = r.call(c, {{"op", "quiesce"}, {"timeout_ms", 2000}});
    CHECK(q["busy"].empty());
    r.exchange(target);
    json rep = r.call(c, {{"op", "source-replaced"}});
    CHECK(rep["ok"] == true);
    r.call(c, {{"op", "resume"}});
    // Every writer notices (its next statement fails) and reconnects.
    auto until = Clock::now() + 10s;
    while (sh->flag[1].load() < kWriters && Clock::now() < until) ::usleep(1000);
    CHECK(sh->flag[1].load() == kWriters);
    ::usleep(300 * 1000);
    sh->stop = 1;
    for (auto& w : writers) CHECK(w.wait().exit_code == 0);
    CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report());
    CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());

    // The live database: exactly the commits made after reconnecting.
    // The old tree: exactly the commits made before.
    auto check_tree = [&](const std::string& path, int want_gen) {
      Db h = open_db(path, 2000, SQLITE_OPEN_READONLY);
      CHECK(query(h.get(), "PRAGMA integrity_check") == "ok");
      std::set<std::pair<int, int>> got;
      sqlite3_stmt* st = nullptr;
      REQUIRE(sqlite3_prepare_v2(h.get(), "SELECT p, s, k FROM t", -1, &st, nullptr) == SQLITE_OK);
      int wrong = 0;
      while (sqlite3_step(st) == SQLITE_ROW) {
        int p = sqlite3_column_int(st, 0), s = sqlite3_column_int(st, 1),
            k = sqlite3_column_int(st, 2);
        if (k != want_gen || sh->procs[p].txn_committed[s] != want_gen + 1) ++wrong;
        got.insert({p, s});
      }
      sqlite3_finalize(st);
      int missing = 0, n = 0;
      for (int p = 0; p < kWriters; ++p)
        for (int s = 0; s < kMaxTxns; ++s)
          if (sh->procs[p].txn_committed[s] == want_gen + 1) {
            ++n;
            if (!got.count({p, s})) ++missing;
          }
      CHECK_MESSAGE(wrong == 0, path << ": " << wrong << " rows that do not belong there");
      CHECK_MESSAGE(missing == 0, path << ": " << missing << " of " << n << " commits missing");
      CHECK(n > 0);
      return n;
    };
    int after = check_tree(r.live + "/w-" + mode + ".db", 1);
    int before = check_tree(r.c1 + "/" + target + "/w-" + mode + ".db", 0);
    MESSAGE(mode << ": " << before << " commits before the restore (in the old tree), " << after
                 << " after (in the live one)");
  }
}

TEST_CASE("issue 11's loop at the dbfs level: 50 restores, a row written right after each one is "
          "kept") {
  Rig r("allow_other,default_permissions");
  std::string db = r.mnt + "/app.db";
  create_db(db, "wal");
  constexpr int kRounds = 50;
  for (int i = 0; i < kRounds; ++i) {
    CAPTURE(i);
    std::string snap = r.snapshot();  // holds the rows so far
    r.exchange(snap);
    r.source_replaced();
    {
      Db h = open_db(db, 0);  // a new connection, right after the reply
      exec(h.get(), insert_sql(0, i, 0));
    }
    // The restore deletes the old live subvolume right away.
    REQUIRE(hoody::btrfs::delete_subvolume(r.c1_fd.get(), snap.c_str()).ok());
  }
  CHECK(rows(db) == kRounds);
  CHECK(rows(r.live + "/app.db") == kRounds);
}
