#include "remote.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <nfsc/libnfs.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "hoody/fuse_reply.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"

namespace hoody::sharefs {

namespace {
constexpr int kNfsV3 = 3;               // NFS_V3 (libnfs-raw-nfs.h)
constexpr int kNfsTimeoutMs = 10000;    // a dead server: EIO after this, never a hang
constexpr size_t kMaxName = 255;

Status from_rc(int rc) { return rc < 0 ? fail(-rc) : Status{}; }

// A name the server sent or the kernel asks for: one component.
bool sound_name(const char* n) {
  size_t len = std::strlen(n);
  return len > 0 && len <= kMaxName && std::strchr(n, '/') == nullptr && std::strcmp(n, ".") != 0 &&
         std::strcmp(n, "..") != 0;
}

std::string child(const std::string& dir, const char* name) {
  return dir == "/" ? "/" + std::string(name) : dir + "/" + name;
}

// As a local share shows it: special files are empty regular files of mode 0000.
void present(struct stat& st) {
  if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode) || S_ISLNK(st.st_mode)) return;
  st.st_mode = S_IFREG;
  st.st_rdev = 0;
  st.st_size = 0;
  st.st_blocks = 0;
}

struct stat to_stat(const nfs_stat_64& n) {
  struct stat st {};
  st.st_dev = static_cast<dev_t>(n.nfs_dev);
  st.st_ino = static_cast<ino_t>(n.nfs_ino);
  st.st_mode = static_cast<mode_t>(n.nfs_mode);
  st.st_nlink = static_cast<nlink_t>(n.nfs_nlink);
  st.st_uid = static_cast<uid_t>(n.nfs_uid);
  st.st_gid = static_cast<gid_t>(n.nfs_gid);
  st.st_size = static_cast<off_t>(n.nfs_size);
  st.st_blksize = static_cast<blksize_t>(n.nfs_blksize ? n.nfs_blksize : 4096);
  st.st_blocks = static_cast<blkcnt_t>(n.nfs_blocks);
  st.st_atim = {static_cast<time_t>(n.nfs_atime), static_cast<long>(n.nfs_atime_nsec)};
  st.st_mtim = {static_cast<time_t>(n.nfs_mtime), static_cast<long>(n.nfs_mtime_nsec)};
  st.st_ctim = {static_cast<time_t>(n.nfs_ctime), static_cast<long>(n.nfs_ctime_nsec)};
  return st;
}

// The attributes as the server has them (the type is checked by open).
Result<struct stat> lstat_raw(RemoteShare& s, const std::string& path) {
  nfs_stat_64 n{};
  int rc = s.with([&](nfs_context* c) { return nfs_lstat64(c, path.c_str(), &n); });
  if (rc < 0) return fail(-rc);
  return to_stat(n);
}

// ... and as they are shown.
Result<struct stat> lstat_path(RemoteShare& s, const std::string& path) {
  HOODY_TRY(st, lstat_raw(s, path));
  present(st);
  return st;
}

mode_t dirent_type(uint32_t t) {
  switch (t) {  // NF3REG .. NF3FIFO
    case 1: return S_IFREG;
    case 2: return S_IFDIR;
    case 5: return S_IFLNK;
    default: return S_IFREG;  // special files show as regular (present)
  }
}

Status check_write(const RemoteShare& s) {
  if (s.revoked.load()) return fail(ESTALE);
  if (s.read_only.load()) return fail(EROFS);
  return {};
}

struct DirList {
  struct E {
    std::string name;
    mode_t type;
    ino_t ino;
  };
  std::vector<E> entries;
};
}  // namespace

// ---- one export -------------------------------------------------------------

