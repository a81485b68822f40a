// Shares across servers, the registry and configuration half (issue 9 item
// 4): schema 2 and its migration from 1, a share offered to C@SERVER (its
// receipt, exports()), one received from another server (receive, accept,
// revoke by C@SERVER), the receiver's state reported back (remote_state),
// '@' reserved in container ids, server.conf, the ganesha EXPORT blocks.
#include <doctest/doctest.h>
#include <sqlite3.h>

#include <fstream>

#include "share/registry.hpp"
#include "share/server.hpp"
#include "temp_pool.hpp"

using namespace hoody::sharefs;
using share_test::TempPool;
using share_test::open_reg;

namespace {


void exec(const std::string& db, const char* sql) {
  sqlite3* h = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &h) == SQLITE_OK);
  char* err = nullptr;
  int rc = sqlite3_exec(h, sql, nullptr, nullptr, &err);
  std::string msg = err ? err : "";
  INFO(msg);
  sqlite3_free(err);
  sqlite3_close(h);
  REQUIRE(rc == SQLITE_OK);
}

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

struct Fixture {
  TempPool pool;
  Registry reg = [this] {
    pool.mkdir("c1", "data");
    pool.mkdir("c2", "data");
    return open_reg(pool);
  }();
  Fixture() {
    std::string why;
    REQUIRE(reg.add_container("c1", "", &why));
    REQUIRE(reg.add_container("c2", "", &why));
  }
  hoody::Result<Share> offer_out(const std::string& name, const std::string& to, const std::string& server,
                                 std::string* why) {
    Offer o;
    o.from = "c1";
    o.source = "data";
    o.to_container = to;
    o.to_server = server;
    o.name = name;
    o.mode = Mode::rw;
    return reg.offer(o, why);
  }
  hoody::Result<Share> receive(const std::string& name, std::string* why,
                               const std::string& owner = "c9@10.0.0.1",
                               const std::string& url = "nfs://10.0.0.1/view/7?nfsport=2049") {
    Inbound in;
    in.owner = owner;
    in.peer = "10.0.0.1";
    in.url = url;
    in.to_container = "c2";
    in.name = name;
    in.mode = Mode::ro;
    return reg.receive(in, why);
  }
};

}  // namespace

TEST_CASE("schema 2: a version-1 registry is migrated, its shares kept, peer and url empty") {
  TempPool pool;
  pool.mkdir("c1", "data");
  std::string db = pool.path + "/shares.db";
  // The version-1 schema as hoody wrote it, with one share.
  exec(db, R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta(key, value) VALUES('generation', 3);
CREATE TABLE containers(id TEXT PRIMARY KEY, project TEXT, added INTEGER NOT NULL);
CREATE TABLE shares(id INTEGER PRIMARY KEY, name TEXT NOT NULL, owner TEXT NOT NULL,
  source TEXT NOT NULL, mode TEXT NOT NULL, to_container TEXT, to_project TEXT,
  state TEXT NOT NULL, created INTEGER NOT NULL, changed INTEGER NOT NULL);
CREATE TABLE receipts(share INTEGER NOT NULL, container TEXT NOT NULL, name TEXT NOT NULL,
  state TEXT NOT NULL, changed INTEGER NOT NULL, PRIMARY KEY(share, container));
CREATE TABLE events(id INTEGER PRIMARY KEY, time INTEGER NOT NULL, actor TEXT NOT NULL,
  action TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, result TEXT NOT NULL);
INSERT INTO containers VALUES('c1', NULL, 1), ('c2', NULL, 1);
INSERT INTO shares VALUES(1, 'old', 'c1', 'data', 'ro', 'c2', NULL, 'offered', 1, 1);
INSERT INTO receipts VALUES(1, 'c2', 'old', 'accepted', 1);
PRAGMA user_version = 1;
)sql");
  auto reg = open_reg(pool);
  auto rs = reg.shares_for("c2");
  REQUIRE(rs.ok());
  REQUIRE(rs->size() == 1);
  CHECK((*rs)[0].name == "old");
  CHECK((*rs)[0].state == State::accepted);
  CHECK((*rs)[0].url.empty());
  CHECK((*rs)[0].peer.empty());
  auto ex = reg.exports();
  REQUIRE(ex.ok());
  CHECK(ex->empty());
}

