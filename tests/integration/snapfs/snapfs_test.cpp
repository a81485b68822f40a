// hoody-snapfs on a real BTRFS loop image with the real daemon mounted.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <sstream>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
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

void write_file(const std::string& path, const std::string& data, mode_t mode = 0644) {
  std::ofstream(path) << data;
  ::chmod(path.c_str(), mode);
}

// errno of a call that returns -1 on failure, 0 on success.
int err_of(int r) { return r < 0 ? errno : 0; }

// A container directory with two scope subvolumes and the daemon mounted on it.
struct Snapfs {
  BtrfsPool pool;
  std::string source, storage, databases, mnt;
  std::unique_ptr<Daemon> daemon;

  explicit Snapfs(const std::string& opts = "allow_other") {
    pool.make_dir("containers");
    source = pool.make_dir("containers/c1");
    storage = pool.make_subvolume("containers/c1/storage");
    databases = pool.make_subvolume("containers/c1/databases");
    mnt = pool.make_temp_dir("mnt");
    populate();
    start(opts);
  }
  void start(const std::string& opts) {
    daemon = std::make_unique<Daemon>(
        std::vector<std::string>{snapfs_bin(), "-f", "-o", opts, source, mnt}, mnt,
        pool.dir() + "/daemon.log");
  }
  void populate() {
    write_file(storage + "/hello.txt", "hello\n", 0644);
    write_file(storage + "/private", "secret\n", 0600);
    ::chown((storage + "/private").c_str(), 1000, 1000);
    ::mkdir((storage + "/dir").c_str(), 0750);
    ::chown((storage + "/dir").c_str(), 1000, 100);
    write_file(storage + "/dir/nested", std::string(100000, 'x'), 0640);
    ::link((storage + "/hello.txt").c_str(), (storage + "/dir/hardlink").c_str());
    ::symlink("../hello.txt", (storage + "/dir/sym").c_str());
    ::setxattr((storage + "/hello.txt").c_str(), "user.color", "blue", 4, 0);
    ::mkfifo((storage + "/fifo").c_str(), 0600);
    struct timespec t[2] = {{1000000000, 123456789}, {1100000000, 987654321}};
    ::utimensat(AT_FDCWD, (storage + "/dir/nested").c_str(), t, 0);
    write_file(databases + "/app.db", "db\n", 0600);
  }
  std::string at(const std::string& rel) const { return mnt + "/" + rel; }
};

struct stat lstat_of(const std::string& p) {
  struct stat st {};
  REQUIRE_MESSAGE(::lstat(p.c_str(), &st) == 0, p, ": ", std::strerror(errno));
  return st;
}

std::vector<std::string> listdir(const std::string& p) {
  std::vector<std::string> out;
  auto r = run({"ls", "-A", p});
  std::string cur;
  for (char c : r.output) {
    if (c == '\n') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

std::string getx(const std::string& p, const char* name) {
  char buf[4096];
  ssize_t n = ::getxattr(p.c_str(), name, buf, sizeof buf);
  return n < 0 ? "<" + std::string(std::strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
}

}  // namespace

TEST_CASE("refuses to start on a missing or non-BTRFS source, with one line") {
  require_mount_capabilities();
  BtrfsPool pool;
  auto mnt = pool.make_temp_dir("mnt");
  auto missing = run({snapfs_bin(), "-f", pool.dir() + "/nope", mnt});
  CHECK(missing.exit_code == 1);
  CHECK(missing.output.find("nope") != std::string::npos);
  auto plain = pool.make_temp_dir("plain");  // not on BTRFS
  auto notbtrfs = run({snapfs_bin(), "-f", plain, mnt});
  CHECK(notbtrfs.exit_code == 1);
  CHECK_MESSAGE(notbtrfs.output.find("not on BTRFS") != std::string::npos, notbtrfs.output);
  CHECK(std::count(notbtrfs.output.begin(), notbtrfs.output.end(), '\n') == 1);
  // allow_users with commas: the second name reads as an option; say so.
  auto comma = run({snapfs_bin(), "-f", "-o", "allow_other,allow_users=root,nobody", plain, mnt});
  CHECK(comma.exit_code == 2);
  CHECK_MESSAGE(comma.output.find("separate names with ':'") != std::string::npos, comma.output);
  auto nouser = run({snapfs_bin(), "-f", "-o", "allow_users=no-such-user-x", plain, mnt});
  CHECK(nouser.exit_code == 1);
  CHECK(nouser.output.find("no-such-user-x") != std::string::npos);
  CHECK_FALSE(is_mounted(mnt));
}

TEST_CASE("--status: program, pid, source and the transport in use; one line where none serves") {
  require_mount_capabilities();
  Snapfs s;
  struct stat st;
  REQUIRE(::stat((s.mnt + "/.hoody").c_str(), &st) == 0);
  ExitInfo e = run({snapfs_bin(), "--status", s.mnt}, 10s);
  REQUIRE_MESSAGE(e.ok(), e.describe());
  auto j = nlohmann::json::parse(e.output);
  CHECK(j["program"] == "hoody-snapfs");
  CHECK(j["pid"].get<pid_t>() == s.daemon->pid());
  CHECK(j["mountpoint"] == s.mnt);
  CHECK(j["transport"]["name"] == expected_transport());
  CHECK(j["transport"]["ops"]["LOOKUP"].get<std::uint64_t>() > 0);  // the stat above
  // A directory no hoody-snapfs serves: exit 1 and one line that says so.
  ExitInfo none = run({snapfs_bin(), "--status", s.storage}, 10s);
  CHECK(none.exit_code == 1);
  CHECK_MESSAGE(none.output.find("no hoody-snapfs serves") != std::string::npos, none.output);
  CHECK(run({snapfs_bin(), "--status"}, 10s).exit_code == 2);
}

TEST_CASE("mkdir takes a snapshot that is visible at once; concurrent mkdir: exactly one wins") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("first").c_str(), 0755) == 0);
  CHECK(contains(listdir(fs.mnt), "first"));
  CHECK(contains(listdir(fs.mnt), ".hoody"));
  CHECK(listdir(fs.at("first")) == std::vector<std::string>{"databases", "storage"});
  CHECK(slurp(fs.at("first/storage/hello.txt")) == "hello\n");
  CHECK(err_of(::mkdir(fs.at("first").c_str(), 0755)) == EEXIST);

  // Several processes race for one name.
  Pipe go;
  std::string race = fs.at("race");
  std::vector<Child> kids;
  for (int i = 0; i < 6; ++i)
    kids.emplace_back([&go, race]() -> int {
      if (!go.wait_signal()) return 100;
      return err_of(::mkdir(race.c_str(), 0755));
    });
  for (int i = 0; i < 6; ++i) go.signal();
  int ok = 0, exist = 0;
  for (auto& k : kids) {
    auto e = k.wait();
    if (e.exit_code == 0) ++ok;
    if (e.exit_code == EEXIST) ++exist;
  }
  CHECK(ok == 1);
  CHECK(exist == 5);
  auto json = nlohmann::json::parse(slurp(fs.at(".hoody/snapshots.json")));
  CHECK(json.size() == 2);
  // The store holds one <uuid> directory per snapshot, nothing half-made.
  int dirs = 0;
  for (auto& n : listdir(fs.source + "/.snapshots"))
    if (n.size() == 36) ++dirs;
  CHECK(dirs == 2);
}