Result<std::shared_ptr<RemoteShare>> RemoteShare::connect(const std::string& name,
                                                          const std::string& url, bool read_only,
                                                          std::string* why) {
  std::shared_ptr<RemoteShare> s(new RemoteShare(name, url));
  s->read_only = read_only;
  s->ctx_ = nfs_init_context();
  if (!s->ctx_) {
    *why = "nfs_init_context failed";
    return fail(ENOMEM);
  }
  // The ports come with the url (libnfs 4.0 has no setter for them).
  nfs_url* u = nfs_parse_url_dir(s->ctx_, url.c_str());
  if (!u) {
    *why = "url " + url + ": " + nfs_get_error(s->ctx_);
    return fail(EINVAL);
  }
  nfs_set_version(s->ctx_, kNfsV3);
  nfs_set_timeout(s->ctx_, kNfsTimeoutMs);
  nfs_set_dircache(s->ctx_, 0);  // listings are asked each time (other writers)
  int rc = nfs_mount(s->ctx_, u->server, u->path);
  nfs_destroy_url(u);
  if (rc < 0) {
    *why = "mount " + url + ": " + nfs_get_error(s->ctx_);
    return fail(-rc);
  }
  // Read-ahead chunks as large as the server reads in one go, at most kAheadChunk.
  uint64_t readmax = nfs_get_readmax(s->ctx_);
  if (readmax > 0) s->chunk_ = static_cast<size_t>(std::min<uint64_t>(readmax, kAheadChunk));
  return s;
}

namespace {
void chunk_done(int err, nfs_context*, void* data, void* priv) {
  std::unique_ptr<std::shared_ptr<RemoteShare::Chunk>> hold(static_cast<std::shared_ptr<RemoteShare::Chunk>*>(priv));
  auto& c = **hold;
  if (err > 0 && static_cast<size_t>(err) > c.len) err = -EIO;
  if (err > 0) c.data.assign(static_cast<char*>(data), static_cast<char*>(data) + err);
  c.rc = err;
  c.done = true;
}
}  // namespace

Status RemoteShare::send_read(nfsfh* fh, const std::shared_ptr<Chunk>& c) {
  auto* hold = new std::shared_ptr<Chunk>(c);
  std::lock_guard g(m_);
  if (nfs_pread_async(ctx_, fh, c->off, c->len, chunk_done, hold) < 0) {
    delete hold;
    return fail(EIO);
  }
  return {};
}

Status RemoteShare::wait(const Chunk& c) {
  std::lock_guard g(m_);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kNfsTimeoutMs + 1000);
  while (!c.done.load()) {
    if (std::chrono::steady_clock::now() > deadline) {
      log::get("share")->warn("op=read share={} -> no answer to a read-ahead in time", name);
      return fail(EIO);
    }
    pollfd p{nfs_get_fd(ctx_), static_cast<short>(nfs_which_events(ctx_)), 0};
    if (::poll(&p, 1, 100) < 0 && errno != EINTR) return fail(errno);
    if (nfs_service(ctx_, p.revents) < 0) {
      log::get("share")->warn("op=read share={} -> read-ahead failed: {}", name, nfs_get_error(ctx_));
      return fail(EIO);
    }
  }
  return {};
}

RemoteShare::~RemoteShare() {
  if (ctx_) nfs_destroy_context(ctx_);
}

// ---- nodes ------------------------------------------------------------------

struct RemoteFs::File {
  std::shared_ptr<RemoteShare> share;
  nfsfh* fh = nullptr;
  bool writable = false;
  // The reads in flight ahead of a sequential reader (see remote.hpp), under m.
  std::mutex m;
  uint64_t next = 0;  // where a sequential read goes on
  std::deque<std::shared_ptr<RemoteShare::Chunk>> ahead;
  std::vector<char> spare;  // a used chunk's buffer, for the next (no fresh pages per chunk)
  // Drops the reads ahead, waiting for those still in flight (the file
  // handle must outlive them).
  void drop() {
    for (auto& c : ahead)
      if (!c->done.load()) (void)share->wait(*c);
    ahead.clear();
  }
};