TEST_CASE("offer to C@SERVER: one receipt C@SERVER, no local container needed, exported") {
  Fixture f;
  std::string why;
  auto s = f.offer_out("docs", "c7", "10.0.0.2", &why);
  REQUIRE_MESSAGE(s.ok(), why);
  CHECK(s->peer == "10.0.0.2");
  REQUIRE(s->receipts.size() == 1);
  CHECK(s->receipts[0].container == "c7@10.0.0.2");
  // A local container of that name sees nothing of it.
  auto local = f.reg.shares_for("c2");
  REQUIRE(local.ok());
  CHECK(local->empty());
  auto ex = f.reg.exports();
  REQUIRE(ex.ok());
  REQUIRE(ex->size() == 1);
  CHECK((*ex)[0].id == s->id);
  CHECK((*ex)[0].source == "data");
  // A server name with a space or a slash is refused (it ends up in ganesha's config).
  CHECK_FALSE(f.offer_out("bad", "c7", "a b", &why).ok());
  CHECK(has(why, "server"));
  CHECK_FALSE(f.offer_out("bad", "c7", "x/y", &why).ok());
  CHECK_FALSE(f.offer_out("bad", "", "10.0.0.2", &why).ok());
}

TEST_CASE("remote_state: the receiver's accept, then leave, reach the owner's receipt; exports follow") {
  Fixture f;
  std::string why;
  auto s = f.offer_out("docs", "c7", "10.0.0.2", &why);
  REQUIRE(s.ok());
  REQUIRE_MESSAGE(f.reg.remote_state("c1", "c7", "docs", Action::accept, &why), why);
  auto all = f.reg.list();
  REQUIRE(all.ok());
  CHECK((*all)[0].receipts[0].state == State::accepted);
  CHECK(f.reg.exports()->size() == 1);
  REQUIRE(f.reg.remote_state("c1", "c7", "docs", Action::leave, &why));
  CHECK(f.reg.list()->at(0).receipts[0].state == State::left);
  CHECK(f.reg.exports()->empty());
  // Another container there, or another owner here: no such share.
  CHECK_FALSE(f.reg.remote_state("c1", "c8", "docs", Action::accept, &why).ok());
  CHECK_FALSE(f.reg.remote_state("c2", "c7", "docs", Action::accept, &why).ok());
  // A revoked share is exported no more.
  auto s2 = f.offer_out("more", "c7", "10.0.0.2", &why);
  REQUIRE(s2.ok());
  CHECK(f.reg.exports()->size() == 1);
  REQUIRE(f.reg.revoke("c1", "more", &why));
  CHECK(f.reg.exports()->empty());
}

TEST_CASE("receive: a share from another server is an offer with its url; accept, revoke by C@SERVER") {
  Fixture f;
  std::string why;
  auto s = f.receive("far", &why);
  REQUIRE_MESSAGE(s.ok(), why);
  auto rs = f.reg.shares_for("c2");
  REQUIRE(rs->size() == 1);
  CHECK((*rs)[0].state == State::offered);
  CHECK((*rs)[0].owner == "c9@10.0.0.1");
  CHECK((*rs)[0].url == "nfs://10.0.0.1/view/7?nfsport=2049");
  CHECK((*rs)[0].mode == Mode::ro);
  REQUIRE(f.reg.accept("c2", "far", &why));
  CHECK(f.reg.shares_for("c2")->at(0).state == State::accepted);
  // Not exported from here: it lives on the other server.
  CHECK(f.reg.exports()->empty());
  REQUIRE(f.reg.set_mode("c9@10.0.0.1", "far", Mode::rw, &why));
  CHECK(f.reg.shares_for("c2")->at(0).mode == Mode::rw);
  REQUIRE_MESSAGE(f.reg.revoke("c9@10.0.0.1", "far", &why), why);
  CHECK(f.reg.shares_for("c2")->empty());
  CHECK(f.reg.shares_for("c2", true)->at(0).state == State::revoked);
}

