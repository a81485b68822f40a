// The posix area's mount: the dbfs daemon ($HOODY_DBFS, else bindfs) on a
// plain directory of the pool.
#include "parity.hpp"

namespace hoody::test {

MountSetup default_mount_setup(BtrfsPool& pool) {
  std::string backing = pool.make_dir("backing"), mnt = pool.make_temp_dir("mnt");
  return MountSetup{dbfs_argv(backing, mnt), mnt, mnt, backing};
}

const char* parity_daemon() { return "dbfs"; }

}  // namespace hoody::test
