// Deployment and operations (issue 4): two "containers" (mount namespaces)
// reaching one hoody-dbfs mount through bind mounts write one WAL database;
// a second daemon on the same SOURCE refuses and says to bind-mount instead;
// --status prints the lock counters during a workload; a wait longer than
// -o lock_wait logs a warn line naming the holder's pid.
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

std::string ns_of(pid_t pid) {
  char buf[128] = {};
  std::string link = "/proc/" + (pid ? std::to_string(pid) : std::string("self")) + "/ns/mnt";
  ssize_t n = ::readlink(link.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

// A "container": a private mount namespace where the hoody-dbfs mount is
// bind-mounted at `at`; runs `writers` worker processes on `at`/db there.
int container(Shared& sh, const std::string& mnt, const std::string& at, int first_id, int writers,
              int txns, int ready_slot) {
  if (::unshare(CLONE_NEWNS) < 0) return 10;
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) return 11;
  if (::mount(mnt.c_str(), at.c_str(), nullptr, MS_BIND, nullptr) < 0) return 12;
  if (!is_mounted(at, "fuse")) return 13;
  std::vector<pid_t> pids;
  for (int i = 0; i < writers; ++i) {
    pid_t p = ::fork();
    if (p == 0) ::_exit(worker(sh, first_id + i, at + "/shared.db", Kind::autocommit, txns, 0));
    pids.push_back(p);
  }
  sh.flag[ready_slot] = 1;
  int bad = 0;
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++bad;
  }
  // Coherence across the namespaces: this container sees the other's rows.
  Db db = open_db(at + "/shared.db", 0);
  long long others = query_int(db.get(), "SELECT count(*) FROM t WHERE p < " + std::to_string(first_id) +
                                             " OR p >= " + std::to_string(first_id + writers));
  std::printf("container %d (ns %s): sees %lld rows of the other container\n", ready_slot,
              ns_of(0).c_str(), others);
  return bad ? 20 : 0;
}

}  // namespace

TEST_CASE("two containers (mount namespaces) bind-mount one hoody-dbfs mount and share a WAL db") {
  Mounted m;
  create_db(m.mnt + "/shared.db", "wal");
  std::string c1 = m.pool.make_temp_dir("c1"), c2 = m.pool.make_temp_dir("c2");
  auto sh = make_shared_mem<Shared>();
  constexpr int kWriters = 4, kTxns = 40;
  Child a([&] { return container(*sh, m.mnt, c1, 0, kWriters, kTxns, 0); }, {.timeout = 120s});
  Child b([&] { return container(*sh, m.mnt, c2, kWriters, kWriters, kTxns, 1); }, {.timeout = 120s});
  auto until = Clock::now() + 20s;
  while ((!sh->flag[0].load() || !sh->flag[1].load()) && Clock::now() < until) ::usleep(1000);
  REQUIRE_MESSAGE((sh->flag[0].load() && sh->flag[1].load()), "the containers did not start");
  CHECK(ns_of(a.pid()) != ns_of(0));
  CHECK(ns_of(b.pid()) != ns_of(0));
  CHECK(ns_of(a.pid()) != ns_of(b.pid()));
  CHECK_FALSE(is_mounted(c1));  // the bind mounts live only in the containers
  sh->go = 1;
  ExitInfo ea = a.wait(), eb = b.wait();
  CHECK_MESSAGE(ea.ok(), ea.describe());
  CHECK_MESSAGE(eb.ok(), eb.describe());
  MESSAGE("two containers x " << kWriters << " writers x " << kTxns << ": committed "
                              << sh->committed_total() << "; " << sh->busy_report() << "\n"
                              << ea.output << eb.output);
  CHECK_MESSAGE(sh->busy_total() == 0, sh->busy_report() << "; " << sh->first_error());
  CHECK_MESSAGE(sh->other_total() == 0, sh->first_error());
  CHECK(sh->committed_total() == 2 * kWriters * kTxns);
  Db db = open_db(m.mnt + "/shared.db", 0);
  CHECK(query(db.get(), "PRAGMA integrity_check") == "ok");
  check_rows(db.get(), *sh, 2 * kWriters, 1);
}

TEST_CASE("a second hoody-dbfs on the same SOURCE refuses and says to bind-mount") {
  Mounted m;
  if (dbfs_command().is_bindfs) return;
  std::string mnt2 = m.pool.make_temp_dir("mnt2");
  std::string log2 = m.pool.dir() + "/daemon2.log";
  bool refused = false;
  try {
    Daemon second(dbfs_argv(m.backing, mnt2), mnt2, log2, {.start_timeout = 5s});
  } catch (const std::runtime_error&) {
    refused = true;
  }
  REQUIRE(refused);
  std::string why = slurp(log2);
  MESSAGE("the second daemon said: " << why);
  CHECK(why.find("already served by another hoody-dbfs") != std::string::npos);
  CHECK(why.find("Bind-mount the existing mount") != std::string::npos);
  CHECK(why.find("-shm") != std::string::npos);
  CHECK_FALSE(is_mounted(mnt2));
  CHECK(is_mounted(m.mnt, "fuse"));
}

