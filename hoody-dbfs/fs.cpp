#include "fs.hpp"

#include "hoody/fuse_transport.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "control.hpp"
#include "hoody/dbfs_control.hpp"
#include "hoody/log.hpp"
#include "hoody/mount_options.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"

namespace hoody::dbfs {

namespace {
constexpr char kSqliteMagic[] = "SQLite format 3";  // 16 bytes with its NUL

std::chrono::milliseconds ms(double seconds) {
  return std::chrono::milliseconds(static_cast<long long>(seconds * 1000));
}
}  // namespace

OptionTable options() {
  auto t = OptionTable::generic();
  pt::add_options(t);
  t.add({"lock_wait", OptKind::seconds,
         "bound of a lock wait that SQLite's protocol allows (default 30); then EAGAIN"})
      .add({"commit_wait", OptKind::seconds,
            "bound of a commit waiting for readers to drain (default 30)"})
      .add({"lease", OptKind::seconds,
            "demote a writer-token holder that has not written after this while others "
            "wait (default 0: strict token, no BUSY)"});
  return t;
}

Config config_from(const MountArgs& args) {
  Config c;
  c.core = pt::config_from(args);
  // nosuid,nodev are forced (main.cpp); a suid or dev given too (mount.fuse3
  // adds both as root) is dropped: kernel_mount_options.
  c.locks.sqlite_wait = ms(args.seconds("lock_wait", 30));
  c.locks.commit_wait = ms(args.seconds("commit_wait", 30));
  c.locks.lease = ms(args.seconds("lease", 0));
  char buf[PATH_MAX];
  c.mountpoint = ::realpath(args.mountpoint.c_str(), buf) ? buf : args.mountpoint;
  return c;
}

Fs::Fs(Config cfg) : pt::PassthroughFs(cfg.core), dcfg_(std::move(cfg)) {}

Fs::~Fs() = default;

Status Fs::start(std::string* why) {
  HOODY_CHECK(open_source(why));
  HOODY_CHECK(lock_source(why));
  // The control socket listens before the mount appears (its thread starts
  // in attached()); so does daemon_main's status socket.
  control_ = std::make_unique<ControlServer>(dcfg_.core.source);
  return {};
}

void Fs::attached(fuse_session* se) {
  se_ = se;
  locks_.emplace(dcfg_.locks);
  ControlServer::Target t;
  t.locks = &*locks_;
  t.source_replaced = [this] { return source_replaced(); };
  t.holders = [this] {
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& h : holders(false))
      rows.push_back({{"pid", h.pid}, {"comm", h.comm}, {"path", h.path}});
    return nlohmann::json{{"holders", rows}};
  };
  t.database_name = [this](const std::string& key) { return database_name(key); };
  control_->run(std::move(t));
  // HOODY_DBFS_NO_SOURCE_WATCH=1 is for tests only: SOURCE is then followed
  // only on a source-replaced call (or a dropped quiesce), which makes the
  // window between a restore's exchange and that call observable.
  if (const char* off = std::getenv("HOODY_DBFS_NO_SOURCE_WATCH"); off && std::string(off) == "1") {
    log::get("fuse")->warn("HOODY_DBFS_NO_SOURCE_WATCH=1: SOURCE is not watched (tests only)");
    return;
  }
  watch_ = std::make_unique<SourceWatch>(dcfg_.core.source, [this] { source_replaced(); });
}

void Fs::destroy() {
  std::lock_guard g(change_mu_);  // a source change in progress finishes first
  se_ = nullptr;
}

