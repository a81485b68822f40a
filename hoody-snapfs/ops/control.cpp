// Open files and directories: the control files of .hoody/ and the listing of
// the root and .hoody/ are the daemon's; everything else is the core's.
//
// A control file's contents are computed at open (snapshots.json, log) or
// taken from the diff cache (a diff, shared by its readers), and served with
// direct_io: its size shows as 0, reads go to EOF.
// .hoody/restore takes a write: "NAME" or "NAME if-idle"; the write returns
// when the restore is done (or refused).  Opened O_RDWR, a read afterwards
// gives its result as one JSON line (what hoody-snap prints).
// .hoody/schedule reads as JSON and takes one write: "off" or a JSON object
// (schedule.cpp).  .hoody/log opens only for the users allowed to act
// (EACCES for the others).
#include <fcntl.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "../fs.hpp"
#include "hoody/fuse_reply.hpp"
#include "hoody/errno_name.hpp"
#include "hoody/names.hpp"

namespace hoody::snapfs {

namespace {
// fuse_file_info::fh of an open control file.
struct VFile {
  uint64_t ino = 0;
  std::string content;  // .hoody/restore: the last result (under restore_gate_.m)
  uint64_t generation = 0;  // .hoody/restore: of the restore gate, at open or its last restore
  // A diff: the cache's buffer, shared by its readers (content stays empty).
  std::shared_ptr<const std::string> shared;
  const std::string& data() const { return shared ? *shared : content; }
};

nlohmann::ordered_json holders_json(const std::vector<Holder>& hs) {
  auto a = nlohmann::ordered_json::array();
  for (const auto& h : hs) a.push_back({{"pid", h.pid}, {"comm", h.comm}, {"path", h.path}});
  return a;
}
VFile* vfile_of(fuse_file_info* fi) { return reinterpret_cast<VFile*>(fi->fh); }

// A FUSE interrupt of an open of .hoody/diff/A..B that waits for the diff.
void on_diff_interrupt(fuse_req_t req, void* ticket) {
  snapfs_of(req).diff_cache().interrupt(
      static_cast<DiffCache::Ticket>(reinterpret_cast<uintptr_t>(ticket)));
}

// fuse_file_info::fh of an open root or .hoody/ directory: its entries, taken
// at opendir (and again on a rewind).
struct VDir {
  std::vector<vdir::Entry> entries;
};
VDir* vdir_of(fuse_file_info* fi) { return reinterpret_cast<VDir*>(fi->fh); }

std::string denied(const Fs::Who& c) {
  return "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups";
}
}  // namespace

void Fs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::open(req, ino, fi);
  // fi lives in libfuse's frame of this call: an offloaded open keeps a copy.
  auto finish = [this, req, ino](fuse_file_info info) {
    auto made = [&]() -> Result<std::unique_ptr<VFile>> {
      auto* fi = &info;
      mode_t mode = vdir::node_mode(ino);
      if (!mode) return fail(ENOENT);
      if (S_ISDIR(mode)) return fail(EISDIR);
      int acc = fi->flags & O_ACCMODE;
      auto f = std::make_unique<VFile>();
      f->ino = ino;
      if (ino == vdir::kRestore) {
        if (acc == O_RDONLY) return fail(EACCES);  // a write starts a restore
        auto c = caller_of(req);
        if (!allowed(c)) {
          audit(c, "restore", "", EPERM, "", denied(c));
          return fail(EPERM);
        }
        std::lock_guard g(restore_gate_.m);
        if (restore_gate_.running) {
          audit(c, "restore", "", EBUSY, "", "another restore is running");
          return fail(EBUSY);
        }
        f->generation = restore_gate_.generation;
        return f;
      }
      if (ino == vdir::kSchedule && acc == O_WRONLY) {
        auto c = caller_of(req);
        if (!allowed(c)) {
          audit(c, "schedule", "", EPERM, "", denied(c));
          return fail(EPERM);
        }
        return f;
      }
      if (acc != O_RDONLY) return fail(EACCES);  // read-only control files
      if (ino == vdir::kSnapshotsJson) {
        HOODY_TRY(all, list_info(true));
        f->content = vdir::snapshots_json(all);
      } else if (ino == vdir::kLog) {
        // uids, pids, names and reasons: for the users allowed to act only.
        if (!allowed(caller_of(req))) return fail(EACCES);
        HOODY_TRY(text, audit_text());
        f->content = std::move(text);
      } else if (ino == vdir::kSchedule) {
        HOODY_TRY(text, schedule_text());
        f->content = std::move(text);
      } else {
        auto name = diffs_.name_of(ino);
        if (!name) return fail(ENOENT);
        // Waits for the one computation of this pair; a FUSE interrupt
        // answers EINTR (the computation goes on for the other readers).
        HOODY_TRY(text, open_diff(*name, caller_of(req), [req](DiffCache::Ticket t) {
                    fuse_req_interrupt_func(req, on_diff_interrupt,
                                            reinterpret_cast<void*>(static_cast<uintptr_t>(t)));
                  }));
        f->shared = std::move(text);
      }
      return f;
    }();
    if (!made) return reply(req, fail(made.error()));
    VFile* f = made->release();
    info.fh = reinterpret_cast<uint64_t>(f);
    info.direct_io = 1;
    info.keep_cache = 0;
    if (fuse_reply_open(req, &info) == -ENOENT) delete f;
  };
  // A diff runs send streams (and snapshots the live state for @live).
  if (vdir::is_diff_node(ino))
    offload([finish, info = *fi] { finish(info); });
  else
    finish(*fi);
}

