// Issue 9 items 1, 2 and 5 (ssh half): hoody-snap copy and sync between two
// "servers" on one machine (servers.hpp: network + mount namespaces, a veth
// pair, sshd in B with a restricted key).
#include <doctest/doctest.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "hoody/test/btrfs_pool.hpp"
#include "hoody/test/capability.hpp"
#include "hoody/test/daemon.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"
#include "servers.hpp"

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

void write_file(const std::string& path, const std::string& data) { std::ofstream(path) << data; }

std::vector<std::string> words(const std::string& s) {
  std::istringstream ss(s);
  std::vector<std::string> out;
  for (std::string w; ss >> w;) out.push_back(w);
  return out;
}

// "bytes=123" in a copy's or sync's report.
uint64_t bytes_of(const std::string& out) {
  auto at = out.find("bytes=");
  return at == std::string::npos ? 0 : std::stoull(out.substr(at + 6));
}

// The listing `serve list` gives a peer, run here on `pool` (no ssh).
json listing(const std::string& pool, const std::string& container = "c1") {
  ExitInfo e = run({snap_bin(), "serve", "--pool", pool, "list", "--container", container});
  REQUIRE_MESSAGE(e.ok(), e.describe());
  auto at = e.output.find("{\"container\"");
  REQUIRE_MESSAGE(at != std::string::npos, e.output);
  return json::parse(e.output.substr(at, e.output.find('\n', at) - at));
}

const json* find_snap(const json& l, const std::string& name) {
  for (auto& s : l["snapshots"])
    if (s["name"] == name) return &s;
  return nullptr;
}

std::vector<std::string> names_of(const json& l, const std::string& prefix) {
  std::vector<std::string> out;
  for (auto& s : l["snapshots"])
    if (s["name"].get<std::string>().rfind(prefix, 0) == 0) out.push_back(s["name"]);
  return out;
}

// diff -r of two trees: "" when identical.
std::string tree_diff(const std::string& a, const std::string& b) {
  ExitInfo e = run({"diff", "-r", "--no-dereference", a, b});
  return e.ok() ? "" : e.describe();
}

// Server A with container c1 served by hoody-snapfs (its mount is how A's
// snapshots are taken); server B with an empty pool, or (copy_b) a container
// c1 of empty subvolumes served by hoody-snapfs too.
struct World {
  BtrfsPool a, b;
  std::string storage_a, dbs_a, mnt_a, mnt_b;
  std::unique_ptr<Daemon> snapfs_a, snapfs_b;
  std::unique_ptr<Servers> servers;  // last: it goes first

  explicit World(bool daemon_a, bool copy_b) {
    a.make_dir("containers");
    a.make_dir("containers/c1");
    storage_a = a.make_subvolume("containers/c1/storage");
    dbs_a = a.make_subvolume("containers/c1/databases");
    write_file(dbs_a + "/app.db", "not really sqlite\n");
    b.make_dir("containers");
    std::vector<std::string> only_a, only_b;
    if (daemon_a) {
      mnt_a = a.make_temp_dir("mnt-a");
      snapfs_a = std::make_unique<Daemon>(
          std::vector<std::string>{snapfs_bin(), "-f", "-o", "allow_other",
                                   a.path() + "/containers/c1", mnt_a},
          mnt_a, a.dir() + "/snapfs-a.log");
      only_a.push_back(mnt_a);
    }
    if (copy_b) {
      b.make_dir("containers/c1");
      b.make_subvolume("containers/c1/storage");
      b.make_subvolume("containers/c1/databases");
      write_file(b.path() + "/containers/c1/storage/b-only.txt", "written on B\n");
      mnt_b = b.make_temp_dir("mnt-b");
      snapfs_b = std::make_unique<Daemon>(
          std::vector<std::string>{snapfs_bin(), "-f", "-o", "allow_other",
                                   b.path() + "/containers/c1", mnt_b},
          mnt_b, b.dir() + "/snapfs-b.log");
      only_b.push_back(mnt_b);
    }
    servers = std::make_unique<Servers>(Servers::Options{
        a.path(), b.path(), only_a, only_b, snap_bin(), a.dir()});
  }
  ~World() {
    if (current_test_failed()) MESSAGE("sshd log:\n" << servers->sshd_log());
  }