TEST_CASE("a snapshot shows exact contents, on its own filesystem") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  for (const char* rel : {"hello.txt", "private", "dir", "dir/nested", "dir/hardlink", "dir/sym", "fifo"}) {
    CAPTURE(rel);
    auto a = lstat_of(fs.storage + "/" + rel);
    auto b = lstat_of(fs.at(std::string("s/storage/") + rel));
    CHECK(a.st_mode == b.st_mode);
    CHECK(a.st_uid == b.st_uid);
    CHECK(a.st_gid == b.st_gid);
    CHECK(a.st_size == b.st_size);
    CHECK(a.st_nlink == b.st_nlink);
    CHECK(a.st_mtim.tv_sec == b.st_mtim.tv_sec);
    CHECK(a.st_mtim.tv_nsec == b.st_mtim.tv_nsec);
    // The backing number, with the snapshot subvolume's prefix in the top bits.
    CHECK(a.st_ino == (b.st_ino & ((1ull << 48) - 1)));
  }
  // Two snapshots of one file are two files to du, tar and cp -a: one st_dev,
  // different st_ino.
  REQUIRE(::mkdir(fs.at("s2").c_str(), 0755) == 0);
  CHECK(lstat_of(fs.at("s/storage/hello.txt")).st_dev == lstat_of(fs.at("s2/storage/hello.txt")).st_dev);
  CHECK(lstat_of(fs.at("s/storage/hello.txt")).st_ino != lstat_of(fs.at("s2/storage/hello.txt")).st_ino);
  // Hard links are one inode in the mount too.
  CHECK(lstat_of(fs.at("s/storage/hello.txt")).st_ino == lstat_of(fs.at("s/storage/dir/hardlink")).st_ino);
  char target[256] = {};
  CHECK(::readlink(fs.at("s/storage/dir/sym").c_str(), target, sizeof target) == 12);
  CHECK(std::string(target) == "../hello.txt");
  CHECK(slurp(fs.at("s/storage/dir/sym")) == "hello\n");
  CHECK(getx(fs.at("s/storage/hello.txt"), "user.color") == "blue");
  CHECK(slurp(fs.at("s/storage/dir/nested")) == std::string(100000, 'x'));
  // Later changes of the live state do not show in the snapshot.
  write_file(fs.storage + "/hello.txt", "changed\n");
  CHECK(slurp(fs.at("s/storage/hello.txt")) == "hello\n");
  // Its own st_dev: find -xdev and du -x stop at the mount.
  CHECK(lstat_of(fs.mnt).st_dev != lstat_of(fs.pool.path()).st_dev);
  CHECK(major(lstat_of(fs.at("s/storage/hello.txt")).st_dev) == 0);
  auto found = run({"find", fs.pool.dir(), "-xdev", "-name", "nested"});
  CHECK(found.output.find(fs.mnt) == std::string::npos);
  // The snapshot directory: read-only look, times = creation.
  auto top = lstat_of(fs.at("s"));
  CHECK(top.st_mode == (S_IFDIR | 0777));
  CHECK(top.st_nlink == 4);
}

TEST_CASE("every mutating call inside a snapshot gives EROFS") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  auto p = [&](const char* rel) { return fs.at(std::string("s/storage/") + rel); };
  CHECK(err_of(::open(p("hello.txt").c_str(), O_WRONLY)) == EROFS);
  CHECK(err_of(::open(p("hello.txt").c_str(), O_RDWR)) == EROFS);
  CHECK(err_of(::open(p("hello.txt").c_str(), O_RDONLY | O_TRUNC)) == EROFS);
  CHECK(err_of(::open(p("new").c_str(), O_WRONLY | O_CREAT, 0644)) == EROFS);
  CHECK(err_of(::mkdir(p("newdir").c_str(), 0755)) == EROFS);
  CHECK(err_of(::mknod(p("node").c_str(), S_IFIFO | 0644, 0)) == EROFS);
  CHECK(err_of(::symlink("x", p("newsym").c_str())) == EROFS);
  CHECK(err_of(::link(p("hello.txt").c_str(), p("newlink").c_str())) == EROFS);
  CHECK(err_of(::unlink(p("hello.txt").c_str())) == EROFS);
  CHECK(err_of(::rmdir(p("dir").c_str())) == EROFS);
  CHECK(err_of(::rename(p("hello.txt").c_str(), p("moved").c_str())) == EROFS);
  CHECK(err_of(::chmod(p("hello.txt").c_str(), 0777)) == EROFS);
  CHECK(err_of(::chown(p("hello.txt").c_str(), 1, 1)) == EROFS);
  CHECK(err_of(::truncate(p("hello.txt").c_str(), 0)) == EROFS);
  CHECK(err_of(::utimensat(AT_FDCWD, p("hello.txt").c_str(), nullptr, 0)) == EROFS);
  CHECK(err_of(::setxattr(p("hello.txt").c_str(), "user.x", "1", 1, 0)) == EROFS);
  CHECK(err_of(::removexattr(p("hello.txt").c_str(), "user.color")) == EROFS);
  CHECK(slurp(fs.storage + "/hello.txt") == "hello\n");
  // Files cannot be made at the root or in .hoody/.
  CHECK(err_of(::open(fs.at("file").c_str(), O_WRONLY | O_CREAT, 0644)) == EPERM);
  CHECK(err_of(::symlink("x", fs.at("sym").c_str())) == EPERM);
  CHECK(err_of(::rmdir(fs.at(".hoody").c_str())) == EPERM);
  CHECK(err_of(::unlink(fs.at(".hoody/log").c_str())) == EPERM);
}