fuse_ino_t RemoteFs::intern(const std::shared_ptr<RemoteShare>& share, const std::string& path) {
  std::lock_guard g(m_);
  auto key = std::make_pair(static_cast<const RemoteShare*>(share.get()), path);
  auto it = by_path_.find(key);
  fuse_ino_t id;
  if (it != by_path_.end()) {
    id = it->second;
  } else {
    id = kRemoteBits | next_++;
    by_path_[key] = id;
    nodes_[id] = Node{share, path, 0};
  }
  nodes_[id].nlookup++;
  return id;
}

Result<RemoteFs::Node> RemoteFs::node(fuse_ino_t ino) {
  std::lock_guard g(m_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end() || it->second.share->revoked.load() || it->second.path.empty())
    return fail(ESTALE);
  return it->second;
}

Result<fuse_entry_param> RemoteFs::entry(const std::shared_ptr<RemoteShare>& share,
                                         const std::string& path) {
  HOODY_TRY(st, lstat_path(*share, path));
  fuse_entry_param e{};
  e.attr = st;
  e.attr_timeout = kAttrTimeout;
  e.entry_timeout = kAttrTimeout;
  e.ino = intern(share, path);
  return e;
}

Result<fuse_entry_param> RemoteFs::root_entry(const std::shared_ptr<RemoteShare>& share) {
  if (share->revoked.load()) return fail(ESTALE);
  return entry(share, "/");
}

void RemoteFs::moved(const RemoteShare* share, const std::string& from, const std::string& to) {
  std::lock_guard g(m_);
  std::vector<std::pair<std::string, fuse_ino_t>> hit;
  for (auto it = by_path_.lower_bound({share, from}); it != by_path_.end() && it->first.first == share;
       ++it) {
    const std::string& p = it->first.second;
    if (p.compare(0, from.size(), from) != 0) break;
    if (p.size() == from.size() || p[from.size()] == '/') hit.push_back({p, it->second});
  }
  for (auto& [p, id] : hit) by_path_.erase({share, p});
  for (auto& [p, id] : hit) {
    std::string np = to + p.substr(from.size());
    // A node at the target name (replaced by the rename) names nothing now:
    // its requests give ESTALE, not the file that took its name.
    auto old = by_path_.find({share, np});
    if (old != by_path_.end() && old->second != id) nodes_[old->second].path.clear();
    by_path_[{share, np}] = id;
    nodes_[id].path = np;
  }
}

std::vector<fuse_ino_t> RemoteFs::nodes_of(const RemoteShare* share) {
  std::lock_guard g(m_);
  std::vector<fuse_ino_t> out;
  for (auto& [id, n] : nodes_)
    if (n.share.get() == share) out.push_back(id);
  return out;
}

std::vector<fuse_ino_t> RemoteFs::revoke(const std::shared_ptr<RemoteShare>& share) {
  share->revoked = true;
  return nodes_of(share.get());
}

bool RemoteFs::forget(fuse_ino_t ino, uint64_t n) {
  std::lock_guard g(m_);
  auto it = nodes_.find(ino);
  if (it == nodes_.end()) return true;
  if (it->second.nlookup > n) {
    it->second.nlookup -= n;
    return false;
  }
  auto key = std::make_pair(static_cast<const RemoteShare*>(it->second.share.get()), it->second.path);
  auto bp = by_path_.find(key);
  if (bp != by_path_.end() && bp->second == ino) by_path_.erase(bp);
  nodes_.erase(it);  // the last reference to a revoked share closes its context
  return true;
}

// ---- ops --------------------------------------------------------------------

void RemoteFs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto e = [&]() -> Result<fuse_entry_param> {
    HOODY_TRY(p, node(parent));
    if (!sound_name(name)) return fail(ENOENT);
    return entry(p.share, child(p.path, name));
  }();
  reply(req, e);
}

void RemoteFs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  auto st = [&]() -> Result<struct stat> {
    HOODY_TRY(n, node(ino));
    return lstat_path(*n.share, n.path);
  }();
  if (!st) return reply(req, fail(st.error()));
  fuse_reply_attr(req, &*st, kAttrTimeout);
}

