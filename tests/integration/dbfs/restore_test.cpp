// hoody-dbfs across a snapshot restore: the store swaps the databases
// subvolume with renameat2(RENAME_EXCHANGE).  The running daemon must then
// serve the restored subvolume (not keep writing into the old, soon deleted
// one), hold its exclusivity lock on it, and show the restored data.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "hoody/btrfs.hpp"
#include "hoody/sys.hpp"
#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

namespace {
int count_rows(const std::string& db) {
  sqlite3* h = nullptr;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    sqlite3_close(h);
    return -1;
  }
  sqlite3_stmt* st = nullptr;
  int n = -1;
  if (sqlite3_prepare_v2(h, "SELECT count(*) FROM t", -1, &st, nullptr) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(h);
  return n;
}
void exec(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(h, sql.c_str(), nullptr, nullptr, &err);
  CHECK_MESSAGE(rc == SQLITE_OK, sql << ": " << (err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(h);
}
}  // namespace

TEST_CASE("a restore under a running hoody-dbfs: the mount serves the restored subvolume") {
  require_mount_capabilities();
  BtrfsPool pool;
  pool.make_dir("containers");
  pool.make_dir("containers/c1");
  std::string live = pool.make_subvolume("containers/c1/databases");
  std::string mnt = pool.make_temp_dir("mnt");
  Daemon d(dbfs_argv(live, mnt), mnt, pool.dir() + "/daemon.log");

  std::string db = mnt + "/app.db";
  exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE t(x);"
           "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<10) "
           "INSERT INTO t SELECT i FROM c;");
  REQUIRE(count_rows(db) == 10);

  // The snapshot to restore: a writable copy of the subvolume now (10 rows).
  auto c1 = hoody::sys::open((pool.path() + "/containers/c1").c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(c1.ok());
  auto live_fd = hoody::sys::open(live.c_str(), O_RDONLY | O_DIRECTORY);
  REQUIRE(live_fd.ok());
  ::syncfs(live_fd->get());
  REQUIRE(hoody::btrfs::snapshot(live_fd->get(), c1->get(), ".restore", false).ok());
  live_fd->reset();

  exec(db, "INSERT INTO t VALUES (11), (12), (13)");
  REQUIRE(count_rows(db) == 13);

  // What SnapshotStore::restore does: swap, then the old live one goes away.
  REQUIRE(::renameat2(c1->get(), ".restore", c1->get(), "databases", RENAME_EXCHANGE) == 0);

  int seen = -1;
  for (int i = 0; i < 60 && seen != 10; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    seen = count_rows(db);
  }
  CHECK_MESSAGE(seen == 10, "the mount still shows " << seen << " rows, not the restored 10\n"
                                                     << d.log());
  CHECK(d.log().find("was replaced") != std::string::npos);

  // New writes land in the restored subvolume, the one at the SOURCE path.
  exec(db, "INSERT INTO t VALUES (100)");
  CHECK(count_rows(live + "/app.db") == 11);
  exec(live + "/app.db", "PRAGMA integrity_check");

  // The old subvolume can be deleted while the daemon runs.
  CHECK(hoody::btrfs::delete_subvolume(c1->get(), ".restore").ok());
  CHECK(count_rows(db) == 11);

  // The exclusivity lock moved to the restored directory.
  std::string mnt2 = pool.make_temp_dir("mnt2");
  auto second = run({dbfs_command().program, "-f", live, mnt2}, std::chrono::seconds(10));
  CHECK(second.exit_code == 1);
  CHECK_MESSAGE(second.output.find("already served") != std::string::npos, second.output);
}
