// SnapshotStore: restore, and the finishing or undoing of an interrupted one.
#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "crash.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/errno_name.hpp"
#include "hoody/log.hpp"
#include "hoody/mountinfo.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "share/change_signal.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

namespace {

// Whether a mount visible here has its root inside .snapshots/<dir>: a bind
// mount of a live subvolume that a restore swapped out.  Deleting that
// subvolume would leave the mount showing an empty, deleted directory.
bool mounted_beneath(const std::string& dir) {
  auto mounts = mountinfo::read();
  if (!mounts) return false;
  const std::string needle = std::string("/") + kStoreDir + "/" + dir;
  for (auto& m : *mounts) {
    auto at = m.root.find(needle);
    if (at == std::string::npos) continue;
    auto end = at + needle.size();
    if (end == m.root.size() || m.root[end] == '/') return true;
  }
  return false;
}

// Wakes the hoody-sharefs daemons of the pool (SOURCE/../.., when it has a
// share registry) and waits until each has looked again: a share of this
// container's storage is then served from the restored subvolume, so nothing
// written through a share after the restore returns reaches the old tree.  A
// daemon that does not answer within the bound is named in the log (and, as
// it still holds the old storage, among the report's holders); it follows at
// its next look (every 200 ms).
constexpr auto kShareFollowBound = std::chrono::milliseconds(2000);

struct ShareWake {
  std::optional<sharefs::ChangeSignal> sig;
  uint64_t counter = 0;
};

ShareWake wake_share_daemons(int source_fd) {
  auto pool = sys::openat(source_fd, "../..", O_PATH | O_DIRECTORY);
  if (!pool) return {};
  struct stat st;
  if (::fstatat(pool->get(), "shares.db", &st, 0) != 0) return {};
  auto sig = sharefs::ChangeSignal::open_for_pool(pool->get());
  if (!sig) return {};
  ShareWake w{std::move(*sig), 0};
  w.counter = w.sig->publish();
  return w;
}

void wait_share_daemons(ShareWake& w, std::string_view name) {
  if (!w.sig) return;
  auto t0 = std::chrono::steady_clock::now();
  auto behind = w.sig->wait_applied(w.counter, kShareFollowBound);
  double waited = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  auto lg = log::get("snap");
  if (behind.empty()) {
    lg->debug("op=restore name={} -> share daemons follow ({:.1f} ms)", quote_name(name), waited);
    return;
  }
  std::string pids;
  for (pid_t p : behind) pids += (pids.empty() ? "" : ",") + std::to_string(p);
  lg->warn("op=restore name={} -> hoody-sharefs pid {} did not confirm within {} ms that it serves "
           "the restored storage; it will at its next look",
           quote_name(name), pids, kShareFollowBound.count());
}

// Re-attach the mounts visible here whose root lies inside an old live
// subvolume that a restore swapped out to .snapshots/<work>/<sv>: each is
// detached and bound again to the same place inside the restored SOURCE/<sv>,
// with its ro/nosuid/nodev/noexec flags.  So /hoody/storage (a bind mount of
// the storage subvolume) shows the restored state, and the old subvolume can
// go.  Mounts made in other mount namespaces cannot be seen from here: their
// owner re-attaches them (hoody-up does, when run again).
void reattach_mounts(int source_fd, const std::string& work) {
  auto lg = log::get("snap");
  auto mounts = mountinfo::read();
  if (!mounts) return;
  const std::string needle = std::string("/") + kStoreDir + "/" + work + "/";
  struct Target {
    std::string mountpoint, inside, opts;
  };
  std::vector<Target> targets;
  for (auto& m : *mounts) {
    auto at = m.root.find(needle);
    if (at == std::string::npos) continue;
    // root = .../.snapshots/<work>/<sv>[/sub]: the same place under SOURCE.
    targets.push_back({m.mount_point, m.root.substr(at + needle.size()), m.options});
  }
  for (auto& t : targets) {
    const std::string& mnt = t.mountpoint;
    std::string from = sys::proc_fd(source_fd) + "/" + t.inside;
    unsigned long flags = 0;
    for (auto& [name, bit] : {std::pair<const char*, unsigned long>{"ro", MS_RDONLY},
                              {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV}, {"noexec", MS_NOEXEC}}) {
      if (mountinfo::has_option(t.opts, name)) flags |= bit;
    }
    if (::umount2(mnt.c_str(), MNT_DETACH) < 0 ||
        ::mount(from.c_str(), mnt.c_str(), nullptr, MS_BIND, nullptr) < 0) {
      lg->error("op=restore mount={} -> cannot re-attach to the restored subvolume: {}", mnt,
                std::strerror(errno));
      continue;
    }
    if (flags && ::mount(nullptr, mnt.c_str(), nullptr, MS_REMOUNT | MS_BIND | flags, nullptr) < 0)
      lg->warn("op=restore mount={} -> re-attached, but its flags could not be restored: {}", mnt,
               std::strerror(errno));
    lg->info("op=restore mount={} -> re-attached to the restored {}", mnt, t.inside);
  }
}

}  // namespace