void RemoteFs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                       fuse_file_info* fi) {
  auto st = [&]() -> Result<struct stat> {
    HOODY_TRY(n, node(ino));
    HOODY_CHECK(check_write(*n.share));
    auto& s = *n.share;
    const char* p = n.path.c_str();
    File* f = fi ? reinterpret_cast<File*>(fi->fh) : nullptr;
    if (valid & FUSE_SET_ATTR_SIZE) {
      int rc = s.with([&](nfs_context* c) {
        return f && f->fh ? nfs_ftruncate(c, f->fh, static_cast<uint64_t>(attr->st_size))
                          : nfs_truncate(c, p, static_cast<uint64_t>(attr->st_size));
      });
      s.writes++;
      HOODY_CHECK(from_rc(rc));
    }
    if (valid & FUSE_SET_ATTR_MODE)
      HOODY_CHECK(from_rc(s.with([&](nfs_context* c) { return nfs_chmod(c, p, attr->st_mode & 07777); })));
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
      HOODY_TRY(cur, lstat_path(s, n.path));
      int uid = static_cast<int>((valid & FUSE_SET_ATTR_UID) ? attr->st_uid : cur.st_uid);
      int gid = static_cast<int>((valid & FUSE_SET_ATTR_GID) ? attr->st_gid : cur.st_gid);
      HOODY_CHECK(from_rc(s.with([&](nfs_context* c) { return nfs_lchown(c, p, uid, gid); })));
    }
    if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
      HOODY_TRY(cur, lstat_path(s, n.path));
      timeval now{};
      ::gettimeofday(&now, nullptr);
      auto tv = [&](int set, int set_now, const timespec& given, const timespec& have) {
        if (valid & set_now) return now;
        const timespec& t = (valid & set) ? given : have;
        return timeval{t.tv_sec, t.tv_nsec / 1000};
      };
      timeval tvs[2] = {tv(FUSE_SET_ATTR_ATIME, FUSE_SET_ATTR_ATIME_NOW, attr->st_atim, cur.st_atim),
                        tv(FUSE_SET_ATTR_MTIME, FUSE_SET_ATTR_MTIME_NOW, attr->st_mtim, cur.st_mtim)};
      HOODY_CHECK(from_rc(s.with([&](nfs_context* c) { return nfs_utimes(c, p, tvs); })));
    }
    return lstat_path(s, n.path);
  }();
  if (!st) return reply(req, fail(st.error()));
  fuse_reply_attr(req, &*st, kAttrTimeout);
}

void RemoteFs::readlink(fuse_req_t req, fuse_ino_t ino) {
  auto target = [&]() -> Result<std::string> {
    HOODY_TRY(n, node(ino));
    char* buf = nullptr;
    int rc = n.share->with([&](nfs_context* c) { return nfs_readlink2(c, n.path.c_str(), &buf); });
    if (rc < 0) return fail(-rc);
    std::string out(buf ? buf : "");
    std::free(buf);
    return out;
  }();
  if (!target) return reply(req, fail(target.error()));
  fuse_reply_readlink(req, target->c_str());
}

void RemoteFs::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  auto e = [&]() -> Result<fuse_entry_param> {
    HOODY_TRY(p, node(parent));
    HOODY_CHECK(check_write(*p.share));
    if (!sound_name(name)) return fail(EINVAL);
    std::string path = child(p.path, name);
    HOODY_CHECK(from_rc(p.share->with([&](nfs_context* c) {
      return nfs_mkdir2(c, path.c_str(), static_cast<int>(mode & 07777));
    })));
    return entry(p.share, path);
  }();
  reply(req, e);
}

void RemoteFs::symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  auto e = [&]() -> Result<fuse_entry_param> {
    HOODY_TRY(p, node(parent));
    HOODY_CHECK(check_write(*p.share));
    if (!sound_name(name)) return fail(EINVAL);
    std::string path = child(p.path, name);
    HOODY_CHECK(from_rc(p.share->with([&](nfs_context* c) { return nfs_symlink(c, link, path.c_str()); })));
    return entry(p.share, path);
  }();
  reply(req, e);
}

