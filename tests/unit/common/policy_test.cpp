// The passthrough core's policy vocabulary (hoody/passthrough.hpp): which ops
// mutate (EROFS on a read-only mount or root), open flags that write, names
// for log lines, virtual node ids.
#include <doctest/doctest.h>
#include <fcntl.h>

#include "hoody/passthrough.hpp"

using namespace hoody::pt;

TEST_CASE("policy: the mutating ops are exactly the ones a read-only share refuses") {
  for (Op op : {Op::setattr, Op::mknod, Op::mkdir, Op::symlink, Op::link, Op::unlink, Op::rmdir,
                Op::rename_from, Op::rename_to, Op::create, Op::write, Op::fallocate, Op::copy_to,
                Op::setxattr, Op::removexattr})
    CHECK_MESSAGE(mutates(op), op_name(op));
  for (Op op : {Op::lookup, Op::getattr, Op::readlink, Op::open, Op::read, Op::flush, Op::release,
                Op::fsync, Op::copy_from, Op::lseek, Op::opendir, Op::readdir, Op::fsyncdir,
                Op::statfs, Op::getxattr, Op::listxattr, Op::lock})
    CHECK_FALSE_MESSAGE(mutates(op), op_name(op));
  CHECK(std::string(op_name(Op::copy_to)) == "copy_file_range");
  CHECK(std::string(op_name(Op::lock)) == "lock");
}

TEST_CASE("policy: an open mutates when it writes or truncates") {
  Root r(1, "x");
  Inode in(hoody::UniqueFd(), 1, 2, S_IFREG, &r, 0);
  auto opens = [&](int flags) { return Access{Op::open, in, nullptr, flags}.mutates(); };
  CHECK_FALSE(opens(O_RDONLY));
  CHECK(opens(O_WRONLY));
  CHECK(opens(O_RDWR));
  CHECK(opens(O_RDONLY | O_TRUNC));
  CHECK(Access{Op::mkdir, in}.root().id == 1);
}

TEST_CASE("policy: virtual node ids have bit 63, which no user-space address has") {
  int here = 0;
  CHECK_FALSE(is_virtual_id(reinterpret_cast<uint64_t>(&here)));
  CHECK(is_virtual_id(kVirtualBit | 1));
  CHECK_FALSE(is_virtual_id(1));
}