// The root and .hoody/ are the passthrough core's virtual nodes: the core
// routes every op on them to snapfs's v*() hooks (statfs of the store,
// security xattrs unsupported, links refused, seeks by data unsupported,
// listings with the parent's number for "..").
TEST_CASE("the root and .hoody/ through the core's virtual nodes") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  // statfs anywhere in the mount is the store's filesystem's (not zeros).
  struct statvfs in_snap {}, at_root {}, in_ctl {}, store {};
  REQUIRE(::statvfs(fs.at("s/storage").c_str(), &in_snap) == 0);
  REQUIRE(::statvfs(fs.mnt.c_str(), &at_root) == 0);
  REQUIRE(::statvfs(fs.at(".hoody").c_str(), &in_ctl) == 0);
  REQUIRE(::statvfs((fs.source + "/.snapshots").c_str(), &store) == 0);
  CHECK(at_root.f_blocks == store.f_blocks);
  CHECK(in_ctl.f_blocks == store.f_blocks);
  CHECK(at_root.f_blocks > 0);
  // No security labels on the daemon's nodes (EOPNOTSUPP, so that ls stops
  // asking); the ACL names are "not set".
  char buf[64];
  for (const char* n : {"", ".hoody", ".hoody/log"}) {
    CAPTURE(n);
    CHECK(::lgetxattr(fs.at(n).c_str(), "security.selinux", buf, sizeof buf) < 0);
    CHECK(errno == EOPNOTSUPP);
    CHECK(::lgetxattr(fs.at(n).c_str(), "system.posix_acl_access", buf, sizeof buf) < 0);
    CHECK(errno == ENODATA);
    CHECK(::llistxattr(fs.at(n).c_str(), buf, sizeof buf) == 0);
    CHECK(err_of(::lsetxattr(fs.at(n).c_str(), "user.x", "1", 1, 0)) == EPERM);
  }
  // Nothing is linked into the root or .hoody/, nor out of .hoody/ (EPERM);
  // nothing moves between .hoody/ and a snapshot (EXDEV).
  CHECK(err_of(::link(fs.at("s/storage/hello.txt").c_str(), fs.at("h").c_str())) == EPERM);
  CHECK(err_of(::link(fs.at("s/storage/hello.txt").c_str(), fs.at(".hoody/h").c_str())) == EPERM);
  CHECK(err_of(::link(fs.at(".hoody/log").c_str(), fs.at("s/storage/h").c_str())) == EPERM);
  CHECK(err_of(::rename(fs.at(".hoody/log").c_str(), fs.at("s/storage/h").c_str())) == EXDEV);
  CHECK(err_of(::rename(fs.at("s/storage/hello.txt").c_str(), fs.at(".hoody/h").c_str())) == EXDEV);
  CHECK(err_of(::rename(fs.at(".hoody/log").c_str(), fs.at("log").c_str())) == EXDEV);
  CHECK(err_of(::rename(fs.at(".hoody/log").c_str(), fs.at(".hoody/log2").c_str())) == EPERM);
  // The root's attributes are the store's directory's: read-only.
  CHECK(err_of(::chmod(fs.mnt.c_str(), 0700)) == EROFS);
  CHECK(err_of(::chmod(fs.at(".hoody/restore").c_str(), 0700)) == EPERM);
  CHECK(err_of(::truncate(fs.at(".hoody/restore").c_str(), 0)) == 0);
  CHECK(err_of(::truncate(fs.at(".hoody/log").c_str(), 0)) == EPERM);
  {
    int fd = ::open(fs.at(".hoody/snapshots.json").c_str(), O_RDONLY);
    REQUIRE(fd >= 0);
    CHECK(::lseek(fd, 0, SEEK_DATA) < 0);
    CHECK(errno == EOPNOTSUPP);
    CHECK(::lseek(fd, 3, SEEK_SET) == 3);
    char c = 0;
    CHECK(::read(fd, &c, 1) == 1);
    ::close(fd);
  }
  // "." and ".." of each virtual directory carry the numbers stat shows.
  auto dots = [&](const std::string& dir, const std::string& parent) {
    CAPTURE(dir);
    struct stat self {}, up {};
    REQUIRE(::stat(fs.at(dir).c_str(), &self) == 0);
    REQUIRE(::stat(parent.c_str(), &up) == 0);
    DIR* d = ::opendir(fs.at(dir).c_str());
    REQUIRE(d != nullptr);
    std::map<std::string, ino_t> seen;
    while (auto* e = ::readdir(d)) seen[e->d_name] = e->d_ino;
    ::closedir(d);
    CHECK(seen["."] == self.st_ino);
    CHECK(seen[".."] == up.st_ino);
  };
  dots(".hoody", fs.mnt);
  dots(".hoody/diff", fs.at(".hoody"));
  dots("", fs.mnt);
}

