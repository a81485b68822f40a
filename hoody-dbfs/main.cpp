// hoody-dbfs: SQLite databases that many processes and containers write at once.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fs.hpp"

int main(int argc, char** argv) {
  // Databases are never a way to run setuid programs or reach device nodes:
  // nosuid,nodev always, given first so they are in every mount (a suid or
  // dev given too is dropped: kernel_mount_options).
  std::vector<char*> args(argv, argv + argc);
  std::string o = "-onosuid,nodev";
  if (argc > 0) args.insert(args.begin() + 1, o.data());
  hoody::DaemonSpec spec{
      "hoody-dbfs",
      "Serves the SQLite databases in SOURCE at MOUNTPOINT so that many processes and\n"
      "containers write them at once without \"database is locked\". See hoody-dbfs(8).\n"
      "`hoody-dbfs --status MOUNTPOINT` prints the lock counters of a running daemon.",
      hoody::dbfs::options(),
      [](const hoody::MountArgs& args) -> std::unique_ptr<hoody::DaemonFs> {
        return std::make_unique<hoody::dbfs::Fs>(hoody::dbfs::config_from(args));
      }};
  return hoody::daemon_main(static_cast<int>(args.size()), args.data(), spec);
}
