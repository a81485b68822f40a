// The fuse_lowlevel_ops table: each entry forwards to the filesystem object of
// the request (the fuse userdata), so one process can serve several mounts.
#include "hoody/passthrough.hpp"

namespace hoody::pt {

namespace {
PassthroughFs& F(fuse_req_t req) { return fs_of(req); }

void op_init(void* userdata, fuse_conn_info* conn) {
  static_cast<PassthroughFs*>(userdata)->init(conn);
}
void op_destroy(void* userdata) {
  auto* fs = static_cast<PassthroughFs*>(userdata);
  fs->stop_lock_waits();
  fs->destroy();
}
void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) { F(req).lookup(req, parent, name); }
void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t n) {
  F(req).forget(ino, n);
  fuse_reply_none(req);
}
void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; ++i) F(req).forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}
void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { F(req).getattr(req, ino, fi); }
void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  F(req).setattr(req, ino, attr, valid, fi);
}
void op_readlink(fuse_req_t req, fuse_ino_t ino) { F(req).readlink(req, ino); }
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  F(req).mknod(req, parent, name, mode, rdev);
}
void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  F(req).mkdir(req, parent, name, mode);
}
void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  F(req).symlink(req, link, parent, name);
}
void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  F(req).link(req, ino, parent, name);
}
void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) { F(req).unlink(req, parent, name); }
void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) { F(req).rmdir(req, parent, name); }
void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned flags) {
  F(req).rename(req, parent, name, newparent, newname, flags);
}
void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { F(req).open(req, ino, fi); }
void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  F(req).create(req, parent, name, mode, fi);
}
void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  F(req).read(req, ino, size, off, fi);
}
void op_write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  F(req).write_buf(req, ino, in, off, fi);
}
void op_flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { F(req).flush(req, ino, fi); }
void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { F(req).release(req, ino, fi); }
void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  F(req).fsync(req, ino, datasync, fi);
}
void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { F(req).opendir(req, ino, fi); }
void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  F(req).readdir(req, ino, size, off, fi, false);
}
void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  F(req).readdir(req, ino, size, off, fi, true);
}
void op_releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { F(req).releasedir(req, ino, fi); }
void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  F(req).fsyncdir(req, ino, datasync, fi);
}
void op_statfs(fuse_req_t req, fuse_ino_t ino) { F(req).statfs(req, ino); }
void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                 int flags) {
  F(req).setxattr(req, ino, name, value, size, flags);
}
void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  F(req).getxattr(req, ino, name, size);
}
void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) { F(req).listxattr(req, ino, size); }
void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  F(req).removexattr(req, ino, name);
}
void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info* fi) {
  F(req).fallocate(req, ino, mode, off, len, fi);
}
void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in,
                        fuse_ino_t ino_out, off_t off_out, fuse_file_info* fi_out, size_t len,
                        int flags) {
  F(req).copy_file_range(req, ino_in, off_in, fi_in, ino_out, off_out, fi_out, len, flags);
}
void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  F(req).lseek(req, ino, off, whence, fi);
}
void op_getlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock) {
  F(req).getlk(req, ino, fi, lock);
}
void op_setlk(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, struct flock* lock, int sleep) {
  F(req).setlk(req, ino, fi, lock, sleep);
}
void op_flock(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int op) { F(req).flock(req, ino, fi, op); }
}  // namespace

fuse_lowlevel_ops PassthroughFs::make_ops(OpsFeatures f) {
  fuse_lowlevel_ops ops{};
  ops.init = op_init;
  ops.destroy = op_destroy;
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.mkdir = op_mkdir;
  ops.symlink = op_symlink;
  ops.link = op_link;
  ops.unlink = op_unlink;
  ops.rmdir = op_rmdir;
  ops.rename = op_rename;
  ops.open = op_open;
  ops.create = op_create;
  ops.read = op_read;
  ops.write_buf = op_write_buf;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.readdirplus = op_readdirplus;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
  ops.statfs = op_statfs;
  ops.setxattr = op_setxattr;
  ops.getxattr = op_getxattr;
  ops.listxattr = op_listxattr;
  ops.removexattr = op_removexattr;
  ops.fallocate = op_fallocate;
  ops.copy_file_range = op_copy_file_range;
  ops.lseek = op_lseek;
  // libfuse asks the kernel for POSIX/BSD lock requests exactly when these
  // are set; without them the kernel keeps locks itself (correct for one mount).
  if (f.posix_locks) {
    ops.getlk = op_getlk;
    ops.setlk = op_setlk;
  }
  if (f.flock) ops.flock = op_flock;
  return ops;
}

}  // namespace hoody::pt
