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

// Control characters (a process name, a path) shown as \xNN, never raw.
std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// The usual reasons, said for a person.
std::string hint_for(const std::string& verb, int err, const std::string& mount) {
  switch (err) {
    case EPERM:
      return "only root and the users and groups named in the mount's allow_users=/allow_groups= "
             "may " + verb + " snapshots";
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
  if (!hoody::validate_snapshot_name(name, &why))
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
  bool if_idle = false;
  restore->add_flag("--if-idle", if_idle,
                    "refuse (EBUSY) while a process uses the live state, and name them");

  auto* diff = app.add_subcommand("diff", "what changed from A to B (default: the live state)");
  diff->add_option("A", name, "older snapshot")->required();
  diff->add_option("B", other, "newer snapshot, or @live (default)");

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
          out += "  " + std::to_string(h.value("pid", 0)) + " " + printable(h.value("comm", "?"));
          std::string p = h.value("path", "");
          if (!p.empty()) out += " (" + printable(p) + ")";
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
      die({"restore " + q(name), e, why.empty() ? hint_for("restore", e, mount) : printable(why)});
    }
    std::string safety = result.is_object() ? result.value("safety", "") : "";
    std::printf("restored %s (the state before it is kept as %s)\n", name.c_str(),
                safety.empty() ? "a pre-restore-* snapshot" : safety.c_str());
    std::string stale = holders("stale_holders");
    if (!stale.empty())
      std::fprintf(stderr,
                   "hoody-snap: these processes still use the state before the restore; "
                   "restart them:\n%s",
                   stale.c_str());
    return 0;
  }
  if (*diff) {
    check_name("diff", name);
    if (other.empty()) other = "@live";
    if (other != "@live") check_name("diff", other);
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