  std::string storage_b() const { return b.path() + "/containers/c1/storage"; }
  std::string dbs_b() const { return b.path() + "/containers/c1/databases"; }

  // hoody-snap run in server A.
  ExitInfo snap_a(std::vector<std::string> args, std::chrono::milliseconds t = 180s) {
    args.insert(args.begin(), snap_bin());
    return servers->run_a(args, t);
  }
  void create_a(const std::string& name) {
    ExitInfo e = snap_a({"--mount", mnt_a, "create", name});
    REQUIRE_MESSAGE(e.ok(), e.describe());
  }
  std::vector<std::string> copy_args(const std::string& name, bool stranger = false) {
    return {"--mount", mnt_a, "copy", name, "--to", std::string("root@") + Servers::kAddrB + ":c1",
            "--ssh", servers->ssh_command(stranger)};
  }
  // The snapshot's tree on a side: POOL/containers/c1/.snapshots/<uuid>.
  static std::string tree(const std::string& pool, const json& l, const std::string& name) {
    auto* s = find_snap(l, name);
    REQUIRE_MESSAGE(s, name << " not in " << l.dump());
    return pool + "/containers/c1/.snapshots/" + (*s)["uuid"].get<std::string>();
  }
};

// Files of ~64 KiB of varied bytes (compression does not shrink them to nothing).
void populate(const std::string& dir, int files, const std::string& tag) {
  ::mkdir((dir + "/data").c_str(), 0755);
  for (int i = 0; i < files; ++i) {
    std::string body;
    unsigned x = static_cast<unsigned>(i * 2654435761u) ^ static_cast<unsigned>(tag.size());
    for (int k = 0; k < 65536; ++k) {
      x = x * 1103515245u + 12345u;
      body.push_back(static_cast<char>(x >> 16));
    }
    write_file(dir + "/data/f" + std::to_string(i), tag + body);
  }
}

}  // namespace

TEST_CASE("rig: two servers, sshd in B, only the restricted key gets in, and only to serve") {
  require_mount_capabilities();
  World w(false, false);
  auto& s = *w.servers;
  // A does not see B's pool, B does not see A's.
  CHECK_FALSE(s.run_a({"test", "-d", w.b.path() + "/containers"}).ok());
  CHECK_FALSE(s.run_b({"test", "-d", w.a.path() + "/containers"}).ok());
  CHECK(s.run_b({"test", "-d", w.b.path() + "/containers"}).ok());
  // The network: A reaches B over the veth pair; the host's namespace has no such address.
  ExitInfo route = s.run_a({"ip", "-o", "addr", "show", "dev", "hoody-a"});
  CHECK(route.output.find(Servers::kAddrA) != std::string::npos);

  auto ssh = words(s.ssh_command());
  auto peer = std::string("root@") + Servers::kAddrB;
  auto with = [&](std::vector<std::string> v, const std::string& cmd) {
    v.push_back(peer);
    v.push_back(cmd);
    return v;
  };
  ExitInfo list = s.run_a(with(ssh, "hoody-snap serve list --container c1"), 30s);
  REQUIRE_MESSAGE(list.ok(), list.describe() << "\n" << s.sshd_log());
  auto j = json::parse(list.output.substr(list.output.find('{')));
  CHECK(j["exists"] == false);
  CHECK(j["snapshots"].empty());

  // The forced command runs for any command line: a shell is never reached.
  ExitInfo shell = s.run_a(with(ssh, "id; touch /tmp/hoody-pwned"), 30s);
  CHECK(shell.exit_code == 2);
  CHECK(shell.output.find("refused") != std::string::npos);
  CHECK(::access("/tmp/hoody-pwned", F_OK) != 0);
  // The pool is the administrator's (the command= line), not the peer's.
  ExitInfo pool = s.run_a(with(ssh, "hoody-snap serve list --container c1 --pool /etc"), 30s);
  CHECK(pool.exit_code == 2);
  CHECK(pool.output.find("unknown option") != std::string::npos);
  ExitInfo dots = s.run_a(with(ssh, "hoody-snap serve receive --container ../../etc"), 30s);
  CHECK(dots.exit_code == 2);
  ExitInfo back = s.run_a(
      with(ssh, "hoody-snap serve sync-apply --container c1 --snapshot pre-deploy --keep 1"), 30s);
  CHECK(back.exit_code == 2);
  CHECK(back.output.find("sync-* snapshots only") != std::string::npos);
  // restrict: no pty (nor forwarding, agent, X11).
  auto tty = ssh;
  tty.insert(tty.begin() + 1, "-tt");
  ExitInfo pty = s.run_a(with(tty, "hoody-snap serve list --container c1"), 30s);
  CHECK(pty.output.find("PTY allocation request failed") != std::string::npos);

  // A key that is not in authorized_keys is refused.
  ExitInfo stranger =
      s.run_a(with(words(s.ssh_command(true)), "hoody-snap serve list --container c1"), 30s);
  CHECK(stranger.exit_code == 255);
  CHECK(stranger.output.find("Permission denied") != std::string::npos);
}

