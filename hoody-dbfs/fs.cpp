#include "fs.hpp"

#include <fcntl.h>
#include <sys/file.h>

#include "hoody/log.hpp"
#include "hoody/sys.hpp"

namespace hoody::dbfs {

OptionTable options() {
  auto t = OptionTable::generic();
  pt::add_options(t);
  return t;
}

Config config_from(const MountArgs& args) {
  Config c;
  c.core = pt::config_from(args);
  return c;
}

Fs::Fs(Config cfg) : pt::PassthroughFs(cfg.core), dcfg_(std::move(cfg)) {}

Status Fs::start(std::string* why) {
  HOODY_CHECK(open_source(why));
  // Two FUSE mounts of one backing file do not share the page cache, and
  // SQLite's WAL index is a shared mmap of -shm: a second daemon over the same
  // directory would let two containers see different -shm pages and corrupt
  // WAL databases.  The flock lives as long as this process.
  auto dir = sys::open(dcfg_.core.source.c_str(), O_RDONLY | O_DIRECTORY);
  if (!dir) {
    *why = "source " + dcfg_.core.source + ": " + dir.error().message();
    return fail(dir.error());
  }
  if (::flock(dir->get(), LOCK_EX | LOCK_NB) < 0) {
    int e = errno;
    if (e == EWOULDBLOCK) {
      *why = "source " + dcfg_.core.source +
             " is already served by another hoody-dbfs; two daemons over one directory would "
             "not share SQLite's WAL index (-shm) and could corrupt databases. Bind-mount the "
             "existing mount instead (mount --bind MOUNTPOINT OTHER), one daemon per backing "
             "directory per host";
    } else {
      *why = "source " + dcfg_.core.source + ": cannot lock it: " + std::strerror(e);
    }
    return fail(e);
  }
  exclusive_ = std::move(*dir);
  return {};
}

fuse_lowlevel_ops Fs::ops() { return make_ops({}); }

}  // namespace hoody::dbfs
