#include "hoody/send_stream.hpp"

#include <endian.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>
#include <tuple>

#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/sys.hpp"
#include "hoody/unique_fd.hpp"

namespace hoody::send {

// ---- names ----------------------------------------------------------------

std::string cmd_name(uint16_t cmd) {
  static constexpr std::array<const char*, 27> kNames = {
      "unspec",   "subvol",      "snapshot",     "mkfile",   "mkdir",        "mknod",
      "mkfifo",   "mksock",      "symlink",      "rename",   "link",         "unlink",
      "rmdir",    "set_xattr",   "remove_xattr", "write",    "clone",        "truncate",
      "chmod",    "chown",       "utimes",       "end",      "update_extent", "fallocate",
      "setflags", "encoded_write", "enable_verity"};
  if (cmd < kNames.size()) return kNames[cmd];
  return "cmd" + std::to_string(cmd);
}

// ---- crc32c -----------------------------------------------------------------

namespace {
constexpr std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc_table();
}  // namespace

uint32_t crc32c(uint32_t seed, const void* data, std::size_t n) {
  auto p = static_cast<const unsigned char*>(data);
  uint32_t crc = seed;
  while (n--) crc = kCrcTable[(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

// ---- parser -----------------------------------------------------------------

namespace {

uint16_t le16(const char* p) {
  uint16_t v;
  std::memcpy(&v, p, sizeof v);
  return le16toh(v);
}
uint32_t le32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return le32toh(v);
}
uint64_t le64(const char* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return le64toh(v);
}

// An integer attribute may be u8..u64 wide.
std::optional<uint64_t> uint_value(std::string_view v) {
  switch (v.size()) {
    case 1: return static_cast<unsigned char>(v[0]);
    case 2: return le16(v.data());
    case 4: return le32(v.data());
    case 8: return le64(v.data());
    default: return std::nullopt;
  }
}

std::optional<struct timespec> time_value(std::string_view v) {
  if (v.size() != 12) return std::nullopt;
  struct timespec ts {};
  ts.tv_sec = static_cast<time_t>(le64(v.data()));
  ts.tv_nsec = static_cast<long>(le32(v.data() + 8));
  return ts;
}

std::string uuid_value(std::string_view v) {
  if (v.size() != 16) return {};
  uint8_t u[16];
  std::memcpy(u, v.data(), 16);
  return btrfs::format_uuid(u);
}

bool set_attr(Command& c, uint16_t type, std::string_view v) {
  auto set_uint = [&](uint64_t& f) {
    auto x = uint_value(v);
    if (!x) return false;
    f = *x;
    return true;
  };
  auto set_time = [&](struct timespec& f) {
    auto t = time_value(v);
    if (!t) return false;
    f = *t;
    return true;
  };
  switch (static_cast<Attr>(type)) {
    case Attr::uuid: c.uuid = uuid_value(v); return true;
    case Attr::clone_uuid: c.clone_uuid = uuid_value(v); return true;
    case Attr::ctransid: return set_uint(c.ctransid);
    case Attr::clone_ctransid: return set_uint(c.clone_ctransid);
    case Attr::ino: return set_uint(c.ino);
    case Attr::size: return set_uint(c.size);
    case Attr::mode: return set_uint(c.mode);
    case Attr::uid: return set_uint(c.uid);
    case Attr::gid: return set_uint(c.gid);
    case Attr::rdev: return set_uint(c.rdev);
    case Attr::file_offset: return set_uint(c.file_offset);
    case Attr::clone_offset: return set_uint(c.clone_offset);
    case Attr::clone_len: return set_uint(c.clone_len);
    case Attr::ctime: return set_time(c.ctime);
    case Attr::mtime: return set_time(c.mtime);
    case Attr::atime: return set_time(c.atime);
    case Attr::otime: return true;
    case Attr::xattr_name: c.xattr_name = std::string(v); return true;
    case Attr::xattr_data:
    case Attr::data: c.data_len = v.size(); return true;
    case Attr::path: c.path = std::string(v); return true;
    case Attr::path_to: c.path_to = std::string(v); return true;
    case Attr::path_link: c.path_link = std::string(v); return true;
    case Attr::clone_path: c.clone_path = std::string(v); return true;
    default: return true;  // newer attributes: skipped
  }
}

Status bad(std::size_t offset, const char* what) {
  log::get("btrfs")->debug("op=parse_send_stream offset={} -> {}", offset, what);
  return fail(EBADMSG);
}

}  // namespace

Result<Stream> parse(std::string_view bytes) {
  Stream out;
  HOODY_TRY(version,
            parse_each(bytes, [&](Command&& c) { out.commands.push_back(std::move(c)); }));
  out.version = version;
  return out;
}

Result<uint32_t> parse_each(std::string_view bytes, const std::function<void(Command&&)>& fn) {
  if (bytes.size() < kStreamHeaderSize || bytes.substr(0, kStreamMagic.size()) != kStreamMagic)
    return fail(bad(0, "no btrfs-stream header").error());
  uint32_t version = le32(bytes.data() + kStreamMagic.size());
  if (version == 0 || version > kMaxStreamVersion) {
    log::get("btrfs")->debug("op=parse_send_stream version={} -> unsupported", version);
    return fail(EPROTONOSUPPORT);
  }
  std::size_t pos = kStreamHeaderSize;
  std::string hdr;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < kCmdHeaderSize)
      return fail(bad(pos, "truncated command header").error());
    const char* h = bytes.data() + pos;
    uint32_t len = le32(h);
    uint16_t cmd = le16(h + 4);
    uint32_t crc = le32(h + 6);
    if (bytes.size() - pos - kCmdHeaderSize < len)
      return fail(bad(pos, "truncated command payload").error());
    // crc over the header with its crc field zeroed, then the payload.
    hdr.assign(h, kCmdHeaderSize);
    std::memset(hdr.data() + 6, 0, 4);
    uint32_t want = crc32c(0, hdr.data(), hdr.size());
    want = crc32c(want, h + kCmdHeaderSize, len);
    if (want != crc) return fail(bad(pos, "crc32c mismatch").error());

    Command c;
    c.cmd = cmd;
    std::string_view payload(h + kCmdHeaderSize, len);
    std::size_t p = 0;
    while (p < payload.size()) {
      if (payload.size() - p < 2) return fail(bad(pos + kCmdHeaderSize + p, "truncated TLV").error());
      uint16_t type = le16(payload.data() + p);
      std::string_view value;
      if (version >= 2 && type == static_cast<uint16_t>(Attr::data)) {
        // v2+: A_DATA has only a type and runs to the end of the command.
        value = payload.substr(p + 2);
        p = payload.size();
      } else {
        if (payload.size() - p < kTlvHeaderSize)
          return fail(bad(pos + kCmdHeaderSize + p, "truncated TLV header").error());
        uint16_t tlen = le16(payload.data() + p + 2);
        if (payload.size() - p - kTlvHeaderSize < tlen)
          return fail(bad(pos + kCmdHeaderSize + p, "truncated TLV value").error());
        value = payload.substr(p + kTlvHeaderSize, tlen);
        p += kTlvHeaderSize + tlen;
      }
      if (!set_attr(c, type, value))
        return fail(bad(pos + kCmdHeaderSize + p, "bad attribute size").error());
    }
    fn(std::move(c));
    pos += kCmdHeaderSize + len;
  }
  return version;
}

// ---- running send -------------------------------------------------------------

Result<std::string> run_send(int subvol_fd, const SendOptions& opts) {
  std::vector<__u64> clone_ids;
  for (int fd : opts.clone_fds) {
    HOODY_TRY(ci, btrfs::info(fd));
    clone_ids.push_back(ci.id);
  }
  uint64_t parent_id = 0;
  if (opts.parent_fd >= 0) {
    HOODY_TRY(pi, btrfs::info(opts.parent_fd));
    parent_id = pi.id;
  }

  int p[2];
  if (::pipe2(p, O_CLOEXEC) < 0) return fail(Errno::last());
  UniqueFd rd(p[0]), wr(p[1]);

  std::string data;
  int read_err = 0;
  std::thread reader([&] {
    char buf[65536];
    for (;;) {
      ssize_t n = sys::retry_eintr([&] { return ::read(rd.get(), buf, sizeof buf); });
      if (n < 0) {
        read_err = errno;
        return;
      }
      if (n == 0) return;
      data.append(buf, static_cast<size_t>(n));
    }
  });

  struct btrfs_ioctl_send_args args {};
  args.send_fd = wr.get();
  args.clone_sources_count = clone_ids.size();
  args.clone_sources = clone_ids.empty() ? nullptr : clone_ids.data();
  args.parent_root = parent_id;
  args.flags = opts.no_file_data ? BTRFS_SEND_FLAG_NO_FILE_DATA : 0;
  if (opts.version) {
    args.flags |= BTRFS_SEND_FLAG_VERSION;
    args.version = opts.version;
  }
  int r = ::ioctl(subvol_fd, BTRFS_IOC_SEND, &args);
  int send_err = r < 0 ? errno : 0;
  wr.reset();  // EOF for the reader
  reader.join();
  if (send_err) {
    log::get("btrfs")->debug("op=send parent={} -> {}", parent_id, std::strerror(send_err));
    return fail(send_err);
  }
  if (read_err) return fail(read_err);
  log::get("btrfs")->trace("op=send parent={} bytes={}", parent_id, data.size());
  return data;
}

// ---- diff ---------------------------------------------------------------------

namespace {

struct Dentry;

struct Inode {
  bool is_new = false;
  std::string orig_path;  // where it was in the old snapshot (existing inodes)
  bool data = false, meta = false, times = false;
  // Directory contents as far as the stream revealed them.  `materialized`
  // holds the names already taken from the old snapshot: a name looked up
  // again after it moved away is not the old entry any more.
  std::map<std::string, std::shared_ptr<Dentry>> children;
  std::set<std::string> materialized;
};

struct Dentry {
  std::shared_ptr<Inode> inode;
  std::optional<std::string> orig_path;  // set for names of the old snapshot
  // Where the old name lived: the entry moved itself iff it is now elsewhere
  // (moving its directory moves it along without renaming it).
  const Inode* orig_dir = nullptr;
  std::string orig_name;
};

std::string join(const std::string& dir, const std::string& name) {
  return dir.empty() ? name : dir + "/" + name;
}

std::vector<std::string> split(std::string_view path) {
  std::vector<std::string> parts;
  while (!path.empty()) {
    auto slash = path.find('/');
    auto part = path.substr(0, slash);
    if (!part.empty() && part != ".") parts.emplace_back(part);
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  return parts;
}

class Namespace {
public:
  Namespace() : root_(std::make_shared<Inode>()) {}

  // The dentry `name` in directory `dir`, taking it from the old snapshot the
  // first time it is named.  nullptr if it is known to be gone.
  std::shared_ptr<Dentry> child(const std::shared_ptr<Inode>& dir, const std::string& name) {
    auto it = dir->children.find(name);
    if (it != dir->children.end()) return it->second;
    if (dir->materialized.count(name)) return nullptr;
    dir->materialized.insert(name);
    auto ino = std::make_shared<Inode>();
    auto d = std::make_shared<Dentry>();
    d->inode = ino;
    if (dir->is_new) {
      ino->is_new = true;  // a new directory has no old entries
    } else {
      ino->orig_path = join(dir->orig_path, name);
      d->orig_path = ino->orig_path;
      d->orig_dir = dir.get();
      d->orig_name = name;
    }
    dir->children[name] = d;
    return d;
  }

  // The directory holding `path` and the last component; nullptr if a
  // component is gone.  The root has no parent.
  std::pair<std::shared_ptr<Inode>, std::string> parent_of(std::string_view path) {
    auto parts = split(path);
    if (parts.empty()) return {nullptr, {}};
    std::shared_ptr<Inode> dir = root_;
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
      auto d = child(dir, parts[i]);
      if (!d) return {nullptr, {}};
      dir = d->inode;
    }
    return {dir, parts.back()};
  }

  std::shared_ptr<Inode> inode_at(std::string_view path) {
    if (split(path).empty()) return root_;
    auto [dir, name] = parent_of(path);
    if (!dir) return nullptr;
    auto d = child(dir, name);
    return d ? d->inode : nullptr;
  }

  std::shared_ptr<Dentry> detach(std::string_view path) {
    auto [dir, name] = parent_of(path);
    if (!dir) return nullptr;
    auto d = child(dir, name);
    if (d) dir->children.erase(name);
    return d;
  }

  void attach(std::string_view path, std::shared_ptr<Dentry> d) {
    auto [dir, name] = parent_of(path);
    if (!dir) return;
    // Send never creates over a live old name (it unlinks or orphanizes it
    // first), so an untouched old entry is not looked up here: that would
    // report orphan names as removed.
    auto it = dir->children.find(name);
    if (it != dir->children.end()) removed_.push_back(it->second);  // displaced
    dir->materialized.insert(name);
    dir->children[name] = std::move(d);
  }

  void create(std::string_view path) {
    auto d = std::make_shared<Dentry>();
    d->inode = std::make_shared<Inode>();
    d->inode->is_new = true;
    attach(path, std::move(d));
  }

  void apply(const Command& c) {
    switch (static_cast<Cmd>(c.cmd)) {
      case Cmd::mkfile:
      case Cmd::mkdir:
      case Cmd::mknod:
      case Cmd::mkfifo:
      case Cmd::mksock:
      case Cmd::symlink: create(c.path); break;
      case Cmd::rename:
        if (auto d = detach(c.path)) attach(c.path_to, std::move(d));
        break;
      case Cmd::link:
        if (auto target = inode_at(c.path_link)) {
          auto d = std::make_shared<Dentry>();
          d->inode = target;
          attach(c.path, std::move(d));
        }
        break;
      case Cmd::unlink:
      case Cmd::rmdir:
        if (auto d = detach(c.path)) removed_.push_back(std::move(d));
        break;
      case Cmd::write:
      case Cmd::clone:
      case Cmd::truncate:
      case Cmd::update_extent:
      case Cmd::fallocate:
      case Cmd::encoded_write:
        if (auto i = inode_at(c.path)) i->data = true;
        break;
      case Cmd::chmod:
      case Cmd::chown:
      case Cmd::set_xattr:
      case Cmd::remove_xattr:
      case Cmd::setflags:
      case Cmd::enable_verity:
        if (auto i = inode_at(c.path)) i->meta = true;
        break;
      case Cmd::utimes:
        if (auto i = inode_at(c.path)) i->times = true;
        break;
      default: break;  // subvol, snapshot, end, unknown
    }
  }

  // times_changed(path): whether an entry whose only change is a utimes
  // command changed more than its atime (unset: every utimes counts).
  std::vector<Change> changes(const std::function<bool(const std::string&)>& times_changed = {}) {
    std::set<std::tuple<std::string, int, std::string>> out;  // path, kind, to
    auto add = [&](ChangeKind k, const std::string& path, const std::string& to = {}) {
      out.emplace(path, static_cast<int>(k), to);
    };
    std::vector<std::pair<std::string, std::shared_ptr<Dentry>>> links;
    // Walk the final tree.
    std::vector<std::pair<std::string, std::shared_ptr<Inode>>> stack{{"", root_}};
    while (!stack.empty()) {
      auto [dir_path, dir] = stack.back();
      stack.pop_back();
      for (auto& [name, d] : dir->children) {
        std::string path = join(dir_path, name);
        const Inode& ino = *d->inode;
        if (ino.is_new) {
          add(ChangeKind::added, path);
        } else if (!d->orig_path) {
          links.emplace_back(path, d);  // a new name of an old inode
        } else if (d->orig_dir != dir.get() || d->orig_name != name) {
          add(ChangeKind::renamed, *d->orig_path, path);
          if (ino.data || ino.meta) add(ChangeKind::modified, path);
        } else if (ino.data || ino.meta ||
                   (ino.times && (!times_changed || times_changed(path)))) {
          add(ChangeKind::modified, path);
        }
        if (!d->inode->children.empty()) stack.emplace_back(path, d->inode);
      }
    }
    // link + unlink of one inode is a rename.
    std::sort(links.begin(), links.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<bool> used(removed_.size(), false);
    for (auto& [path, d] : links) {
      bool paired = false;
      for (std::size_t i = 0; i < removed_.size() && !paired; ++i) {
        if (used[i] || removed_[i]->inode != d->inode || !removed_[i]->orig_path) continue;
        used[i] = true;
        paired = true;
        add(ChangeKind::renamed, *removed_[i]->orig_path, path);
        if (d->inode->data || d->inode->meta) add(ChangeKind::modified, path);
      }
      if (!paired) add(ChangeKind::added, path);
    }
    for (std::size_t i = 0; i < removed_.size(); ++i)
      if (!used[i] && removed_[i]->orig_path) add(ChangeKind::removed, *removed_[i]->orig_path);

    std::vector<Change> result;
    result.reserve(out.size());
    for (auto& [path, kind, to] : out) result.push_back(Change{static_cast<ChangeKind>(kind), path, to});
    return result;
  }

private:
  std::shared_ptr<Inode> root_;
  std::vector<std::shared_ptr<Dentry>> removed_;
};

}  // namespace

std::vector<Change> diff(const std::vector<Command>& commands) {
  Namespace ns;
  for (const auto& c : commands) ns.apply(c);
  return ns.changes();
}

std::string escape_path(std::string_view path) {
  std::string out;
  out.reserve(path.size());
  for (unsigned char c : path) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out;
}

std::string format(const Change& c) {
  switch (c.kind) {
    case ChangeKind::added: return "+ " + escape_path(c.path);
    case ChangeKind::removed: return "- " + escape_path(c.path);
    case ChangeKind::modified: return "M " + escape_path(c.path);
    case ChangeKind::renamed: return "R " + escape_path(c.path) + " -> " + escape_path(c.to);
    case ChangeKind::not_captured: return "! " + escape_path(c.path) + ": nested subvolume, not captured";
  }
  return {};
}

Result<std::vector<Change>> diff_subvolumes(int old_fd, int new_fd) {
  SendOptions opts;
  opts.parent_fd = old_fd;
  HOODY_TRY(bytes, run_send(new_fd, opts));
  // Folded as it is parsed: the commands of a large stream (hundreds of bytes
  // each, five or so per new file) are never all held at once.
  Namespace ns;
  HOODY_TRY(version, parse_each(bytes, [&](Command&& c) { ns.apply(c); }));
  (void)version;
  bytes = {};
  // btrfs send emits utimes for an inode whose atime alone moved (a read on
  // a relatime mount): that is no change of the file.  Only mtime or ctime
  // moving makes one; both trees are read beneath their roots, never
  // through a symlink (the paths are user data).
  auto times_changed = [&](const std::string& path) {
    auto stat_in = [&](int root) -> std::optional<struct stat> {
      auto fd = sys::open_beneath(root, path.c_str(), O_PATH | O_NOFOLLOW, 0, RESOLVE_NO_SYMLINKS);
      if (!fd) return std::nullopt;
      auto st = sys::fstatat(fd->get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
      if (!st) return std::nullopt;
      return *st;
    };
    auto a = stat_in(old_fd), b = stat_in(new_fd);
    if (!a || !b) return true;  // cannot tell: say it changed
    auto same = [](const timespec& x, const timespec& y) {
      return x.tv_sec == y.tv_sec && x.tv_nsec == y.tv_nsec;
    };
    return !same(a->st_mtim, b->st_mtim) || !same(a->st_ctim, b->st_ctim);
  };
  return ns.changes(times_changed);
}

}  // namespace hoody::send