TEST_CASE("copy: full, then incremental (far fewer bytes), content identical on both sides") {
  require_mount_capabilities();
  World w(true, false);
  populate(w.storage_a, 160, "one");  // ~10 MiB
  write_file(w.storage_a + "/old.txt", "old\n");
  w.create_a("s1");

  // On a terminal (script(1) gives the copy a pty) a progress line is redrawn
  // in place: bytes, rate, the size the sender estimated, an ETA.
  std::string cmd = sh_quote(snap_bin());
  for (auto& x : w.copy_args("s1")) cmd += " " + sh_quote(x);
  ExitInfo full = w.servers->run_a({"script", "-qec", cmd, "/dev/null"}, 180s);
  REQUIRE_MESSAGE(full.ok(), full.describe() << "\n" << w.servers->sshd_log());
  MESSAGE("full: " << full.output);
  CHECK(full.output.find("\r\033[Ksent ") != std::string::npos);
  CHECK(full.output.find(" of ~") != std::string::npos);
  CHECK(full.output.find(", ETA ") != std::string::npos);
  CHECK(full.output.find("copied s1") != std::string::npos);
  CHECK(full.output.find("full") != std::string::npos);
  uint64_t b1 = bytes_of(full.output);
  CHECK(b1 > 10'000'000);

  // B holds s1, a read-only snapshot whose subvolumes carry A's uuids as
  // received_uuid; a container made from it starts from a writable clone.
  json la = listing(w.a.path()), lb = listing(w.b.path());
  auto* a1 = find_snap(la, "s1");
  auto* b1s = find_snap(lb, "s1");
  REQUIRE(a1);
  REQUIRE(b1s);
  REQUIRE((*a1)["subvolumes"].size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK((*b1s)["subvolumes"][i]["received_uuid"] == (*a1)["subvolumes"][i]["uuid"]);
    CHECK((*b1s)["subvolumes"][i]["readonly"] == true);
  }
  CHECK(tree_diff(World::tree(w.a.path(), la, "s1"), World::tree(w.b.path(), lb, "s1")) == "");
  CHECK(tree_diff(w.storage_a, w.storage_b()) == "");

  // Three files changed, one removed, one added.
  write_file(w.storage_a + "/data/f3", "changed\n");
  write_file(w.storage_a + "/data/f7", "changed too\n");
  write_file(w.storage_a + "/data/f100", "and this\n");
  ::unlink((w.storage_a + "/old.txt").c_str());
  write_file(w.storage_a + "/new.txt", "new\n");
  w.create_a("s2");
  ExitInfo incr = w.snap_a(w.copy_args("s2"));
  REQUIRE_MESSAGE(incr.ok(), incr.describe());
  MESSAGE("incremental: " << incr.output);
  CHECK(incr.output.find("incremental from s1") != std::string::npos);
  // Not a terminal, and shorter than a minute: no progress line.
  CHECK(incr.output.find("hoody-snap: sent") == std::string::npos);
  uint64_t b2 = bytes_of(incr.output);
  CHECK(b2 > 0);
  CHECK(b2 * 50 < b1);
  CHECK(incr.output.find("files changed") != std::string::npos);

  la = listing(w.a.path());
  lb = listing(w.b.path());
  CHECK(tree_diff(World::tree(w.a.path(), la, "s2"), World::tree(w.b.path(), lb, "s2")) == "");
  CHECK(tree_diff(World::tree(w.a.path(), la, "s1"), World::tree(w.b.path(), lb, "s1")) == "");
  CHECK(::access((World::tree(w.b.path(), lb, "s2") + "/storage/old.txt").c_str(), F_OK) != 0);

  // Sent again: the peer holds it, nothing is sent.
  ExitInfo again = w.snap_a(w.copy_args("s2"));
  CHECK_MESSAGE(again.ok(), again.describe());
  CHECK(again.output.find("nothing sent") != std::string::npos);

  // The stranger's key: refused, nothing changes on B.
  w.create_a("s3");
  ExitInfo stranger = w.snap_a(w.copy_args("s3", true));
  CHECK(stranger.exit_code == 1);
  CHECK(find_snap(listing(w.b.path()), "s3") == nullptr);
}

