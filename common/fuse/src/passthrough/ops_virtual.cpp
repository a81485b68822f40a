// Virtual nodes (PassthroughFs::is_vnode): the core's half.  The daemon
// answers what a node is (vgetattr), what a directory holds (vreaddir,
// vdirentry), what an open file is (vopen: a VirtualFile, by default with
// the contents vread produces) and what a write does (vwrite); the core
// keeps the handles, offsets and replies, and runs opens, writes and name
// changes where vdefer says.  A virtual file is served with direct_io (its
// size shows as 0, reads go to EOF), a virtual directory's listing is taken
// at opendir and never cached by the kernel.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "hoody/fuse_reply.hpp"
#include "hoody/passthrough.hpp"

namespace hoody::pt {

namespace {
std::vector<VEntry>* ventries_of(fuse_file_info* fi) {
  return reinterpret_cast<std::vector<VEntry>*>(fi->fh);
}
}  // namespace

Result<fuse_entry_param> PassthroughFs::virtual_entry(fuse_req_t req, fuse_ino_t ino) {
  HOODY_TRY(st, vgetattr(req, ino));
  fuse_entry_param e{};
  e.ino = ino;
  e.attr = st;
  e.attr_timeout = 0;
  e.entry_timeout = 0;
  return e;
}

Result<std::unique_ptr<VirtualFile>> PassthroughFs::vopen(fuse_req_t req, fuse_ino_t ino,
                                                         int flags) {
  HOODY_TRY(st, vgetattr(req, ino));
  if (S_ISDIR(st.st_mode)) return fail(EISDIR);
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC)) return fail(EACCES);
  HOODY_TRY(content, vread(req, ino));
  return std::make_unique<VirtualFile>(ino, std::move(content));
}

void PassthroughFs::vopen_reply(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  // fi lives in libfuse's frame of this call: a deferred open keeps a copy.
  vdefer(Op::open, ino, [this, req, ino, info = *fi]() mutable {
    auto made = vopen(req, ino, info.flags);
    if (!made) return reply(req, fail(made.error()));
    info.direct_io = 1;
    info.keep_cache = 0;
    info.noflush = 1;
    VirtualFile* f = made->release();
    info.fh = reinterpret_cast<uint64_t>(f);
    if (fuse_reply_open(req, &info) == -ENOENT) delete f;
  });
}

void PassthroughFs::vwrite_reply(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off,
                                 fuse_file_info* fi) {
  // The data lives only during this call: copied for the hook.
  std::string data(fuse_buf_size(in), '\0');
  fuse_bufvec out{};
  out.count = 1;
  out.buf[0].mem = data.data();
  out.buf[0].size = data.size();
  ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  if (n < 0) return reply(req, fail(static_cast<int>(-n)));
  data.resize(static_cast<size_t>(n));
  // The kernel releases the file only after this write is answered: f stays valid.
  VirtualFile* f = virtual_file_of(fi);
  vdefer(Op::write, ino, [this, req, f, off, data = std::move(data)]() mutable {
    auto taken = vwrite(req, *f, std::move(data), off);
    if (!taken) return reply(req, fail(taken.error()));
    fuse_reply_write(req, *taken);
  });
}

Result<off_t> PassthroughFs::vlseek(fuse_req_t, VirtualFile& f, off_t off, int whence) {
  auto size = static_cast<off_t>(f.contents()->size());
  if (whence == SEEK_DATA) return off < size ? Result<off_t>(off) : fail(ENXIO);
  if (whence == SEEK_HOLE) return off <= size ? Result<off_t>(size) : fail(ENXIO);
  return fail(EINVAL);
}

Result<fuse_entry_param> PassthroughFs::vdirentry(fuse_req_t, fuse_ino_t, const VEntry& e) {
  // Node id 0: the kernel links nothing and looks the name up when used.
  fuse_entry_param p{};
  p.attr.st_ino = e.shown_ino;
  p.attr.st_mode = e.mode;
  return p;
}

Status PassthroughFs::vcross(fuse_req_t req, const Access& real) {
  if (real.op != Op::link) HOODY_CHECK(check(req, real));
  return fail(EXDEV);
}

void PassthroughFs::vopendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto made = [&]() -> Result<std::unique_ptr<std::vector<VEntry>>> {
    HOODY_TRY(st, vgetattr(req, ino));
    if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR);
    HOODY_TRY(list, vreaddir(req, ino));
    auto v = std::make_unique<std::vector<VEntry>>();
    v->reserve(list.size() + 2);
    if (list.empty() || list.front().name != ".") {
      v->push_back({".", S_IFDIR | 0555, st.st_ino});
      v->push_back({"..", S_IFDIR | 0555, 1});
    }
    for (auto& e : list) v->push_back(std::move(e));
    return v;
  }();
  if (!made) return reply(req, fail(made.error()));
  fi->keep_cache = 0;
  fi->cache_readdir = 0;
  auto* v = made->release();
  fi->fh = reinterpret_cast<uint64_t>(v);
  if (fuse_reply_open(req, fi) == -ENOENT) delete v;
}

void PassthroughFs::vreaddir_reply(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                                   fuse_file_info* fi, bool plus) {
  const auto& v = *ventries_of(fi);
  std::unique_ptr<char[]> buf(new char[size]);
  size_t used = 0;
  // The offset of an entry is its index + 1 (the offset of the next one).
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < v.size(); ++i) {
    const VEntry& e = v[i];
    size_t n;
    auto next = static_cast<off_t>(i + 1);
    if (plus) {
      bool dot = e.name == "." || e.name == "..";
      auto p = dot ? PassthroughFs::vdirentry(req, ino, e) : vdirentry(req, ino, e);
      if (!p) continue;  // gone since opendir
      n = fuse_add_direntry_plus(req, buf.get() + used, size - used, e.name.c_str(), &*p, next);
      if (n > size - used && p->ino != 0) {
        // Not sent: the lookup it counted is given back.
        if (is_vnode(p->ino))
          vforget(p->ino, 1);
        else
          forget_one(inode(p->ino), 1);
      }
    } else {
      struct stat st {};
      st.st_ino = e.shown_ino;
      st.st_mode = e.mode;
      n = fuse_add_direntry(req, buf.get() + used, size - used, e.name.c_str(), &st, next);
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.get(), used);
}

}  // namespace hoody::pt
