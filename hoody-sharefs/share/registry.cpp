#include "share/registry.hpp"

#include <linux/openat2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <ctime>
#include <random>
#include <thread>

#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "share/text.hpp"

namespace hoody::sharefs {

namespace {

constexpr int kBusyTimeoutMs = 5000;
// BEGIN IMMEDIATE is retried on SQLITE_BUSY (after the busy handler's own
// wait) until this deadline: a registry change is small, so only a stuck
// peer makes us wait this long.
constexpr auto kBusyDeadline = std::chrono::seconds(30);

int64_t now() { return static_cast<int64_t>(::time(nullptr)); }

std::string q(const std::string& s) { return quote_name(s); }

detail::Unexpected refuse(std::string* why, int err, std::string reason) {
  if (why) *why = std::move(reason);
  return fail(err);
}

void backoff(int attempt) {
  thread_local std::minstd_rand rng(static_cast<unsigned>(::getpid()) ^
                                    static_cast<unsigned>(std::chrono::steady_clock::now()
                                                              .time_since_epoch()
                                                              .count()));
  int cap = std::min(50, 2 << std::min(attempt, 5));
  std::this_thread::sleep_for(std::chrono::milliseconds(1 + static_cast<int>(rng() % static_cast<unsigned>(cap))));
}

// The schema, one step per version: kMigrations[v] takes version v to v+1.
const char* const kMigrations[] = {
    // 0 -> 1
    R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta(key, value) VALUES('generation', 0);
CREATE TABLE containers(
  id TEXT PRIMARY KEY,
  project TEXT,
  added INTEGER NOT NULL);
CREATE INDEX containers_project ON containers(project);
CREATE TABLE shares(
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  owner TEXT NOT NULL,
  source TEXT NOT NULL,
  mode TEXT NOT NULL CHECK(mode IN ('ro', 'rw')),
  to_container TEXT,
  to_project TEXT,
  state TEXT NOT NULL CHECK(state IN ('offered', 'revoked')),
  created INTEGER NOT NULL,
  changed INTEGER NOT NULL,
  CHECK((to_container IS NULL) <> (to_project IS NULL)));
CREATE UNIQUE INDEX shares_owner_name ON shares(owner, name) WHERE state = 'offered';
CREATE UNIQUE INDEX shares_project_name ON shares(to_project, name)
  WHERE state = 'offered' AND to_project IS NOT NULL;
CREATE TABLE receipts(
  share INTEGER NOT NULL REFERENCES shares(id),
  container TEXT NOT NULL,
  name TEXT NOT NULL,
  state TEXT NOT NULL CHECK(state IN ('offered', 'accepted', 'rejected', 'revoked', 'left')),
  changed INTEGER NOT NULL,
  PRIMARY KEY(share, container));
CREATE UNIQUE INDEX receipts_visible_name ON receipts(container, name)
  WHERE state IN ('offered', 'accepted');
CREATE TABLE events(
  id INTEGER PRIMARY KEY,
  time INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail TEXT NOT NULL,
  result TEXT NOT NULL);
)sql",
    // 1 -> 2: shares across servers.  peer: the other server (the audience's
    // for a share offered out, the owner's for one received in); url: a
    // received share's NFS export.
    R"sql(
ALTER TABLE shares ADD COLUMN peer TEXT;
ALTER TABLE shares ADD COLUMN url TEXT;
)sql",
};
static_assert(sizeof kMigrations / sizeof kMigrations[0] == kSchemaVersion);

// Runs body inside BEGIN IMMEDIATE ... COMMIT, retrying BUSY at BEGIN and COMMIT.
// body returns Status; a failed body rolls back and is not retried.
template <typename F> Status immediate(sql::Db& db, F&& body, std::string* why) {
  auto deadline = std::chrono::steady_clock::now() + kBusyDeadline;
  for (int attempt = 0;; ++attempt) {
    sql::Txn txn(db);
    auto b = txn.begin();
    if (!b) {
      if (b.error() == Errno(EBUSY) && std::chrono::steady_clock::now() < deadline) {
        backoff(attempt);
        continue;
      }
      return refuse(why, b.error().value(), "shares.db: cannot start a transaction: " +
                                                b.error().message());
    }
    HOODY_CHECK(body());
    auto c = txn.commit();
    if (!c) {
      if (c.error() == Errno(EBUSY) && std::chrono::steady_clock::now() < deadline) {
        backoff(attempt);
        continue;
      }
      return refuse(why, c.error().value(), "shares.db: commit failed: " + c.error().message());
    }
    return {};
  }
}

Status check_name(const char* kind, const std::string& name, std::string* why) {
  return validate_name(kind, name, why);
}

}  // namespace

Status check_server(const std::string& server, std::string* why) {
  auto bad = [&](const std::string& r) { return refuse(why, EINVAL, "server " + quote_name(server) + ": " + r); };
  if (server.empty()) return bad("empty");
  if (server.size() > 253) return bad("longer than 253 bytes");
  for (unsigned char c : server)
    if (!std::isalnum(c) && c != '.' && c != '-' && c != ':' && c != '_')
      return bad("may hold only A-Z a-z 0-9 . - : _ (a host name or an address)");
  if (server.front() == '-' || server.front() == '.') return bad("may not start with '-' or '.'");
  return {};
}