TEST_CASE("non-root users: EPERM for the verbs, original permissions for reading") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  ::chmod(fs.pool.dir().c_str(), 0755);
  std::string m = fs.mnt;
  auto e = run_child([m]() -> int {
    if (err_of(::mkdir((m + "/mine").c_str(), 0755)) != EPERM) return 1;
    if (err_of(::rmdir((m + "/s").c_str())) != EPERM) return 2;
    if (err_of(::rename((m + "/s").c_str(), (m + "/t").c_str())) != EPERM) return 3;
    if (err_of(::open((m + "/.hoody/restore").c_str(), O_WRONLY)) != EPERM) return 4;
    if (err_of(::setxattr((m + "/s").c_str(), "user.hoody.expires", "+1d", 3, 0)) != EPERM) return 5;
    if (err_of(::open((m + "/s/storage/private").c_str(), O_RDONLY)) != EACCES) return 6;
    if (err_of(::open((m + "/s/storage/dir/nested").c_str(), O_RDONLY)) != EACCES) return 7;
    int fd = ::open((m + "/s/storage/hello.txt").c_str(), O_RDONLY);
    if (fd < 0) return 8;
    ::close(fd);
    if (err_of(::open((m + "/.hoody/snapshots.json").c_str(), O_RDONLY)) != 0) return 9;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  CHECK(contains(listdir(fs.mnt), "s"));
  auto log = slurp(fs.at(".hoody/log"));
  CHECK(log.find("\"uid\":65534") != std::string::npos);
  CHECK(log.find("EPERM") != std::string::npos);
}

TEST_CASE("allow_users lets a named user take and delete snapshots") {
  require_mount_capabilities();
  Snapfs fs("allow_other,allow_users=nobody:1234");
  ::chmod(fs.pool.dir().c_str(), 0755);
  std::string m = fs.mnt;
  auto e = run_child([m]() -> int {
    if (::mkdir((m + "/by-nobody").c_str(), 0755) != 0) return 1;
    if (::rename((m + "/by-nobody").c_str(), (m + "/renamed").c_str()) != 0) return 2;
    if (::rmdir((m + "/renamed").c_str()) != 0) return 3;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
}

TEST_CASE("allow_groups lets the members of a group in (primary or supplementary)") {
  require_mount_capabilities();
  Snapfs fs("allow_other,allow_groups=65534");
  ::chmod(fs.pool.dir().c_str(), 0755);
  std::string m = fs.mnt;
  auto e = run_child([m]() -> int {
    if (::mkdir((m + "/by-group").c_str(), 0755) != 0) return 1;
    if (::setxattr((m + "/by-group").c_str(), "user.hoody.expires", "+1d", 3, 0) != 0) return 2;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  auto other = run_child([m]() -> int {
    if (::setgroups(0, nullptr) != 0 || ::setresgid(1234, 1234, 1234) != 0 ||
        ::setresuid(1234, 1234, 1234) != 0)
      return 100;
    return err_of(::mkdir((m + "/by-other").c_str(), 0755));
  });
  CHECK(other.exit_code == EPERM);
}

TEST_CASE("rmdir deletes all of a snapshot; mv renames only within the directory") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("a").c_str(), 0755) == 0);
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);
  std::string uuid = getx(fs.at("a"), "user.hoody.uuid");
  REQUIRE(uuid.size() == 36);
  CHECK(::access((fs.source + "/.snapshots/" + uuid + "/storage").c_str(), F_OK) == 0);
  CHECK(err_of(::rename(fs.at("a").c_str(), fs.at("b").c_str())) == EEXIST);
  CHECK(err_of(::renameat2(AT_FDCWD, fs.at("a").c_str(), AT_FDCWD, fs.at("b").c_str(), RENAME_NOREPLACE)) == EEXIST);
  CHECK(err_of(::renameat2(AT_FDCWD, fs.at("a").c_str(), AT_FDCWD, fs.at("b").c_str(), RENAME_EXCHANGE)) == EINVAL);
  CHECK(err_of(::rename(fs.at("a").c_str(), fs.at("b/storage/x").c_str())) == EXDEV);
  CHECK(err_of(::rename(fs.at("a").c_str(), fs.at(".hoody/x").c_str())) == EXDEV);
  CHECK(err_of(::rename(fs.at("a").c_str(), fs.at("bad name").c_str())) == EINVAL);
  CHECK(err_of(::rename(fs.at("a").c_str(), fs.at("-x").c_str())) == EINVAL);
  CHECK(err_of(::rename(fs.at("a").c_str(), fs.at("c").c_str())) == 0);
  CHECK_FALSE(contains(listdir(fs.mnt), "a"));
  CHECK(contains(listdir(fs.mnt), "c"));
  CHECK(getx(fs.at("c"), "user.hoody.uuid") == uuid);
  CHECK(slurp(fs.at("c/storage/hello.txt")) == "hello\n");
  CHECK(err_of(::rmdir(fs.at("c").c_str())) == 0);
  CHECK(err_of(::rmdir(fs.at("c").c_str())) == ENOENT);
  CHECK(::access((fs.source + "/.snapshots/" + uuid).c_str(), F_OK) != 0);
  CHECK(listdir(fs.mnt) == std::vector<std::string>{".hoody", "b"});
  // Bad names at mkdir: EINVAL and a log line saying why.
  CHECK(err_of(::mkdir(fs.at("semi;colon").c_str(), 0755)) == EINVAL);
  CHECK(err_of(::mkdir(fs.at(".dot").c_str(), 0755)) == EINVAL);
  CHECK(err_of(::mkdir(fs.at(std::string(255, 'n')).c_str(), 0755)) == 0);
  CHECK(slurp(fs.at(".hoody/log")).find("may not contain ';'") != std::string::npos);
}

TEST_CASE("metadata xattrs; expiry pruned by the daemon") {
  require_mount_capabilities();
  Snapfs fs("allow_other,prune_interval=1,default_expiry=+1w");
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  auto s = fs.at("s");
  CHECK(getx(s, "user.hoody.uuid").size() == 36);
  CHECK(getx(s, "user.hoody.type") == "filesystem");
  CHECK(getx(s, "user.hoody.creator") == "0");
  CHECK(getx(s, "user.hoody.created").size() == 20);
  CHECK(getx(s, "user.hoody.expires").size() == 20);  // the default expiry
  CHECK(getx(s, "user.hoody.description") == "<No data available>");
  CHECK(::setxattr(s.c_str(), "user.hoody.description", "before deploy", 13, 0) == 0);
  CHECK(getx(s, "user.hoody.description") == "before deploy");
  CHECK(::setxattr(s.c_str(), "user.hoody.expires", "2099-01-01T00:00:00Z", 20, 0) == 0);
  CHECK(getx(s, "user.hoody.expires") == "2099-01-01T00:00:00Z");
  CHECK(err_of(::setxattr(s.c_str(), "user.hoody.expires", "tomorrow", 8, 0)) == EINVAL);
  CHECK(err_of(::setxattr(s.c_str(), "user.hoody.uuid", "x", 1, 0)) == EPERM);
  char list[1024];
  ssize_t n = ::listxattr(s.c_str(), list, sizeof list);
  REQUIRE(n > 0);
  std::string names(list, static_cast<size_t>(n));
  for (const char* k : {"uuid", "created", "creator", "type", "expires", "description"})
    CHECK(names.find(std::string("user.hoody.") + k + '\0') != std::string::npos);
  CHECK(::removexattr(s.c_str(), "user.hoody.expires") == 0);
  CHECK(getx(s, "user.hoody.expires") == "<No data available>");
  // Expired: gone within the prune interval (1 s here), without a request.
  REQUIRE(::mkdir(fs.at("short").c_str(), 0755) == 0);
  CHECK(::setxattr(fs.at("short").c_str(), "user.hoody.expires", "+1m", 3, 0) == 0);
  REQUIRE(::mkdir(fs.at("old").c_str(), 0755) == 0);
  CHECK(::setxattr(fs.at("old").c_str(), "user.hoody.expires", "2001-01-01T00:00:00Z", 20, 0) == 0);
  bool gone = false;
  for (int i = 0; i < 50 && !gone; ++i) {
    std::this_thread::sleep_for(100ms);
    gone = !contains(listdir(fs.mnt), "old");
  }
  CHECK(gone);
  CHECK(contains(listdir(fs.mnt), "short"));
  CHECK(contains(listdir(fs.mnt), "s"));
  CHECK(slurp(fs.at(".hoody/log")).find("\"action\":\"prune\",\"name\":\"old\"") != std::string::npos);
}

TEST_CASE("restore through .hoody/restore") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("good").c_str(), 0755) == 0);
  write_file(fs.storage + "/hello.txt", "broken\n");
  ::unlink((fs.databases + "/app.db").c_str());
  {
    int fd = ::open(fs.at(".hoody/restore").c_str(), O_WRONLY | O_TRUNC);
    REQUIRE(fd >= 0);
    CHECK(::write(fd, "good\n", 5) == 5);
    ::close(fd);
  }
  CHECK(slurp(fs.storage + "/hello.txt") == "hello\n");
  CHECK(slurp(fs.databases + "/app.db") == "db\n");
  // The live state is writable again, and the state before is kept.
  write_file(fs.storage + "/after", "ok\n");
  CHECK(slurp(fs.storage + "/after") == "ok\n");
  std::string safety;
  for (auto& n : listdir(fs.mnt))
    if (n.rfind("pre-restore-", 0) == 0) safety = n;
  REQUIRE_FALSE(safety.empty());
  CHECK(slurp(fs.at(safety + "/storage/hello.txt")) == "broken\n");
  // Errors come back from the write.
  int fd = ::open(fs.at(".hoody/restore").c_str(), O_WRONLY);
  REQUIRE(fd >= 0);
  CHECK(err_of(static_cast<int>(::write(fd, "nope\n", 5))) == ENOENT);
  CHECK(err_of(static_cast<int>(::write(fd, "a/b\n", 4))) == EINVAL);
  ::close(fd);
  CHECK(err_of(::open(fs.at(".hoody/restore").c_str(), O_RDONLY)) == EACCES);
  auto sh = run({"sh", "-c", "echo good > " + fs.at(".hoody/restore")});
  CHECK_MESSAGE(sh.exit_code == 0, sh.describe());
  // Restores at once from several processes, each with an fd opened before:
  // the kernel serialises their writes, the first one restores, the others
  // find that a restore ran since they opened the file: EBUSY.
  Pipe opened, go;
  std::string ctl = fs.at(".hoody/restore");
  std::vector<Child> kids;
  for (int i = 0; i < 4; ++i)
    kids.emplace_back([&opened, &go, ctl]() -> int {
      int fd = ::open(ctl.c_str(), O_WRONLY);
      if (fd < 0) return 100;
      opened.signal();
      if (!go.wait_signal()) return 101;
      return err_of(static_cast<int>(::write(fd, "good\n", 5)) < 0 ? -1 : 0);
    });
  for (int i = 0; i < 4; ++i) REQUIRE(opened.wait_signal());
  for (int i = 0; i < 4; ++i) go.signal();
  int done = 0;
  for (auto& k : kids) {
    auto e = k.wait();
    CHECK_MESSAGE((e.exit_code == 0 || e.exit_code == EBUSY), e.describe());
    done += e.exit_code == 0;
  }
  CHECK(done == 1);
  CHECK(slurp(fs.storage + "/hello.txt") == "hello\n");
}