void Fs::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::read(req, ino, size, off, fi);
  if (ino == vdir::kRestore) {
    // The result of the last restore written through this fd ("" before).
    std::string c;
    {
      std::lock_guard g(restore_gate_.m);
      c = vfile_of(fi)->content;
    }
    size_t start = std::min(static_cast<size_t>(off < 0 ? 0 : off), c.size());
    fuse_reply_buf(req, c.data() + start, std::min(size, c.size() - start));
    return;
  }
  const std::string& c = vfile_of(fi)->data();
  size_t start = std::min(static_cast<size_t>(off < 0 ? 0 : off), c.size());
  size_t n = std::min(size, c.size() - start);
  fuse_reply_buf(req, c.data() + start, n);
}

void Fs::write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::write_buf(req, ino, in, off, fi);
  // The data is copied here (in lives only during this call); the restore runs offloaded.
  auto data = [&]() -> Result<std::string> {
    if (ino != vdir::kRestore && ino != vdir::kSchedule) return fail(EBADF);
    size_t size = fuse_buf_size(in);
    if (size > 4096) return fail(EINVAL);
    std::string d(size, '\0');
    fuse_bufvec out{};
    out.count = 1;
    out.buf[0].mem = d.data();
    out.buf[0].size = size;
    ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
    if (n < 0) return fail(static_cast<int>(-n));
    d.resize(static_cast<size_t>(n));
    return d;
  }();
  if (!data) return reply(req, fail(data.error()));
  if (ino == vdir::kSchedule) {
    // An index update, done here: the background thread takes the first snapshot.
    auto s = set_schedule(caller_of(req), *data);
    if (!s) return reply(req, s);
    fuse_reply_write(req, data->size());
    return;
  }
  // The kernel releases the file only after this write is answered: f stays valid.
  VFile* f = vfile_of(fi);
  offload([this, req, f, data = std::move(*data)] {
    nlohmann::ordered_json result;
    auto written = [&]() -> Result<size_t> {
      size_t n = data.size();
      auto c = caller_of(req);
      auto refused = [&](int err, const std::string& name, const std::string& why) {
        audit(c, "restore", name, err, "", why);
        result = {{"ok", false}, {"name", name}, {"errno", errno_name(err)}, {"error", why}};
        return fail(err);
      };
      // Allowed at open; checked again: the fd may have been passed on.
      if (!allowed(c)) return refused(EPERM, "", denied(c));
      std::string why;
      auto rq = vdir::parse_restore_line(data, &why);
      if (!rq) return refused(EINVAL, data.substr(0, 64), why);
      // One restore at a time.  The kernel serialises writes to this file, so
      // a second writer would only run after the first: it is told EBUSY
      // instead of restoring again, as is every open meanwhile.
      {
        std::lock_guard g(restore_gate_.m);
        if (restore_gate_.running || f->generation != restore_gate_.generation) {
          return refused(EBUSY, rq->name,
                         restore_gate_.running
                             ? "another restore is running"
                             : "another restore ran since this file was opened; open it again "
                               "to restore once more");
        }
        restore_gate_.running = true;
        f->generation = ++restore_gate_.generation;
      }
      // A restore that did nothing (refused, or failed before its safety
      // snapshot) leaves the generation as it was: the writers queued behind
      // it may still go.
      struct Done {
        RestoreGate& gate;
        VFile* f;
        uint64_t before;
        bool did = true;
        ~Done() {
          std::lock_guard g(gate.m);
          gate.running = false;
          if (!did) gate.generation = f->generation = before;
        }
      } done{restore_gate_, f, f->generation - 1};
      // Returns once every subvolume is swapped and every hoody-dbfs serves
      // the restored one; the old live subvolumes are deleted by the
      // background thread (recover()).
      auto dbfs = peers();
      RestoreOptions opts;
      opts.delete_old_now = false;
      opts.if_idle = rq->if_idle;
      opts.quiescer = dbfs.get();
      RestoreReport rep;
      auto st = store_->restore(rq->name, c.store(), opts, rep);
      dbfs.reset();
      done.did = st || !rep.safety.empty();
      if (!rep.safety.empty()) changed();  // a safety snapshot was taken
      if (st) recover_soon();
      std::string stale = rep.holders.empty() || !st
                              ? std::string()
                              : "still using the state before the restore (restart them): " +
                                    describe(rep.holders);
      // The store audited it (holders included): a log line only.
      this->done(c, "restore", rq->name, st.err(), rep.safety, st ? stale : rep.error);
      result = {{"ok", st.ok()}, {"name", rq->name}};
      if (!st) {
        result["errno"] = errno_name(st.err());
        result["error"] = rep.error.empty() ? st.error().message() : rep.error;
      }
      if (!rep.safety.empty()) {
        result["safety"] = rep.safety;
        result["consistency"] = rep.consistency;
        if (!rep.busy.empty()) result["busy"] = rep.busy;
      }
      // After a restore: the processes to restart; for an if-idle refusal:
      // the processes using the live state.
      result[st || st.err() == EIO ? "stale_holders" : "holders"] = holders_json(rep.holders);
      result["ms"] = std::round(rep.ms * 10) / 10;
      if (!st) return fail(st.error());
      return n;
    }();
    {
      std::lock_guard g(restore_gate_.m);
      f->content = result.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) +
                   "\n";
    }
    if (!written) return reply(req, fail(written.error()));
    fuse_reply_write(req, *written);
  });
}

