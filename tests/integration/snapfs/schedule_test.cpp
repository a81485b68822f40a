// hoody-snapfs issue 11 items 5 and 6 on a real mount: scheduled snapshots
// with retention driven by an injected clock (HOODY_TEST_CLOCK_FILE), the one
// audit trail in index.db and who may read it, and listings that are fast and
// never stale.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;
using namespace std::chrono_literals;

namespace {

std::string env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}
std::string snapfs_bin() { return env_or("HOODY_SNAPFS", "hoody-snapfs"); }
std::string snap_bin() { return env_or("HOODY_SNAP", "hoody-snap"); }

int err_of(int r) { return r < 0 ? errno : 0; }

void write_file(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::trunc);
  out << data;
}

// Unix seconds of "2026-11-01T00:10:00Z".
int64_t utc(const char* text) {
  std::tm tm{};
  REQUIRE(::strptime(text, "%Y-%m-%dT%H:%M:%SZ", &tm) != nullptr);
  return static_cast<int64_t>(::timegm(&tm));
}
std::string rfc3339(int64_t t) {
  std::time_t tt = static_cast<std::time_t>(t);
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// A container directory with two scope subvolumes, the daemon mounted on it,
// and "now" read from a file the test writes.
struct Mount {
  BtrfsPool pool;
  std::string source, storage, databases, mnt, clock_file;
  std::unique_ptr<Daemon> daemon;

  std::vector<std::string> extra_args;  // before SOURCE, e.g. {"-d"}

  explicit Mount(const std::string& opts = "allow_other,prune_interval=0.05", int64_t now = 0,
                 std::vector<std::string> extra = {})
      : extra_args(std::move(extra)) {
    pool.make_dir("containers");
    source = pool.make_dir("containers/c1");
    storage = pool.make_subvolume("containers/c1/storage");
    databases = pool.make_subvolume("containers/c1/databases");
    mnt = pool.make_temp_dir("mnt");
    clock_file = pool.dir() + "/clock";
    write_file(storage + "/hello.txt", "hello\n");
    if (now) set_clock(now);
    ::chmod(pool.dir().c_str(), 0755);
    start(opts);
  }
  void start(const std::string& opts) {
    std::vector<std::string> argv = {snapfs_bin(), "-f", "-o", opts};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    argv.insert(argv.end(), {source, mnt});
    if (!slurp(clock_file).empty())
      argv.insert(argv.begin(), {"env", "HOODY_TEST_CLOCK_FILE=" + clock_file});
    daemon = std::make_unique<Daemon>(argv, mnt, pool.dir() + "/daemon.log");
  }
  // Atomically (a rename): the daemon reads the file at any moment, and an
  // empty read (between a truncate and its write) means the system clock to
  // it, which once took a real-time slot in the middle of the simulated days.
  void set_clock(int64_t t) {
    write_file(clock_file + ".new", std::to_string(t) + "\n");
    REQUIRE(::rename((clock_file + ".new").c_str(), clock_file.c_str()) == 0);
  }
  std::string at(const std::string& rel) const { return mnt + "/" + rel; }

  nlohmann::json schedule() const { return nlohmann::json::parse(slurp(at(".hoody/schedule"))); }
  // Waits until the daemon's background step has run at clock time `t`.
  void wait_checked(int64_t t) const {
    auto want = rfc3339(t);
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      auto j = schedule();
      if (j["checked"].is_string() && j["checked"] == want) return;
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < deadline,
                      "the daemon did not run the schedule at ", want, ": ", j.dump());
      std::this_thread::sleep_for(10ms);
    }
  }
  std::vector<nlohmann::json> snapshots() const {
    auto j = nlohmann::json::parse(slurp(at(".hoody/snapshots.json")));
    return std::vector<nlohmann::json>(j.begin(), j.end());
  }
  std::set<std::string> names() const {
    std::set<std::string> out;
    for (auto& s : snapshots()) out.insert(s["name"].get<std::string>());
    return out;
  }
  std::vector<nlohmann::json> log() const {
    std::vector<nlohmann::json> out;
    std::istringstream in(slurp(at(".hoody/log")));
    for (std::string l; std::getline(in, l);) out.push_back(nlohmann::json::parse(l));
    return out;
  }
};