Result<std::string> SnapshotStore::restore(std::string_view name, const Caller& caller,
                                           bool delete_old_now) {
  RestoreOptions opts;
  opts.delete_old_now = delete_old_now;
  RestoreReport report;
  HOODY_CHECK(restore(name, caller, opts, report));
  return report.safety;
}

namespace {

// Appends the holders of `more` whose pid `into` does not list yet.
void merge(std::vector<Holder>& into, const std::vector<Holder>& more) {
  for (const auto& h : more)
    if (std::none_of(into.begin(), into.end(), [&](const Holder& x) { return x.pid == h.pid; }))
      into.push_back(h);
  std::sort(into.begin(), into.end(), [](const Holder& a, const Holder& b) { return a.pid < b.pid; });
}

std::string list_names(const std::vector<std::string>& v, size_t max = 8) {
  std::string s;
  for (size_t i = 0; i < v.size() && i < max; ++i) s += (i ? ", " : "") + v[i];
  if (v.size() > max) s += " and " + std::to_string(v.size() - max) + " more";
  return s;
}

}  // namespace

Status SnapshotStore::restore(std::string_view name, const Caller& caller,
                              const RestoreOptions& opts, RestoreReport& report) {
  std::lock_guard lock(op_mu_);
  auto lg = log::get("snap");
  auto t0 = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  Quiescer* q = opts.quiescer;
  // A refusal before anything was done: said once, in the log, the audit and the report.
  auto refuse = [&](Errno err, std::string why) -> Status {
    report.error = why;
    lg->warn("op=restore name={} uid={} -> {}: {}", quote_name(name), caller.uid,
             errno_name(err.value()), why);
    audit_result(caller, "restore", name, err, why);
    return fail(err);
  };
  auto target_r = find(name);
  if (!target_r) return fail(target_r.error());
  if (!*target_r) return refuse(Errno(ENOENT), "no snapshot " + quote_name(name));
  const Snapshot target = **target_r;
  HOODY_TRY(snap_dir, sys::openat(store_.get(), target.uuid.c_str(),
                                  O_RDONLY | O_DIRECTORY | O_NOFOLLOW));
  HOODY_TRY(snap_subvols, subvolumes_in(snap_dir.get()));
  HOODY_TRY(live, scope());
  std::vector<std::string> extra;  // live subvolumes the snapshot lacks: moved out
  std::set_difference(live.begin(), live.end(), snap_subvols.begin(), snap_subvols.end(),
                      std::back_inserter(extra));
  // Nested subvolumes are in no snapshot, the safety snapshot included: a
  // restore would drop them from the live state.  Refuse, naming them.
  HOODY_TRY(nested, nested_subvolumes(source_.get(), live));
  if (!nested.empty())
    return refuse(Errno(ENOTSUP),
                  std::string(nested.size() == 1 ? "the live state holds nested subvolume "
                                                 : "the live state holds nested subvolumes ") +
                      list_names(nested) +
                      ", which no snapshot captures (a restore would lose it); move it out of "
                      "the scope subvolume or delete it first");

  // The filesystems of the live subvolumes: a process still in one after the
  // exchange holds the state before the restore.
  std::vector<dev_t> live_devs;
  for (const auto& sv : live)
    if (auto st = sys::fstatat(source_.get(), sv.c_str(), AT_SYMLINK_NOFOLLOW); st)
      live_devs.push_back(st->st_dev);

  if (opts.if_idle) {
    std::vector<Holder> busy;
    if (q) {
      std::string why;
      auto h = q->holders(live, &why);
      if (!h) return refuse(h.error(), why);
      merge(busy, *h);
    }
    merge(busy, processes_using(live_devs, q ? q->server_pids() : std::vector<pid_t>{}));
    if (!busy.empty()) {
      report.holders = busy;
      return refuse(Errno(EBUSY), "the live state is in use by " + describe(busy) +
                                      "; stop them, or restore without if-idle");
    }
  }

  // 1. Journal, then writable copies of the snapshot in .restore-<op>: they
  // do not depend on the live state, so they are made before anyone is held.
  const std::string opid = random_uuid();
  const std::string work = kRestorePrefix + opid;
  json data = {{"opid", opid}, {"subvolumes", snap_subvols}, {"extra", extra}};
  HOODY_TRY(jid, journal_begin("restore", name, target.uuid, data.dump()));
  crash_point("restore", "journaled");
  Journal j{jid, "restore", std::string(name), target.uuid, 0, data};
  // Undo everything (the databases are resumed by `hold` on the way out,
  // after their servers were told, should an exchange have been made).
  Quiescer* q_told = nullptr;  // set once an exchange may have been made
  auto undo = [&](Errno err, std::string why) -> Status {
    lg->warn("op=restore name={} -> {}; undoing", quote_name(name), why);
    if (recover_restore(j, /*roll_back=*/true)) (void)journal_end(jid);
    if (q_told)
      for (const auto& sv : live) {
        std::string w;
        if (auto r = q_told->replaced(sv, &w); !r)
          lg->error("op=restore name={} subvolume={} -> undone, but its server did not confirm "
                    "that it serves it again: {}",
                    quote_name(name), sv, w);
      }
    report.error = why;
    audit_result(caller, "restore", name, err, why);
    return fail(err);
  };

  Status prepared = [&]() -> Status {
    HOODY_CHECK(sys::mkdirat(store_.get(), work.c_str(), 0700));
    HOODY_TRY(wfd, btrfs::open_dir(store_.get(), work.c_str()));
    json copies = json::object();
    int n = 0;
    for (const auto& sv : snap_subvols) {
      HOODY_TRY(src, btrfs::open_dir(snap_dir.get(), sv.c_str()));
      HOODY_CHECK(btrfs::snapshot(src.get(), wfd.get(), sv.c_str(), /*readonly=*/false));
      HOODY_TRY(copy, btrfs::open_dir(wfd.get(), sv.c_str()));
      HOODY_TRY(ci, btrfs::info(copy.get()));
      copies[sv] = ci.uuid;
      if (++n == 1) crash_point("restore", "copy-1");
    }
    // Recorded before any exchange: recovery tells a swapped-in copy by its uuid.
    j.data["copies"] = copies;
    HOODY_CHECK(journal_update(jid, 0, j.data.dump()));
    crash_point("restore", "prepared");
    // Dirty data flushed now, so that the safety snapshot under the quiesce
    // below has little to write and the writers wait only for that.
    if (q) HOODY_CHECK(btrfs::sync(source_.get()));
    return {};
  }();
  if (!prepared) return undo(prepared.error(), "preparing the copies: " + prepared.error().message());

  // 2. Quiesce: every database's writer token held; transactions in flight
  // finish (within the quiesce timeout), new ones wait.  A server that does
  // not answer within its bound: nothing is swapped (proceeding could let its
  // writers commit into the state being replaced, unseen).
  QuiesceHold hold(q);
  QuiesceResult held;
  auto tq = std::chrono::steady_clock::now();
  if (q) {
    std::string why;
    auto r = q->quiesce(live, &why);
    if (!r) return undo(r.error(), why.empty() ? "quiesce: " + r.error().message() : why);
    held = *r;
    if (!held.busy.empty())
      lg->warn("op=restore name={} -> not quiesced (a transaction outlasted the timeout): {}; "
               "the safety snapshot is crash-consistent for them",
               quote_name(name), describe_busy(held.busy));
  }
  crash_point("restore", "quiesced");

  // 3. The safety snapshot of the live state, taken while it is held.
  const TimePoint now = Clock::now();
  std::string safety = "pre-restore-" + utc_stamp(now);
  for (int i = 2;; ++i) {
    auto taken = find(safety);
    if (!taken) return undo(taken.error(), "index: " + taken.error().message());
    if (!*taken) break;
    safety = "pre-restore-" + utc_stamp(now) + "-" + std::to_string(i);
  }
  CreateOptions sopts;
  sopts.expires = now + kSafetyKeep;
  sopts.description = "live state before the restore of " + std::string(name);
  auto safe = create_locked(safety, caller, sopts, q ? &held : nullptr);
  if (!safe) return undo(safe.error(), "safety snapshot failed: " + safe.error().message());
  report.safety = safety;
  report.consistency = safe->consistency;
  report.busy = safe->busy;
  j.data["safety"] = safety;
  (void)journal_update(jid, 0, j.data.dump());
  crash_point("restore", "safety");

  // A server that exited since the quiesce (kill -9) let its databases go,
  // and one mounted in its place holds nothing: its writers would commit into
  // the tree about to be discarded.  Nothing swapped yet: undone, the old state.
  if (q) {
    std::string why;
    if (auto h = q->still_held(&why); !h) return undo(h.error(), why);
  }

  // 4. The swap: one atomic exchange per subvolume.
  q_told = q;
  Status st = [&]() -> Status {
    HOODY_TRY(wfd, btrfs::open_dir(store_.get(), work.c_str()));
    int n = 0;
    for (const auto& sv : snap_subvols) {
      HOODY_TRY(present, exists(source_.get(), sv));
      if (present) {
        HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd.get(), sv.c_str(),
                                   RENAME_EXCHANGE));
      } else {
        HOODY_CHECK(sys::renameat2(wfd.get(), sv.c_str(), source_.get(), sv.c_str(),
                                   RENAME_NOREPLACE));
      }
      if (++n == 1) crash_point("restore", "exchange-1");
    }
    for (const auto& x : extra)
      HOODY_CHECK(
          sys::renameat2(source_.get(), x.c_str(), wfd.get(), x.c_str(), RENAME_NOREPLACE));
    crash_point("restore", "exchanged");
    return {};
  }();
  if (!st) return undo(st.error(), "exchange: " + st.error().message());

  // 5. Commit: from here on recovery finishes instead of undoing.
  Status committed = [&]() -> Status {
    std::lock_guard dl(db_mu_);
    sql::Stmt q1(db_, "UPDATE journal SET step = 1 WHERE id = ?");
    q1.bind(1, jid);
    return q1.run();
  }();
  if (!committed) {
    lg->error("op=restore name={} -> commit failed: {}", quote_name(name),
              committed.error().message());
    return undo(committed.error(), "commit failed: " + committed.error().message());
  }
  crash_point("restore", "committed");
  auto t_swap = std::chrono::steady_clock::now();
  ShareWake shares = wake_share_daemons(source_.get());

  // 6. Each server follows: when replaced() returns it serves the restored
  // subvolume, has dropped every inode of the old tree and what the kernel
  // cached of it; handles opened before now fail (EIO) instead of writing
  // into the old tree.
  std::vector<Holder> stale;
  std::string not_followed;
  if (q) {
    for (const auto& sv : live) {
      std::string why;
      auto r = q->replaced(sv, &why);
      if (r) {
        merge(stale, *r);
      } else {
        lg->error("op=restore name={} subvolume={} -> its server did not confirm that it serves "
                  "the restored subvolume: {}",
                  quote_name(name), sv, why.empty() ? r.error().message() : why);
        not_followed += (not_followed.empty() ? "" : "; ") + (why.empty() ? sv : why);
      }
    }
  }
  crash_point("restore", "replaced");
  hold.release();  // 7. resume
  report.quiesced_ms = q ? ms(tq, std::chrono::steady_clock::now()) : 0;
  crash_point("restore", "resumed");
  wait_share_daemons(shares, name);
  reattach_mounts(source_.get(), work);
  // The processes still in the old live subvolumes (a file, a cwd or a root
  // through a bind mount such as /hoody/storage), as the servers' lists do
  // for the files opened through them.
  merge(stale, processes_using(live_devs, q ? q->server_pids() : std::vector<pid_t>{}));
  report.holders = stale;
  std::string result = "ok; safety snapshot " + safety;
  if (!stale.empty())
    result += "; still using the state before the restore (restart them): " + describe(stale);
  if (!not_followed.empty()) result = "EIO: restored, but " + not_followed;
  {
    std::lock_guard dl(db_mu_);
    (void)audit(caller, "restore", name, result);
  }
  if (!stale.empty())
    lg->warn("op=restore name={} -> processes still using the state before the restore "
             "(restart them): {}",
             quote_name(name), describe(stale));

  // 8. The old live subvolumes go (now, or at the next recover()).  Not while
  // a server may still serve them: then they wait for the next recover().
  bool delete_now = opts.delete_old_now && not_followed.empty();
  if (delete_now) {
    if (auto s = purge_restored(work); !s) {
      lg->warn("op=restore name={} -> old live subvolumes not deleted yet ({}); retried by "
               "recover()",
               quote_name(name), s.error().message());
    } else {
      crash_point("restore", "deleted");
      (void)journal_end(jid);
    }
  }
  report.ms = ms(t0, std::chrono::steady_clock::now());
  lg->info("op=restore name={} safety={} subvolumes={} uid={} consistency={} -> {}; swap {:.1f} "
           "ms, databases={} held {:.1f} ms, total {:.1f} ms{}",
           quote_name(name), safety, snap_subvols.size(), caller.uid, report.consistency,
           not_followed.empty() ? "ok" : "EIO", ms(t0, t_swap), held.databases,
           report.quiesced_ms, report.ms, delete_now ? "" : ", deletion deferred");
  if (!not_followed.empty()) {
    report.error = "restored to " + quote_name(name) + ", but " + not_followed +
                   ": restart that hoody-dbfs (umount, mount) before using its databases";
    return fail(EIO);
  }
  return {};
}

