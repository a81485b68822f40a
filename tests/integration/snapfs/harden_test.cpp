// Issue 7, "what a hostile user and a careless one can do": hoody-snapfs and
// hoody-snap on a real BTRFS loop image with the real daemon mounted.  Times
// out of range, RFC 3339 forms, half-done CLI verbs, names with "..", control
// characters in what the CLI prints, restore of @live, usage exit codes.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
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

// A container directory with two scope subvolumes and the daemon mounted on it.
struct Snapfs {
  BtrfsPool pool;
  std::string source, storage, databases, mnt, opts;
  std::unique_ptr<Daemon> daemon;

  explicit Snapfs(std::string o = "allow_other") : opts(std::move(o)) {
    pool.make_dir("containers");
    source = pool.make_dir("containers/c1");
    storage = pool.make_subvolume("containers/c1/storage");
    databases = pool.make_subvolume("containers/c1/databases");
    mnt = pool.make_temp_dir("mnt");
    std::ofstream(storage + "/hello.txt") << "hello\n";
    start();
  }
  void start() {
    daemon = std::make_unique<Daemon>(
        std::vector<std::string>{snapfs_bin(), "-f", "-o", opts, source, mnt}, mnt,
        pool.dir() + "/daemon.log");
  }
  std::string at(const std::string& rel) const { return mnt + "/" + rel; }
  ExitInfo snap(std::vector<std::string> args) const {
    args.insert(args.begin(), {snap_bin(), "--mount", mnt});
    return run(args);
  }
};

std::string getx(const std::string& p, const char* name) {
  char buf[4096];
  ssize_t n = ::getxattr(p.c_str(), name, buf, sizeof buf);
  return n < 0 ? "<" + std::string(std::strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
}

int setx(const std::string& p, const char* name, const std::string& v) {
  return err_of(::setxattr(p.c_str(), name, v.data(), v.size(), 0));
}

bool exists(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

std::vector<std::string> names_in(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& s : nlohmann::json::parse(slurp(dir + "/.hoody/snapshots.json")))
    out.push_back(s["name"].get<std::string>());
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// A snapshot name as an older daemon accepted it: renamed in index.db while
// the daemon is stopped.
void rename_in_index(Snapfs& fs, const std::string& from, const std::string& to) {
  fs.daemon.reset();
  sqlite3* db = nullptr;
  std::string path = fs.source + "/.snapshots/index.db";
  REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
  std::string sql = "UPDATE snapshots SET name = '" + to + "' WHERE name = '" + from + "'";
  char* err = nullptr;
  int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err);
  CHECK_MESSAGE(rc == SQLITE_OK, (err ? err : ""));
  sqlite3_free(err);
  CHECK(sqlite3_changes(db) == 1);
  sqlite3_close(db);
  fs.start();
}

}  // namespace