TEST_CASE("--status during a workload prints the lock counters as JSON") {
  Mounted m;
  std::string path = m.mnt + "/status.db";
  create_db(path, "wal");
  auto sh = make_shared_mem<Shared>();
  std::vector<Child> kids;
  for (int i = 0; i < 8; ++i)
    kids.emplace_back([&, i] { return worker(*sh, i, path, Kind::immediate, 40, 0); });
  sh->go = 1;
  ::usleep(500000);
  auto mid = status_of(m.mnt);
  for (auto& k : kids) CHECK(k.wait().ok());
  auto end = status_of(m.mnt);
  MESSAGE("--status during the workload:\n" << mid.dump(2));
  const auto& l = mid["locks"];
  for (const char* key : {"waits", "queue_depth", "max_queue_depth", "wait_p50_us", "wait_p99_us",
                          "eagain", "token_handoffs", "deadlocks_broken", "requests", "granted"})
    CHECK_MESSAGE(l.contains(key), "no \"" << key << "\" in --status");
  for (const char* cause : {"try_conflict", "probe", "deadlock_avoid", "stale_snapshot", "timeout",
                            "deadlock", "flush"})
    CHECK_MESSAGE(l["eagain"].contains(cause), "no eagain." << cause);
  CHECK(mid["state"]["domains"].is_array());
  CHECK(mid["mountpoint"].get<std::string>().ends_with("/mnt"));
  CHECK(mid["pid"].get<int>() == m.daemon->pid());
  CHECK(l["requests"].get<long long>() > 0);
  const auto& e = end["locks"];
  CHECK(e["waits"].get<long long>() > 0);
  CHECK(e["token_handoffs"].get<long long>() > 0);
  CHECK(e["wait_p99_us"].get<long long>() >= e["wait_p50_us"].get<long long>());
  CHECK(e["queue_depth"].get<long long>() == 0);
  CHECK(sh->busy_total() == 0);
  // And the client explains a mountpoint nobody serves.
  ExitInfo none = run({dbfs_command().program, "--status", m.pool.dir()});
  CHECK(none.exit_code == 1);
  CHECK(none.output.find("no hoody-dbfs serves") != std::string::npos);
}

TEST_CASE("a wait longer than -o lock_wait=0.5 logs a warn line naming the holder pid") {
  Mounted m("allow_other,default_permissions,lock_wait=0.5");
  std::string path = m.mnt + "/slow.db";
  create_db(path, "delete");
  auto sh = make_shared_mem<Shared>();
  Child holder([&] {
    Db db = open_db(path, 0);
    if (exec_rc(db.get(), "BEGIN IMMEDIATE") != SQLITE_OK) return 1;
    if (exec_rc(db.get(), insert_sql(0, 0, 0)) != SQLITE_OK) return 2;
    sh->flag[0] = 1;
    ::sleep(2);
    return exec_rc(db.get(), "COMMIT") == SQLITE_OK ? 0 : 3;
  });
  auto until = Clock::now() + 10s;
  while (!sh->flag[0].load() && Clock::now() < until) ::usleep(1000);
  REQUIRE(sh->flag[0].load() == 1);
  // The second writer begins: it queues for the token, gives up after 0.5 s.
  Db db = open_db(path, 0);
  auto t0 = Clock::now();
  int rc = exec_rc(db.get(), "BEGIN IMMEDIATE");
  double waited = std::chrono::duration<double>(Clock::now() - t0).count();
  MESSAGE("BEGIN IMMEDIATE behind a 2 s holder with lock_wait=0.5: " << std::string(sqlite3_errstr(rc)) << " after "
                                                                      << waited << " s");
  CHECK((rc & 0xff) == SQLITE_BUSY);
  CHECK(waited >= 0.4);
  CHECK(waited < 1.5);
  if (!sqlite3_get_autocommit(db.get())) exec_rc(db.get(), "ROLLBACK");
  const pid_t holder_pid = holder.pid();
  CHECK(holder.wait().ok());
  std::string log = m.daemon->log();
  std::string warn;
  for (size_t pos = 0; (pos = log.find(" warning ", pos)) != std::string::npos; ++pos) {
    size_t bol = log.rfind('\n', pos);
    bol = bol == std::string::npos ? 0 : bol + 1;
    warn = log.substr(bol, log.find('\n', pos) - bol);
    if (warn.find("EAGAIN") != std::string::npos) break;
  }
  MESSAGE("daemon log: " << warn);
  CHECK(warn.find("holder_pid=" + std::to_string(holder_pid)) != std::string::npos);
  CHECK(warn.find(" pid=" + std::to_string(::getpid())) != std::string::npos);
  CHECK(status_of(m.mnt)["locks"]["eagain"]["timeout"].get<int>() >= 1);
  // The holder committed; its row is there.
  CHECK(query_int(db.get(), "SELECT count(*) FROM t") == 1);
}
