// hoody-sharefs: the shares a container received, at /hoody/shares.
#include <string>
#include <vector>

#include "fs.hpp"

int main(int argc, char** argv) {
  // Shares are never a way to run setuid programs or reach device nodes, and
  // the kernel checks every caller's permissions: always, given first so
  // they are in every mount.
  std::vector<char*> args(argv, argv + argc);
  std::string o = "-onosuid,nodev,default_permissions";
  if (argc > 0) args.insert(args.begin() + 1, o.data());
  hoody::DaemonSpec spec{
      "hoody-sharefs",
      "Serves the shares container C received at MOUNTPOINT: NAME/ for each accepted\n"
      "share, .pending/NAME for offers (mv up to accept, rmdir to reject),\n"
      ".hoody/shares.json. POOL holds shares.db and containers/. See hoody-sharefs(8).\n"
      "`hoody-sharefs --status MOUNTPOINT` prints a running daemon's transport and\n"
      "request counts.",
      hoody::sharefs::options(),
      [](const hoody::MountArgs& a) -> std::unique_ptr<hoody::DaemonFs> {
        return std::make_unique<hoody::sharefs::Fs>(hoody::sharefs::config_from(a));
      }};
  return hoody::daemon_main(static_cast<int>(args.size()), args.data(), spec);
}
