// Names: lookup, forget, mknod, mkdir, symlink, link, unlink, rmdir, rename.
#include <fcntl.h>
#include <unistd.h>

#include "hoody/fuse_reply.hpp"
#include "hoody/log.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

void PassthroughFs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
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

void PassthroughFs::forget(fuse_ino_t ino, uint64_t nlookup) { forget_one(inode(ino), nlookup); }

void PassthroughFs::reply_entry(fuse_req_t req, fuse_ino_t parent, const char* name, Status made) {
  if (!made) return reply(req, made);
  reply(req, do_lookup(parent, name));
}

void PassthroughFs::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                          dev_t rdev) {
  auto made = [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "mknod"));
    HOODY_TRY(dfd, pin(inode(parent)));
    CallerCreds creds(req);
    if (::mknodat(dfd.get(), name, mode, rdev) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  auto made = [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "mkdir"));
    HOODY_TRY(dfd, pin(inode(parent)));
    CallerCreds creds(req);
    if (::mkdirat(dfd.get(), name, mode) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  auto made = [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "symlink"));
    HOODY_TRY(dfd, pin(inode(parent)));
    CallerCreds creds(req);
    if (::symlinkat(link, dfd.get(), name) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  auto made = [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "link"));
    HOODY_TRY(fd, pin(inode(ino)));
    HOODY_TRY(dfd, pin(inode(parent)));
    // AT_EMPTY_PATH links the O_PATH fd itself (needs CAP_DAC_READ_SEARCH: root).
    if (::linkat(fd.get(), "", dfd.get(), name, AT_EMPTY_PATH) < 0) return fail(Errno::last());
    return {};
  }();
  reply_entry(req, parent, name, made);
}

void PassthroughFs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply(req, [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "unlink"));
    HOODY_TRY(dfd, pin(inode(parent)));
    return sys::unlinkat(dfd.get(), name, 0);
  }());
}

void PassthroughFs::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  reply(req, [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "rmdir"));
    HOODY_TRY(dfd, pin(inode(parent)));
    return sys::unlinkat(dfd.get(), name, AT_REMOVEDIR);
  }());
}

void PassthroughFs::rename(fuse_req_t req, fuse_ino_t parent, const char* name,
                           fuse_ino_t newparent, const char* newname, unsigned flags) {
  reply(req, [&]() -> Status {
    HOODY_CHECK(may_mutate(req, "rename"));
    HOODY_TRY(from, pin(inode(parent)));
    HOODY_TRY(to, pin(inode(newparent)));
    return sys::renameat2(from.get(), name, to.get(), newname, flags);
  }());
}

}  // namespace hoody::pt
