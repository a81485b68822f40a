// The mount.fuse3 command line of every hoody daemon:
//
//   DAEMON [-f] [-d] [-s] [-o opt[,opt...]] [--log-level L] SOURCE MOUNTPOINT
//
// Options may come before or after the positionals (mount.fuse3 passes them
// after).  Each daemon declares the -o options it knows in an OptionTable; the
// generic ones (allow_other, ro, fsname=, max_threads=, io=, ...) are declared
// here.  An unknown or malformed option is an error that names it; main()
// prints it and exits 2.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hoody {

class UsageError : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

enum class OptKind {
  flag,    // "name" (a "noname" form may be declared separately)
  string,  // "name=value", any non-empty value
  uint,    // "name=N"
  seconds, // "name=1.5" (non-negative, fractional allowed)
  choice,  // "name=a|b|c"
  ignored, // accepted and dropped (fstab-only options: auto, noauto, _netdev, x-systemd.*, ...)
};

struct OptSpec {
  std::string name;
  OptKind kind;
  std::string help;
  std::vector<std::string> choices = {};  // for OptKind::choice
};

// The parsed command line.  Option values are kept as strings in `opts` (flags
// map to "1"); the typed accessors convert them and throw UsageError.
class MountArgs {
public:
  std::string program;
  std::string source;
  std::string mountpoint;
  bool foreground = false;
  bool debug = false;         // -d: libfuse debug output, implies -f
  bool single_thread = false; // -s
  std::string log_level;      // --log-level; empty: $HOODY_LOG or info
  bool help = false;
  bool version = false;
  std::map<std::string, std::string> opts;

  bool has(const std::string& name) const { return opts.count(name) != 0; }
  bool flag(const std::string& name, bool dflt = false) const;
  std::string str(const std::string& name, const std::string& dflt = "") const;
  uint64_t uint(const std::string& name, uint64_t dflt) const;
  double seconds(const std::string& name, double dflt) const;
};

class OptionTable {
public:
  // The options every daemon understands.
  static OptionTable generic();
  OptionTable& add(OptSpec spec);
  const OptSpec* find(std::string_view name) const;
  const std::vector<OptSpec>& specs() const { return specs_; }
  // The help text: one line per option.
  std::string help() const;

private:
  std::vector<OptSpec> specs_;
};

// Parses argv; throws UsageError with a one-line message naming the bad
// argument or option.  Does not require SOURCE/MOUNTPOINT when help/version
// is asked for.
MountArgs parse_mount_args(int argc, const char* const* argv, const OptionTable& table);

// The -o options that go to the kernel mount (through libfuse): allow_other,
// default_permissions, ro/rw, nosuid/nodev/noexec, ... plus fsname/subtype.
std::vector<std::string> kernel_mount_options(const MountArgs& args, const std::string& subtype);

}  // namespace hoody
