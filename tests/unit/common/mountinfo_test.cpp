// hoody::mountinfo: the one parser of /proc/self/mountinfo.
#include "hoody/mountinfo.hpp"

#include <doctest/doctest.h>

using namespace hoody;

TEST_CASE("mountinfo: a line with optional fields before the separator") {
  auto m = mountinfo::parse_line(
      "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue");
  REQUIRE(m);
  CHECK(m->id == 36);
  CHECK(m->parent == 35);
  CHECK(m->major == 98);
  CHECK(m->minor == 0);
  CHECK(m->root == "/mnt1");
  CHECK(m->mount_point == "/mnt/parent");
  CHECK(m->options == "rw,noatime");
  CHECK(m->optional == std::vector<std::string>{"master:1", "shared:7"});
  CHECK(m->fstype == "ext3");
  CHECK(m->source == "/dev/root");
  CHECK(m->super_options == "rw,errors=continue");
}

TEST_CASE("mountinfo: no optional fields") {
  auto m = mountinfo::parse_line("25 1 0:22 / /hoody/.snapshots rw,nosuid,nodev - fuse.hoody-snapfs /srv/pool rw,user_id=0");
  REQUIRE(m);
  CHECK(m->optional.empty());
  CHECK(m->fstype == "fuse.hoody-snapfs");
  CHECK(m->source == "/srv/pool");
}

TEST_CASE("mountinfo: \\ooo escapes are undone in root, mount point and source") {
  auto m = mountinfo::parse_line(
      "40 25 0:50 /.snapshots/a\\040b/storage /tmp/x\\040y\\011z\\134w\\012 rw shared:3 - fuse.hoody-snapfs "
      "/srv/my\\040pool rw");
  REQUIRE(m);
  CHECK(m->root == "/.snapshots/a b/storage");
  CHECK(m->mount_point == "/tmp/x y\tz\\w\n");
  CHECK(m->source == "/srv/my pool");
  CHECK(mountinfo::unescape("a\\040") == "a ");
  // A backslash without three octal digits stays as it is.
  CHECK(mountinfo::unescape("a\\09x") == "a\\09x");
  CHECK(mountinfo::unescape("end\\04") == "end\\04");
}

TEST_CASE("mountinfo: malformed lines are skipped, the others kept in order") {
  auto all = mountinfo::parse(
      "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
      "garbage\n"
      "2 1 8:2 / /a rw\n"  // no separator
      "x 1 8:2 / /b rw - ext4 /dev/sda2 rw\n"
      "3 1 8:3 / /c rw - tmpfs tmpfs rw\n");
  REQUIRE(all.size() == 2);
  CHECK(all[0].mount_point == "/");
  CHECK(all[1].mount_point == "/c");
  CHECK(all[1].fstype == "tmpfs");
}

TEST_CASE("mountinfo: this process's mounts include /") {
  auto all = mountinfo::read();
  REQUIRE(all);
  bool root = false;
  for (auto& m : *all) root = root || m.mount_point == "/";
  CHECK(root);
}

TEST_CASE("mountinfo: has_option matches whole options only") {
  CHECK(mountinfo::has_option("ro,nosuid", "ro"));
  CHECK(mountinfo::has_option("rw,nosuid", "nosuid"));
  CHECK_FALSE(mountinfo::has_option("rw,rootcontext=x", "ro"));
  CHECK_FALSE(mountinfo::has_option("", "ro"));
}
