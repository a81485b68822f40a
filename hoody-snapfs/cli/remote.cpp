// hoody-snap copy, sync and serve.  See remote.hpp and hoody-snap(1).
//
// A container's snapshots are reached through its hoody-snapfs mount when one
// runs (the daemon holds the store: mkdir, rmdir, xattrs, .hoody/restore,
// .hoody/diff), else through the store itself (SnapshotStore, which takes the
// store's lock): the same verbs with the same guarantees either way.  The
// btrfs uuids of a snapshot's subvolumes are read from the store directory
// (SOURCE/.snapshots/<uuid>/<subvolume>), which needs root on both paths.
#include "remote.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ftw.h>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../snapshot_name.hpp"
#include "progress.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/mountinfo.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store/snapshot_store.hpp"

namespace hoody::snapcli {

namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using snapfs::SnapshotStore;

constexpr const char* kDefaultPool = "/var/lib/hoody";
constexpr const char* kSyncPrefix = "sync-";
constexpr const char* kSyncSafety = "taken before sync to ";

// A failure said for a person; main prints it and exits 1 (2 for kUsage).
struct Error {
  std::string what;
  int code = 1;
};
constexpr int kUsage = 2;
[[noreturn]] void fail(std::string what, int code = 1) { throw Error{std::move(what), code}; }
std::string q(const std::string& s) { return quote_name(s); }
std::string errtext(int e) { return std::strerror(e); }
std::string shown(std::string_view s) { return escape_control(s); }

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "hoody-snap";
}

std::string real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? buf : p;
}

std::vector<std::string> split_words(const std::string& s) {
  std::istringstream ss(s);
  std::vector<std::string> out;
  for (std::string w; ss >> w;) out.push_back(w);
  return out;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u ? "%.1f %s" : "%.0f %s", b, units[u]);
  return buf;
}

