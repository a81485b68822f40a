// Confinement: a container sees only the shares granted to it; ".." at a
// share's root does not leave it; rename and link between two shares give
// EXDEV; a share whose source is renamed or replaced by a symlink in the
// owner's storage after it was offered does not escape.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <algorithm>
#include <set>
#include <sstream>
#include <string>

#include "ops.hpp"
#include "rig.hpp"

using namespace hoody::test;

namespace {

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.insert(e->d_name);
  ::closedir(d);
  return out;
}

std::string join(const std::set<std::string>& s) {
  std::string o;
  for (auto& x : s) o += x + " ";
  return o;
}

std::string read_all(const std::string& p) {
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<" + errname(errno) + ">";
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
  ::close(fd);
  return s;
}

bool same_inode(const std::string& a, const std::string& b) {
  struct stat x, y;
  return ::stat(a.c_str(), &x) == 0 && ::stat(b.c_str(), &y) == 0 && x.st_dev == y.st_dev &&
         x.st_ino == y.st_ino;
}

}  // namespace

TEST_CASE("sharefs visibility: a container sees only the shares granted to it") {
  ShareRig rig;
  rig.container("c1", "p");
  rig.container("c2", "p");
  rig.container("c3");       // outside the project
  rig.container("c4", "q");  // another project
  rig.write("c1", "team/t", "team file");
  rig.write("c1", "private/p", "private file");
  rig.write("c1", "later/l", "offered, never accepted");
  rig.offer_project("c1", "team", "p", Mode::rw, "team");
  rig.offer("c1", "private", "c4", Mode::ro, "private");
  rig.offer("c1", "later", "c2", Mode::ro, "later");
  rig.accept("c2", "team");
  rig.accept("c4", "private");
  auto m2 = rig.mount("c2");
  auto m3 = rig.mount("c3");
  auto m4 = rig.mount("c4");
  REQUIRE(wait_for_path(*m2 / "team/t"));
  REQUIRE(wait_for_path(*m4 / "private/p"));

  auto visible = [](ShareMount& m) {
    std::set<std::string> s = names_in(m.root());
    for (auto& x : names_in(m / ".pending")) s.insert(".pending/" + x);
    return s;
  };
  auto json = [](ShareMount& m) { return read_all(m / ".hoody/shares.json"); };
  auto mentions = [](const std::string& j, const char* name) {
    return j.find(std::string("\"") + name + "\"") != std::string::npos;
  };

  // c2 (in the project): team, and the offer "later" pending; not c4's.
  auto v2 = visible(*m2);
  INFO("c2 sees: ", join(v2));
  CHECK(v2.count("team"));
  CHECK(v2.count(".pending/later"));
  CHECK_FALSE(v2.count("private"));
  CHECK_FALSE(v2.count(".pending/private"));
  CHECK(::access((*m2 / "private").c_str(), F_OK) < 0);
  CHECK(errno == ENOENT);
  CHECK(::access((*m2 / ".pending/private").c_str(), F_OK) < 0);
  CHECK_FALSE(mentions(json(*m2), "private"));
  CHECK(mentions(json(*m2), "team"));

  // c3 (no project, nothing offered to it): nothing of c1's.
  auto v3 = visible(*m3);
  INFO("c3 sees: ", join(v3));
  for (auto n : {"team", "private", "later", ".pending/team", ".pending/private", ".pending/later"})
    CHECK_MESSAGE(!v3.count(n), "c3 sees ", n);
  for (auto n : {"team", "private", "later"}) {
    CHECK(::access((*m3 / n).c_str(), F_OK) < 0);
    CHECK(::access((*m3 / (std::string(".pending/") + n)).c_str(), F_OK) < 0);
    CHECK_FALSE(mentions(json(*m3), n));
  }
  // c3 cannot take c2's offer by moving a name it cannot see.
  CHECK(::rename((*m3 / ".pending/later").c_str(), (*m3 / "later").c_str()) < 0);

  // c4 (another project): its 1-to-1 share only.
  auto v4 = visible(*m4);
  INFO("c4 sees: ", join(v4));
  CHECK(v4.count("private"));
  CHECK_FALSE(v4.count("team"));
  CHECK_FALSE(v4.count(".pending/team"));
  CHECK_FALSE(v4.count(".pending/later"));
  CHECK_FALSE(mentions(json(*m4), "team"));
  CHECK_FALSE(mentions(json(*m4), "later"));

  // A container that joins the project later sees the project share.
  rig.container("c5", "p");
  auto m5 = rig.mount("c5");
  CHECK(wait_for_path(*m5 / ".pending/team"));
  CHECK_FALSE(visible(*m5).count("private"));
}