// ---- source paths -----------------------------------------------------------

Result<std::string> normalize_source(const std::string& path, const std::string& owner,
                                     std::string* why) {
  std::string shown = "path " + path;
  if (path.find('\0') != std::string::npos)
    return refuse(why, EINVAL, shown + " contains a NUL byte");
  if (!valid_utf8(path))
    return refuse(why, EILSEQ, shown + " is not valid UTF-8");
  if (!path.empty() && path[0] == '/')
    return refuse(why, EINVAL, shown + " is absolute; give it relative to " + owner +
                                   "'s storage");
  std::string out;
  std::size_t i = 0;
  while (i <= path.size()) {
    std::size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string comp = path.substr(i, j - i);
    i = j + 1;
    if (comp.empty() || comp == ".") continue;
    if (comp == "..")
      return refuse(why, EXDEV, shown + " is outside " + owner + "'s storage");
    if (!out.empty()) out += '/';
    out += comp;
  }
  if (out.size() > 4096) return refuse(why, ENAMETOOLONG, shown + " is too long");
  return out.empty() ? std::string(".") : out;
}

Result<UniqueFd> open_source(int storage_fd, const std::string& path, const std::string& owner,
                             std::string* why) {
  auto fd = sys::open_beneath(storage_fd, path.c_str(), O_PATH | O_DIRECTORY);
  if (fd) return fd;
  int e = fd.error().value();
  std::string shown = "path " + path;
  std::string store = owner + "'s storage";
  switch (e) {
    case EXDEV: (void)refuse(why, e, shown + " is outside " + store); break;
    case ELOOP:
      (void)refuse(why, e, shown + " goes through a magic link or too many symlinks in " + store);
      break;
    case ENOENT: (void)refuse(why, e, shown + " does not exist in " + store); break;
    case ENOTDIR: (void)refuse(why, e, shown + " is not a directory in " + store); break;
    default: (void)refuse(why, e, shown + " in " + store + ": " + fd.error().message());
  }
  return fail(e);
}

// ---- open and migrate -------------------------------------------------------

Result<Registry> Registry::open(const std::string& pool, std::string* why,
                               const std::string& db_path) {
  Registry r;
  r.pool_ = pool;
  auto fd = sys::open(pool.c_str(), O_PATH | O_DIRECTORY);
  if (!fd) {
    (void)refuse(why, fd.error().value(), "pool " + pool + ": " + fd.error().message());
    return fail(fd.error());
  }
  r.pool_fd_ = std::move(*fd);
  auto sig = ChangeSignal::open_for_pool(r.pool_fd_.get());
  if (!sig) {
    (void)refuse(why, sig.error().value(),
                 "change signal of pool " + pool + ": " + sig.error().message());
    return fail(sig.error());
  }
  r.signal_.emplace(std::move(*sig));
  const std::string file = db_path.empty() ? pool + "/" + kRegistryFile : db_path;
  auto db = sql::Db::open(file);
  if (!db) {
    (void)refuse(why, db.error().value(), file + ": " + db.error().message());
    return fail(db.error());
  }
  r.db_ = std::move(*db);
  sqlite3_busy_timeout(r.db_.get(), kBusyTimeoutMs);
  // journal_mode=WAL needs the write lock once, when the file is new: retry.
  auto deadline = std::chrono::steady_clock::now() + kBusyDeadline;
  for (int attempt = 0;; ++attempt) {
    auto s = r.db_.exec("PRAGMA journal_mode=WAL");
    if (s) break;
    if (s.error() != Errno(EBUSY) || std::chrono::steady_clock::now() >= deadline) {
      (void)refuse(why, s.error().value(), "shares.db: cannot switch to WAL: " + s.error().message());
      return fail(s.error());
    }
    backoff(attempt);
  }
  if (auto s = r.db_.exec("PRAGMA synchronous=FULL"); !s) return fail(s.error());
  auto m = r.migrate();
  if (!m) {
    (void)refuse(why, m.error().value(),
                 m.error() == Errno(EPROTO)
                     ? "shares.db has a newer schema than this program knows (" +
                           std::to_string(kSchemaVersion) + "); upgrade hoody"
                     : "shares.db: schema migration failed: " + m.error().message());
    return fail(m.error());
  }
  return r;
}

Status Registry::migrate() {
  std::string why;
  return immediate(db_, [&]() -> Status {
    sql::Stmt v(db_, "PRAGMA user_version");
    HOODY_TRY(row, v.step());
    int64_t version = row ? v.int64(0) : 0;
    if (version > kSchemaVersion) return fail(EPROTO);
    for (int64_t step = version; step < kSchemaVersion; ++step) {
      HOODY_CHECK(db_.exec(kMigrations[step]));
      log::get("share")->info("op=migrate registry=shares.db from={} to={}", step, step + 1);
    }
    if (version != kSchemaVersion)
      HOODY_CHECK(db_.exec(("PRAGMA user_version=" + std::to_string(kSchemaVersion)).c_str()));
    return {};
  }, &why);
}

// ---- writes -----------------------------------------------------------------

