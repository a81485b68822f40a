// hoody::snapfs::SnapshotStore on a real loop-mounted BTRFS.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <string>
#include <vector>

#include "../test_pool.hpp"
#include "hoody/test/guard.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/mountinfo.hpp"
#include "hoody/sys.hpp"
#include "store/crash.hpp"
#include "store/retention.hpp"
#include "store/snapshot_store.hpp"

using namespace hoody;
using namespace hoody::snapfs;
using hoody::test::Pool;
using hoody::test::sh;
using namespace std::chrono_literals;

namespace doctest {
template <> struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& v) {
    std::string s = "{";
    for (const auto& x : v) s += " \"" + x + "\"";
    return (s + " }").c_str();
  }
};
}  // namespace doctest

namespace {

const Caller kRoot{0, 1};

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A container directory POOL/containers/<id> with the subvolumes storage and
// databases, holding state "A".
struct Container {
  std::string path;
  UniqueFd fd;

  Container(const Pool& pool, const std::string& id) {
    sh("mkdir -p '" + pool.path() + "/containers'");
    path = pool.path() + "/containers/" + id;
    sh("mkdir '" + path + "'");
    auto dir = sys::open(path.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(dir.ok());
    fd = std::move(*dir);
    REQUIRE(btrfs::create_subvolume(fd.get(), "storage").ok());
    REQUIRE(btrfs::create_subvolume(fd.get(), "databases").ok());
    set_state("A");
  }

  // storage/file = S, storage/only-S exists, databases/db = S.
  void set_state(const std::string& s) {
    sh("cd '" + path + "' && rm -f storage/only-* && echo " + s + " > storage/file && echo " + s +
       " > storage/only-" + s + " && mkdir -p storage/dir && echo " + s +
       " > storage/dir/deep && echo " + s + " > databases/db");
  }

  std::string read(const std::string& rel) const {
    auto r = sys::read_file(fd.get(), rel.c_str());
    return r ? *r : "<" + r.error().message() + ">";
  }

  // "A" or "B" if the live state is consistently that one, else a description.
  std::string state() const {
    std::string s = read("storage/file");
    if (!s.empty() && s.back() == '\n') s.pop_back();
    std::string want = s + "\n";
    if (read("storage/dir/deep") != want || read("databases/db") != want ||
        read("storage/only-" + s) != want)
      return "mixed(" + s + "," + read("databases/db") + ")";
    return s;
  }

  std::unique_ptr<SnapshotStore> open() const {
    auto s = SnapshotStore::open(fd.get());
    REQUIRE_MESSAGE(s.ok(), "open store: ", s.error().message());
    return std::move(*s);
  }

  std::vector<std::string> store_entries() const {
    auto out = sh("ls -A '" + path + "/.snapshots'");
    std::vector<std::string> v;
    size_t p = 0;
    while (p < out.size()) {
      auto nl = out.find('\n', p);
      v.push_back(out.substr(p, nl == std::string::npos ? std::string::npos : nl - p));
      if (nl == std::string::npos) break;
      p = nl + 1;
    }
    return v;
  }
};

// The state "A"/"B" held by snapshot `name` (read through its directory).
std::string snapshot_state(SnapshotStore& st, const std::string& name) {
  auto fd = st.open_snapshot(name);
  if (!fd) return "<" + fd.error().message() + ">";
  auto r = sys::read_file(fd->get(), "storage/file");
  auto d = sys::read_file(fd->get(), "databases/db");
  if (!r || !d) return "<unreadable>";
  if (*r != *d) return "mixed";
  return r->substr(0, r->size() - 1);
}

bool is_rw_subvolume(int dirfd, const char* name) {
  auto fd = btrfs::open_dir(dirfd, name);
  if (!fd) return false;
  auto sv = btrfs::is_subvolume(fd->get());
  auto ro = btrfs::is_readonly(fd->get());
  return sv.ok() && *sv && ro.ok() && !*ro;
}

// Invariants after open()/recover(): no journal, no work dirs, every listed
// snapshot complete and read-only, every snapshot dir listed.
void check_store_consistent(const Container& c, SnapshotStore& st) {
  CHECK(*st.pending_operations() == 0);
  auto list = st.list();
  REQUIRE(list.ok());
  std::vector<std::string> uuids;
  for (auto& s : *list) {
    uuids.push_back(s.uuid);
    auto fd = st.open_snapshot(s.name);
    REQUIRE_MESSAGE(fd.ok(), "snapshot ", s.name);
    for (const char* sv : {"storage", "databases"}) {
      auto sfd = btrfs::open_dir(fd->get(), sv);
      if (sfd.err() == ENOENT && std::string(sv) == "databases") continue;  // deleted by a test
      REQUIRE_MESSAGE(sfd.ok(), s.name, "/", sv);
      CHECK(*btrfs::is_subvolume(sfd->get()));
      CHECK(*btrfs::is_readonly(sfd->get()));
    }
  }
  for (auto& e : c.store_entries()) {
    CAPTURE(e);
    if (e == "index.db" || e == "index.db-wal" || e == "index.db-shm" || e == "lock") continue;
    CHECK(e[0] != '.');  // no .staging-, .trash-, .restore- left
    CHECK(std::find(uuids.begin(), uuids.end(), e) != uuids.end());
  }
  CHECK(is_rw_subvolume(c.fd.get(), "storage"));
  CHECK(is_rw_subvolume(c.fd.get(), "databases"));
}

std::vector<std::string> names(const std::vector<Snapshot>& v) {
  std::vector<std::string> out;
  for (auto& s : v) out.push_back(s.name);
  return out;
}


// A server of the scope subvolumes that records what the store asks of it
// and what the store looked like at each call.
struct FakeQuiescer : Quiescer {
  const Container& c;
  SnapshotStore* st;  // for list() during the calls (nullptr: not looked at)
  bool serves;
  std::vector<std::string> calls;  // "quiesce B 0" = call, live state, snapshot count
  bool held = false;
  int quiesce_err = 0;             // fail the quiesce with this
  int replaced_err = 0;            // fail replaced() with this
  bool died = false;               // still_held(): the server exited since the quiesce
  std::vector<std::string> busy;   // reported busy by the quiesce
  std::function<void()> on_quiesce;
  std::vector<Holder> stale, users;

