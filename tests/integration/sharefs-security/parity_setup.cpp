// The sharefs-parity area: the posix area's checks (posix/parity_test.cpp),
// run in a rw share of hoody-sharefs instead of the dbfs mount.  The tree
// under test is MNT/data, a share of c1's storage/data accepted by c2; the
// native tree is a plain dir of the same pool.
#include <sys/mman.h>
#include <sys/stat.h>

#include <string>
#include <vector>

#include "../posix/parity.hpp"
#include "rig.hpp"
#include "share/registry.hpp"

namespace hoody::test {

namespace {

// The registry's change signal is a POSIX shm segment named after the pool
// dir: unlinked when the test binary exits.
struct ShmNames {
  std::vector<std::string> names;
  ~ShmNames() {
    for (auto& n : names) ::shm_unlink(n.c_str());
  }
} shm_names;

}  // namespace

MountSetup default_mount_setup(BtrfsPool& pool) {
  pool.make_dir("containers");
  for (auto c : {"c1", "c2"}) {
    pool.make_dir(std::string("containers/") + c);
    pool.make_subvolume(std::string("containers/") + c + "/storage");
  }
  std::string backing = pool.make_dir("containers/c1/storage/data");
  struct stat st;
  if (::stat(pool.path().c_str(), &st) == 0)
    shm_names.names.push_back("/hoody-shares-" + std::to_string(st.st_dev) + "-" + std::to_string(st.st_ino));
  std::string why;
  auto reg = sharefs::Registry::open(pool.path(), &why);
  REQUIRE_MESSAGE(reg.ok(), why);
  REQUIRE_MESSAGE(reg->add_container("c1", "", &why).ok(), why);
  REQUIRE_MESSAGE(reg->add_container("c2", "", &why).ok(), why);
  auto o = reg->offer({.from = "c1", .source = "data", .to_container = "c2", .to_project = "",
                       .mode = sharefs::Mode::rw, .name = "data"},
                      &why);
  REQUIRE_MESSAGE(o.ok(), why);
  REQUIRE_MESSAGE(reg->accept("c2", "data", &why).ok(), why);
  std::string mnt = pool.make_temp_dir("mnt");
  return MountSetup{{sharefs_exe(), "-f", "-o",
                     "container=c2,registry=" + pool.path() + "/shares.db,allow_other", pool.path(), mnt},
                    mnt, mnt + "/data", backing};
}

const char* parity_daemon() { return "sharefs"; }

}  // namespace hoody::test
