// hoody-snapfs: a container's BTRFS snapshots as a directory.
#include <string>
#include <vector>

#include "fs.hpp"

int main(int argc, char** argv) {
  // Snapshot contents are never a way to run setuid programs or reach device
  // nodes: nosuid,nodev always (given first, so they are in every mount).
  std::vector<char*> args(argv, argv + argc);
  std::string o = "-onosuid,nodev";
  if (argc > 0) args.insert(args.begin() + 1, o.data());
  hoody::DaemonSpec spec{
      "hoody-snapfs",
      "Serves the BTRFS snapshots of the container directory SOURCE at MOUNTPOINT: mkdir\n"
      "takes a snapshot, rmdir deletes one, mv renames, .hoody/restore restores. See\n"
      "hoody-snapfs(8).",
      hoody::snapfs::options(),
      [](const hoody::MountArgs& a) -> std::unique_ptr<hoody::DaemonFs> {
        return std::make_unique<hoody::snapfs::Fs>(hoody::snapfs::config_from(a));
      }};
  return hoody::daemon_main(static_cast<int>(args.size()), args.data(), spec);
}
