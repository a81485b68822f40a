// hoody-snap: the snapshot verbs of hoody-snapfs from the command line.  It
// works through the mount (default /hoody/.snapshots, or $HOODY_SNAPSHOTS, or
// --mount): mkdir, rmdir, rename, xattrs and the control files of .hoody/.
// Only `clone` reaches past the mount, to the real store (SOURCE/.snapshots,
// the fsname of the mount), because a writable copy is a btrfs snapshot.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <map>
#include <optional>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <chrono>
#include <functional>

#include "../snapshot_name.hpp"
#include "progress.hpp"
#include "remote.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/mountinfo.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store/format.hpp"
#include "store/snapshot_store.hpp"
#include "store/transfer.hpp"

namespace {

constexpr const char* kDefaultMount = "/hoody/.snapshots";

struct Failure {
  std::string what;  // "create \"x\""
  int err = 0;
  std::string hint;  // what to do
};

// Every byte a user chose (names, descriptions, paths) goes to the terminal
// through this: control characters and escape sequences shown as \n, \x1b, ...
std::string shown(std::string_view text) { return hoody::escape_control(text); }

// The message may quote names already (quote_name escapes '\\'): only control
// characters are escaped here, so nothing is escaped twice.
[[noreturn]] void die(const Failure& f) {
  std::fprintf(stderr, "hoody-snap: %s: %s%s%s\n", hoody::escape_control(f.what, false).c_str(),
               f.err ? std::strerror(f.err) : "failed", f.hint.empty() ? "" : "; ",
               hoody::escape_control(f.hint, false).c_str());
  std::exit(1);
}

std::string q(const std::string& name) { return hoody::quote_name(name); }

// What hoody-snap(1) promises: 0 done, 1 the action failed, 2 a usage error.
constexpr int kUsageExit = 2;

// The usual reasons, said for a person.
std::string hint_for(const std::string& verb, int err, const std::string& mount) {
  switch (err) {
    case EPERM:
      return "only root and the users and groups named in the mount's allow_users=/allow_groups= "
             "may " + verb + (verb == "schedule" ? "" : " snapshots");
    case EACCES: return "permission denied by the mount; run as root or ask an administrator";
    case EEXIST: return "that name is taken; pick another or delete the old one first";
    case ENOENT: return "no such snapshot; `hoody-snap list` shows the names";
    case EINVAL:
      return "names are 1-255 bytes of A-Z a-z 0-9 . _ : @ + -, not starting with '.' or '-', "
             "without \"..\"";
    case EBUSY: return "another restore or change is running; try again when it is done";
    case ENOTCONN:
      return "the hoody-snapfs daemon behind " + mount + " is gone; remount it (umount -l " + mount +
             " && mount " + mount + ")";
    case EROFS: return "snapshot contents are read-only; use `hoody-snap clone` for a writable copy";
    case EXDEV: return "snapshots move only within " + mount;
    default: return "";
  }
}

// A new name (create, rename to) may not contain ".."; an existing one may (it
// was taken before that rule), so delete, restore, diff and clone still reach it.
enum class NameUse { new_name, existing };
void check_name(const std::string& verb, const std::string& name, NameUse use) {
  std::string why;
  auto v = hoody::snapfs::check_snapshot_name(
      name, &why,
      use == NameUse::new_name ? hoody::snapfs::NameUse::new_name : hoody::snapfs::NameUse::existing);
  if (!v) die({verb + " " + q(name), v.err(), why});
}

std::string read_all(const std::string& path, const std::string& what, const std::string& mount) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    die({what, e, hint_for("read", e, mount)});
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      ::close(fd);
      die({what, e, hint_for("read", e, mount)});
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

void check_mount(const std::string& mount) {
  struct stat st;
  if (::stat((mount + "/.hoody").c_str(), &st) < 0) {
    int e = errno;
    die({"mount " + mount, e,
         e == ENOTCONN ? hint_for("", e, mount)
                       : "no hoody-snapfs mount there; mount it (fstab: SOURCE " + mount +
                             " fuse.hoody-snapfs allow_other 0 0) or pass --mount / $HOODY_SNAPSHOTS"});
  }
}

// nullopt when set, else what failed.
std::optional<Failure> set_meta(const std::string& path, const std::string& name, const char* key,
                                const std::string& value, const std::string& mount) {
  if (::setxattr(path.c_str(), key, value.data(), value.size(), 0) < 0) {
    int e = errno;
    std::string hint = e == EINVAL ? "an expiry is +N with s, m, h, d or w (+7d), an RFC 3339 time or never"
                                   : hint_for("change", e, mount);
    return Failure{std::string("set ") + key + " of " + q(name), e, hint};
  }
  return std::nullopt;
}

// The SOURCE of the mount (its fsname in /proc/self/mountinfo).
std::string mount_source(const std::string& mount) {
  char real[PATH_MAX];
  std::string want = ::realpath(mount.c_str(), real) ? real : mount;
  auto mounts = hoody::mountinfo::read();
  if (!mounts) return "";
  for (auto& m : *mounts)
    if (m.mount_point == want && m.fstype == "fuse.hoody-snapfs") return m.source;
  return "";
}


// ---- send, receive and the store reached directly (issue 9) ------------------

// "123", "10K", "1.5G" (binary units) as bytes; nullopt if malformed.
std::optional<uint64_t> parse_size(const std::string& text) {
  if (text.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text.c_str(), &end);
  if (errno || end == text.c_str() || v < 0) return std::nullopt;
  std::string unit(end);
  double mul = 1;
  if (unit == "" || unit == "B") mul = 1;
  else if (unit == "K" || unit == "KiB" || unit == "k") mul = 1024.0;
  else if (unit == "M" || unit == "MiB") mul = 1024.0 * 1024;
  else if (unit == "G" || unit == "GiB") mul = 1024.0 * 1024 * 1024;
  else if (unit == "T" || unit == "TiB") mul = 1024.0 * 1024 * 1024 * 1024;
  else return std::nullopt;
  double b = v * mul;
  if (b > 1.8e19) return std::nullopt;
  return static_cast<uint64_t>(b);
}

// A container id as hoody-up takes it: one path component, no '.' start.
bool valid_container(const std::string& c) {
  if (c.empty() || c.size() > 255 || c[0] == '.' || c[0] == '-') return false;
  for (char ch : c)
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '.' || ch == '_' || ch == '-' ||
          ch == ':' || ch == '@' || ch == '+'))
      return false;
  return true;
}