TEST_CASE("control files: snapshots.json, log, diff") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("a").c_str(), 0755) == 0);
  write_file(fs.storage + "/added", "new\n");
  write_file(fs.storage + "/hello.txt", "changed\n");
  ::unlink((fs.storage + "/private").c_str());
  ::rename((fs.storage + "/dir/nested").c_str(), (fs.storage + "/dir/moved").c_str());
  REQUIRE(::mkdir(fs.at("b").c_str(), 0755) == 0);
  write_file(fs.databases + "/later", "x\n");

  CHECK(listdir(fs.at(".hoody")) ==
        std::vector<std::string>{"diff", "log", "restore", "schedule", "snapshots.json"});
  CHECK(listdir(fs.at(".hoody/diff")).empty());
  auto d = slurp(fs.at(".hoody/diff/a..b"));
  CHECK_MESSAGE(d.find("+ storage/added\n") != std::string::npos, d);
  CHECK_MESSAGE(d.find("M storage/hello.txt\n") != std::string::npos, d);
  CHECK_MESSAGE(d.find("- storage/private\n") != std::string::npos, d);
  CHECK_MESSAGE(d.find("R storage/dir/nested -> storage/dir/moved\n") != std::string::npos, d);
  CHECK(d.find("databases/") == std::string::npos);
  auto live = slurp(fs.at(".hoody/diff/b..@live"));
  CHECK_MESSAGE(live == "+ databases/later\n", live);
  CHECK(err_of(::access(fs.at(".hoody/diff/a..nope").c_str(), F_OK)) == ENOENT);
  CHECK(err_of(::access(fs.at(".hoody/diff/garbage").c_str(), F_OK)) == ENOENT);
  // No temporary snapshot of the live state is left behind.
  for (auto& n : listdir(fs.source + "/.snapshots")) CHECK(n.rfind(".diff-", 0) != 0);

  auto j = nlohmann::json::parse(slurp(fs.at(".hoody/snapshots.json")));
  REQUIRE(j.size() == 2);
  CHECK(j[0]["name"] == "a");
  CHECK(j[1]["name"] == "b");
  CHECK(j[0]["subvolumes"] == nlohmann::json::array({"databases", "storage"}));
  CHECK(j[0]["uuid"] == getx(fs.at("a"), "user.hoody.uuid"));

  ::rmdir(fs.at("b").c_str());
  std::vector<nlohmann::json> lines;
  std::istringstream in(slurp(fs.at(".hoody/log")));
  for (std::string l; std::getline(in, l);) lines.push_back(nlohmann::json::parse(l));
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["action"] == "create");
  CHECK(lines[2]["action"] == "delete");
  CHECK(lines[2]["name"] == "b");
  CHECK(lines[2]["result"] == "ok");
  for (auto& l : lines)
    for (const char* k : {"time", "uid", "pid", "action", "name", "result"}) CHECK(l.contains(k));
}

