// hoody-snapfs: a container's BTRFS snapshots as a directory.
#include <malloc.h>

#include <cstdio>
#include <string>
#include <vector>

#include "fs.hpp"

namespace {
// "-o allow_users=alice,bob" reads as the option "bob": say what was meant.
bool comma_list_mistake(int argc, char** argv, const hoody::OptionTable& table) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string list = a == "-o" && i + 1 < argc ? argv[i + 1] : a.rfind("-o", 0) == 0 ? a.substr(2) : "";
    std::string prev;
    size_t start = 0;
    while (start <= list.size() && !list.empty()) {
      size_t end = list.find(',', start);
      if (end == std::string::npos) end = list.size();
      std::string item = list.substr(start, end - start);
      std::string name = item.substr(0, item.find('='));
      if ((prev == "allow_users" || prev == "allow_groups") && !name.empty() && !table.find(name)) {
        std::fprintf(stderr,
                     "hoody-snapfs: option '%s': separate names with ':' (a ',' ends the option): "
                     "-o %s=...:%s\n", prev.c_str(), prev.c_str(), item.c_str());
        return true;
      }
      if (table.find(name)) prev = name;
      start = end + 1;
    }
  }
  return false;
}
}  // namespace

int main(int argc, char** argv) {
  if (comma_list_mistake(argc, argv, hoody::snapfs::options())) return 2;
  // Large buffers (a diff's text and line table, a send stream) are mmapped
  // and go back to the system when freed.  glibc's dynamic threshold would
  // move them into thread arenas after the first free, and malloc_trim does
  // not release the top of a thread arena: 40 readers of a 100k-line diff
  // left 22 MB resident for good.
  ::mallopt(M_MMAP_THRESHOLD, 1 << 20);
  // Snapshot contents are never a way to run setuid programs or reach device
  // nodes: nosuid,nodev always (given first, so they are in every mount; a
  // suid or dev given too is dropped: kernel_mount_options).
  std::vector<char*> args(argv, argv + argc);
  std::string o = "-onosuid,nodev";
  if (argc > 0) args.insert(args.begin() + 1, o.data());
  hoody::DaemonSpec spec{
      "hoody-snapfs",
      "Serves the BTRFS snapshots of the container directory SOURCE at MOUNTPOINT: mkdir\n"
      "takes a snapshot, rmdir deletes one, mv renames, .hoody/restore restores. See\n"
      "hoody-snapfs(8). `hoody-snapfs --status MOUNTPOINT` prints a running daemon's\n"
      "transport and request counts.",
      hoody::snapfs::options(),
      [](const hoody::MountArgs& a) -> std::unique_ptr<hoody::DaemonFs> {
        return std::make_unique<hoody::snapfs::Fs>(hoody::snapfs::config_from(a));
      }};
  return hoody::daemon_main(static_cast<int>(args.size()), args.data(), spec);
}