Status Registry::bump_generation() {
  sql::Stmt q(db_, "UPDATE meta SET value = value + 1 WHERE key = 'generation'");
  return q.run();
}

Status Registry::log_event(const std::string& actor, const char* action, const std::string& subject,
                           const std::string& detail, const std::string& result) {
  sql::Stmt q(db_, "INSERT INTO events(time, actor, action, subject, detail, result) "
                   "VALUES(?, ?, ?, ?, ?, ?)");
  q.bind(1, now()).bind(2, actor).bind(3, std::string_view(action)).bind(4, subject)
      .bind(5, detail).bind(6, result);
  return q.run();
}

// body(std::string& detail, std::string* why, bool& unchanged) -> Status.  On
// success the event, the generation bump and the change are one transaction,
// then the signal is published; a body that found nothing to change sets
// `unchanged` (no event, no new generation); a refusal is logged as an event
// of its own.
template <typename F>
Status Registry::write(const char* action, const std::string& actor, const std::string& subject,
                       F&& body, std::string* why) {
  std::string detail, reason;
  bool refused = false, unchanged = false;
  auto s = immediate(db_, [&]() -> Status {
    detail.clear();
    reason.clear();
    unchanged = false;
    auto b = body(detail, &reason, unchanged);
    if (!b) {
      refused = true;
      return b;
    }
    if (unchanged) return {};
    HOODY_CHECK(log_event(actor, action, subject, detail, "ok"));
    return bump_generation();
  }, &reason);
  if (!s) {
    if (reason.empty()) reason = s.error().message();
    if (refused) {
      std::string ignored;
      (void)immediate(db_, [&] { return log_event(actor, action, subject, detail, reason); },
                      &ignored);
    }
    log::get("share")->debug("op={} actor={} subject={} -> {} ({})", action, actor, escape(subject),
                             s.error().message(), escape(reason));
    if (why) *why = reason;
    return s;
  }
  if (unchanged) return {};
  published_ = signal_->publish();
  log::get("share")->debug("op={} actor={} subject={} {} -> ok", action, actor, escape(subject),
                           escape(detail));
  return {};
}

Result<std::optional<Container>> Registry::container(const std::string& id) {
  sql::Stmt q(db_, "SELECT id, coalesce(project, ''), added FROM containers WHERE id = ?");
  q.bind(1, id);
  HOODY_TRY(row, q.step());
  if (!row) return std::optional<Container>();
  return std::optional<Container>(Container{q.text(0), q.text(1), q.int64(2)});
}

Status Registry::add_container(const std::string& id, const std::string& project, std::string* why) {
  HOODY_CHECK(check_name("container", id, why));
  if (id.find('@') != std::string::npos)
    return refuse(why, EINVAL, "container " + quote_name(id) +
                                   ": '@' is reserved (C@SERVER names a container on another server)");
  if (!project.empty()) HOODY_CHECK(check_name("project", project, why));
  return write("container-add", "", id, [&](std::string& detail, std::string* reason, bool& unchanged) -> Status {
    detail = project.empty() ? "no project" : "project " + project;
    HOODY_TRY(have, container(id));
    // Again with the same project, or with none for a member: nothing to do.
    if (have && (have->project == project || project.empty())) {
      unchanged = true;
      return {};
    }
    if (have && !have->project.empty())
      return refuse(reason, EEXIST, "container " + id + " is in project " + have->project +
                                        " already; remove it first");
    if (!have) {
      sql::Stmt ins(db_, "INSERT INTO containers(id, project, added) VALUES(?, ?, ?)");
      ins.bind(1, id).bind(3, now());
      if (project.empty()) ins.bind_null(2); else ins.bind(2, project);
      HOODY_CHECK(ins.run());
    } else if (!project.empty()) {
      sql::Stmt up(db_, "UPDATE containers SET project = ? WHERE id = ?");
      up.bind(1, project).bind(2, id);
      HOODY_CHECK(up.run());
    }
    if (project.empty()) return {};
    // Join: a receipt for every live share offered to the project.
    sql::Stmt ps(db_, "SELECT id, name, owner FROM shares WHERE to_project = ? AND state = 'offered' "
                      "AND owner <> ? ORDER BY id");
    ps.bind(1, project).bind(2, id);
    std::vector<std::tuple<int64_t, std::string, std::string>> shares;
    for (;;) {
      HOODY_TRY(row, ps.step());
      if (!row) break;
      shares.emplace_back(ps.int64(0), ps.text(1), ps.text(2));
    }
    for (auto& [sid, name, owner] : shares) {
      sql::Stmt c(db_, "SELECT s.owner FROM receipts r JOIN shares s ON s.id = r.share "
                       "WHERE r.container = ? AND r.name = ? AND r.state IN ('offered', 'accepted')");
      c.bind(1, id).bind(2, name);
      HOODY_TRY(clash, c.step());
      if (clash)
        return refuse(reason, EEXIST, "container " + id + " cannot join project " + project +
                                          ": share " + q(name) + " from " + owner +
                                          " would clash with share " + q(name) + " from " +
                                          c.text(0) + " that it already receives");
      sql::Stmt ins(db_, "INSERT OR REPLACE INTO receipts(share, container, name, state, changed) "
                         "VALUES(?, ?, ?, 'offered', ?)");
      ins.bind(1, sid).bind(2, id).bind(3, name).bind(4, now());
      HOODY_CHECK(ins.run());
    }
    return {};
  }, why);
}

