// The virtual namespace of hoody-snapfs, without a mount.
#include <doctest/doctest.h>
#include <sys/stat.h>

#include <nlohmann/json.hpp>

#include "../../../hoody-snapfs/vdir/vdir.hpp"
#include "hoody/errno_name.hpp"

using namespace hoody::snapfs;
using namespace hoody::snapfs::vdir;

TEST_CASE("virtual node ids never look like Inode* addresses") {
  for (uint64_t id : {kCtlDir, kRestore, kSnapshotsJson, kLog, kDiffDir, kSchedule, kFirstDiffId}) {
    CHECK(is_virtual(id));
    CHECK(node_mode(id) != 0);
  }
  int on_heap = 0;
  auto* p = new int(1);
  CHECK_FALSE(is_virtual(reinterpret_cast<uint64_t>(p)));
  CHECK_FALSE(is_virtual(reinterpret_cast<uint64_t>(&on_heap)));
  delete p;
  CHECK_FALSE(is_virtual(1));  // FUSE_ROOT_ID
  CHECK(is_diff_node(kFirstDiffId));
  CHECK_FALSE(is_diff_node(kDiffDir));
}

TEST_CASE("fixed children of .hoody") {
  CHECK(fixed_child(kCtlDir, "restore") == kRestore);
  CHECK(fixed_child(kCtlDir, "snapshots.json") == kSnapshotsJson);
  CHECK(fixed_child(kCtlDir, "log") == kLog);
  CHECK(fixed_child(kCtlDir, "diff") == kDiffDir);
  CHECK(fixed_child(kCtlDir, "nope") == 0);
  CHECK(fixed_child(kDiffDir, "restore") == 0);
  CHECK(fixed_child(kCtlDir, "schedule") == kSchedule);
  CHECK(fixed_entries(kCtlDir).size() == 5);
  CHECK(fixed_entries(kDiffDir).empty());
  CHECK(node_mode(kRestore) == (S_IFREG | 0222));
  CHECK(node_mode(kLog) == (S_IFREG | 0440));  // issue 7 item 6: not for everyone
  CHECK(node_mode(kSchedule) == (S_IFREG | 0666));
  CHECK(S_ISDIR(node_mode(kCtlDir)));
}

TEST_CASE("diff names") {
  auto d = parse_diff_name("a..b");
  REQUIRE(d);
  CHECK(d->from == "a");
  CHECK(d->to == "b");
  d = parse_diff_name("v1.0..@live");
  REQUIRE(d);
  CHECK(d->from == "v1.0");
  CHECK(d->to == "@live");
  d = parse_diff_name("a...b");  // "a." .. "b": B may not start with '.'
  REQUIRE(d);
  CHECK(d->from == "a.");
  CHECK(d->to == "b");
  CHECK_FALSE(parse_diff_name("ab"));
  CHECK_FALSE(parse_diff_name("..b"));
  CHECK_FALSE(parse_diff_name("a.."));
  CHECK_FALSE(parse_diff_name("a..b/c"));
  CHECK_FALSE(parse_diff_name("a..-b"));
}

TEST_CASE("diff table counts lookups like inodes") {
  DiffTable t;
  auto a = t.lookup("a..b");
  CHECK(t.lookup("a..b") == a);
  auto b = t.lookup("a..c");
  CHECK(a != b);
  CHECK(is_diff_node(a));
  CHECK(t.name_of(a) == std::optional<std::string>("a..b"));
  t.forget(a, 1);
  CHECK(t.name_of(a));
  t.forget(a, 1);
  CHECK_FALSE(t.name_of(a));
  CHECK(t.size() == 1);
  t.forget(b, 5);  // more than counted: gone, no underflow
  CHECK(t.size() == 0);
  CHECK(t.lookup("a..b") != a);  // ids are not reused
}

TEST_CASE("RFC 3339 formatting") {
  CHECK(format_rfc3339(0) == "1970-01-01T00:00:00Z");
  CHECK(format_rfc3339(1795000000) == "2026-11-18T11:06:40Z");
}

