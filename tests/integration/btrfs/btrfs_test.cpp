// hoody::btrfs and hoody::send on a real loop-mounted BTRFS.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <dirent.h>
#include <sys/xattr.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../test_pool.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/send_stream.hpp"
#include "hoody/sys.hpp"

using namespace hoody;
using hoody::test::Pool;
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
  Pool pool;
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
  Pool pool;
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

  // Unprivileged, libbtrfsutil 6.2's iterator closes the fd it is given; ours
  // (and the caller's) must survive.
  auto as_nobody = hoody::test::run_child(
      [&] {
        auto own = sys::open(pool.path().c_str(), O_RDONLY | O_DIRECTORY);
        if (!own) return 2;
        auto k = btrfs::children(own->get());
        if (!k) return 10 + k.err();
        if (::fcntl(own->get(), F_GETFD) < 0) return 3;
        auto again = btrfs::children(own->get());
        return again && again->size() == k->size() ? 0 : 4;
      },
      {.as_nobody = true});
  CHECK_MESSAGE(as_nobody.ok(), as_nobody.describe());

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
  Pool pool;
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

  // Protocol v2 from the kernel parses to the same diff.
  auto raw2 = send::run_send(s2.get(), {s1.get(), {}, true, 2});
  REQUIRE(raw2.ok());
  auto stream2 = send::parse(*raw2);
  REQUIRE(stream2.ok());
  CHECK(stream2->version == 2);
  CHECK(lines(send::diff(stream2->commands)) == lines(*changes));
  // A full v2 stream with file data (A_DATA without a length) parses too.
  auto full2 = send::run_send(s2.get(), {-1, {}, false, 2});
  REQUIRE(full2.ok());
  auto f2 = send::parse(*full2);
  REQUIRE(f2.ok());
  CHECK(std::any_of(f2->commands.begin(), f2->commands.end(), [](const send::Command& c) {
    return c.cmd == static_cast<uint16_t>(send::Cmd::write) && c.path == "f1" && c.data_len == 8;
  }));

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
  Pool pool;
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

// ---- the diff against the real kernel stream, checked by reconstruction -------

namespace {

struct Entry {
  char type = '?';  // f d l
  std::string content;  // file data or symlink target
  mode_t mode = 0;
  uid_t uid = 0;
  nlink_t nlink = 1;
};
using Tree = std::map<std::string, Entry>;

void walk(int dirfd, const std::string& prefix, Tree& out) {
  auto dir = sys::opendir_at(dirfd, ".");
  REQUIRE(dir.ok());
  while (struct dirent* e = ::readdir(dir->get())) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    auto st = sys::fstatat(dirfd, n.c_str(), AT_SYMLINK_NOFOLLOW);
    REQUIRE(st.ok());
    Entry en;
    en.mode = st->st_mode & 07777;
    en.uid = st->st_uid;
    en.nlink = st->st_nlink;
    std::string path = prefix.empty() ? n : prefix + "/" + n;
    if (S_ISDIR(st->st_mode)) {
      en.type = 'd';
      auto sub = sys::openat(dirfd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      REQUIRE(sub.ok());
      walk(sub->get(), path, out);
    } else if (S_ISLNK(st->st_mode)) {
      en.type = 'l';
      en.content = *sys::read_link(dirfd, n.c_str());
    } else {
      en.type = 'f';
      en.content = *sys::read_file(dirfd, n.c_str());
    }
    out[path] = en;
  }
}

Tree walk(int fd) {
  Tree t;
  walk(fd, "", t);
  return t;
}

// Random changes to the tree under `root` (a path on the test pool).
void mutate(const std::string& root, std::mt19937& rng, int ops) {
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  for (int i = 0; i < ops; ++i) {
    auto live = sys::open(root.c_str(), O_RDONLY | O_DIRECTORY);
    REQUIRE(live.ok());
    Tree t = walk(live->get());
    std::vector<std::string> dirs{""}, files, all;
    for (auto& [p, e] : t) {
      all.push_back(p);
      if (e.type == 'd') dirs.push_back(p);
      if (e.type == 'f') files.push_back(p);
    }
    auto in = [](const std::string& d, const std::string& n) { return d.empty() ? n : d + "/" + n; };
    std::string fresh = in(dirs[pick(static_cast<int>(dirs.size()))], "n" + std::to_string(pick(8)));
    const std::string R = root + "/";
    int fd = live->get();
    switch (pick(12)) {
      case 0:
      case 1:
        if (t.count(fresh) == 0) {
          auto f = sys::openat(fd, fresh.c_str(), O_CREAT | O_EXCL | O_WRONLY, 0644);
          if (f) (void)sys::write_all(f->get(), std::to_string(rng()));
        }
        break;
      case 2:
        if (!files.empty()) {
          auto f = sys::openat(fd, files[pick(static_cast<int>(files.size()))].c_str(), O_WRONLY | O_APPEND);
          if (f) (void)sys::write_all(f->get(), "more");
        }
        break;
      case 3:
        if (!files.empty()) (void)sys::unlinkat(fd, files[pick(static_cast<int>(files.size()))].c_str(), 0);
        break;
      case 4:
      case 5:
        if (!all.empty()) {
          std::string from = all[pick(static_cast<int>(all.size()))];
          if (fresh.rfind(from + "/", 0) != 0)
            (void)sys::renameat2(fd, from.c_str(), fd, fresh.c_str(), RENAME_NOREPLACE);
        }
        break;
      case 6: (void)sys::mkdirat(fd, fresh.c_str(), 0755); break;
      case 7:
        if (dirs.size() > 1) sh("rm -rf '" + R + dirs[1 + pick(static_cast<int>(dirs.size()) - 1)] + "'");
        break;
      case 8:
        if (!all.empty())  // a symlink is followed (and a dangling one skipped)
          (void)::fchmodat(fd, all[pick(static_cast<int>(all.size()))].c_str(),
                           static_cast<mode_t>(pick(2) ? 0600 : 0755), 0);
        break;
      case 9:
        if (!files.empty() && t.count(fresh) == 0) (void)::linkat(fd, files[pick(static_cast<int>(files.size()))].c_str(), fd, fresh.c_str(), 0);
        break;
      case 10:
        if (t.count(fresh) == 0) (void)::symlinkat(("target" + std::to_string(pick(3))).c_str(), fd, fresh.c_str());
        break;
      case 11:
        if (all.size() >= 2) {  // swap two names
          std::string a = all[pick(static_cast<int>(all.size()))], b = all[pick(static_cast<int>(all.size()))];
          if (a != b && b.rfind(a + "/", 0) != 0 && a.rfind(b + "/", 0) != 0)
            (void)sys::renameat2(fd, a.c_str(), fd, b.c_str(), RENAME_EXCHANGE);
        }
        break;
    }
  }
}

// Where `path` is after applying the renames (longest matching prefix).
std::string map_path(const std::string& path, const std::vector<std::pair<std::string, std::string>>& renames,
                     bool forward) {
  std::size_t best = 0;
  std::string out = path;
  for (auto& [a, b] : renames) {
    const std::string& from = forward ? a : b;
    const std::string& to = forward ? b : a;
    if ((path == from || path.rfind(from + "/", 0) == 0) && from.size() + 1 > best) {
      best = from.size() + 1;
      out = to + path.substr(from.size());
    }
  }
  return out;
}

}  // namespace