TEST_CASE("copy: kill -9 of ssh, the sender or the receiver mid-stream, then a retry succeeds") {
  require_mount_capabilities();
  World w(true, false);
  // ~192 MiB of data that does not compress: a stream that lasts.
  ExitInfo dd = run({"dd", "if=/dev/urandom", "of=" + w.storage_a + "/big", "bs=1M", "count=192",
                     "status=none"});
  REQUIRE(dd.ok());
  w.create_a("big");

  // Either end killed mid-stream: ssh, the sender, the receiver on B.
  std::string store_b = w.b.path() + "/containers/c1/.snapshots";
  auto receiving = [&] {
    DIR* d = ::opendir(store_b.c_str());
    if (!d) return false;
    bool found = false;
    while (auto* e = ::readdir(d)) found |= std::string(e->d_name).rfind(".receiving", 0) == 0;
    ::closedir(d);
    return found;
  };
  int round = 0;
  for (std::string victim : {"ssh", "sender", "receiver"}) {
    CAPTURE(victim);
    ++round;
    auto argv = w.servers->in_a([&] {
      auto v = w.copy_args("big");
      v.insert(v.begin(), snap_bin());
      return v;
    }());
    Child copy(
        [&]() -> int {
          std::vector<char*> args;
          for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
          args.push_back(nullptr);
          ::execv(args[0], args.data());
          return 127;
        },
        {false, 120s});
    // The stream flows once B's receive has its staging directory and the
    // copy has both children: the sender (hoody-snap send) and ssh. At a
    // later point each round (0.1, 0.25, 0.4 s in) B's receiver is stopped
    // (SIGSTOP), which stalls the whole pipe, so the victim is killed
    // mid-stream however fast the machine is: the 192 MiB may take only
    // 1.1 s here. The sender itself is never stopped: a stop signal aborts
    // its BTRFS_IOC_SEND (the kernel's pipe write returns -ERESTARTSYS).
    pid_t target = -1, recv = -1;
    auto deadline = std::chrono::steady_clock::now() + 30s;
    while (target < 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(5ms);
      if (!receiving()) continue;
      std::this_thread::sleep_for(std::chrono::milliseconds(150 * round - 50));
      recv = -1;
      for (pid_t p : processes_in_namespace_of(w.servers->holder_b())) {
        std::string cmd = slurp("/proc/" + std::to_string(p) + "/cmdline");
        if (cmd.find(std::string("receive\0", 8)) != std::string::npos &&
            slurp("/proc/" + std::to_string(p) + "/comm").rfind("hoody-snap", 0) == 0)
          recv = p;
      }
      if (recv <= 0) continue;
      ::kill(recv, SIGSTOP);
      pid_t ssh = -1, send = -1;
      for (pid_t c : children_of(copy.pid())) {
        std::string comm = slurp("/proc/" + std::to_string(c) + "/comm");
        if (comm.rfind("ssh", 0) == 0) ssh = c;
        if (comm.rfind("hoody-snap", 0) == 0) send = c;
      }
      if (ssh > 0 && send > 0 && receiving())
        target = victim == "ssh" ? ssh : victim == "sender" ? send : recv;
      else
        ::kill(recv, SIGCONT);
    }
    REQUIRE(target > 0);
    ::kill(target, SIGKILL);
    if (target != recv) ::kill(recv, SIGCONT);
    ExitInfo e = copy.wait();
    MESSAGE("interrupted: " << e.describe());
    CHECK(e.exit_code == 1);
    // B's receive ends (its stdin closed by sshd) and undoes what it made.
    auto receivers = [&] {
      int n = 0;
      for (pid_t p : processes_in_namespace_of(w.servers->holder_b()))
        n += slurp("/proc/" + std::to_string(p) + "/cmdline").find(std::string("receive\0", 8)) !=
             std::string::npos;
      return n;
    };
    for (int i = 0; i < 1000 && receivers() > 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(receivers() == 0);
    // Nothing half-received is shown on B.
    json lb = listing(w.b.path());
    CHECK(find_snap(lb, "big") == nullptr);
  }

  ExitInfo retry = w.snap_a(w.copy_args("big"), 240s);
  REQUIRE_MESSAGE(retry.ok(), retry.describe());
  MESSAGE("retry: " << retry.output);
  json la = listing(w.a.path()), lb = listing(w.b.path());
  CHECK(tree_diff(World::tree(w.a.path(), la, "big"), World::tree(w.b.path(), lb, "big")) == "");
  // No staging left behind on B.
  DIR* d = ::opendir(store_b.c_str());
  REQUIRE(d);
  std::vector<std::string> left;
  while (auto* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind(".receiving", 0) == 0 || n.rfind(".staging", 0) == 0) left.push_back(n);
  }
  ::closedir(d);
  CHECK(left.empty());
}

