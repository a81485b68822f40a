// hoody-share, the built program, against a temp pool (plain directories: the
// registry needs no BTRFS): outputs, exit codes (0 done, 1 refused, 2 usage),
// escaped listings, and 8 processes offering and accepting at once.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "hoody/test/process.hpp"

namespace {

struct Out {
  int rc = -1;
  std::string out, err;
};

std::string read_memfd(int fd) {
  std::string s;
  char buf[4096];
  ::lseek(fd, 0, SEEK_SET);
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    s.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return s;
}

std::string share_exe() {
  const char* e = std::getenv("HOODY_SHARE");
  REQUIRE_MESSAGE(e, "HOODY_SHARE is not set (meson sets it to the built hoody-share)");
  return e;
}

// Runs hoody-share with args; stdout and stderr apart.  `pool` goes in
// through HOODY_POOL unless empty.
Out share(const std::string& pool, std::vector<std::string> args) {
  static const std::string exe = share_exe();
  int ofd = ::memfd_create("out", MFD_CLOEXEC), efd = ::memfd_create("err", MFD_CLOEXEC);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(ofd, 1);
    ::dup2(efd, 2);
    if (!pool.empty()) ::setenv("HOODY_POOL", pool.c_str(), 1);
    else ::unsetenv("HOODY_POOL");
    std::vector<char*> argv{const_cast<char*>(exe.c_str())};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  Out o;
  o.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  o.out = read_memfd(ofd);
  o.err = read_memfd(efd);
  return o;
}

struct Pool {
  std::string path;
  Pool() {
    char t[] = "/tmp/hoody-share-cli-XXXXXX";
    REQUIRE(::mkdtemp(t));
    path = t;
  }
  ~Pool() {
    // The pool's change signal is named after the directory's dev and inode.
    struct stat st;
    if (::stat(path.c_str(), &st) == 0)
      ::shm_unlink(("/hoody-shares-" + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino)).c_str());
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  void mkdir(const std::string& c, const std::string& sub = "") {
    std::filesystem::create_directories(path + "/containers/" + c + "/storage/" + sub);
  }
  Out operator()(std::vector<std::string> args) { return share(path, std::move(args)); }
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

int lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

#define CHECK_RC(o, want) CHECK_MESSAGE((o).rc == (want), "rc=", (o).rc, " out=", (o).out, " err=", (o).err)

}  // namespace

TEST_CASE("hoody-share: containers, offer, list, accept, reject, leave, revoke") {
  Pool p;
  for (auto c : {"c1", "c2", "c3"}) p.mkdir(c, "data");
  CHECK_RC(p({"container", "add", "c1", "--project", "p"}), 0);
  CHECK_RC(p({"container", "add", "c2", "--project", "p"}), 0);
  CHECK_RC(p({"container", "add", "c3"}), 0);
  auto cl = p({"container", "list", "--json"});
  CHECK_RC(cl, 0);
  auto cj = nlohmann::json::parse(cl.out);
  CHECK(cj["containers"].size() == 3);
  CHECK(cj["containers"][2]["project"].is_null());

  auto o = p({"offer", "--from", "c1:data", "--to", "c3", "--ro", "x"});
  CHECK_RC(o, 0);
  CHECK(has(o.out, "offered x from c1:data to c3 (ro)"));
  CHECK_RC(p({"offer", "--from", "c1:.", "--project", "p", "--rw", "team"}), 0);

  auto l = p({"list", "--container", "c3", "--json"});
  CHECK_RC(l, 0);
  auto j = nlohmann::json::parse(l.out);
  REQUIRE(j["receives"].size() == 1);
  CHECK(j["receives"][0]["name"] == "x");
  CHECK(j["receives"][0]["mode"] == "ro");
  CHECK(j["receives"][0]["state"] == "offered");
  CHECK(j["receives"][0]["source"] == "data");

  CHECK_RC(p({"accept", "--container", "c3", "x"}), 0);
  CHECK_RC(p({"accept", "--container", "c2", "team"}), 0);
  auto text = p({"list", "--container", "c2"});
  CHECK_RC(text, 0);
  CHECK(has(text.out, "receives team"));
  CHECK(has(text.out, "accepted"));
  CHECK_RC(p({"leave", "--container", "c2", "team"}), 0);
  CHECK_RC(p({"revoke", "--from", "c1", "x"}), 0);
  auto all = nlohmann::json::parse(p({"list", "--all", "--json"}).out);
  REQUIRE(all["shares"].size() == 2);
  for (auto& s : all["shares"]) {
    if (s["name"] == "x") {
      CHECK(s["state"] == "revoked");
      CHECK(s["receivers"][0]["state"] == "revoked");
    } else {
      CHECK(s["to"]["project"] == "p");
      CHECK(s["receivers"][0]["state"] == "left");
    }
  }
  // Live listing drops the revoked one.
  CHECK(nlohmann::json::parse(p({"list", "--json"}).out)["shares"].size() == 1);
  // The event log, as JSON.
  auto ev = nlohmann::json::parse(p({"log", "--json"}).out);
  CHECK(ev["events"].size() >= 8);
  CHECK(ev["events"].back()["action"] == "revoke");
  CHECK(ev["events"].back()["result"] == "ok");
  // A container leaves the registry: its offers go with it.
  CHECK_RC(p({"container", "remove", "c1"}), 0);
  CHECK(nlohmann::json::parse(p({"list", "--json"}).out)["shares"].empty());
}

TEST_CASE("hoody-share: refusals exit 1 and say what was wrong") {
  Pool p;
  for (auto c : {"c1", "c2"}) p.mkdir(c, "data");
  CHECK_RC(p({"container", "add", "c1"}), 0);
  CHECK_RC(p({"container", "add", "c2"}), 0);
  struct Case {
    std::vector<std::string> args;
    const char* message;
  } cases[] = {
      {{"offer", "--from", "c9:data", "--to", "c2", "--ro", "x"}, "no such container c9"},
      {{"offer", "--from", "c1:data", "--to", "c9", "--ro", "x"}, "no such container c9"},
      {{"offer", "--from", "c1:../c2", "--to", "c2", "--ro", "x"}, "path ../c2 is outside c1's storage"},
      {{"offer", "--from", "c1:/etc", "--to", "c2", "--ro", "x"}, "path /etc is absolute"},
      {{"offer", "--from", "c1:nope", "--to", "c2", "--ro", "x"}, "path nope does not exist in c1's storage"},
      {{"offer", "--from", "c1:data", "--to", "c2", "--ro", "bad/name"}, "share \"bad/name\""},
      {{"accept", "--container", "c2", "x"}, "no share \"x\" is offered to c2"},
      {{"list", "--container", "c9"}, "no such container c9"},
  };
  for (auto& c : cases) {
    auto o = p(c.args);
    INFO(c.args[0], " ", c.message);
    CHECK_RC(o, 1);
    CHECK_MESSAGE(has(o.err, c.message), o.err);
    CHECK(has(o.err, "hoody-share: "));
  }
  CHECK_RC(p({"offer", "--from", "c1:data", "--to", "c2", "--rw", "x"}), 0);
  auto taken = p({"offer", "--from", "c1:data", "--to", "c2", "--ro", "x"});
  CHECK_RC(taken, 1);
  CHECK(has(taken.err, "name taken"));
  auto notyours = p({"revoke", "--from", "c2", "x"});
  CHECK_RC(notyours, 1);
  CHECK(has(notyours.err, "not yours to revoke"));
  CHECK_RC(p({"revoke", "x"}), 0);
  auto stale = p({"accept", "--container", "c2", "x"});
  CHECK_RC(stale, 1);
  CHECK(has(stale.err, "revoked by its owner"));
  // A pool that is not there.
  auto nopool = share("/nonexistent/pool", {"list"});
  CHECK_RC(nopool, 1);
  CHECK(has(nopool.err, "/nonexistent/pool"));
}

TEST_CASE("hoody-share: usage errors exit 2") {
  Pool p;
  p.mkdir("c1", "data");
  std::vector<std::vector<std::string>> cases = {
      {},
      {"frobnicate"},
      {"offer", "--from", "c1:data", "--to", "c2", "x"},                        // no --ro/--rw
      {"offer", "--from", "c1:data", "--to", "c2", "--ro", "--rw", "x"},        // both
      {"offer", "--from", "c1:data", "--ro", "x"},                              // no audience
      {"offer", "--from", "c1:data", "--to", "c2", "--project", "p", "--ro", "x"},
      {"offer", "--from", "c1", "--to", "c2", "--ro", "x"},                     // no :PATH
      {"offer", "--to", "c2", "--ro", "x"},                                     // no --from
      {"accept", "x"},                                                          // no --container
      {"list", "--bogus"},
      {"container"},
      {"--log-level", "loud", "list"},
  };
  for (auto& args : cases) {
    auto o = p(args);
    std::string shown;
    for (auto& a : args) shown += a + " ";
    INFO("hoody-share ", shown);
    CHECK_RC(o, 2);
    CHECK(o.out.empty());
  }
  CHECK_RC(p({"--help"}), 0);
}

TEST_CASE("hoody-share: --pool and HOODY_POOL choose the pool") {
  Pool a, b;
  a.mkdir("c1");
  b.mkdir("c1");
  CHECK_RC(share(a.path, {"container", "add", "c1"}), 0);
  CHECK_RC(share(a.path, {"--pool", b.path, "container", "add", "c2"}), 0);
  auto la = nlohmann::json::parse(share(a.path, {"container", "list", "--json"}).out);
  auto lb = nlohmann::json::parse(share("", {"--pool", b.path, "container", "list", "--json"}).out);
  CHECK(la["containers"].size() == 1);
  CHECK(lb["containers"].size() == 1);
  CHECK(lb["containers"][0]["id"] == "c2");
}

TEST_CASE("hoody-share: a path with a newline cannot forge a row; JSON stays JSON") {
  Pool p;
  p.mkdir("c1", "evil\nc9 forged x rw offered -");
  p.mkdir("c1", "tab\there");
  p.mkdir("c2");
  CHECK_RC(p({"container", "add", "c1"}), 0);
  CHECK_RC(p({"container", "add", "c2"}), 0);
  CHECK_RC(p({"offer", "--from", "c1:evil\nc9 forged x rw offered -", "--to", "c2", "--ro", "a"}), 0);
  CHECK_RC(p({"offer", "--from", "c1:tab\there", "--to", "c2", "--ro", "b"}), 0);
  for (std::vector<std::string> args : {std::vector<std::string>{"list"},
                                        std::vector<std::string>{"list", "--container", "c2"},
                                        std::vector<std::string>{"list", "--container", "c1"}}) {
    auto o = p(args);
    CHECK_RC(o, 0);
    CHECK(lines(o.out) == 3);  // header + 2 rows
    CHECK(has(o.out, "evil\\nc9 forged"));
    CHECK(has(o.out, "tab\\there"));
    CHECK_FALSE(has(o.out, "\t"));
  }
  auto log = p({"log"});
  CHECK(lines(log.out) == 4);
  auto j = p({"list", "--container", "c2", "--json"});
  auto parsed = nlohmann::json::parse(j.out);
  CHECK(parsed["receives"][0]["source"] == "evil\nc9 forged x rw offered -");
  CHECK(parsed["receives"][1]["source"] == "tab\there");
  // A refusal message escapes the path too: one line on stderr.
  auto bad = p({"offer", "--from", "c1:no\nsuch", "--to", "c2", "--ro", "c"});
  CHECK_RC(bad, 1);
  CHECK(lines(bad.err) == 1);
  CHECK(has(bad.err, "no\\nsuch"));
}

TEST_CASE("hoody-share: 8 processes offering and accepting at once, no 'database is locked'") {
  Pool p;
  constexpr int kProcs = 8, kRounds = 6;
  for (int i = 0; i < kProcs; ++i) p.mkdir("c" + std::to_string(i), "data");
  // Every process starts on a shares.db that does not exist yet: schema
  // creation races too.
  auto t0 = std::chrono::steady_clock::now();
  std::vector<hoody::test::Child> kids;
  for (int i = 0; i < kProcs; ++i) {
    kids.emplace_back([&p, i]() -> int {
      std::string me = "c" + std::to_string(i), next = "c" + std::to_string((i + 1) % kProcs);
      auto expect = [&](const Out& o, int rc, const std::string& what) {
        if (o.rc == rc && !has(o.err, "locked") && !has(o.err, "busy")) return true;
        std::fprintf(stderr, "%s: rc=%d err=%s\n", what.c_str(), o.rc, o.err.c_str());
        return false;
      };
      if (!expect(p({"container", "add", me, "--project", "p"}), 0, "add " + me)) return 1;
      // Wait until the neighbour exists (it is added by another process).
      for (int t = 0; t < 500; ++t) {
        auto l = p({"container", "list", "--json"});
        if (l.rc == 0 && has(l.out, "\"" + next + "\"")) break;
        ::usleep(10000);
      }
      for (int k = 0; k < kRounds; ++k) {
        std::string name = "s" + std::to_string(i) + "-" + std::to_string(k);
        if (!expect(p({"offer", "--from", me + ":data", "--to", next, "--rw", name}), 0, "offer " + name))
          return 1;
        if (!expect(p({"accept", "--container", next, name}), 0, "accept " + name)) return 1;
        if (!expect(p({"list", "--container", me, "--json"}), 0, "list")) return 1;
      }
      // All race for one project-wide name: exactly one wins, the others are refused.
      auto race = p({"offer", "--from", me + ":data", "--project", "p", "--ro", "race"});
      if (race.rc == 0) return 10;
      if (race.rc == 1 && has(race.err, "name taken") && !has(race.err, "locked")) return 11;
      std::fprintf(stderr, "race: rc=%d err=%s\n", race.rc, race.err.c_str());
      return 1;
    }, hoody::test::ChildOptions{false, std::chrono::seconds(240)});
  }
  int winners = 0;
  for (auto& k : kids) {
    auto r = k.wait();
    INFO(r.describe());
    CHECK((r.exit_code == 10 || r.exit_code == 11));
    winners += r.exit_code == 10;
  }
  CHECK(winners == 1);
  MESSAGE(kProcs, " processes x (add + ", kRounds, " x (offer, accept, list) + race) = ",
          kProcs * (2 + 3 * kRounds), " hoody-share runs in ",
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count(),
          " ms");
  // The final state is consistent.
  auto all = nlohmann::json::parse(p({"list", "--json"}).out)["shares"];
  int accepted = 0, race = 0;
  for (auto& s : all) {
    if (s["name"] == "race") {
      ++race;
      // Every other member received it.
      CHECK(s["receivers"].size() == kProcs - 1);
      continue;
    }
    REQUIRE(s["receivers"].size() == 1);
    accepted += s["receivers"][0]["state"] == "accepted";
  }
  CHECK(race == 1);
  CHECK(accepted == kProcs * kRounds);
  auto containers = nlohmann::json::parse(p({"container", "list", "--json"}).out)["containers"];
  CHECK(containers.size() == kProcs);
  // Each committed change logged once: adds + offers + accepts + one race win + 7 race refusals.
  auto ev = nlohmann::json::parse(p({"log", "--limit", "100000", "--json"}).out)["events"];
  int ok = 0, refused = 0;
  for (auto& e : ev) (e["result"] == "ok" ? ok : refused)++;
  CHECK(ok == kProcs + 2 * kProcs * kRounds + 1);
  CHECK(refused == kProcs - 1);
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open((p.path + "/shares.db").c_str(), &db) == SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(st) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(st, 0))) == "ok");
  sqlite3_finalize(st);
  sqlite3_close(db);
}

TEST_CASE("hoody-share mode: --ro and --rw flip a live share; exactly one of them; not yours is refused") {
  Pool p;
  for (auto c : {"c1", "c2"}) p.mkdir(c, "data");
  CHECK_RC(p({"container", "add", "c1"}), 0);
  CHECK_RC(p({"container", "add", "c2"}), 0);
  CHECK_RC(p({"offer", "--from", "c1:data", "--to", "c2", "--ro", "x"}), 0);
  auto m = p({"mode", "x", "--rw"});
  CHECK_RC(m, 0);
  CHECK(has(m.out, "x is rw"));
  auto l = p({"list", "--json"});
  CHECK_RC(l, 0);
  CHECK(has(l.out, "\"rw\""));
  CHECK_RC(p({"mode", "--from", "c1", "x", "--ro"}), 0);
  CHECK_RC(p({"mode", "x"}), 2);                    // neither
  CHECK_RC(p({"mode", "x", "--ro", "--rw"}), 2);    // both
  auto no = p({"mode", "--from", "c2", "x", "--rw"});
  CHECK_RC(no, 1);
  CHECK(has(no.err, "not yours"));
  CHECK_RC(p({"mode", "nosuch", "--rw"}), 1);
}
