// Names in the virtual directories (the root and .hoody/): lookup, forget and
// the name-changing hooks.  At the root they are the snapshot verbs (mkdir
// creates, rmdir deletes, rename renames); in .hoody/ nothing changes
// (EPERM, the core's answer to mknod, symlink, create and unlink too);
// inside a snapshot the core answers EROFS.
#include <fcntl.h>
#include <linux/fs.h>

#include "../fs.hpp"
#include "hoody/fuse_reply.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"

namespace hoody::snapfs {

namespace {
bool is_ctl_name(std::string_view name) { return vdir::kCtlName == name; }
}  // namespace

Result<fuse_entry_param> Fs::vlookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (is_root(parent)) {
    if (is_ctl_name(name)) return ctl_entry(vdir::kCtlDir);
    if (!check_snapshot_name(name, nullptr, NameUse::existing)) return fail(ENOENT);
    HOODY_TRY(s, get_info(name));
    return snapshot_entry(s);
  }
  if (parent == vdir::kDiffDir) {
    auto spec = vdir::parse_diff_name(name);
    if (!spec) return fail(ENOENT);
    // Both sides must exist now; the contents are computed at open.
    HOODY_CHECK(store_->get(spec->from));
    if (spec->to != kLive) HOODY_CHECK(store_->get(spec->to));
    return ctl_entry(diffs_.lookup(name));
  }
  if (!S_ISDIR(vdir::node_mode(parent))) return fail(ENOTDIR);
  uint64_t child = vdir::fixed_child(parent, name);
  if (!child) return fail(ENOENT);
  auto c = caller_of(req);
  return ctl_entry(child, &c);
}

void Fs::vforget(fuse_ino_t ino, uint64_t nlookup) {
  if (vdir::is_diff_node(ino)) diffs_.forget(ino, nlookup);
}

// Offloaded (vdefer): the store's btrfs calls may take a second.
Result<fuse_entry_param> Fs::vmkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t) {
  if (!is_root(parent)) return fail(EPERM);
  auto c = caller_of(req);
  std::string why;
  if (auto v = check_snapshot_name(name, &why); !v) {
    audit(c, "create", name, v.err(), "", why);
    return fail(v.error());
  }
  if (!allowed(c)) {
    audit(c, "create", name, EPERM, "",
          "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
    return fail(EPERM);
  }
  // The store's btrfs calls may take a second (dirty data is flushed): no
  // daemon lock is held here, the other worker threads keep serving.
  CreateOptions opts;
  if (default_expiry_offset_) {
    // Both terms are bounded (the offset by 100 years), the sum is
    // range-checked.
    int64_t at =
        std::chrono::duration_cast<std::chrono::seconds>(now().time_since_epoch()).count() +
        *default_expiry_offset_;
    auto t = time_point(at);
    if (!t) {
      audit(c, "create", name, EINVAL, "",
            "default_expiry " + scfg_.default_expiry + " gives unix time " + std::to_string(at) +
                ", out of the store's range (1970..2262)");
      return fail(EINVAL);
    }
    opts.expires = *t;
  }
  auto s = take_snapshot(name, c, opts);
  done(c, "create", name, s.err(), "", s ? "" : s.error().message());
  if (!s) return fail(s.error());
  changed();
  HOODY_TRY(info, get_info(name));
  return snapshot_entry(info);
}

Status Fs::vrmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (!is_root(parent) || is_ctl_name(name)) return fail(EPERM);
  auto c = caller_of(req);
  if (!allowed(c)) {
    audit(c, "delete", name, EPERM, "",
          "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
    return fail(EPERM);
  }
  auto s = store_->remove(name, c.store());
  done(c, "delete", name, s.err());
  if (s) {
    removed(name);
    changed();
  }
  return s;
}

// The store serialises renames with creates: this one may wait for a snapshot.
Status Fs::vrename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                   const char* newname, unsigned flags) {
  // Snapshots move only within the root, and nothing moves in or out of it.
  if (parent != newparent) return fail(EXDEV);
  if (!is_root(parent)) return fail(EPERM);
  // Exchanging two snapshots (or whiteouts) is not a rename of one.
  if (flags & (RENAME_EXCHANGE | RENAME_WHITEOUT)) return fail(EINVAL);
  if (is_ctl_name(name) || is_ctl_name(newname)) return fail(EPERM);
  auto c = caller_of(req);
  std::string why;
  if (auto v = check_snapshot_name(newname, &why); !v) {
    audit(c, "rename", name, v.err(), newname, why);
    return fail(v.error());
  }
  if (!allowed(c)) {
    audit(c, "rename", name, EPERM, newname,
          "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
    return fail(EPERM);
  }
  // rename(2) would replace an existing target; a snapshot is never
  // replaced by a rename: EEXIST (RENAME_NOREPLACE semantics always).
  auto s = store_->rename(name, newname, c.store());
  done(c, "rename", name, s.err(), newname);
  if (s) {
    renamed(name, newname);
    changed();
  }
  return s;
}

// A snapshot's files never move out of it, nor does anything move in;
// nothing is linked into the root or .hoody/ (EPERM), nor out of .hoody/.
Status Fs::vcross(fuse_req_t, const pt::Access& real) {
  return fail(real.op == pt::Op::link ? EPERM : EXDEV);
}

}  // namespace hoody::snapfs
