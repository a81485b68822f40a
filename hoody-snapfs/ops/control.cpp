// The listings of the root and .hoody/ and the control files of .hoody/ (the
// core's virtual-node hooks; it keeps the handles and replies).
//
// A control file's contents are computed at open (snapshots.json, log) or
// taken from the diff cache (a diff, shared by its readers), and served by
// the core with direct_io: its size shows as 0, reads go to EOF.
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
#include "hoody/errno_name.hpp"
#include "hoody/fuse_reply.hpp"
#include "hoody/names.hpp"

namespace hoody::snapfs {

namespace {
// An open .hoody/restore: its contents are the result of the last restore
// written through it ("" before).
struct RestoreFile : pt::VirtualFile {
  using pt::VirtualFile::VirtualFile;
  uint64_t generation = 0;  // of the restore gate, at open or its last restore
                            // (under restore_gate_.m)
};

nlohmann::ordered_json holders_json(const std::vector<Holder>& hs) {
  auto a = nlohmann::ordered_json::array();
  for (const auto& h : hs) a.push_back({{"pid", h.pid}, {"comm", h.comm}, {"path", h.path}});
  return a;
}

// A FUSE interrupt of an open of .hoody/diff/A..B that waits for the diff.
void on_diff_interrupt(fuse_req_t req, void* ticket) {
  snapfs_of(req).diff_cache().interrupt(
      static_cast<DiffCache::Ticket>(reinterpret_cast<uintptr_t>(ticket)));
}

std::string denied(const Fs::Who& c) {
  return "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups";
}
}  // namespace

Result<std::unique_ptr<pt::VirtualFile>> Fs::vopen(fuse_req_t req, fuse_ino_t ino, int flags) {
  mode_t mode = vdir::node_mode(ino);
  if (!mode) return fail(ENOENT);
  if (S_ISDIR(mode)) return fail(EISDIR);
  int acc = flags & O_ACCMODE;
  if (ino == vdir::kRestore) {
    if (acc == O_RDONLY) return fail(EACCES);  // a write starts a restore
    auto c = caller_of(req);
    if (!allowed(c)) {
      audit(c, "restore", "", EPERM, "", denied(c));
      return fail(EPERM);
    }
    auto f = std::make_unique<RestoreFile>(ino);
    std::lock_guard g(restore_gate_.m);
    if (restore_gate_.running) {
      audit(c, "restore", "", EBUSY, "", "another restore is running");
      return fail(EBUSY);
    }
    f->generation = restore_gate_.generation;
    return std::unique_ptr<pt::VirtualFile>(std::move(f));
  }
  if (ino == vdir::kSchedule && acc == O_WRONLY) {
    auto c = caller_of(req);
    if (!allowed(c)) {
      audit(c, "schedule", "", EPERM, "", denied(c));
      return fail(EPERM);
    }
    return std::make_unique<pt::VirtualFile>(ino);
  }
  if (acc != O_RDONLY) return fail(EACCES);  // read-only control files
  if (ino == vdir::kSnapshotsJson) {
    HOODY_TRY(all, list_info(true));
    return std::make_unique<pt::VirtualFile>(ino, vdir::snapshots_json(all));
  }
  if (ino == vdir::kLog) {
    // uids, pids, names and reasons: for the users allowed to act only.
    if (!allowed(caller_of(req))) return fail(EACCES);
    HOODY_TRY(text, audit_text());
    return std::make_unique<pt::VirtualFile>(ino, std::move(text));
  }
  if (ino == vdir::kSchedule) {
    HOODY_TRY(text, schedule_text());
    return std::make_unique<pt::VirtualFile>(ino, std::move(text));
  }
  auto name = diffs_.name_of(ino);
  if (!name) return fail(ENOENT);
  // Waits (offloaded, vdefer) for the one computation of this pair; a FUSE
  // interrupt answers EINTR (the computation goes on for the other readers).
  HOODY_TRY(text, open_diff(*name, caller_of(req), [req](DiffCache::Ticket t) {
              fuse_req_interrupt_func(req, on_diff_interrupt,
                                      reinterpret_cast<void*>(static_cast<uintptr_t>(t)));
            }));
  return std::make_unique<pt::VirtualFile>(ino, std::move(text));
}

void Fs::vdefer(pt::Op op, fuse_ino_t ino, std::function<void()> job) {
  using pt::Op;
  // A diff runs send streams (and snapshots the live state for @live), a
  // restore swaps subvolumes, the verbs at the root wait on BTRFS.
  bool slow = op == Op::mkdir || op == Op::rmdir || op == Op::rename_from ||
              (op == Op::open && vdir::is_diff_node(ino)) ||
              (op == Op::write && ino == vdir::kRestore);
  if (slow)
    offload(std::move(job));
  else
    job();
}

// SEEK_DATA and SEEK_HOLE: not answered for control files.
Result<off_t> Fs::vlseek(fuse_req_t, pt::VirtualFile&, off_t, int) { return fail(EOPNOTSUPP); }

// .hoody/schedule and .hoody/restore (offloaded, vdefer).
Result<size_t> Fs::vwrite(fuse_req_t req, pt::VirtualFile& vf, std::string data, off_t) {
  if (vf.ino != vdir::kRestore && vf.ino != vdir::kSchedule) return fail(EBADF);
  if (data.size() > 4096) return fail(EINVAL);
  if (vf.ino == vdir::kSchedule) {
    // An index update, done here: the background thread takes the first
    // snapshot.
    HOODY_CHECK(set_schedule(caller_of(req), data));
    return data.size();
  }
  auto* f = static_cast<RestoreFile*>(&vf);
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
                       restore_gate_.running ? "another restore is running"
                                             : "another restore ran since this "
                                               "file was opened; open it again "
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
      RestoreFile* f;
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
    std::string stale =
        rep.holders.empty() || !st
            ? std::string()
            : "still using the state before the restore (restart them): " + describe(rep.holders);
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
  f->set_contents(result.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace) +
                  "\n");
  return written;
}