TEST_CASE("a slow snapshot does not block the other requests of the mount") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("before").c_str(), 0755) == 0);
  // Dirty data that the snapshot must flush.
  {
    std::string block(1 << 20, 'd');
    std::ofstream out(fs.storage + "/dirty");
    for (int i = 0; i < 300; ++i) out << block;
  }
  std::string target = fs.at("slow");
  // Names already known to the kernel.  (A name the kernel has never seen at
  // the root waits for the VFS's lock of the root directory, which mkdir
  // holds exclusively: that wait is the kernel's, not the daemon's.)
  CHECK(slurp(fs.at("before/storage/hello.txt")) == "hello\n");
  CHECK(!slurp(fs.at(".hoody/snapshots.json")).empty());
  auto t0 = std::chrono::steady_clock::now();
  std::atomic<bool> done{false};
  std::thread maker([&] {
    ::mkdir(target.c_str(), 0755);
    done = true;
  });
  std::this_thread::sleep_for(20ms);
  double worst = 0;
  int reads = 0;
  while (reads < 5 || !done) {
    auto a = std::chrono::steady_clock::now();
    CHECK(slurp(fs.at("before/storage/hello.txt")) == "hello\n");
    CHECK(!slurp(fs.at(".hoody/snapshots.json")).empty());
    CHECK(getx(fs.at("before"), "user.hoody.type") == "filesystem");
    worst = std::max(worst, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    ++reads;
    if (std::chrono::steady_clock::now() - t0 > 20s) break;
  }
  maker.join();
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("mkdir with 300 MiB dirty: ", total, " s; worst read meanwhile: ", worst, " s");
  CHECK(worst < 0.5);
  CHECK(contains(listdir(fs.mnt), "slow"));
}