  FakeQuiescer(const Container& c, SnapshotStore* st, bool served) : c(c), st(st), serves(served) {}
  std::string snap(const char* what) {
    std::string s = std::string(what) + " " + c.state();
    if (st) s += " " + std::to_string(st->list()->size());
    return s;
  }
  Result<QuiesceResult> quiesce(const std::vector<std::string>& subvols, std::string* why) override {
    calls.push_back(snap("quiesce"));
    if (on_quiesce) on_quiesce();
    if (quiesce_err) {
      *why = "hoody-dbfs serving /x/databases did not answer quiesce within 2000 ms";
      return fail(quiesce_err);
    }
    held = true;
    QuiesceResult r;
    if (serves) {
      r.served = {"databases"};
      r.databases = 3;
    }
    r.busy = busy;
    (void)subvols;
    return r;
  }
  // (Not in `calls`: asked once per restore, it would change every sequence.)
  Status still_held(std::string* why) override {
    if (!died) return {};
    *why = "hoody-dbfs serving /x/databases exited while it held the databases";
    return fail(ECONNRESET);
  }
  void resume() override {
    calls.push_back(snap("resume"));
    held = false;
  }
  Result<std::vector<Holder>> replaced(const std::string& sv, std::string* why) override {
    calls.push_back(snap(("replaced " + sv).c_str()));
    if (replaced_err) {
      *why = "hoody-dbfs serving /x/" + sv + " did not answer source-replaced within 10000 ms";
      return fail(replaced_err);
    }
    return stale;
  }
  Result<std::vector<Holder>> holders(const std::vector<std::string>&, std::string*) override {
    calls.push_back("holders");
    return users;
  }
  std::vector<pid_t> server_pids() const override { return {}; }
};

}  // namespace

TEST_CASE("open: .snapshots 0700, index.db in WAL mode, one instance, BTRFS only") {
  Pool pool;
  Container c(pool, "c1");
  {
    auto st = c.open();
    struct stat sb;
    REQUIRE(::fstatat(c.fd.get(), ".snapshots", &sb, 0) == 0);
    CHECK((sb.st_mode & 07777) == 0700);
    CHECK(SnapshotStore::open(c.fd.get()).err() == EBUSY);
    CHECK(*st->scope() == std::vector<std::string>{"databases", "storage"});
    CHECK(st->list()->empty());
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2((c.path + "/.snapshots/index.db").c_str(), &db, SQLITE_OPEN_READONLY,
                            nullptr) == SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(q) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(q, 0))) == "wal");
    sqlite3_finalize(q);
    REQUIRE(sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name",
                               -1, &q, nullptr) == SQLITE_OK);
    std::vector<std::string> tables;
    while (sqlite3_step(q) == SQLITE_ROW)
      tables.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(q, 0)));
    sqlite3_finalize(q);
    sqlite3_close(db);
    CHECK(tables == std::vector<std::string>{"audit", "journal", "schedule", "snapshots"});
  }
  // Closed: it opens again, and a loose mode is tightened.
  REQUIRE(::fchmodat(c.fd.get(), ".snapshots", 0755, 0) == 0);
  {
    auto st = c.open();
    struct stat sb;
    REQUIRE(::fstatat(c.fd.get(), ".snapshots", &sb, 0) == 0);
    CHECK((sb.st_mode & 07777) == 0700);
  }
  // Not BTRFS.
  auto proc = sys::open("/dev", O_RDONLY | O_DIRECTORY);
  REQUIRE(proc.ok());
  CHECK(SnapshotStore::open(proc->get()).err() == EMEDIUMTYPE);
}

TEST_CASE("create, list, get, rename, remove and their errors") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();

  auto a = st->create("a", Caller{1000, 42}, {std::nullopt, "first"});
  REQUIRE(a.ok());
  CHECK(a->name == "a");
  CHECK(a->uuid.size() == 36);
  CHECK(a->creator == 1000);
  CHECK(a->type == "filesystem");
  CHECK(a->description == "first");
  CHECK_FALSE(a->expires.has_value());
  CHECK(snapshot_state(*st, "a") == "A");
  c.set_state("B");
  CHECK(snapshot_state(*st, "a") == "A");  // a snapshot does not follow the live state
  {
    auto fd = st->open_snapshot("a");
    REQUIRE(fd.ok());
    CHECK(sys::openat(fd->get(), "storage/new", O_CREAT | O_WRONLY, 0644).err() == EROFS);
    // The snapshot directory is the uuid.
    CHECK(*btrfs::is_subvolume(btrfs::open_dir(fd->get(), "storage")->get()));
  }
  CHECK(*st->get("a") == *a);

  SUBCASE("errors") {
    CHECK(st->create("a", kRoot).err() == EEXIST);
    CHECK(st->create("x/y", kRoot).err() == EINVAL);
    CHECK(st->create(".hidden", kRoot).err() == EINVAL);
    CHECK(st->create("-x", kRoot).err() == EINVAL);
    CHECK(st->create("", kRoot).err() == EINVAL);
    CHECK(st->create(std::string(256, 'n'), kRoot).err() == ENAMETOOLONG);
    CHECK(st->create("d", kRoot, {std::nullopt, std::string(kMaxDescriptionBytes + 1, 'x')}).err() ==
          E2BIG);
    CHECK(st->get("nope").err() == ENOENT);
    CHECK(st->remove("nope", kRoot).err() == ENOENT);
    CHECK(st->rename("nope", "b", kRoot).err() == ENOENT);
    CHECK(st->rename("a", "b/c", kRoot).err() == EINVAL);
    CHECK(st->open_snapshot("nope").err() == ENOENT);
    CHECK(st->restore("nope", kRoot).err() == ENOENT);
    CHECK(st->set_expires("nope", std::nullopt, kRoot).err() == ENOENT);
    CHECK(st->set_description("nope", "x", kRoot).err() == ENOENT);
    CHECK(names(*st->list()) == std::vector<std::string>{"a"});
    check_store_consistent(c, *st);
  }

  SUBCASE("rename is index-only and refuses a taken name") {
    REQUIRE(st->create("b", kRoot).ok());
    CHECK(snapshot_state(*st, "b") == "B");
    CHECK(st->rename("a", "b", kRoot).err() == EEXIST);
    CHECK(st->rename("a", "a", kRoot).ok());
    REQUIRE(st->rename("a", "renamed", kRoot).ok());
    CHECK(st->get("a").err() == ENOENT);
    CHECK(st->get("renamed")->uuid == a->uuid);
    CHECK(snapshot_state(*st, "renamed") == "A");
    CHECK(names(*st->list()) == std::vector<std::string>{"renamed", "b"});
    REQUIRE(st->create("a", kRoot).ok());  // the old name is free again
    check_store_consistent(c, *st);
  }

  SUBCASE("remove deletes the subvolumes") {
    REQUIRE(st->remove("a", kRoot).ok());
    CHECK(st->get("a").err() == ENOENT);
    CHECK(st->list()->empty());
    CHECK(c.store_entries() == std::vector<std::string>{"index.db", "index.db-shm", "index.db-wal",
                                                        "lock"});
    REQUIRE(st->create("a", kRoot).ok());  // and the name can be taken again
    CHECK(snapshot_state(*st, "a") == "B");
    check_store_consistent(c, *st);
  }

  SUBCASE("the audit log records who did what and how it went") {
    CHECK(st->create("x/y", Caller{7, 8}).err() == EINVAL);
    REQUIRE(st->rename("a", "z", kRoot).ok());
    auto log = st->audit_log();
    REQUIRE(log.ok());
    REQUIRE(log->size() == 3);
    CHECK((*log)[0].action == "create");
    CHECK((*log)[0].uid == 1000);
    CHECK((*log)[0].pid == 42);
    CHECK((*log)[0].result == "ok");
    CHECK((*log)[1].uid == 7);
    CHECK((*log)[1].name == "x/y");
    CHECK((*log)[1].result.rfind("EINVAL: snapshot \"x/y\": name may not contain '/'", 0) == 0);
    CHECK((*log)[2].action == "rename");
    CHECK((*log)[2].name == "a");
    CHECK((*log)[2].target == "z");
    CHECK(st->audit_log(1)->size() == 1);
  }

  SUBCASE("the index survives a reopen") {
    st.reset();
    st = c.open();
    CHECK(*st->get("a") == *a);
  }
}