TEST_CASE("snapshots.json and the audit line are JSON") {
  Snapshot s;
  s.name = "pre-deploy";
  s.uuid = "0123";
  s.created = TimePoint{};
  s.creator = 1000;
  s.description = "a \"quoted\" \xff byte";
  s.subvolumes = {"databases", "storage"};
  auto j = nlohmann::json::parse(snapshots_json({s}));
  REQUIRE(j.size() == 1);
  CHECK(j[0]["name"] == "pre-deploy");
  CHECK(j[0]["created"] == "1970-01-01T00:00:00Z");
  CHECK(j[0]["creator"] == 1000);
  CHECK(j[0]["expires"].is_null());
  CHECK(j[0]["subvolumes"].size() == 2);
  s.expires = TimePoint(std::chrono::seconds(60));
  CHECK(nlohmann::json::parse(snapshots_json({s}))[0]["expires"] == "1970-01-01T00:01:00Z");
  CHECK(nlohmann::json::parse(snapshots_json({})).empty());

  AuditEntry e{TimePoint{}, 1000, 42, "create", "x\ny", audit_result(EPERM, "not allowed"), ""};
  auto line = audit_line(e);
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);  // one line, even with a newline in the name
  auto a = nlohmann::json::parse(line);
  CHECK(a["result"] == "EPERM");
  CHECK(a["uid"] == 1000);
  CHECK(a["pid"] == 42);
  CHECK(a["action"] == "create");
  CHECK(a["reason"] == "not allowed");
  CHECK_FALSE(a.contains("to"));
  CHECK(hoody::errno_name(0) == "ok");
  // As the store keeps results: "ok; detail" is shown as ok with a reason.
  a = nlohmann::json::parse(audit_line({TimePoint{}, 0, 1, "restore", "s", "ok; 2 holders", "pre"}));
  CHECK(a["result"] == "ok");
  CHECK(a["reason"] == "2 holders");
  CHECK(a["to"] == "pre");
  // Names are bytes, not necessarily UTF-8: what JSON cannot carry is replaced.
  auto bad = audit_line({TimePoint{}, 0, 42, "create", std::string("bad\xff", 4), "EINVAL: x"});
  CHECK(bad.find("\"name\":\"bad\xef\xbf\xbd\"") != std::string::npos);  // U+FFFD
  CHECK(nlohmann::json::parse(bad)["result"] == "EINVAL");
  CHECK(hoody::errno_name(EEXIST) == "EEXIST");
}

TEST_CASE("restore requests") {
  std::string why;
  CHECK(*parse_restore_request("snap1\n", &why) == "snap1");
  CHECK(*parse_restore_request("snap1", &why) == "snap1");
  CHECK(parse_restore_request("", &why).err() == EINVAL);
  CHECK(parse_restore_request("a/b\n", &why).err() == EINVAL);
  CHECK(why.find("'/'") != std::string::npos);
  CHECK(parse_restore_request(".hoody", &why).err() == EINVAL);
  // The live state is not a snapshot: EINVAL, as mkdir @live gives.
  CHECK(parse_restore_request("@live\n", &why).err() == EINVAL);
  CHECK(why.find("@live") != std::string::npos);
  // A name with ".." taken before that rule can still be restored.
  CHECK(*parse_restore_request("a..b\n", &why) == "a..b");
}

TEST_CASE("restore lines: NAME, or NAME if-idle") {
  std::string why;
  auto r = parse_restore_line("snap1\n", &why);
  REQUIRE(r);
  CHECK(r->name == "snap1");
  CHECK_FALSE(r->if_idle);
  r = parse_restore_line("snap1 if-idle\n", &why);
  REQUIRE(r);
  CHECK(r->name == "snap1");
  CHECK(r->if_idle);
  CHECK(parse_restore_line(" if-idle", &why).err() == EINVAL);
  CHECK(parse_restore_line("snap1 if-busy", &why).err() == EINVAL);
  CHECK(parse_restore_line("a/b if-idle", &why).err() == EINVAL);
}

TEST_CASE("snapshots.json: consistency, busy databases, nested subvolumes") {
  Snapshot s;
  s.name = "x";
  s.consistency = "crash";
  s.busy = {"databases/app.db"};
  s.nested = {"storage/docker"};
  auto j = nlohmann::json::parse(snapshots_json({s}));
  CHECK(j[0]["consistency"] == "crash");
  CHECK(j[0]["busy"] == nlohmann::json::array({"databases/app.db"}));
  CHECK(j[0]["nested_subvolumes"] == nlohmann::json::array({"storage/docker"}));
  s.consistency = "transaction";
  s.busy.clear();
  s.nested.clear();
  j = nlohmann::json::parse(snapshots_json({s}))[0];
  CHECK(j["consistency"] == "transaction");
  CHECK_FALSE(j.contains("busy"));
  CHECK_FALSE(j.contains("nested_subvolumes"));
}

TEST_CASE("access policy") {
  std::string why;
  auto p = parse_access("root:1000:1001", "0:2000", &why);
  REQUIRE(p);
  CHECK(p->uids == std::vector<uint32_t>{0, 1000, 1001});
  CHECK(p->allows(0, 0, {}));
  CHECK(p->allows(1000, 5, {}));
  CHECK(p->allows(5, 2000, {}));
  CHECK(p->allows(5, 5, {7, 2000}));
  CHECK_FALSE(p->allows(5, 5, {7}));
  auto empty = parse_access("", "", &why);
  REQUIRE(empty);
  CHECK(empty->allows(0, 0, {}));
  CHECK_FALSE(empty->allows(1000, 1000, {}));
  auto bad = parse_access("no-such-user-hoody", "", &why);
  CHECK(bad.err() == EINVAL);
  CHECK(why.find("no-such-user-hoody") != std::string::npos);
  CHECK(parse_access("", "no-such-group-hoody", &why).err() == EINVAL);
}