Status Registry::remove_container(const std::string& id, std::string* why) {
  HOODY_CHECK(check_name("container", id, why));
  return write("container-remove", "", id, [&](std::string& detail, std::string* reason, bool&) -> Status {
    HOODY_TRY(have, container(id));
    if (!have) return refuse(reason, ENOENT, "no such container " + id);
    sql::Stmt n(db_, "SELECT count(*) FROM shares WHERE owner = ? AND state = 'offered'");
    n.bind(1, id);
    HOODY_CHECK(n.step());
    detail = "revoked " + std::to_string(n.int64(0)) + " offered share(s)";
    sql::Stmt r1(db_, "UPDATE receipts SET state = 'revoked', changed = ? WHERE state IN "
                      "('offered', 'accepted') AND share IN "
                      "(SELECT id FROM shares WHERE owner = ? AND state = 'offered')");
    r1.bind(1, now()).bind(2, id);
    HOODY_CHECK(r1.run());
    sql::Stmt r2(db_, "UPDATE shares SET state = 'revoked', changed = ? WHERE owner = ? AND state = 'offered'");
    r2.bind(1, now()).bind(2, id);
    HOODY_CHECK(r2.run());
    sql::Stmt r3(db_, "DELETE FROM receipts WHERE container = ?");
    r3.bind(1, id);
    HOODY_CHECK(r3.run());
    sql::Stmt r4(db_, "DELETE FROM containers WHERE id = ?");
    r4.bind(1, id);
    return r4.run();
  }, why);
}

Result<std::vector<Container>> Registry::containers() {
  std::vector<Container> out;
  sql::Stmt q(db_, "SELECT id, coalesce(project, ''), added FROM containers ORDER BY id");
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) return out;
    out.push_back({q.text(0), q.text(1), q.int64(2)});
  }
}

Result<UniqueFd> Registry::open_storage(const std::string& owner, std::string* why) {
  if (auto s = check_name("container", owner, why); !s) return fail(s.error());
  std::string rel = "containers/" + owner + "/storage";
  auto fd = sys::open_beneath(pool_fd_.get(), rel.c_str(), O_PATH | O_DIRECTORY, 0,
                              RESOLVE_NO_SYMLINKS);
  if (!fd)
    (void)refuse(why, fd.error().value(), owner + " has no storage directory " + pool_ +
                                              "/" + rel + ": " + fd.error().message());
  return fd;
}

