#include <doctest/doctest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "hoody/sys.hpp"

using namespace hoody;

namespace {
struct TempDir {
  std::string path;
  UniqueFd fd;
  TempDir() {
    char tmpl[] = "/tmp/hoody-sys-test.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
    fd = std::move(*sys::open(path.c_str(), O_PATH | O_DIRECTORY));
  }
  ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};
}  // namespace

TEST_CASE("wrappers capture errno") {
  TempDir t;
  auto r = sys::openat(t.fd.get(), "missing", O_RDONLY);
  CHECK(r.err() == ENOENT);
  CHECK(sys::mkdirat(t.fd.get(), "d", 0755).ok());
  CHECK(sys::mkdirat(t.fd.get(), "d", 0755).err() == EEXIST);
  CHECK(sys::unlinkat(t.fd.get(), "d", 0).err() == EISDIR);
  CHECK(sys::unlinkat(t.fd.get(), "d", AT_REMOVEDIR).ok());
}

TEST_CASE("UniqueFd closes once and moves") {
  TempDir t;
  auto f = sys::openat(t.fd.get(), "f", O_CREAT | O_RDWR, 0644);
  REQUIRE(f.ok());
  int raw = f->get();
  UniqueFd moved = std::move(*f);
  CHECK(moved.get() == raw);
  CHECK_FALSE(f->valid());
  CHECK(::fcntl(raw, F_GETFD) >= 0);
  CHECK((::fcntl(raw, F_GETFD) & FD_CLOEXEC) != 0);
  moved.reset();
  CHECK(::fcntl(raw, F_GETFD) == -1);
}

TEST_CASE("write_all, read_file, pread and reopen") {
  TempDir t;
  {
    auto f = sys::openat(t.fd.get(), "data", O_CREAT | O_WRONLY, 0600);
    REQUIRE(f.ok());
    CHECK(sys::write_all(f->get(), "hello world").ok());
  }
  CHECK(*sys::read_file(t.fd.get(), "data") == "hello world");
  auto p = sys::openat(t.fd.get(), "data", O_PATH | O_NOFOLLOW);
  REQUIRE(p.ok());
  auto rw = sys::reopen(p->get(), O_RDONLY);
  REQUIRE(rw.ok());
  char buf[5];
  CHECK(*sys::pread(rw->get(), buf, 5, 6) == 5);
  CHECK(std::string(buf, 5) == "world");
}

TEST_CASE("open_beneath refuses escapes") {
  TempDir t;
  REQUIRE(sys::mkdirat(t.fd.get(), "in", 0755).ok());
  REQUIRE(::symlinkat("/etc/passwd", t.fd.get(), "abs") == 0);
  REQUIRE(::symlinkat("../..", t.fd.get(), "in/up") == 0);
  REQUIRE(::symlinkat("in", t.fd.get(), "rel") == 0);
  CHECK(sys::open_beneath(t.fd.get(), "in", O_PATH).ok());
  CHECK(sys::open_beneath(t.fd.get(), "rel", O_PATH).ok());
  CHECK(sys::open_beneath(t.fd.get(), "../", O_PATH).err() == EXDEV);
  CHECK(sys::open_beneath(t.fd.get(), "abs", O_RDONLY).err() == EXDEV);
  CHECK(sys::open_beneath(t.fd.get(), "in/up/x", O_RDONLY).err() == EXDEV);
  CHECK(sys::open_beneath(t.fd.get(), "/etc/passwd", O_RDONLY).err() == EXDEV);
}