TEST_CASE("item 1: expiry times the store cannot hold give EINVAL, never a wrapped time") {
  require_mount_capabilities();
  Snapfs fs("allow_other,prune_interval=1");
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  auto s = fs.at("s");
  for (const char* t : {"9999-12-31T23:59:59Z", "2999-01-01", "0000-01-01", "1969-12-31T23:59:59Z",
                        "+99999999999d", "+99999999999999999999999d", "2262-04-12"}) {
    CAPTURE(t);
    CHECK(setx(s, "user.hoody.expires", t) == EINVAL);
    CHECK(getx(s, "user.hoody.expires") == "<No data available>");
  }
  // The refusal is logged with the value it refused.
  std::string log = slurp(fs.at(".hoody/log"));
  CHECK_MESSAGE(log.find("9999-12-31T23:59:59Z") != std::string::npos, log);
  CHECK(log.find("out of range") != std::string::npos);
  CHECK(fs.daemon->log().find("9999-12-31T23:59:59Z") != std::string::npos);
  // The CLI refuses it too, before taking the snapshot.
  auto r = fs.snap({"create", "far", "--expire", "9999-12-31T23:59:59Z"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("out of range") != std::string::npos, r.output);
  CHECK_FALSE(exists(fs.at("far")));
  // Nothing is pruned as "expired in 1816": the snapshot survives prune passes.
  std::this_thread::sleep_for(2500ms);
  CHECK(exists(s));
  CHECK(has(names_in(fs.mnt), "s"));
}

TEST_CASE("item 11: RFC 3339 fractions, lowercase t/z and offsets are accepted; empty is EINVAL") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  auto s = fs.at("s");
  CHECK(setx(s, "user.hoody.expires", "2027-01-01T00:00:00.5Z") == 0);
  CHECK(getx(s, "user.hoody.expires") == "2027-01-01T00:00:00Z");
  CHECK(setx(s, "user.hoody.expires", "2027-01-01t00:00:00z") == 0);
  CHECK(getx(s, "user.hoody.expires") == "2027-01-01T00:00:00Z");
  CHECK(setx(s, "user.hoody.expires", "2027-01-01T02:00:00+02:00") == 0);
  CHECK(getx(s, "user.hoody.expires") == "2027-01-01T00:00:00Z");
  // An empty value does not clear (it is refused); removexattr does.
  CHECK(setx(s, "user.hoody.expires", "") == EINVAL);
  CHECK(getx(s, "user.hoody.expires") == "2027-01-01T00:00:00Z");
  CHECK(::removexattr(s.c_str(), "user.hoody.expires") == 0);
  CHECK(getx(s, "user.hoody.expires") == "<No data available>");
  auto r = fs.snap({"create", "frac", "--expire", "2027-06-01T12:00:00.250+02:00"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(getx(fs.at("frac"), "user.hoody.expires") == "2027-06-01T10:00:00Z");
}

TEST_CASE("item 4: a failed hoody-snap create or clone leaves nothing behind") {
  require_mount_capabilities();
  Snapfs fs;
  auto r = fs.snap({"create", "g", "--expire", "garbage"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("garbage") != std::string::npos, r.output);
  CHECK_FALSE(exists(fs.at("g")));
  CHECK_FALSE(has(names_in(fs.mnt), "g"));
  r = fs.snap({"create", "e", "--expire", ""});
  CHECK(r.exit_code == 1);
  CHECK_FALSE(exists(fs.at("e")));
  r = fs.snap({"create", "d", "--description", std::string(5000, 'x')});
  CHECK(r.exit_code == 1);
  CHECK_FALSE(exists(fs.at("d")));

  r = fs.snap({"create", "src"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.describe());
  // DEST on another filesystem (the temp dir is not BTRFS): EXDEV, and the
  // DEST that clone made is gone again.
  std::string other = fs.pool.make_temp_dir("elsewhere");
  r = fs.snap({"clone", "src", other + "/dest"});
  CHECK(r.exit_code == 1);
  CHECK_FALSE(exists(other + "/dest"));
  // DEST exists with one of the names taken: nothing is cloned into it.
  std::string dest = fs.pool.path() + "/dest";
  REQUIRE(::mkdir(dest.c_str(), 0755) == 0);
  REQUIRE(::mkdir((dest + "/storage").c_str(), 0755) == 0);
  r = fs.snap({"clone", "src", dest});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("exists already") != std::string::npos, r.output);
  CHECK_FALSE(exists(dest + "/databases"));
  CHECK(exists(dest));  // it was there before: left as it was
  // A clone of a missing snapshot does not make DEST either.
  r = fs.snap({"clone", "missing", fs.pool.path() + "/dest2"});
  CHECK(r.exit_code == 1);
  CHECK_FALSE(exists(fs.pool.path() + "/dest2"));
}

TEST_CASE("item 7: new names with '..' are EINVAL; old ones stay listable and deletable") {
  require_mount_capabilities();
  Snapfs fs;
  CHECK(err_of(::mkdir(fs.at("a..b").c_str(), 0755)) == EINVAL);
  CHECK(err_of(::mkdir(fs.at("A..@live").c_str(), 0755)) == EINVAL);
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  CHECK(err_of(::rename(fs.at("s").c_str(), fs.at("x..y").c_str())) == EINVAL);
  CHECK(exists(fs.at("s")));
  auto r = fs.snap({"create", "c..d"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("\"..\"") != std::string::npos, r.output);
  CHECK(fs.daemon->log().find("may not contain \\\"..\\\"") != std::string::npos);
  // A name with '.' is still fine, and the diff node of two of them parses.
  REQUIRE(::mkdir(fs.at("v1.0").c_str(), 0755) == 0);
  CHECK(slurp(fs.at(".hoody/diff/v1.0..s")).empty());

  // Names taken before the rule.
  REQUIRE(::mkdir(fs.at("old1").c_str(), 0755) == 0);
  REQUIRE(::mkdir(fs.at("old2").c_str(), 0755) == 0);
  REQUIRE(::mkdir(fs.at("old3").c_str(), 0755) == 0);
  rename_in_index(fs, "old1", "a..b");
  rename_in_index(fs, "old2", "c..d");
  rename_in_index(fs, "old3", "g..h");
  r = fs.snap({"delete", "g..h"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(has(names_in(fs.mnt), "a..b"));
  CHECK(exists(fs.at("a..b/storage/hello.txt")));
  r = fs.snap({"list"});
  CHECK(r.output.find("a..b") != std::string::npos);
  CHECK(::rmdir(fs.at("a..b").c_str()) == 0);
  CHECK_FALSE(has(names_in(fs.mnt), "a..b"));
  // Renamed away from (the fix for an old name), then deleted by the CLI.
  CHECK(::rename(fs.at("c..d").c_str(), fs.at("c.d").c_str()) == 0);
  r = fs.snap({"rename", "c.d", "e..f"});
  CHECK(r.exit_code == 1);
  r = fs.snap({"delete", "c.d"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(names_in(fs.mnt) == std::vector<std::string>{"s", "v1.0"});
}

TEST_CASE("item 9: control characters in a description are escaped by hoody-snap list") {
  require_mount_capabilities();
  Snapfs fs;
  auto r = fs.snap({"create", "evil", "--description", "x\n\x1b[31mFAKE\xc2\x9b" "1m"});
  REQUIRE_MESSAGE(r.exit_code == 0, r.describe());
  r = fs.snap({"list"});
  CHECK(r.exit_code == 0);
  CAPTURE(r.output);
  CHECK(r.output.find('\x1b') == std::string::npos);
  CHECK(r.output.find("\xc2\x9b") == std::string::npos);
  CHECK(r.output.find("x\\n\\x1b[31mFAKE\\u009b1m") != std::string::npos);
  // One header line and one row: the newline did not forge a second row.
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 2);
  // JSON stays JSON, with the description as it was set.
  r = fs.snap({"list", "--json"});
  auto j = nlohmann::json::parse(r.output);
  CHECK(j[0]["description"] == "x\n\x1b[31mFAKE\xc2\x9b" "1m");
  // The daemon's log does not carry the raw escape either.
  CHECK(fs.daemon->log().find('\x1b') == std::string::npos);
}

TEST_CASE("item 11: restore @live is EINVAL, like mkdir @live") {
  require_mount_capabilities();
  Snapfs fs;
  CHECK(err_of(::mkdir(fs.at("@live").c_str(), 0755)) == EINVAL);
  int fd = ::open(fs.at(".hoody/restore").c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  CHECK(err_of(static_cast<int>(::write(fd, "@live\n", 6))) == EINVAL);
  ::close(fd);
  auto r = fs.snap({"restore", "@live"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("Invalid argument") != std::string::npos, r.output);
}

TEST_CASE("item 11: hoody-snap usage errors exit 2, --help exits 0") {
  // No mount needed: the arguments are refused before anything is touched.
  auto r = run({snap_bin(), "list", "--bogus"});
  CHECK_MESSAGE(r.exit_code == 2, r.describe());
  r = run({snap_bin()});
  CHECK_MESSAGE(r.exit_code == 2, r.describe());
  r = run({snap_bin(), "create"});
  CHECK_MESSAGE(r.exit_code == 2, r.describe());
  r = run({snap_bin(), "--help"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(r.output.find("create") != std::string::npos);
  // The refused argument is echoed escaped (item 9 for the usage message).
  r = run({snap_bin(), "list", "--\x1b[31mred"});
  CHECK_MESSAGE(r.exit_code == 2, r.describe());
  CHECK(r.output.find('\x1b') == std::string::npos);
  CHECK_MESSAGE(r.output.find("\\x1b[31mred") != std::string::npos, r.output);
}

TEST_CASE("item 11: open(O_TMPFILE) gives EROFS inside a snapshot, EPERM at the root") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  // Twice: a first ENOSYS would make the kernel answer EOPNOTSUPP for ever after.
  for (int i = 0; i < 2; ++i) {
    CAPTURE(i);
    CHECK(err_of(::open(fs.at("s/storage").c_str(), O_TMPFILE | O_RDWR, 0600)) == EROFS);
    CHECK(err_of(::open(fs.at("s").c_str(), O_TMPFILE | O_WRONLY, 0600)) == EROFS);
    CHECK(err_of(::open(fs.mnt.c_str(), O_TMPFILE | O_RDWR, 0600)) == EPERM);
    CHECK(err_of(::open(fs.at(".hoody").c_str(), O_TMPFILE | O_RDWR, 0600)) == EPERM);
  }
  // The mount still serves everything else.
  CHECK(slurp(fs.at("s/storage/hello.txt")) == "hello\n");
  REQUIRE(::mkdir(fs.at("t").c_str(), 0755) == 0);
  CHECK(::rmdir(fs.at("t").c_str()) == 0);
}

// nosuid,nodev are forced (given first): an operator's -o suid or -o dev, or
// the "suid,dev" that mount.fuse3 adds as root, must not undo them.
TEST_CASE("-o suid or -o dev cannot undo the forced nosuid,nodev") {
  require_mount_capabilities();
  for (const char* extra : {"allow_other,suid", "allow_other,dev", "allow_other,suid,dev,exec"}) {
    CAPTURE(extra);
    Snapfs fs(extra);
    struct statvfs sv;
    REQUIRE(::statvfs(fs.mnt.c_str(), &sv) == 0);
    CHECK((sv.f_flag & ST_NOSUID) != 0);
    CHECK((sv.f_flag & ST_NODEV) != 0);
  }
}