// The container directory POOL/containers/C, from --pool/--container, or the
// SOURCE of the mount.
std::string container_dir(const std::string& pool, const std::string& container,
                          const std::string& mount, const std::string& verb) {
  if (!pool.empty() || !container.empty()) {
    if (pool.empty() || container.empty()) {
      std::fprintf(stderr, "hoody-snap: %s: --pool and --container go together\n", verb.c_str());
      std::exit(kUsageExit);
    }
    if (!valid_container(container))
      die({verb + " --container " + q(container), EINVAL,
           "a container id is one name of A-Z a-z 0-9 . _ : @ + -, not starting with '.' or '-'"});
    return pool + "/containers/" + container;
  }
  std::string source = mount_source(mount);
  if (source.empty())
    die({verb, ENODEV,
         "no hoody-snapfs mount at " + mount + "; name the container with --pool POOL --container C"});
  return source;
}

// The store of `dir`, shared with a hoody-snapfs that may serve it or start
// meanwhile (never its lock for longer than a moment: a daemon starting
// during a long receive must not find the store taken).  For a receive
// (`create`), the store is first opened as its own when no daemon holds it:
// that makes .snapshots and index.db for a new container and runs the
// recovery a daemon runs at its start.
std::unique_ptr<hoody::snapfs::SnapshotStore> open_store(const std::string& dir,
                                                         const std::string& verb, bool create) {
  auto src = hoody::sys::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (!src) {
    int e = src.error().value();
    die({verb + ": " + dir, e, e == ENOENT ? "no such container" : ""});
  }
  std::string probe = dir + "/" + hoody::snapfs::kStoreDir + "/" + hoody::snapfs::kIndexDb;
  if (!create && ::access(probe.c_str(), F_OK) < 0)
    die({verb + ": " + dir, ENOENT, "no snapshot store there (no .snapshots/index.db)"});
  if (create) {
    bool held = false;
    int lfd = ::open((dir + "/" + hoody::snapfs::kStoreDir + "/lock").c_str(),
                     O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (lfd >= 0) {
      held = ::flock(lfd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
      ::close(lfd);
    }
    if (!held) {
      auto own = hoody::snapfs::SnapshotStore::open(src->get());
      if (!own && own.error().value() != EBUSY)
        die({verb + ": open the snapshot store of " + dir, own.error().value(),
             own.error().value() == EMEDIUMTYPE ? "the pool must be BTRFS" : "run as root"});
    }
  }
  auto shared = hoody::snapfs::SnapshotStore::open_shared(src->get());
  if (!shared)
    die({verb + ": open the snapshot store of " + dir, shared.error().value(),
         shared.error().value() == EACCES ? "run as root" : ""});
  return std::move(*shared);
}

nlohmann::json snapshot_json(hoody::snapfs::SnapshotStore& store, const hoody::snapfs::Snapshot& s) {
  nlohmann::json subs = nlohmann::json::array();
  if (auto st = store.subvolumes_of(s.name))
    for (auto& sv : *st)
      subs.push_back({{"name", sv.name},
                      {"uuid", sv.info.uuid},
                      {"received_uuid", sv.info.received_uuid},
                      {"parent_uuid", sv.info.parent_uuid},
                      {"key", sv.info.received_uuid.empty() ? sv.info.uuid : sv.info.received_uuid},
                      {"readonly", sv.info.readonly},
                      {"ctransid", sv.info.ctransid}});
  nlohmann::json j{{"name", s.name},
                   {"uuid", s.uuid},
                   {"created", hoody::snapfs::format_utc(s.created)},
                   {"expires", s.expires ? nlohmann::json(hoody::snapfs::format_utc(*s.expires))
                                         : nlohmann::json(nullptr)},
                   {"creator", s.creator},
                   {"type", s.type},
                   {"description", s.description},
                   {"consistency", s.consistency},
                   {"subvolumes", subs}};
  return j;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hoody-snap: take, list, delete, rename, restore, diff and clone the snapshots of "
               "a hoody-snapfs mount; send and receive them between servers, copy or sync them "
               "to another one over ssh. See hoody-snap(1)."};
  app.require_subcommand(1);
  // --mount, --pool and --container go before or after the verb.
  app.fallthrough();
  const char* env = std::getenv("HOODY_SNAPSHOTS");
  std::string mount = env && *env ? env : kDefaultMount;
  app.add_option("--mount", mount, "the hoody-snapfs mount (default $HOODY_SNAPSHOTS or /hoody/.snapshots)");

  std::string pool, container;
  app.add_option("--pool", pool, "the pool (with --container): reach the store directly, as root");
  app.add_option("--container", container, "the container id in --pool");

  std::string name, other, expire, description;
  bool json = false;

  auto* create = app.add_subcommand("create", "take a snapshot of every scope subvolume");
  create->add_option("NAME", name, "snapshot name")->required();
  auto* expire_opt = create->add_option(
      "--expire", expire, "expiry: +N with s, m, h, d or w (+7d), an RFC 3339 time, or never");
  create->add_option("--description", description, "free text kept with the snapshot");

  auto* list = app.add_subcommand("list", "list the snapshots with their metadata");
  list->add_flag("--json", json, "print .hoody/snapshots.json as it is");

  auto* del = app.add_subcommand("delete", "delete a snapshot");
  del->add_option("NAME", name, "snapshot name")->required();

  auto* ren = app.add_subcommand("rename", "rename a snapshot");
  ren->add_option("OLD", name, "current name")->required();
  ren->add_option("NEW", other, "new name")->required();

  auto* restore = app.add_subcommand("restore", "replace the live state by a snapshot "
                                                "(a safety snapshot is taken first)");
  restore->add_option("NAME", name, "snapshot name")->required();
  bool if_idle = false;
  restore->add_flag("--if-idle", if_idle,
                    "refuse (EBUSY) while a process uses the live state, and name them");

  auto* diff = app.add_subcommand("diff", "what changed from A to B (default: the live state)");
  diff->add_option("A", name, "older snapshot")->required();
  diff->add_option("B", other, "newer snapshot, or @live (default)");

  auto* sched = app.add_subcommand(
      "schedule", "show the schedule of snapshots, or set it (--every, --preserve) or --off");
  std::string every, preserve, preserve_min;
  bool onchange = false, off = false;
  sched->add_option("--every", every, "how often: 30m, 1h, 2d, hourly, daily, weekly (at least 1m)");
  sched->add_option("--preserve", preserve,
                    "which scheduled snapshots to keep, btrbk-style (default \"24h 7d 4w 12m\")");
  sched->add_option("--preserve-min", preserve_min,
                    "keep every scheduled snapshot younger than this (6h, 2d)");
  sched->add_flag("--onchange", onchange, "skip a snapshot when nothing changed since the last one");
  sched->add_flag("--off", off, "no more scheduled snapshots (the ones taken stay)");
  sched->add_flag("--json", json, "print .hoody/schedule as it is");

  auto* clone = app.add_subcommand("clone", "a writable copy of each subvolume of a snapshot in DEST");
  clone->add_option("NAME", name, "snapshot name")->required();
  clone->add_option("DEST", other, "directory on the same BTRFS filesystem (made if missing)")->required();

  auto* send = app.add_subcommand(
      "send", "write snapshot NAME (every scope subvolume, with its metadata) to stdout as one "
              "stream for `hoody-snap receive`");
  std::string parent;
  bool estimate = false, progress = false;
  send->add_option("NAME", name, "snapshot name")->required();
  send->add_option("--parent,-p", parent, "incremental against this older snapshot, which the "
                                          "receiving side holds");
  send->add_flag("--estimate", estimate, "measure the data first, so that the receiver shows an ETA");
  send->add_flag("--progress", progress, "bytes and rate on stderr");

  auto* receive = app.add_subcommand(
      "receive", "read one `hoody-snap send` stream from stdin and make it a snapshot of "
                 "--container (a new container if it does not exist)");
  std::string as_name, max_size_text;
  receive->add_option("--as", as_name, "the snapshot's name here (default: the sender's)");
  receive->add_option("--max-size", max_size_text, "refuse a stream larger than this (10G, 500M)");
  receive->add_flag("--progress", progress, "bytes, rate and ETA on stderr");
  receive->add_flag("--json", json, "print what was received as one JSON object");

  // The store's own log lines (recovery of an interrupted receive): warnings
  // and up unless $HOODY_LOG says otherwise.
  {
    const char* lv = std::getenv("HOODY_LOG");
    hoody::log::init({lv && *lv ? "" : "warn", hoody::log::Sink::stderr_, "hoody-snap"});
  }
  auto* common = app.add_subcommand(
      "common-parent", "the newest snapshot of this container that the other side holds too "
                       "(the parent for an incremental send), from the other side's "
                       "`list --json --pool ... --container ...`");
  std::string peer_list = "-";
  common->add_option("FILE", peer_list, "the other side's list --json (default: stdin)");
  common->add_flag("--json", json, "print {\"local\": NAME, \"remote\": NAME}");

  // copy, sync, serve (cli/remote.cpp).
  hoody::snapcli::RemoteArgs remote;
  auto remote_cmds = hoody::snapcli::add_remote_commands(app, remote);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every other parse error is a usage error: 2,
    // said with the arguments it echoes escaped.
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "hoody-snap: %s\nRun with --help for more information.\n",
                 shown(e.what()).c_str());
    return kUsageExit;
  }
  while (mount.size() > 1 && mount.back() == '/') mount.pop_back();
  if ((!pool.empty() || !container.empty()) && !*send && !*receive && !*list && !*common &&
      !*remote_cmds.copy && !*remote_cmds.sync && !*remote_cmds.serve) {
    std::fprintf(stderr, "hoody-snap: --pool and --container are for send, receive, list, "
                         "common-parent, copy, sync and serve; the other commands work through "
                         "the mount (--mount)\n");
    return kUsageExit;
  }

  if (remote.container.empty()) remote.container = container;
  if (remote.pool.empty()) remote.pool = pool;
  if (*remote_cmds.copy) return hoody::snapcli::run_copy(remote, mount);
  if (*remote_cmds.sync) return hoody::snapcli::run_sync(remote, mount);
  if (*remote_cmds.serve) {
    remote.verb = remote_cmds.serve->remaining();
    return hoody::snapcli::run_serve(remote);
  }

  if (*create) {
    // Everything is checked before the snapshot is taken; a failure after it
    // deletes the snapshot again, so a failed create leaves nothing behind.
    check_name("create", name, NameUse::new_name);
    bool with_expiry = expire_opt->count() > 0;
    if (with_expiry) {
      std::string why;
      // The daemon's own parser: what it would refuse is refused here, before acting.
      auto e = hoody::snapfs::parse_expiry(expire, hoody::snapfs::Clock::now(), &why);
      if (!e) die({"create " + q(name), e.err(), why});
    }
    if (description.size() > hoody::snapfs::kMaxDescriptionBytes)
      die({"create " + q(name), E2BIG,
           "a description is at most " + std::to_string(hoody::snapfs::kMaxDescriptionBytes) +
               " bytes"});
    check_mount(mount);
    std::string path = mount + "/" + name;
    if (::mkdir(path.c_str(), 0755) < 0) {
      int e = errno;
      die({"create " + q(name), e, hint_for("create", e, mount)});
    }
    auto undo = [&](Failure f) {
      if (::rmdir(path.c_str()) == 0) {
        f.hint += std::string(f.hint.empty() ? "" : "; ") + "the snapshot was deleted again";
      } else {
        int e = errno;
        f.hint += std::string(f.hint.empty() ? "" : "; ") + "the snapshot " + q(name) +
                  " was taken and could not be deleted (" + std::strerror(e) +
                  "): delete it with `hoody-snap delete " + name + "`";
      }
      die(f);
    };
    if (with_expiry)
      if (auto f = set_meta(path, name, "user.hoody.expires", expire, mount)) undo(*f);
    if (!description.empty())
      if (auto f = set_meta(path, name, "user.hoody.description", description, mount)) undo(*f);
    std::printf("created %s\n", shown(name).c_str());
    return 0;
  }
  if (*send) {
    check_name("send", name, NameUse::existing);
    if (!parent.empty()) check_name("send --parent", parent, NameUse::existing);
    if (::isatty(1))
      die({"send " + q(name), ENOTTY, "stdout is a terminal: pipe it into `hoody-snap receive` "
                                      "(or ssh HOST hoody-snap receive ...)"});
    ::signal(SIGPIPE, SIG_IGN);
    std::string dir = container_dir(pool, container, mount, "send");
    auto store = open_store(dir, "send", false);
    hoody::snapcli::Progress prog("sent", progress);
    prog.always_last();
    hoody::snapfs::SendOptions o;
    o.parent = parent;
    o.estimate = estimate;
    uint64_t sent = 0;
    o.sent = &sent;
    o.progress = [&](uint64_t b) { prog.update(b, 0); };
    std::string why;
    auto st = store->send_to(name, o, 1, &why);
    if (!st) die({"send " + q(name), st.error().value(), why});
    prog.done(sent);
    return 0;
  }
  if (*receive) {
    if (pool.empty() || container.empty()) {
      std::fprintf(stderr, "hoody-snap: receive: --pool POOL --container C are required\n");
      return kUsageExit;
    }
    if (!as_name.empty()) check_name("receive --as", as_name, NameUse::new_name);
    uint64_t max_size = 0;
    if (!max_size_text.empty()) {
      auto m = parse_size(max_size_text);
      if (!m || *m == 0) {
        std::fprintf(stderr, "hoody-snap: receive: --max-size %s: give bytes, or a number with "
                             "K, M, G or T (binary units)\n", shown(max_size_text).c_str());
        return kUsageExit;
      }
      max_size = *m;
    }
    if (::isatty(0))
      die({"receive", ENOTTY, "stdin is a terminal: pipe `hoody-snap send` into it"});
    ::signal(SIGPIPE, SIG_IGN);
    std::string dir = container_dir(pool, container, mount, "receive");
    // A new container: its directory is made here and removed again if the
    // receive fails.
    bool made_dir = false;
    {
      struct stat st;
      if (::stat((pool + "/containers").c_str(), &st) < 0) {
        int e = errno;
        die({"receive: " + pool, e, "no pool there (POOL/containers is missing)"});
      }
      if (::mkdir(dir.c_str(), 0755) == 0) made_dir = true;
      else if (errno != EEXIST) {
        int e = errno;
        die({"receive: make " + dir, e, ""});
      }
    }
    auto store = open_store(dir, "receive", true);
    auto scope = store->scope();
    bool make_live = scope && scope->empty();
    hoody::snapcli::Progress prog("received", progress);
    prog.always_last();
    hoody::snapfs::ReceiveOptions o;
    o.as_name = as_name;
    o.max_size = max_size;
    if (const char* b = std::getenv("HOODY_BTRFS"); b && *b) o.btrfs = b;
    hoody::snapfs::ReceiveReport report;
    o.report = &report;
    o.progress = [&](uint64_t b, uint64_t e) { prog.update(b, e); };
    std::string why;
    hoody::snapfs::Caller caller{::getuid(), ::getpid()};
    auto snap = store->receive_from(0, caller, o, &why);
    if (!snap) {
      if (made_dir) {
        store.reset();
        std::string sd = dir + "/" + hoody::snapfs::kStoreDir;
        for (const char* f : {"index.db", "index.db-wal", "index.db-shm", "lock"})
          ::unlink((sd + "/" + f).c_str());
        ::rmdir(sd.c_str());
        ::rmdir(dir.c_str());
      }
      die({"receive", snap.error().value(), why});
    }
    prog.done(report.bytes);
    std::vector<std::string> made_live;
    if (make_live) {
      auto made = store->make_live(snap->name);
      if (!made)
        die({"receive: make the live subvolumes of " + dir + " from " + q(snap->name),
             made.error().value(), "the snapshot was kept; `hoody-snap clone` makes them by hand"});
      made_live = *made;
    }
    if (json) {
      nlohmann::json out{{"name", snap->name},       {"uuid", snap->uuid},
                         {"parent", report.parent.empty() ? nlohmann::json(nullptr)
                                                          : nlohmann::json(report.parent)},
                         {"bytes", report.bytes},    {"seconds", report.seconds},
                         {"subvolumes", report.subvolumes}, {"created_live", made_live}};
      std::printf("%s\n", out.dump().c_str());
      return 0;
    }
    std::printf("received %s (%s, %s in %.2f s)\n", shown(snap->name).c_str(),
                report.parent.empty() ? "full" : ("incremental from " + shown(report.parent)).c_str(),
                hoody::snapfs::xfer::human_bytes(static_cast<double>(report.bytes)).c_str(),
                report.seconds);
    {
      for (auto& m : made_live)
        std::printf("created %s/%s (a writable copy of %s)\n", shown(dir).c_str(), shown(m).c_str(),
                    shown(snap->name).c_str());
    }
    return 0;
  }
  if (*common) {
    std::string text;
    if (peer_list == "-") {
      std::ostringstream ss;
      ss << std::cin.rdbuf();
      text = ss.str();
    } else {
      text = read_all(peer_list, "common-parent: read " + peer_list, mount);
    }
    auto theirs = nlohmann::json::parse(text, nullptr, false);
    if (!theirs.is_array())
      die({"common-parent", EBADMSG, "the other side's list is not the JSON array of "
                                     "`hoody-snap list --json --pool POOL --container C`"});
    // name -> key of each subvolume; equal maps: the same snapshot.
    auto keys_of = [](const nlohmann::json& snap) {
      std::map<std::string, std::string> k;
      if (snap.is_object() && snap.contains("subvolumes") && snap["subvolumes"].is_array())
        for (auto& sv : snap["subvolumes"])
          if (sv.is_object() && sv.contains("name") && sv["name"].is_string() &&
              sv.contains("key") && sv["key"].is_string())
            k[sv["name"].get<std::string>()] = sv["key"].get<std::string>();
      return k;
    };
    std::map<std::map<std::string, std::string>, std::string> remote;
    for (auto& r : theirs) {
      auto k = keys_of(r);
      if (!k.empty() && r.contains("name") && r["name"].is_string())
        remote[k] = r["name"].get<std::string>();
    }
    std::string dir = container_dir(pool, container, mount, "common-parent");
    auto store = open_store(dir, "common-parent", false);
    auto all = store->list();
    if (!all) die({"common-parent", all.error().value(), ""});
    for (auto it = all->rbegin(); it != all->rend(); ++it) {
      auto k = keys_of(snapshot_json(*store, *it));
      auto r = remote.find(k);
      if (k.empty() || r == remote.end()) continue;
      if (json)
        std::printf("%s\n", nlohmann::json{{"local", it->name}, {"remote", r->second}}.dump().c_str());
      else
        std::printf("%s\n", shown(it->name).c_str());
      return 0;
    }
    die({"common-parent", ENOENT, "the two sides hold no snapshot in common: send a full stream"});
  }
  if (*list && (!pool.empty() || !container.empty())) {
    std::string dir = container_dir(pool, container, mount, "list");
    auto store = open_store(dir, "list", false);
    auto all = store->list();
    if (!all) die({"list", all.error().value(), ""});
    nlohmann::json out = nlohmann::json::array();
    for (auto& s : *all) out.push_back(snapshot_json(*store, s));
    if (json) {
      std::printf("%s\n", out.dump(2).c_str());
      return 0;
    }
    std::printf("%-32s %-20s %-10s %s\n", "NAME", "CREATED", "TYPE", "DESCRIPTION");
    for (auto& s : *all)
      std::printf("%-32s %-20s %-10s %s\n", shown(s.name).c_str(),
                  hoody::snapfs::format_utc(s.created).c_str(), shown(s.type).c_str(),
                  shown(s.description).c_str());
    return 0;
  }
  if (*list) {
    check_mount(mount);
    std::string text = read_all(mount + "/.hoody/snapshots.json", "list", mount);
    if (json) {
      std::fputs(text.c_str(), stdout);
      return 0;
    }
    nlohmann::json all;
    try {
      all = nlohmann::json::parse(text);
    } catch (const std::exception& ex) {
      die({"list", EBADMSG, std::string("snapshots.json is not JSON: ") + ex.what()});
    }
    std::printf("%-32s %-20s %-20s %-7s %s\n", "NAME", "CREATED", "EXPIRES", "CREATOR", "DESCRIPTION");
    // One row per snapshot, whatever the bytes of a name or description: each
    // field is escaped (a newline or ESC in a description cannot forge a row or
    // a colour).
    for (auto& s : all) {
      std::string exp = s["expires"].is_null() ? "-" : s["expires"].get<std::string>();
      std::printf("%-32s %-20s %-20s %-7u %s\n", shown(s["name"].get<std::string>()).c_str(),
                  shown(s["created"].get<std::string>()).c_str(), shown(exp).c_str(),
                  s["creator"].get<unsigned>(), shown(s["description"].get<std::string>()).c_str());
    }
    return 0;
  }
  if (*del) {
    check_name("delete", name, NameUse::existing);
    check_mount(mount);
    if (::rmdir((mount + "/" + name).c_str()) < 0) {
      int e = errno;
      die({"delete " + q(name), e, hint_for("delete", e, mount)});
    }
    std::printf("deleted %s\n", shown(name).c_str());
    return 0;
  }
  if (*ren) {
    check_name("rename", name, NameUse::existing);
    check_name("rename to", other, NameUse::new_name);
    check_mount(mount);
    std::string from = mount + "/" + name, to = mount + "/" + other;
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) < 0) {
      int e = errno;
      die({"rename " + q(name) + " to " + q(other), e, hint_for("rename", e, mount)});
    }
    std::printf("renamed %s to %s\n", shown(name).c_str(), shown(other).c_str());
    return 0;
  }
  if (*restore) {
    if (name == hoody::snapfs::kLive)
      die({"restore " + q(name), EINVAL, "@live is the live state, not a snapshot; name a snapshot"});
    check_name("restore", name, NameUse::existing);
    check_mount(mount);
    std::string path = mount + "/.hoody/restore";
    // O_RDWR: the result is read back (safety snapshot, processes to
    // restart, why it failed).  A daemon older than that refuses O_RDWR.
    bool readback = true;
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == EACCES) {
      readback = false;
      fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    }
    if (fd < 0) {
      int e = errno;
      die({"restore " + q(name), e, hint_for("restore", e, mount)});
    }
    std::string line = name + (if_idle ? " if-idle" : "") + "\n";
    ssize_t n = ::write(fd, line.data(), line.size());
    int e = n < 0 ? errno : 0;
    nlohmann::json result;
    if (readback) {
      std::string text(65536, '\0');
      ssize_t r = ::pread(fd, text.data(), text.size(), 0);
      if (r > 0) {
        text.resize(static_cast<size_t>(r));
        result = nlohmann::json::parse(text, nullptr, false);
      }
    }
    ::close(fd);
    auto holders = [&](const char* key) {
      std::string out;
      if (result.is_object() && result.contains(key) && result[key].is_array())
        for (auto& h : result[key]) {
          out += "  " + std::to_string(h.value("pid", 0)) + " " + shown(h.value("comm", "?"));
          std::string p = h.value("path", "");
          if (!p.empty()) out += " (" + shown(p) + ")";
          out += "\n";
        }
      return out;
    };
    if (n < 0) {
      std::string why = result.is_object() ? result.value("error", "") : "";
      std::string busy = holders("holders");
      if (!busy.empty()) {
        std::fprintf(stderr, "hoody-snap: restore %s: %s; these processes use the live state:\n%s",
                     q(name).c_str(), std::strerror(e), busy.c_str());
        std::exit(1);
      }
      die({"restore " + q(name), e, why.empty() ? hint_for("restore", e, mount) : why});
    }
    std::string safety = result.is_object() ? result.value("safety", "") : "";
    std::printf("restored %s (the state before it is kept as %s)\n", shown(name).c_str(),
                safety.empty() ? "a pre-restore-* snapshot" : shown(safety).c_str());
    std::string stale = holders("stale_holders");
    if (!stale.empty())
      std::fprintf(stderr,
                   "hoody-snap: these processes still use the state before the restore; "
                   "restart them:\n%s",
                   stale.c_str());
    return 0;
  }
  if (*sched) {
    check_mount(mount);
    std::string path = mount + "/.hoody/schedule";
    bool setting = off || !every.empty() || !preserve.empty() || !preserve_min.empty() || onchange;
    if (!setting) {
      std::string text = read_all(path, "schedule", mount);
      if (json) {
        std::fputs(text.c_str(), stdout);
        return 0;
      }
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(text);
      } catch (const std::exception& ex) {
        die({"schedule", EBADMSG, std::string(".hoody/schedule is not JSON: ") + ex.what()});
      }
      auto str = [&](const char* k) {
        return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string("-");
      };
      if (!j.value("enabled", false)) {
        std::printf("schedule: off\n");
        return 0;
      }
      std::printf("schedule: every %s, preserve %s%s%s%s\n", str("every").c_str(),
                  str("preserve").c_str(), j["preserve_min"].is_string() ? ", preserve_min " : "",
                  j["preserve_min"].is_string() ? str("preserve_min").c_str() : "",
                  j.value("onchange", false) ? ", onchange" : "");
      std::printf("last scheduled snapshot: %s\n", str("last_taken").c_str());
      return 0;
    }
    std::string request;
    if (off) {
      if (!every.empty() || !preserve.empty() || !preserve_min.empty() || onchange) {
        std::fprintf(stderr, "hoody-snap: schedule: --off takes no other option\n");
        return 2;
      }
      request = "off\n";
    } else {
      if (every.empty()) {
        std::fprintf(stderr, "hoody-snap: schedule: --every is required to set a schedule\n");
        return 2;
      }
      nlohmann::json r{{"every", every}, {"onchange", onchange}};
      if (!preserve.empty()) r["preserve"] = preserve;
      if (!preserve_min.empty()) r["preserve_min"] = preserve_min;
      request = r.dump() + "\n";
    }
    int fd = ::open(path.c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      die({"schedule", e, hint_for("schedule", e, mount)});
    }
    ssize_t n = ::write(fd, request.data(), request.size());
    int e = errno;
    ::close(fd);
    if (n < 0)
      die({"schedule", e,
           e == EINVAL ? "--every is N with m, h, d or w (at least 1m) or hourly/daily/weekly; "
                         "--preserve is like \"24h 7d 4w 12m\" (h d w m y, * for all) or all"
                       : hint_for("schedule", e, mount)});
    if (off)
      std::printf("schedule off\n");
    else
      std::printf("schedule set: every %s\n", every.c_str());
    return 0;
  }
  if (*diff) {
    check_name("diff", name, NameUse::existing);
    if (other.empty()) other = std::string(hoody::snapfs::kLive);
    if (other != hoody::snapfs::kLive) check_name("diff", other, NameUse::existing);
    check_mount(mount);
    std::string text = read_all(mount + "/.hoody/diff/" + name + ".." + other,
                                "diff " + q(name) + " " + q(other), mount);
    // The daemon escapes the paths already ("\\" for a backslash): only
    // control bytes that got through are escaped here; the newlines end lines.
    std::string out;
    for (size_t start = 0; start < text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      out += hoody::escape_control(std::string_view(text).substr(start, end - start), false);
      if (end < text.size()) out += '\n';
      start = end + 1;
    }
    std::fputs(out.c_str(), stdout);
    return 0;
  }
  if (*clone) {
    // Everything that can be checked is checked before DEST is touched; a
    // failure after that deletes what this clone made (the copies, and DEST
    // when it was made here), so a failed clone leaves nothing behind.
    check_name("clone", name, NameUse::existing);
    check_mount(mount);
    std::string snap = mount + "/" + name;
    char uuid[128] = {};
    ssize_t n = ::getxattr(snap.c_str(), "user.hoody.uuid", uuid, sizeof uuid - 1);
    if (n < 0) {
      int e = errno;
      die({"clone " + q(name), e, hint_for("clone", e, mount)});
    }
    std::string source = mount_source(mount);
    if (source.empty())
      die({"clone " + q(name), ENODEV, "cannot find the SOURCE of " + mount + " in /proc/self/mountinfo"});
    std::string store = source + "/.snapshots/" + std::string(uuid, static_cast<size_t>(n));
    auto sdir = hoody::sys::open(store.c_str(), O_RDONLY | O_DIRECTORY);
    if (!sdir)
      die({"clone " + q(name), sdir.error().value(),
           "the store " + store + " must be readable: run as root"});
    std::vector<std::string> subs;
    {
      auto d = hoody::sys::opendir_at(sdir->get(), ".");
      if (!d) die({"clone " + q(name), d.error().value(), ""});
      while (auto* ent = ::readdir(d->get())) {
        std::string sub = ent->d_name;
        if (sub != "." && sub != "..") subs.push_back(sub);
      }
    }
    std::sort(subs.begin(), subs.end());
    bool made_dest = false;
    if (::mkdir(other.c_str(), 0755) == 0) {
      made_dest = true;
    } else if (errno != EEXIST) {
      int e = errno;
      die({"clone: make " + other, e, ""});
    }
    auto ddir = hoody::sys::open(other.c_str(), O_RDONLY | O_DIRECTORY);
    std::vector<std::string> made;
    auto undo = [&](Failure f) {
      bool clean = true;
      for (auto it = made.rbegin(); it != made.rend(); ++it)
        if (!hoody::btrfs::delete_subvolume(ddir->get(), it->c_str())) clean = false;
      if (made_dest && ::rmdir(other.c_str()) < 0) clean = false;
      if (!clean) f.hint += std::string(f.hint.empty() ? "" : "; ") + "some of " + other + " is left";
      die(f);
    };
    if (!ddir) {
      int e = ddir.error().value();
      if (made_dest) ::rmdir(other.c_str());
      die({"clone: open " + other, e, ""});
    }
    for (auto& sub : subs) {
      struct stat st;
      if (::fstatat(ddir->get(), sub.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0)
        undo({"clone " + q(name) + ": " + sub + " into " + other, EEXIST,
              other + "/" + sub + " exists already; pick an empty DEST"});
    }
    std::string report;
    for (auto& sub : subs) {
      auto from = hoody::btrfs::open_dir(sdir->get(), sub.c_str());
      if (!from) undo({"clone " + q(name) + ": " + sub, from.error().value(), ""});
      auto s = hoody::btrfs::snapshot(from->get(), ddir->get(), sub.c_str(), false);
      if (!s) {
        int e = s.error().value();
        undo({"clone " + q(name) + ": " + sub + " into " + other, e,
              e == EXDEV ? "DEST must be on the same BTRFS filesystem as " + source
              : e == EEXIST ? other + "/" + sub + " exists already; pick an empty DEST"
              : e == EPERM ? "btrfs snapshots need root (CAP_SYS_ADMIN)" : ""});
      }
      made.push_back(sub);
      report += "cloned " + shown(name) + "/" + shown(sub) + " -> " + shown(other) + "/" +
                shown(sub) + " (writable)\n";
    }
    std::fputs(report.c_str(), stdout);
    return 0;
  }
  return 0;
}