std::string utc_stamp() {
  time_t t = ::time(nullptr);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

// "123", "10K", "100G" (binary units) as bytes; nullopt if malformed.
std::optional<uint64_t> parse_size(const std::string& text) {
  size_t digits = text.find_first_not_of("0123456789");
  if (digits == 0 || text.empty() || digits + 1 < text.size() || (digits == std::string::npos && text.size() > 19))
    return std::nullopt;
  uint64_t v = std::stoull(text.substr(0, digits));
  if (digits == std::string::npos) return v;
  int shift = 0;
  switch (text[digits]) {
    case 'K': shift = 10; break;
    case 'M': shift = 20; break;
    case 'G': shift = 30; break;
    case 'T': shift = 40; break;
    default: return std::nullopt;
  }
  if (digits > 12) return std::nullopt;
  return v << shift;
}

void check_container(const std::string& c) {
  std::string why;
  if (!snapfs::check_snapshot_name(c, &why, snapfs::NameUse::existing))
    fail("container " + q(c) + ": not a valid name (" + why + ")", kUsage);
}

void check_snapshot(const std::string& n) {
  std::string why;
  if (!snapfs::check_snapshot_name(n, &why, snapfs::NameUse::existing))
    fail("snapshot " + q(n) + ": " + why, kUsage);
}

// ---- one container's snapshots on this server -------------------------------

struct SubInfo {
  std::string name, uuid, received_uuid;
  bool readonly = false;
};

struct Snap {
  std::string name, uuid, type, created, description;
  std::vector<SubInfo> subs;
};

json to_json(const Snap& s) {
  json subs = json::array();
  for (auto& v : s.subs)
    subs.push_back({{"name", v.name}, {"uuid", v.uuid}, {"received_uuid", v.received_uuid},
                    {"readonly", v.readonly}});
  return {{"name", s.name},       {"uuid", s.uuid},
          {"type", s.type},       {"created", s.created},
          {"description", s.description}, {"subvolumes", subs}};
}

Snap snap_from_json(const json& j) {
  Snap s;
  s.name = j.value("name", "");
  s.uuid = j.value("uuid", "");
  s.type = j.value("type", "");
  s.created = j.value("created", "");
  s.description = j.value("description", "");
  if (j.contains("subvolumes") && j["subvolumes"].is_array())
    for (auto& v : j["subvolumes"])
      if (v.is_object())
        s.subs.push_back({v.value("name", ""), v.value("uuid", ""), v.value("received_uuid", ""),
                          v.value("readonly", false)});
  return s;
}

// The hoody-snapfs mount of container directory `source` in this mount
// namespace that answers, or "".
std::string find_mount(const std::string& source) {
  auto mounts = mountinfo::read();
  if (!mounts) return "";
  std::string want = real(source);
  for (auto& m : *mounts) {
    if (m.fstype != "fuse.hoody-snapfs") continue;
    if (m.source != source && m.source != want && real(m.source) != want) continue;
    struct stat st;
    if (::stat((m.mount_point + "/.hoody").c_str(), &st) == 0) return m.mount_point;
  }
  return "";
}

class Local {
public:
  // Through the mount at `mount` (its SOURCE from mountinfo).
  static Local from_mount(const std::string& mount) {
    Local l;
    l.mount_ = mount;
    auto mounts = mountinfo::read();
    std::string want = real(mount);
    if (mounts)
      for (auto& m : *mounts)
        if (m.mount_point == want && m.fstype == "fuse.hoody-snapfs") l.source_ = m.source;
    if (l.source_.empty())
      fail("mount " + mount + ": no hoody-snapfs mount there; pass --mount, or --pool and "
           "--container");
    struct stat st;
    if (::stat((mount + "/.hoody").c_str(), &st) < 0)
      fail("mount " + mount + ": " + errtext(errno) + "; is its hoody-snapfs daemon running?");
    return l;
  }
  // POOL/containers/C: through its mount if one runs here, else the store.
  static Local from_pool(const std::string& pool, const std::string& container) {
    Local l;
    l.source_ = pool + "/containers/" + container;
    l.mount_ = find_mount(l.source_);
    return l;
  }

  // Lets go of the store (its lock), so that a `hoody-snap send` child opens it.
  void release() { store_.reset(); }

  const std::string& source() const { return source_; }
  const std::string& mount() const { return mount_; }
  std::string container() const {
    auto s = source_;
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    return s.substr(s.rfind('/') + 1);
  }
  bool exists() const {
    struct stat st;
    return ::stat(source_.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  std::vector<Snap> list() {
    std::vector<Snap> out;
    if (!mount_.empty()) {
      json all = json::parse(read_file(mount_ + "/.hoody/snapshots.json"), nullptr, false);
      if (!all.is_array()) fail("list " + mount_ + ": snapshots.json is not a JSON array");
      for (auto& j : all) out.push_back(snap_from_json(j));
    } else {
      if (!exists()) return out;
      // A receive making this container, or undoing a failed one, may have no
      // .snapshots yet or any more: no snapshots.
      struct stat st;
      if (::stat((source_ + "/" + snapfs::kStoreDir + "/" + snapfs::kIndexDb).c_str(), &st) < 0 &&
          errno == ENOENT)
        return out;
      auto snaps = store(/*read_only=*/true).list();
      if (!snaps) fail("list " + source_ + ": " + errtext(snaps.err()));
      for (auto& s : *snaps) {
        Snap n;
        n.name = s.name;
        n.uuid = s.uuid;
        n.type = s.type;
        n.description = s.description;
        char buf[40];
        time_t t = std::chrono::system_clock::to_time_t(s.created);
        struct tm tm {};
        ::gmtime_r(&t, &tm);
        std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
        n.created = buf;
        out.push_back(std::move(n));
      }
    }
    for (auto& s : out) s.subs = subvolumes(s.uuid);
    return out;
  }

  void create(const std::string& name, const std::string& type, const std::string& description) {
    if (!mount_.empty()) {
      std::string path = mount_ + "/" + name;
      if (::mkdir(path.c_str(), 0755) < 0)
        fail("create " + q(name) + " in " + mount_ + ": " + errtext(errno));
      // Taken as "filesystem" by mkdir, then marked (the daemon allows
      // "filesystem" -> "sync" and nothing else).
      auto undo = [&](const char* what) {
        int e = errno;
        ::rmdir(path.c_str());
        fail("create " + q(name) + ": " + what + ": " + errtext(e));
      };
      if (::setxattr(path.c_str(), "user.hoody.description", description.data(),
                     description.size(), 0) < 0)
        undo("set its description");
      if (type != "filesystem" &&
          ::setxattr(path.c_str(), "user.hoody.type", type.data(), type.size(), 0) < 0)
        undo("set its type");
      return;
    }
    snapfs::CreateOptions o;
    o.type = type;
    o.description = description;
    auto r = store().create(name, caller(), o);
    if (!r) fail("create " + q(name) + " in " + source_ + ": " + errtext(r.err()));
  }

  void remove(const std::string& name) {
    if (!mount_.empty()) {
      if (::rmdir((mount_ + "/" + name).c_str()) < 0)
        fail("delete " + q(name) + ": " + errtext(errno));
      return;
    }
    auto r = store().remove(name, caller());
    if (!r) fail("delete " + q(name) + ": " + errtext(r.err()));
  }

  void set_description(const std::string& name, const std::string& text) {
    if (!mount_.empty()) {
      std::string path = mount_ + "/" + name;
      if (::setxattr(path.c_str(), "user.hoody.description", text.data(), text.size(), 0) < 0)
        fail("describe " + q(name) + ": " + errtext(errno));
      return;
    }
    auto r = store().set_description(name, text, caller());
    if (!r) fail("describe " + q(name) + ": " + errtext(r.err()));
  }

  // The live state replaced by snapshot `name` (the restore of hoody-snapfs:
  // a safety snapshot first, quiesced databases when the daemon runs).  The
  // safety snapshot's name.
  std::string restore(const std::string& name) {
    if (!mount_.empty()) {
      std::string path = mount_ + "/.hoody/restore";
      int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
      if (fd < 0) fail("restore " + q(name) + ": open " + path + ": " + errtext(errno));
      std::string line = name + "\n";
      ssize_t n = ::write(fd, line.data(), line.size());
      int e = n < 0 ? errno : 0;
      std::string text(65536, '\0');
      ssize_t r = ::pread(fd, text.data(), text.size(), 0);
      ::close(fd);
      text.resize(r > 0 ? static_cast<size_t>(r) : 0);
      json res = json::parse(text, nullptr, false);
      if (n < 0)
        fail("restore " + q(name) + ": " + errtext(e) +
             (res.is_object() && res.contains("error") ? "; " + res.value("error", "") : ""));
      return res.is_object() ? res.value("safety", "") : "";
    }
    snapfs::RestoreOptions o;
    snapfs::RestoreReport report;
    auto r = store().restore(name, caller(), o, report);
    if (!r)
      fail("restore " + q(name) + ": " + errtext(r.err()) +
           (report.error.empty() ? "" : "; " + report.error));
    return report.safety;
  }

  // How many paths changed from snapshot `from` to `to` (the diff of hoody-snapfs).
  std::optional<size_t> changes(const std::string& from, const std::string& to) {
    if (!mount_.empty()) {
      std::string text;
      try {
        text = read_file(mount_ + "/.hoody/diff/" + from + ".." + to);
      } catch (const Error&) {
        return std::nullopt;
      }
      return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
    }
    auto d = store().diff(from, to);
    if (!d) return std::nullopt;
    return d->size();
  }

  // Files, directories and links in snapshot `uuid` (what a full copy sent).
  size_t entries(const std::string& uuid) {
    static size_t count;
    count = 0;
    std::string dir = source_ + "/" + snapfs::kStoreDir + "/" + uuid;
    ::nftw(
        dir.c_str(), [](const char*, const struct stat*, int, struct FTW*) { return ++count, 0; },
        64, FTW_PHYS);  // not FTW_MOUNT: each subvolume has its own st_dev
    return count > 0 ? count - 1 : 0;
  }

private:
  static snapfs::Caller caller() {
    return snapfs::Caller{::getuid(), ::getpid()};
  }
  // read_only: a listing, which may share the store with whoever holds it
  // (a receive still running, a daemon that is not mounted here).
  SnapshotStore& store(bool read_only = false) {
    if (store_ && shared_ && !read_only) store_.reset();
    if (!store_) {
      auto fd = sys::open(source_.c_str(), O_RDONLY | O_DIRECTORY);
      if (!fd) fail("open " + source_ + ": " + errtext(fd.err()));
      auto s = SnapshotStore::open(fd->get());
      shared_ = false;
      if (!s && s.err() == EBUSY && read_only) {
        s = SnapshotStore::open_shared(fd->get());
        shared_ = true;
      }
      if (!s)
        fail("open the snapshot store of " + source_ + ": " + errtext(s.err()) +
             (s.err() == EBUSY ? "; its hoody-snapfs daemon holds it: pass its --mount" : ""));
      store_ = std::move(*s);
    }
    return *store_;
  }
  static std::string read_file(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("read " + path + ": " + errtext(errno));
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(fd);
    return out;
  }
  // Each subvolume of .snapshots/<uuid>: its btrfs uuid and received_uuid.
  std::vector<SubInfo> subvolumes(const std::string& uuid) {
    std::vector<SubInfo> out;
    std::string dir = source_ + "/" + snapfs::kStoreDir + "/" + uuid;
    auto dfd = sys::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
    if (!dfd) return out;
    auto d = sys::opendir_at(dfd->get(), ".");
    if (!d) return out;
    while (auto* ent = ::readdir(d->get())) {
      std::string n = ent->d_name;
      if (n == "." || n == "..") continue;
      auto sfd = btrfs::open_dir(dfd->get(), n.c_str());
      if (!sfd) continue;
      auto info = btrfs::info(sfd->get());
      if (!info) continue;
      out.push_back({n, info->uuid, info->received_uuid, info->readonly});
    }
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.name < b.name; });
    return out;
  }

  std::string source_, mount_;
  std::unique_ptr<SnapshotStore> store_;
  bool shared_ = false;  // store_ is open_shared(): for listings only
};

// btrbk's _is_correlated: the same tree on both sides (one received from
// the other, or both from a third).
bool correlated(const SubInfo& a, const SubInfo& b) {
  if (!b.received_uuid.empty() && a.uuid == b.received_uuid) return true;
  if (!a.received_uuid.empty() && b.uuid == a.received_uuid) return true;
  return !a.received_uuid.empty() && a.received_uuid == b.received_uuid;
}

// Snapshot `l` here and `r` on the peer hold the same subvolumes, each
// correlated, and r's are read-only (an incremental needs both).
bool same_snapshot(const Snap& l, const Snap& r) {
  if (l.subs.empty() || l.subs.size() != r.subs.size()) return false;
  for (size_t i = 0; i < l.subs.size(); ++i) {
    auto& a = l.subs[i];
    auto& b = r.subs[i];
    if (a.name != b.name || !b.readonly || !a.readonly || !correlated(a, b)) return false;
  }
  return true;
}

const Snap* on_peer(const Snap& l, const std::vector<Snap>& remote) {
  for (auto& r : remote)
    if (same_snapshot(l, r)) return &r;
  return nullptr;
}

// ---- the peer, over ssh --------------------------------------------------------

struct Target {
  std::string host;       // [user@]host
  std::string container;  // "" when not given
};

Target parse_target(const std::string& to) {
  Target t;
  auto at = to.find('@');
  auto colon = to.find(':', at == std::string::npos ? 0 : at);
  t.host = to.substr(0, colon);
  if (colon != std::string::npos) t.container = to.substr(colon + 1);
  if (t.host.empty() || t.host.front() == '-' || t.host.back() == '@')
    fail("--to " + q(to) + ": expected [user@]host[:container]", kUsage);
  if (!t.container.empty()) check_container(t.container);
  return t;
}

class Peer {
public:
  Peer(const RemoteArgs& a, Target t) : target_(std::move(t)) {
    std::string cmd = a.ssh;
    if (cmd.empty())
      if (const char* e = std::getenv("HOODY_SSH"); e && *e) cmd = e;
    if (cmd.empty()) cmd = "ssh";
    ssh_ = split_words(cmd);
    snap_ = a.remote_snap.empty() ? "hoody-snap" : a.remote_snap;
  }

  // argv of ssh running `hoody-snap serve VERB ARGS` on the peer.
  std::vector<std::string> argv(const std::vector<std::string>& verb) const {
    auto out = ssh_;
    out.push_back(target_.host);
    std::string line = snap_ + " serve";
    for (auto& w : verb) line += " " + w;
    out.push_back(line);
    return out;
  }

  // Runs a verb, its stdout returned; its stderr goes to ours.
  std::string call(const std::vector<std::string>& verb) const {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) fail("pipe: " + errtext(errno));
    auto args = argv(verb);
    pid_t pid = spawn(args, -1, p[1]);
    ::close(p[1]);
    std::string out;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(p[0], buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      out.append(buf, static_cast<size_t>(n));
    }
    ::close(p[0]);
    int status = reap(pid);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      fail("the peer " + target_.host + " refused or failed `" + verb.front() + "` (" +
           describe(status) + ")");
    return out;
  }

  std::vector<Snap> list(const std::string& container, bool* exists) const {
    json j = json::parse(call({"list", "--container", container}), nullptr, false);
    if (!j.is_object() || !j.contains("snapshots") || !j["snapshots"].is_array())
      fail("the peer " + target_.host + " answered `list` with something else than a listing");
    *exists = j.value("exists", false);
    std::vector<Snap> out;
    for (auto& s : j["snapshots"]) out.push_back(snap_from_json(s));
    return out;
  }

  const Target& target() const { return target_; }

  static pid_t spawn(const std::vector<std::string>& args, int in, int out) {
    std::vector<char*> v;
    for (auto& a : args) v.push_back(const_cast<char*>(a.c_str()));
    v.push_back(nullptr);
    std::fflush(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) fail("fork: " + errtext(errno));
    if (pid == 0) {
      ::signal(SIGPIPE, SIG_DFL);
      if (in >= 0) ::dup2(in, 0);
      if (out >= 0) ::dup2(out, 1);
      ::execvp(v[0], v.data());
      std::fprintf(stderr, "hoody-snap: exec %s: %s\n", v[0], std::strerror(errno));
      ::_exit(127);
    }
    return pid;
  }
  static int reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
  }
  static std::string describe(int status) {
    if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return std::string("killed by ") + ::sigabbrev_np(WTERMSIG(status));
    return "status " + std::to_string(status);
  }

