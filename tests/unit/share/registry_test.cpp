// The share registry against a temp pool: schema and migration, uniqueness per
// owner, per receiver and per project, project-wide receipts (also for a
// container that joins later), the lifecycle through the registry, source
// path checks with openat2, generation, change signal and event log.
#include <doctest/doctest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>

#include "share/json.hpp"
#include "share/registry.hpp"
#include "share/text.hpp"
#include "temp_pool.hpp"

using namespace hoody::sharefs;
using share_test::TempPool;
using share_test::open_reg;

namespace {


// A pool with c1, c2 in project p, c3 in none, each with storage/data.
struct Fixture {
  TempPool pool;
  Registry reg = [this] {
    for (auto c : {"c1", "c2", "c3", "c4"}) pool.mkdir(c, "data");
    return open_reg(pool);
  }();
  Fixture() {
    std::string why;
    REQUIRE(reg.add_container("c1", "p", &why));
    REQUIRE(reg.add_container("c2", "p", &why));
    REQUIRE(reg.add_container("c3", "", &why));
  }
  hoody::Result<Share> offer(const std::string& from, const std::string& path, const std::string& to,
                      const std::string& project, const std::string& name, std::string* why,
                      Mode mode = Mode::ro) {
    Offer o;
    o.from = from;
    o.source = path;
    o.to_container = to;
    o.to_project = project;
    o.name = name;
    o.mode = mode;
    return reg.offer(o, why);
  }
};

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

std::optional<Received> received(Registry& reg, const std::string& c, const std::string& name,
                                 bool all = false) {
  auto rs = reg.shares_for(c, all);
  REQUIRE(rs.ok());
  for (auto& r : *rs)
    if (r.name == name) return r;
  return std::nullopt;
}

int64_t pragma(const std::string& db, const char* sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, sql, -1, &s, nullptr) == SQLITE_OK);
  int64_t v = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0) : -1;
  sqlite3_finalize(s);
  sqlite3_close(h);
  return v;
}

}  // namespace

TEST_CASE("open: a new shares.db is WAL at schema version 1") {
  TempPool pool;
  { auto reg = open_reg(pool); }
  std::string db = pool.path + "/shares.db";
  CHECK(pragma(db, "PRAGMA user_version") == kSchemaVersion);
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  sqlite3_stmt* s = nullptr;
  REQUIRE(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &s, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(s) == SQLITE_ROW);
  CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 0))) == "wal");
  sqlite3_finalize(s);
  sqlite3_close(h);
  // Reopening does not migrate again.
  auto reg = open_reg(pool);
  CHECK(pragma(db, "SELECT count(*) FROM meta") == 1);
}

TEST_CASE("open: a schema newer than this program is refused, the file left alone") {
  TempPool pool;
  std::string db = pool.path + "/shares.db";
  CHECK(pragma(db, "PRAGMA user_version = 99") == -1);
  std::string why;
  auto r = Registry::open(pool.path, &why);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == hoody::Errno(EPROTO));
  CHECK(has(why, "newer schema"));
  CHECK(pragma(db, "PRAGMA user_version") == 99);
}

TEST_CASE("open: a missing pool names the pool") {
  std::string why;
  auto r = Registry::open("/nonexistent/hoody-pool", &why);
  REQUIRE_FALSE(r.ok());
  CHECK(r.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "/nonexistent/hoody-pool"));
}

TEST_CASE("offer to one container: the receiver sees it pending, with mode and source") {
  Fixture f;
  std::string why;
  auto s = f.offer("c1", "data", "c3", "", "x", &why, Mode::rw);
  REQUIRE_MESSAGE(s.ok(), why);
  CHECK(s->owner == "c1");
  CHECK(s->source == "data");
  auto r = received(f.reg, "c3", "x");
  REQUIRE(r);
  CHECK(r->state == State::offered);
  CHECK(r->mode == Mode::rw);
  CHECK(r->owner == "c1");
  CHECK(r->source == "data");
  CHECK_FALSE(received(f.reg, "c2", "x"));
  CHECK(f.reg.accept("c3", "x", &why));
  CHECK(received(f.reg, "c3", "x")->state == State::accepted);
  auto mine = f.reg.offered_by("c1");
  REQUIRE(mine.ok());
  REQUIRE(mine->size() == 1);
  CHECK((*mine)[0].receipts.at(0).state == State::accepted);
}