TEST_CASE("metadata, expiry and pruning") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  const auto now = Clock::now();
  using std::chrono::hours;
  REQUIRE(st->create("old", kRoot, {now - hours(1), ""}).ok());
  REQUIRE(st->create("later", kRoot, {now + hours(1), ""}).ok());
  REQUIRE(st->create("never", kRoot).ok());
  REQUIRE(st->create("edge", kRoot).ok());
  REQUIRE(st->set_expires("edge", now, kRoot).ok());
  REQUIRE(st->set_description("never", "keep me", kRoot).ok());
  CHECK(st->get("never")->description == "keep me");
  CHECK(st->set_description("never", std::string(kMaxDescriptionBytes + 1, 'x'), kRoot).err() == E2BIG);
  // Expiry round-trips at nanosecond precision.
  CHECK(*st->get("edge")->expires == now);

  auto pruned = st->prune_expired(now, kRoot);
  REQUIRE(pruned.ok());
  CHECK(*pruned == std::vector<std::string>{"old", "edge"});
  CHECK(names(*st->list()) == std::vector<std::string>{"later", "never"});
  REQUIRE(st->set_expires("later", std::nullopt, kRoot).ok());
  CHECK(st->prune_expired(now + hours(48), kRoot)->empty());
  // A filesystem snapshot may be marked sync (hoody-snap sync through a
  // mount), once; no other type changes.
  REQUIRE(st->set_type_sync("never", kRoot).ok());
  CHECK(st->get("never")->type == "sync");
  CHECK(st->set_type_sync("never", kRoot).err() == EPERM);
  CHECK(st->set_type_sync("nope", kRoot).err() == ENOENT);
  check_store_consistent(c, *st);
}

TEST_CASE("restore swaps the live subvolumes for the snapshot's") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  REQUIRE(btrfs::create_subvolume(c.fd.get(), "cache").ok());  // not in s1
  sh("echo c > '" + c.path + "/cache/x'");
  CHECK(*st->scope() == std::vector<std::string>{"cache", "databases", "storage"});
  auto before = btrfs::info(btrfs::open_dir(c.fd.get(), "storage")->get());

  const auto t_before = Clock::now();
  auto safety = st->restore("s1", Caller{0, 99});
  REQUIRE(safety.ok());
  CHECK(safety->rfind("pre-restore-", 0) == 0);
  CHECK(safety->size() == std::string("pre-restore-20261126T145623Z").size());

  CHECK(c.state() == "A");
  CHECK(c.read("storage/only-B").rfind("<", 0) == 0);  // gone
  CHECK(*st->scope() == std::vector<std::string>{"databases", "storage"});
  CHECK(is_rw_subvolume(c.fd.get(), "storage"));
  CHECK(is_rw_subvolume(c.fd.get(), "databases"));
  auto after = btrfs::info(btrfs::open_dir(c.fd.get(), "storage")->get());
  CHECK(after->uuid != before->uuid);
  sh("echo writable > '" + c.path + "/storage/w'");

  // The safety snapshot holds the state before, expires in 7 days.
  auto s = st->get(*safety);
  REQUIRE(s.ok());
  CHECK(snapshot_state(*st, *safety) == "B");
  REQUIRE(s->expires.has_value());
  auto keep = std::chrono::duration_cast<std::chrono::seconds>(*s->expires - t_before).count();
  CHECK(keep >= 7 * 86400 - 5);
  CHECK(keep <= 7 * 86400 + 5);
  {
    auto fd = st->open_snapshot(*safety);
    CHECK(*sys::read_file(fd->get(), "cache/x") == "c\n");  // the extra subvolume is kept there
  }
  CHECK(snapshot_state(*st, "s1") == "A");  // the target is untouched
  check_store_consistent(c, *st);

  // Restore the safety snapshot: back to B, with cache.
  auto safety2 = st->restore(*safety, kRoot);
  REQUIRE(safety2.ok());
  CHECK(*safety2 != *safety);  // a second safety snapshot with its own name
  CHECK(c.state() == "B");
  CHECK(c.read("cache/x") == "c\n");
  CHECK(*st->scope() == std::vector<std::string>{"cache", "databases", "storage"});

  // A scope subvolume deleted since the snapshot comes back.
  sh("btrfs -q subvolume delete '" + c.path + "/databases'");
  CHECK(*st->scope() == std::vector<std::string>{"cache", "storage"});
  REQUIRE(st->restore("s1", kRoot).ok());
  CHECK(c.state() == "A");
  CHECK(*st->scope() == std::vector<std::string>{"databases", "storage"});
  check_store_consistent(c, *st);

  auto log = st->audit_log();
  REQUIRE(log.ok());
  CHECK(std::count_if(log->begin(), log->end(), [](auto& e) {
          return e.action == "restore" && e.result.rfind("ok", 0) == 0;
        }) == 3);
}

