// hoody-snap: the snapshot verbs of hoody-snapfs from the command line.  It
// works through the mount (default /hoody/.snapshots, or $HOODY_SNAPSHOTS, or
// --mount): mkdir, rmdir, rename, xattrs and the control files of .hoody/.
// Only `clone` reaches past the mount, to the real store (SOURCE/.snapshots,
// the fsname of the mount), because a writable copy is a btrfs snapshot.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <optional>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "../snapshot_name.hpp"
#include "remote.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/mountinfo.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store/format.hpp"

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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hoody-snap: take, list, delete, rename, restore, diff and clone the snapshots of "
               "a hoody-snapfs mount, and copy or sync them to another server. See hoody-snap(1)."};
  app.require_subcommand(1);
  const char* env = std::getenv("HOODY_SNAPSHOTS");
  std::string mount = env && *env ? env : kDefaultMount;
  app.add_option("--mount", mount, "the hoody-snapfs mount (default $HOODY_SNAPSHOTS or /hoody/.snapshots)");

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