TEST_CASE("offer: a share name is unique per owner among live shares") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c3", "", "x", &why).ok());
  auto again = f.offer("c1", "data", "c2", "", "x", &why);
  REQUIRE_FALSE(again.ok());
  CHECK(again.error() == hoody::Errno(EEXIST));
  CHECK(has(why, "name taken: c1 already offers a share \"x\""));
  // Another owner may use the name for another receiver.
  CHECK(f.offer("c3", "data", "c2", "", "x", &why).ok());
  // Once revoked, the name is free again.
  REQUIRE(f.reg.revoke("c1", "x", &why));
  CHECK(f.offer("c1", "data", "c3", "", "x", &why).ok());
}

TEST_CASE("offer: what a receiver sees as NAME is unique per receiver (EEXIST names the clash)") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c3", "", "x", &why).ok());
  auto clash = f.offer("c2", "data", "c3", "", "x", &why);
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error() == hoody::Errno(EEXIST));
  CHECK(has(why, "c3 already receives a share \"x\" from c1"));
  // Once c3 rejected c1's x, the name is free for c3.
  REQUIRE(f.reg.reject("c3", "x", &why));
  CHECK(f.offer("c2", "data", "c3", "", "x", &why).ok());
  CHECK(received(f.reg, "c3", "x")->owner == "c2");
}

TEST_CASE("project share: one receipt per member but the owner; a later member gets one on join") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "", "p", "team", &why).ok());
  CHECK(received(f.reg, "c2", "team"));
  CHECK_FALSE(received(f.reg, "c1", "team"));
  CHECK_FALSE(received(f.reg, "c3", "team"));
  // c4 joins later; c3 (in no project yet) joins p.
  REQUIRE(f.reg.add_container("c4", "p", &why));
  REQUIRE(f.reg.add_container("c3", "p", &why));
  REQUIRE(received(f.reg, "c4", "team"));
  REQUIRE(received(f.reg, "c3", "team"));
  // Per-receiver state: c2 accepts, c4 rejects, c3 waits.
  REQUIRE(f.reg.accept("c2", "team", &why));
  REQUIRE(f.reg.reject("c4", "team", &why));
  CHECK(received(f.reg, "c2", "team")->state == State::accepted);
  CHECK(received(f.reg, "c3", "team")->state == State::offered);
  CHECK_FALSE(received(f.reg, "c4", "team"));
  CHECK(received(f.reg, "c4", "team", true)->state == State::rejected);
  // Re-adding a member is idempotent and does not resurrect the rejected receipt.
  REQUIRE(f.reg.add_container("c4", "p", &why));
  CHECK_FALSE(received(f.reg, "c4", "team"));
  // A revoke reaches every receiver that still had it.
  REQUIRE(f.reg.revoke("c1", "team", &why));
  CHECK(received(f.reg, "c2", "team", true)->state == State::revoked);
  CHECK(received(f.reg, "c3", "team", true)->state == State::revoked);
  CHECK(received(f.reg, "c4", "team", true)->state == State::rejected);
}

TEST_CASE("project share: a name is unique per project, and an empty project is refused") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "", "p", "team", &why).ok());
  auto clash = f.offer("c2", "data", "", "p", "team", &why);
  REQUIRE_FALSE(clash.ok());
  CHECK(clash.error() == hoody::Errno(EEXIST));
  CHECK(has(why, "project p already has a share \"team\" from c1"));
  auto empty = f.offer("c1", "data", "", "nobody-here", "y", &why);
  REQUIRE_FALSE(empty.ok());
  CHECK(empty.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "no container is in project nobody-here"));
}