TEST_CASE("nested subvolumes: not captured, and a restore that would lose them is refused") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(btrfs::create_subvolume(c.fd.get(), "storage/../storage/inner").err() == EINVAL);
  {
    auto storage = btrfs::open_dir(c.fd.get(), "storage");
    REQUIRE(btrfs::create_subvolume(storage->get(), "inner").ok());
  }
  sh("echo precious > '" + c.path + "/storage/inner/data'");
  REQUIRE(st->create("s1", kRoot).ok());  // allowed; the log warns
  {
    auto fd = st->open_snapshot("s1");
    struct stat sb;
    REQUIRE(::fstatat(fd->get(), "storage/inner", &sb, 0) == 0);
    CHECK(sb.st_ino != btrfs::kSubvolumeRootIno);  // an empty stub
    CHECK(sys::read_file(fd->get(), "storage/inner/data").err() == ENOENT);
  }
  CHECK(st->restore("s1", kRoot).err() == ENOTSUP);
  {
    RestoreReport rep;
    CHECK(st->restore("s1", kRoot, RestoreOptions{}, rep).err() == ENOTSUP);
    CHECK_MESSAGE(rep.error.find("nested subvolume storage/inner") != std::string::npos, rep.error);
    CHECK(rep.safety.empty());
  }
  // The snapshot says what it lacks.
  CHECK(st->get("s1")->nested == std::vector<std::string>{"storage/inner"});
  CHECK(c.read("storage/inner/data") == "precious\n");
  CHECK(names(*st->list()) == std::vector<std::string>{"s1"});  // no safety snapshot either
  auto log = st->audit_log(1);
  REQUIRE(log.ok());
  CHECK(log->back().result.find("nested subvolume storage/inner") != std::string::npos);
  // Moved out of the scope, the restore goes ahead.
  REQUIRE(btrfs::delete_subvolume(btrfs::open_dir(c.fd.get(), "storage")->get(), "inner").ok());
  CHECK(st->restore("s1", kRoot).ok());
  check_store_consistent(c, *st);
}

TEST_CASE("restore re-attaches bind mounts of the live subvolumes (as /hoody/storage is)") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  const std::string bind = pool.path() + "/bind";
  const std::string sub = pool.path() + "/sub";
  // Registered with the guard, which unmounts them if this test dies.
  auto bind_id = hoody::test::register_resource(hoody::test::Resource::mount, bind);
  auto sub_id = hoody::test::register_resource(hoody::test::Resource::mount, sub);
  sh("mkdir '" + bind + "' '" + sub + "' && mount --bind '" + c.path + "/storage' '" + bind +
     "' && mount --bind -o ro,nosuid '" + c.path + "/storage/dir' '" + sub + "'");
  struct Unmount {
    std::string path;
    std::uint64_t id;
    ~Unmount() {
      hoody::test::run({"umount", "-l", path});
      hoody::test::release(id);
    }
  } u1{bind, bind_id}, u2{sub, sub_id};
  REQUIRE(*sys::read_file(AT_FDCWD, (bind + "/file").c_str()) == "B\n");

  REQUIRE(st->restore("s1", kRoot).ok());
  CHECK(c.state() == "A");
  // The mounts now show the restored tree, the sub-directory one at the same place.
  CHECK(*sys::read_file(AT_FDCWD, (bind + "/file").c_str()) == "A\n");
  CHECK(*sys::read_file(AT_FDCWD, (sub + "/deep").c_str()) == "A\n");
  // ... with their flags, and writes through the writable one land in SOURCE.
  std::string opts;
  auto mounts = mountinfo::read();
  REQUIRE(mounts);
  for (auto& m : *mounts)
    if (m.mount_point == sub) opts = m.options;
  CHECK_MESSAGE(mountinfo::has_option(opts, "ro"), opts);
  CHECK_MESSAGE(mountinfo::has_option(opts, "nosuid"), opts);
  sh("echo C > '" + bind + "/written-after'");
  CHECK(c.read("storage/written-after") == "C\n");
  // Nothing holds the old subvolumes: they are gone.
  CHECK(*st->pending_operations() == 0);
  check_store_consistent(c, *st);
}

TEST_CASE("diff between two snapshots, per subvolume") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  sh("mv '" + c.path + "/storage/dir' '" + c.path + "/storage/dir2'");
  REQUIRE(st->create("s2", kRoot).ok());
  auto d = st->diff("s1", "s2");
  REQUIRE(d.ok());
  std::vector<std::string> lines;
  for (auto& ch : *d) lines.push_back(send::format(ch));
  CHECK(lines == std::vector<std::string>{"M databases/db", "R storage/dir -> storage/dir2",
                                          "M storage/dir2/deep", "M storage/file",
                                          "- storage/only-A", "+ storage/only-B"});
  CHECK(st->diff("s1", "nope").err() == ENOENT);
  CHECK(st->diff("s2", "s2")->empty());

  // Against the live state, through temporary snapshots that do not stay.
  sh("cd '" + c.path + "' && echo x > databases/new && rm storage/file");
  auto live = st->diff("s2", kLive);
  REQUIRE(live.ok());
  lines.clear();
  for (auto& ch : *live) lines.push_back(send::format(ch));
  CHECK(lines == std::vector<std::string>{"+ databases/new", "- storage/file"});
  auto back = st->diff(kLive, "s2");
  REQUIRE(back.ok());
  lines.clear();
  for (auto& ch : *back) lines.push_back(send::format(ch));
  CHECK(lines == std::vector<std::string>{"- databases/new", "+ storage/file"});
  check_store_consistent(c, *st);
  // "@live" is reserved.
  CHECK(st->create("@live", kRoot).err() == EINVAL);
  CHECK(st->rename("s1", "@live", kRoot).err() == EINVAL);
  CHECK(st->create("@other", kRoot).ok());
}