TEST_CASE("diff of real random changes reconstructs the new tree") {
  // HOODY_DIFF_SEEDS=N for a longer run.
  const char* env = std::getenv("HOODY_DIFF_SEEDS");
  const unsigned kSeeds = env ? static_cast<unsigned>(std::atoi(env)) : 4;
  Pool pool;
  REQUIRE(btrfs::create_subvolume(pool.fd(), "live").ok());
  const std::string live = pool.path() + "/live";
  auto live_fd = open_dir(pool.fd(), "live");
  int checked = 0, lines_seen = 0;
  for (unsigned seed = 1; seed <= kSeeds; ++seed) {
    std::mt19937 rng(seed);
    mutate(live, rng, 40);
    std::string prev = "s" + std::to_string(seed) + "-0";
    REQUIRE(btrfs::snapshot(live_fd.get(), pool.fd(), prev.c_str(), true).ok());
    for (int round = 1; round <= 6; ++round) {
      CAPTURE(seed);
      CAPTURE(round);
      mutate(live, rng, 12);
      std::string next = "s" + std::to_string(seed) + "-" + std::to_string(round);
      REQUIRE(btrfs::snapshot(live_fd.get(), pool.fd(), next.c_str(), true).ok());
      auto a = open_dir(pool.fd(), prev.c_str());
      auto b = open_dir(pool.fd(), next.c_str());
      Tree old_t = walk(a.get()), new_t = walk(b.get());
      auto changes = send::diff_subvolumes(a.get(), b.get());
      REQUIRE(changes.ok());
      std::set<std::string> added, removed, modified;
      std::vector<std::pair<std::string, std::string>> renames;
      std::string text;
      for (auto& c : *changes) {
        text += send::format(c) + "\n";
        if (c.kind == send::ChangeKind::added) added.insert(c.path);
        if (c.kind == send::ChangeKind::removed) removed.insert(c.path);
        if (c.kind == send::ChangeKind::modified) modified.insert(c.path);
        if (c.kind == send::ChangeKind::renamed) renames.emplace_back(c.path, c.to);
      }
      INFO("diff:\n", text);
      lines_seen += static_cast<int>(changes->size());
      // old - removed, moved by the renames, + added == new
      std::set<std::string> rebuilt;
      for (auto& [p, e] : old_t)
        if (!removed.count(p)) rebuilt.insert(map_path(p, renames, true));
      for (auto& p : added) {
        CHECK_MESSAGE(!rebuilt.count(p), "+ of an existing path: ", p);
        rebuilt.insert(p);
      }
      std::set<std::string> want;
      for (auto& [p, e] : new_t) want.insert(p);
      std::vector<std::string> missing, extra;
      std::set_difference(want.begin(), want.end(), rebuilt.begin(), rebuilt.end(), std::back_inserter(missing));
      std::set_difference(rebuilt.begin(), rebuilt.end(), want.begin(), want.end(), std::back_inserter(extra));
      CHECK(missing == std::vector<std::string>{});
      CHECK(extra == std::vector<std::string>{});
      // Every entry whose content, mode, owner or type changed is M (hard
      // links aside: the stream names one of their paths).
      for (auto& [p, e] : new_t) {
        if (added.count(p) || e.nlink > 1) continue;
        std::string q = map_path(p, renames, false);
        auto o = old_t.find(q);
        if (o == old_t.end() || o->second.nlink > 1) continue;
        bool changed = o->second.type != e.type || o->second.content != e.content ||
                       o->second.mode != e.mode || o->second.uid != e.uid;
        if (changed) CHECK_MESSAGE(modified.count(p), "no M for ", p);
      }
      ++checked;
      prev = next;
    }
  }
  MESSAGE(checked, " random deltas checked, ", lines_seen, " diff lines");
}