// Names in the mount as readdir shows them (no '.' names).
std::set<std::string> readdir_names(const std::string& dir) {
  auto r = run({"ls", "-A", dir});
  std::set<std::string> out;
  std::istringstream in(r.output);
  for (std::string l; std::getline(in, l);)
    if (!l.empty() && l[0] != '.') out.insert(l);
  return out;
}

std::string getx(const std::string& p, const char* name) {
  char buf[4096];
  ssize_t n = ::getxattr(p.c_str(), name, buf, sizeof buf);
  return n < 0 ? "<" + std::string(std::strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
}

// Rows of the store's audit table, read straight from index.db.
std::vector<std::string> audit_rows(const std::string& source) {
  sqlite3* db = nullptr;
  std::vector<std::string> out;
  REQUIRE(sqlite3_open_v2((source + "/.snapshots/index.db").c_str(), &db, SQLITE_OPEN_READONLY,
                          nullptr) == SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT uid, action, name, result FROM audit ORDER BY id", -1, &q,
                             nullptr) == SQLITE_OK);
  while (sqlite3_step(q) == SQLITE_ROW) {
    std::string row = std::to_string(sqlite3_column_int64(q, 0));
    for (int c = 1; c < 4; ++c) row += std::string(" ") + reinterpret_cast<const char*>(sqlite3_column_text(q, c));
    out.push_back(row);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return out;
}

}  // namespace