TEST_CASE("list() is not held up by a create that flushes dirty data") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  sh("dd if=/dev/zero of='" + c.path + "/storage/dirty' bs=1M count=300 status=none");  // no sync
  std::atomic<bool> done{false};
  double t_create = 0;
  std::thread creator([&] {
    auto t0 = std::chrono::steady_clock::now();
    CHECK(st->create("flush", kRoot).ok());
    t_create = ms_since(t0);
    done = true;
  });
  double worst = 0;
  int calls = 0;
  while (!done) {
    auto t0 = std::chrono::steady_clock::now();
    CHECK(st->list().ok());
    worst = std::max(worst, ms_since(t0));
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  creator.join();
  MESSAGE("create with 300 MiB dirty: ", t_create, " ms; ", calls,
          " list() calls meanwhile, the slowest ", worst, " ms");
  CHECK(calls > 1);
  CHECK(worst < std::max(100.0, t_create / 4));
  CHECK(st->get("flush").ok());
}

TEST_CASE("concurrent operations from several threads keep the store consistent") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  constexpr int kThreads = 4, kRounds = 8;
  std::atomic<int> created{0}, removed{0}, renamed{0}, collisions{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        std::string mine = "t" + std::to_string(t) + "-" + std::to_string(i);
        // Everyone also fights over one shared name.
        auto shared = st->create("shared-" + std::to_string(i), Caller{0, t});
        if (shared) ++created;
        else if (shared.err() == EEXIST) ++collisions;
        else FAIL_CHECK("create shared: ", shared.error().message());
        if (st->create(mine, Caller{0, t})) ++created;
        if (i % 2 == 0 && st->rename(mine, mine + "-r", Caller{0, t})) ++renamed;
        if (i % 3 == 0 && st->remove(i % 2 == 0 ? mine + "-r" : mine, Caller{0, t})) ++removed;
        CHECK(st->list().ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(collisions == (kThreads - 1) * kRounds);
  auto list = st->list();
  REQUIRE(list.ok());
  CHECK(static_cast<int>(list->size()) == created - removed);
  CHECK(renamed == kThreads * (kRounds / 2));
  check_store_consistent(c, *st);
  MESSAGE(created.load(), " created, ", removed.load(), " removed, ", renamed.load(),
          " renamed, ", collisions.load(), " EEXIST on a shared name");
}

TEST_CASE("restore time does not grow with the data size") {
  Pool pool;
  struct Times {
    double create, swap, deferred_delete, inline_restore;
  };
  auto run = [&](const std::string& id, int mib) {
    Container c(pool, id);
    sh("dd if=/dev/zero of='" + c.path + "/storage/big' bs=1M count=" + std::to_string(mib) +
       " status=none && sync");
    auto st = c.open();
    Times t{};
    auto t0 = std::chrono::steady_clock::now();
    REQUIRE(st->create("s", kRoot).ok());
    t.create = ms_since(t0);
    // The same small change in each run: what varies is the total size.
    auto change = [&] {
      sh("dd if=/dev/zero of='" + c.path + "/storage/big2' bs=1M count=1 status=none && sync");
    };
    change();
    t0 = std::chrono::steady_clock::now();
    REQUIRE(st->restore("s", kRoot, /*delete_old_now=*/false).ok());
    t.swap = ms_since(t0);
    CHECK(c.read("storage/big2").rfind("<", 0) == 0);
    CHECK(*st->pending_operations() == 1);  // the deletion is left to recover()
    t0 = std::chrono::steady_clock::now();
    REQUIRE(st->recover().ok());
    t.deferred_delete = ms_since(t0);
    check_store_consistent(c, *st);
    change();
    t0 = std::chrono::steady_clock::now();
    REQUIRE(st->restore("s", kRoot).ok());
    t.inline_restore = ms_since(t0);
    MESSAGE(mib, " MiB: create ", t.create, " ms; restore up to the committed swap ", t.swap,
            " ms; deferred deletion of the old live ", t.deferred_delete,
            " ms; restore with inline deletion ", t.inline_restore, " ms");
    return t;
  };
  Times small = run("small", 8);
  Times large = run("large", 384);
  // Generous bound for a shared 2-core machine: a copy of 384 MiB would take seconds.
  CHECK(large.swap < std::max(4 * small.swap, small.swap + 250.0));
}

TEST_CASE("restore quiesces, takes the safety snapshot, exchanges, has the servers follow, resumes") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  FakeQuiescer q(c, st.get(), true);
  q.stale = {{4242, "python3", "databases/app.db"}};
  RestoreOptions o;
  o.quiescer = &q;
  RestoreReport rep;
  REQUIRE(st->restore("s1", kRoot, o, rep).ok());
  // quiesce with the live state B and only s1; the safety snapshot (2nd) is
  // there before any server is told; resume after the servers followed.
  CHECK(q.calls == std::vector<std::string>{"quiesce B 1", "replaced databases A 2",
                                            "replaced storage A 2", "resume A 2"});
  CHECK_FALSE(q.held);
  CHECK(rep.safety.rfind("pre-restore-", 0) == 0);
  CHECK(rep.consistency == "transaction");
  CHECK(st->get(rep.safety)->consistency == "transaction");
  CHECK(snapshot_state(*st, rep.safety) == "B");
  CHECK(rep.holders == std::vector<Holder>{{4242, "python3", "databases/app.db"}});
  auto log = st->audit_log(1);
  CHECK_MESSAGE(log->back().result.find("4242 python3 (databases/app.db)") != std::string::npos,
                log->back().result);
  check_store_consistent(c, *st);
}