// Delete the old live subvolumes of a committed restore, unless one is still
// the root of a mount here (EBUSY: re-mount the new one first, then recover()).
Status SnapshotStore::purge_restored(const std::string& work) {
  reattach_mounts(source_.get(), work);  // also after a crash past the commit
  if (mounted_beneath(work)) {
    log::get("snap")->warn(
        "op=restore dir={} -> an old live subvolume is still mounted (a bind mount of the "
        "state before the restore); re-mount the restored subvolume, then recover()",
        work);
    return fail(EBUSY);
  }
  return purge(work.c_str(), "restore");
}

// Undo or finish a restore (see the top of snapshot_store.hpp).
Status SnapshotStore::recover_restore(const Journal& j, bool roll_back) {
  const std::string work = kRestorePrefix + j.data.value("opid", std::string());
  if (j.step >= 1) return purge_restored(work);

  auto wfd = sys::openat(store_.get(), work.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  if (!wfd) return wfd.err() == ENOENT ? Status() : fail(wfd.error());
  // Which of the copies are live already (the exchanges done)?
  std::vector<std::string> live_copies, waiting;
  if (j.data.contains("copies")) {
    for (auto& [sv, copy_uuid] : j.data["copies"].items()) {
      auto live = btrfs::open_dir(source_.get(), sv.c_str());
      if (!live && live.err() != ENOENT) return fail(live.error());
      bool is_copy = false;
      if (live) {
        HOODY_TRY(li, btrfs::info(live->get()));
        is_copy = li.uuid == copy_uuid.get<std::string>();
      }
      (is_copy ? live_copies : waiting).push_back(sv);
    }
  }
  const auto extra = j.data.value("extra", std::vector<std::string>());
  if (!roll_back && !live_copies.empty() && j.data.contains("safety")) {
    // Finish: the remaining exchanges, the extra subvolumes out, the commit.
    int n = 0;
    for (const auto& sv : waiting) {
      HOODY_TRY(present, exists(source_.get(), sv));
      if (present) {
        HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd->get(), sv.c_str(),
                                   RENAME_EXCHANGE));
      } else {
        HOODY_CHECK(sys::renameat2(wfd->get(), sv.c_str(), source_.get(), sv.c_str(),
                                   RENAME_NOREPLACE));
      }
      if (++n == 1) crash_point("recover", "forward-1");
    }
    for (const auto& x : extra) {
      HOODY_TRY(in_work, exists(wfd->get(), x));
      HOODY_TRY(in_live, exists(source_.get(), x));
      if (in_live && !in_work)
        HOODY_CHECK(
            sys::renameat2(source_.get(), x.c_str(), wfd->get(), x.c_str(), RENAME_NOREPLACE));
    }
    wfd->reset();
    HOODY_CHECK(journal_update(j.id, 1, j.data.dump()));
    log::get("snap")->warn("op=recover journal={} name={} -> the restore had begun its exchanges: "
                           "finished ({} more exchanged)",
                           j.id, quote_name(j.name), waiting.size());
    return purge_restored(work);
  }
  for (const auto& sv : live_copies) {
    HOODY_TRY(old_there, exists(wfd->get(), sv));
    if (old_there) {
      HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd->get(), sv.c_str(),
                                 RENAME_EXCHANGE));
    } else {
      HOODY_CHECK(sys::renameat2(source_.get(), sv.c_str(), wfd->get(), sv.c_str(),
                                 RENAME_NOREPLACE));
    }
  }
  for (const auto& x : extra) {
    HOODY_TRY(in_work, exists(wfd->get(), x));
    HOODY_TRY(in_live, exists(source_.get(), x));
    if (in_work && !in_live)
      HOODY_CHECK(
          sys::renameat2(wfd->get(), x.c_str(), source_.get(), x.c_str(), RENAME_NOREPLACE));
  }
  wfd->reset();
  // Only the writable copies are left in the work directory now.
  return purge(work.c_str(), nullptr);
}

}  // namespace hoody::snapfs
