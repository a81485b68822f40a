// Real SQLite 3.40 (the system library) in forked processes, busy_timeout=0,
// with every fcntl lock call and every close() routed to one LockManager in the
// test process (SQLite's xSetSystemCall hooks "fcntl" and "close"), the way the
// FUSE adapter routes FUSE setlk/getlk/flush.  No mount, no kernel locks.
// Asserts the headline promise: zero SQLITE_BUSY for autocommit INSERT,
// BEGIN IMMEDIATE and deferred BEGIN;SELECT;INSERT;COMMIT from several
// processes, in rollback (DELETE) and WAL mode, and integrity_check = ok.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "lock/lock_manager.hpp"

using namespace hoody::dbfs::lock;
namespace fs = std::filesystem;

namespace {

enum Op : std::uint32_t { kSetlk = 1, kGetlk = 2, kFlush = 3, kDone = 4 };

struct Msg {
  std::uint32_t op;
  std::int32_t type;  // F_RDLCK / F_WRLCK / F_UNLCK
  std::int64_t start;
  std::int64_t len;
  std::uint64_t ino;
  std::uint32_t pid;
  std::uint32_t writable;
  std::uint32_t wait;
  std::int32_t busy, ok, other;  // kDone
  char path[256];
};
struct Reply {
  std::int32_t err;
  std::int32_t type;
  std::int64_t start;
  std::int64_t len;
  std::int32_t pid;
};

// ---- the child side ------------------------------------------------------------
int g_sock = -1;
sqlite3_syscall_ptr g_real_fcntl = nullptr;
sqlite3_syscall_ptr g_real_close = nullptr;

bool xfer(Msg& m, Reply* r) {
  if (write(g_sock, &m, sizeof m) != static_cast<ssize_t>(sizeof m)) return false;
  Reply tmp{};
  if (read(g_sock, r ? r : &tmp, sizeof(Reply)) != static_cast<ssize_t>(sizeof(Reply)))
    return false;
  return true;
}

void describe(int fd, Msg& m) {
  struct stat st {};
  fstat(fd, &st);
  m.ino = st.st_ino;
  m.pid = static_cast<std::uint32_t>(getpid());
  const int fl = reinterpret_cast<int (*)(int, int, ...)>(g_real_fcntl)(fd, F_GETFL);
  m.writable = (fl & O_ACCMODE) != O_RDONLY;
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  const ssize_t n = readlink(link, m.path, sizeof m.path - 1);
  m.path[n > 0 ? n : 0] = 0;
}

int hook_fcntl(int fd, int cmd, ...) {
  va_list ap;
  va_start(ap, cmd);
  auto real = reinterpret_cast<int (*)(int, int, ...)>(g_real_fcntl);
  if (cmd != F_SETLK && cmd != F_SETLKW && cmd != F_GETLK) {
    const long arg = va_arg(ap, long);
    va_end(ap);
    return real(fd, cmd, arg);
  }
  auto* fl = va_arg(ap, struct flock*);
  va_end(ap);
  Msg m{};
  m.op = cmd == F_GETLK ? kGetlk : kSetlk;
  m.type = fl->l_type;
  m.start = fl->l_start;
  m.len = fl->l_len;
  m.wait = cmd == F_SETLKW;
  describe(fd, m);
  Reply r{};
  if (!xfer(m, &r)) {
    errno = EIO;
    return -1;
  }
  if (cmd == F_GETLK) {
    fl->l_type = static_cast<short>(r.type);
    fl->l_start = r.start;
    fl->l_len = r.len;
    fl->l_pid = r.pid;
    return 0;
  }
  if (r.err) {
    errno = r.err;
    return -1;
  }
  return 0;
}

int hook_close(int fd) {
  Msg m{};
  m.op = kFlush;
  describe(fd, m);
  xfer(m, nullptr);  // FUSE FLUSH precedes the close
  return reinterpret_cast<int (*)(int)>(g_real_close)(fd);
}

bool is_busy(int rc) { return (rc & 0xff) == SQLITE_BUSY; }

enum class Role { writer, reader_ro, reader_rw, crasher };

[[noreturn]] void child_main(int sock, const std::string& db_path, int id, int n, Role role) {
  g_sock = sock;
  sqlite3_initialize();
  sqlite3_vfs* vfs = sqlite3_vfs_find(nullptr);
  g_real_fcntl = vfs->xGetSystemCall(vfs, "fcntl");
  g_real_close = vfs->xGetSystemCall(vfs, "close");
  vfs->xSetSystemCall(vfs, "fcntl", reinterpret_cast<sqlite3_syscall_ptr>(hook_fcntl));
  vfs->xSetSystemCall(vfs, "close", reinterpret_cast<sqlite3_syscall_ptr>(hook_close));
  Msg done{};
  done.op = kDone;
  sqlite3* db = nullptr;
  const int flags = role == Role::reader_ro ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (sqlite3_open_v2(db_path.c_str(), &db, flags, nullptr) != SQLITE_OK) {
    done.other = 1000;
  } else if (sqlite3_exec(db, "PRAGMA synchronous=OFF;", nullptr, nullptr, nullptr) !=
             SQLITE_OK) {  // no fsync: the lock calls are the same, the test is faster
    done.other = 1000;
  } else if (role == Role::crasher) {
    // A big uncommitted transaction that spills to the db file, then death:
    // a hot journal (rollback mode) or uncommitted frames (WAL) are left.
    sqlite3_exec(db,
                 "PRAGMA cache_size=2; BEGIN IMMEDIATE;"
                 "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<3000)"
                 " INSERT INTO t(v) SELECT hex(randomblob(300)) FROM c;",
                 nullptr, nullptr, nullptr);
    _exit(0);  // like SIGKILL: no unlock, no commit; the kernel closes the fds
  } else if (role != Role::writer) {
    for (int i = 0; i < n; ++i) {
      const int rc = sqlite3_exec(db, "SELECT count(*) FROM t;", nullptr, nullptr, nullptr);
      if (rc == SQLITE_OK)
        ++done.ok;
      else if (is_busy(rc))
        ++done.busy;
      else
        ++done.other;
    }
    sqlite3_close(db);
  } else {
    // busy_timeout stays 0: the first SQLITE_BUSY is final.
    for (int i = 0; i < n; ++i) {
      const std::string v = std::to_string(id) + ":" + std::to_string(i);
      std::string sql;
      switch (i % 3) {
        case 0: sql = "INSERT INTO t(v) VALUES('" + v + "');"; break;
        case 1: sql = "BEGIN IMMEDIATE; INSERT INTO t(v) VALUES('" + v + "'); COMMIT;"; break;
        default:
          sql = "BEGIN; SELECT count(*) FROM t; INSERT INTO t(v) VALUES('" + v + "'); COMMIT;";
      }
      const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
      if (rc == SQLITE_OK)
        ++done.ok;
      else if (is_busy(rc) || is_busy(sqlite3_extended_errcode(db)))
        ++done.busy;
      else
        ++done.other;
      if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK;", nullptr, nullptr, nullptr);
    }
    sqlite3_close(db);
  }
  xfer(done, nullptr);
  _exit(0);
}

// ---- the parent side -------------------------------------------------------------
struct Result {
  int busy = 0, ok = 0, other = 0;        // writers
  int rbusy = 0, rok = 0, rother = 0;     // readers
};

Result run(const char* journal_mode, const std::vector<Role>& roles, int n) {
  const int procs = static_cast<int>(roles.size());
  const fs::path dir = fs::temp_directory_path() / ("hoody-lock-" + std::to_string(getpid()) +
                                                    "-" + journal_mode);
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db_path = (dir / "app.db").string();
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
    const std::string init = std::string("PRAGMA journal_mode=") + journal_mode +
                             "; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);";
    REQUIRE(sqlite3_exec(db, init.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  // Fork while this process has a single thread; start the manager afterwards.
  std::vector<int> socks;
  std::vector<pid_t> pids;
  for (int i = 0; i < procs; ++i) {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      close(sv[0]);
      child_main(sv[1], db_path, i, n, roles[static_cast<std::size_t>(i)]);
    }
    close(sv[1]);
    socks.push_back(sv[0]);
    pids.push_back(pid);
  }

  Result total;
  std::mutex mu;  // guards total and registered
  std::set<std::uint64_t> registered;
  {
    LockManager m;
    auto serve = [&](int sock, Role role) {
      std::set<std::uint64_t> touched;
      OwnerId owner = 0;
      Msg msg{};
      while (read(sock, &msg, sizeof msg) == static_cast<ssize_t>(sizeof msg)) {
        owner = msg.pid;
        const std::string path = msg.path;
        const std::string name = fs::path(path).filename().string();
        const std::string domain = database_name(name).size() ? std::string(database_name(name))
                                                               : name;
        FileKind kind = classify(name);
        if (kind == FileKind::plain && name == "app.db") kind = FileKind::sqlite_db;
        {
          std::lock_guard lk(mu);
          if (registered.insert(msg.ino).second)
            m.register_file(msg.ino, kind, kind == FileKind::plain ? "" : domain);
        }
        if (kind == FileKind::sqlite_db) {  // the adapter re-reads bytes 18/19
          unsigned char h[2] = {0, 0};
          const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
          if (fd >= 0) {
            if (pread(fd, h, 2, 18) == 2) m.set_journal_mode(domain, journal_mode_from_header(h[0], h[1]));
            close(fd);
          }
        }
        if (msg.op == kDone) {
          std::lock_guard lk(mu);
          if (role == Role::writer) {
            total.busy += msg.busy;
            total.ok += msg.ok;
            total.other += msg.other;
          } else {
            total.rbusy += msg.busy;
            total.rok += msg.ok;
            total.rother += msg.other;
          }
          Reply r{};
          (void)!write(sock, &r, sizeof r);
          continue;
        }
        if (msg.op == kFlush) {
          m.release_owner(msg.ino, owner);
          Reply r{};
          (void)!write(sock, &r, sizeof r);
          continue;
        }
        touched.insert(msg.ino);
        const LockType type = msg.type == F_RDLCK   ? LockType::read
                              : msg.type == F_WRLCK ? LockType::write
                                                    : LockType::unlock;
        const std::uint64_t start = static_cast<std::uint64_t>(msg.start);
        const std::uint64_t end =
            msg.len == 0 ? kToEof : start + static_cast<std::uint64_t>(msg.len) - 1;
        if (msg.op == kGetlk) {
          Reply r{};
          r.type = F_UNLCK;
          if (auto c = m.getlk(msg.ino, owner, type, start, end)) {
            r.type = c->type == LockType::read ? F_RDLCK : F_WRLCK;
            r.start = static_cast<std::int64_t>(c->start);
            r.len = c->end == kToEof ? 0 : static_cast<std::int64_t>(c->end - c->start + 1);
            r.pid = static_cast<std::int32_t>(c->pid);
          }
          (void)!write(sock, &r, sizeof r);
          continue;
        }
        LockRequest req;
        req.file = msg.ino;
        req.owner = owner;
        req.type = type;
        req.start = start;
        req.end = end;
        req.pid = msg.pid;
        req.writable = msg.writable != 0;
        req.wait = msg.wait != 0;
        m.setlk(m.new_ticket(), req, [sock](int err) {
          Reply r{};
          r.err = err;
          (void)!write(sock, &r, sizeof r);
        });
      }
      for (std::uint64_t ino : touched) m.release_owner(ino, owner);  // process exit
    };
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < socks.size(); ++i) threads.emplace_back(serve, socks[i], roles[i]);
    // Reap the children; kill them if they hang.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    for (pid_t pid : pids) {
      int status = 0;
      while (waitpid(pid, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          kill(pid, SIGKILL);
          waitpid(pid, &status, 0);
          FAIL_CHECK("child " << pid << " hung");
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    for (auto& t : threads) t.join();
    for (int s : socks) close(s);
    MESSAGE(std::string(journal_mode) << ": " << m.stats_json());
  }
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(db_path.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok");
    sqlite3_finalize(st);
    REQUIRE(sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(st) == SQLITE_ROW);
    CHECK(sqlite3_column_int(st, 0) == total.ok);
    sqlite3_finalize(st);
    sqlite3_close(db);
  }
  fs::remove_all(dir);
  return total;
}

}  // namespace

const std::vector<Role> kFourWriters(4, Role::writer);

TEST_CASE("real SQLite, rollback (DELETE) mode, 4 processes: no SQLITE_BUSY") {
  const Result r = run("DELETE", kFourWriters, 150);
  CHECK(r.busy == 0);
  CHECK(r.other == 0);
  CHECK(r.ok == 600);
}

TEST_CASE("real SQLite, WAL mode, 4 processes: no SQLITE_BUSY") {
  const Result r = run("WAL", kFourWriters, 150);
  CHECK(r.busy == 0);
  CHECK(r.other == 0);
  CHECK(r.ok == 600);
}

TEST_CASE("real SQLite, writers with read-only and read-write readers: no SQLITE_BUSY") {
  const std::vector<Role> roles = {Role::writer, Role::writer, Role::reader_ro, Role::reader_ro,
                                   Role::reader_rw};
  for (const std::string mode : {"DELETE", "WAL"}) {
    CAPTURE(mode);
    const Result r = run(mode.c_str(), roles, 90);
    CHECK(r.busy == 0);
    CHECK(r.other == 0);
    CHECK(r.ok == 180);
    CHECK(r.rbusy == 0);
    CHECK(r.rother == 0);
    CHECK(r.rok == 270);
  }
}

TEST_CASE("real SQLite, a process dies inside a big transaction: the others go on") {
  const std::vector<Role> roles = {Role::crasher, Role::writer, Role::writer, Role::writer};
  for (const std::string mode : {"DELETE", "WAL"}) {
    CAPTURE(mode);
    const Result r = run(mode.c_str(), roles, 60);
    CHECK(r.busy == 0);
    CHECK(r.other == 0);
    CHECK(r.ok == 180);  // and integrity_check ok, the crasher's rows rolled back
  }
}