TEST_CASE("restore: a server that does not answer the quiesce -> nothing swapped, ETIMEDOUT") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  FakeQuiescer q(c, st.get(), true);
  q.quiesce_err = ETIMEDOUT;
  RestoreOptions o;
  o.quiescer = &q;
  RestoreReport rep;
  CHECK(st->restore("s1", kRoot, o, rep).err() == ETIMEDOUT);
  CHECK(c.state() == "B");
  CHECK(rep.safety.empty());
  CHECK_MESSAGE(rep.error.find("/x/databases did not answer") != std::string::npos, rep.error);
  CHECK(q.calls == std::vector<std::string>{"quiesce B 1", "resume B 1"});
  CHECK(names(*st->list()) == std::vector<std::string>{"s1"});
  auto log = st->audit_log(1);
  CHECK(log->back().result.rfind("ETIMEDOUT: hoody-dbfs serving /x/databases", 0) == 0);
  check_store_consistent(c, *st);
}

TEST_CASE("restore: a server that exited after the quiesce -> undone before the exchange, ECONNRESET") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  FakeQuiescer q(c, st.get(), true);
  q.on_quiesce = [&] { q.died = true; };
  RestoreOptions o;
  o.quiescer = &q;
  RestoreReport rep;
  CHECK(st->restore("s1", kRoot, o, rep).err() == ECONNRESET);
  CHECK(c.state() == "B");  // the old state
  CHECK_MESSAGE(rep.error.find("/x/databases exited") != std::string::npos, rep.error);
  // Quiesced, never told of an exchange (there was none), let go.
  CHECK(q.calls == std::vector<std::string>{"quiesce B 1", "resume B 2"});
  CHECK_FALSE(q.held);
  auto log = st->audit_log(1);
  CHECK(log->back().result.rfind("ECONNRESET: hoody-dbfs serving /x/databases exited", 0) == 0);
  CHECK(*st->pending_operations() == 0);
  check_store_consistent(c, *st);
  // The server is back: the restore goes through.
  q.died = false;
  q.on_quiesce = nullptr;
  CHECK(st->restore("s1", kRoot, o, rep).ok());
  CHECK(c.state() == "A");
}

TEST_CASE("restore: a failure after the quiesce undoes the swap and resumes") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  FakeQuiescer q(c, st.get(), true);
  // The exchange fails: SOURCE is made immutable while the databases are held.
  q.on_quiesce = [&] { sh("chattr +i '" + c.path + "'"); };
  struct Mutable {
    std::string p;
    ~Mutable() { hoody::test::run({"chattr", "-i", p}); }
  } unlock{c.path};
  RestoreOptions o;
  o.quiescer = &q;
  RestoreReport rep;
  CHECK(st->restore("s1", kRoot, o, rep).err() == EPERM);
  CHECK_FALSE(q.held);
  CHECK(q.calls.back() == "resume B 2");  // the safety snapshot stays
  CHECK(c.state() == "B");
  CHECK_MESSAGE(rep.error.find("exchange") != std::string::npos, rep.error);
  sh("chattr -i '" + c.path + "'");
  check_store_consistent(c, *st);
  REQUIRE(st->restore("s1", kRoot).ok());
  CHECK(c.state() == "A");
}

TEST_CASE("restore: a server that cannot follow -> EIO, the old subvolumes are kept") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  FakeQuiescer q(c, st.get(), true);
  q.replaced_err = ETIMEDOUT;
  RestoreOptions o;
  o.quiescer = &q;
  RestoreReport rep;
  CHECK(st->restore("s1", kRoot, o, rep).err() == EIO);
  CHECK_FALSE(q.held);
  CHECK(c.state() == "A");  // committed
  CHECK_MESSAGE(rep.error.find("did not answer source-replaced") != std::string::npos, rep.error);
  CHECK(*st->pending_operations() == 1);  // the old live subvolumes wait for recover()
  REQUIRE(st->recover().ok());
  check_store_consistent(c, *st);
}

TEST_CASE("restore lists the processes still in the old state; if_idle refuses while in use") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  REQUIRE(st->create("s1", kRoot).ok());
  c.set_state("B");
  hoody::test::Pipe ready, done;
  // One process with a file open in storage, one with its cwd in databases.
  std::string file = c.path + "/storage/file", dir = c.path + "/databases";
  hoody::test::Child reader([&] {
    int fd = ::open(file.c_str(), O_RDONLY);
    if (fd < 0) return 1;
    ready.signal();
    done.wait_signal(30s);
    return 0;
  });
  hoody::test::Child sitter([&] {
    if (::chdir(dir.c_str()) < 0) return 1;
    ready.signal();
    done.wait_signal(30s);
    return 0;
  });
  REQUIRE(ready.wait_signal());
  REQUIRE(ready.wait_signal());

  FakeQuiescer q(c, st.get(), true);
  q.users = {{777, "sqlite3", "databases/app.db"}};
  RestoreOptions o;
  o.quiescer = &q;
  o.if_idle = true;
  RestoreReport rep;
  CHECK(st->restore("s1", kRoot, o, rep).err() == EBUSY);
  CHECK(c.state() == "B");
  CHECK(rep.safety.empty());
  auto pids = [](const std::vector<Holder>& v) {
    std::vector<pid_t> out;
    for (auto& h : v) out.push_back(h.pid);
    return out;
  };
  auto has = [&](const std::vector<Holder>& v, pid_t p) {
    auto x = pids(v);
    return std::find(x.begin(), x.end(), p) != x.end();
  };
  CHECK(has(rep.holders, reader.pid()));
  CHECK(has(rep.holders, sitter.pid()));
  CHECK(has(rep.holders, 777));  // from the server
  CHECK(q.calls == std::vector<std::string>{"holders"});  // nothing quiesced
  CHECK_MESSAGE(rep.error.find("in use by") != std::string::npos, rep.error);

  // Without if_idle: restored, and they are named as the ones to restart.
  o.if_idle = false;
  q.users.clear();
  RestoreReport rep2;
  REQUIRE(st->restore("s1", kRoot, o, rep2).ok());
  CHECK(c.state() == "A");
  CHECK(has(rep2.holders, reader.pid()));
  CHECK(has(rep2.holders, sitter.pid()));
  for (auto& h : rep2.holders)
    if (h.pid == sitter.pid()) CHECK_MESSAGE(h.path.rfind("cwd ", 0) == 0, h.path);
  done.signal();
  done.signal();
  reader.wait();
  sitter.wait();
  // Nobody left: an if_idle restore goes ahead.
  o.if_idle = true;
  RestoreReport rep3;
  CHECK(st->restore("s1", kRoot, o, rep3).ok());
  CHECK(rep3.holders.empty());
  REQUIRE(st->recover().ok());
}

