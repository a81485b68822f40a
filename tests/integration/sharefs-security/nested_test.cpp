// Nested subvolumes and mount points inside a share.
//
// Whatever the policy, two things hold: a subvolume's inode numbers repeat
// those of its parent (every subvolume root is inode 256, the first file 257),
// so a daemon that keyed its inodes by st_ino alone would serve one file for
// another; and what the daemon shows below a mount point is the policy of
// hoody-sharefs(8), checked here as written there.
#include <doctest/doctest.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <set>
#include <string>

#include "hoody/test/guard.hpp"
#include "rig.hpp"

using namespace hoody::test;

namespace {

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

std::set<std::string> names_in(const std::string& dir) {
  std::set<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) return out;
  while (auto* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) out.insert(e->d_name);
  ::closedir(d);
  return out;
}

ino_t ino(const std::string& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

}  // namespace

TEST_CASE("sharefs nested subvolumes: equal inode numbers in a nested subvolume are never confused") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  const std::string st = rig.storage("c1");
  // storage/ (a subvolume root, inode 256) with a first file (inode 257), and
  // storage/sv, a nested subvolume (its root inode 256, its first file 257).
  rig.write("c1", "a", "outer a");
  rig.pool().make_subvolume("containers/c1/storage/sv");
  rig.write("c1", "sv/a", "inner a");
  rig.write("c1", "sv/b", "inner b");
  rig.write("c1", "b", "outer b");
  REQUIRE(ino(st) == ino(st + "/sv"));      // both 256
  REQUIRE(ino(st + "/a") == ino(st + "/sv/a"));  // both 257
  rig.offer("c1", ".", "c2", Mode::rw, "all");
  rig.offer("c1", "sv", "c2", Mode::ro, "inner");
  rig.accept("c2", "all");
  rig.accept("c2", "inner");
  auto m = rig.mount("c2");
  REQUIRE(wait_for_path(*m / "all/a"));

  // The share of the whole storage: its own files are its own.
  CHECK(read_all(*m / "all/a") == "outer a");
  CHECK(read_all(*m / "all/b") == "outer b");
  CHECK(names_in(*m / "all").count("sv"));
  // A share whose source is the nested subvolume's root: its files, not the
  // outer ones with the same inode numbers.
  CHECK(read_all(*m / "inner/a") == "inner a");
  CHECK(read_all(*m / "inner/b") == "inner b");
  CHECK(names_in(*m / "inner") == std::set<std::string>{"a", "b"});
  // The nested subvolume seen from the outer share: its own content, never
  // the outer directory's.
  std::string inner_a = read_all(*m / "all/sv/a");
  MESSAGE("all/sv/a through the outer share: ", inner_a, "; all/sv lists: ",
          [&] { std::string s; for (auto& n : names_in(*m / "all/sv")) s += n + " "; return s; }());
  // hoody-sharefs(8): a nested subvolume is part of the share, served like
  // a directory, its inode numbers kept apart by a per-subvolume prefix.
  CHECK(inner_a == "inner a");
  CHECK(names_in(*m / "all/sv") == std::set<std::string>{"a", "b"});
  CHECK(ino(*m / "all/a") != ino(*m / "all/sv/a"));
  CHECK(ino(*m / "all") != ino(*m / "all/sv"));
  // Reading the outer one again after the inner ones were looked up.
  CHECK(read_all(*m / "all/a") == "outer a");
  // Distinct files have distinct inode numbers through the mount (st_ino is
  // the FUSE node id or the backing one: either way, not the same for two
  // files the caller can open at once).
  struct stat x, y;
  if (::stat((*m / "all/a").c_str(), &x) == 0 && ::stat((*m / "inner/a").c_str(), &y) == 0)
    CHECK_MESSAGE(!(x.st_dev == y.st_dev && x.st_ino == y.st_ino), "two different files share dev and ino");
  // Writing through the rw outer share does not touch the inner file.
  int fd = ::open((*m / "all/a").c_str(), O_WRONLY | O_TRUNC | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "outer A", 7) == 7);
  ::close(fd);
  CHECK(read_all(st + "/a") == "outer A");
  CHECK(read_all(st + "/sv/a") == "inner a");
  CHECK(read_all(*m / "inner/a") == "inner a");
}

TEST_CASE("sharefs mount points: a mount inside a share's source is handled as hoody-sharefs(8) says") {
  ShareRig rig;
  rig.container("c1");
  rig.container("c2");
  const std::string st = rig.storage("c1");
  rig.write("c1", "s/f", "share file");
  rig.write("c1", "s/mp/under", "under the mount");
  // A tmpfs over s/mp with a file of its own (as an administrator's mount in
  // the owner's storage would be).
  std::string mp = st + "/s/mp";
  auto id = register_resource(Resource::mount, mp);
  REQUIRE(::mount("tmpfs", mp.c_str(), "tmpfs", 0, "size=1m,mode=0755") == 0);
  {
    int fd = ::open((mp + "/mounted").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    REQUIRE(::write(fd, "on the mount", 12) == 12);
    ::close(fd);
  }
  rig.offer("c1", "s", "c2", Mode::rw, "s");
  rig.accept("c2", "s");
  {
    auto m = rig.mount("c2");
    REQUIRE(wait_for_path(*m / "s/f"));
    CHECK(read_all(*m / "s/f") == "share file");
    std::string mounted = read_all(*m / "s/mp/mounted");
    std::string under = read_all(*m / "s/mp/under");
    auto names = names_in(*m / "s/mp");
    std::string ls;
    for (auto& n : names) ls += n + " ";
    MESSAGE("through the share: s/mp lists [", ls, "], mounted: ", mounted, ", under: ", under);
    // Never both worlds at once, never the dir under the mount (the daemon
    // would need an fd opened before the mount for that).
    CHECK(under.front() == '<');
    // Policy (hoody-sharefs(8), "Nested subvolumes and mount points"): a mount
    // point inside a share is not crossed: its name is hidden.
    CHECK_MESSAGE(mounted.front() == '<', "the daemon crossed a mount point inside the share: ", mounted);
    CHECK(names.count("mounted") == 0);
    // The name is hidden: a lookup gives ENOENT (a plain readdir may list it).
    struct stat mp_st;
    CHECK(::lstat((*m / "s/mp").c_str(), &mp_st) < 0);
    CHECK(errno == ENOENT);
    // Writing into it through the share does not reach the tmpfs.
    int fd = ::open((*m / "s/mp/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd >= 0) ::close(fd);
    struct stat sb;
    CHECK(::lstat((mp + "/new").c_str(), &sb) < 0);
  }
  ::umount2(mp.c_str(), MNT_DETACH);
  release(id);
}
