// Attributes: getattr, setattr, readlink, statfs and the extended attributes.
// A snapshot's metadata are the xattrs user.hoody.* of its top directory.
#include <sys/xattr.h>

#include <cstring>

#include "../fs.hpp"
#include "hoody/fuse_reply.hpp"
#include "hoody/sys.hpp"
#include "store/format.hpp"

namespace hoody::snapfs {

namespace {
// An xattr value or list: its size when the caller asks for it (size 0),
// ERANGE when it does not fit, else the bytes.
void reply_xattr(fuse_req_t req, const Result<std::string>& v, size_t size) {
  if (!v) return reply(req, fail(v.error()));
  if (size == 0) {
    fuse_reply_xattr(req, v->size());
  } else if (v->size() > size) {
    reply(req, fail(ERANGE));
  } else {
    fuse_reply_buf(req, v->data(), v->size());
  }
}

constexpr std::string_view kPrefix = "user.hoody.";
const char* const kKeys[] = {"uuid",    "created",     "creator",    "type",
                             "expires", "description", "consistency"};

// The value of user.hoody.<key> (ENODATA when unset or unknown).
Result<std::string> meta_value(const Snapshot& s, std::string_view name) {
  if (name.substr(0, kPrefix.size()) != kPrefix) return fail(ENODATA);
  auto key = name.substr(kPrefix.size());
  if (key == "uuid") return s.uuid;
  if (key == "created") return vdir::format_rfc3339(s.created);
  if (key == "creator") return std::to_string(s.creator);
  if (key == "type") return s.type;
  // "transaction", or "crash" with what was not quiesced: "crash databases/app.db"
  if (key == "consistency") {
    std::string v = s.consistency;
    for (size_t i = 0; i < s.busy.size(); ++i) v += (i ? ", " : " ") + s.busy[i];
    return v;
  }
  if (key == "expires") {
    if (!s.expires) return fail(ENODATA);
    return vdir::format_rfc3339(*s.expires);
  }
  if (key == "description") {
    if (s.description.empty()) return fail(ENODATA);
    return s.description;
  }
  return fail(ENODATA);
}
}  // namespace

void Fs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (is_root(ino)) {
    // The root's count and times may lag by attr_timeout: each path walk
    // checks the root's permission, and asking every time costs a round trip.
    auto st = root_attr();
    fuse_reply_attr(req, &st, cfg_.attr_timeout);
    return;
  }
  if (vdir::is_virtual(ino)) {
    if (!vdir::node_mode(ino)) return reply(req, fail(ENOENT));
    auto c = caller_of(req);
    auto st = virtual_attr(ino, &c);
    fuse_reply_attr(req, &st, 0);
    return;
  }
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::getattr(req, ino, fi);
  auto st = [&]() -> Result<struct stat> {
    HOODY_TRY(fd, pin(inode(ino)));
    return sys::fstatat(fd.get(), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }();
  if (!st) return reply(req, fail(st.error()));
  show(*st);
  auto shown = snapshot_attr(*snap, *st, subvolume_count(snap->uuid));
  // A snapshot's directory never changes (snapshot_entry's timeout).
  fuse_reply_attr(req, &shown, kTopTimeout);
}

void Fs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::setattr(req, ino, attr, valid, fi);
  // `echo NAME > .hoody/restore` truncates first (O_TRUNC): nothing to truncate.
  // The same for `echo off > .hoody/schedule`.
  constexpr int kTimesAndSize = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                                FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                                FUSE_SET_ATTR_CTIME;
  if ((ino != vdir::kRestore && ino != vdir::kSchedule) || (valid & ~kTimesAndSize))
    return reply(req, fail(EPERM));
  auto st = virtual_attr(ino);
  fuse_reply_attr(req, &st, 0);
}

void Fs::readlink(fuse_req_t req, fuse_ino_t ino) {
  if (is_root(ino) || vdir::is_virtual(ino)) return reply(req, fail(EINVAL));
  pt::PassthroughFs::readlink(req, ino);
}

void Fs::statfs(fuse_req_t req, fuse_ino_t ino) {
  pt::PassthroughFs::statfs(req, vdir::is_virtual(ino) ? FUSE_ROOT_ID : ino);
}