void RemoteFs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  auto e = [&]() -> Result<fuse_entry_param> {
    HOODY_TRY(from, node(ino));
    HOODY_TRY(p, node(parent));
    HOODY_CHECK(check_write(*p.share));
    if (from.share != p.share) return fail(EXDEV);
    if (!sound_name(name)) return fail(EINVAL);
    std::string path = child(p.path, name);
    HOODY_CHECK(from_rc(p.share->with([&](nfs_context* c) {
      return nfs_link(c, from.path.c_str(), path.c_str());
    })));
    return entry(p.share, path);
  }();
  reply(req, e);
}

void RemoteFs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto s = [&]() -> Status {
    HOODY_TRY(p, node(parent));
    HOODY_CHECK(check_write(*p.share));
    if (!sound_name(name)) return fail(ENOENT);
    std::string path = child(p.path, name);
    return from_rc(p.share->with([&](nfs_context* c) { return nfs_unlink(c, path.c_str()); }));
  }();
  reply(req, s);
}

void RemoteFs::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  auto s = [&]() -> Status {
    HOODY_TRY(p, node(parent));
    HOODY_CHECK(check_write(*p.share));
    if (!sound_name(name)) return fail(ENOENT);
    std::string path = child(p.path, name);
    return from_rc(p.share->with([&](nfs_context* c) { return nfs_rmdir(c, path.c_str()); }));
  }();
  reply(req, s);
}

void RemoteFs::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                      const char* newname, unsigned flags) {
  auto s = [&]() -> Status {
    HOODY_TRY(p, node(parent));
    HOODY_TRY(np, node(newparent));
    HOODY_CHECK(check_write(*p.share));
    if (p.share != np.share) return fail(EXDEV);
    if (flags & (RENAME_EXCHANGE | RENAME_WHITEOUT)) return fail(EINVAL);
    if (!sound_name(name) || !sound_name(newname)) return fail(EINVAL);
    std::string from = child(p.path, name), to = child(np.path, newname);
    if (flags & RENAME_NOREPLACE) {
      // NFSv3 has no exclusive rename: checked first (a racing creator wins).
      if (lstat_path(*p.share, to)) return fail(EEXIST);
    }
    HOODY_CHECK(from_rc(p.share->with([&](nfs_context* c) {
      return nfs_rename(c, from.c_str(), to.c_str());
    })));
    moved(p.share.get(), from, to);
    return {};
  }();
  reply(req, s);
}

void RemoteFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto f = [&]() -> Result<std::unique_ptr<File>> {
    HOODY_TRY(n, node(ino));
    bool writes = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
    if (writes) HOODY_CHECK(check_write(*n.share));
    // Devices, FIFOs and sockets never open through a share.
    HOODY_TRY(st, lstat_raw(*n.share, n.path));
    if (!S_ISREG(st.st_mode)) return fail(S_ISDIR(st.st_mode) ? EISDIR : EACCES);
    auto file = std::make_unique<File>();
    file->share = n.share;
    file->writable = (fi->flags & O_ACCMODE) != O_RDONLY;
    int flags = fi->flags & (O_ACCMODE | O_TRUNC);
    HOODY_CHECK(from_rc(n.share->with([&](nfs_context* c) {
      return nfs_open(c, n.path.c_str(), flags, &file->fh);
    })));
    if (flags & O_TRUNC) n.share->writes++;
    return file;
  }();
  if (!f) return reply(req, fail(f.error()));
  fi->keep_cache = 0;  // close-to-open: pages cached by an earlier open are dropped
  fi->direct_io = 0;
  File* raw = f->release();
  fi->fh = reinterpret_cast<uint64_t>(raw);
  if (fuse_reply_open(req, fi) == -ENOENT) {
    raw->share->with([&](nfs_context* c) { return nfs_close(c, raw->fh); });
    delete raw;
  }
}