Result<Share> Registry::offer(const Offer& o, std::string* why) {
  std::string what = "offer " + q(o.name) + ": ";
  auto prefixed = [&](Status s, const std::string& reason) -> Result<Share> {
    if (why) *why = what + reason;
    return fail(s.error());
  };
  std::string reason;
  if (auto s = validate_share_name(o.name, &reason); !s) return prefixed(s, reason);
  if (auto s = check_name("container", o.from, &reason); !s) return prefixed(s, reason);
  if (o.to_container.empty() == o.to_project.empty())
    return prefixed(fail(EINVAL), "give one audience: a container or a project");
  if (!o.to_server.empty()) {
    if (o.to_container.empty())
      return prefixed(fail(EINVAL), "a share to another server names one container there (C@SERVER)");
    if (auto s = check_server(o.to_server, &reason); !s) return prefixed(s, reason);
  }
  if (!o.to_container.empty()) {
    if (auto s = check_name("container", o.to_container, &reason); !s) return prefixed(s, reason);
    if (o.to_container == o.from && o.to_server.empty())
      return prefixed(fail(EINVAL), o.from + " cannot share with itself");
  }
  if (!o.to_project.empty())
    if (auto s = check_name("project", o.to_project, &reason); !s) return prefixed(s, reason);
  // From here on the names are sound: a refused source path (an attempt to
  // share outside one's storage) is logged as an event, like every refusal.
  std::string subject = o.from + ":" + o.name;
  std::string to_label = o.to_server.empty() ? o.to_container : o.to_container + "@" + o.to_server;
  std::string attempt = "source=" + o.source + " mode=" + std::string(to_string(o.mode)) + " to=" +
                        (o.to_container.empty() ? "project:" + o.to_project : to_label);
  auto logged = [&](Errno e, const std::string& r) -> Result<Share> {
    std::string ignored;
    (void)immediate(db_, [&] { return log_event(o.from, "offer", subject, attempt, r); }, &ignored);
    return prefixed(fail(e), r);
  };
  auto src = normalize_source(o.source, o.from, &reason);
  if (!src) return logged(src.error(), reason);
  // The owner must exist before its storage is looked at.
  {
    auto have = container(o.from);
    if (!have) return prefixed(fail(have.error()), have.error().message());
    if (!*have)
      return logged(Errno(ENOENT), "no such container " + o.from +
                                       " (add it with `hoody-share container add " + o.from + "`)");
  }
  auto storage = open_storage(o.from, &reason);
  if (!storage) return logged(storage.error(), reason);
  if (auto fd = open_source(storage->get(), *src, o.from, &reason); !fd)
    return logged(fd.error(), reason);

  Share sh;
  auto s = write("offer", o.from, subject, [&](std::string& detail, std::string* r, bool&) -> Status {
    detail = "source=" + *src + " mode=" + std::string(to_string(o.mode)) + " to=" +
             (o.to_container.empty() ? "project:" + o.to_project : to_label);
    HOODY_TRY(owner, container(o.from));
    if (!owner) return refuse(r, ENOENT, "no such container " + o.from);
    std::vector<std::string> receivers;
    if (!o.to_server.empty()) {
      // On another server: its registry has the container; here the receipt
      // is the peer's state as it reports it (hoody-share remote state).
      receivers.push_back(to_label);
    } else if (!o.to_container.empty()) {
      HOODY_TRY(to, container(o.to_container));
      if (!to)
        return refuse(r, ENOENT, "no such container " + o.to_container +
                                     " (add it with `hoody-share container add " + o.to_container + "`)");
      receivers.push_back(o.to_container);
    } else {
      sql::Stmt m(db_, "SELECT id FROM containers WHERE project = ? ORDER BY id");
      m.bind(1, o.to_project);
      bool any = false;
      for (;;) {
        HOODY_TRY(row, m.step());
        if (!row) break;
        any = true;
        if (m.text(0) != o.from) receivers.push_back(m.text(0));
      }
      if (!any) return refuse(r, ENOENT, "no container is in project " + o.to_project);
      sql::Stmt c(db_, "SELECT owner FROM shares WHERE to_project = ? AND name = ? AND state = 'offered'");
      c.bind(1, o.to_project).bind(2, o.name);
      HOODY_TRY(clash, c.step());
      if (clash)
        return refuse(r, EEXIST, "name taken: project " + o.to_project + " already has a share " +
                                     q(o.name) + " from " + c.text(0));
    }
    {
      sql::Stmt c(db_, "SELECT 1 FROM shares WHERE owner = ? AND name = ? AND state = 'offered'");
      c.bind(1, o.from).bind(2, o.name);
      HOODY_TRY(clash, c.step());
      if (clash) return refuse(r, EEXIST, "name taken: " + o.from + " already offers a share " + q(o.name));
    }
    for (auto& rc : receivers) {
      sql::Stmt c(db_, "SELECT s.owner FROM receipts r JOIN shares s ON s.id = r.share "
                       "WHERE r.container = ? AND r.name = ? AND r.state IN ('offered', 'accepted')");
      c.bind(1, rc).bind(2, o.name);
      HOODY_TRY(clash, c.step());
      if (clash)
        return refuse(r, EEXIST, "name taken: " + rc + " already receives a share " + q(o.name) +
                                     " from " + c.text(0));
    }
    int64_t t = now();
    sql::Stmt ins(db_, "INSERT INTO shares(name, owner, source, mode, to_container, to_project, "
                       "state, created, changed, peer) VALUES(?, ?, ?, ?, ?, ?, 'offered', ?, ?, ?)");
    ins.bind(1, o.name).bind(2, o.from).bind(3, *src).bind(4, to_string(o.mode));
    if (o.to_container.empty()) ins.bind_null(5); else ins.bind(5, o.to_container);
    if (o.to_project.empty()) ins.bind_null(6); else ins.bind(6, o.to_project);
    ins.bind(7, t).bind(8, t);
    if (o.to_server.empty()) ins.bind_null(9); else ins.bind(9, o.to_server);
    HOODY_CHECK(ins.run());
    int64_t sid = sqlite3_last_insert_rowid(db_.get());
    for (auto& rc : receivers) {
      sql::Stmt ri(db_, "INSERT INTO receipts(share, container, name, state, changed) "
                        "VALUES(?, ?, ?, 'offered', ?)");
      ri.bind(1, sid).bind(2, rc).bind(3, o.name).bind(4, t);
      HOODY_CHECK(ri.run());
    }
    sh = Share{sid, o.name, o.from, *src, o.mode, o.to_container, o.to_project, State::offered, t, t, {},
               o.to_server, ""};
    for (auto& rc : receivers) sh.receipts.push_back({rc, State::offered, t});
    return {};
  }, &reason);
  if (!s) return prefixed(s, reason);
  return sh;
}

Result<Registry::LiveShare> Registry::live_share(const std::string& owner, const std::string& name,
                                                 int not_owner_err, const std::string& not_owner,
                                                 std::string* why) {
  sql::Stmt f(db_, "SELECT id, owner, mode FROM shares WHERE name = ? AND state = 'offered' "
                   "ORDER BY owner");
  f.bind(1, name);
  std::vector<LiveShare> live;
  for (;;) {
    HOODY_TRY(row, f.step());
    if (!row) break;
    live.push_back({f.int64(0), f.text(1), f.text(2)});
  }
  if (owner.empty()) {
    if (live.empty()) return refuse(why, ENOENT, "no container offers a share " + q(name));
    if (live.size() > 1) {
      std::string owners;
      for (auto& l : live) owners += (owners.empty() ? "" : ", ") + l.owner;
      return refuse(why, EINVAL, "several containers offer " + q(name) + " (" + owners +
                                     "); say which with --from");
    }
    return live[0];
  }
  for (auto& l : live)
    if (l.owner == owner) return l;
  HOODY_TRY(have, container(owner));
  if (!have) return refuse(why, ENOENT, "no such container " + owner);
  if (!live.empty())
    return refuse(why, not_owner_err, not_owner + ": " + live[0].owner + " offers it, not " + owner);
  return refuse(why, ENOENT, owner + " offers no share " + q(name));
}

