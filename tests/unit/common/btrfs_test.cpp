// The pure parts of hoody::btrfs: error mapping and uuid formatting.
#include <btrfsutil.h>
#include <doctest/doctest.h>

#include "hoody/btrfs.hpp"

using namespace hoody;

TEST_CASE("libbtrfsutil errors map to errno") {
  CHECK(btrfs::to_errno(BTRFS_UTIL_OK, EPERM).value() == 0);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_NOT_BTRFS, 0).value() == ENOTTY);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_NOT_SUBVOLUME, 0).value() == EINVAL);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_INVALID_ARGUMENT, ENOENT).value() == EINVAL);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND, 0).value() == ENOENT);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_NO_MEMORY, 0).value() == ENOMEM);
  // A failed system call keeps its errno.
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_SNAP_CREATE_FAILED, EEXIST).value() == EEXIST);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_SNAP_DESTROY_FAILED, EPERM).value() == EPERM);
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_OPEN_FAILED, ENOENT).value() == ENOENT);
  // ...and an unknown one without errno is EIO, never 0.
  CHECK(btrfs::to_errno(BTRFS_UTIL_ERROR_SEARCH_FAILED, 0).value() == EIO);
}

TEST_CASE("uuids are formatted 8-4-4-4-12, all-zero as empty") {
  uint8_t u[16] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                   0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe};
  CHECK(btrfs::format_uuid(u) == "01234567-89ab-cdef-1032-547698badcfe");
  uint8_t z[16] = {};
  CHECK(btrfs::format_uuid(z).empty());
}
