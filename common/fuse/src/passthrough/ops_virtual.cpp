// Virtual nodes (PassthroughFs::is_vnode): the core's half.  The daemon
// answers what a node is (vgetattr), what a directory holds (vreaddir) and
// what a file says (vread, produced at open); the core keeps the handles,
// offsets and replies.  A virtual file is read-only and served with
// direct_io (its size shows as 0, reads go to EOF), a virtual directory's
// listing is taken at opendir and never cached by the kernel.
#include <fcntl.h>

#include <algorithm>
#include <memory>
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

void PassthroughFs::vopen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto made = [&]() -> Result<std::unique_ptr<VirtualFile>> {
    HOODY_TRY(st, vgetattr(req, ino));
    if (S_ISDIR(st.st_mode)) return fail(EISDIR);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) return fail(EACCES);
    HOODY_TRY(content, vread(req, ino));
    auto f = std::make_unique<VirtualFile>();
    f->content = std::move(content);
    return f;
  }();
  if (!made) return reply(req, fail(made.error()));
  fi->direct_io = 1;
  fi->keep_cache = 0;
  fi->noflush = 1;
  VirtualFile* f = made->release();
  fi->fh = reinterpret_cast<uint64_t>(f);
  if (fuse_reply_open(req, fi) == -ENOENT) delete f;
}

void PassthroughFs::vopendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto made = [&]() -> Result<std::unique_ptr<std::vector<VEntry>>> {
    HOODY_TRY(st, vgetattr(req, ino));
    if (!S_ISDIR(st.st_mode)) return fail(ENOTDIR);
    HOODY_TRY(list, vreaddir(req, ino));
    auto v = std::make_unique<std::vector<VEntry>>();
    v->reserve(list.size() + 2);
    v->push_back({".", S_IFDIR | 0555, st.st_ino});
    v->push_back({"..", S_IFDIR | 0555, 1});
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

void PassthroughFs::vreaddir_reply(fuse_req_t req, fuse_ino_t, size_t size, off_t off,
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
      // Node id 0: the kernel links nothing and looks the name up when used.
      fuse_entry_param p{};
      p.attr.st_ino = e.shown_ino;
      p.attr.st_mode = e.mode;
      n = fuse_add_direntry_plus(req, buf.get() + used, size - used, e.name.c_str(), &p, next);
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