void Fs::flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::flush(req, ino, fi);
  reply(req, {});
}

void Fs::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::release(req, ino, fi);
  delete vfile_of(fi);
  reply(req, {});
}

void Fs::fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::fsync(req, ino, datasync, fi);
  reply(req, {});
}

void Fs::lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi) {
  if (!vdir::is_virtual(ino)) return pt::PassthroughFs::lseek(req, ino, off, whence, fi);
  reply(req, fail(EOPNOTSUPP));
}

void Fs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (!is_root(ino) && !vdir::is_virtual(ino)) return pt::PassthroughFs::opendir(req, ino, fi);
  auto made = [&]() -> Result<std::unique_ptr<VDir>> {
    auto d = std::make_unique<VDir>();
    if (is_root(ino)) {
      d->entries.push_back({".", FUSE_ROOT_ID, S_IFDIR | 0777});
      d->entries.push_back({"..", FUSE_ROOT_ID, S_IFDIR | 0755});
      d->entries.push_back({std::string(vdir::kCtlName), vdir::kCtlDir, S_IFDIR | 0555});
      HOODY_TRY(l, listing());
      for (auto& s : l->all) {
        // A stable, distinct number for ls -i: from the uuid.
        d->entries.push_back(
            {s.name, std::hash<std::string>()(s.uuid) | (1ull << 61), S_IFDIR | 0777});
      }
      return d;
    }
    mode_t mode = vdir::node_mode(ino);
    if (!S_ISDIR(mode)) return fail(mode ? ENOTDIR : ENOENT);
    d->entries.push_back({".", ino, mode});
    d->entries.push_back(
        {"..", ino == vdir::kCtlDir ? FUSE_ROOT_ID : vdir::kCtlDir, S_IFDIR | 0555});
    for (auto& e : vdir::fixed_entries(ino)) d->entries.push_back(e);
    return d;
  }();
  if (!made) return reply(req, fail(made.error()));
  VDir* d = made->release();
  fi->fh = reinterpret_cast<uint64_t>(d);
  fi->cache_readdir = 0;  // snapshots come and go: list afresh
  fi->keep_cache = 0;
  if (fuse_reply_open(req, fi) == -ENOENT) delete d;
}