TEST_CASE("join: a container whose received names would clash cannot join, and stays out") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "", "p", "x", &why).ok());
  REQUIRE(f.reg.add_container("c4", "", &why));
  REQUIRE(f.offer("c4", "data", "c3", "", "x", &why).ok());
  auto j = f.reg.add_container("c3", "p", &why);
  REQUIRE_FALSE(j);
  CHECK(j.error() == hoody::Errno(EEXIST));
  CHECK(has(why, "c3 cannot join project p: share \"x\" from c1 would clash with share \"x\" from c4"));
  auto c3 = f.reg.container("c3");
  REQUIRE(c3.ok());
  CHECK((*c3)->project.empty());
  // A container in another project cannot move silently.
  auto moved = f.reg.add_container("c1", "q", &why);
  REQUIRE_FALSE(moved);
  CHECK(moved.error() == hoody::Errno(EEXIST));
  CHECK(has(why, "c1 is in project p already"));
}

TEST_CASE("revoke: only the owner; EPERM says not yours to revoke") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c2", "", "x", &why).ok());
  auto s = f.reg.revoke("c2", "x", &why);
  REQUIRE_FALSE(s);
  CHECK(s.error() == hoody::Errno(EPERM));
  CHECK(has(why, "not yours to revoke"));
  CHECK(received(f.reg, "c2", "x")->state == State::offered);
  auto none = f.reg.revoke("c1", "nope", &why);
  CHECK(none.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "c1 offers no share \"nope\""));
  auto ghost = f.reg.revoke("c9", "x", &why);
  CHECK(ghost.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "no such container c9"));
  REQUIRE(f.reg.revoke("c1", "x", &why));
  auto twice = f.reg.revoke("c1", "x", &why);
  CHECK(twice.error() == hoody::Errno(ENOENT));
}

TEST_CASE("revoke without the owner: the one live share, or EINVAL when several own the name") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c3", "", "x", &why).ok());
  REQUIRE(f.offer("c2", "data", "c1", "", "x", &why).ok());
  auto amb = f.reg.revoke("", "x", &why);
  CHECK(amb.error() == hoody::Errno(EINVAL));
  CHECK(has(why, "several containers offer \"x\" (c1, c2)"));
  REQUIRE(f.reg.revoke("c2", "x", &why));
  REQUIRE(f.reg.revoke("", "x", &why));
  CHECK(received(f.reg, "c3", "x", true)->state == State::revoked);
}

TEST_CASE("accept, reject, leave through the registry follow the state machine") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c2", "", "x", &why).ok());
  auto own = f.reg.accept("c1", "x", &why);
  CHECK(own.error() == hoody::Errno(EPERM));
  CHECK(has(why, "the owner cannot accept its own share"));
  auto stranger = f.reg.accept("c3", "x", &why);
  CHECK(stranger.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "no share \"x\" is offered to c3"));
  auto ghost = f.reg.accept("c9", "x", &why);
  CHECK(ghost.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "no such container c9"));
  auto early = f.reg.leave("c2", "x", &why);
  CHECK(early.error() == hoody::Errno(EINVAL));
  REQUIRE(f.reg.accept("c2", "x", &why));
  CHECK(f.reg.accept("c2", "x", &why).error() == hoody::Errno(EALREADY));
  REQUIRE(f.reg.leave("c2", "x", &why));
  CHECK(received(f.reg, "c2", "x", true)->state == State::left);
  auto back = f.reg.accept("c2", "x", &why);
  CHECK(back.error() == hoody::Errno(EINVAL));
  REQUIRE(f.reg.revoke("c1", "x", &why));
  // left stays left after the revoke; a fresh offer, then revoke, then accept is ESTALE.
  REQUIRE(f.offer("c1", "data", "c2", "", "y", &why).ok());
  REQUIRE(f.reg.revoke("c1", "y", &why));
  auto stale = f.reg.accept("c2", "y", &why);
  CHECK(stale.error() == hoody::Errno(ESTALE));
  CHECK(has(why, "accept \"y\" for c2: it was revoked by its owner"));
}