Status Registry::revoke(const std::string& owner, const std::string& name, std::string* why) {
  std::string what = "revoke " + q(name) + ": ";
  std::string reason;
  auto done = [&](Status s) -> Status {
    if (!s && why) *why = what + reason;
    return s;
  };
  if (auto s = validate_share_name(name, &reason); !s) return done(s);
  if (!owner.empty())
    if (auto s = check_name("container", owner, &reason); !s) return done(s);
  return done(write("revoke", owner, (owner.empty() ? "" : owner + ":") + name,
                    [&](std::string& detail, std::string* r, bool&) -> Status {
    // The pure rule, for the message and the errno.
    auto rule = transition(State::offered, Action::revoke, Role::other);
    HOODY_TRY(hit, live_share(owner, name, rule.err, rule.reason, r));
    int64_t sid = hit.id;
    const std::string& actual = hit.owner;
    detail = "owner=" + actual;
    int64_t t = now();
    HOODY_TRY(receipts, receipts_of(sid));
    for (auto& rc : receipts) {
      auto tr = transition(rc.state, Action::revoke, Role::owner);
      if (!tr.ok() || tr.to == rc.state) continue;
      sql::Stmt u(db_, "UPDATE receipts SET state = ?, changed = ? WHERE share = ? AND container = ?");
      u.bind(1, to_string(tr.to)).bind(2, t).bind(3, sid).bind(4, rc.container);
      HOODY_CHECK(u.run());
    }
    sql::Stmt u(db_, "UPDATE shares SET state = 'revoked', changed = ? WHERE id = ?");
    u.bind(1, t).bind(2, sid);
    return u.run();
  }, &reason));
}

Status Registry::set_mode(const std::string& owner, const std::string& name, Mode mode,
                          std::string* why) {
  std::string what = "mode " + q(name) + ": ";
  std::string reason;
  auto done = [&](Status s) -> Status {
    if (!s && why) *why = what + reason;
    return s;
  };
  if (auto s = validate_share_name(name, &reason); !s) return done(s);
  if (!owner.empty())
    if (auto s = check_name("container", owner, &reason); !s) return done(s);
  return done(write("mode", owner, (owner.empty() ? "" : owner + ":") + name,
                    [&](std::string& detail, std::string* r, bool& unchanged) -> Status {
    HOODY_TRY(found, live_share(owner, name, EPERM, "not yours to change", r));
    const LiveShare* hit = &found;
    detail = "owner=" + hit->owner + " mode=" + std::string(to_string(mode));
    if (hit->mode == to_string(mode)) {
      unchanged = true;
      return {};
    }
    sql::Stmt u(db_, "UPDATE shares SET mode = ?, changed = ? WHERE id = ?");
    u.bind(1, to_string(mode)).bind(2, now()).bind(3, hit->id);
    return u.run();
  }, &reason));
}

Status Registry::apply(const std::string& container_id, const std::string& name, Action action,
                       std::string* why) {
  std::string what = std::string(to_string(action)) + " " + q(name) + " for " + container_id + ": ";
  std::string reason;
  auto done = [&](Status s) -> Status {
    if (!s && why) *why = what + reason;
    return s;
  };
  if (auto s = validate_share_name(name, &reason); !s) return done(s);
  if (auto s = check_name("container", container_id, &reason); !s) return done(s);
  const char* verb = action == Action::accept ? "accept" : action == Action::reject ? "reject" : "leave";
  return done(write(verb, container_id, name, [&](std::string& detail, std::string* r, bool&) -> Status {
    HOODY_TRY(have, container(container_id));
    if (!have) return refuse(r, ENOENT, "no such container " + container_id);
    // The visible receipt if there is one (names are unique among those),
    // else the latest one, so that a revoked share says so.
    sql::Stmt f(db_, "SELECT r.share, r.state, s.owner FROM receipts r JOIN shares s ON s.id = r.share "
                     "WHERE r.container = ? AND r.name = ? "
                     "ORDER BY r.state IN ('offered', 'accepted') DESC, r.share DESC LIMIT 1");
    f.bind(1, container_id).bind(2, name);
    HOODY_TRY(row, f.step());
    if (!row) {
      sql::Stmt own(db_, "SELECT 1 FROM shares WHERE owner = ? AND name = ? AND state = 'offered'");
      own.bind(1, container_id).bind(2, name);
      HOODY_TRY(mine, own.step());
      if (mine) {
        auto t = transition(State::offered, action, Role::owner);
        return refuse(r, t.err, t.reason);
      }
      return refuse(r, ENOENT, "no share " + q(name) + " is offered to " + container_id);
    }
    int64_t sid = f.int64(0);
    auto from = parse_state(f.text(1)).value_or(State::revoked);
    std::string owner = f.text(2);
    detail = "owner=" + owner;
    auto t = transition(from, action, Role::receiver);
    if (!t.ok()) return refuse(r, t.err, t.reason + " (offered by " + owner + ")");
    sql::Stmt u(db_, "UPDATE receipts SET state = ?, changed = ? WHERE share = ? AND container = ?");
    u.bind(1, to_string(t.to)).bind(2, now()).bind(3, sid).bind(4, container_id);
    return u.run();
  }, &reason));
}