TEST_CASE("sync: three rounds through both mounts, the copy restored each time, last N kept") {
  require_mount_capabilities();
  World w(true, true);
  auto sync = [&] {
    return w.snap_a({"--mount", w.mnt_a, "sync", "--to", std::string("root@") + Servers::kAddrB + ":c1",
                     "--keep", "2", "--ssh", w.servers->ssh_command()});
  };
  // Round 1: full (B's c1 has no snapshot in common); B's own file goes, as
  // the live state becomes A's.
  populate(w.storage_a, 40, "r1");
  write_file(w.storage_a + "/old.txt", "old\n");
  write_file(w.storage_a + "/keep.txt", "v1\n");
  ExitInfo r1 = sync();
  REQUIRE_MESSAGE(r1.ok(), r1.describe() << "\n" << w.servers->sshd_log());
  MESSAGE("round 1: " << r1.output);
  CHECK(r1.output.find("full") != std::string::npos);
  CHECK(tree_diff(w.storage_a, w.storage_b()) == "");
  CHECK(tree_diff(w.dbs_a, w.dbs_b()) == "");
  CHECK(::access((w.storage_b() + "/b-only.txt").c_str(), F_OK) != 0);
  uint64_t full = bytes_of(r1.output);

  // Round 2: a change, a removal, an addition.
  write_file(w.storage_a + "/keep.txt", "v2\n");
  ::unlink((w.storage_a + "/old.txt").c_str());
  write_file(w.storage_a + "/new.txt", "new\n");
  // Written on B between rounds: one-way sync replaces it (kept in the
  // safety snapshot of the restore).
  write_file(w.storage_b() + "/local.txt", "B's\n");
  ExitInfo r2 = sync();
  REQUIRE_MESSAGE(r2.ok(), r2.describe());
  MESSAGE("round 2: " << r2.output);
  CHECK(r2.output.find("incremental from sync-") != std::string::npos);
  CHECK(r2.output.find("files changed") != std::string::npos);
  CHECK(bytes_of(r2.output) * 20 < full);
  CHECK(tree_diff(w.storage_a, w.storage_b()) == "");
  CHECK(::access((w.storage_b() + "/old.txt").c_str(), F_OK) != 0);
  CHECK(::access((w.storage_b() + "/local.txt").c_str(), F_OK) != 0);
  CHECK(slurp(w.storage_b() + "/keep.txt") == "v2\n");
  // B's mount shows the restored state too.
  CHECK(slurp(w.mnt_b + "/.hoody/snapshots.json").find("sync-") != std::string::npos);

  // Round 3.
  write_file(w.storage_a + "/data/f1", "changed in round 3\n");
  ::mkdir((w.storage_a + "/newdir").c_str(), 0700);
  write_file(w.storage_a + "/newdir/x", "x\n");
  ExitInfo r3 = sync();
  REQUIRE_MESSAGE(r3.ok(), r3.describe());
  MESSAGE("round 3: " << r3.output);
  CHECK(tree_diff(w.storage_a, w.storage_b()) == "");
  CHECK(tree_diff(w.dbs_a, w.dbs_b()) == "");

  // Taken through A's mount, the sync snapshots are of type sync (the
  // daemon's filesystem -> sync), and so are B's copies of them.
  for (auto* l : {&w.a, &w.b}) {
    json all = listing(l->path());
    for (auto& s : all["snapshots"])
      if (s["name"].get<std::string>().rfind("sync-", 0) == 0) CHECK(s["type"] == "sync");
  }
  // Only filesystem -> sync: no other type, and only once.
  REQUIRE(::mkdir((w.mnt_a + "/manual").c_str(), 0755) == 0);
  CHECK(::setxattr((w.mnt_a + "/manual").c_str(), "user.hoody.type", "scheduled", 9, 0) < 0);
  CHECK(errno == EPERM);
  CHECK(::setxattr((w.mnt_a + "/manual").c_str(), "user.hoody.type", "sync", 4, 0) == 0);
  CHECK(::setxattr((w.mnt_a + "/manual").c_str(), "user.hoody.type", "sync", 4, 0) < 0);
  CHECK(errno == EPERM);
  REQUIRE(::rmdir((w.mnt_a + "/manual").c_str()) == 0);

  // Retention: the last 2 sync snapshots on both sides, the same ones.
  auto sa = names_of(listing(w.a.path()), "sync-");
  auto sb = names_of(listing(w.b.path()), "sync-");
  CHECK(sa.size() == 2);
  CHECK(sa == sb);
  json lb = listing(w.b.path());
  int safety = 0;
  for (auto& s : lb["snapshots"])
    if (s["description"].get<std::string>().rfind("taken before sync to ", 0) == 0) ++safety;
  CHECK(safety == 2);
}