TEST_CASE("offer: unknown containers are named") {
  Fixture f;
  std::string why;
  auto a = f.offer("c9", "data", "c2", "", "x", &why);
  CHECK(a.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "no such container c9"));
  auto b = f.offer("c1", "data", "c8", "", "x", &why);
  CHECK(b.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "no such container c8"));
  auto self = f.offer("c1", "data", "c1", "", "x", &why);
  CHECK(self.error() == hoody::Errno(EINVAL));
  auto bad = f.offer("c1", "data", "c2", "", "../x", &why);
  CHECK(bad.error() == hoody::Errno(EINVAL));
  CHECK(has(why, "share \"../x\""));
}

TEST_CASE("source paths: relative, no .., beneath the owner's storage (openat2)") {
  Fixture f;
  std::string why;
  f.pool.mkdir("c1", "a/b");
  f.pool.mkdir("c2", "secret");
  std::filesystem::create_directory_symlink("/", f.pool.storage("c1") + "/to-root");
  std::filesystem::create_directory_symlink("../../c2/storage/secret", f.pool.storage("c1") + "/to-c2");
  std::filesystem::create_directory_symlink("a/b", f.pool.storage("c1") + "/inside");
  std::ofstream(f.pool.storage("c1") + "/file") << "x";
  struct Case {
    const char* path;
    int err;
    const char* message;
  } cases[] = {
      {"../x", EXDEV, "path ../x is outside c1's storage"},
      {"a/../../x", EXDEV, "path a/../../x is outside c1's storage"},
      {"/etc", EINVAL, "path /etc is absolute"},
      {"to-root", EXDEV, "path to-root is outside c1's storage"},
      {"to-root/etc", EXDEV, "path to-root/etc is outside c1's storage"},
      {"to-c2", EXDEV, "path to-c2 is outside c1's storage"},
      {"missing", ENOENT, "path missing does not exist in c1's storage"},
      {"file", ENOTDIR, "path file is not a directory in c1's storage"},
      {"bad\xff", EILSEQ, "is not valid UTF-8"},
  };
  int n = 0;
  for (auto& c : cases) {
    auto s = f.offer("c1", c.path, "c2", "", "s" + std::to_string(n++), &why);
    INFO(c.path, " -> ", why);
    REQUIRE_FALSE(s.ok());
    CHECK(s.error() == hoody::Errno(c.err));
    CHECK(has(why, c.message));
  }
  auto inside = f.offer("c1", "inside", "c2", "", "ok1", &why);
  CHECK_MESSAGE(inside.ok(), why);
  auto whole = f.offer("c1", ".", "c2", "", "ok2", &why);
  REQUIRE(whole.ok());
  CHECK(whole->source == ".");
  auto messy = f.offer("c1", "a//b/./", "c2", "", "ok3", &why);
  REQUIRE(messy.ok());
  CHECK(messy->source == "a/b");
  // A container without a storage directory is named.
  REQUIRE(f.reg.add_container("c5", "", &why));
  auto nostore = f.offer("c5", ".", "c2", "", "ok4", &why);
  CHECK(nostore.error() == hoody::Errno(ENOENT));
  CHECK(has(why, "c5 has no storage directory"));
}

TEST_CASE("normalize_source and open_source on their own") {
  std::string why;
  CHECK(*normalize_source("", "c1", &why) == ".");
  CHECK(*normalize_source("./a/./b//", "c1", &why) == "a/b");
  CHECK(normalize_source("a/..", "c1", &why).error() == hoody::Errno(EXDEV));
  CHECK(normalize_source("..", "c1", &why).error() == hoody::Errno(EXDEV));
  CHECK(has(why, "path .. is outside c1's storage"));
  CHECK(normalize_source(std::string("a\0b", 3), "c1", &why).error() == hoody::Errno(EINVAL));
  CHECK(*normalize_source("new\nline", "c1", &why) == "new\nline");
}