Result<Share> Registry::receive(const Inbound& in, std::string* why) {
  std::string reason;
  auto prefixed = [&](Status s) -> Result<Share> {
    if (why) *why = "receive " + q(in.name) + " from " + in.owner + ": " + reason;
    return fail(s.error());
  };
  if (auto s = validate_share_name(in.name, &reason); !s) return prefixed(s);
  if (auto s = check_name("container", in.to_container, &reason); !s) return prefixed(s);
  if (auto s = check_server(in.peer, &reason); !s) return prefixed(s);
  auto at = in.owner.find('@');
  if (at == std::string::npos || in.owner.substr(at + 1) != in.peer)
    return prefixed(refuse(&reason, EINVAL, "owner must be C@" + in.peer));
  if (auto s = check_name("container", in.owner.substr(0, at), &reason); !s) return prefixed(s);
  if (in.url.rfind("nfs://" + in.peer + "/", 0) != 0 || in.url.find_first_of(" \n\t\"'\\") != std::string::npos)
    return prefixed(refuse(&reason, EINVAL, "url must be nfs://" + in.peer + "/PATH"));
  Share sh;
  auto s = write("receive", in.owner, in.owner + ":" + in.name,
                 [&](std::string& detail, std::string* r, bool&) -> Status {
    detail = "url=" + in.url + " mode=" + std::string(to_string(in.mode)) + " to=" + in.to_container;
    HOODY_TRY(to, container(in.to_container));
    if (!to) return refuse(r, ENOENT, "no such container " + in.to_container);
    {
      sql::Stmt c(db_, "SELECT 1 FROM shares WHERE owner = ? AND name = ? AND state = 'offered'");
      c.bind(1, in.owner).bind(2, in.name);
      HOODY_TRY(clash, c.step());
      if (clash) return refuse(r, EEXIST, "name taken: " + in.owner + " already offers a share " + q(in.name));
    }
    sql::Stmt c(db_, "SELECT s.owner FROM receipts r JOIN shares s ON s.id = r.share "
                     "WHERE r.container = ? AND r.name = ? AND r.state IN ('offered', 'accepted')");
    c.bind(1, in.to_container).bind(2, in.name);
    HOODY_TRY(clash, c.step());
    if (clash)
      return refuse(r, EEXIST, "name taken: " + in.to_container + " already receives a share " +
                                   q(in.name) + " from " + c.text(0));
    int64_t t = now();
    sql::Stmt ins(db_, "INSERT INTO shares(name, owner, source, mode, to_container, to_project, "
                       "state, created, changed, peer, url) VALUES(?, ?, '', ?, ?, NULL, 'offered', ?, ?, ?, ?)");
    ins.bind(1, in.name).bind(2, in.owner).bind(3, to_string(in.mode)).bind(4, in.to_container)
        .bind(5, t).bind(6, t).bind(7, in.peer).bind(8, in.url);
    HOODY_CHECK(ins.run());
    int64_t sid = sqlite3_last_insert_rowid(db_.get());
    sql::Stmt ri(db_, "INSERT INTO receipts(share, container, name, state, changed) VALUES(?, ?, ?, 'offered', ?)");
    ri.bind(1, sid).bind(2, in.to_container).bind(3, in.name).bind(4, t);
    HOODY_CHECK(ri.run());
    sh = Share{sid, in.name, in.owner, "", in.mode, in.to_container, "", State::offered, t, t,
               {{in.to_container, State::offered, t}}, in.peer, in.url};
    return {};
  }, &reason);
  if (!s) return prefixed(s);
  return sh;
}

Result<std::vector<Share>> Registry::exports() {
  HOODY_TRY(all, select_shares("peer IS NOT NULL AND url IS NULL", "", false));
  std::vector<Share> out;
  for (auto& s : all) {
    bool live = false;
    for (auto& r : s.receipts) live = live || r.state == State::offered || r.state == State::accepted;
    if (live) out.push_back(std::move(s));
  }
  return out;
}