TEST_CASE("sharefs confinement: .. at a share's root is the mount root, never the owner's storage") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.write("c1", "s/d/f", "in");
  rig.write("c1", "outside", "SECRET");
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s/d/f"));
  CHECK(same_inode(*m / "s/..", m->root()));
  CHECK(same_inode(*m / "s/d/../..", m->root()));
  CHECK(same_inode(*m / "s/../s/d", *m / "s/d"));
  CHECK(read_all(*m / "s/../outside") == "<ENOENT>");
  CHECK(read_all(*m / "s/d/../../outside") == "<ENOENT>");
  // Through fds: openat(share_root, "..") and a cwd in the share.
  int root = ::open((*m / "s").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(root >= 0);
  int up = ::openat(root, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(up >= 0);
  struct stat a, b;
  REQUIRE(::fstat(up, &a) == 0);
  REQUIRE(::stat(m->root().c_str(), &b) == 0);
  CHECK((a.st_dev == b.st_dev && a.st_ino == b.st_ino));
  CHECK(::faccessat(up, "outside", F_OK, 0) < 0);
  ::close(up);
  ::close(root);
  auto e = run_child([&] {
    if (::chdir((*m / "s/d").c_str()) < 0) return 10;
    if (read_all("../../outside") != "<ENOENT>") return 11;
    if (read_all("../../../outside") != "<ENOENT>") return 12;  // the mount's parent
    char cwd[4096];
    if (!::getcwd(cwd, sizeof cwd)) return 13;
    return std::string(cwd) == *m / "s/d" ? 0 : 14;
  });
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  // The daemon's own names: ".." and "." never become entries of a share.
  auto n = names_in(*m / "s");
  CHECK(n == std::set<std::string>{"d"});
}

TEST_CASE("sharefs confinement: rename and link between two shares give EXDEV") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.container("c5");
  // Two rw shares from the same owner's storage (one subvolume: the backing
  // filesystem itself would allow the rename) and one from another owner.
  rig.write("c1", "a/fa", "a", 0666);
  rig.write("c1", "b/fb", "b", 0666);
  rig.write("c5", "e/fe", "e", 0666);
  // World-writable dirs: nobody's calls must reach the daemon, not stop at
  // the kernel's permission check.
  for (auto [c, d] : {std::pair{"c1", "a"}, {"c1", "b"}, {"c5", "e"}})
    ::chmod((rig.storage(c) + "/" + d).c_str(), 0777);
  rig.offer("c1", "a", "c2", Mode::rw, "a");
  rig.offer("c1", "b", "c2", Mode::rw, "b");
  rig.offer("c5", "e", "c2", Mode::rw, "e");
  for (auto n : {"a", "b", "e"}) rig.accept("c2", n);
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "e/fe"));
  const std::string before = snapshot_tree(rig.storage("c1")) + snapshot_tree(rig.storage("c5"));
  const std::string M = m->root();
  OpList ops;
  auto ren = [](std::string x, std::string y) { return [=] { return static_cast<long>(::rename(x.c_str(), y.c_str())); }; };
  auto lnk = [](std::string x, std::string y) { return [=] { return static_cast<long>(::link(x.c_str(), y.c_str())); }; };
  ops.add("rename a/fa -> b/ (same owner)", ren(M + "/a/fa", M + "/b/fa"), {EXDEV});
  ops.add("rename a/fa -> b/fb (over a file)", ren(M + "/a/fa", M + "/b/fb"), {EXDEV});
  ops.add("rename a/fa -> e/ (other owner)", ren(M + "/a/fa", M + "/e/fa"), {EXDEV});
  ops.add("renameat2 EXCHANGE a/fa <-> b/fb", [=] {
    return static_cast<long>(::renameat2(AT_FDCWD, (M + "/a/fa").c_str(), AT_FDCWD, (M + "/b/fb").c_str(), RENAME_EXCHANGE));
  }, {EXDEV});
  ops.add("link a/fa -> b/", lnk(M + "/a/fa", M + "/b/la"), {EXDEV});
  ops.add("link a/fa -> e/", lnk(M + "/a/fa", M + "/e/la"), {EXDEV});
  // Out of a share into the daemon's own directories.
  ops.add("rename a/fa -> the mount root", ren(M + "/a/fa", M + "/fa"), {EXDEV, EPERM, EACCES, EROFS});
  ops.add("rename a/fa -> .pending/", ren(M + "/a/fa", M + "/.pending/fa"), {EXDEV, EPERM, EACCES, EROFS});
  ops.add("rename a/fa -> .hoody/", ren(M + "/a/fa", M + "/.hoody/fa"), {EXDEV, EPERM, EACCES, EROFS});
  ops.add("link a/fa -> the mount root", lnk(M + "/a/fa", M + "/la"), {EXDEV, EPERM, EACCES, EROFS});
  ops.add("rename .hoody/shares.json -> a/", ren(M + "/.hoody/shares.json", M + "/a/j"), {EXDEV, EPERM, EACCES, EROFS});
  ops.add("still fine within a share", ren(M + "/a/fa", M + "/a/fa2"), {});
  ops.add("and back", ren(M + "/a/fa2", M + "/a/fa"), {});
  for (bool nobody : {false, true}) {
    auto e = run_child([&] { return ops.run(); }, {.as_nobody = nobody});
    CHECK_MESSAGE(e.exit_code == 0, std::string(nobody ? "nobody: " : "root: "), e.describe());
    MESSAGE(e.output);
  }
  std::string after = snapshot_tree(rig.storage("c1")) + snapshot_tree(rig.storage("c5"));
  // The in-share rename and back changes a's mtime/ctime only: compare names.
  auto names = [](const std::string& snap) {
    std::string o, line;
    std::istringstream in(snap);
    while (std::getline(in, line)) o += line.substr(0, line.find(' ')) + "\n";
    return o;
  };
  CHECK(names(after) == names(before));
}