TEST_CASE("hoody-snap: every command through the mount") {
  require_mount_capabilities();
  Snapfs fs;
  ::setenv("HOODY_SNAPSHOTS", fs.mnt.c_str(), 1);
  auto snap = [](std::vector<std::string> args) {
    args.insert(args.begin(), snap_bin());
    return run(args);
  };
  auto r = snap({"create", "one", "--expire", "+7d", "--description", "first one"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(getx(fs.at("one"), "user.hoody.description") == "first one");
  CHECK(getx(fs.at("one"), "user.hoody.expires").size() == 20);
  r = snap({"create", "one"});
  CHECK(r.exit_code != 0);
  CHECK_MESSAGE(r.output.find("File exists") != std::string::npos, r.output);
  r = snap({"create", "bad/name"});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("'/'") != std::string::npos);
  r = snap({"list"});
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("first one") != std::string::npos);
  r = snap({"list", "--json"});
  CHECK(nlohmann::json::parse(r.output).size() == 1);
  write_file(fs.storage + "/hello.txt", "v2\n");
  r = snap({"diff", "one"});
  CHECK_MESSAGE(r.output == "M storage/hello.txt\n", r.describe());
  r = snap({"rename", "one", "two"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  r = snap({"create", "three"});
  r = snap({"rename", "two", "three"});
  CHECK(r.exit_code != 0);
  r = snap({"diff", "two", "three"});
  CHECK_MESSAGE(r.output == "M storage/hello.txt\n", r.describe());
  r = snap({"restore", "two"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(slurp(fs.storage + "/hello.txt") == "hello\n");
  r = snap({"restore", "missing"});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("No such file") != std::string::npos);
  std::string dest = fs.pool.path() + "/golden";
  r = snap({"clone", "three", dest});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(slurp(dest + "/storage/hello.txt") == "v2\n");
  write_file(dest + "/storage/hello.txt", "writable\n");
  CHECK(slurp(dest + "/storage/hello.txt") == "writable\n");
  r = snap({"delete", "two"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  r = snap({"delete", "two"});
  CHECK(r.exit_code != 0);
  r = snap({"--mount", fs.pool.dir(), "list"});
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("no hoody-snapfs mount") != std::string::npos);
  // Non-root: a clear EPERM.
  std::string bin = snap_bin(), m = fs.mnt;
  auto e = run_child([bin, m]() -> int {
    ::execl(bin.c_str(), bin.c_str(), "--mount", m.c_str(), "create", "x", nullptr);
    return 127;
  }, {.as_nobody = true});
  CHECK(e.exit_code == 1);
  CHECK(e.output.find("Operation not permitted") != std::string::npos);
  CHECK(e.output.find("allow_users") != std::string::npos);
  ::unsetenv("HOODY_SNAPSHOTS");
  run({"btrfs", "subvolume", "delete", dest + "/storage", dest + "/databases"});
}

TEST_CASE("an fstab line mounts it through mount.fuse3 (daemonized); another reader of index.db loses it nothing") {
  require_mount_capabilities();
  BtrfsPool pool;
  pool.make_dir("containers");
  auto source = pool.make_dir("containers/c1");
  pool.make_subvolume("containers/c1/storage");
  auto mnt = pool.make_temp_dir("mnt");
  std::string fstab = pool.dir() + "/fstab";
  // The line of the man page, with this test's paths.
  write_file(fstab, source + " " + mnt + " fuse.hoody-snapfs allow_other 0 0\n");
  // mount(8) runs its helpers without the caller's PATH, and mount.fuse3
  // runs `/bin/sh -c hoody-snapfs ...`, so the program must be on the shell's
  // default PATH: in a private mount namespace, /usr/local/sbin is a dir
  // holding a link to the built daemon.  The FUSE mount lives only there.
  auto bindir = pool.make_temp_dir("sbin");
  REQUIRE(::symlink(snapfs_bin().c_str(), (bindir + "/hoody-snapfs").c_str()) == 0);
  std::string script =
      "set -e\n"
      "mount --make-rprivate /\n"
      "mount --bind '" + bindir + "' /usr/local/sbin\n"
      "trap 'fusermount3 -u \"" + mnt + "\" 2>/dev/null || true' EXIT\n"
      "mount -T '" + fstab + "' -a\n"
      "i=0; until grep -q ' " + mnt + " ' /proc/self/mountinfo; do i=$((i+1)); [ $i -lt 50 ]; sleep 0.1; done\n"
      "grep ' " + mnt + " ' /proc/self/mountinfo | grep -q 'fuse.hoody-snapfs'\n"
      "mkdir '" + mnt + "/from-fstab'\n"
      "grep -q from-fstab '" + mnt + "/.hoody/snapshots.json'\n"
      // Another process reads the index and closes it.  A daemon whose index
      // connection crossed fuse_daemonize's fork holds no lock on it: this
      // reader took itself for the last connection and deleted the WAL, and
      // the daemon's next row went into the deleted file.
      "sqlite3 '" + source + "/.snapshots/index.db' 'SELECT count(*) FROM snapshots' >/dev/null\n"
      "mkdir '" + mnt + "/second'\n"
      "test \"$(sqlite3 '" + source + "/.snapshots/index.db' \"SELECT name FROM snapshots WHERE name = 'second'\")\" = second "
      "|| { echo 'second is not in index.db'; exit 1; }\n"
      "cat '" + mnt + "/.hoody/snapshots.json'\n"
      "fusermount3 -u '" + mnt + "'\n"
      "echo mounted-and-unmounted\n";
  auto r = run({"unshare", "-m", "sh", "-c", script}, 30s);
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(r.output.find("mounted-and-unmounted") != std::string::npos);
  CHECK_FALSE(is_mounted(mnt));
  // The snapshot was taken in the store (outside the namespace too).
  auto j = nlohmann::json::parse(r.output.substr(r.output.find('['), r.output.rfind(']') + 1 - r.output.find('[')));
  REQUIRE(j.size() == 2);
  CHECK(j[0]["name"] == "from-fstab");
  CHECK(j[0]["uuid"].get<std::string>().size() == 36);
  CHECK(::access((source + "/.snapshots/" + j[0]["uuid"].get<std::string>()).c_str(), F_OK) == 0);
}

namespace {

int count_prefix(const std::vector<std::string>& names, const std::string& prefix) {
  return static_cast<int>(std::count_if(names.begin(), names.end(), [&](const std::string& n) {
    return n.rfind(prefix, 0) == 0;
  }));
}

// Write `line` to .hoody/restore opened O_RDWR, read the result back.
struct Restored {
  int err = 0;
  nlohmann::json result;
};
Restored restore_rw(const std::string& ctl, const std::string& line) {
  Restored out;
  int fd = ::open(ctl.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    out.err = errno;
    return out;
  }
  if (::write(fd, line.data(), line.size()) < 0) out.err = errno;
  char buf[65536];
  ssize_t n = ::pread(fd, buf, sizeof buf, 0);
  if (n > 0) out.result = nlohmann::json::parse(std::string(buf, static_cast<size_t>(n)), nullptr, false);
  ::close(fd);
  return out;
}

}  // namespace

TEST_CASE("concurrent restores (issue 7 item 8): exactly one runs, the others get EBUSY") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("good").c_str(), 0755) == 0);
  std::string ctl = fs.at(".hoody/restore");
  for (int k : {3, 6}) {
    CAPTURE(k);
    int before = count_prefix(listdir(fs.mnt), "pre-restore-");
    // k restores at once: every child has the control file open before the
    // first write, then all write together.  The kernel serialises writes to
    // one file, so the first runs and every later one finds that a restore
    // ran since its file was opened: EBUSY, whatever the timing.
    Pipe ready, go;
    std::vector<Child> kids;
    for (int i = 0; i < k; ++i)
      kids.emplace_back([&ready, &go, ctl]() -> int {
        int fd = ::open(ctl.c_str(), O_WRONLY);
        if (fd < 0) return 100 + errno;
        ready.signal();
        if (!go.wait_signal()) return 99;
        ssize_t n = ::write(fd, "good\n", 5);
        int err = n == 5 ? 0 : errno;
        ::close(fd);
        return err == 0 ? 0 : err == EBUSY ? 1 : 200 + err;
      });
    for (int i = 0; i < k; ++i) REQUIRE(ready.wait_signal());
    for (int i = 0; i < k; ++i) go.signal();
    int ok = 0, busy = 0;
    for (auto& kid : kids) {
      auto e = kid.wait();
      if (e.exit_code == 0) ++ok;
      else if (e.exit_code == 1) ++busy;
      else FAIL_CHECK(e.describe());
    }
    CHECK(ok == 1);
    CHECK(busy == k - 1);
    // One restore ran: one safety snapshot.
    CHECK(count_prefix(listdir(fs.mnt), "pre-restore-") == before + 1);
  }
  {
    // As a user runs it: `echo good > .hoody/restore` from 4 shells at once
    // (bash: dash says "I/O error" for any failed write of its echo).  A
    // shell that starts after a restore finished runs its own, so only this
    // holds whatever the timing: each one succeeded with its own safety
    // snapshot or got EBUSY, and at least one ran.
    const int k = 4;
    int before = count_prefix(listdir(fs.mnt), "pre-restore-");
    Pipe go;
    std::vector<Child> kids;
    for (int i = 0; i < k; ++i)
      kids.emplace_back([&go, ctl]() -> int {
        if (!go.wait_signal()) return 101;
        ::execlp("bash", "bash", "-c", ("echo good > '" + ctl + "'").c_str(), nullptr);
        return 127;
      });
    for (int i = 0; i < k; ++i) go.signal();
    int ok = 0, busy = 0;
    for (auto& kid : kids) {
      auto e = kid.wait();
      if (e.exit_code == 0) ++ok;
      else if (e.output.find("Device or resource busy") != std::string::npos) ++busy;
      else FAIL_CHECK(e.describe());
    }
    CHECK(ok >= 1);
    CHECK(ok + busy == k);
    CHECK(count_prefix(listdir(fs.mnt), "pre-restore-") == before + ok);
    MESSAGE(k << " shells at once: " << ok << " restored, " << busy << " got EBUSY");
  }
  // A restore fd opened before another restore ran: EBUSY, even though none
  // runs now; opened again, it restores.
  int stale = ::open(ctl.c_str(), O_WRONLY);
  REQUIRE(stale >= 0);
  auto r = restore_rw(ctl, "good\n");
  REQUIRE(r.err == 0);
  CHECK(err_of(static_cast<int>(::write(stale, "good\n", 5))) == EBUSY);
  ::close(stale);
  // A refused restore (no such snapshot) does not count as one that ran.
  stale = ::open(ctl.c_str(), O_WRONLY);
  CHECK(restore_rw(ctl, "missing\n").err == ENOENT);
  CHECK(::write(stale, "good\n", 5) == 5);
  ::close(stale);
  std::string log = slurp(fs.at(".hoody/log"));
  CHECK_MESSAGE(log.find("another restore ran since this file was opened") != std::string::npos, log);
}

TEST_CASE("restore result read back from .hoody/restore; the man page's errors") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("good").c_str(), 0755) == 0);
  std::string ctl = fs.at(".hoody/restore");
  auto r = restore_rw(ctl, "good\n");
  CHECK(r.err == 0);
  REQUIRE(r.result.is_object());
  CHECK(r.result["ok"] == true);
  CHECK(r.result["name"] == "good");
  std::string safety = r.result.value("safety", "");
  CHECK(safety.rfind("pre-restore-", 0) == 0);
  CHECK(contains(listdir(fs.mnt), safety));
  CHECK(r.result["consistency"] == "crash");  // no hoody-dbfs here: nothing quiesced
  CHECK(r.result["stale_holders"].is_array());
  r = restore_rw(ctl, "nope\n");
  CHECK(r.err == ENOENT);
  CHECK(r.result["ok"] == false);
  CHECK(r.result["errno"] == "ENOENT");
  CHECK(r.result["error"].get<std::string>().find("no snapshot") != std::string::npos);
  r = restore_rw(ctl, "a/b\n");
  CHECK(r.err == EINVAL);
  CHECK(err_of(::open(ctl.c_str(), O_RDONLY)) == EACCES);
  // The option's syntax is checked.
  auto bad = run({snapfs_bin(), "-f", "-o", "quiesce_timeout=x", fs.source, fs.pool.make_temp_dir("m2")});
  CHECK(bad.exit_code == 2);
}

