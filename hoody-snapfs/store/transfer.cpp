// SnapshotStore: send and receive of whole snapshots (issue 9), and the hoody
// send stream format (transfer.hpp).
#include "transfer.hpp"

#include <fcntl.h>
#include <linux/btrfs.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include "crash.hpp"
#include "format.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/send_stream.hpp"
#include "hoody/sys.hpp"
#include "snapshot_store.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

// ---- the format ----------------------------------------------------------------

namespace xfer {

namespace {

json subvolume_json(const SubvolumeHeader& s) {
  json j{{"name", s.name}, {"uuid", s.uuid}, {"received_uuid", s.received_uuid},
         {"ctransid", s.ctransid}};
  if (!s.parent_key.empty()) j["parent_key"] = s.parent_key;
  return j;
}

bool is_uuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

// A scope subvolume's name: one path component, not '.'-prefixed.
bool is_subvolume_name(const std::string& s) {
  return !s.empty() && s.size() <= 255 && s[0] != '.' && s.find('/') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

std::string le32(uint32_t v) {
  std::string out(4, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}
std::string le64(uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

Result<SubvolumeHeader> subvolume_from(const json& j, bool need_uuid, std::string* why) {
  SubvolumeHeader s;
  if (!j.is_object() || !j.contains("name") || !j["name"].is_string()) {
    *why = "a subvolume without a name";
    return fail(EBADMSG);
  }
  s.name = j["name"].get<std::string>();
  if (!is_subvolume_name(s.name)) {
    *why = "bad subvolume name " + quote_name(s.name);
    return fail(EBADMSG);
  }
  auto str = [&](const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string();
  };
  s.uuid = str("uuid");
  s.received_uuid = str("received_uuid");
  s.parent_key = str("parent_key");
  if (j.contains("ctransid") && j["ctransid"].is_number_unsigned())
    s.ctransid = j["ctransid"].get<uint64_t>();
  if ((need_uuid && !is_uuid(s.uuid)) || (!s.uuid.empty() && !is_uuid(s.uuid)) ||
      (!s.received_uuid.empty() && !is_uuid(s.received_uuid)) ||
      (!s.parent_key.empty() && !is_uuid(s.parent_key))) {
    *why = "bad uuid for subvolume " + quote_name(s.name);
    return fail(EBADMSG);
  }
  return s;
}

}  // namespace

json to_json(const Header& h) {
  const Snapshot& s = h.snapshot;
  json snap{{"name", s.name},
            {"uuid", s.uuid},
            {"created", format_utc(s.created)},
            {"created_ns", to_ns(s.created)},
            {"type", s.type},
            {"description", s.description},
            {"consistency", s.consistency},
            {"busy", s.busy},
            {"nested", s.nested},
            {"creator", s.creator}};
  if (s.expires) snap["expires_ns"] = to_ns(*s.expires);
  json subs = json::array();
  for (auto& sv : h.subvolumes) subs.push_back(subvolume_json(sv));
  json j{{"format", "hoody-send"},
         {"version", kStreamVersion},
         {"snapshot", snap},
         {"subvolumes", subs},
         {"estimated_bytes", h.estimated_bytes},
         {"parent", nullptr}};
  if (h.parent) {
    json ps = json::array();
    for (auto& sv : h.parent->subvolumes) ps.push_back(subvolume_json(sv));
    j["parent"] = json{{"name", h.parent->name}, {"uuid", h.parent->uuid}, {"subvolumes", ps}};
  }
  return j;
}

Result<Header> header_from_json(const json& j, std::string* why) {
  auto bad = [&](std::string w) -> hoody::detail::Unexpected {
    *why = std::move(w);
    return fail(EBADMSG);
  };
  if (!j.is_object() || j.value("format", "") != "hoody-send") return bad("not a hoody send header");
  if (!j.contains("snapshot") || !j["snapshot"].is_object()) return bad("no snapshot in the header");
  const json& s = j["snapshot"];
  Header h;
  auto str = [](const json& o, const char* k) {
    return o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : std::string();
  };
  h.snapshot.name = str(s, "name");
  h.snapshot.uuid = str(s, "uuid");
  h.snapshot.type = str(s, "type");
  h.snapshot.description = str(s, "description");
  h.snapshot.consistency = str(s, "consistency");
  if (h.snapshot.consistency != kTransaction) h.snapshot.consistency = kCrash;
  if (!is_uuid(h.snapshot.uuid)) return bad("bad snapshot uuid");
  if (h.snapshot.type.empty() || h.snapshot.type.size() > 64) h.snapshot.type = "filesystem";
  if (h.snapshot.description.size() > kMaxDescriptionBytes) return bad("description too long");
  if (!s.contains("created_ns") || !s["created_ns"].is_number_integer())
    return bad("no creation time");
  h.snapshot.created = from_ns(s["created_ns"].get<int64_t>());
  if (s.contains("expires_ns") && s["expires_ns"].is_number_integer())
    h.snapshot.expires = from_ns(s["expires_ns"].get<int64_t>());
  for (const char* k : {"busy", "nested"})
    if (s.contains(k) && s[k].is_array())
      for (auto& x : s[k])
        if (x.is_string()) (k[0] == 'b' ? h.snapshot.busy : h.snapshot.nested).push_back(x.get<std::string>());
  if (!j.contains("subvolumes") || !j["subvolumes"].is_array() || j["subvolumes"].empty())
    return bad("no subvolumes in the header");
  std::set<std::string> seen;
  for (auto& x : j["subvolumes"]) {
    HOODY_TRY(sv, subvolume_from(x, true, why));
    if (!seen.insert(sv.name).second) return bad("subvolume " + quote_name(sv.name) + " twice");
    h.subvolumes.push_back(std::move(sv));
  }
  if (j.contains("estimated_bytes") && j["estimated_bytes"].is_number_unsigned())
    h.estimated_bytes = j["estimated_bytes"].get<uint64_t>();
  if (j.contains("parent") && j["parent"].is_object()) {
    ParentHeader p;
    p.name = str(j["parent"], "name");
    p.uuid = str(j["parent"], "uuid");
    if (j["parent"].contains("subvolumes") && j["parent"]["subvolumes"].is_array())
      for (auto& x : j["parent"]["subvolumes"]) {
        HOODY_TRY(sv, subvolume_from(x, true, why));
        p.subvolumes.push_back(std::move(sv));
      }
    h.parent = std::move(p);
  }
  bool incremental = std::any_of(h.subvolumes.begin(), h.subvolumes.end(),
                                 [](auto& sv) { return !sv.parent_key.empty(); });
  if (incremental && !h.parent) return bad("an incremental stream without its parent");
  return h;
}

std::string encode_preamble(const Header& h) {
  std::string body = to_json(h).dump();
  std::string out(kMagic);
  out += le32(kStreamVersion);
  out += le32(static_cast<uint32_t>(body.size()));
  out += body;
  out += le32(send::crc32c(0, body.data(), body.size()));
  return out;
}

std::string encode_trailer(uint64_t bytes) { return std::string(kTrailerMagic) + le64(bytes); }

uint32_t get_le32(const unsigned char* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

std::string human_bytes(double b) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  int u = 0;
  while (b >= 1024 && u < 5) {
    b /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, kUnits[u]);
  return buf;
}

}  // namespace xfer

// ---- helpers ---------------------------------------------------------------------

namespace {

constexpr const char* kReceivingPrefix = ".receiving-";
constexpr const char* kInitPrefix = ".receiving.init-";  // empty, until it is locked

using xfer::get_le32;
uint64_t get_le64(const unsigned char* p) {
  return uint64_t(get_le32(p)) | uint64_t(get_le32(p + 4)) << 32;
}

Status write_full(int fd, const void* data, size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return fail(Errno::last());
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return {};
}

Status writev_full(int fd, struct iovec* iov, int cnt) {
  while (cnt > 0) {
    ssize_t w = ::writev(fd, iov, cnt);
    if (w < 0) {
      if (errno == EINTR) continue;
      return fail(Errno::last());
    }
    auto left = static_cast<size_t>(w);
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --cnt;
    }
    if (cnt > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return {};
}

// A lock that says "a receive is running here": held by the receiving process
// (and inherited by its btrfs receive) on the staging directory itself, so it
// follows the rename to <uuid>.  Whoever gets it with LOCK_NB may clean up.
bool locked_by_someone(int dirfd, const char* name) {
  auto fd = sys::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!fd) return false;
  return ::flock(fd->get(), LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

// The key of a subvolume as btrfs send names it (received_uuid, else uuid).
std::string key_of(const btrfs::SubvolumeInfo& i) {
  return i.received_uuid.empty() ? i.uuid : i.received_uuid;
}

}  // namespace

// ---- open_shared, subvolume info ---------------------------------------------------

Result<std::unique_ptr<SnapshotStore>> SnapshotStore::open_shared(int source_fd) {
  HOODY_TRY(on_btrfs, btrfs::is_btrfs(source_fd));
  if (!on_btrfs) return fail(EMEDIUMTYPE);
  std::unique_ptr<SnapshotStore> s(new SnapshotStore());
  HOODY_TRY(src, sys::openat(source_fd, ".", O_RDONLY | O_DIRECTORY));
  HOODY_TRY(store, sys::openat(src.get(), kStoreDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(present, exists(store.get(), kIndexDb));
  if (!present) return fail(ENOENT);
  HOODY_TRY(db, sql::Db::open(sys::proc_fd(store.get()) + "/" + kIndexDb));
  // Never checkpoint-and-delete the WAL at close: a daemonized hoody-snapfs
  // (mount.fuse3 forks it) lost its POSIX locks in the fork, so this
  // connection would take itself for the last one and delete the WAL and
  // -shm from under the daemon.
  sqlite3_db_config(db.get(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  HOODY_CHECK(db.exec("PRAGMA busy_timeout=10000;"));
  s->source_ = std::move(src);
  s->store_ = std::move(store);
  s->db_ = std::move(db);
  s->shared_ = true;
  return s;
}

Result<std::vector<SnapshotStore::SubvolumeState>> SnapshotStore::subvolumes_of(
    std::string_view name) const {
  HOODY_TRY(snap, get(name));
  HOODY_TRY(dir, sys::openat(store_.get(), snap.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(names, subvolumes_in(dir.get()));
  std::vector<SubvolumeState> out;
  for (auto& n : names) {
    HOODY_TRY(fd, btrfs::open_dir(dir.get(), n.c_str()));
    HOODY_TRY(info, btrfs::info(fd.get()));
    out.push_back(SubvolumeState{n, std::move(info)});
  }
  return out;
}

// ---- send --------------------------------------------------------------------------

namespace {

// BTRFS_IOC_SEND of one subvolume into a pipe, framed onto `out`.
Status send_one(int subvol_fd, int parent_fd, int out, uint64_t& bytes,
                const std::function<void(uint64_t)>& progress) {
  uint64_t parent_id = 0;
  std::vector<__u64> clones;
  if (parent_fd >= 0) {
    HOODY_TRY(pi, btrfs::info(parent_fd));
    parent_id = pi.id;
    clones.push_back(pi.id);
  }
  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return fail(Errno::last());
  UniqueFd rd(p[0]), wr(p[1]);
  (void)::fcntl(wr.get(), F_SETPIPE_SZ, 1 << 20);
  int send_err = 0;
  std::thread sender([&] {
    struct btrfs_ioctl_send_args args {};
    args.send_fd = wr.get();
    args.clone_sources_count = clones.size();
    args.clone_sources = clones.empty() ? nullptr : clones.data();
    args.parent_root = parent_id;
    if (::ioctl(subvol_fd, BTRFS_IOC_SEND, &args) < 0) send_err = errno;
    wr.reset();  // EOF for the reader
  });
  std::vector<char> buf(1 << 20);
  Status st;
  // The first frame holds the stream header and the whole first command (the
  // receiver checks that command before btrfs receive sees it).
  size_t first_need = send::kStreamHeaderSize + send::kCmdHeaderSize;
  size_t have = 0;
  bool first = true;
  for (;;) {
    ssize_t n = ::read(rd.get(), buf.data() + have, buf.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      st = fail(Errno::last());
      break;
    }
    if (n == 0 && have == 0) break;
    if (first) {
      have += static_cast<size_t>(n);
      if (have >= send::kStreamHeaderSize + 4) {
        auto* u = reinterpret_cast<unsigned char*>(buf.data() + send::kStreamHeaderSize);
        first_need = send::kStreamHeaderSize + send::kCmdHeaderSize +
                     (uint32_t(u[0]) | uint32_t(u[1]) << 8 | uint32_t(u[2]) << 16 |
                      uint32_t(u[3]) << 24);
      }
      if (have < first_need && n > 0 && have < buf.size()) continue;
      first = false;
      n = static_cast<ssize_t>(have);
      have = 0;
    }
    unsigned char len[4];
    for (int i = 0; i < 4; ++i) len[i] = static_cast<unsigned char>((uint64_t(n) >> (8 * i)) & 0xff);
    struct iovec iov[2] = {{len, 4}, {buf.data(), static_cast<size_t>(n)}};
    st = writev_full(out, iov, 2);
    if (!st) break;
    bytes += static_cast<uint64_t>(n);
    if (progress) progress(bytes);
  }
  rd.reset();  // a failed write: the kernel's next write gets EPIPE, the ioctl ends
  sender.join();
  if (!st) return st;
  if (send_err) return fail(send_err);
  const unsigned char end[4] = {0, 0, 0, 0};
  return write_full(out, end, 4);
}

// The bytes of file data a send of subvol would carry (a metadata-only send).
uint64_t estimate_one(int subvol_fd, int parent_fd) {
  send::SendOptions o;
  o.parent_fd = parent_fd;
  if (parent_fd >= 0) o.clone_fds.push_back(parent_fd);
  o.no_file_data = true;
  auto raw = send::run_send(subvol_fd, o);
  if (!raw) return 0;
  uint64_t sum = raw->size();
  (void)send::parse_each(*raw, [&](send::Command&& c) {
    if (c.cmd == static_cast<uint16_t>(send::Cmd::update_extent)) sum += c.size;
  });
  return sum;
}

}  // namespace

Status SnapshotStore::send_to(std::string_view name, const SendOptions& opts, int out,
                           std::string* why) {
  auto lg = log::get("snap");
  auto t0 = std::chrono::steady_clock::now();
  auto snap = get(name);
  if (!snap) {
    *why = snap.err() == ENOENT ? "no snapshot " + quote_name(name) : snap.error().message();
    return fail(snap.error());
  }
  xfer::Header h;
  h.snapshot = *snap;
  HOODY_TRY(dir, sys::openat(store_.get(), snap->uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(subs, subvolumes_of(name));
  if (subs.empty()) {
    *why = "snapshot " + quote_name(name) + " holds no subvolume";
    return fail(ENOENT);
  }
  std::optional<Snapshot> parent;
  UniqueFd pdir;
  std::map<std::string, btrfs::SubvolumeInfo> psubs;
  if (!opts.parent.empty()) {
    auto p = get(opts.parent);
    if (!p) {
      *why = p.err() == ENOENT ? "no parent snapshot " + quote_name(opts.parent) : p.error().message();
      return fail(p.error());
    }
    if (p->uuid == snap->uuid) {
      *why = "a snapshot cannot be its own parent";
      return fail(EINVAL);
    }
    parent = *p;
    HOODY_TRY(pd, sys::openat(store_.get(), p->uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
    pdir = std::move(pd);
    HOODY_TRY(ps, subvolumes_of(opts.parent));
    xfer::ParentHeader ph{p->name, p->uuid, {}};
    for (auto& s : ps) {
      ph.subvolumes.push_back(
          xfer::SubvolumeHeader{s.name, s.info.uuid, s.info.received_uuid, s.info.ctransid, ""});
      psubs[s.name] = s.info;
    }
    h.parent = std::move(ph);
  }
  std::vector<UniqueFd> fds, pfds;
  for (auto& s : subs) {
    if (!s.info.readonly) {
      *why = "subvolume " + s.name + " of " + quote_name(name) + " is not read-only";
      return fail(EROFS);
    }
    xfer::SubvolumeHeader sh{s.name, s.info.uuid, s.info.received_uuid, s.info.ctransid, ""};
    HOODY_TRY(fd, btrfs::open_dir(dir.get(), s.name.c_str()));
    UniqueFd pfd;
    if (auto it = psubs.find(s.name); it != psubs.end()) {
      sh.parent_key = key_of(it->second);
      HOODY_TRY(f, btrfs::open_dir(pdir.get(), s.name.c_str()));
      pfd = std::move(f);
    }
    if (opts.estimate) h.estimated_bytes += estimate_one(fd.get(), pfd ? pfd.get() : -1);
    h.subvolumes.push_back(std::move(sh));
    fds.push_back(std::move(fd));
    pfds.push_back(std::move(pfd));
  }
  std::string pre = xfer::encode_preamble(h);
  Status st = write_full(out, pre.data(), pre.size());
  uint64_t bytes = 0;
  for (size_t i = 0; st && i < fds.size(); ++i)
    st = send_one(fds[i].get(), pfds[i] ? pfds[i].get() : -1, out, bytes, opts.progress);
  if (st) {
    std::string tr = xfer::encode_trailer(bytes);
    st = write_full(out, tr.data(), tr.size());
  }
  double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!st) {
    *why = st.err() == EPIPE ? "the receiving end closed the stream" : st.error().message();
    lg->info("op=send name={} -> {}", quote_name(name), *why);
    return st;
  }
  lg->info("op=send name={} parent={} subvolumes={} bytes={} -> ok in {:.3f} s", quote_name(name),
           parent ? quote_name(parent->name) : std::string("-"), fds.size(), bytes, secs);
  if (opts.sent) *opts.sent = bytes;
  return {};
}

// ---- receive -----------------------------------------------------------------------

namespace {

// The incoming stream: every byte counted against max_size.
struct Input {
  int fd;
  uint64_t max;  // 0: no bound
  uint64_t total = 0;
  bool exceeded = false;

  Status take(uint64_t n) {
    total += n;
    if (max && total > max) {
      exceeded = true;
      return fail(EFBIG);
    }
    return {};
  }
  // n bytes exactly; EBADMSG ("truncated") at EOF.
  Status read(void* buf, size_t n) {
    HOODY_CHECK(take(n));
    char* p = static_cast<char*>(buf);
    while (n > 0) {
      ssize_t r = ::read(fd, p, n);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return fail(Errno::last());
      if (r == 0) return fail(ENODATA);
      p += r;
      n -= static_cast<size_t>(r);
    }
    return {};
  }
  // n bytes into `to` (a pipe): spliced when the kernel can, else copied.
  Status copy(int to, size_t n, std::vector<char>& buf) {
    HOODY_CHECK(take(n));
    while (n > 0) {
      ssize_t r = ::splice(fd, nullptr, to, nullptr, n, SPLICE_F_MOVE);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0 && errno == EINVAL) break;  // not spliceable: copy below
      if (r < 0) return fail(Errno::last());
      if (r == 0) return fail(ENODATA);
      n -= static_cast<size_t>(r);
    }
    while (n > 0) {
      size_t want = std::min(n, buf.size());
      ssize_t r = ::read(fd, buf.data(), want);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return fail(Errno::last());
      if (r == 0) return fail(ENODATA);
      HOODY_CHECK(write_full(to, buf.data(), static_cast<size_t>(r)));
      n -= static_cast<size_t>(r);
    }
    return {};
  }
};

// A `btrfs receive DEST` fed through a pipe; its output kept for the error.
struct Receiver {
  pid_t pid = -1;
  UniqueFd in;   // its stdin
  UniqueFd out;  // memfd: its stdout and stderr

  Status start(const std::string& btrfs_bin, const std::string& dest, int lock_fd) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) return fail(Errno::last());
    UniqueFd rd(p[0]), wr(p[1]);
    (void)::fcntl(wr.get(), F_SETPIPE_SZ, 1 << 20);
    int m = ::memfd_create("btrfs-receive", MFD_CLOEXEC);
    if (m < 0) return fail(Errno::last());
    out = UniqueFd(m);
    pid = ::fork();
    if (pid < 0) return fail(Errno::last());
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(rd.get(), 0);
      ::dup2(out.get(), 1);
      ::dup2(out.get(), 2);
      // The staging lock stays held while btrfs receive runs, even if we die.
      ::fcntl(lock_fd, F_SETFD, 0);
      ::signal(SIGPIPE, SIG_DFL);
      // --chroot: a path in the stream ("../x") cannot leave the staging directory.
      execlp(btrfs_bin.c_str(), btrfs_bin.c_str(), "receive", "--chroot", dest.c_str(),
             static_cast<char*>(nullptr));
      std::fprintf(stderr, "cannot run %s: %s\n", btrfs_bin.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    in = std::move(wr);
    return {};
  }
  // Its exit status (0 ok), after stdin is closed.
  int finish() {
    in.reset();
    if (pid < 0) return -1;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    pid = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void kill() {
    if (pid > 0) ::kill(pid, SIGKILL);
    (void)finish();
  }
  std::string output() const {
    std::string s;
    if (!out) return s;
    char buf[4096];
    ssize_t n = ::pread(out.get(), buf, sizeof buf - 1, 0);
    if (n > 0) s.assign(buf, static_cast<size_t>(n));
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    // The last line says why.
    if (auto nl = s.rfind('\n'); nl != std::string::npos) s = s.substr(nl + 1);
    return s;
  }
  ~Receiver() {
    if (pid > 0) kill();
  }
};

}  // namespace

Result<std::optional<Snapshot>> SnapshotStore::find_by_keys(
    const std::map<std::string, std::string>& keys) const {
  HOODY_TRY(all, list());
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    auto subs = subvolumes_of(it->name);
    if (!subs) continue;
    std::map<std::string, std::string> have;
    for (auto& s : *subs) have[s.name] = key_of(s.info);
    bool all_match = true;
    for (auto& [n, k] : keys)
      if (have.count(n) == 0 || have[n] != k) all_match = false;
    if (all_match) return std::optional<Snapshot>(*it);
  }
  return std::optional<Snapshot>();
}

Status SnapshotStore::recover_receives() {
  auto lg = log::get("snap");
  // Journaled receives (killed between the rename and the commit).
  std::vector<Journal> pending;
  {
    std::lock_guard dl(db_mu_);
    sql::Stmt q(db_, "SELECT id, op, name, uuid, step, data FROM journal WHERE op = 'receive'");
    for (;;) {
      HOODY_TRY(row, q.step());
      if (!row) break;
      pending.push_back(Journal{q.int64(0), q.text(1), q.text(2), q.text(3), 0, json::object()});
    }
  }
  for (auto& j : pending) {
    auto s = undo_receive(j);
    if (s) {
      (void)journal_end(j.id);
      lg->warn("op=recover journal={} kind=receive name={} -> undone", j.id, quote_name(j.name));
    } else if (s.err() != EINPROGRESS) {
      lg->error("op=recover journal={} kind=receive -> {}", j.id, s.error().message());
    }
  }
  // Staging directories whose receiver is gone.
  HOODY_TRY(dir, sys::opendir_at(store_.get(), "."));
  std::vector<std::string> stale;
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(dir.get());
    if (!e) break;
    std::string n = e->d_name;
    if (n.rfind(kReceivingPrefix, 0) == 0 && !locked_by_someone(store_.get(), n.c_str()))
      stale.push_back(n);
    // An empty directory a receive made and was killed before it locked it
    // (a minute old: a live one is renamed within microseconds).
    if (n.rfind(kInitPrefix, 0) == 0) {
      auto st = sys::fstatat(store_.get(), n.c_str(), AT_SYMLINK_NOFOLLOW);
      if (st && st->st_ctime + 60 < ::time(nullptr)) (void)sys::unlinkat(store_.get(), n.c_str(), AT_REMOVEDIR);
    }
  }
  for (auto& n : stale) {
    lg->warn("op=recover dir={} -> an interrupted receive, deleted", n);
    if (auto s = purge(n.c_str(), nullptr); !s)
      lg->error("op=recover dir={} -> {}", n, s.error().message());
  }
  return {};
}

// A receive without its row: its <uuid> directory goes, unless the receiver
// still runs (EINPROGRESS: its lock is held).
Status SnapshotStore::undo_receive(const Journal& j) {
  {
    std::lock_guard lock(db_mu_);
    sql::Stmt q(db_, "SELECT 1 FROM snapshots WHERE uuid = ?");
    q.bind(1, j.uuid);
    HOODY_TRY(row, q.step());
    if (row) return {};
  }
  std::string staging = kReceivingPrefix + j.uuid;
  if (locked_by_someone(store_.get(), j.uuid.c_str()) ||
      locked_by_someone(store_.get(), staging.c_str()))
    return fail(EINPROGRESS);
  HOODY_CHECK(purge(staging.c_str(), nullptr));
  HOODY_CHECK(purge(j.uuid.c_str(), nullptr));
  return {};
}

Result<Snapshot> SnapshotStore::receive_from(int in_fd, const Caller& caller,
                                        const ReceiveOptions& opts, std::string* why) {
  auto lg = log::get("snap");
  auto t0 = std::chrono::steady_clock::now();
  Input in{in_fd, opts.max_size};
  auto stream_error = [&](Errno e, const char* where) -> Errno {
    if (in.exceeded) {
      *why = "the stream is larger than --max-size (" + std::to_string(opts.max_size) +
             " bytes); nothing was kept";
      return Errno(EFBIG);
    }
    if (e.value() == ENODATA) {
      *why = std::string("the stream ends early (") + where +
             "): truncated, or the sender failed; nothing was kept";
      return Errno(EBADMSG);
    }
    *why = std::string("reading the stream (") + where + "): " + e.message();
    return e;
  };
  // ---- header
  char magic[xfer::kMagic.size()];
  if (auto s = in.read(magic, sizeof magic); !s) return fail(stream_error(s.error(), "header"));
  if (std::string_view(magic, sizeof magic) != xfer::kMagic) {
    *why = "not a hoody send stream (bad magic): it comes from `hoody-snap send`";
    return fail(EBADMSG);
  }
  unsigned char vl[8];
  if (auto s = in.read(vl, 8); !s) return fail(stream_error(s.error(), "header"));
  uint32_t version = get_le32(vl), hlen = get_le32(vl + 4);
  if (version != xfer::kStreamVersion) {
    *why = "stream version " + std::to_string(version) + ", this hoody-snap reads version " +
           std::to_string(xfer::kStreamVersion);
    return fail(EPROTONOSUPPORT);
  }
  if (hlen == 0 || hlen > xfer::kMaxHeaderBytes) {
    *why = "bad header length";
    return fail(EBADMSG);
  }
  std::string body(hlen, '\0');
  unsigned char crc[4];
  if (auto s = in.read(body.data(), hlen); !s) return fail(stream_error(s.error(), "header"));
  if (auto s = in.read(crc, 4); !s) return fail(stream_error(s.error(), "header"));
  if (get_le32(crc) != send::crc32c(0, body.data(), body.size())) {
    *why = "the header's checksum does not match: the stream is garbled";
    return fail(EBADMSG);
  }
  auto hj = json::parse(body, nullptr, false);
  std::string hwhy;
  auto hdr = xfer::header_from_json(hj, &hwhy);
  if (!hdr) {
    *why = "bad header: " + hwhy;
    return fail(EBADMSG);
  }
  xfer::Header& h = *hdr;
  std::string name = opts.as_name.empty() ? h.snapshot.name : opts.as_name;
  {
    std::string nwhy;
    if (auto v = check_snapshot_name(name, &nwhy, NameUse::new_name); !v) {
      *why = "snapshot name " + quote_name(name) + ": " + nwhy;
      return fail(v.error());
    }
  }
  std::lock_guard oplock(op_mu_);
  HOODY_TRY(taken, find(name));
  if (taken) {
    *why = "this container has a snapshot " + quote_name(name) +
           " already; delete it, or receive under another name with --as NAME";
    audit_result(caller, "receive", name, Errno(EEXIST), *why);
    return fail(EEXIST);
  }
  // ---- the parent, on this side
  std::map<std::string, std::string> parent_keys;
  for (auto& sv : h.subvolumes)
    if (!sv.parent_key.empty()) parent_keys[sv.name] = sv.parent_key;
  std::optional<Snapshot> local_parent;
  if (!parent_keys.empty()) {
    HOODY_TRY(found, find_by_keys(parent_keys));
    if (!found) {
      *why = "the stream is incremental against " + quote_name(h.parent->name) +
             ", which this container does not hold (no snapshot whose subvolumes were received "
             "from it); send that snapshot first, or a full stream (without --parent)";
      audit_result(caller, "receive", name, Errno(ENOENT), *why);
      return fail(ENOENT);
    }
    local_parent = *found;
  }
  // ---- staging
  HOODY_CHECK(recover_receives());
  const std::string uuid = random_uuid();
  const std::string staging = kReceivingPrefix + uuid;
  // Made under another name and locked before it is a .receiving- directory:
  // another receive's cleanup deletes only those whose lock is free.
  const std::string init = kInitPrefix + uuid;
  HOODY_CHECK(sys::mkdirat(store_.get(), init.c_str(), 0700));
  auto sfd = sys::openat(store_.get(), init.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  Status locked = !sfd ? Status(fail(sfd.error()))
                  : ::flock(sfd->get(), LOCK_EX) < 0
                      ? Status(fail(Errno::last()))
                      : sys::renameat2(store_.get(), init.c_str(), store_.get(), staging.c_str(),
                                       RENAME_NOREPLACE);
  if (!locked) {
    (void)sys::unlinkat(store_.get(), init.c_str(), AT_REMOVEDIR);
    return fail(locked.error());
  }
  std::string dest = sys::fd_path(sfd->get());
  auto discard = [&]() {
    if (auto p = purge(staging.c_str(), nullptr); !p)
      lg->error("op=receive dir={} -> not deleted: {}; the next receive or start deletes it",
                staging, p.error().message());
  };
  // ---- the subvolumes
  uint64_t bytes = 0;
  uint64_t expected = h.estimated_bytes;
  std::vector<char> buf(1 << 20);
  crash_point("receive", "staged");
  for (size_t i = 0; i < h.subvolumes.size(); ++i) {
    const auto& sv = h.subvolumes[i];
    Receiver r;
    if (auto s = r.start(opts.btrfs, dest, sfd->get()); !s) {
      *why = "cannot start btrfs receive: " + s.error().message();
      discard();
      return fail(s.error());
    }
    Status st;
    bool first = true;
    for (;;) {
      unsigned char lb[4];
      st = in.read(lb, 4);
      if (!st) break;
      uint32_t n = get_le32(lb);
      if (n == 0) break;
      if (n > xfer::kMaxFrame) {
        st = fail(EBADMSG);
        *why = "a frame of " + std::to_string(n) + " bytes: the stream is garbled";
        break;
      }
      if (first) {
        // The first command names the subvolume btrfs receive creates: it
        // must be the one the header announced, nowhere else.
        first = false;
        if (n < send::kStreamHeaderSize + send::kCmdHeaderSize) {
          st = fail(EBADMSG);
          *why = "the stream of subvolume " + sv.name + " is garbled";
          break;
        }
        std::string head(n, '\0');
        st = in.read(head.data(), n);
        if (!st) break;
        bool ok = false;
        std::string seen;
        (void)send::parse_each(head, [&](send::Command&& c) {
          if (ok || !seen.empty()) return;
          bool incr = c.cmd == static_cast<uint16_t>(send::Cmd::snapshot);
          bool full = c.cmd == static_cast<uint16_t>(send::Cmd::subvol);
          seen = c.path.empty() ? "?" : c.path;
          ok = (incr || full) && c.path == sv.name && incr == !sv.parent_key.empty() &&
               c.uuid == sv.key() && (!incr || c.clone_uuid == sv.parent_key);
        });
        if (!ok) {
          st = fail(EBADMSG);
          *why = "the stream of subvolume " + sv.name +
                 " does not match its header (it makes " + quote_name(seen) + ")";
          break;
        }
        st = write_full(r.in.get(), head.data(), head.size());
      } else {
        st = in.copy(r.in.get(), n, buf);
      }
      if (!st) break;
      bytes += n;
      if (opts.progress) opts.progress(bytes, expected);
    }
    if (!st) {
      bool child_gone = st.err() == EPIPE;
      int code = r.finish();
      if (child_gone || (why->empty() && code != 0 && st.err() != ENODATA && !in.exceeded)) {
        *why = "btrfs receive of " + sv.name + " failed: " + r.output();
        st = fail(EBADMSG);
      } else if (why->empty()) {
        st = fail(stream_error(st.error(), sv.name.c_str()));
      }
      discard();
      audit_result(caller, "receive", name, st.error(), *why);
      return fail(st.error());
    }
    int code = r.finish();
    if (code != 0) {
      *why = "btrfs receive of " + sv.name + " failed (" + std::to_string(code) + "): " + r.output();
      discard();
      audit_result(caller, "receive", name, Errno(EBADMSG), *why);
      return fail(EBADMSG);
    }
    crash_point("receive", "subvol-" + std::to_string(i + 1));
  }
  // ---- trailer
  {
    char tm[xfer::kTrailerMagic.size()];
    unsigned char cnt[8];
    Status s = in.read(tm, sizeof tm);
    if (s) s = in.read(cnt, 8);
    if (!s) {
      Errno e = stream_error(s.error(), "trailer");
      discard();
      audit_result(caller, "receive", name, e, *why);
      return fail(e);
    }
    if (std::string_view(tm, sizeof tm) != xfer::kTrailerMagic || get_le64(cnt) != bytes) {
      *why = "the stream's trailer does not match what was received: garbled; nothing was kept";
      discard();
      audit_result(caller, "receive", name, Errno(EBADMSG), *why);
      return fail(EBADMSG);
    }
  }
  // ---- what was received is what the header said
  auto verify = [&]() -> Status {
    HOODY_TRY(got, subvolumes_in(sfd->get()));
    std::vector<std::string> want;
    for (auto& sv : h.subvolumes) want.push_back(sv.name);
    std::sort(want.begin(), want.end());
    if (got != want) {
      *why = "btrfs receive made other subvolumes than the header named";
      return fail(EBADMSG);
    }
    for (auto& sv : h.subvolumes) {
      HOODY_TRY(fd, btrfs::open_dir(sfd->get(), sv.name.c_str()));
      HOODY_TRY(info, btrfs::info(fd.get()));
      if (!info.readonly || info.received_uuid != sv.key()) {
        *why = "subvolume " + sv.name + " was not received whole (" +
               (info.readonly ? "received_uuid " + info.received_uuid + " instead of " + sv.key()
                              : std::string("writable")) +
               ")";
        return fail(EBADMSG);
      }
      // btrfs receive snapshots the first subvolume of the filesystem that
      // carries the parent's key (checked in the stream's first command):
      // this container's parent, or an equal copy in another container of
      // the pool.  Either way it must be a snapshot of one.
      if (!sv.parent_key.empty() && info.parent_uuid.empty()) {
        *why = "subvolume " + sv.name + " was received against another parent than " +
               quote_name(local_parent->name);
        return fail(EBADMSG);
      }
    }
    // Nothing else in the staging directory (btrfs receive makes only the subvolumes).
    return {};
  };
  if (auto v = verify(); !v) {
    discard();
    audit_result(caller, "receive", name, v.error(), *why);
    return fail(v.error());
  }
  crash_point("receive", "received");
  // ---- publish: journal, <uuid>, the row
  Snapshot snap = h.snapshot;
  snap.name = name;
  snap.uuid = uuid;
  snap.creator = caller.uid;
  snap.expires.reset();
  // The receiving side's schedule prunes only its own scheduled snapshots.
  if (snap.type == "scheduled") snap.type = "received";
  json jd{{"staging", staging}, {"from", h.snapshot.uuid}};
  HOODY_TRY(jid, journal_begin("receive", name, uuid, jd.dump()));
  Status pub = sys::renameat2(store_.get(), staging.c_str(), store_.get(), uuid.c_str(),
                              RENAME_NOREPLACE);
  if (pub) {
    crash_point("receive", "renamed");
    std::lock_guard dl(db_mu_);
    sql::Txn txn(db_);
    pub = [&]() -> Status {
      HOODY_CHECK(txn.begin());
      HOODY_CHECK(insert_row_ending_journal(snap, jid));
      HOODY_CHECK(audit(caller, "receive", name,
                        local_parent ? "ok; incremental from " + quote_name(local_parent->name)
                                     : std::string("ok"),
                        h.snapshot.uuid));
      return txn.commit();
    }();
  }
  if (!pub) {
    if (pub.err() == EEXIST) *why = "a snapshot " + quote_name(name) + " was made meanwhile";
    else *why = "publishing the snapshot: " + pub.error().message();
    (void)sys::renameat2(store_.get(), uuid.c_str(), store_.get(), staging.c_str(), RENAME_NOREPLACE);
    discard();
    (void)journal_end(jid);
    audit_result(caller, "receive", name, pub.error(), *why);
    return fail(pub.error());
  }
  crash_point("receive", "committed");
  // A running hoody-snapfs of this container re-reads its index when the
  // store directory's attributes change (fs.cpp watch_store).
  (void)::futimens(store_.get(), nullptr);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  lg->info("op=receive name={} uuid={} from={} parent={} subvolumes={} bytes={} -> ok in {:.3f} s",
           quote_name(name), uuid, h.snapshot.uuid,
           local_parent ? quote_name(local_parent->name) : std::string("-"), h.subvolumes.size(),
           bytes, secs);
  if (opts.report) {
    opts.report->bytes = bytes;
    opts.report->seconds = secs;
    opts.report->parent = local_parent ? local_parent->name : "";
    opts.report->subvolumes = h.subvolumes.size();
  }
  return snap;
}

Result<std::vector<std::string>> SnapshotStore::make_live(std::string_view name) {
  std::lock_guard oplock(op_mu_);
  HOODY_TRY(snap, get(name));
  HOODY_TRY(dir, sys::openat(store_.get(), snap.uuid.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(subs, subvolumes_in(dir.get()));
  std::vector<std::string> made;
  for (auto& s : subs) {
    HOODY_TRY(there, exists(source_.get(), s));
    if (there) continue;
    HOODY_TRY(fd, btrfs::open_dir(dir.get(), s.c_str()));
    HOODY_CHECK(btrfs::snapshot(fd.get(), source_.get(), s.c_str(), /*readonly=*/false));
    made.push_back(s);
  }
  return made;
}

}  // namespace hoody::snapfs