TEST_CASE("sync: the stores directly (no daemon on either side), a new container on B") {
  require_mount_capabilities();
  World w(false, false);
  auto sync = [&] {
    return w.snap_a({"sync", "--pool", w.a.path(), "--container", "c1", "--to",
                     std::string("root@") + Servers::kAddrB, "--keep", "3", "--ssh",
                     w.servers->ssh_command()});
  };
  populate(w.storage_a, 20, "s1");
  for (int round = 1; round <= 4; ++round) {
    CAPTURE(round);
    write_file(w.storage_a + "/round", std::to_string(round) + "\n");
    if (round == 3) ::unlink((w.storage_a + "/data/f0").c_str());
    ExitInfo r = sync();
    REQUIRE_MESSAGE(r.ok(), r.describe() << "\n" << w.servers->sshd_log());
    MESSAGE("round " << round << ": " << r.output);
    CHECK(r.output.find(round == 1 ? "full" : "incremental from sync-") != std::string::npos);
    CHECK(tree_diff(w.storage_a, w.storage_b()) == "");
    CHECK(tree_diff(w.dbs_a, w.dbs_b()) == "");
  }
  // --every: a round every 2 s until stopped (here: killed after 7 s).
  write_file(w.storage_a + "/round", "every\n");
  ExitInfo loop = w.servers->run_a({snap_bin(), "--pool", w.a.path(), "--container", "c1", "sync",
                                    "--to", std::string("root@") + Servers::kAddrB, "--keep", "3",
                                    "--every", "2s", "--ssh", w.servers->ssh_command()},
                                   7s);
  MESSAGE("--every 2s for 7 s: " << loop.output);
  CHECK(loop.timed_out);
  size_t rounds = 0;
  for (size_t at = 0; (at = loop.output.find("synced sync-", at)) != std::string::npos; ++at) ++rounds;
  CHECK(rounds >= 2);
  CHECK(loop.output.find("hoody-snap: sync:") == std::string::npos);  // no failed round
  // The kill may have cut a round after its snapshot: the next round
  // deletes that one (the peer does not hold it) and both sides agree again.
  ExitInfo after = sync();
  REQUIRE_MESSAGE(after.ok(), after.describe());
  CHECK(tree_diff(w.storage_a, w.storage_b()) == "");

  json la = listing(w.a.path());
  auto sa = names_of(la, "sync-");
  CHECK(sa.size() == 3);
  CHECK(sa == names_of(listing(w.b.path()), "sync-"));
  for (auto& s : la["snapshots"])
    if (s["name"].get<std::string>().rfind("sync-", 0) == 0) CHECK(s["type"] == "sync");
}