TEST_CASE("restore names the processes still in the state before it; --if-idle refuses while in use") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(::mkdir(fs.at("good").c_str(), 0755) == 0);
  ::setenv("HOODY_SNAPSHOTS", fs.mnt.c_str(), 1);
  Pipe ready, done;
  std::string dir = fs.storage + "/dir";
  Child sitter([&] {
    if (::chdir(dir.c_str()) < 0) return 1;
    ready.signal();
    done.wait_signal(60s);
    return 0;
  });
  REQUIRE(ready.wait_signal());
  std::string pid = std::to_string(sitter.pid());

  auto r = run({snap_bin(), "restore", "--if-idle", "good"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("Device or resource busy") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("  " + pid + " ") != std::string::npos, r.output);
  CHECK(count_prefix(listdir(fs.mnt), "pre-restore-") == 0);  // nothing done

  r = run({snap_bin(), "restore", "good"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(r.output.find("restored good (the state before it is kept as pre-restore-") != std::string::npos);
  CHECK_MESSAGE(r.output.find("these processes still use the state before the restore; restart them") !=
                    std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("  " + pid + " ") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("cwd ") != std::string::npos, r.output);
  std::string log = slurp(fs.at(".hoody/log"));
  CHECK_MESSAGE(log.find("restart them): " + pid + " ") != std::string::npos, log);
  done.signal();
  sitter.wait();
  // Nobody in the live state: --if-idle restores.
  r = run({snap_bin(), "restore", "--if-idle", "good"});
  CHECK_MESSAGE(r.exit_code == 0, r.describe());
  CHECK(r.output.find("restart them") == std::string::npos);
  ::unsetenv("HOODY_SNAPSHOTS");
}

TEST_CASE("nested subvolumes (issue 7 item 10): named in the restore's error, listed in snapshots.json") {
  require_mount_capabilities();
  Snapfs fs;
  REQUIRE(run({"btrfs", "-q", "subvolume", "create", fs.storage + "/inner"}).ok());
  write_file(fs.storage + "/inner/data", "precious\n");
  REQUIRE(::mkdir(fs.at("s").c_str(), 0755) == 0);
  auto all = nlohmann::json::parse(slurp(fs.at(".hoody/snapshots.json")));
  REQUIRE(all.size() == 1);
  CHECK(all[0]["nested_subvolumes"] == nlohmann::json::array({"storage/inner"}));
  // The restore refuses, and says which one and what to do.
  auto r = run({snap_bin(), "--mount", fs.mnt, "restore", "s"});
  CHECK(r.exit_code == 1);
  CHECK_MESSAGE(r.output.find("Operation not supported") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find("nested subvolume storage/inner") != std::string::npos, r.output);
  CHECK(r.output.find("move it out") != std::string::npos);
  std::string log = slurp(fs.at(".hoody/log"));
  CHECK_MESSAGE(log.find("nested subvolume storage/inner") != std::string::npos, log);
  CHECK(slurp(fs.storage + "/inner/data") == "precious\n");
  // The diff says what the snapshot lacks instead of showing an empty directory.
  auto d = slurp(fs.at(".hoody/diff/s..@live"));
  CHECK_MESSAGE(d.find("! storage/inner: nested subvolume, not captured") != std::string::npos, d);
  run({"btrfs", "-q", "subvolume", "delete", fs.storage + "/inner"});
}
