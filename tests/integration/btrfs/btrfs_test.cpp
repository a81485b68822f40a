// hoody::btrfs and hoody::send on a real loop-mounted BTRFS.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "../local_pool.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/send_stream.hpp"
#include "hoody/sys.hpp"

using namespace hoody;
using hoody::test::LocalPool;
using hoody::test::sh;

namespace doctest {
template <> struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& v) {
    std::string s = "{";
    for (const auto& x : v) s += "\n  \"" + x + "\"";
    return (s + "\n}").c_str();
  }
};
}  // namespace doctest

namespace {

UniqueFd open_dir(int dirfd, const char* name) {
  auto r = btrfs::open_dir(dirfd, name);
  REQUIRE_MESSAGE(r.ok(), "open ", name, ": ", r.error().message());
  return std::move(*r);
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> lines(const std::vector<send::Change>& cs) {
  std::vector<std::string> out;
  for (const auto& c : cs) out.push_back(send::format(c));
  return out;
}

}  // namespace

TEST_CASE("is_btrfs and is_subvolume") {
  LocalPool pool;
  CHECK(*btrfs::is_btrfs(pool.fd()));
  CHECK(*btrfs::is_subvolume(pool.fd()));  // the top level is subvolume 5
  auto proc = sys::open("/proc", O_RDONLY | O_DIRECTORY);
  REQUIRE(proc.ok());
  CHECK_FALSE(*btrfs::is_btrfs(proc->get()));
  CHECK_FALSE(*btrfs::is_subvolume(proc->get()));

  REQUIRE(btrfs::create_subvolume(pool.fd(), "sv").ok());
  CHECK(btrfs::create_subvolume(pool.fd(), "sv").err() == EEXIST);
  REQUIRE(sys::mkdirat(pool.fd(), "plain", 0755).ok());
  auto sv = open_dir(pool.fd(), "sv");
  auto plain = open_dir(pool.fd(), "plain");
  CHECK(*btrfs::is_subvolume(sv.get()));
  CHECK_FALSE(*btrfs::is_subvolume(plain.get()));
  CHECK(btrfs::info(plain.get()).err() == EINVAL);  // not a subvolume root
  CHECK(btrfs::create_subvolume(pool.fd(), "no/such").err() == EINVAL);  // one component only
}

TEST_CASE("create, info, snapshot, read-only flag, children, delete, sync") {
  LocalPool pool;
  REQUIRE(btrfs::create_subvolume(pool.fd(), "sv").ok());
  auto sv = open_dir(pool.fd(), "sv");
  {
    auto f = sys::openat(sv.get(), "f", O_CREAT | O_WRONLY, 0644);
    REQUIRE(f.ok());
    REQUIRE(sys::write_all(f->get(), "hello").ok());
  }

  auto si = btrfs::info(sv.get());
  REQUIRE(si.ok());
  CHECK(si->id >= 256);
  CHECK(si->parent_id == 5);
  CHECK(si->uuid.size() == 36);
  CHECK(si->parent_uuid.empty());
  CHECK_FALSE(si->readonly);
  CHECK(si->otime.tv_sec > 0);
  CHECK_FALSE(*btrfs::is_readonly(sv.get()));

  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(btrfs::snapshot(sv.get(), pool.fd(), "snap", true).ok());
  MESSAGE("read-only snapshot of a 1-file subvolume: ", ms_since(t0), " ms");
  CHECK(btrfs::snapshot(sv.get(), pool.fd(), "snap", true).err() == EEXIST);
  CHECK(btrfs::snapshot(sv.get(), pool.fd(), "a/b", true).err() == EINVAL);
  auto snap = open_dir(pool.fd(), "snap");
  auto ni = btrfs::info(snap.get());
  REQUIRE(ni.ok());
  CHECK(ni->readonly);
  CHECK(ni->parent_uuid == si->uuid);
  CHECK(ni->uuid != si->uuid);
  CHECK(*sys::read_file(snap.get(), "f") == "hello");
  CHECK(sys::openat(snap.get(), "new", O_CREAT | O_WRONLY, 0644).err() == EROFS);

  REQUIRE(btrfs::set_readonly(snap.get(), false).ok());
  CHECK_FALSE(*btrfs::is_readonly(snap.get()));
  CHECK(sys::openat(snap.get(), "new", O_CREAT | O_WRONLY, 0644).ok());
  REQUIRE(btrfs::set_readonly(snap.get(), true).ok());
  CHECK(btrfs::info(snap.get())->readonly);

  // A writable snapshot, and a nested subvolume.
  REQUIRE(btrfs::snapshot(sv.get(), pool.fd(), "rw", false).ok());
  auto rw = open_dir(pool.fd(), "rw");
  CHECK_FALSE(btrfs::info(rw.get())->readonly);
  REQUIRE(btrfs::create_subvolume(sv.get(), "inner").ok());

  auto kids = btrfs::children(pool.fd());
  REQUIRE(kids.ok());
  std::vector<std::string> names;
  for (auto& k : *kids) names.push_back(k.path);
  std::sort(names.begin(), names.end());
  CHECK(names == std::vector<std::string>{"rw", "snap", "sv", "sv/inner"});
  // The fd given to children() is still ours (libbtrfsutil 6.2 closes its own).
  CHECK(::fcntl(pool.fd(), F_GETFD) >= 0);
  CHECK(btrfs::is_btrfs(pool.fd()).ok());
  auto post = btrfs::children(sv.get(), true);
  REQUIRE(post.ok());
  REQUIRE(post->size() == 1);
  CHECK((*post)[0].path == "inner");
  CHECK(::fcntl(sv.get(), F_GETFD) >= 0);

  CHECK(btrfs::sync(pool.fd()).ok());
  auto transid = btrfs::start_sync(pool.fd());
  REQUIRE(transid.ok());
  CHECK(*transid > 0);
  CHECK(btrfs::wait_sync(pool.fd(), *transid).ok());

  // Non-recursive delete: a subvolume holding one is refused.
  CHECK(btrfs::delete_subvolume(pool.fd(), "sv").err() == ENOTEMPTY);
  sv.reset();
  CHECK(btrfs::delete_subvolume(pool.fd(), "sv", true).ok());  // recursive: inner first
  CHECK(btrfs::delete_subvolume(pool.fd(), "sv").err() == ENOENT);
  CHECK(btrfs::delete_subvolume(pool.fd(), "rw").ok());
  snap.reset();
  CHECK(btrfs::delete_subvolume(pool.fd(), "snap").ok());  // read-only deletes too
  REQUIRE(sys::mkdirat(pool.fd(), "plain", 0755).ok());
  CHECK(btrfs::delete_subvolume(pool.fd(), "plain").err() == EINVAL);
  CHECK(btrfs::children(pool.fd())->empty());
}

TEST_CASE("send stream of a real snapshot pair folds into the expected diff") {
  LocalPool pool;
  REQUIRE(btrfs::create_subvolume(pool.fd(), "data").ok());
  const std::string d = pool.path() + "/data";
  sh("cd '" + d + "' && for f in f1 f2 f3 f4 keep; do echo $f > $f; done"
     " && mkdir -p dir/sub gone/deep && echo a > dir/a && echo x > gone/x && echo y > gone/deep/y"
     " && echo h > hard && echo z > xat && mkfifo fifo");
  auto data = open_dir(pool.fd(), "data");
  REQUIRE(btrfs::snapshot(data.get(), pool.fd(), "s1", true).ok());

  sh("cd '" + d + "' && echo more >> f1 && rm f2 && mv f3 f3-renamed && chmod 600 f4"
     " && mkdir newdir && echo n > newdir/n && ln -s /etc/passwd lnk && mv dir moved"
     " && echo b > moved/b && rm -r gone && ln hard hard2 && setfattr -n user.k -v v xat"
     " && rm fifo && mkdir fifo && chown 1000:1000 keep");
  REQUIRE(btrfs::snapshot(data.get(), pool.fd(), "s2", true).ok());

  auto s1 = open_dir(pool.fd(), "s1");
  auto s2 = open_dir(pool.fd(), "s2");

  // A renamed directory whose entries changed is `R` plus its children, not `M`.
  // The raw stream parses with valid crcs and has the expected frame.
  auto raw = send::run_send(s2.get(), {s1.get(), {}, true});
  REQUIRE(raw.ok());
  auto stream = send::parse(*raw);
  REQUIRE(stream.ok());
  CHECK(stream->version == 1);
  REQUIRE(stream->commands.size() >= 2);
  CHECK(stream->commands.front().cmd == static_cast<uint16_t>(send::Cmd::snapshot));
  CHECK(stream->commands.back().cmd == static_cast<uint16_t>(send::Cmd::end));
  CHECK(stream->commands.front().clone_uuid == btrfs::info(s1.get())->uuid);
  std::string dump;
  for (auto& c : stream->commands)
    dump += send::cmd_name(c.cmd) + " " + c.path + (c.path_to.empty() ? "" : " -> " + c.path_to) +
            (c.path_link.empty() ? "" : " link=" + c.path_link) + "\n";
  INFO("stream:\n", dump);

  auto t0 = std::chrono::steady_clock::now();
  auto changes = send::diff_subvolumes(s1.get(), s2.get());
  MESSAGE("send+parse+diff of a small delta: ", ms_since(t0), " ms");
  REQUIRE(changes.ok());
  CHECK(lines(*changes) == std::vector<std::string>{
                               "R dir -> moved",
                               "M f1",
                               "- f2",
                               "R f3 -> f3-renamed",
                               "M f4",
                               "+ fifo",
                               "- fifo",
                               "- gone",
                               "- gone/deep",
                               "- gone/deep/y",
                               "- gone/x",
                               "M hard",
                               "+ hard2",
                               "M keep",
                               "+ lnk",
                               "+ moved/b",
                               "+ newdir",
                               "+ newdir/n",
                               "M xat",
                           });

  // Identical snapshots: an empty diff.
  REQUIRE(btrfs::snapshot(s2.get(), pool.fd(), "s3", true).ok());
  auto s3 = open_dir(pool.fd(), "s3");
  auto none = send::diff_subvolumes(s2.get(), s3.get());
  REQUIRE(none.ok());
  CHECK(none->empty());

  // Send refuses a writable subvolume.
  CHECK(send::run_send(data.get()).err() == EPERM);
  // A full stream (no parent) starts with `subvol` and lists every file as new.
  auto full = send::run_send(s1.get());
  REQUIRE(full.ok());
  auto fs = send::parse(*full);
  REQUIRE(fs.ok());
  CHECK(fs->commands.front().cmd == static_cast<uint16_t>(send::Cmd::subvol));
  auto all = lines(send::diff(fs->commands));
  CHECK(std::find(all.begin(), all.end(), "+ gone/deep/y") != all.end());
}

TEST_CASE("timings on 2000 files (reported, not asserted)") {
  LocalPool pool;
  REQUIRE(btrfs::create_subvolume(pool.fd(), "data").ok());
  const std::string d = pool.path() + "/data";
  sh("cd '" + d + "' && mkdir -p t && for i in $(seq 1 2000); do echo $i > t/f$i; done");
  auto data = open_dir(pool.fd(), "data");
  REQUIRE(btrfs::sync(pool.fd()).ok());
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(btrfs::snapshot(data.get(), pool.fd(), "s1", true).ok());
  MESSAGE("read-only snapshot, 2000 files: ", ms_since(t0), " ms");
  sh("cd '" + d + "/t' && for i in $(seq 1 500); do echo x >> f$i; done && rm f15*");
  REQUIRE(btrfs::snapshot(data.get(), pool.fd(), "s2", true).ok());
  auto s1 = open_dir(pool.fd(), "s1");
  auto s2 = open_dir(pool.fd(), "s2");
  t0 = std::chrono::steady_clock::now();
  auto changes = send::diff_subvolumes(s1.get(), s2.get());
  MESSAGE("diff of 489 changed + 111 deleted files of 2000: ", ms_since(t0), " ms");
  REQUIRE(changes.ok());
  CHECK(changes->size() == 489 + 111 + 1);  // f15* (111) overlap f1..f500 in 11; + "M t"
}

int main(int argc, char** argv) {
  hoody::test::require_capabilities();
  doctest::Context ctx(argc, argv);
  return ctx.run();
}
