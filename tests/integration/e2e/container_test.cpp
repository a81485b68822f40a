// The whole /hoody tree of one container, wired as scripts/hoody-up wires it,
// through the headline flow: an agent snapshots before a risky change, the
// change goes wrong, it restores.  Afterwards /hoody/storage (a bind mount of
// the storage subvolume) and /hoody/databases (hoody-dbfs) both show the
// restored state, SQLite keeps working on it, and nothing of the old live
// subvolumes is left behind.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <thread>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;

namespace {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  REQUIRE_MESSAGE(v, name << " must name the daemon under test");
  return v;
}

int sql_int(const std::string& db, const std::string& q) {
  sqlite3* h = nullptr;
  int out = -1;
  if (sqlite3_open_v2(db.c_str(), &h, SQLITE_OPEN_READWRITE, nullptr) == SQLITE_OK) {
    sqlite3_stmt* st = nullptr;
    if (sqlite3_prepare_v2(h, q.c_str(), -1, &st, nullptr) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
  }
  sqlite3_close(h);
  return out;
}

void sql(const std::string& db, const std::string& q) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(h, q.c_str(), nullptr, nullptr, &err);
  CHECK_MESSAGE(rc == SQLITE_OK, q << ": " << (err ? err : ""));
  sqlite3_free(err);
  sqlite3_close(h);
}

void write_file(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::trunc) << data;
}

}  // namespace

TEST_CASE("snapshot, a change gone wrong, restore: /hoody/storage and /hoody/databases are back") {
  require_mount_capabilities();
  BtrfsPool pool;
  pool.make_dir("containers");
  std::string c = pool.make_dir("containers/c1");
  std::string storage_sv = pool.make_subvolume("containers/c1/storage");
  std::string databases_sv = pool.make_subvolume("containers/c1/databases");
  std::string root = pool.make_temp_dir("hoody");
  std::string storage = root + "/storage", databases = root + "/databases",
              snapshots = root + "/.snapshots";
  for (auto& d : {storage, databases, snapshots}) REQUIRE(::mkdir(d.c_str(), 0755) == 0);

  // /hoody/storage: a bind mount of the subvolume.
  auto bind_id = register_resource(Resource::mount, storage);
  run_checked({"mount", "--bind", storage_sv, storage});
  struct Unbind {
    std::string p;
    std::uint64_t id;
    ~Unbind() {
      run({"umount", "-l", p});
      release(id);
    }
  } unbind{storage, bind_id};
  Daemon dbfs({env("HOODY_DBFS"), "-f", "-o", "allow_other", databases_sv, databases}, databases,
              pool.dir() + "/dbfs.log");
  Daemon snapfs({env("HOODY_SNAPFS"), "-f", "-o", "allow_other", c, snapshots}, snapshots,
                pool.dir() + "/snapfs.log");

  // The good state.
  write_file(storage + "/config.yaml", "version: 1\n");
  std::string db = databases + "/app.db";
  sql(db, "PRAGMA journal_mode=WAL; CREATE TABLE users(name); INSERT INTO users VALUES ('ada'), ('bob');");

  // An agent snapshots before its risky change.
  REQUIRE(::mkdir((snapshots + "/pre-migration").c_str(), 0755) == 0);
  struct stat st;
  CHECK(::stat((snapshots + "/pre-migration/storage/config.yaml").c_str(), &st) == 0);

  // The change goes wrong.
  write_file(storage + "/config.yaml", "version: 2 (broken)\n");
  write_file(storage + "/junk", "left by the migration\n");
  sql(db, "DELETE FROM users; ALTER TABLE users ADD COLUMN broken;");
  REQUIRE(sql_int(db, "SELECT count(*) FROM users") == 0);

  // What changed, then restore.
  std::string diff = slurp(snapshots + "/.hoody/diff/pre-migration..@live");
  CHECK_MESSAGE(diff.find("+ storage/junk") != std::string::npos, diff);
  CHECK_MESSAGE(diff.find("M storage/config.yaml") != std::string::npos, diff);
  {
    int fd = ::open((snapshots + "/.hoody/restore").c_str(), O_WRONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "pre-migration\n", 14) == 14);  // returns when the restore is done
    ::close(fd);
  }

  // /hoody/storage shows the restored tree at once.
  CHECK(slurp(storage + "/config.yaml") == "version: 1\n");
  CHECK(::access((storage + "/junk").c_str(), F_OK) != 0);
  // /hoody/databases follows within its entry timeout, and SQLite works on it.
  int users = -1;
  for (int i = 0; i < 50 && users != 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    users = sql_int(db, "SELECT count(*) FROM users");
  }
  CHECK_MESSAGE(users == 2, "hoody-dbfs still shows " << users << " users\n" << dbfs.log());
  sql(db, "INSERT INTO users VALUES ('cy')");
  CHECK(sql_int(databases_sv + "/app.db", "SELECT count(*) FROM users") == 3);
  CHECK(sql_int(db, "SELECT count(*) FROM pragma_integrity_check WHERE integrity_check = 'ok'") == 1);
  // Writes through /hoody/storage land in the live subvolume.
  write_file(storage + "/after", "x");
  CHECK(slurp(storage_sv + "/after") == "x");

  // The safety snapshot holds the broken state; the old live subvolumes are gone.
  std::string listing = slurp(snapshots + "/.hoody/snapshots.json");
  CHECK_MESSAGE(listing.find("pre-restore-") != std::string::npos, listing);
  auto leftovers = run({"sh", "-c", "btrfs subvolume list -o '" + c + "/.snapshots' | grep -c restore- || true"});
  CHECK_MESSAGE(leftovers.output == "0\n", leftovers.output);
}
