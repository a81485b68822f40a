// /proc/self/mountinfo, parsed once for everyone (proc(5)):
//   36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//   id parent major:minor root mount-point options [optional fields...] - fstype source super-options
// root, mount point and source come back unescaped (the kernel writes space,
// tab, newline and backslash as \ooo).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hoody/result.hpp"

namespace hoody::mountinfo {

struct Mount {
  int id = 0;
  int parent = 0;
  unsigned major = 0;
  unsigned minor = 0;
  std::string root;         // the mounted directory inside its filesystem
  std::string mount_point;  // where it is mounted
  std::string options;      // per-mount: "rw,nosuid,relatime"
  std::vector<std::string> optional;  // "shared:1", "master:2"...
  std::string fstype;       // "btrfs", "fuse.hoody-dbfs"
  std::string source;       // "/dev/loop0", or a FUSE daemon's fsname
  std::string super_options;
};

// Undo the \ooo escapes; a backslash not followed by three octal digits stays.
std::string unescape(std::string_view s);

// One line; nullopt if it does not have the shape above.
std::optional<Mount> parse_line(std::string_view line);

// Every well-formed line of `text`, in order (the parents before their children).
std::vector<Mount> parse(std::string_view text);

// The mounts of this process's namespace (/proc/self/mountinfo).
Result<std::vector<Mount>> read();

// Whether the comma-separated `options` contain exactly `option` ("ro" is not "rootcontext=").
bool has_option(std::string_view options, std::string_view option);

}  // namespace hoody::mountinfo
