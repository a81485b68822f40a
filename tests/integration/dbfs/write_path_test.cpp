// Issue 10 items 3-4: the write path without extra round trips.  Each check
// counts the requests the daemon received (--status transport.ops, both
// transports) around a workload.
#include <fcntl.h>
#include <unistd.h>

#include <map>

#include "sqlite_harness.hpp"

using namespace hoody::test;
using namespace hoody::test::sqlh;

namespace {

using Ops = std::map<std::string, std::uint64_t>;

Ops ops_of(const std::string& mnt) {
  Ops out;
  auto st = status_of(mnt);
  for (auto& [k, v] : st["transport"]["ops"].items()) out[k] = v.get<std::uint64_t>();
  return out;
}

// after - before, opcodes with no requests left out; "a=1 b=2" for messages.
Ops delta(const Ops& before, const Ops& after) {
  Ops d;
  for (auto& [k, v] : after) {
    auto it = before.find(k);
    std::uint64_t b = it == before.end() ? 0 : it->second;
    if (v > b) d[k] = v - b;
  }
  return d;
}
std::string show(const Ops& d) {
  std::string s;
  for (auto& [k, v] : d) s += k + "=" + std::to_string(v) + " ";
  return s;
}
std::uint64_t n_of(const Ops& d, const char* op) {
  auto it = d.find(op);
  return it == d.end() ? 0 : it->second;
}

}  // namespace

TEST_CASE("write path: no GETXATTR of security.capability after a WRITE") {
  Mounted m;
  std::string f = m.mnt + "/plain";
  int fd = ::open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::pwrite(fd, "x", 1, 0) == 1);  // the first write of the inode
  Ops before = ops_of(m.mnt);
  constexpr int kWrites = 200;
  char buf[100] = {};
  for (int i = 0; i < kWrites; ++i) REQUIRE(::pwrite(fd, buf, sizeof buf, i * 100) == 100);
  ::close(fd);
  Ops d = delta(before, ops_of(m.mnt));
  MESSAGE("requests for " << kWrites << " writes: " << show(d));
  CHECK(n_of(d, "WRITE") >= kWrites);
  // Before FUSE_HANDLE_KILLPRIV_V2 the kernel asked for security.capability
  // before every WRITE (file_remove_privs on a FUSE inode).
  CHECK(n_of(d, "GETXATTR") == 0);
  CHECK(n_of(d, "SETATTR") == 0);
}