void Fs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                 bool plus) {
  if (!is_root(ino) && !vdir::is_virtual(ino))
    return pt::PassthroughFs::readdir(req, ino, size, off, fi, plus);
  VDir* d = vdir_of(fi);
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off < 0 ? 0 : off); i < d->entries.size(); ++i) {
    const auto& e = d->entries[i];
    size_t n;
    if (plus) {
      fuse_entry_param p{};
      bool counted = false;
      std::optional<Snapshot> info;
      if (is_root(ino) && !vdir::is_virtual(e.ino) && e.ino != FUSE_ROOT_ID) {
        auto got = get_info(e.name);
        if (!got) continue;  // deleted since opendir
        info = std::move(*got);
      }
      if (info && !in_kernel(info->uuid)) {
        // A snapshot the kernel does not hold: its full entry (lookup
        // counted), so that `ls -l` finds name and attributes cached and asks
        // nothing more for it.  One the kernel holds gets no node id: the
        // kernel then leaves its cached entry alone (a full one would make
        // it drop the inode's cached ACLs).
        auto ent = snapshot_entry(*info);
        if (!ent) continue;  // deleted since opendir
        p = *ent;
        counted = true;
      } else if (e.ino == vdir::kCtlDir) {
        p = virtual_entry(vdir::kCtlDir);
      } else {
        // "." and "..", and snapshots the kernel holds: no node id.
        p.attr.st_ino =
            vdir::is_virtual(e.ino) ? ((e.ino & ~vdir::kVirtualBit) | (1ull << 62)) : e.ino;
        p.attr.st_mode = e.mode;
      }
      n = fuse_add_direntry_plus(req, buf.data() + used, size - used, e.name.c_str(), &p,
                                 static_cast<off_t>(i + 1));
      if (n > size - used && counted) forget_one(inode(p.ino), 1);  // not sent: not counted
    } else {
      struct stat st {};
      st.st_ino = vdir::is_virtual(e.ino) ? ((e.ino & ~vdir::kVirtualBit) | (1ull << 62)) : e.ino;
      st.st_mode = e.mode;
      n = fuse_add_direntry(req, buf.data() + used, size - used, e.name.c_str(), &st,
                            static_cast<off_t>(i + 1));
    }
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void Fs::releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (!is_root(ino) && !vdir::is_virtual(ino)) return pt::PassthroughFs::releasedir(req, ino, fi);
  delete vdir_of(fi);
  reply(req, {});
}

void Fs::fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  if (!is_root(ino) && !vdir::is_virtual(ino))
    return pt::PassthroughFs::fsyncdir(req, ino, datasync, fi);
  reply(req, {});
}

}  // namespace hoody::snapfs