TEST_CASE("create quiesces while the subvolumes are snapshotted; consistency in the metadata") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  // No server: nothing was quiesced.
  REQUIRE(st->create("plain", kRoot).ok());
  CHECK(st->get("plain")->consistency == "crash");

  FakeQuiescer q(c, st.get(), true);
  CreateOptions o;
  o.quiescer = &q;
  REQUIRE(st->create("held", kRoot, o).ok());
  CHECK(q.calls == std::vector<std::string>{"quiesce A 1", "resume A 1"});  // before the row
  CHECK(st->get("held")->consistency == "transaction");
  CHECK(st->get("held")->busy.empty());

  q.calls.clear();
  q.busy = {"databases/app.db"};
  REQUIRE(st->create("busy", kRoot, o).ok());
  CHECK(st->get("busy")->consistency == "crash");
  CHECK(st->get("busy")->busy == std::vector<std::string>{"databases/app.db"});
  auto log = st->audit_log(1);
  CHECK_MESSAGE(log->back().result.find("crash-consistent") != std::string::npos, log->back().result);

  // A server that does not answer: the snapshot is taken all the same, crash-consistent.
  q.busy.clear();
  q.quiesce_err = ETIMEDOUT;
  REQUIRE(st->create("timeout", kRoot, o).ok());
  CHECK_FALSE(q.held);
  auto t = st->get("timeout");
  CHECK(t->consistency == "crash");
  REQUIRE(t->busy.size() == 1);
  CHECK(t->busy[0].find("did not answer") != std::string::npos);
  // Reopened, the metadata are still there.
  st.reset();
  st = c.open();
  CHECK(st->get("held")->consistency == "transaction");
  CHECK(st->get("busy")->busy == std::vector<std::string>{"databases/app.db"});
}

TEST_CASE("an index.db from before the consistency columns is migrated") {
  Pool pool;
  Container c(pool, "c1");
  { auto st = c.open(); REQUIRE(st->create("old", kRoot).ok()); }
  sh("cd '" + c.path + "/.snapshots' && sqlite3 index.db 'ALTER TABLE snapshots DROP COLUMN consistency; "
     "ALTER TABLE snapshots DROP COLUMN busy; ALTER TABLE snapshots DROP COLUMN nested;'");
  auto st = c.open();
  CHECK(st->get("old")->consistency == "crash");
  CHECK(st->create("new", kRoot).ok());
}

TEST_CASE("a crash at every step leaves the old or the new state") {
  Pool pool;
  int n = 0;
  for (const auto& point : SnapshotStore::crash_points()) {
    CAPTURE(point);
    const std::string op = point.substr(0, point.find(':'));
    Container c(pool, "crash" + std::to_string(n++));
    {
      auto st = c.open();
      REQUIRE(st->create("base", kRoot).ok());   // state A
      REQUIRE(st->create("victim", kRoot).ok());
    }
    c.set_state("B");

    if (op == "recover") {
      // First a restore killed after its first exchange, then recover() killed
      // while it finishes that restore.
      auto first = hoody::test::run_child([&] {
        ::setenv(kCrashEnv, "restore:exchange-1", 1);
        auto st = SnapshotStore::open(c.fd.get());
        return st && (*st)->restore("base", kRoot) ? 0 : 11;
      });
      REQUIRE_MESSAGE(first.signal == SIGKILL, "first child: ", first.describe());
      CHECK(c.state().rfind("mixed", 0) == 0);  // one subvolume swapped
    }
    auto child = hoody::test::run_child([&] {
      ::setenv(kCrashEnv, point.c_str(), 1);
      auto st = SnapshotStore::open(c.fd.get());
      if (!st) return 10;
      bool ok = true;
      if (op == "create") ok = (*st)->create("new", kRoot).ok();
      if (op == "remove") ok = (*st)->remove("victim", kRoot).ok();
      if (op == "restore") {
        // With a server to quiesce, so that the quiesce steps are the real ones.
        FakeQuiescer q(c, nullptr, /*served=*/true);
        RestoreOptions o;
        o.quiescer = &q;
        RestoreReport rep;
        ok = (*st)->restore("base", kRoot, o, rep).ok();
      }
      return ok ? 0 : 11;  // the crash point was not reached
    });
    REQUIRE_MESSAGE(child.signal == SIGKILL, "child: ", child.describe());

    auto st = c.open();  // recovers
    check_store_consistent(c, *st);
    auto step = point.substr(point.find(':') + 1);
    if (op == "create") {
      auto s = st->get("new");
      if (step == "committed") {
        REQUIRE(s.ok());
        CHECK(snapshot_state(*st, "new") == "B");
      } else {
        CHECK(s.err() == ENOENT);  // undone
      }
      CHECK(c.state() == "B");
    } else if (op == "remove") {
      CHECK(st->get("victim").err() == ENOENT);  // the row goes first: always finished
      CHECK(snapshot_state(*st, "base") == "A");
      CHECK(c.state() == "B");
    } else {  // restore, recover
      // From its first exchange on, a restore is finished by recover():
      // hoody-dbfs follows an exchange by itself, so that is what its writers
      // used since.
      bool committed = op == "recover" || step == "exchange-1" || step == "exchanged" ||
                       step == "committed" || step == "replaced" || step == "resumed" ||
                       step == "delete-1" || step == "deleted";
      CHECK(c.state() == (committed ? "A" : "B"));
      CHECK(snapshot_state(*st, "base") == "A");
      auto all = st->list();
      bool has_safety = std::any_of(all->begin(), all->end(), [](const Snapshot& s) {
        return s.name.rfind("pre-restore-", 0) == 0;
      });
      // Taken under the quiesce, after the copies are prepared; always before
      // the first exchange.
      bool before_safety = step == "journaled" || step == "copy-1" || step == "prepared" ||
                           step == "quiesced";
      CHECK(has_safety == (op == "recover" || !before_safety));
      // The store works after recovery.
      REQUIRE(st->restore("base", kRoot).ok());
      CHECK(c.state() == "A");
    }
    CHECK(st->create("after", kRoot).ok());
    check_store_consistent(c, *st);
  }
  CHECK(n == 24);
}