Status Registry::remote_state(const std::string& owner, const std::string& receiver,
                              const std::string& name, Action action, std::string* why) {
  std::string reason;
  auto done = [&](Status s) -> Status {
    if (!s && why) *why = std::string(to_string(action)) + " " + q(name) + " by " + receiver + ": " + reason;
    return s;
  };
  if (auto s = validate_share_name(name, &reason); !s) return done(s);
  if (auto s = check_name("container", owner, &reason); !s) return done(s);
  if (auto s = check_name("container", receiver, &reason); !s) return done(s);
  const char* verb = action == Action::accept ? "remote-accept"
                     : action == Action::reject ? "remote-reject" : "remote-leave";
  return done(write(verb, receiver, owner + ":" + name, [&](std::string& detail, std::string* r, bool& unchanged) -> Status {
    // The receipt is "C@SERVER" as the owner named the server; the receiver
    // knows its container, the share's owner and name.
    sql::Stmt f(db_, "SELECT r.share, r.state, r.container FROM receipts r JOIN shares s ON s.id = r.share "
                     "WHERE r.container = s.to_container || '@' || s.peer AND s.to_container = ? "
                     "AND r.name = ? AND s.owner = ? AND s.peer IS NOT NULL AND s.url IS NULL "
                     "ORDER BY r.state IN ('offered', 'accepted') DESC, r.share DESC LIMIT 1");
    f.bind(1, receiver).bind(2, name).bind(3, owner);
    HOODY_TRY(row, f.step());
    if (!row) return refuse(r, ENOENT, "no share " + q(name) + " of " + owner + " is offered to " + receiver);
    int64_t sid = f.int64(0);
    auto from = parse_state(f.text(1)).value_or(State::revoked);
    std::string label = f.text(2);
    detail = "owner=" + owner;
    auto t = transition(from, action, Role::receiver);
    if (!t.ok()) return refuse(r, t.err, t.reason);
    if (t.to == from) {
      unchanged = true;
      return {};
    }
    sql::Stmt u(db_, "UPDATE receipts SET state = ?, changed = ? WHERE share = ? AND container = ?");
    u.bind(1, to_string(t.to)).bind(2, now()).bind(3, sid).bind(4, label);
    return u.run();
  }, &reason));
}

Status Registry::accept(const std::string& c, const std::string& name, std::string* why) {
  return apply(c, name, Action::accept, why);
}
Status Registry::reject(const std::string& c, const std::string& name, std::string* why) {
  return apply(c, name, Action::reject, why);
}
Status Registry::leave(const std::string& c, const std::string& name, std::string* why) {
  return apply(c, name, Action::leave, why);
}

// ---- reads ------------------------------------------------------------------

Result<std::vector<Received>> Registry::shares_for(const std::string& c, bool all) {
  std::string sql =
      "SELECT s.id, s.name, s.owner, s.source, s.mode, r.state, r.changed, coalesce(s.peer, ''), "
      "coalesce(s.url, '') FROM receipts r "
      "JOIN shares s ON s.id = r.share WHERE r.container = ?";
  if (!all) sql += " AND r.state IN ('offered', 'accepted')";
  sql += " ORDER BY s.name, s.id";
  sql::Stmt q(db_, sql.c_str());
  q.bind(1, c);
  std::vector<Received> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) return out;
    out.push_back({q.int64(0), q.text(1), q.text(2), q.text(3), parse_mode(q.text(4)).value_or(Mode::ro),
                   parse_state(q.text(5)).value_or(State::revoked), q.int64(6), q.text(7), q.text(8)});
  }
}

Result<std::vector<Receipt>> Registry::receipts_of(int64_t share_id) {
  sql::Stmt q(db_, "SELECT container, state, changed FROM receipts WHERE share = ? ORDER BY container");
  q.bind(1, share_id);
  std::vector<Receipt> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) return out;
    out.push_back({q.text(0), parse_state(q.text(1)).value_or(State::revoked), q.int64(2)});
  }
}

Result<std::vector<Share>> Registry::select_shares(const std::string& where, const std::string& arg,
                                                   bool all) {
  std::string sql =
      "SELECT id, name, owner, source, mode, coalesce(to_container, ''), coalesce(to_project, ''), "
      "state, created, changed, coalesce(peer, ''), coalesce(url, '') FROM shares WHERE " + where;
  if (!all) sql += " AND state = 'offered'";
  sql += " ORDER BY owner, name, id";
  sql::Stmt q(db_, sql.c_str());
  if (!arg.empty()) q.bind(1, arg);
  std::vector<Share> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) break;
    out.push_back({q.int64(0), q.text(1), q.text(2), q.text(3), parse_mode(q.text(4)).value_or(Mode::ro),
                   q.text(5), q.text(6), parse_state(q.text(7)).value_or(State::revoked), q.int64(8),
                   q.int64(9), {}, q.text(10), q.text(11)});
  }
  for (auto& s : out) {
    HOODY_TRY(rs, receipts_of(s.id));
    s.receipts = std::move(rs);
  }
  return out;
}

Result<std::vector<Share>> Registry::offered_by(const std::string& owner, bool all) {
  return select_shares("owner = ?", owner, all);
}

Result<std::vector<Share>> Registry::list(bool all) { return select_shares("1", "", all); }

Result<std::vector<Event>> Registry::events(int limit) {
  sql::Stmt q(db_, "SELECT id, time, actor, action, subject, detail, result FROM events "
                   "ORDER BY id DESC LIMIT ?");
  q.bind(1, static_cast<int64_t>(limit));
  std::vector<Event> out;
  for (;;) {
    HOODY_TRY(row, q.step());
    if (!row) break;
    out.push_back({q.int64(0), q.int64(1), q.text(2), q.text(3), q.text(4), q.text(5), q.text(6)});
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Result<uint64_t> Registry::generation() {
  sql::Stmt q(db_, "SELECT value FROM meta WHERE key = 'generation'");
  HOODY_TRY(row, q.step());
  if (!row) return fail(EIO);
  return static_cast<uint64_t>(q.int64(0));
}

}  // namespace hoody::sharefs