private:
  Target target_;
  std::vector<std::string> ssh_;
  std::string snap_;
};

// The local source of a copy or sync: --pool/--container, else the mount.
Local local_side(const RemoteArgs& a, const std::string& mount) {
  if (!a.pool.empty() || !a.container.empty()) {
    if (a.pool.empty() || a.container.empty()) fail("--pool and --container go together", kUsage);
    check_container(a.container);
    return Local::from_pool(a.pool, a.container);
  }
  return Local::from_mount(mount);
}

std::vector<std::string> send_args(const RemoteArgs& a, const Local& l, const std::string& name,
                                   const std::string& parent) {
  // The container before the verb: --mount, --pool and --container are
  // hoody-snap's global options.
  std::vector<std::string> v{self_exe()};
  if (a.pool.empty())
    v.insert(v.end(), {"--mount", l.mount()});
  else
    v.insert(v.end(), {"--pool", a.pool, "--container", a.container});
  v.insert(v.end(), {"send", name});
  if (!parent.empty()) v.insert(v.end(), {"--parent", parent});
  return v;
}

// Passes the stream's preamble (magic, version, header, crc) from `in` to
// `out` and reads the sender's estimate from the header, for the ETA.  What
// is not a well-formed preamble is passed on as it is: the receiver refuses
// it.  False when `out` is gone (the peer's end closed).
bool pass_preamble(int in, int out, uint64_t* bytes, uint64_t* expected) {
  using namespace snapfs::xfer;
  std::string buf;
  auto take = [&](std::size_t n) {
    std::size_t want = buf.size() + n;
    while (buf.size() < want) {
      char b[65536];
      ssize_t r = ::read(in, b, std::min(sizeof b, want - buf.size()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      buf.append(b, static_cast<std::size_t>(r));
    }
    return true;
  };
  if (take(kMagic.size() + 8) && buf.compare(0, kMagic.size(), kMagic) == 0) {
    uint32_t len = get_le32(reinterpret_cast<const unsigned char*>(buf.data()) + kMagic.size() + 4);
    std::size_t at = buf.size();
    std::string why;
    if (len <= kMaxHeaderBytes && take(len + 4))
      if (auto h = header_from_json(json::parse(buf.substr(at, len), nullptr, false), &why))
        *expected = h->estimated_bytes;
  }
  if (!buf.empty() && !sys::write_all(out, buf)) return false;
  *bytes += buf.size();
  return true;
}

struct Sent {
  std::string name, parent;  // parent "" for a full copy
  std::string remote_name;   // the name it has on the peer
  uint64_t bytes = 0;
  double seconds = 0;
  bool already = false;  // the peer held it: nothing sent
  std::vector<Snap> theirs;  // the peer's snapshots before the copy
};

// Sends `name` to the peer's `container`: incremental from the newest
// snapshot both hold, else full.
Sent copy_one(const RemoteArgs& a, Local& local, const Peer& peer, const std::string& container,
              const std::string& name) {
  Sent s;
  s.name = s.remote_name = name;
  auto t0 = Clock::now();
  auto mine = local.list();
  auto it = std::find_if(mine.begin(), mine.end(), [&](auto& x) { return x.name == name; });
  if (it == mine.end()) fail("copy " + q(name) + ": no such snapshot in " + local.source());
  bool exists = false;
  s.theirs = peer.list(container, &exists);
  auto& theirs = s.theirs;
  if (auto r = on_peer(*it, theirs)) {
    s.already = true;
    s.remote_name = r->name;
    s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    return s;
  }
  // The newest snapshot older than `name` that the peer holds too (list()
  // is oldest first).
  for (auto p = std::make_reverse_iterator(it); p != mine.rend(); ++p)
    if (on_peer(*p, theirs)) {
      s.parent = p->name;
      break;
    }

  std::vector<std::string> verb{"receive", "--container", container};
  if (!a.max_size.empty()) verb.insert(verb.end(), {"--max-size", a.max_size});
  auto ssh = peer.argv(verb);
  auto send = send_args(a, local, name, s.parent);
  Progress prog("sent", a.progress);
  // On a terminal the line has an ETA: the sender measures the data first
  // (a metadata-only send) and puts the size in the stream's header.
  if (prog.on_terminal()) send.push_back("--estimate");
  local.release();

  int from_send[2], to_ssh[2];
  if (::pipe2(from_send, O_CLOEXEC) < 0 || ::pipe2(to_ssh, O_CLOEXEC) < 0)
    fail("pipe: " + errtext(errno));
  ::fcntl(to_ssh[1], F_SETPIPE_SZ, 1 << 20);
  pid_t sender = Peer::spawn(send, -1, from_send[1]);
  ::close(from_send[1]);
  // The receiver's own report goes to our stderr: stdout is this command's report.
  pid_t receiver = Peer::spawn(ssh, to_ssh[0], 2);
  ::close(to_ssh[0]);
  bool broken = false;
  uint64_t expected = 0;
  if (prog.on_terminal()) {
    broken = !pass_preamble(from_send[0], to_ssh[1], &s.bytes, &expected);
    prog.restart(s.bytes);
  }
  while (!broken) {
    ssize_t n = ::splice(from_send[0], nullptr, to_ssh[1], nullptr, 1 << 20, SPLICE_F_MOVE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      broken = true;  // EPIPE: the peer's end is gone
      break;
    }
    if (n == 0) break;
    s.bytes += static_cast<uint64_t>(n);
    prog.update(s.bytes, expected);
  }
  ::close(to_ssh[1]);
  ::close(from_send[0]);
  prog.done(s.bytes);
  if (broken) ::kill(sender, SIGTERM);
  int sst = Peer::reap(sender);
  int rst = Peer::reap(receiver);
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  bool send_ok = WIFEXITED(sst) && WEXITSTATUS(sst) == 0;
  bool recv_ok = WIFEXITED(rst) && WEXITSTATUS(rst) == 0;
  if (!send_ok || !recv_ok)
    fail("copy " + q(name) + " to " + peer.target().host + ":" + container + ": " +
         (send_ok ? "" : "send " + Peer::describe(sst)) + (!send_ok && !recv_ok ? ", " : "") +
         (recv_ok ? "" : "receive over ssh " + Peer::describe(rst)) + " after " +
         human_bytes(static_cast<double>(s.bytes)) +
         "; nothing half-received is shown on the peer: run it again");
  return s;
}

std::string rate(const Sent& s) {
  double secs = std::max(s.seconds, 1e-3);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f s, %s/s", s.seconds,
                human_bytes(static_cast<double>(s.bytes) / secs).c_str());
  return buf;
}

std::string files_changed(Local& local, const Sent& s) {
  if (s.parent.empty()) {
    auto mine = local.list();
    for (auto& x : mine)
      if (x.name == s.name) return std::to_string(local.entries(x.uuid)) + " files (full copy)";
    return "? files";
  }
  auto n = local.changes(s.parent, s.name);
  return n ? std::to_string(*n) + " files changed" : "? files changed";
}

// Parses 30s, 10m, 2h, 1d.
std::chrono::seconds parse_every(const std::string& s) {
  char* end = nullptr;
  unsigned long v = std::strtoul(s.c_str(), &end, 10);
  std::string unit = end ? end : "";
  unsigned long mult = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
  if (v == 0 || mult == 0 || end == s.c_str())
    fail("--every " + q(s) + ": expected N with s, m, h or d (10m)", kUsage);
  return std::chrono::seconds(v * mult);
}

bool is_sync_snapshot(const Snap& s, const std::string& description) {
  return s.name.rfind(kSyncPrefix, 0) == 0 && (s.type == "sync" || s.description == description);
}

// Deletes the oldest sync snapshots (description `description`) beyond
// `keep`, and never `spare`.  Their names.
std::vector<std::string> prune(Local& l, const std::string& description, unsigned keep,
                               const std::string& spare, bool safety) {
  std::vector<std::string> gone;
  auto all = l.list();
  std::vector<Snap> mine;
  for (auto& s : all)
    if (safety ? s.description.rfind(kSyncSafety, 0) == 0 : is_sync_snapshot(s, description))
      mine.push_back(s);
  if (mine.size() <= keep) return gone;
  for (size_t i = 0; i + keep < mine.size(); ++i) {
    if (mine[i].name == spare) continue;
    l.remove(mine[i].name);
    gone.push_back(mine[i].name);
  }
  return gone;
}

// ---- serve: what a peer's key may do -------------------------------------------

[[noreturn]] void refuse(const std::string& line, const std::string& why) {
  std::fprintf(stderr, "hoody-snap serve: refused %s: %s\n", q(line).c_str(), why.c_str());
  std::exit(kUsage);
}

struct VerbArgs {
  std::string verb, container, snapshot, max_size;
  unsigned keep = 3;
};

VerbArgs parse_verb(const std::vector<std::string>& words, const std::string& line) {
  size_t i = 0;
  if (i < words.size()) {
    auto& w = words[i];
    auto slash = w.rfind('/');
    if ((slash == std::string::npos ? w : w.substr(slash + 1)) == "hoody-snap") ++i;
  }
  if (i < words.size() && words[i] == "serve") ++i;
  if (i >= words.size()) refuse(line, "no verb; a peer may run receive, list or sync-apply");
  VerbArgs v;
  v.verb = words[i++];
  if (v.verb != "receive" && v.verb != "list" && v.verb != "sync-apply")
    refuse(line, "a peer may run receive, list or sync-apply only");
  for (; i < words.size(); ++i) {
    auto& k = words[i];
    if (i + 1 >= words.size()) refuse(line, k + " needs a value");
    auto& val = words[++i];
    if (k == "--container") {
      v.container = val;
    } else if (k == "--max-size" && v.verb == "receive") {
      if (!parse_size(val)) refuse(line, "--max-size is a number of bytes (K, M, G, T: binary units)");
      v.max_size = val;
    } else if (k == "--snapshot" && v.verb == "sync-apply") {
      v.snapshot = val;
    } else if (k == "--keep" && v.verb == "sync-apply") {
      if (val.empty() || val.size() > 4 || val.find_first_not_of("0123456789") != std::string::npos)
        refuse(line, "--keep is a small number");
      v.keep = static_cast<unsigned>(std::stoul(val));
    } else {
      refuse(line, "unknown option " + q(k) + " for " + v.verb);
    }
  }
  std::string why;
  if (v.container.empty()) refuse(line, "--container is required");
  if (!snapfs::check_snapshot_name(v.container, &why, snapfs::NameUse::existing))
    refuse(line, "container: " + why);
  if (v.verb == "sync-apply") {
    if (v.snapshot.empty()) refuse(line, "--snapshot is required");
    if (!snapfs::check_snapshot_name(v.snapshot, &why, snapfs::NameUse::existing))
      refuse(line, "snapshot: " + why);
    // A peer rolls the copy forward to what sync sent, not to any snapshot.
    if (v.snapshot.rfind(kSyncPrefix, 0) != 0)
      refuse(line, "sync-apply restores sync-* snapshots only");
    if (v.keep < 1) refuse(line, "--keep is at least 1");
  }
  return v;
}

}  // namespace