void RemoteFs::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                      fuse_file_info* fi) {
  auto made = [&]() -> Result<std::pair<fuse_entry_param, std::unique_ptr<File>>> {
    HOODY_TRY(p, node(parent));
    HOODY_CHECK(check_write(*p.share));
    if (!sound_name(name)) return fail(EINVAL);
    if (!S_ISREG(mode)) return fail(EPERM);
    std::string path = child(p.path, name);
    auto file = std::make_unique<File>();
    file->share = p.share;
    file->writable = true;
    int flags = (fi->flags & (O_ACCMODE | O_EXCL | O_TRUNC)) | O_CREAT;
    HOODY_CHECK(from_rc(p.share->with([&](nfs_context* c) {
      return nfs_create(c, path.c_str(), flags, static_cast<int>(mode & 07777), &file->fh);
    })));
    p.share->writes++;  // O_TRUNC of a file another handle reads ahead
    auto e = entry(p.share, path);
    if (!e) {
      p.share->with([&](nfs_context* c) { return nfs_close(c, file->fh); });
      return fail(e.error());
    }
    return std::make_pair(*e, std::move(file));
  }();
  if (!made) return reply(req, fail(made.error()));
  fi->keep_cache = 0;
  fi->direct_io = 0;
  File* raw = made->second.release();
  fi->fh = reinterpret_cast<uint64_t>(raw);
  if (fuse_reply_create(req, &made->first, fi) == -ENOENT) {
    raw->share->with([&](nfs_context* c) { return nfs_close(c, raw->fh); });
    forget(made->first.ino, 1);
    delete raw;
  }
}

void RemoteFs::read(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi) {
  auto* f = reinterpret_cast<File*>(fi->fh);
  auto& s = *f->share;
  std::lock_guard g(f->m);
  if (s.revoked.load()) {
    f->drop();
    return reply(req, fail(ESTALE));
  }
  auto at = static_cast<uint64_t>(off);
  uint64_t writes = s.writes.load();
  auto& q = f->ahead;
  // Sequential: inside the reads ahead (the kernel's own read-ahead may come
  // a little out of order), or where the last read ended.
  if (!q.empty() && (q.front()->writes != writes || at < q.front()->off ||
                     at >= q.back()->off + q.back()->len))
    f->drop();
  if (q.empty() && at != f->next) {
    std::unique_ptr<char[]> buf(new char[size]);
    int rc = s.with([&](nfs_context* c) { return nfs_pread(c, f->fh, at, size, buf.get()); });
    if (rc < 0) return reply(req, fail(-rc));
    f->next = at + static_cast<uint64_t>(rc);
    fuse_reply_buf(req, buf.get(), static_cast<size_t>(rc));
    return;
  }
  // The answer: a slice of one chunk (the usual case: no copy) or pieces of several.
  struct Answer {
    std::shared_ptr<RemoteShare::Chunk> chunk;
    size_t from = 0, n = 0;
    std::vector<char> pieces;
  };
  auto got = [&]() -> Result<Answer> {
    Answer a;
    std::vector<char>& out = a.pieces;
    bool eof = false;
    while (out.size() < size && !eof) {
      uint64_t want = at + out.size();
      while (!q.empty() && q.front()->off + q.front()->len <= want) {
        if (!q.front()->done.load()) HOODY_CHECK(s.wait(*q.front()));  // in flight until answered
        if (q.front().use_count() == 1) f->spare.swap(q.front()->data);
        q.pop_front();
      }
      // Keep kAheadChunks reads in flight past `want` (none past the end).
      bool ended = !q.empty() && q.back()->done.load() && static_cast<size_t>(std::max(q.back()->rc, 0)) < q.back()->len;
      while (q.size() < kAheadChunks && !ended) {
        auto c = std::make_shared<RemoteShare::Chunk>();
        c->data.swap(f->spare);
        c->off = q.empty() ? want : q.back()->off + q.back()->len;
        c->len = std::max(size, s.chunk());
        c->writes = writes;
        HOODY_CHECK(s.send_read(f->fh, c));
        q.push_back(std::move(c));
      }
      auto& c = *q.front();
      if (c.off > want || c.off + c.len <= want) return fail(EIO);  // cannot happen: dropped above
      HOODY_CHECK(s.wait(c));
      if (c.rc < 0) return fail(-c.rc);
      size_t from = static_cast<size_t>(want - c.off);
      size_t have = static_cast<size_t>(c.rc);
      if (from >= have) break;  // the end of the file
      size_t n = std::min(size - out.size(), have - from);
      if (out.empty() && (n == size || have < c.len)) {
        a.chunk = q.front();
        a.from = from;
        a.n = n;
        return a;
      }
      out.insert(out.end(), c.data.begin() + static_cast<std::ptrdiff_t>(from),
                 c.data.begin() + static_cast<std::ptrdiff_t>(from + n));
      eof = have < c.len && from + n == have;
    }
    return a;
  }();
  if (!got) {
    f->drop();
    return reply(req, fail(got.error()));
  }
  const char* data = got->chunk ? got->chunk->data.data() + got->from : got->pieces.data();
  size_t n = got->chunk ? got->n : got->pieces.size();
  f->next = at + n;
  fuse_reply_buf(req, data, n);
}

