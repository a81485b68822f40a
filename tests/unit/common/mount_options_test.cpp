#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "hoody/mount_options.hpp"

using namespace hoody;

namespace {
MountArgs parse(std::vector<const char*> argv, const OptionTable& t = OptionTable::generic()) {
  argv.insert(argv.begin(), "/usr/sbin/hoody-dbfs");
  return parse_mount_args(static_cast<int>(argv.size()), argv.data(), t);
}
bool contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
}  // namespace

TEST_CASE("positionals and flags in any order, as mount.fuse3 passes them") {
  auto a = parse({"/src", "/mnt", "-o", "rw,allow_other,io=sync"});
  CHECK(a.program == "hoody-dbfs");
  CHECK(a.source == "/src");
  CHECK(a.mountpoint == "/mnt");
  CHECK(a.flag("allow_other"));
  CHECK(a.str("io") == "sync");
  auto b = parse({"-f", "-oallow_other", "/src", "/mnt", "--log-level", "debug"});
  CHECK(b.foreground);
  CHECK(b.log_level == "debug");
  CHECK(b.flag("allow_other"));
}

TEST_CASE("fstab-only options are accepted and dropped") {
  auto a = parse({"-o", "defaults,noauto,_netdev,x-systemd.requires=foo.mount,nofail", "/s", "/m"});
  CHECK_FALSE(a.has("noauto"));
  CHECK_FALSE(a.has("x-systemd.requires"));
}

TEST_CASE("unknown or malformed options name themselves") {
  CHECK_THROWS_WITH_AS(parse({"-o", "bogus", "/s", "/m"}),
                       doctest::Contains("unknown option 'bogus'"), UsageError);
  CHECK_THROWS_WITH_AS(parse({"-o", "io=fast", "/s", "/m"}),
                       doctest::Contains("'fast' is not one of uring|sync"), UsageError);
  CHECK_THROWS_WITH_AS(parse({"-o", "max_threads=-3", "/s", "/m"}),
                       doctest::Contains("not a whole number"), UsageError);
  CHECK_THROWS_WITH_AS(parse({"-o", "max_threads", "/s", "/m"}), doctest::Contains("needs a value"),
                       UsageError);
  CHECK_THROWS_WITH_AS(parse({"-o", "allow_other=1", "/s", "/m"}),
                       doctest::Contains("takes no value"), UsageError);
  CHECK_THROWS_WITH_AS(parse({"/s"}), doctest::Contains("missing MOUNTPOINT"), UsageError);
  CHECK_THROWS_WITH_AS(parse({}), doctest::Contains("missing SOURCE and MOUNTPOINT"), UsageError);
  CHECK_THROWS_WITH_AS(parse({"/s", "/m", "/x"}), doctest::Contains("unexpected argument '/x'"),
                       UsageError);
  CHECK_THROWS_WITH_AS(parse({"--frobnicate", "/s", "/m"}),
                       doctest::Contains("unknown argument '--frobnicate'"), UsageError);
  CHECK_THROWS_AS(parse({"-o", "log_level=loud", "/s", "/m"}), UsageError);
}

TEST_CASE("daemon-specific options extend the table") {
  auto t = OptionTable::generic();
  t.add({"default_expiry", OptKind::string, "expiry of new snapshots"});
  t.add({"timeout", OptKind::seconds, "a wait"});
  auto a = parse({"-o", "default_expiry=+7d,timeout=1.5", "/s", "/m"}, t);
  CHECK(a.str("default_expiry") == "+7d");
  CHECK(a.seconds("timeout", 0) == doctest::Approx(1.5));
  CHECK(a.uint("max_threads", 8) == 8);
  CHECK(t.help().find("default_expiry=STR") != std::string::npos);
}

TEST_CASE("ro and rw: the last one wins") {
  CHECK(parse({"-o", "ro,rw", "/s", "/m"}).flag("rw"));
  CHECK_FALSE(parse({"-o", "ro,rw", "/s", "/m"}).flag("ro"));
  CHECK(parse({"-o", "rw", "-o", "ro", "/s", "/m"}).flag("ro"));
}

TEST_CASE("kernel options: allow_other always brings default_permissions") {
  auto a = parse({"-o", "allow_other,nosuid,io=uring,fsname=a\\,b", "/s", "/m"});
  auto k = kernel_mount_options(a, "hoody-dbfs");
  CHECK(contains(k, "allow_other"));
  CHECK(contains(k, "default_permissions"));
  CHECK(contains(k, "nosuid"));
  CHECK(contains(k, "subtype=hoody-dbfs"));
  CHECK(contains(k, "fsname=a\\,b"));
  CHECK_FALSE(contains(k, "io=uring"));
}

TEST_CASE("help and version need no positionals") {
  CHECK(parse({"--help"}).help);
  CHECK(parse({"-V"}).version);
}

TEST_CASE("transport=uring|dev and uring_depth= are generic options, not kernel ones") {
  auto a = parse({"-o", "transport=dev,uring_depth=16", "/s", "/m"});
  CHECK(a.str("transport") == "dev");
  CHECK(a.uint("uring_depth", 8) == 16);
  CHECK(parse({"/s", "/m"}).str("transport", "uring") == "uring");
  CHECK_FALSE(contains(kernel_mount_options(a, "hoody-dbfs"), "transport=dev"));
  CHECK_THROWS_WITH_AS(parse({"-o", "transport=ring", "/s", "/m"}),
                       doctest::Contains("'ring' is not one of uring|dev"), UsageError);
}
