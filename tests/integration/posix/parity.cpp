#include "parity.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <sstream>

#include "hoody/test/capability.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test {

std::string describe_stat(const struct stat& st) {
  const char* type = "?";
  switch (st.st_mode & S_IFMT) {
    case S_IFREG: type = "reg"; break;
    case S_IFDIR: type = "dir"; break;
    case S_IFLNK: type = "lnk"; break;
    case S_IFIFO: type = "fifo"; break;
    case S_IFSOCK: type = "sock"; break;
    case S_IFCHR: type = "chr"; break;
    case S_IFBLK: type = "blk"; break;
  }
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s mode=%04o nlink=%lu size=%lld uid=%u gid=%u", type,
                st.st_mode & 07777, static_cast<unsigned long>(st.st_nlink),
                static_cast<long long>(st.st_size), st.st_uid, st.st_gid);
  return buf;
}

std::string summarize(std::string_view data) {
  bool printable = data.size() <= 64;
  for (char c : data)
    if (c < 32 || c > 126) printable = false;
  if (printable) return "\"" + std::string(data) + "\"";
  std::size_t h = std::hash<std::string_view>{}(data);
  char buf[64];
  std::snprintf(buf, sizeof buf, "<%zu bytes, hash %016zx>", data.size(), h);
  return buf;
}

Trace& Trace::rc(std::string_view label, long r) {
  int e = errno;
  text_ += std::string(label) + "=" + (r < 0 ? errno_name(e) : std::to_string(r)) + "; ";
  return *this;
}

Trace& Trace::val(std::string_view label, std::string_view value) {
  text_ += std::string(label) + "=" + std::string(value) + "; ";
  return *this;
}

Trace& Trace::stat(std::string_view label, const std::string& path, bool follow) {
  struct stat st;
  int r = follow ? ::stat(path.c_str(), &st) : ::lstat(path.c_str(), &st);
  if (r < 0) return rc(label, r);
  return val(label, describe_stat(st));
}

Trace& Trace::fstat(std::string_view label, int fd) {
  struct stat st;
  int r = ::fstat(fd, &st);
  if (r < 0) return rc(label, r);
  return val(label, describe_stat(st));
}

Trace& Trace::content(std::string_view label, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return val(label, "<cannot open: " + errno_name(errno) + ">");
  std::ostringstream ss;
  ss << in.rdbuf();
  return val(label, summarize(ss.str()));
}

Parity::Parity()
    : Parity([](BtrfsPool& pool) { return default_mount_setup(pool); }) {}

Parity::Parity(const Setup& setup)
    : capable_((require_mount_capabilities(), true)),
      setup_(setup(pool_)),
      backing_(setup_.backing),
      daemon_(setup_.argv, setup_.mountpoint, pool_.dir() + "/daemon.log"),
      native_{"native", pool_.make_dir("native")},
      mount_{"mount", setup_.root} {}

Parity::~Parity() = default;

void Parity::compare(const std::string& what, const std::string& a, const std::string& b,
                     Known known) {
  std::string msg = what + "\n    native: " + a + "\n    mount:  " + b;
  if (a == b) {
    CHECK(true);
    if (const char* v = std::getenv("HOODY_PARITY_VERBOSE"); v && *v == '1') MESSAGE("same: " << msg);
    return;
  }
  const char* why = known.fuse;
  if (!why && std::strcmp(parity_daemon(), "sharefs") == 0) why = known.sharefs;
  else if (!why && dbfs_command().is_bindfs) why = known.bindfs;
  if (why) {
    MESSAGE("known divergence (" << std::string(why) << "): " << msg);
    return;
  }
  FAIL_CHECK("parity: " << msg);
}

void Parity::check(const std::string& what, const Check& fn, Known known) {
  Trace a, b;
  fn(native_, a);
  fn(mount_, b);
  compare(what, a.text(), b.text(), known);
}

void Parity::check_as_nobody(const std::string& what, const Check& fn, Known known) {
  auto in_child = [&](const Tree& t) {
    ExitInfo e = run_child(
        [&] {
          Trace tr;
          fn(t, tr);
          std::fputs(tr.text().c_str(), stdout);
          return 0;
        },
        {.as_nobody = true});
    return e.ok() ? e.output : e.describe();
  };
  compare(what + " (as nobody)", in_child(native_), in_child(mount_), known);
}

}  // namespace hoody::test