TEST_CASE("scheduled snapshots: hourly across simulated days, retention, onchange, manual kept") {
  require_mount_capabilities();
  // Sunday 2026-11-01 00:10 UTC.
  const int64_t t0 = utc("2026-11-01T00:10:00Z");
  Mount m("allow_other,prune_interval=0.05", t0);
  REQUIRE(::mkdir(m.at("manual").c_str(), 0755) == 0);  // a user's: never pruned by the schedule
  m.wait_checked(t0);
  CHECK(m.schedule()["enabled"] == false);

  auto set = run({snap_bin(), "--mount", m.mnt, "schedule", "--every", "1h", "--preserve",
                  "3h 2d 2w", "--onchange"});
  REQUIRE_MESSAGE(set.ok(), set.describe());
  // Its first slot is taken at once.
  for (int i = 0; i < 200 && !m.names().count("auto-20261101T0000Z"); ++i)
    std::this_thread::sleep_for(10ms);
  REQUIRE(m.names().count("auto-20261101T0000Z") == 1);
  auto shown = run({snap_bin(), "--mount", m.mnt, "schedule"});
  CHECK_MESSAGE(shown.output.find("every 1h, preserve 3h 2d 2w, onchange") != std::string::npos,
                shown.output);

  // Every simulated hour: change the storage (except from 20:00 to 22:00 on
  // Sunday, which onchange skips), move the clock, let the daemon run.  Each
  // name is looked up before the step, so the kernel holds it in its dcache:
  // a snapshot the schedule prunes must be gone from lstat at once all the same.
  std::set<std::string> ever;
  for (int h = 1; h <= 50; ++h) {
    if (h < 20 || h > 22) write_file(m.storage + "/hour", std::to_string(h));
    auto before = m.names();
    for (auto& n : before) {
      struct stat st;
      REQUIRE(::lstat(m.at(n).c_str(), &st) == 0);
    }
    const int64_t t = t0 + h * 3600;
    m.set_clock(t);
    m.wait_checked(t);
    auto now = m.names();
    ever.insert(now.begin(), now.end());
    CHECK(readdir_names(m.mnt) == now);
    for (auto& n : before)
      if (!now.count(n)) {
        CAPTURE(n);
        CHECK(err_of(::access(m.at(n).c_str(), F_OK)) == ENOENT);
      }
    CHECK(now.count("manual") == 1);
  }
  // onchange: nothing changed for the slots 20:00, 21:00 and 22:00 of Sunday.
  for (const char* skipped : {"auto-20261101T2000Z", "auto-20261101T2100Z", "auto-20261101T2200Z"})
    CHECK_MESSAGE(ever.count(skipped) == 0, skipped);
  CHECK(ever.count("auto-20261101T1900Z") == 1);
  CHECK(ever.count("auto-20261101T2300Z") == 1);

  // At Tuesday 2026-11-03 02:10 UTC, "3h 2d 2w" keeps (worked by hand):
  //   3h: 11-03 02:00, 01:00, 00:00
  //   2d: Tuesday (02:00) and Monday 11-02 23:00
  //   2w: this week from Monday 11-02 (02:00) and the week ending Sunday 11-01: 23:00
  CHECK(m.names() == std::set<std::string>{"auto-20261101T2300Z", "auto-20261102T2300Z",
                                           "auto-20261103T0000Z", "auto-20261103T0100Z",
                                           "auto-20261103T0200Z", "manual"});
  for (auto& s : m.snapshots()) {
    CAPTURE(s.dump());
    CHECK(s["type"] == (s["name"] == "manual" ? "filesystem" : "scheduled"));
  }
  CHECK(getx(m.at("auto-20261103T0200Z"), "user.hoody.type") == "scheduled");
  CHECK(getx(m.at("auto-20261103T0200Z"), "user.hoody.created") == "2026-11-03T02:10:00Z");
  CHECK(getx(m.at("manual"), "user.hoody.type") == "filesystem");
  auto sj = m.schedule();
  CHECK(sj["last_slot"] == "2026-11-03T02:00:00Z");
  CHECK(sj["every"] == "1h");
  CHECK(sj["preserve"] == "3h 2d 2w");

  // The log says what the schedule did: creates and prunes by the daemon (uid 0).
  int prunes = 0, creates = 0;
  for (auto& l : m.log()) {
    if (l["action"] == "prune" && l["result"] == "ok" && l["to"] == "schedule 3h 2d 2w") ++prunes;
    if (l["action"] == "create" && l["name"].get<std::string>().rfind("auto-", 0) == 0) ++creates;
  }
  CHECK(creates == 48);  // 51 slots, 3 skipped
  CHECK(prunes == 48 - 5);

  // Off: no more snapshots, the ones taken stay.
  REQUIRE(run({snap_bin(), "--mount", m.mnt, "schedule", "--off"}).ok());
  m.set_clock(t0 + 60 * 3600);
  m.wait_checked(t0 + 60 * 3600);
  CHECK(m.names().size() == 6);
  CHECK(run({snap_bin(), "--mount", m.mnt, "schedule"}).output == "schedule: off\n");
}

