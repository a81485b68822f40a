// hoody-dbfs: SQLite databases that many processes and containers write at once.
#include "fs.hpp"

int main(int argc, char** argv) {
  hoody::DaemonSpec spec{
      "hoody-dbfs",
      "Serves the SQLite databases in SOURCE at MOUNTPOINT so that many processes and\n"
      "containers write them at once without \"database is locked\". See hoody-dbfs(8).",
      hoody::dbfs::options(),
      [](const hoody::MountArgs& args) -> std::unique_ptr<hoody::DaemonFs> {
        return std::make_unique<hoody::dbfs::Fs>(hoody::dbfs::config_from(args));
      }};
  return hoody::daemon_main(argc, argv, spec);
}