void Fs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  // The daemon's own nodes (the root, .hoody/, the snapshots' directories)
  // have no security labels: "not supported" rather than "not set", so that
  // `ls -l`, which asks each entry for security.selinux, stops asking for the
  // rest of the mount (coreutils remembers the device that does not support
  // it): one round trip per listing instead of one per snapshot.  The ACL
  // names stay ENODATA ("no ACL"): the kernel reads them for permission checks.
  bool ours = is_root(ino) || vdir::is_virtual(ino);
  std::optional<Snapshot> snap;
  if (!ours) {
    snap = snapshot_of(ino);
    if (!snap) return pt::PassthroughFs::getxattr(req, ino, name, size);
  }
  if (std::string_view(name).starts_with("security.")) return reply(req, fail(EOPNOTSUPP));
  if (ours) return reply(req, fail(ENODATA));
  reply_xattr(req, meta_value(*snap, name), size);
}

void Fs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  if (is_root(ino) || vdir::is_virtual(ino)) return reply_xattr(req, std::string(), size);
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::listxattr(req, ino, size);
  std::string list;
  for (const char* k : kKeys) {
    std::string full = std::string(kPrefix) + k;
    if (meta_value(*snap, full)) list += full + '\0';
  }
  reply_xattr(req, list, size);
}

void Fs::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                  int flags) {
  if (is_root(ino) || vdir::is_virtual(ino)) return reply(req, fail(EPERM));
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::setxattr(req, ino, name, value, size, flags);
  reply(req, [&]() -> Status {
    std::string_view n = name;
    std::string text(value, size);
    bool is_expires = n == "user.hoody.expires";
    bool is_desc = n == "user.hoody.description";
    if (!is_expires && !is_desc) {
      // The other user.hoody.* are facts of the snapshot; other names are not kept.
      return fail(n.substr(0, kPrefix.size()) == kPrefix ? EPERM : ENOTSUP);
    }
    bool exists = static_cast<bool>(meta_value(*snap, n));
    if ((flags & XATTR_CREATE) && exists) return fail(EEXIST);
    if ((flags & XATTR_REPLACE) && !exists) return fail(ENODATA);
    auto c = caller_of(req);
    const char* action = is_expires ? "set_expires" : "set_description";
    if (!allowed(c)) {
      audit(c, action, snap->name, EPERM, text.substr(0, 64),
            "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
      return fail(EPERM);
    }
    Status s;
    if (is_expires) {
      std::string why;
      // The store's syntax: +N with s, m, h, d or w; an RFC 3339 time; never.
      auto e = parse_expiry(text, now(), &why);
      if (!e) {
        audit(c, action, snap->name, EINVAL, text.substr(0, 64), why);
        return fail(EINVAL);
      }
      s = store_->set_expires(snap->name, *e, c.store());
      done(c, action, snap->name, s.err(), *e ? format_utc(**e) : "never");
    } else {
      if (text.size() > 4096) return fail(E2BIG);
      while (!text.empty() && text.back() == '\0') text.pop_back();
      s = store_->set_description(snap->name, text, c.store());
      done(c, action, snap->name, s.err());
    }
    if (s) changed();  // listings show metadata from memory: rebuild them
    return s;
  }());
}

void Fs::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (is_root(ino) || vdir::is_virtual(ino)) return reply(req, fail(EPERM));
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::removexattr(req, ino, name);
  reply(req, [&]() -> Status {
    std::string_view n = name;
    bool is_expires = n == "user.hoody.expires";
    bool is_desc = n == "user.hoody.description";
    if (!is_expires && !is_desc) return fail(n.substr(0, kPrefix.size()) == kPrefix ? EPERM : ENODATA);
    if (!meta_value(*snap, n)) return fail(ENODATA);
    auto c = caller_of(req);
    const char* action = is_expires ? "set_expires" : "set_description";
    if (!allowed(c)) {
      audit(c, action, snap->name, EPERM, "", "uid " + std::to_string(c.uid) +
                                                 " is not root nor in allow_users/allow_groups");
      return fail(EPERM);
    }
    Status s = is_expires ? store_->set_expires(snap->name, std::nullopt, c.store())
                          : store_->set_description(snap->name, "", c.store());
    done(c, action, snap->name, s.err(), is_expires ? "never" : "");
    if (s) changed();
    return s;
  }());
}

}  // namespace hoody::snapfs
