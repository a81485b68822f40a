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
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "../snapshot_name.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"

namespace {

constexpr const char* kDefaultMount = "/hoody/.snapshots";

struct Failure {
  std::string what;  // "create \"x\""
  int err = 0;
  std::string hint;  // what to do
};

[[noreturn]] void die(const Failure& f) {
  std::fprintf(stderr, "hoody-snap: %s: %s%s%s\n", f.what.c_str(),
               f.err ? std::strerror(f.err) : "failed", f.hint.empty() ? "" : "; ",
               f.hint.c_str());
  std::exit(1);
}

std::string q(const std::string& name) { return hoody::quote_name(name); }

// The usual reasons, said for a person.
std::string hint_for(const std::string& verb, int err, const std::string& mount) {
  switch (err) {
    case EPERM:
      return "only root and the users and groups named in the mount's allow_users=/allow_groups= "
             "may " + verb + (verb == "schedule" ? "" : " snapshots");
    case EACCES: return "permission denied by the mount; run as root or ask an administrator";
    case EEXIST: return "that name is taken; pick another or delete the old one first";
    case ENOENT: return "no such snapshot; `hoody-snap list` shows the names";
    case EINVAL: return "names are 1-255 bytes of A-Z a-z 0-9 . _ : @ + -, not starting with '.' or '-'";
    case EBUSY: return "another restore or change is running; try again when it is done";
    case ENOTCONN:
      return "the hoody-snapfs daemon behind " + mount + " is gone; remount it (umount -l " + mount +
             " && mount " + mount + ")";
    case EROFS: return "snapshot contents are read-only; use `hoody-snap clone` for a writable copy";
    case EXDEV: return "snapshots move only within " + mount;
    default: return "";
  }
}

void check_name(const std::string& verb, const std::string& name) {
  std::string why;
  if (!hoody::snapfs::check_snapshot_name(name, &why))
    die({verb + " " + q(name), EINVAL, why});
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

void set_meta(const std::string& path, const std::string& name, const char* key,
              const std::string& value, const std::string& mount) {
  if (::setxattr(path.c_str(), key, value.data(), value.size(), 0) < 0) {
    int e = errno;
    std::string hint = e == EINVAL ? "an expiry is +N with m, h, d or w (+7d) or an RFC 3339 time"
                                   : hint_for("change", e, mount);
    die({std::string("set ") + key + " of " + q(name), e, hint});
  }
}

// The SOURCE of the mount (its fsname in /proc/self/mountinfo).
std::string mount_source(const std::string& mount) {
  char real[PATH_MAX];
  std::string want = ::realpath(mount.c_str(), real) ? real : mount;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    std::string id, parent, devno, root, mnt;
    ls >> id >> parent >> devno >> root >> mnt;
    if (mnt != want) continue;
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string type, source;
    rest >> type >> source;
    if (type != "fuse.hoody-snapfs") continue;
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    std::string out;
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\\' && i + 3 < source.size()) {
        out += static_cast<char>(std::stoi(source.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        out += source[i];
      }
    }
    return out;
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hoody-snap: take, list, delete, rename, restore, diff and clone the snapshots of "
               "a hoody-snapfs mount. See hoody-snap(1)."};
  app.require_subcommand(1);
  const char* env = std::getenv("HOODY_SNAPSHOTS");
  std::string mount = env && *env ? env : kDefaultMount;
  app.add_option("--mount", mount, "the hoody-snapfs mount (default $HOODY_SNAPSHOTS or /hoody/.snapshots)");

  std::string name, other, expire, description;
  bool json = false;

  auto* create = app.add_subcommand("create", "take a snapshot of every scope subvolume");
  create->add_option("NAME", name, "snapshot name")->required();
  create->add_option("--expire", expire, "expiry: +N with m, h, d or w (+7d), or an RFC 3339 time");
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

  CLI11_PARSE(app, argc, argv);
  while (mount.size() > 1 && mount.back() == '/') mount.pop_back();

  if (*create) {
    check_name("create", name);
    check_mount(mount);
    std::string path = mount + "/" + name;
    if (::mkdir(path.c_str(), 0755) < 0) {
      int e = errno;
      die({"create " + q(name), e, hint_for("create", e, mount)});
    }
    if (!expire.empty()) set_meta(path, name, "user.hoody.expires", expire, mount);
    if (!description.empty()) set_meta(path, name, "user.hoody.description", description, mount);
    std::printf("created %s\n", name.c_str());
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
    for (auto& s : all) {
      std::string exp = s["expires"].is_null() ? "-" : s["expires"].get<std::string>();
      std::printf("%-32s %-20s %-20s %-7u %s\n", s["name"].get<std::string>().c_str(),
                  s["created"].get<std::string>().c_str(), exp.c_str(), s["creator"].get<unsigned>(),
                  s["description"].get<std::string>().c_str());
    }
    return 0;
  }
  if (*del) {
    check_name("delete", name);
    check_mount(mount);
    if (::rmdir((mount + "/" + name).c_str()) < 0) {
      int e = errno;
      die({"delete " + q(name), e, hint_for("delete", e, mount)});
    }
    std::printf("deleted %s\n", name.c_str());
    return 0;
  }
  if (*ren) {
    check_name("rename", name);
    check_name("rename to", other);
    check_mount(mount);
    std::string from = mount + "/" + name, to = mount + "/" + other;
    if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) < 0) {
      int e = errno;
      die({"rename " + q(name) + " to " + q(other), e, hint_for("rename", e, mount)});
    }
    std::printf("renamed %s to %s\n", name.c_str(), other.c_str());
    return 0;
  }
  if (*restore) {
    check_name("restore", name);
    check_mount(mount);
    std::string path = mount + "/.hoody/restore";
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      die({"restore " + q(name), e, hint_for("restore", e, mount)});
    }
    std::string line = name + "\n";
    ssize_t n = ::write(fd, line.data(), line.size());
    int e = errno;
    ::close(fd);
    if (n < 0) die({"restore " + q(name), e, hint_for("restore", e, mount)});
    std::printf("restored %s (the state before it is kept as a pre-restore-* snapshot)\n", name.c_str());
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
    check_name("diff", name);
    if (other.empty()) other = std::string(hoody::snapfs::kLive);
    if (other != hoody::snapfs::kLive) check_name("diff", other);
    check_mount(mount);
    std::string text = read_all(mount + "/.hoody/diff/" + name + ".." + other,
                                "diff " + q(name) + " " + q(other), mount);
    std::fputs(text.c_str(), stdout);
    return 0;
  }
  if (*clone) {
    check_name("clone", name);
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
    if (::mkdir(other.c_str(), 0755) < 0 && errno != EEXIST) {
      int e = errno;
      die({"clone: make " + other, e, ""});
    }
    auto ddir = hoody::sys::open(other.c_str(), O_RDONLY | O_DIRECTORY);
    if (!ddir) die({"clone: open " + other, ddir.error().value(), ""});
    auto subs = hoody::sys::opendir_at(sdir->get(), ".");
    if (!subs) die({"clone " + q(name), subs.error().value(), ""});
    while (auto* ent = ::readdir(subs->get())) {
      std::string sub = ent->d_name;
      if (sub == "." || sub == "..") continue;
      auto from = hoody::btrfs::open_dir(sdir->get(), sub.c_str());
      if (!from) die({"clone " + q(name) + ": " + sub, from.error().value(), ""});
      auto s = hoody::btrfs::snapshot(from->get(), ddir->get(), sub.c_str(), false);
      if (!s) {
        int e = s.error().value();
        die({"clone " + q(name) + ": " + sub + " into " + other, e,
             e == EXDEV ? "DEST must be on the same BTRFS filesystem as " + source
             : e == EEXIST ? other + "/" + sub + " exists already; pick an empty DEST"
             : e == EPERM ? "btrfs snapshots need root (CAP_SYS_ADMIN)" : ""});
      }
      std::printf("cloned %s/%s -> %s/%s (writable)\n", name.c_str(), sub.c_str(), other.c_str(), sub.c_str());
    }
    return 0;
  }
  return 0;
}