TEST_CASE("receive: refusals name what is wrong") {
  Fixture f;
  std::string why;
  CHECK_FALSE(f.receive("x", &why, "c9@10.0.0.9").ok());  // owner not on the peer
  CHECK(has(why, "owner must be C@10.0.0.1"));
  CHECK_FALSE(f.receive("x", &why, "c9@10.0.0.1", "nfs://10.0.0.9/x").ok());  // another server's url
  CHECK(has(why, "url must be nfs://10.0.0.1/"));
  CHECK_FALSE(f.receive("x", &why, "c9@10.0.0.1", "nfs://10.0.0.1/a b").ok());
  Inbound in;
  in.owner = "c9@10.0.0.1";
  in.peer = "10.0.0.1";
  in.url = "nfs://10.0.0.1/v/1";
  in.to_container = "nobody";
  in.name = "x";
  CHECK_FALSE(f.reg.receive(in, &why).ok());
  CHECK(has(why, "no such container nobody"));
  // The receiver's names stay unique: a local share of that name is a clash.
  REQUIRE(f.receive("dup", &why).ok());
  CHECK_FALSE(f.receive("dup", &why, "c9@10.0.0.1", "nfs://10.0.0.1/v/2").ok());
  CHECK(has(why, "name taken"));
}

TEST_CASE("container ids may not contain '@' (C@SERVER is a container elsewhere)") {
  Fixture f;
  std::string why;
  CHECK_FALSE(f.reg.add_container("c2@10.0.0.2", "", &why).ok());
  CHECK(has(why, "reserved"));
}

TEST_CASE("server.conf: defaults, keys, refusals") {
  TempPool pool;
  std::string why;
  auto d = read_server_conf(pool.path, &why);
  REQUIRE(d.ok());
  CHECK(d->exports == pool.path + "/nfs-exports.conf");
  CHECK(d->view == "/run/hoody/nfs/view");
  CHECK(d->address.empty());
  std::ofstream(pool.path + "/server.conf") << "# c\naddress = 10.0.0.1\nview = /v\nnfs_port = 12049\n"
                                              "mount_port = 12050\npeer_command = ssh {server} hoody-share\n";
  auto c = read_server_conf(pool.path, &why);
  REQUIRE_MESSAGE(c.ok(), why);
  CHECK(c->address == "10.0.0.1");
  CHECK(export_url(*c, 7) == "nfs://10.0.0.1/v/7?nfsport=12049&mountport=12050");
  std::ofstream(pool.path + "/server.conf") << "colour = blue\n";
  CHECK_FALSE(read_server_conf(pool.path, &why).ok());
  CHECK(has(why, "unknown key colour"));
  std::ofstream(pool.path + "/server.conf") << "view = \"/x\n";
  CHECK_FALSE(read_server_conf(pool.path, &why).ok());
}

TEST_CASE("render_exports: one EXPORT per share, the peer only, squashed, RO for a ro share") {
  std::vector<ExportSpec> e{{3, "/v/3", "10.0.0.2", true, 1000, 1000}, {4, "/v/4", "host-b", false, 0, 0}};
  auto t = render_exports(e);
  CHECK(has(t, "Export_Id = 3;"));
  CHECK(has(t, "Path = \"/v/3\";"));
  CHECK(has(t, "CLIENT { Clients = 10.0.0.2; Access_Type = RO; }"));
  CHECK(has(t, "CLIENT { Clients = host-b; Access_Type = RW; }"));
  CHECK(has(t, "Anonymous_Uid = 1000;"));
  CHECK(has(t, "Squash = All_Squash;"));
  // Nobody else: the export itself grants nothing.
  CHECK(has(t, "Access_Type = None;"));
  CHECK(has(t, "Protocols = 3;"));
  CHECK(render_exports({}).find("EXPORT") == std::string::npos);
}
