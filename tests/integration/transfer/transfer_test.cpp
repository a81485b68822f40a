// Issue 9 items 1 and 3: `hoody-snap send | hoody-snap receive` between two
// BTRFS loop pools (two "servers" in one test): full and incremental copies,
// contents identical (modes, owners, times, xattrs, symlinks, hard links),
// wrong or missing parents, truncated and garbled streams, --max-size, a
// receiver killed mid-stream (the garbled subvolume deleted by the next
// receive or by hoody-snapfs's start), a new container made by a receive,
// and a received snapshot showing in a running hoody-snapfs mount.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <dirent.h>
#include <ftw.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/process.hpp"

using namespace hoody::test;
using namespace std::chrono_literals;
using json = nlohmann::json;

namespace {

std::string env_or(const char* name, const char* dflt) {
  const char* v = std::getenv(name);
  return v && *v ? v : dflt;
}
std::string snapfs_bin() { return env_or("HOODY_SNAPFS", "hoody-snapfs"); }
std::string snap_bin() { return env_or("HOODY_SNAP", "hoody-snap"); }

void write_file(const std::string& path, const std::string& data, mode_t mode = 0644) {
  std::ofstream(path, std::ios::binary) << data;
  ::chmod(path.c_str(), mode);
}


// bash -c with pipefail: the first failing command's status.
ExitInfo sh(const std::string& cmd, std::chrono::milliseconds timeout = 120s) {
  return run({"bash", "-c", "set -o pipefail; " + cmd}, timeout);
}

// A tree as text: one line per entry with its type, mode, owner, size, mtime,
// content checksum, link target and every xattr, sorted.  Two trees with the
// same text hold the same files.
std::string tree_text(const std::string& root) {
  static std::vector<std::string>* lines;
  static std::string base;
  std::vector<std::string> out;
  lines = &out;
  base = root;
  ::nftw(root.c_str(), [](const char* path, const struct stat* st, int, struct FTW*) {
    std::string rel = std::string(path).substr(base.size());
    std::ostringstream l;
    l << (rel.empty() ? "/" : rel) << " mode=" << std::oct << st->st_mode << std::dec
      << " uid=" << st->st_uid << " gid=" << st->st_gid << " nlink=" << st->st_nlink;
    if (!S_ISDIR(st->st_mode)) l << " size=" << st->st_size;
    if (!rel.empty()) l << " mtime=" << st->st_mtim.tv_sec << "." << st->st_mtim.tv_nsec;
    if (S_ISLNK(st->st_mode)) {
      char t[4096];
      ssize_t n = ::readlink(path, t, sizeof t);
      l << " -> " << std::string(t, n > 0 ? static_cast<size_t>(n) : 0);
    } else {
      if (S_ISREG(st->st_mode)) {
        std::ifstream f(path, std::ios::binary);
        std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        l << " sum=" << std::hash<std::string>{}(data);
      }
      char names[4096];
      ssize_t n = ::llistxattr(path, names, sizeof names);
      std::vector<std::string> xs;
      for (ssize_t i = 0; i < n;) {
        std::string k(names + i);
        i += static_cast<ssize_t>(k.size()) + 1;
        char v[4096];
        ssize_t vn = ::lgetxattr(path, k.c_str(), v, sizeof v);
        xs.push_back(k + "=" + std::string(v, vn > 0 ? static_cast<size_t>(vn) : 0));
      }
      std::sort(xs.begin(), xs.end());
      for (auto& x : xs) l << " x:" << x;
    }
    lines->push_back(l.str());
    return 0;
  }, 64, FTW_PHYS);
  std::sort(out.begin(), out.end());
  std::string text;
  for (auto& l : out) text += l + "\n";
  return text;
}

// Subvolumes and directories in a store that are neither listed nor index files.
std::vector<std::string> store_entries(const std::string& container) {
  std::vector<std::string> out;
  std::string d = container + "/.snapshots";
  if (DIR* dir = ::opendir(d.c_str())) {
    while (auto* e = ::readdir(dir)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(n);
    }
    ::closedir(dir);
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool has_prefix(const std::vector<std::string>& v, const std::string& p) {
  return std::any_of(v.begin(), v.end(), [&](auto& s) { return s.rfind(p, 0) == 0; });
}

// One "server": a pool with containers/.
struct Server {
  BtrfsPool pool{BtrfsPool::Options{4ull << 30}};
  Server() { pool.make_dir("containers"); }
  std::string container(const std::string& c) const { return pool.path() + "/containers/" + c; }
  std::string args(const std::string& c) const {
    return "--pool " + sh_quote(pool.path()) + " --container " + sh_quote(c);
  }
  json list(const std::string& c) const {
    auto r = run({snap_bin(), "list", "--json", "--pool", pool.path(), "--container", c});
    REQUIRE_MESSAGE(r.ok(), r.describe());
    // The CLI's stderr (warnings) comes first in `output`; the JSON is the rest.
    size_t at = r.output.rfind("[", 0) == 0 ? 0 : r.output.find("\n[");
    REQUIRE(at != std::string::npos);
    return json::parse(r.output.substr(at));
  }
  std::string snapshot_dir(const std::string& c, const std::string& name) const {
    for (auto& s : list(c))
      if (s["name"] == name) return container(c) + "/.snapshots/" + s["uuid"].get<std::string>();
    return "";
  }
};

// The sending container: storage and databases with every kind of entry, and
// hoody-snapfs mounted to take snapshots.
struct Sender : Server {
  std::string src, storage, databases, mnt;
  std::unique_ptr<Daemon> daemon;
  Sender() {
    src = pool.make_dir("containers/c1");
    storage = pool.make_subvolume("containers/c1/storage");
    databases = pool.make_subvolume("containers/c1/databases");
    write_file(storage + "/hello.txt", "hello\n");
    write_file(storage + "/private", "secret\n", 0600);
    ::chown((storage + "/private").c_str(), 1000, 1000);
    ::mkdir((storage + "/dir").c_str(), 0750);
    ::chown((storage + "/dir").c_str(), 1000, 100);
    write_file(storage + "/dir/nested", std::string(300000, 'x'), 0640);
    ::link((storage + "/hello.txt").c_str(), (storage + "/dir/hardlink").c_str());
    ::symlink("../hello.txt", (storage + "/dir/link").c_str());
    ::symlink("/nonexistent/target", (storage + "/dangling").c_str());
    ::setxattr((storage + "/hello.txt").c_str(), "user.tag", "v1", 2, 0);
    ::mkfifo((storage + "/fifo").c_str(), 0600);
    write_file(storage + "/setuid", "#!/bin/sh\n", 04755);
    int fd = ::open((storage + "/sparse").c_str(), O_WRONLY | O_CREAT, 0644);
    ::pwrite(fd, "end", 3, 50 << 20);
    ::close(fd);
    write_file(databases + "/app.db", std::string(100000, 'd'));
    mnt = pool.make_temp_dir("mnt");
    daemon = std::make_unique<Daemon>(
        std::vector<std::string>{snapfs_bin(), "-f", "-o", "allow_other", src, mnt}, mnt,
        pool.dir() + "/daemon.log");
  }
  void snap(const std::string& name) {
    auto r = run({snap_bin(), "--mount", mnt, "create", name});
    REQUIRE_MESSAGE(r.ok(), r.describe());
  }
  std::string send(const std::string& name, const std::string& parent = "") const {
    return snap_bin() + " send " + sh_quote(name) + (parent.empty() ? "" : " --parent " + sh_quote(parent)) +
           " " + args("c1");
  }
  // Changes of every kind between two snapshots.
  void change() {
    write_file(storage + "/hello.txt", "hello again\n");
    ::setxattr((storage + "/hello.txt").c_str(), "user.tag", "v2", 2, 0);
    ::rename((storage + "/private").c_str(), (storage + "/dir/private-moved").c_str());
    ::unlink((storage + "/dangling").c_str());
    ::chmod((storage + "/dir").c_str(), 0755);
    ::mkdir((storage + "/new").c_str(), 0700);
    for (int i = 0; i < 50; ++i) write_file(storage + "/new/f" + std::to_string(i), std::to_string(i));
    write_file(databases + "/app.db", std::string(100000, 'e'));
  }
};

std::string receive_cmd(const Server& s, const std::string& c, const std::string& extra = "") {
  return snap_bin() + " receive " + s.args(c) + (extra.empty() ? "" : " " + extra);
}

void check_same(const std::string& a, const std::string& b) {
  for (const char* sub : {"storage", "databases"}) {
    std::string ta = tree_text(a + "/" + sub), tb = tree_text(b + "/" + sub);
    CHECK_MESSAGE(ta == tb, sub << " differs:\n--- sender\n" << ta << "--- receiver\n" << tb);
  }
}

std::string key_of(const json& sub) { return sub["key"].get<std::string>(); }

// The store's directories are exactly its listed snapshots (no staging
// directory, no unlisted <uuid>).
void check_consistent(const Server& s, const std::string& c) {
  std::vector<std::string> dirs, listed;
  for (auto& e : store_entries(s.container(c)))
    if (e != "lock" && e.rfind("index.db", 0) != 0) dirs.push_back(e);
  for (auto& x : s.list(c)) listed.push_back(x["uuid"].get<std::string>());
  std::sort(listed.begin(), listed.end());
  CHECK_MESSAGE(dirs == listed, "store directories are not the listed snapshots");
}

// Nothing of a failed receive is left: no staging directory, no new entries.
void check_nothing_left(const Server& s, const std::string& c, const std::vector<std::string>& before) {
  std::vector<std::string> after;
  for (auto& e : store_entries(s.container(c)))
    if (e.rfind("index.db", 0) != 0) after.push_back(e);
  std::vector<std::string> was;
  for (auto& e : before)
    if (e.rfind("index.db", 0) != 0) was.push_back(e);
  CHECK_MESSAGE(after == was, "store entries changed");
  CHECK_FALSE(has_prefix(after, ".receiving-"));
  check_consistent(s, c);
}

}  // namespace

TEST_CASE("full copy, then incremental: contents identical, read-only, uuids linked") {
  require_mount_capabilities();
  Sender a;
  Server b;
  a.snap("s1");
  auto r = sh(a.send("s1") + " | " + receive_cmd(b, "c9"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(r.output.find("received s1 (full") != std::string::npos);
  std::string got = b.snapshot_dir("c9", "s1");
  REQUIRE(!got.empty());
  check_same(a.snapshot_dir("c1", "s1"), got);
  // Received snapshots are read-only; their received_uuid is the sender's key.
  CHECK(::open((got + "/storage/x").c_str(), O_CREAT | O_WRONLY, 0644) < 0);
  CHECK(errno == EROFS);
  auto la = a.list("c1"), lb = b.list("c9");
  REQUIRE(lb.size() == 1);
  for (size_t i = 0; i < 2; ++i) {
    CHECK(lb[0]["subvolumes"][i]["readonly"] == true);
    CHECK(lb[0]["subvolumes"][i]["received_uuid"] == la[0]["subvolumes"][i]["uuid"]);
    CHECK(key_of(lb[0]["subvolumes"][i]) == key_of(la[0]["subvolumes"][i]));
  }
  CHECK(lb[0]["description"] == la[0]["description"]);
  CHECK(lb[0]["created"] == la[0]["created"]);

  // Incremental: the parent found by received_uuid; only the changes travel.
  a.change();
  a.snap("s2");
  auto full_size = sh(a.send("s2") + " | wc -c");
  auto incr_size = sh(a.send("s2", "s1") + " | wc -c");
  REQUIRE(full_size.ok());
  REQUIRE(incr_size.ok());
  long full_bytes = std::stol(full_size.output), incr_bytes = std::stol(incr_size.output);
  MESSAGE("full stream " << full_bytes << " bytes, incremental " << incr_bytes << " bytes");
  CHECK(incr_bytes * 2 < full_bytes);
  r = sh(a.send("s2", "s1") + " | " + receive_cmd(b, "c9"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(r.output.find("received s2 (incremental from s1") != std::string::npos);
  check_same(a.snapshot_dir("c1", "s2"), b.snapshot_dir("c9", "s2"));
  check_same(a.snapshot_dir("c1", "s1"), b.snapshot_dir("c9", "s1"));
  // common-parent: the newest snapshot both sides hold, by their keys.
  auto cp = sh(snap_bin() + " list --json " + b.args("c9") + " | " + snap_bin() +
               " common-parent " + a.args("c1"));
  CHECK_MESSAGE(cp.output == "s2\n", cp.describe());
  cp = sh(snap_bin() + " list --json " + a.args("c1") + " | " + snap_bin() +
          " common-parent --json " + b.args("c9"));
  CHECK_MESSAGE(cp.output == "{\"local\":\"s2\",\"remote\":\"s2\"}\n", cp.describe());
  cp = sh("echo '[]' | " + snap_bin() + " common-parent " + a.args("c1"));
  CHECK(cp.exit_code == 1);
  CHECK(cp.output.find("no snapshot in common") != std::string::npos);
  // The copy can be sent back and on: a received snapshot is a parent too.
  Server c;
  r = sh(snap_bin() + " send s1 " + b.args("c9") + " | " + receive_cmd(c, "x"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  r = sh(snap_bin() + " send s2 --parent s1 " + b.args("c9") + " | " + receive_cmd(c, "x"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(r.output.find("incremental from s1") != std::string::npos);
  check_same(a.snapshot_dir("c1", "s2"), c.snapshot_dir("x", "s2"));
  auto lc = c.list("x");
  CHECK(key_of(lc[1]["subvolumes"][0]) == key_of(a.list("c1")[1]["subvolumes"][0]));
}

TEST_CASE("a new container made by receive: writable live subvolumes, snapshot in a mount; "
          "a received snapshot shows in a running mount") {
  require_mount_capabilities();
  Sender a;
  Server b;
  a.snap("s1");
  auto r = sh(a.send("s1") + " | " + receive_cmd(b, "new1", "--json"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  auto got = json::parse(r.output);
  CHECK(got["name"] == "s1");
  CHECK(got["parent"].is_null());
  CHECK(got["subvolumes"] == 2);
  CHECK(got["bytes"].get<uint64_t>() > 300000);
  CHECK(got["created_live"] == json::array({"databases", "storage"}));
  std::string live = b.container("new1");
  check_same(a.snapshot_dir("c1", "s1"), live);
  write_file(live + "/storage/written-here", "ok");  // writable
  CHECK(::access((live + "/storage/written-here").c_str(), F_OK) == 0);
  auto mnt = b.pool.make_temp_dir("mnt-new1");
  Daemon d({snapfs_bin(), "-f", "-o", "allow_other", live, mnt}, mnt, b.pool.dir() + "/new1.log");
  CHECK(::access((mnt + "/s1/storage/hello.txt").c_str(), F_OK) == 0);
  CHECK(tree_text(mnt + "/s1/storage") == tree_text(a.snapshot_dir("c1", "s1") + "/storage"));

  // While the mount runs: a received snapshot appears at once.
  a.change();
  a.snap("s2");
  auto t0 = std::chrono::steady_clock::now();
  r = sh(a.send("s2", "s1") + " | " + receive_cmd(b, "new1", "--json"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(json::parse(r.output)["parent"] == "s1");
  CHECK(json::parse(r.output)["created_live"].empty());
  bool seen = false;
  while (std::chrono::steady_clock::now() - t0 < 5s) {
    if (::access((mnt + "/s2/storage/new/f7").c_str(), F_OK) == 0) {
      seen = true;
      break;
    }
    std::this_thread::sleep_for(20ms);
  }
  CHECK_MESSAGE(seen, "s2 did not show in the running mount");
  std::string listing = run_checked({"ls", mnt});
  CHECK(listing.find("s2") != std::string::npos);
  // The daemon and the CLI share the index: the daemon still takes snapshots.
  r = run({snap_bin(), "--mount", mnt, "create", "after"});
  CHECK_MESSAGE(r.ok(), r.describe());
  CHECK(b.list("new1").size() == 3);
}

TEST_CASE("a missing or wrong parent is refused, nothing shown; a taken name is EEXIST") {
  require_mount_capabilities();
  Sender a;
  Server b;
  a.snap("s1");
  a.change();
  a.snap("s2");
  // No parent on the receiving side: refused, and no container made.
  auto r = sh(a.send("s2", "s1") + " | " + receive_cmd(b, "c9"));
  CHECK_FALSE(r.ok());
  CHECK(r.output.find("does not hold") != std::string::npos);
  CHECK(::access(b.container("c9").c_str(), F_OK) != 0);
  // A snapshot of the same name that is not the sender's (other uuids): refused.
  b.pool.make_dir("containers/c8");
  b.pool.make_subvolume("containers/c8/storage");
  b.pool.make_subvolume("containers/c8/databases");
  {
    auto mnt = b.pool.make_temp_dir("mnt-c8");
    Daemon d({snapfs_bin(), "-f", "-o", "allow_other", b.container("c8"), mnt}, mnt,
             b.pool.dir() + "/c8.log");
    REQUIRE(run({snap_bin(), "--mount", mnt, "create", "s1"}).ok());
  }
  auto before = store_entries(b.container("c8"));
  r = sh(a.send("s2", "s1") + " | " + receive_cmd(b, "c8"));
  CHECK_FALSE(r.ok());
  CHECK(r.output.find("does not hold") != std::string::npos);
  check_nothing_left(b, "c8", before);
  CHECK(b.list("c8").size() == 1);
  // The right parent under another name is found by its uuids.
  REQUIRE(sh(a.send("s1") + " | " + receive_cmd(b, "c8", "--as first")).ok());
  r = sh(a.send("s2", "s1") + " | " + receive_cmd(b, "c8"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(r.output.find("incremental from first") != std::string::npos);
  // A taken name: EEXIST, and --as receives it under another.
  r = sh(a.send("s2") + " | " + receive_cmd(b, "c8"));
  CHECK_FALSE(r.ok());
  CHECK(r.output.find("File exists") != std::string::npos);
  CHECK(r.output.find("--as") != std::string::npos);
  r = sh(a.send("s2") + " | " + receive_cmd(b, "c8", "--as s2-again"));
  CHECK_MESSAGE(r.ok(), r.describe());
  // Not a snapshot here: a bad --parent on the sending side.
  r = sh(a.send("s2", "nope") + " | cat > /dev/null");
  CHECK_FALSE(r.ok());
  CHECK(r.output.find("no parent snapshot") != std::string::npos);
}

TEST_CASE("truncated and garbled streams are refused and leave nothing; --max-size") {
  require_mount_capabilities();
  Sender a;
  Server b;
  write_file(a.storage + "/big", std::string(4 << 20, 'b'));
  a.snap("s1");
  std::string stream = b.pool.dir() + "/s1.stream";
  REQUIRE(sh(a.send("s1") + " > " + sh_quote(stream)).ok());
  std::string bytes = slurp(stream);
  REQUIRE(bytes.size() > (4u << 20));
  // A container that holds something already.
  REQUIRE(sh(a.send("s1") + " | " + receive_cmd(b, "c9", "--as base")).ok());
  auto before = store_entries(b.container("c9"));
  std::string cut = b.pool.dir() + "/cut.stream";
  // Cut in the header, in the first subvolume, in the second, in the trailer.
  for (size_t n : {size_t(5), size_t(100), size_t(4000), bytes.size() / 2, bytes.size() - 30,
                   bytes.size() - 5, bytes.size() - 1}) {
    write_file(cut, bytes.substr(0, n));
    auto r = sh(receive_cmd(b, "c9") + " < " + sh_quote(cut));
    CHECK_MESSAGE(!r.ok(), "cut at " << n);
    CHECK_MESSAGE(r.output.find("nothing was kept") != std::string::npos, r.output);
    check_nothing_left(b, "c9", before);
  }
  // Garbled: a byte flipped in the header, in a command, in file data; an
  // extra byte; another magic.
  for (size_t at : {size_t(12), size_t(40), size_t(300), size_t(2000), bytes.size() / 2,
                    bytes.size() - 4}) {
    std::string g = bytes;
    g[at] = static_cast<char>(g[at] ^ 0x5a);
    write_file(cut, g);
    auto r = sh(receive_cmd(b, "c9") + " < " + sh_quote(cut));
    CHECK_MESSAGE(!r.ok(), "flipped at " << at);
    check_nothing_left(b, "c9", before);
  }
  write_file(cut, "btrfs-stream" + bytes);
  CHECK_FALSE(sh(receive_cmd(b, "c9") + " < " + sh_quote(cut)).ok());
  CHECK(b.list("c9").size() == 1);
  // --max-size: refused with a clear message, nothing left; then accepted.
  auto r = sh(receive_cmd(b, "c9", "--max-size 1M") + " < " + sh_quote(stream));
  CHECK_FALSE(r.ok());
  CHECK(r.output.find("--max-size") != std::string::npos);
  check_nothing_left(b, "c9", before);
  r = sh(receive_cmd(b, "c9", "--max-size 1G --progress") + " < " + sh_quote(stream));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(r.output.find("received 4.") != std::string::npos);  // the progress line
  check_same(a.snapshot_dir("c1", "s1"), b.snapshot_dir("c9", "s1"));
  r = sh(receive_cmd(b, "c9", "--max-size 12Q") + " < /dev/null");
  CHECK(r.exit_code == 2);
  // Progress on a terminal (script(1) gives stderr a pty): bytes, rate, and
  // the ETA from the sender's --estimate, redrawn in place.
  std::string est = b.pool.dir() + "/est.stream";
  REQUIRE(sh(snap_bin() + " send s1 --estimate " + a.args("c1") + " > " + sh_quote(est)).ok());
  std::string inner = "{ head -c 300000; sleep 1.2; cat; } < " + sh_quote(est) + " | " +
                      receive_cmd(b, "c9", "--progress --as with-eta");
  r = sh("script -qec " + sh_quote("bash -c " + sh_quote(inner)) + " /dev/null");
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK_MESSAGE(r.output.find("\r\033[Kreceived ") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find(" of ~4.") != std::string::npos, r.output);
  CHECK_MESSAGE(r.output.find(", ETA 0:") != std::string::npos, r.output);
  CHECK(r.output.find("MiB/s") != std::string::npos);
}

TEST_CASE("kill -9 of the receiver or the sender mid-stream: nothing shown, the garbled "
          "subvolume deleted by the next receive or hoody-snapfs's start, a retry succeeds") {
  require_mount_capabilities();
  Sender a;
  Server b;
  {
    std::string data(1 << 20, 'r');
    for (int i = 0; i < 120; ++i) {
      data[0] = static_cast<char>(i);
      write_file(a.storage + "/big" + std::to_string(i), data);
    }
  }
  a.snap("s1");
  std::string stream = b.pool.dir() + "/s1.stream";
  REQUIRE(sh(a.send("s1") + " > " + sh_quote(stream)).ok());
  REQUIRE(sh(a.send("s1") + " | " + receive_cmd(b, "c9", "--as base")).ok());
  auto before = store_entries(b.container("c9"));

  // The receiver gets half the stream through a pipe that stays open, then SIGKILL.
  auto kill_receiver_midway = [&](const std::string& c) {
    std::string fifo = b.pool.dir() + "/fifo";
    ::unlink(fifo.c_str());
    REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
    pid_t pid = ::fork();
    if (pid == 0) {
      int in = ::open(fifo.c_str(), O_RDONLY);
      ::dup2(in, 0);
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(snap_bin().c_str(), snap_bin().c_str(), "receive", "--pool", b.pool.path().c_str(),
              "--container", c.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    int out = ::open(fifo.c_str(), O_WRONLY);
    REQUIRE(out >= 0);
    std::string bytes = slurp(stream);
    size_t half = bytes.size() / 2;
    REQUIRE(::write(out, bytes.data(), half) == static_cast<ssize_t>(half));
    // Until btrfs receive has written into its staging subvolume.
    std::string staging;
    for (int i = 0; i < 500 && staging.empty(); ++i) {
      for (auto& e : store_entries(b.container(c)))
        if (e.rfind(".receiving-", 0) == 0 &&
            ::access((b.container(c) + "/.snapshots/" + e + "/storage").c_str(), F_OK) == 0)
          staging = e;
      std::this_thread::sleep_for(10ms);
    }
    REQUIRE_MESSAGE(!staging.empty(), "no staging subvolume seen");
    ::kill(pid, SIGKILL);
    int st = 0;
    ::waitpid(pid, &st, 0);
    ::close(out);
    std::this_thread::sleep_for(200ms);  // its btrfs receive dies with it (PDEATHSIG)
    return staging;
  };

  // 1. The next receive deletes the garbled subvolume, and succeeds.
  std::string staging = kill_receiver_midway("c9");
  std::string garbled = b.container("c9") + "/.snapshots/" + staging + "/storage";
  CHECK(::access(garbled.c_str(), F_OK) == 0);
  {
    // What a killed btrfs receive leaves: writable, no received_uuid.
    auto info = run({"btrfs", "subvolume", "show", garbled});
    CHECK(info.output.find("Received UUID: \t\t-") != std::string::npos);
    CHECK(info.output.find("readonly") == std::string::npos);
  }
  // Nothing shown (the index read directly: `list` would open the store and
  // recover it, and this case shows that the next receive does).
  CHECK(run_checked({"sqlite3", "-readonly", b.container("c9") + "/.snapshots/index.db",
                     "SELECT count(*) FROM snapshots"}) == "1\n");
  auto r = sh(a.send("s1") + " | " + receive_cmd(b, "c9"));
  REQUIRE_MESSAGE(r.ok(), r.describe());
  CHECK(::access((b.container("c9") + "/.snapshots/" + staging).c_str(), F_OK) != 0);
  CHECK_FALSE(has_prefix(store_entries(b.container("c9")), ".receiving-"));
  check_same(a.snapshot_dir("c1", "s1"), b.snapshot_dir("c9", "s1"));

  // 2. hoody-snapfs's start deletes it (recovery), then a retry succeeds.
  REQUIRE(sh(a.send("s1") + " | " + receive_cmd(b, "c7", "--as base")).ok());
  staging = kill_receiver_midway("c7");
  CHECK(::access((b.container("c7") + "/.snapshots/" + staging).c_str(), F_OK) == 0);
  {
    auto mnt = b.pool.make_temp_dir("mnt-c7");
    Daemon d({snapfs_bin(), "-f", "-o", "allow_other", b.container("c7"), mnt}, mnt,
             b.pool.dir() + "/c7.log");
    CHECK(::access((b.container("c7") + "/.snapshots/" + staging).c_str(), F_OK) != 0);
    CHECK(run_checked({"ls", mnt}) == "base\n");
    // A receive while the daemon holds the store: shared, and shown.
    r = sh(a.send("s1") + " | " + receive_cmd(b, "c7"));
    REQUIRE_MESSAGE(r.ok(), r.describe());
    for (int i = 0; i < 100 && ::access((mnt + "/s1").c_str(), F_OK) != 0; ++i)
      std::this_thread::sleep_for(20ms);
    CHECK(::access((mnt + "/s1/storage/big7").c_str(), F_OK) == 0);
  }

  // 3. The sender killed mid-stream: the receiver sees a truncated stream.
  before = store_entries(b.container("c9"));
  r = sh("( " + a.send("s1") + " & p=$!; sleep 0.05; kill -9 $p; wait $p ) | " +
         receive_cmd(b, "c9", "--as s1-retry"));
  CHECK_FALSE(r.ok());
  check_nothing_left(b, "c9", before);
  r = sh(a.send("s1") + " | " + receive_cmd(b, "c9", "--as s1-retry"));
  CHECK_MESSAGE(r.ok(), r.describe());

  // Three receives at once into one container: none takes another's staging
  // directory for a leftover; all land.
  {
    size_t listed = b.list("c9").size();
    std::string cmd;
    for (int i = 0; i < 3; ++i)
      cmd += receive_cmd(b, "c9", "--as together" + std::to_string(i)) + " < " + sh_quote(stream) +
             " & p" + std::to_string(i) + "=$!; ";
    r = sh(cmd + "wait $p0 && wait $p1 && wait $p2");
    CHECK_MESSAGE(r.ok(), r.describe());
    CHECK(b.list("c9").size() == listed + 3);
    check_consistent(b, "c9");
  }

  // 4. Killed between the rename into place and the index commit
  // (HOODY_CRASH_AT): the journaled receive is undone by the next one.
  int n = 0;
  for (const char* point : {"receive:received", "receive:renamed"}) {
    size_t listed = b.list("c9").size();
    r = sh("HOODY_CRASH_AT=" + std::string(point) + " " + receive_cmd(b, "c9", "--as crashed") +
           " < " + sh_quote(stream));
    CHECK_MESSAGE(r.exit_code == 128 + SIGKILL, point << ": " << r.describe());
    CHECK(b.list("c9").size() == listed);
    r = sh(receive_cmd(b, "c9", "--as retry" + std::to_string(++n)) + " < " + sh_quote(stream));
    REQUIRE_MESSAGE(r.ok(), r.describe());
    CHECK(b.list("c9").size() == listed + 1);
    CHECK_FALSE(has_prefix(store_entries(b.container("c9")), ".receiving-"));
    check_consistent(b, "c9");
  }
}