// The index of a store written by the version before the schedule (user_version 1).
constexpr const char* kSchemaV1 = R"(
CREATE TABLE snapshots(
  name TEXT NOT NULL UNIQUE, uuid TEXT NOT NULL UNIQUE, created INTEGER NOT NULL, expires INTEGER,
  creator INTEGER NOT NULL, type TEXT NOT NULL DEFAULT 'filesystem', description TEXT NOT NULL DEFAULT '');
CREATE INDEX snapshots_expires ON snapshots(expires) WHERE expires IS NOT NULL;
CREATE TABLE audit(id INTEGER PRIMARY KEY, time INTEGER NOT NULL, uid INTEGER NOT NULL,
  pid INTEGER NOT NULL, action TEXT NOT NULL, name TEXT NOT NULL, result TEXT NOT NULL);
CREATE TABLE journal(id INTEGER PRIMARY KEY, op TEXT NOT NULL, name TEXT NOT NULL, uuid TEXT NOT NULL,
  step INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL DEFAULT '{}', started INTEGER NOT NULL);
INSERT INTO audit(time, uid, pid, action, name, result) VALUES(1, 1000, 42, 'rename', 'a -> z', 'ok');
PRAGMA user_version = 1;
)";

int64_t user_version_of(const std::string& path) {
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* q = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &q, nullptr) == SQLITE_OK);
  REQUIRE(sqlite3_step(q) == SQLITE_ROW);
  int64_t v = sqlite3_column_int64(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return v;
}

TEST_CASE("an index.db of version 1 opens and is upgraded to version 2 (the schedule)") {
  Pool pool;
  Container c(pool, "c1");
  {
    auto st = c.open();
    REQUIRE(st->create("kept", kRoot).ok());
  }
  const std::string index = c.path + "/.snapshots/index.db";
  CHECK(user_version_of(index) == 2);
  // Rewrite it as version 1 had it: the snapshot row, an audit row, no schedule.
  std::string uuid;
  {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(index.c_str(), &db) == SQLITE_OK);
    sqlite3_stmt* q = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "SELECT uuid, created FROM snapshots", -1, &q, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(q) == SQLITE_ROW);
    uuid = reinterpret_cast<const char*>(sqlite3_column_text(q, 0));
    int64_t created = sqlite3_column_int64(q, 1);
    sqlite3_finalize(q);
    REQUIRE(sqlite3_exec(db, "DROP TABLE snapshots; DROP TABLE audit; DROP TABLE journal; DROP TABLE schedule;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, kSchemaV1, nullptr, nullptr, nullptr) == SQLITE_OK);
    std::string ins = "INSERT INTO snapshots(name, uuid, created, creator) VALUES('kept', '" + uuid +
                      "', " + std::to_string(created) + ", 0)";
    REQUIRE(sqlite3_exec(db, ins.c_str(), nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
  }
  CHECK(user_version_of(index) == 1);
  auto st = c.open();
  CHECK(user_version_of(index) == 2);
  CHECK(names(*st->list()) == std::vector<std::string>{"kept"});
  auto log = st->audit_log();
  REQUIRE(log.ok());
  REQUIRE(log->size() == 1);
  CHECK(log->front().name == "a -> z");  // an old row, as it was
  CHECK(log->front().target.empty());
  auto sched = st->schedule_state();
  REQUIRE(sched.ok());
  CHECK_FALSE(sched->schedule.on());
  Schedule s;
  s.every = std::chrono::hours(1);
  s.preserve = *parse_preserve("24h");
  REQUIRE(st->set_schedule(s, kRoot).ok());
  CHECK(st->schedule_state()->schedule == s);
  check_store_consistent(c, *st);
}

TEST_CASE("prune_scheduled deletes only scheduled snapshots, by the policy, at the store's clock") {
  Pool pool;
  Container c(pool, "c1");
  auto st = c.open();
  auto t = Clock::from_time_t(1793491200);  // 2026-11-01T00:00:00Z
  st->set_clock([&t] { return t; });
  REQUIRE(st->create("manual", kRoot).ok());
  CreateOptions sched;
  sched.type = kTypeScheduled;
  for (int h = 0; h < 6; ++h) {
    t = Clock::from_time_t(1793491200 + h * 3600);
    REQUIRE(st->create(scheduled_name(t), kRoot, sched).ok());
  }
  CHECK(st->get("auto-20261101T0500Z")->type == "scheduled");
  CHECK(st->get("auto-20261101T0500Z")->created == t);
  CHECK(st->get("manual")->type == "filesystem");
  // A pre-restore safety snapshot is no scheduled one either.
  REQUIRE(st->restore("manual", kRoot).ok());
  // Renamed out of auto-*, a scheduled snapshot is kept.
  REQUIRE(st->rename("auto-20261101T0100Z", "keep-0100", kRoot).ok());
  t += std::chrono::minutes(30);
  auto pruned = st->prune_scheduled(t, *parse_preserve("2h"), kRoot);
  REQUIRE(pruned.ok());
  CHECK(*pruned == std::vector<std::string>{"auto-20261101T0000Z", "auto-20261101T0200Z",
                                            "auto-20261101T0300Z"});
  auto left = names(*st->list());
  CHECK(left.size() == 5);  // manual, keep-0100, the safety snapshot, 04:00, 05:00
  CHECK(std::count(left.begin(), left.end(), "keep-0100") == 1);
  CHECK(std::count(left.begin(), left.end(), "manual") == 1);
  CHECK(std::count_if(left.begin(), left.end(),
                      [](auto& n) { return n.rfind("pre-restore-", 0) == 0; }) == 1);
  auto log = st->audit_log(1);
  CHECK(log->back().action == "prune");
  check_store_consistent(c, *st);
}