TEST_CASE("schedule: only allowed users set it (EPERM, audited), bad requests EINVAL, kept across restarts") {
  require_mount_capabilities();
  const int64_t t0 = utc("2026-11-01T00:10:00Z");
  Mount m("allow_other,prune_interval=0.05", t0);
  std::string mnt = m.mnt;
  auto e = run_child([mnt]() -> int {
    int fd = ::open((mnt + "/.hoody/schedule").c_str(), O_WRONLY | O_TRUNC);
    if (fd >= 0 || errno != EPERM) return 1;
    // Anyone may read it.
    if (err_of(::access((mnt + "/.hoody/schedule").c_str(), R_OK)) != 0) return 2;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  auto cli = run_child([mnt]() -> int {
    ::execl(std::getenv("HOODY_SNAP") ? std::getenv("HOODY_SNAP") : "hoody-snap", "hoody-snap",
            "--mount", mnt.c_str(), "schedule", "--every", "1h", nullptr);
    return 127;
  }, {.as_nobody = true});
  CHECK(cli.exit_code == 1);
  CHECK_MESSAGE(cli.output.find("Operation not permitted") != std::string::npos, cli.output);
  bool audited = false;
  for (auto& l : m.log())
    if (l["action"] == "schedule" && l["uid"] == 65534 && l["result"] == "EPERM") audited = true;
  CHECK(audited);

  for (const char* bad : {"{\"every\":\"10s\"}", "{\"every\":\"1h\",\"preserve\":\"7q\"}", "sometimes"}) {
    CAPTURE(bad);
    int fd = ::open(m.at(".hoody/schedule").c_str(), O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    CHECK(err_of(static_cast<int>(::write(fd, bad, std::strlen(bad)))) == EINVAL);
    ::close(fd);
  }
  auto bad = run({snap_bin(), "--mount", m.mnt, "schedule", "--every", "fortnightly"});
  CHECK(bad.exit_code == 1);
  CHECK(run({snap_bin(), "--mount", m.mnt, "schedule", "--preserve", "7d"}).exit_code == 2);
  CHECK(m.schedule()["enabled"] == false);

  REQUIRE(run({snap_bin(), "--mount", m.mnt, "schedule", "--every", "daily", "--preserve", "7d",
               "--preserve-min", "2d"}).ok());
  auto j = m.schedule();
  CHECK(j["every"] == "1d");
  CHECK(j["preserve"] == "7d");
  CHECK(j["preserve_min"] == "2d");
  CHECK(j["onchange"] == false);
  // Kept in index.db: a new daemon runs the same schedule.
  m.daemon->stop();
  m.start("allow_other,prune_interval=0.05");
  j = m.schedule();
  CHECK(j["every"] == "1d");
  CHECK(j["preserve_min"] == "2d");
  m.wait_checked(t0);
  CHECK(m.names() == std::set<std::string>{"auto-20261101T0000Z"});
  // Set again within the same slot: its snapshot is there, nothing is refused.
  REQUIRE(run({snap_bin(), "--mount", m.mnt, "schedule", "--every", "daily"}).ok());
  m.set_clock(t0 + 60);
  m.wait_checked(t0 + 60);
  CHECK(m.names() == std::set<std::string>{"auto-20261101T0000Z"});
  CHECK(m.schedule()["last_slot"] == "2026-11-01T00:00:00Z");
  for (auto& l : m.log()) CHECK(l["result"] != "EEXIST");
}

TEST_CASE(".hoody/log: one trail in index.db, refusals included, for the allowed users only") {
  require_mount_capabilities();
  Mount m("allow_other");
  REQUIRE(::mkdir(m.at("a").c_str(), 0755) == 0);
  CHECK(err_of(::mkdir(m.at("bad;name").c_str(), 0755)) == EINVAL);
  std::string mnt = m.mnt;
  auto e = run_child([mnt]() -> int {
    if (err_of(::mkdir((mnt + "/mine").c_str(), 0755)) != EPERM) return 1;
    if (err_of(::rmdir((mnt + "/a").c_str())) != EPERM) return 2;
    // uids, pids, names and reasons are not for everyone.
    int fd = ::open((mnt + "/.hoody/log").c_str(), O_RDONLY);
    if (fd >= 0) return 3;
    if (errno != EACCES) return 4;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  struct stat st;
  REQUIRE(::stat(m.at(".hoody/log").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0440);

  // No second trail next to the store; the table has each event once.
  CHECK(err_of(::access((m.source + "/.snapshots/audit.log").c_str(), F_OK)) == ENOENT);
  auto rows = audit_rows(m.source);
  const std::vector<std::string> want = {
      "0 create a ok",
      "0 create bad;name EINVAL: snapshot \"bad;name\": name may not contain ';'",
      "65534 create mine EPERM: uid 65534 is not root nor in allow_users/allow_groups",
      "65534 delete a EPERM: uid 65534 is not root nor in allow_users/allow_groups"};
  REQUIRE_MESSAGE(rows.size() == want.size(), nlohmann::json(rows).dump());
  for (size_t i = 0; i < want.size(); ++i) CHECK(rows[i].rfind(want[i], 0) == 0);  // a prefix: reasons may say more
  auto log = m.log();
  REQUIRE(log.size() == 4);
  CHECK(log[0]["result"] == "ok");
  CHECK(log[2]["uid"] == 65534);
  CHECK(log[2]["result"] == "EPERM");
  CHECK(log[2]["reason"] == "uid 65534 is not root nor in allow_users/allow_groups");
  for (auto& l : log)
    for (const char* k : {"time", "uid", "pid", "action", "name", "result"}) CHECK(l.contains(k));
  // A rename: one row, with the new name as "to".
  REQUIRE(::rename(m.at("a").c_str(), m.at("b").c_str()) == 0);
  log = m.log();
  REQUIRE(log.size() == 5);
  CHECK(log[4]["action"] == "rename");
  CHECK(log[4]["name"] == "a");
  CHECK(log[4]["to"] == "b");
}

TEST_CASE(".hoody/log: readable by a user of allow_users") {
  require_mount_capabilities();
  Mount m("allow_other,allow_users=nobody");
  std::string mnt = m.mnt;
  auto e = run_child([mnt]() -> int {
    if (::mkdir((mnt + "/by-nobody").c_str(), 0755) != 0) return 1;
    std::ifstream in(mnt + "/.hoody/log");
    if (!in) return 2;
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (all.find("by-nobody") == std::string::npos) return 3;
    struct stat st;
    if (::stat((mnt + "/.hoody/log").c_str(), &st) != 0) return 4;
    if ((st.st_mode & 07777) != 0440 || st.st_uid != kNobodyUid) return 5;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
}

TEST_CASE("listings are right at once after rename, rmdir, setfattr and an expiry") {
  require_mount_capabilities();
  const int64_t t0 = utc("2026-11-01T00:10:00Z");
  Mount m("allow_other,prune_interval=0.05", t0);
  for (const char* n : {"one", "two", "three"}) REQUIRE(::mkdir(m.at(n).c_str(), 0755) == 0);
  auto cached = [&] {  // every name and its xattrs in the kernel's caches
    auto r = run({"ls", "-l", m.mnt});
    REQUIRE(r.ok());
    for (auto& n : m.names()) getx(m.at(n), "user.hoody.expires");
    return r.output;
  };
  cached();
  REQUIRE(::rename(m.at("one").c_str(), m.at("uno").c_str()) == 0);
  CHECK(readdir_names(m.mnt) == std::set<std::string>{"three", "two", "uno"});
  CHECK(err_of(::access(m.at("one").c_str(), F_OK)) == ENOENT);
  CHECK(err_of(::access(m.at("uno").c_str(), F_OK)) == 0);
  CHECK(m.names() == std::set<std::string>{"three", "two", "uno"});
  cached();
  REQUIRE(::rmdir(m.at("two").c_str()) == 0);
  CHECK(err_of(::access(m.at("two").c_str(), F_OK)) == ENOENT);
  CHECK(readdir_names(m.mnt) == std::set<std::string>{"three", "uno"});
  cached();
  REQUIRE(::setxattr(m.at("uno").c_str(), "user.hoody.description", "first", 5, 0) == 0);
  CHECK(getx(m.at("uno"), "user.hoody.description") == "first");
  for (auto& s : m.snapshots())
    CHECK(s["description"] == (s["name"] == "uno" ? "first" : ""));
  REQUIRE(::setxattr(m.at("three").c_str(), "user.hoody.expires", "+1h", 3, 0) == 0);
  CHECK(getx(m.at("three"), "user.hoody.expires") == "2026-11-01T01:10:00Z");
  // The expiry comes: the daemon deletes it, and no cache still shows it.
  cached();
  m.set_clock(t0 + 3600);
  m.wait_checked(t0 + 3600);
  CHECK(err_of(::access(m.at("three").c_str(), F_OK)) == ENOENT);
  CHECK(readdir_names(m.mnt) == std::set<std::string>{"uno"});
  auto ls = run({"ls", "-l", m.mnt});
  CHECK(ls.output.find("three") == std::string::npos);
  struct stat root;
  REQUIRE(::stat(m.mnt.c_str(), &root) == 0);
  CHECK(root.st_nlink == 4);  // ., .., .hoody, uno
  // A name made again after its deletion is the new snapshot.
  REQUIRE(::mkdir(m.at("two").c_str(), 0755) == 0);
  CHECK(getx(m.at("two"), "user.hoody.created") == "2026-11-01T01:10:00Z");
}

TEST_CASE("POSIX ACLs of snapshot files are honoured, as in the live tree") {
  require_mount_capabilities();
  Mount m("allow_other");
  const std::string f = m.storage + "/acl-file";
  write_file(f, "shared\n");
  ::chmod(f.c_str(), 0600);  // root only by its mode; nobody may read it by its ACL
  auto set = run({"setfacl", "-m", "u:nobody:r", f});
  REQUIRE_MESSAGE(set.ok(), set.describe());
  REQUIRE(::mkdir(m.at("s").c_str(), 0755) == 0);
  std::string live = f, snap = m.at("s/storage/acl-file");
  auto e = run_child([live, snap]() -> int {
    if (slurp(live) != "shared\n") return 1;  // the ACL grants it in the live tree
    if (slurp(snap) != "shared\n") return 2;  // and so in the snapshot
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  auto acl = run({"getfacl", "-p", "--omit-header", snap});
  CHECK_MESSAGE(acl.output.find("user:nobody:r--") != std::string::npos, acl.output);
}

TEST_CASE("ls -l of 200 snapshots: once cached, nothing is asked of the daemon per snapshot") {
  require_mount_capabilities();
  // -d: libfuse traces every request in the daemon's log.
  Mount m("allow_other", 0, {"-d"});
  for (int i = 0; i < 200; ++i)
    REQUIRE(::mkdir(m.at("s" + std::to_string(i)).c_str(), 0755) == 0);
  auto count = [](const std::string& log, const char* op) {
    size_t n = 0;
    for (size_t p = log.find(op); p != std::string::npos; p = log.find(op, p + 1)) ++n;
    return n;
  };
  REQUIRE(run({"ls", "-l", m.mnt}).ok());  // the first: the kernel learns every entry
  std::this_thread::sleep_for(200ms);
  auto before = m.daemon->log().size();
  auto r = run({"ls", "-l", m.mnt});
  REQUIRE(r.ok());
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 201);  // "total" and 200
  std::this_thread::sleep_for(200ms);
  auto log = m.daemon->log().substr(before);
  // Names and attributes are cached (an hour; every change reaches the
  // kernel), ACLs are cached by the kernel, and security.selinux is "not
  // supported" on the daemon's nodes, which ls remembers for the device.
  CHECK_MESSAGE(count(log, "opcode: LOOKUP") == 0, log.substr(0, 2000));
  CHECK_MESSAGE(count(log, "opcode: GETATTR") <= 2, log.substr(0, 2000));
  CHECK_MESSAGE(count(log, "opcode: GETXATTR") <= 3, log.substr(0, 2000));
  // Metadata is still there for whoever asks for it.
  CHECK(getx(m.at("s7"), "user.hoody.type") == "filesystem");
  char buf[64];
  CHECK(::lgetxattr(m.at("s7").c_str(), "security.selinux", buf, sizeof buf) < 0);
  CHECK(errno == EOPNOTSUPP);
  CHECK(::lgetxattr(m.at("s7").c_str(), "user.other", buf, sizeof buf) < 0);
  CHECK(errno == ENODATA);
}
