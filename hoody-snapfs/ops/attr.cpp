// Attributes: of the virtual nodes (the root, .hoody/ and its files), and of
// a snapshot's directory, whose metadata are its xattrs user.hoody.*.
#include <sys/xattr.h>

#include <cstring>

#include "../fs.hpp"
#include "hoody/fuse_reply.hpp"
#include "hoody/sys.hpp"
#include "store/format.hpp"

namespace hoody::snapfs {

namespace {
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
  // "transaction", or "crash" with what was not quiesced: "crash
  // databases/app.db"
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

Result<struct stat> Fs::vgetattr(fuse_req_t req, fuse_ino_t ino) {
  if (is_root(ino)) return root_attr();
  if (!vdir::node_mode(ino)) return fail(ENOENT);
  auto c = caller_of(req);
  return virtual_attr(ino, &c);
}

// The root's count and times may lag by attr_timeout: each path walk checks
// the root's permission, and asking every time costs a round trip.
double Fs::vattr_timeout(fuse_ino_t ino) { return is_root(ino) ? cfg_.attr_timeout : 0; }

Result<struct stat> Fs::vsetattr(fuse_req_t, fuse_ino_t ino, const struct stat&, int valid) {
  // The root is the store's directory, read-only as the snapshots are.
  if (is_root(ino)) return fail(EROFS);
  // `echo NAME > .hoody/restore` truncates first (O_TRUNC): nothing to
  // truncate. The same for `echo off > .hoody/schedule`.
  constexpr int kTimesAndSize = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                                FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                                FUSE_SET_ATTR_CTIME;
  if ((ino != vdir::kRestore && ino != vdir::kSchedule) || (valid & ~kTimesAndSize))
    return fail(EPERM);
  return virtual_attr(ino);
}

// The daemon's own nodes (the root, .hoody/, the snapshots' directories)
// have no security labels: "not supported" rather than "not set", so that
// `ls -l`, which asks each entry for security.selinux, stops asking for the
// rest of the mount (coreutils remembers the device that does not support
// it): one round trip per listing instead of one per snapshot.  The ACL
// names stay ENODATA ("no ACL"): the kernel reads them for permission checks.
Result<std::string> Fs::vgetxattr(fuse_req_t, fuse_ino_t, const char* name) {
  return fail(std::string_view(name).starts_with("security.") ? EOPNOTSUPP : ENODATA);
}

void Fs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
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

void Fs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::getxattr(req, ino, name, size);
  // As vgetxattr: no security labels.
  if (std::string_view(name).starts_with("security.")) return reply(req, fail(EOPNOTSUPP));
  reply_xattr(req, meta_value(*snap, name), size);
}

void Fs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
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
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::setxattr(req, ino, name, value, size, flags);
  reply(req, [&]() -> Status {
    std::string_view n = name;
    std::string text(value, size);
    bool is_expires = n == "user.hoody.expires";
    bool is_desc = n == "user.hoody.description";
    // user.hoody.type: only "filesystem" -> "sync" (hoody-snap sync marks the
    // snapshot it took through the mount); a type is a fact otherwise.
    bool is_type = n == "user.hoody.type" && text == "sync" && snap->type == "filesystem";
    if (is_type) {
      auto c = caller_of(req);
      if (!allowed(c)) {
        audit(c, "set_type", snap->name, EPERM, "sync",
              "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
        return fail(EPERM);
      }
      Status s = store_->set_type_sync(snap->name, c.store());
      done(c, "set_type", snap->name, s.err(), "sync");
      if (s) changed();
      return s;
    }
    if (!is_expires && !is_desc) {
      // The other user.hoody.* are facts of the snapshot; other names are not
      // kept.
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
  auto snap = snapshot_of(ino);
  if (!snap) return pt::PassthroughFs::removexattr(req, ino, name);
  reply(req, [&]() -> Status {
    std::string_view n = name;
    bool is_expires = n == "user.hoody.expires";
    bool is_desc = n == "user.hoody.description";
    if (!is_expires && !is_desc)
      return fail(n.substr(0, kPrefix.size()) == kPrefix ? EPERM : ENODATA);
    if (!meta_value(*snap, n)) return fail(ENODATA);
    auto c = caller_of(req);
    const char* action = is_expires ? "set_expires" : "set_description";
    if (!allowed(c)) {
      audit(c, action, snap->name, EPERM, "",
            "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
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
