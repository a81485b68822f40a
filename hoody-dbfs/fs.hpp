// hoody-dbfs: the daemon object (the fuse userdata).
//
// The passthrough core over the backing directory, plus what makes SQLite
// safe to share: one daemon per backing directory (a second one refuses to
// start), and the lock manager that answers the POSIX lock requests.
#pragma once

#include <string>

#include "hoody/daemon.hpp"
#include "hoody/passthrough.hpp"
#include "hoody/unique_fd.hpp"

namespace hoody::dbfs {

struct Config {
  pt::Config core;
};

OptionTable options();
Config config_from(const MountArgs& args);

class Fs final : public pt::PassthroughFs, public DaemonFs {
public:
  explicit Fs(Config cfg);

  // DaemonFs
  Status start(std::string* why) override;
  fuse_lowlevel_ops ops() override;
  void* userdata() override { return static_cast<pt::PassthroughFs*>(this); }

private:
  Config dcfg_;
  UniqueFd exclusive_;  // flock(LOCK_EX) on the backing directory while we serve it
};

}  // namespace hoody::dbfs