RemoteCommands add_remote_commands(CLI::App& app, RemoteArgs& a) {
  RemoteCommands c;
  c.copy = app.add_subcommand(
      "copy", "send a snapshot to another server over ssh (incremental when both hold a parent)");
  c.copy->add_option("NAME", a.name, "snapshot name")->required();
  c.copy->add_option("--to", a.to, "[user@]host[:container] (default container: this one's name)")
      ->required();
  c.sync = app.add_subcommand(
      "sync", "one-way sync to another server: snapshot, send incrementally, restore the copy there");
  c.sync->add_option("--to", a.to, "[user@]host[:container]")->required();
  c.sync->add_option("--every", a.every, "repeat every N s, m, h or d (10m) until stopped");
  c.sync->add_option("--keep", a.keep, "sync snapshots kept on both sides (default 3)")
      ->check(CLI::Range(1u, 1000u));
  for (auto* s : {c.copy, c.sync}) {
    // --pool and --container (the local container, instead of --mount) are
    // hoody-snap's global options.
    s->add_option("--ssh", a.ssh, "the ssh command (default $HOODY_SSH or ssh)");
    s->add_option("--max-size", a.max_size, "refuse a stream above this many bytes on the peer");
    s->add_option("--remote-hoody-snap", a.remote_snap, "hoody-snap on the peer (default hoody-snap)");
    s->add_flag("!--no-progress", a.progress,
                "no progress line on stderr (default: bytes, rate and ETA redrawn on a "
                "terminal, one line a minute otherwise)");
  }
  c.serve = app.add_subcommand(
      "serve", "the peer's side of copy and sync: the forced command of an authorized_keys line");
  c.serve->add_option("--pool", a.pool, "the pool (default $HOODY_POOL or /var/lib/hoody)");
  c.serve->add_option("--max-size", a.max_size, "the largest stream accepted, in bytes");
  c.serve->add_option("--allow", a.allow, "a container the peer may name (repeat; default all)");
  // VERB ARGS (receive|list|sync-apply ...) when not forced by ssh: left
  // unparsed, as the remaining arguments (main puts them in RemoteArgs::verb).
  c.serve->prefix_command();
  // Not to hoody-snap's own verbs either (the app falls through for --mount).
  c.serve->fallthrough(false);
  return c;
}