TEST_CASE("sharefs confinement: a share's source renamed or replaced by a symlink does not escape") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.container("c3");
  rig.write("c1", "s/f", "inside");
  rig.write("c1", "secret-c1", "SECRET-C1");  // c1's storage, outside the share
  rig.write("c3", "secret-c3", "SECRET-C3");
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  const std::string st = rig.storage("c1");
  std::string jail = rig.pool().make_temp_dir("jail");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s/f"));

  // Reads in a jail: a symlink the caller's kernel follows lands in the jail,
  // so a secret can only come through the daemon.
  auto probe = [&](const std::string& label) {
    auto e = in_jail(jail, m->root(), [&] {
      int bad = 0;
      for (auto p : {"/m/s/secret-c1", "/m/s/secret-c3", "/m/s/s/f", "/m/s/f", "/m/s/storage/secret-c1"}) {
        std::string c = read_all(p);
        std::printf("%s: %s\n", p, c.c_str());
        bad += c.find("SECRET") != std::string::npos;
      }
      for (auto d : {"/m/s", "/m/s/s"}) {
        std::string n;
        for (auto& x : names_in(d)) {
          n += x + " ";
          bad += x == "secret-c1" || x == "secret-c3";
        }
        std::printf("ls %s: %s\n", d, n.c_str());
      }
      return bad;
    });
    CHECK_MESSAGE(e.exit_code == 0, label, ": ", e.describe());
    MESSAGE(label, ":\n", e.output);
  };
  probe("as offered");
  // 1. The source renamed away, and a symlink to the storage root put there.
  REQUIRE(::rename((st + "/s").c_str(), (st + "/s.moved").c_str()) == 0);
  REQUIRE(::symlink(".", (st + "/s").c_str()) == 0);
  probe("source renamed, replaced by a symlink to '.' (the owner's storage)");
  // 2. A symlink to another container's storage.
  REQUIRE(::unlink((st + "/s").c_str()) == 0);
  REQUIRE(::symlink(rig.storage("c3").c_str(), (st + "/s").c_str()) == 0);
  probe("replaced by a symlink to c3's storage");
  // 3. A symlink to "/", and ../.. (the pool).
  REQUIRE(::unlink((st + "/s").c_str()) == 0);
  REQUIRE(::symlink("../../..", (st + "/s").c_str()) == 0);
  probe("replaced by a symlink to ../../.. (the pool)");
  // 4. A fresh daemon for c2 after the swap resolves the source anew.
  {
    REQUIRE(::unlink((st + "/s").c_str()) == 0);
    REQUIRE(::symlink(rig.storage("c3").c_str(), (st + "/s").c_str()) == 0);
    auto m2 = rig.mount("c2");
    auto e = in_jail(jail, m2->root(), [&] {
      int bad = 0;
      for (auto p : {"/m/s/secret-c3", "/m/s/secret-c1"}) bad += read_all(p).find("SECRET") != std::string::npos;
      for (auto& x : names_in("/m/s")) bad += x == "secret-c3" || x == "secret-c1";
      return bad;
    });
    CHECK_MESSAGE(e.exit_code == 0, "a fresh mount after the swap: ", e.describe());
  }
  // 5. The source renamed back: the share works again.
  REQUIRE(::unlink((st + "/s").c_str()) == 0);
  REQUIRE(::rename((st + "/s.moved").c_str(), (st + "/s").c_str()) == 0);
  CHECK(read_all(*m / "s/f") == "inside");
}

