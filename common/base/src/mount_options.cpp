#include "hoody/mount_options.hpp"

#include <cerrno>
#include <cstdlib>
#include <sstream>

namespace hoody {

namespace {

// Options handed to the kernel mount as flags or mount data (libfuse knows these).
const char* const kKernelFlags[] = {"allow_other", "default_permissions", "ro", "rw", "suid",
                                    "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync",
                                    "atime", "noatime", "dirsync"};

bool is_kernel_flag(std::string_view name) {
  for (auto* k : kKernelFlags)
    if (name == k) return true;
  return false;
}

// fstab and mount(8) options that mean nothing to a daemon.
bool is_ignored_by_prefix(std::string_view name) {
  return name.rfind("x-", 0) == 0 || name.rfind("comment=", 0) == 0;
}

std::vector<std::string> split_commas(std::string_view s) {
  // A backslash escapes a comma (libfuse's convention for fsname=).
  std::vector<std::string> out;
  std::string cur;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size()) {
      cur += s[++i];
    } else if (s[i] == ',') {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += s[i];
    }
  }
  out.push_back(cur);
  return out;
}

void apply_option(MountArgs& args, const OptionTable& table, const std::string& item) {
  if (item.empty()) return;  // "-o a,,b" is tolerated, as mount(8) does
  auto eq = item.find('=');
  std::string name = item.substr(0, eq);
  std::string value = eq == std::string::npos ? "" : item.substr(eq + 1);
  if (is_ignored_by_prefix(item)) return;
  const OptSpec* spec = table.find(name);
  if (!spec) throw UsageError("unknown option '" + name + "' (see --help for the options)");
  auto need_value = [&] {
    if (eq == std::string::npos || value.empty())
      throw UsageError("option '" + name + "' needs a value: -o " + name + "=...");
  };
  switch (spec->kind) {
    case OptKind::ignored: return;
    case OptKind::flag:
      if (eq != std::string::npos)
        throw UsageError("option '" + name + "' takes no value, got '" + item + "'");
      args.opts[name] = "1";
      // ro and rw cancel each other, as on mount(8): the last one wins.
      if (name == "ro") args.opts.erase("rw");
      if (name == "rw") args.opts.erase("ro");
      return;
    case OptKind::string: need_value(); break;
    case OptKind::uint: {
      need_value();
      char* end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (errno || *end || value[0] == '-' || (v == 0 && value != "0"))
        throw UsageError("option '" + name + "': '" + value + "' is not a whole number");
      break;
    }
    case OptKind::seconds: {
      need_value();
      char* end = nullptr;
      errno = 0;
      double v = std::strtod(value.c_str(), &end);
      if (errno || *end || v < 0)
        throw UsageError("option '" + name + "': '" + value + "' is not a number of seconds");
      break;
    }
    case OptKind::choice: {
      need_value();
      bool found = false;
      std::string all;
      for (auto& c : spec->choices) {
        found |= (c == value);
        all += (all.empty() ? "" : "|") + c;
      }
      if (!found)
        throw UsageError("option '" + name + "': '" + value + "' is not one of " + all);
      break;
    }
  }
  args.opts[name] = value;
}

}  // namespace

bool MountArgs::flag(const std::string& name, bool dflt) const {
  auto it = opts.find(name);
  return it == opts.end() ? dflt : true;
}

std::string MountArgs::str(const std::string& name, const std::string& dflt) const {
  auto it = opts.find(name);
  return it == opts.end() ? dflt : it->second;
}

uint64_t MountArgs::uint(const std::string& name, uint64_t dflt) const {
  auto it = opts.find(name);
  return it == opts.end() ? dflt : std::strtoull(it->second.c_str(), nullptr, 10);
}

double MountArgs::seconds(const std::string& name, double dflt) const {
  auto it = opts.find(name);
  return it == opts.end() ? dflt : std::strtod(it->second.c_str(), nullptr);
}

OptionTable OptionTable::generic() {
  OptionTable t;
  t.add({"allow_other", OptKind::flag, "let users other than the mounting one use the mount"})
      .add({"default_permissions", OptKind::flag,
            "let the kernel check permissions from the file modes (always on with allow_other)"})
      .add({"ro", OptKind::flag, "mount read-only"})
      .add({"rw", OptKind::flag, "mount read-write (the default)"});
  for (const char* f : {"suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync",
                        "atime", "noatime", "dirsync"})
    t.add({f, OptKind::flag, "passed to the kernel mount"});
  for (const char* f : {"auto", "noauto", "user", "nouser", "users", "_netdev", "nofail",
                        "defaults", "relatime", "norelatime", "strictatime", "lazytime",
                        "nolazytime", "allow_root", "auto_unmount"})
    t.add({f, OptKind::ignored, "accepted for fstab, no effect"});
  t.add({"fsname", OptKind::string, "the source name shown in /proc/mounts (default: SOURCE)"})
      .add({"subtype", OptKind::string, "the fuse subtype shown in /proc/mounts"})
      .add({"max_threads", OptKind::uint, "most worker threads of the FUSE loop (default 2 x cores)"})
      .add({"clone_fd", OptKind::flag, "one /dev/fuse fd per worker thread (on by default)"})
      .add({"noclone_fd", OptKind::flag, "share one /dev/fuse fd between workers"})
      .add({"io", OptKind::choice, "backing I/O engine", {"uring", "sync"}})
      .add({"transport", OptKind::choice,
            "how requests reach the daemon: uring (FUSE over io_uring where the kernel "
            "offers it, else /dev/fuse; the default) or dev (/dev/fuse only)",
            {"uring", "dev"}})
      .add({"uring_depth", OptKind::uint, "ring entries per CPU queue at start (default 8)"})
      .add({"log_level", OptKind::choice, "log level",
            {"trace", "debug", "info", "warn", "error", "critical", "off"}})
      .add({"log", OptKind::choice, "where the log goes", {"stderr", "syslog"}});
  return t;
}