// The store's info lines (op=open, op=send ...) are for daemons' logs; a
// command's report is its own output.  HOODY_LOG set by the caller wins.
void quiet_store_logs() { ::setenv("HOODY_LOG", "warn", 0); }

int run_copy(const RemoteArgs& a, const std::string& mount) try {
  ::signal(SIGPIPE, SIG_IGN);
  quiet_store_logs();
  check_snapshot(a.name);
  if (!a.max_size.empty() && !parse_size(a.max_size))
    fail("--max-size " + q(a.max_size) + ": a number of bytes (K, M, G, T)", kUsage);
  Local local = local_side(a, mount);
  Target t = parse_target(a.to);
  std::string container = t.container.empty() ? local.container() : t.container;
  Peer peer(a, t);
  Sent s = copy_one(a, local, peer, container, a.name);
  std::string where = t.host + ":" + container;
  if (s.already) {
    std::printf("%s is on %s already (as %s): nothing sent\n", shown(a.name).c_str(),
                shown(where).c_str(), shown(s.remote_name).c_str());
    return 0;
  }
  std::printf("copied %s to %s: %s, %s sent in %s, %s\n", shown(a.name).c_str(),
              shown(where).c_str(),
              s.parent.empty() ? "full" : ("incremental from " + shown(s.parent)).c_str(),
              human_bytes(static_cast<double>(s.bytes)).c_str(), rate(s).c_str(),
              files_changed(local, s).c_str());
  std::printf("bytes=%llu\n", static_cast<unsigned long long>(s.bytes));
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "hoody-snap: %s\n", escape_control(e.what, false).c_str());
  return e.code;
}