TEST_CASE("sharefs permissions: owners shown as they are, the kernel checks modes per caller (default_permissions), files made as the caller") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.write("c1", "s/secret", "root only", 0600);
  rig.write("c1", "s/theirs", "owned by 1234:5678", 0640);
  REQUIRE(::chown((rig.storage("c1") + "/s/theirs").c_str(), 1234, 5678) == 0);
  rig.mkdir("c1", "s/open", 0777);
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "s/secret"));

  // The super options: allow_other comes with default_permissions (libfuse #15).
  std::string line;
  {
    std::ifstream in("/proc/self/mountinfo");
    std::string l;
    while (std::getline(in, l))
      if (l.find(" " + m->root() + " ") != std::string::npos) line = l;
  }
  INFO("mountinfo: ", line);
  if (line.find("allow_other") != std::string::npos)
    CHECK(line.find("default_permissions") != std::string::npos);

  struct stat st;
  REQUIRE(::stat((*m / "s/theirs").c_str(), &st) == 0);
  CHECK(st.st_uid == 1234u);
  CHECK(st.st_gid == 5678u);
  CHECK((st.st_mode & 07777) == 0640);
  REQUIRE(::stat((*m / "s/secret").c_str(), &st) == 0);
  CHECK(st.st_uid == 0u);
  CHECK((st.st_mode & 07777) == 0600);

  // Root reads first (a cached permission result would be reused), then nobody.
  CHECK(read_all(*m / "s/secret") == "root only");
  for (int round = 0; round < 2; ++round) {
    auto e = run_child([&] {
      std::string got = read_all(*m / "s/secret");
      std::string theirs = read_all(*m / "s/theirs");
      std::printf("secret: %s theirs: %s\n", got.c_str(), theirs.c_str());
      return got == "<EACCES>" && theirs == "<EACCES>" ? 0 : 1;
    }, {.as_nobody = true});
    CHECK_MESSAGE(e.exit_code == 0, e.describe());
  }
  // A file made by nobody belongs to nobody in the owner's storage.
  auto e = run_child([&] {
    int fd = ::open((*m / "s/open/made").c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return std::printf("create: %s\n", std::strerror(errno)), 1;
    ::close(fd);
    return ::mkdir((*m / "s/open/dir").c_str(), 0755) == 0 ? 0 : 2;
  }, {.as_nobody = true});
  CHECK_MESSAGE(e.exit_code == 0, e.describe());
  for (auto n : {"made", "dir"}) {
    REQUIRE(::lstat((rig.storage("c1") + "/s/open/" + n).c_str(), &st) == 0);
    CHECK(st.st_uid == kNobodyUid);
    CHECK(st.st_gid == kNobodyGid);
  }
  // Nobody cannot chown what it made to someone else, nor chmod root's file.
  auto f = run_child([&] {
    if (::chown((*m / "s/open/made").c_str(), 0, 0) == 0) return 1;
    if (::chmod((*m / "s/secret").c_str(), 0666) == 0) return 2;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(f.exit_code == 0, f.describe());
}

TEST_CASE("sharefs control entries: the mount root, .pending and .hoody refuse what they do not define") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.write("c1", "s/f", "x");
  rig.write("c1", "o/f", "y");
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.offer("c1", "o", "c2", Mode::ro, "o");
  rig.accept("c2", "s");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / ".pending/o"));
  const std::string M = m->root();
  const std::string before = snapshot_tree(rig.storage("c1"));
  OpList ops;
  auto any = std::initializer_list<int>{EPERM, EACCES, EROFS, EINVAL, ENOTSUP, EXDEV, ENOENT};
  auto o = [](const std::string& p, int flags) -> long {
    int fd = ::open(p.c_str(), flags | O_CLOEXEC, 0644);
    if (fd >= 0) ::close(fd);
    return fd;
  };
  ops.add("create a file in the mount root", [=] { return o(M + "/newfile", O_CREAT | O_WRONLY); }, any);
  ops.add("mkdir in the mount root", [=] { return static_cast<long>(::mkdir((M + "/newdir").c_str(), 0755)); }, any);
  ops.add("symlink in the mount root", [=] { return static_cast<long>(::symlink("/", (M + "/l").c_str())); }, any);
  ops.add("write .hoody/shares.json", [=] { return o(M + "/.hoody/shares.json", O_WRONLY); }, any);
  ops.add("truncate .hoody/shares.json", [=] { return static_cast<long>(::truncate((M + "/.hoody/shares.json").c_str(), 0)); }, any);
  ops.add("unlink .hoody/shares.json", [=] { return static_cast<long>(::unlink((M + "/.hoody/shares.json").c_str())); }, any);
  ops.add("create in .hoody", [=] { return o(M + "/.hoody/x", O_CREAT | O_WRONLY); }, any);
  ops.add("create in .pending", [=] { return o(M + "/.pending/x", O_CREAT | O_WRONLY); }, any);
  ops.add("mkdir in .pending (a fake offer)", [=] { return static_cast<long>(::mkdir((M + "/.pending/fake").c_str(), 0755)); }, any);
  ops.add("accept under another name", [=] { return static_cast<long>(::rename((M + "/.pending/o").c_str(), (M + "/renamed").c_str())); }, any);
  ops.add("accept into a share", [=] { return static_cast<long>(::rename((M + "/.pending/o").c_str(), (M + "/s/o").c_str())); }, any);
  ops.add("create in an offered (not accepted) share", [=] { return o(M + "/.pending/o/new", O_CREAT | O_WRONLY); }, any);
  ops.add("read in an offered (not accepted) share", [=] { return o(M + "/.pending/o/f", O_RDONLY); }, any);
  ops.add("chmod the mount root", [=] { return static_cast<long>(::chmod(M.c_str(), 0777)); }, any);
  ops.add("setxattr on the mount root", [=] { return static_cast<long>(::setxattr(M.c_str(), "user.x", "v", 1, 0)); }, any);
  for (bool nobody : {true, false}) {
    auto e = run_child([&] { return ops.run(); }, {.as_nobody = nobody});
    CHECK_MESSAGE(e.exit_code == 0, std::string(nobody ? "nobody: " : "root: "), e.describe());
    MESSAGE(e.output);
  }
  CHECK(snapshot_tree(rig.storage("c1")) == before);
  // As nobody: a container's unprivileged user cannot accept or reject.
  auto n = run_child([&] {
    if (::rename((M + "/.pending/o").c_str(), (M + "/o").c_str()) == 0) return 1;
    if (::rmdir((M + "/.pending/o").c_str()) == 0) return 2;
    return 0;
  }, {.as_nobody = true});
  CHECK_MESSAGE(n.exit_code == 0, "nobody changed the share's state: ", n.describe());
  auto r = rig.registry().shares_for("c2");
  REQUIRE(r.ok());
  for (auto& s : *r)
    if (s.name == "o") CHECK(s.state == hoody::sharefs::State::offered);
}