Result<std::vector<pt::VEntry>> Fs::vreaddir(fuse_req_t, fuse_ino_t ino) {
  std::vector<pt::VEntry> out;
  if (is_root(ino)) {
    out.push_back({std::string(vdir::kCtlName), S_IFDIR | 0555, shown_ino_of(vdir::kCtlDir)});
    HOODY_TRY(l, listing());
    // A stable, distinct number for ls -i: from the uuid.
    for (auto& s : l->all)
      out.push_back({s.name, S_IFDIR | 0777, std::hash<std::string>()(s.uuid) | (1ull << 61)});
    return out;
  }
  mode_t mode = vdir::node_mode(ino);
  out.push_back({".", mode, shown_ino_of(ino)});
  out.push_back(
      {"..", S_IFDIR | 0555, shown_ino_of(ino == vdir::kCtlDir ? FUSE_ROOT_ID : vdir::kCtlDir)});
  for (auto& e : vdir::fixed_entries(ino)) out.push_back({e.name, e.mode, shown_ino_of(e.ino)});
  return out;
}

// readdirplus of the root: .hoody/ and the snapshots the kernel does not hold
// come with their entries.
Result<fuse_entry_param> Fs::vdirentry(fuse_req_t req, fuse_ino_t dir, const pt::VEntry& e) {
  if (!is_root(dir)) return pt::PassthroughFs::vdirentry(req, dir, e);
  if (e.name == vdir::kCtlName) return ctl_entry(vdir::kCtlDir);
  HOODY_TRY(info, get_info(e.name));  // deleted since opendir: left out
  // A snapshot the kernel does not hold: its full entry (lookup counted), so
  // that `ls -l` finds name and attributes cached and asks nothing more for
  // it.  One the kernel holds gets no node id: the kernel then leaves its
  // cached entry alone (a full one would make it drop the inode's cached ACLs).
  if (!in_kernel(info.uuid)) return snapshot_entry(info);
  return pt::PassthroughFs::vdirentry(req, dir, e);
}

}  // namespace hoody::snapfs