OptionTable& OptionTable::add(OptSpec spec) {
  for (auto& s : specs_)
    if (s.name == spec.name) {
      s = std::move(spec);
      return *this;
    }
  specs_.push_back(std::move(spec));
  return *this;
}

const OptSpec* OptionTable::find(std::string_view name) const {
  for (auto& s : specs_)
    if (s.name == name) return &s;
  return nullptr;
}

std::string OptionTable::help() const {
  std::ostringstream out;
  for (auto& s : specs_) {
    if (s.kind == OptKind::ignored) continue;
    std::string left = s.name;
    if (s.kind == OptKind::string) left += "=STR";
    if (s.kind == OptKind::uint) left += "=N";
    if (s.kind == OptKind::seconds) left += "=SEC";
    if (s.kind == OptKind::choice) {
      left += "=";
      for (size_t i = 0; i < s.choices.size(); ++i) left += (i ? "|" : "") + s.choices[i];
    }
    out << "    -o " << left;
    for (size_t pad = left.size(); pad < 26; ++pad) out << ' ';
    out << ' ' << s.help << '\n';
  }
  return out.str();
}

MountArgs parse_mount_args(int argc, const char* const* argv, const OptionTable& table) {
  MountArgs args;
  args.program = argc > 0 ? argv[0] : "hoody";
  if (auto slash = args.program.rfind('/'); slash != std::string::npos)
    args.program = args.program.substr(slash + 1);
  std::vector<std::string> positional;
  bool only_positional = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (only_positional || a.empty() || a[0] != '-' || a == "-") {
      positional.push_back(a);
      continue;
    }
    if (a == "--") {
      only_positional = true;
    } else if (a == "-f" || a == "--foreground") {
      args.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      args.debug = true;
      args.foreground = true;
    } else if (a == "-s") {
      args.single_thread = true;
    } else if (a == "-h" || a == "--help") {
      args.help = true;
    } else if (a == "-V" || a == "--version") {
      args.version = true;
    } else if (a == "-o" || a.rfind("-o", 0) == 0) {
      std::string list;
      if (a == "-o") {
        if (i + 1 >= argc) throw UsageError("-o needs a list of options");
        list = argv[++i];
      } else {
        list = a.substr(2);
      }
      for (auto& item : split_commas(list)) apply_option(args, table, item);
    } else if (a == "--log-level" || a.rfind("--log-level=", 0) == 0) {
      std::string v;
      if (a == "--log-level") {
        if (i + 1 >= argc) throw UsageError("--log-level needs a level");
        v = argv[++i];
      } else {
        v = a.substr(12);
      }
      apply_option(args, table, "log_level=" + v);
      args.log_level = v;
    } else {
      throw UsageError("unknown argument '" + a + "'");
    }
  }
  if (args.log_level.empty() && args.has("log_level")) args.log_level = args.str("log_level");
  if (args.help || args.version) return args;
  if (positional.size() < 2)
    throw UsageError(positional.empty() ? "missing SOURCE and MOUNTPOINT"
                                        : "missing MOUNTPOINT after SOURCE '" + positional[0] + "'");
  if (positional.size() > 2) throw UsageError("unexpected argument '" + positional[2] + "'");
  args.source = positional[0];
  args.mountpoint = positional[1];
  return args;
}

std::vector<std::string> kernel_mount_options(const MountArgs& args, const std::string& subtype) {
  std::vector<std::string> out;
  for (auto& [name, value] : args.opts) {
    if (!is_kernel_flag(name)) continue;
    // nosuid and nodev are never undone by a suid or dev given with them, in
    // any order: the daemons force them first, and mount.fuse3 run as root
    // adds "suid,dev" to every mount that does not say nosuid, nodev itself.
    if ((name == "suid" && args.flag("nosuid")) || (name == "dev" && args.flag("nodev"))) continue;
    out.push_back(name);
  }
  // allow_other without default_permissions would let every user past the
  // daemon's (root's) own permission checks: never mount that way.
  if (args.flag("allow_other") && !args.flag("default_permissions"))
    out.push_back("default_permissions");
  std::string fsname = args.str("fsname", args.source);
  std::string escaped;
  for (char c : fsname) {
    if (c == ',' || c == '\\') escaped += '\\';
    escaped += c;
  }
  out.push_back("fsname=" + escaped);
  out.push_back("subtype=" + args.str("subtype", subtype));
  return out;
}

}  // namespace hoody