namespace {

int sync_round(const RemoteArgs& a, const std::string& mount) {
  Local local = local_side(a, mount);
  Target t = parse_target(a.to);
  std::string container = t.container.empty() ? local.container() : t.container;
  std::string where = t.host + ":" + container;
  std::string description = "sync to " + where;
  auto t0 = Clock::now();
  std::string name = kSyncPrefix + utc_stamp();
  {
    auto mine = local.list();
    auto taken = [&](const std::string& n) {
      return std::any_of(mine.begin(), mine.end(), [&](auto& x) { return x.name == n; });
    };
    for (int i = 2; taken(name); ++i) name = kSyncPrefix + utc_stamp() + "-" + std::to_string(i);
  }
  local.create(name, "sync", description);
  Peer peer(a, t);
  Sent s;
  try {
    s = copy_one(a, local, peer, container, name);
  } catch (const Error&) {
    // A round that did not reach the peer leaves no snapshot behind here
    // either, so the next round's parent is one the peer holds.
    try {
      local.remove(name);
    } catch (const Error&) {
    }
    throw;
  }
  json applied = json::parse(peer.call({"sync-apply", "--container", container, "--snapshot",
                                        s.remote_name, "--keep", std::to_string(a.keep)}),
                             nullptr, false);
  // A round killed between its snapshot and the peer's receive left a sync
  // snapshot the peer does not hold: no use as a parent, deleted.
  std::vector<std::string> gone;
  for (auto& x : local.list())
    if (x.name != name && is_sync_snapshot(x, description) && !on_peer(x, s.theirs)) {
      local.remove(x.name);
      gone.push_back(x.name);
    }
  auto kept_out = prune(local, description, a.keep, name, false);
  gone.insert(gone.end(), kept_out.begin(), kept_out.end());
  s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("synced %s to %s: %s, %s sent, %s, in %s\n", shown(name).c_str(), shown(where).c_str(),
              s.parent.empty() ? "full" : ("incremental from " + shown(s.parent)).c_str(),
              human_bytes(static_cast<double>(s.bytes)).c_str(), files_changed(local, s).c_str(),
              rate(s).c_str());
  std::string pruned_there;
  if (applied.is_object() && applied.contains("pruned") && applied["pruned"].is_array())
    for (auto& n : applied["pruned"]) pruned_there += " " + shown(n.get<std::string>());
  std::string pruned_here;
  for (auto& n : gone) pruned_here += " " + shown(n);
  std::printf("bytes=%llu parent=%s pruned_here=[%s] pruned_there=[%s]\n",
              static_cast<unsigned long long>(s.bytes), s.parent.empty() ? "-" : s.parent.c_str(),
              pruned_here.empty() ? "" : pruned_here.c_str() + 1,
              pruned_there.empty() ? "" : pruned_there.c_str() + 1);
  std::fflush(stdout);
  return 0;
}

}  // namespace