void RemoteFs::write_buf(fuse_req_t req, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  auto* f = reinterpret_cast<File*>(fi->fh);
  auto n = [&]() -> Result<size_t> {
    HOODY_CHECK(check_write(*f->share));
    if (!f->writable) return fail(EBADF);
    std::string data(fuse_buf_size(in), '\0');
    fuse_bufvec out{};
    out.count = 1;
    out.buf[0].mem = data.data();
    out.buf[0].size = data.size();
    ssize_t got = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
    if (got < 0) return fail(static_cast<int>(-got));
    size_t done = 0;
    while (done < static_cast<size_t>(got)) {
      int rc = f->share->with([&](nfs_context* c) {
        return nfs_pwrite(c, f->fh, static_cast<uint64_t>(off) + done, static_cast<size_t>(got) - done,
                          data.data() + done);
      });
      if (rc < 0) return fail(-rc);
      if (rc == 0) return fail(EIO);
      done += static_cast<size_t>(rc);
      f->share->writes++;
    }
    return done;
  }();
  if (!n) return reply(req, fail(n.error()));
  fuse_reply_write(req, *n);
}

void RemoteFs::release(fuse_req_t req, fuse_file_info* fi) {
  auto* f = reinterpret_cast<File*>(fi->fh);
  {
    std::lock_guard g(f->m);
    f->drop();
  }
  if (f->fh) f->share->with([&](nfs_context* c) { return nfs_close(c, f->fh); });
  delete f;
  reply(req, Status{});
}

void RemoteFs::fsync(fuse_req_t req, fuse_file_info* fi) {
  auto* f = reinterpret_cast<File*>(fi->fh);
  if (f->share->revoked.load()) return reply(req, fail(ESTALE));
  reply(req, from_rc(f->share->with([&](nfs_context* c) { return nfs_fsync(c, f->fh); })));
}

void RemoteFs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto list = [&]() -> Result<std::unique_ptr<DirList>> {
    HOODY_TRY(n, node(ino));
    auto out = std::make_unique<DirList>();
    nfsdir* dir = nullptr;
    int rc = n.share->with([&](nfs_context* c) {
      int r = nfs_opendir(c, n.path.c_str(), &dir);
      if (r < 0) return r;
      while (nfsdirent* e = nfs_readdir(c, dir)) {
        if (std::strcmp(e->name, ".") == 0 || std::strcmp(e->name, "..") == 0) {
          out->entries.push_back({e->name, S_IFDIR, static_cast<ino_t>(e->inode)});
          continue;
        }
        if (!sound_name(e->name)) {
          log::get("share")->warn("op=readdir share={} -> a name the server sent was dropped: {}",
                                  quote_name(n.share->name), quote_name(e->name));
          continue;
        }
        out->entries.push_back({e->name, dirent_type(e->type), static_cast<ino_t>(e->inode)});
      }
      nfs_closedir(c, dir);
      return 0;
    });
    if (rc < 0) return fail(-rc);
    return out;
  }();
  if (!list) return reply(req, fail(list.error()));
  fi->keep_cache = 0;
  fi->cache_readdir = 0;
  DirList* raw = list->release();
  fi->fh = reinterpret_cast<uint64_t>(raw);
  if (fuse_reply_open(req, fi) == -ENOENT) delete raw;
}