TEST_CASE("generation: +1 per committed change, not for a refusal; the signal moves too") {
  Fixture f;
  std::string why;
  auto g0 = f.reg.generation();
  REQUIRE(g0.ok());
  uint64_t sig0 = f.reg.signal().current();
  REQUIRE(f.offer("c1", "data", "c2", "", "x", &why).ok());
  CHECK(*f.reg.generation() == *g0 + 1);
  CHECK(f.reg.signal().current() == sig0 + 1);
  REQUIRE_FALSE(f.offer("c1", "data", "c2", "", "x", &why).ok());
  CHECK(*f.reg.generation() == *g0 + 1);
  CHECK(f.reg.signal().current() == sig0 + 1);
  REQUIRE(f.reg.accept("c2", "x", &why));
  CHECK(*f.reg.generation() == *g0 + 2);
  // Another Registry on the same pool shares the signal and the generation.
  auto other = open_reg(f.pool);
  CHECK(other.signal().name() == f.reg.signal().name());
  CHECK(other.signal().current() == f.reg.signal().current());
  CHECK(*other.generation() == *f.reg.generation());
}

TEST_CASE("events: who did what, when, with what result (refusals too)") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c2", "", "x", &why).ok());
  REQUIRE_FALSE(f.reg.revoke("c2", "x", &why));
  REQUIRE(f.reg.accept("c2", "x", &why));
  auto ev = f.reg.events(3);
  REQUIRE(ev.ok());
  REQUIRE(ev->size() == 3);
  CHECK((*ev)[0].action == "offer");
  CHECK((*ev)[0].actor == "c1");
  CHECK((*ev)[0].subject == "c1:x");
  CHECK((*ev)[0].result == "ok");
  CHECK(has((*ev)[0].detail, "source=data"));
  CHECK((*ev)[1].action == "revoke");
  CHECK((*ev)[1].actor == "c2");
  CHECK(has((*ev)[1].result, "not yours to revoke"));
  CHECK((*ev)[2].action == "accept");
  CHECK((*ev)[2].time > 0);
  // An attempt to share outside one's storage is logged too.
  REQUIRE_FALSE(f.offer("c1", "../c2/storage", "c2", "", "grab", &why).ok());
  REQUIRE_FALSE(f.offer("c1", "nope", "c2", "", "grab", &why).ok());
  ev = f.reg.events(2);
  REQUIRE(ev->size() == 2);
  CHECK((*ev)[0].subject == "c1:grab");
  CHECK(has((*ev)[0].detail, "source=../c2/storage"));
  CHECK(has((*ev)[0].result, "path ../c2/storage is outside c1's storage"));
  CHECK(has((*ev)[1].result, "path nope does not exist"));
}

TEST_CASE("remove_container: its offers are revoked, its receipts dropped, it is forgotten") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "c2", "", "x", &why).ok());
  REQUIRE(f.offer("c3", "data", "c1", "", "y", &why).ok());
  REQUIRE(f.reg.remove_container("c1", &why));
  CHECK(received(f.reg, "c2", "x", true)->state == State::revoked);
  CHECK(f.reg.shares_for("c1", true)->empty());
  CHECK_FALSE(*f.reg.container("c1"));
  CHECK(f.reg.remove_container("c1", &why).error() == hoody::Errno(ENOENT));
}

TEST_CASE("json: shares.json of a container lists offers and receipts; control characters stay JSON") {
  Fixture f;
  std::string why;
  f.pool.mkdir("c1", "new\nline");
  REQUIRE(f.offer("c1", "new\nline", "", "p", "x", &why).ok());
  auto j = container_json(f.reg, "c2", false);
  REQUIRE(j.ok());
  std::string text = j->dump();
  CHECK(text.find('\n') == std::string::npos);
  auto back = nlohmann::json::parse(text);
  CHECK(back["receives"][0]["source"] == "new\nline");
  CHECK(back["receives"][0]["state"] == "offered");
  CHECK(back["project"] == "p");
  auto mine = container_json(f.reg, "c1", false);
  CHECK((*mine)["offers"][0]["to"]["project"] == "p");
}