namespace {

size_t open_fds(pid_t pid) {
  size_t n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return 0;
  while (auto* e = ::readdir(d)) n += e->d_name[0] != '.';
  ::closedir(d);
  return n;
}

}  // namespace

// A container that walks its shares (twice, the second time after the
// kernel's entry timeout, so every name is looked up again) must not drive
// the daemon past its fd budget: at RLIMIT_NOFILE every lookup of every
// container using the mount fails with EMFILE (a denial of service through
// a share).  With -o fd_budget=300 and 2000 files the daemon keeps about 300.
TEST_CASE("sharefs fd budget: walking a share twice does not drive the daemon past its fd budget") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  rig.mkdir("c1", "s");
  for (int d = 0; d < 10; ++d) {
    rig.mkdir("c1", "s/d" + std::to_string(d));
    for (int f = 0; f < 200; ++f) {
      int fd = ::open((rig.storage("c1") + "/s/d" + std::to_string(d) + "/f" + std::to_string(f)).c_str(),
                      O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      REQUIRE(fd >= 0);
      ::close(fd);
    }
  }
  rig.offer("c1", "s", "c2", Mode::ro, "s");
  rig.accept("c2", "s");
  auto m = rig.mount("c2", "allow_other,fd_budget=300");
  REQUIRE(wait_for_path(*m / "s/d0"));
  const pid_t pid = m->daemon().pid();
  const size_t base = open_fds(pid);
  size_t peak = 0;
  std::string per_pass;
  int failures = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (int d = 0; d < 10; ++d)
      for (int f = 0; f < 200; ++f) {
        struct stat st;
        if (::stat((*m / ("s/d" + std::to_string(d) + "/f" + std::to_string(f))).c_str(), &st) < 0) ++failures;
      }
    size_t now = open_fds(pid);
    per_pass += " " + std::to_string(now);
    peak = std::max(peak, now);
    ::usleep(1'200'000);  // past entry_timeout and attr_timeout (1 s): every name again
  }
  MESSAGE("daemon fds: ", base, " at start,", per_pass, " after each pass (budget 300), ", failures, " failed stats");
  CHECK(failures == 0);
  CHECK_MESSAGE(peak <= base + 300 + 60, "the daemon holds ", peak, " fds, its budget is 300");
}