void RemoteFs::readdir(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  const auto& v = reinterpret_cast<DirList*>(fi->fh)->entries;
  std::unique_ptr<char[]> buf(new char[size]);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < v.size(); ++i) {
    struct stat st {};
    st.st_ino = v[i].ino;
    st.st_mode = v[i].type;
    size_t n;
    auto next = static_cast<off_t>(i + 1);
    if (plus) {
      fuse_entry_param p{};  // node id 0: the kernel looks the name up when used
      p.attr = st;
      n = fuse_add_direntry_plus(req, buf.get() + used, size - used, v[i].name.c_str(), &p, next);
    } else {
      n = fuse_add_direntry(req, buf.get() + used, size - used, v[i].name.c_str(), &st, next);
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.get(), used);
}

void RemoteFs::releasedir(fuse_req_t req, fuse_file_info* fi) {
  delete reinterpret_cast<DirList*>(fi->fh);
  reply(req, Status{});
}

void RemoteFs::statfs(fuse_req_t req, fuse_ino_t ino) {
  auto sv = [&]() -> Result<struct statvfs> {
    HOODY_TRY(n, node(ino));
    nfs_statvfs_64 s{};
    HOODY_CHECK(from_rc(n.share->with([&](nfs_context* c) { return nfs_statvfs64(c, n.path.c_str(), &s); })));
    struct statvfs out {};
    out.f_bsize = s.f_bsize;
    out.f_frsize = s.f_frsize;
    out.f_blocks = s.f_blocks;
    out.f_bfree = s.f_bfree;
    out.f_bavail = s.f_bavail;
    out.f_files = s.f_files;
    out.f_ffree = s.f_ffree;
    out.f_favail = s.f_favail;
    out.f_namemax = s.f_namemax ? s.f_namemax : kMaxName;
    return out;
  }();
  if (!sv) return reply(req, fail(sv.error()));
  fuse_reply_statfs(req, &*sv);
}

void RemoteFs::lseek(fuse_req_t req, off_t off, int whence, fuse_file_info* fi) {
  auto* f = reinterpret_cast<File*>(fi->fh);
  auto pos = [&]() -> Result<off_t> {
    if (f->share->revoked.load()) return fail(ESTALE);
    nfs_stat_64 n{};
    HOODY_CHECK(from_rc(f->share->with([&](nfs_context* c) { return nfs_fstat64(c, f->fh, &n); })));
    auto size = static_cast<off_t>(n.nfs_size);
    // No holes over NFSv3: data up to the size, one hole at the end.
    if (whence == SEEK_DATA) return off < size ? Result<off_t>(off) : fail(ENXIO);
    if (whence == SEEK_HOLE) return off <= size ? Result<off_t>(size) : fail(ENXIO);
    return fail(EINVAL);
  }();
  if (!pos) return reply(req, fail(pos.error()));
  fuse_reply_lseek(req, *pos);
}

void RemoteFs::refuse_change(fuse_req_t req, fuse_ino_t ino, int err) {
  auto s = [&]() -> Status {
    HOODY_TRY(n, node(ino));
    HOODY_CHECK(check_write(*n.share));
    return fail(err);
  }();
  reply(req, s);
}

int RemoteFs::tmpfile_errno(fuse_ino_t ino) {
  auto n = node(ino);
  if (!n) return n.err();
  if (auto s = check_write(*n->share); !s) return s.err();
  return EOPNOTSUPP;
}

}  // namespace hoody::sharefs
