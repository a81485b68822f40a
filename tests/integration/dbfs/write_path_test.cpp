// Issue 10 items 3-4: the write path without extra round trips.  Each check
// counts the requests the daemon received (--status transport.ops, both
// transports) around a workload.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <map>

#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

using Ops = std::map<std::string, std::uint64_t>;

Ops ops_of(const std::string& mnt) {
  Ops out;
  auto st = status_of(mnt);
  for (auto& [k, v] : st["transport"]["ops"].items()) out[k] = v.get<std::uint64_t>();
  return out;
}

// after - before, opcodes with no requests left out; "a=1 b=2" for messages.
Ops delta(const Ops& before, const Ops& after) {
  Ops d;
  for (auto& [k, v] : after) {
    auto it = before.find(k);
    std::uint64_t b = it == before.end() ? 0 : it->second;
    if (v > b) d[k] = v - b;
  }
  return d;
}
std::string show(const Ops& d) {
  std::string s;
  for (auto& [k, v] : d) s += k + "=" + std::to_string(v) + " ";
  return s;
}
std::uint64_t n_of(const Ops& d, const char* op) {
  auto it = d.find(op);
  return it == d.end() ? 0 : it->second;
}

}  // namespace

TEST_CASE("write path: no GETXATTR of security.capability after a WRITE") {
  Mounted m;
  std::string f = m.mnt + "/plain";
  int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, "x", 1, 0) == 1);  // the first write of the inode
  Ops before = ops_of(m.mnt);
  constexpr int kWrites = 200;
  char buf[100] = {};
  for (int i = 0; i < kWrites; ++i) REQUIRE(::pwrite(fd, buf, sizeof buf, i * 100) == 100);
  ::close(fd);
  Ops d = delta(before, ops_of(m.mnt));
  MESSAGE("requests for " << kWrites << " writes: " << show(d));
  CHECK(n_of(d, "WRITE") >= kWrites);
  // Before FUSE_HANDLE_KILLPRIV_V2 the kernel asked for security.capability
  // before every WRITE (file_remove_privs on a FUSE inode).
  CHECK(n_of(d, "GETXATTR") == 0);
  CHECK(n_of(d, "SETATTR") == 0);
}

TEST_CASE("write path: a read-only phase of SELECTs makes no WRITE") {
  Mounted m;
  std::string path = m.mnt + "/hot.db";
  create_db(m.backing + "/hot.db", "wal");
  {
    Db w = open_db(m.backing + "/hot.db", 5000);
    exec(w.get(), "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<100000) "
                  "INSERT INTO t(rowid, p, s, k, v) SELECT x, 0, x, 0, randomblob(1000) FROM c");
    exec(w.get(), "PRAGMA wal_checkpoint(TRUNCATE)");
  }
  Db db = open_db(path, 0);
  query(db.get(), "SELECT sum(length(v)) FROM t");
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db.get(), "SELECT length(v) FROM t WHERE rowid=?", -1, &st, nullptr) ==
          SQLITE_OK);
  Ops before = ops_of(m.mnt);
  constexpr int kTxns = 50, kPerTxn = 100;
  unsigned x = 7;
  for (int t = 0; t < kTxns; ++t) {
    exec(db.get(), "BEGIN");
    for (int i = 0; i < kPerTxn; ++i) {
      x = x * 1103515245u + 12345u;
      sqlite3_bind_int(st, 1, static_cast<int>(x % 100000) + 1);
      REQUIRE(sqlite3_step(st) == SQLITE_ROW);
      sqlite3_reset(st);
    }
    exec(db.get(), "COMMIT");
  }
  sqlite3_finalize(st);
  Ops d = delta(before, ops_of(m.mnt));
  MESSAGE("requests for " << kTxns << " read transactions of " << kPerTxn
                          << " SELECTs: " << show(d));
  CHECK(n_of(d, "WRITE") == 0);
}

TEST_CASE("entry path: a listing with stats makes no LOOKUP per entry (readdirplus)") {
  Mounted m;
  constexpr int kFiles = 60;
  for (int i = 0; i < kFiles; ++i) {
    int fd = ::open((m.backing + "/f" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC,
                    0644);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  Ops before = ops_of(m.mnt);
  DIR* d = ::opendir(m.mnt.c_str());
  REQUIRE(d);
  int seen = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    struct stat st;
    REQUIRE(::fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0);
    ++seen;
  }
  ::closedir(d);
  Ops dl = delta(before, ops_of(m.mnt));
  MESSAGE("requests for a listing of " << seen << " files with a stat each: " << show(dl));
  CHECK(seen == kFiles);
  CHECK(n_of(dl, "READDIRPLUS") >= 1);
  CHECK(n_of(dl, "LOOKUP") < 5);
  CHECK(n_of(dl, "GETATTR") < 5);
}

TEST_CASE("entry path: SQLite's probe of a missing -journal stays in the kernel (negative entry)") {
  Mounted m;
  std::string j = m.mnt + "/db.sqlite-journal";
  REQUIRE(::access(j.c_str(), F_OK) != 0);
  Ops before = ops_of(m.mnt);
  for (int i = 0; i < 200; ++i) REQUIRE(::access(j.c_str(), F_OK) != 0);
  Ops dl = delta(before, ops_of(m.mnt));
  MESSAGE("requests for 200 probes of a missing name: " << show(dl));
  CHECK(n_of(dl, "LOOKUP") <= 1);  // 1 if the 1 s negative_timeout ran out meanwhile
}