Status Fs::lock_source(std::string* why) {
  // Two FUSE mounts of one backing file do not share the page cache, and
  // SQLite's WAL index is a shared mmap of -shm: a second daemon over the same
  // directory would let two containers see different -shm pages and corrupt
  // WAL databases.  The flock lives as long as this process.
  auto dir = sys::open(dcfg_.core.source.c_str(), O_RDONLY | O_DIRECTORY);
  if (!dir) {
    *why = "source " + dcfg_.core.source + ": " + dir.error().message();
    return fail(dir.error());
  }
  if (::flock(dir->get(), LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    if (e == EWOULDBLOCK) {
      *why = "source " + dcfg_.core.source +
             " is already served by another hoody-dbfs; two daemons over one directory would "
             "not share SQLite's WAL index (-shm) and could corrupt databases. Bind-mount the "
             "existing mount instead (mount --bind MOUNTPOINT OTHER), one daemon per backing "
             "directory per host";
    } else {
      *why = "source " + dcfg_.core.source + ": cannot lock it: " + std::strerror(e);
    }
    return fail(e);
  }
  exclusive_ = std::move(*dir);
  return {};
}

nlohmann::json Fs::source_replaced() {
  // A restore swapped the subvolume at SOURCE.  One change at a time; a call
  // that finds nothing new still returns only after the last one completed.
  std::lock_guard g(change_mu_);
  auto lg = log::get("fuse");
  auto t0 = std::chrono::steady_clock::now();
  auto r = reroot();
  if (!r) {
    lg->error("source {} changed but cannot be reopened: {}", dcfg_.core.source,
              r.error().message());
    return {{"ok", false},
            {"errno", errno_name(r.err())},
            {"error", "source " + dcfg_.core.source + ": " + r.error().message()}};
  }
  if (r->changed) {
    // Hold the exclusivity lock on the new directory (the old one's fd goes).
    std::string why;
    if (!lock_source(&why)) {
      lg->error("{}", why);
      exclusive_.reset();
    }
    // Lock requests waiting on files of the old tree fail (EIO); its
    // databases leave the lock manager's table.
    std::vector<lock::FileId> files(r->stale.begin(), r->stale.end());
    locks_->retire_files(files);
    invalidate_kernel(se_.load(), *r);
  }
  nlohmann::json stale = nlohmann::json::array();
  for (const auto& h : holders(true))
    stale.push_back({{"pid", h.pid}, {"comm", h.comm}, {"path", h.path}});
  double ms = std::chrono::duration_cast<std::chrono::microseconds>(
                  std::chrono::steady_clock::now() - t0).count() / 1000.0;
  if (r->changed)
    lg->info("op=source-replaced epoch={} stale_inodes={} names={} stale_holders={} ms={:.1f} "
             "-> serving the new tree",
             r->epoch, r->stale.size(), r->old_names.size() + r->new_names.size(), stale.size(),
             ms);
  return {{"changed", r->changed}, {"epoch", r->epoch}, {"stale_holders", stale}, {"ms", ms}};
}

bool Fs::is_shm(fuse_ino_t ino) {
  std::lock_guard g(meta_mu_);
  auto it = meta_.find(ino);
  return it != meta_.end() && it->second.named == lock::FileKind::shm;
}

std::string Fs::database_name(const std::string& domain) {
  // "<dev>:<ino>/<name>" (on_entry): the parent's path + the name.
  auto colon = domain.find(':');
  auto slash = domain.find('/');
  if (colon == std::string::npos || slash == std::string::npos || colon > slash) return domain;
  char* end = nullptr;
  unsigned long long dev = std::strtoull(domain.c_str(), &end, 10);
  if (end != domain.c_str() + colon) return domain;
  unsigned long long ino = std::strtoull(domain.c_str() + colon + 1, &end, 10);
  if (end != domain.c_str() + slash) return domain;
  std::string dir = dir_path(static_cast<dev_t>(dev), static_cast<ino_t>(ino));
  std::string name = domain.substr(slash + 1);
  return dir.empty() ? name : dir + "/" + name;
}

fuse_lowlevel_ops Fs::ops() { return make_ops({.posix_locks = true, .flock = true}); }

nlohmann::json Fs::status() {
  nlohmann::json j;
  j["mountpoint"] = dcfg_.mountpoint;
  j["source"] = dcfg_.core.source;
  j["io"] = config().io;
  j["epoch"] = epoch();
  j["quiesced"] = locks_->quiesced();
  j["control_socket"] = "@hoody-dbfs-ctl:" + dcfg_.core.source;
  j["inodes"] = inode_count();
  j["open_path_fds"] = open_path_fds();
  j["locks"] = nlohmann::json::parse(locks_->stats_json());
  j["state"] = nlohmann::json::parse(locks_->state_json());
  j["threads_started_after_daemonize"] = true;
  return j;
}

void Fs::on_entry(pt::Inode& parent, pt::Inode& child, const char* name) {
  if (child.type != S_IFREG) return;
  fuse_ino_t ino = ino_of(&child);
  auto named = lock::classify(name);
  // The name escaped (an injective form): the domain appears in log lines.
  std::string domain = std::to_string(parent.src_dev) + ":" + std::to_string(parent.src_ino) +
                       "/" + escape_control(lock::database_name(name));
  // Only the name is recorded here: what the file is is decided from its
  // header (at open) and, for -journal/-wal/-shm, from the database beside it
  // (at each lock request).
  std::lock_guard g(meta_mu_);
  auto& m = meta_[ino];
  m.named = named;
  m.domain = domain;
  if (named == lock::FileKind::plain) db_of_domain_[domain] = ino;
}

void Fs::classify_on_open(fuse_ino_t ino, pt::File& file) {
  {
    std::lock_guard g(meta_mu_);
    auto it = meta_.find(ino);
    if (it == meta_.end() || it->second.named != lock::FileKind::plain) return;
    if (it->second.header == Header::sqlite) return;  // writes to page 1 keep it current
  }
  read_header(ino, file, false);
}

void Fs::read_header(fuse_ino_t ino, pt::File& file, bool through_handle) {
  unsigned char h[20] = {};
  int fd = through_handle && (file.flags & O_ACCMODE) != O_WRONLY ? file.fd.get() : -1;
  UniqueFd rd;
  if (fd < 0) {
    // A descriptor of our own, with O_NOATIME: looking at a
    // file must not change its atime (POSIX parity of open and write).
    if (auto pfd = pin(file.inode)) {
      auto r = sys::reopen(pfd->get(), O_RDONLY | O_NOATIME);
      if (!r) r = sys::reopen(pfd->get(), O_RDONLY);
      if (r) rd = std::move(*r);
    }
    fd = rd.get();
  }
  ssize_t n = fd >= 0 ? ::pread(fd, h, sizeof h, 0) : -1;
  if (n < 0) return;  // unreadable now: keep what was known
  Header header = n == 0                                                   ? Header::empty
                  : n >= 16 && std::memcmp(h, kSqliteMagic, 16) == 0 ? Header::sqlite
                                                                     : Header::other;
  std::string domain;
  Header before;
  {
    std::lock_guard g(meta_mu_);
    auto& m = meta_[ino];
    before = m.header;
    m.header = header;
    domain = m.domain;
  }
  // An empty file is one SQLite is creating: rollback mode until page 1 says otherwise.
  if (header == Header::sqlite || header == Header::empty)
    locks_->set_journal_mode(domain, n >= 20 ? lock::journal_mode_from_header(h[18], h[19])
                                             : lock::JournalMode::rollback);
  if (before != header)
    log::get("lock")->debug("file={} domain={} header={}", ino, domain,
                            header == Header::sqlite  ? "sqlite"
                            : header == Header::empty ? "empty"
                                                      : "other");
  classify_for_lock(ino);
}

void Fs::classify_for_lock(fuse_ino_t ino) {
  std::lock_guard c(classify_mu_);
  lock::FileKind kind = lock::FileKind::plain;
  std::string domain;
  {
    std::lock_guard g(meta_mu_);
    auto it = meta_.find(ino);
    if (it == meta_.end()) return;
    auto& m = it->second;
    auto is_sqlite = [](const FileMeta& f) {
      return f.header == Header::sqlite || f.header == Header::empty;
    };
    if (m.named == lock::FileKind::plain) {
      if (is_sqlite(m)) kind = lock::FileKind::sqlite_db;
    } else if (auto d = db_of_domain_.find(m.domain); d != db_of_domain_.end()) {
      auto db = meta_.find(d->second);
      if (db != meta_.end() && is_sqlite(db->second)) kind = m.named;
    }
    if (kind == m.told && m.domain == m.told_domain) return;
    m.told = kind;
    m.told_domain = m.domain;
    domain = m.domain;
  }
  locks_->register_file(ino, kind, kind == lock::FileKind::plain ? std::string() : domain);
}

void Fs::on_open(fuse_req_t, pt::File& file, fuse_file_info*) {
  classify_on_open(ino_of(file.inode), file);
}

void Fs::on_write(pt::File& file, off_t off, size_t len) {
  // A write may change what the file is: SQLite writes page 1 of a new
  // database (the file was empty), and changes the journal mode in header
  // bytes 18-19 (under EXCLUSIVE).  A file that is something else stays so
  // until its next open.
  if (len == 0) return;
  fuse_ino_t ino = ino_of(file.inode);
  Header header;
  {
    std::lock_guard g(meta_mu_);
    auto it = meta_.find(ino);
    if (it == meta_.end() || it->second.named != lock::FileKind::plain) return;
    header = it->second.header;
  }
  if (header == Header::empty) return read_header(ino, file, false);
  // The database's own handle, as SQLite's reads go (its atime moves anyway).
  if (header == Header::sqlite && off <= 19) read_header(ino, file, true);
}

void Fs::on_flush(fuse_req_t, pt::File& file, fuse_file_info* fi) {
  // POSIX: closing any descriptor drops all of the process's locks on the file.
  locks_->release_owner(ino_of(file.inode), fi->lock_owner);
}

void Fs::on_release(pt::File& file, fuse_file_info* fi) {
  if (fi->flock_release) locks_->release_flock(ino_of(file.inode), fi->lock_owner);
}

void Fs::on_forget(pt::Inode& inode) {
  fuse_ino_t ino = ino_of(&inode);
  locks_->forget_file(ino);
  std::lock_guard g(meta_mu_);
  if (auto it = meta_.find(ino); it != meta_.end()) {
    if (auto d = db_of_domain_.find(it->second.domain);
        d != db_of_domain_.end() && d->second == ino)
      db_of_domain_.erase(d);
    meta_.erase(it);
  }
}

}  // namespace hoody::dbfs
