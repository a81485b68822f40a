// Names: lookup, forget, mknod, mkdir, symlink, link, unlink, rmdir, rename.
// Each checks its directory (and for link and rename both sides) before it
// acts; names in virtual directories go to the v*() hooks.
#include <fcntl.h>
#include <unistd.h>

#include "hoody/fuse_reply.hpp"
#include "hoody/log.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

void PassthroughFs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (is_vnode(parent)) return reply(req, vlookup(req, parent, name));
  Inode* dir = inode(parent);
  if (auto s = check(req, {Op::lookup, *dir, name}); !s) return reply(req, s);
  auto e = do_lookup(parent, name);
  if (!e && e.err() == ENOENT && cfg_.negative_timeout > 0) {
    // A cached negative entry: SQLite's -journal/-wal probes stay in the kernel.
    fuse_entry_param neg{};
    neg.ino = 0;
    neg.entry_timeout = cfg_.negative_timeout;
    fuse_reply_entry(req, &neg);
    return;
  }
  reply(req, e);
}

void PassthroughFs::forget(fuse_ino_t ino, uint64_t nlookup) {
  if (is_vnode(ino)) return vforget(ino, nlookup);
  forget_one(inode(ino), nlookup);
}

void PassthroughFs::reply_entry(fuse_req_t req, fuse_ino_t parent, const char* name, Status made) {
  if (!made) return reply(req, made);
  reply(req, do_lookup(parent, name, /*open_first=*/true));
}

void PassthroughFs::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                          dev_t rdev) {
  if (is_vnode(parent)) return reply(req, Status(fail(EPERM)));
  auto made = [&]() -> Status {
    Inode* dir = inode(parent);
    HOODY_CHECK(check(req, {Op::mknod, *dir, name, static_cast<int>(mode)}));
    HOODY_TRY(dfd, pin(dir));
    CallerCreds creds(req);
    if (::mknodat(dfd.get(), name, mode, rdev) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  if (is_vnode(parent)) {
    return vdefer(Op::mkdir, parent, [this, req, parent, mode, n = std::string(name)] {
      reply(req, vmkdir(req, parent, n.c_str(), mode));
    });
  }
  auto made = [&]() -> Status {
    Inode* dir = inode(parent);
    HOODY_CHECK(check(req, {Op::mkdir, *dir, name}));
    HOODY_TRY(dfd, pin(dir));
    CallerCreds creds(req);
    if (::mkdirat(dfd.get(), name, mode) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  if (is_vnode(parent)) return reply(req, Status(fail(EPERM)));
  auto made = [&]() -> Status {
    Inode* dir = inode(parent);
    HOODY_CHECK(check(req, {Op::symlink, *dir, name}));
    HOODY_TRY(dfd, pin(dir));
    CallerCreds creds(req);
    if (::symlinkat(link, dfd.get(), name) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  if (is_vnode(parent) && is_vnode(ino)) return reply(req, Status(fail(EPERM)));
  if (is_vnode(parent)) return reply(req, vcross(req, {Op::link, *inode(ino)}));
  if (is_vnode(ino)) return reply(req, vcross(req, {Op::link, *inode(parent), name}));
  auto made = [&]() -> Status {
    Inode* in = inode(ino);
    Inode* dir = inode(parent);
    HOODY_CHECK(check(req, {Op::link, *dir, name}));
    HOODY_CHECK(check(req, {Op::link, *in, nullptr}));
    // Two roots are two filesystems.
    if (in->root != dir->root) return fail(EXDEV);
    HOODY_TRY(fd, pin(in));
    HOODY_TRY(dfd, pin(dir));
    // AT_EMPTY_PATH links the O_PATH fd itself (needs CAP_DAC_READ_SEARCH: root).
    if (::linkat(fd.get(), "", dfd.get(), name, AT_EMPTY_PATH) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (is_vnode(parent)) {
    return vdefer(Op::unlink, parent, [this, req, parent, n = std::string(name)] {
      reply(req, vunlink(req, parent, n.c_str()));
    });
  }
  reply(req, [&]() -> Status {
    Inode* dir = inode(parent);
    HOODY_CHECK(check(req, {Op::unlink, *dir, name}));
    HOODY_TRY(dfd, pin(dir));
    return sys::unlinkat(dfd.get(), name, 0);
  }());
}

void PassthroughFs::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (is_vnode(parent)) {
    return vdefer(Op::rmdir, parent, [this, req, parent, n = std::string(name)] {
      reply(req, vrmdir(req, parent, n.c_str()));
    });
  }
  reply(req, [&]() -> Status {
    Inode* dir = inode(parent);
    HOODY_CHECK(check(req, {Op::rmdir, *dir, name}));
    HOODY_TRY(dfd, pin(dir));
    return sys::unlinkat(dfd.get(), name, AT_REMOVEDIR);
  }());
}

void PassthroughFs::rename(fuse_req_t req, fuse_ino_t parent, const char* name,
                           fuse_ino_t newparent, const char* newname, unsigned flags) {
  bool vfrom = is_vnode(parent), vto = is_vnode(newparent);
  if (vfrom && vto) {
    return vdefer(Op::rename_from, parent,
                  [this, req, parent, newparent, flags, n = std::string(name),
                   nn = std::string(newname)] {
                    reply(req, vrename(req, parent, n.c_str(), newparent, nn.c_str(), flags));
                  });
  }
  // Between a virtual directory and a real one: the daemon's answer (by
  // default the real side's check, then EXDEV).
  if (vfrom) {
    return reply(req, vcross(req, {Op::rename_to, *inode(newparent), newname,
                                   static_cast<int>(flags)}));
  }
  if (vto) {
    return reply(req, vcross(req, {Op::rename_from, *inode(parent), name,
                                   static_cast<int>(flags)}));
  }
  reply(req, [&]() -> Status {
    HOODY_CHECK(check(req, {Op::rename_from, *inode(parent), name, static_cast<int>(flags)}));
    HOODY_CHECK(check(req, {Op::rename_to, *inode(newparent), newname, static_cast<int>(flags)}));
    Inode* from_dir = inode(parent);
    Inode* to_dir = inode(newparent);
    if (from_dir->root != to_dir->root) return fail(EXDEV);
    HOODY_TRY(from, pin(from_dir));
    HOODY_TRY(to, pin(to_dir));
    return sys::renameat2(from.get(), name, to.get(), newname, flags);
  }());
}

}  // namespace hoody::pt