int run_sync(const RemoteArgs& a, const std::string& mount) {
  ::signal(SIGPIPE, SIG_IGN);
  quiet_store_logs();
  std::optional<std::chrono::seconds> every;
  try {
    if (!a.every.empty()) every = parse_every(a.every);
    if (!a.max_size.empty() && !parse_size(a.max_size))
      fail("--max-size " + q(a.max_size) + ": a number of bytes (K, M, G, T)", kUsage);
  } catch (const Error& e) {
    std::fprintf(stderr, "hoody-snap: %s\n", escape_control(e.what, false).c_str());
    return e.code;
  }
  for (;;) {
    auto start = Clock::now();
    int rc = 0;
    try {
      rc = sync_round(a, mount);
    } catch (const Error& e) {
      std::fprintf(stderr, "hoody-snap: sync: %s\n", escape_control(e.what, false).c_str());
      if (!every || e.code == kUsage) return e.code;
      rc = e.code;
    }
    if (!every) return rc;
    std::this_thread::sleep_until(start + *every);
  }
}

int run_serve(const RemoteArgs& a) try {
  quiet_store_logs();
  std::string line;
  std::vector<std::string> words;
  // A forced command (authorized_keys command=): the peer's command line is
  // SSH_ORIGINAL_COMMAND, only parsed, never given to a shell; our argv
  // (--pool, --max-size, --allow) is the administrator's.
  if (const char* orig = std::getenv("SSH_ORIGINAL_COMMAND"); orig) {
    line = orig;
    words = split_words(line);
  } else {
    words = a.verb;
    for (auto& w : words) line += (line.empty() ? "" : " ") + w;
  }
  VerbArgs v = parse_verb(words, line);
  if (!a.allow.empty() && std::find(a.allow.begin(), a.allow.end(), v.container) == a.allow.end())
    refuse(line, "container " + q(v.container) + " is not one this key may reach");
  std::string pool = a.pool;
  if (pool.empty())
    if (const char* e = std::getenv("HOODY_POOL"); e && *e) pool = e;
  if (pool.empty()) pool = kDefaultPool;

  if (v.verb == "receive") {
    std::vector<std::string> args{self_exe(), "--pool", pool, "--container", v.container, "receive"};
    std::optional<uint64_t> max;
    if (!v.max_size.empty()) max = parse_size(v.max_size);
    if (!a.max_size.empty()) {
      auto cap = parse_size(a.max_size);
      if (!cap) fail("--max-size " + q(a.max_size) + ": a number of bytes (K, M, G, T)", kUsage);
      if (!max || *max > *cap) max = cap;
    }
    if (max) args.insert(args.end(), {"--max-size", std::to_string(*max)});
    std::vector<char*> argv;
    for (auto& s : args) argv.push_back(s.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    fail("exec " + args[0] + ": " + errtext(errno));
  }
  Local l = Local::from_pool(pool, v.container);
  if (v.verb == "list") {
    json out{{"container", v.container}, {"exists", l.exists()}, {"mounted", !l.mount().empty()}};
    json snaps = json::array();
    for (auto& s : l.list()) snaps.push_back(to_json(s));
    out["snapshots"] = snaps;
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  // sync-apply: the copy container restored to the received snapshot, the
  // safety snapshot marked, and the oldest sync snapshots beyond --keep gone.
  if (!l.exists()) fail("sync-apply: no container " + q(v.container) + " in " + pool);
  // A running hoody-snapfs learns of a received snapshot from its watch on
  // the store: give it a moment.
  std::vector<Snap> all;
  auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    all = l.list();
    if (std::any_of(all.begin(), all.end(), [&](auto& s) { return s.name == v.snapshot; })) break;
    if (l.mount().empty() || Clock::now() > deadline)
      fail("sync-apply: no snapshot " + q(v.snapshot) + " in " + q(v.container) +
           (l.mount().empty() ? "" : " (its hoody-snapfs at " + l.mount() + " does not show it)"));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  auto it = std::find_if(all.begin(), all.end(), [&](auto& s) { return s.name == v.snapshot; });
  std::string safety = l.restore(v.snapshot);
  if (!safety.empty()) l.set_description(safety, kSyncSafety + v.snapshot);
  auto pruned = prune(l, it->description, v.keep, v.snapshot, false);
  auto pruned_safety = prune(l, "", v.keep, safety, true);
  pruned.insert(pruned.end(), pruned_safety.begin(), pruned_safety.end());
  json out{{"restored", v.snapshot}, {"safety", safety}, {"pruned", pruned},
           {"mounted", !l.mount().empty()}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
} catch (const Error& e) {
  std::fprintf(stderr, "hoody-snap serve: %s\n", escape_control(e.what, false).c_str());
  return e.code;
}

}  // namespace hoody::snapcli