TEST_CASE("escape: control characters and backslash, UTF-8 kept; valid_utf8") {
  CHECK(escape("a\nb") == "a\\nb");
  CHECK(escape("tab\there") == "tab\\there");
  CHECK(escape("esc\x1b[2J") == "esc\\x1b[2J");
  CHECK(escape("bad\xff") == "bad\\xff");
  CHECK(escape("back\\slash") == "back\\\\slash");
  CHECK(escape("\x7f") == "\\x7f");
  CHECK(escape("caf\xc3\xa9") == "caf\xc3\xa9");
  CHECK(valid_utf8("caf\xc3\xa9"));
  CHECK_FALSE(valid_utf8("\xff"));
  CHECK_FALSE(valid_utf8("\xc3"));
  CHECK_FALSE(valid_utf8("\xc0\xaf"));      // overlong '/'
  CHECK_FALSE(valid_utf8("\xed\xa0\x80"));  // surrogate
  CHECK(valid_utf8("\xf0\x9f\x98\x80"));
}

TEST_CASE("add_container again (hoody-up on every start) changes nothing: no event, no generation") {
  Fixture f;
  std::string why;
  auto g = *f.reg.generation();
  auto n = f.reg.events(1000)->size();
  uint64_t sig = f.reg.signal().current();
  REQUIRE(f.reg.add_container("c1", "p", &why));
  REQUIRE(f.reg.add_container("c1", "", &why));  // a member stays in its project
  REQUIRE(f.reg.add_container("c3", "", &why));
  CHECK(*f.reg.generation() == g);
  CHECK(f.reg.events(1000)->size() == n);
  CHECK(f.reg.signal().current() == sig);
  CHECK((*f.reg.container("c1"))->project == "p");
  // Joining a project is a change.
  REQUIRE(f.reg.add_container("c3", "p", &why));
  CHECK(*f.reg.generation() == g + 1);
}

TEST_CASE("set_mode: the owner flips ro <-> rw for every receiver, with a new generation and an event") {
  Fixture f;
  std::string why;
  REQUIRE(f.offer("c1", "data", "", "p", "m", &why, Mode::ro));
  REQUIRE(f.reg.accept("c2", "m", &why));
  auto g0 = f.reg.generation();
  REQUIRE(g0);
  uint64_t sig0 = f.reg.signal().current();
  REQUIRE(f.reg.set_mode("c1", "m", Mode::rw, &why));
  CHECK(received(f.reg, "c2", "m")->mode == Mode::rw);
  CHECK(*f.reg.generation() == *g0 + 1);
  CHECK(f.reg.signal().current() > sig0);
  // The same mode again changes nothing (no generation, no event).
  REQUIRE(f.reg.set_mode("", "m", Mode::rw, &why));
  CHECK(*f.reg.generation() == *g0 + 1);
  auto ev = f.reg.events();
  REQUIRE(ev);
  CHECK(ev->back().action == "mode");
  CHECK(has(ev->back().detail, "mode=rw"));
  // Not the owner: refused, named.
  auto s = f.reg.set_mode("c2", "m", Mode::ro, &why);
  CHECK(s.err() == EPERM);
  CHECK(has(why, "not yours"));
  CHECK(f.reg.set_mode("c1", "nosuch", Mode::ro, &why).err() == ENOENT);
  CHECK(f.reg.set_mode("zz", "m", Mode::ro, &why).err() == ENOENT);
  // Revoked shares have no mode to change.
  REQUIRE(f.reg.revoke("c1", "m", &why));
  CHECK(f.reg.set_mode("c1", "m", Mode::ro, &why).err() == ENOENT);
}
