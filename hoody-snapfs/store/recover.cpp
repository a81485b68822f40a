// SnapshotStore: recovery of journaled operations at start-up.
#include "snapshot_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "crash.hpp"
#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "hoody/sys.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

Status SnapshotStore::recover_one(const Journal& j) {
  if (j.op == "create") return undo_create(j);
  if (j.op == "remove") return finish_remove(j.uuid);
  if (j.op == "restore") return recover_restore(j);
  if (j.op == "receive") return undo_receive(j);
  log::get("snap")->warn("op=recover journal={} kind={} -> unknown, dropped", j.id, j.op);
  return {};
}

Status SnapshotStore::recover() {
  std::lock_guard lock(op_mu_);
  auto lg = log::get("snap");
  std::vector<Journal> pending;
  {
    std::lock_guard dl(db_mu_);
    sql::Stmt q(db_, "SELECT id, op, name, uuid, step, data FROM journal ORDER BY id");
    for (;;) {
      HOODY_TRY(row, q.step());
      if (!row) break;
      Journal j{q.int64(0), q.text(1), q.text(2), q.text(3), static_cast<int>(q.int64(4)), {}};
      j.data = json::parse(q.text(5), nullptr, /*allow_exceptions=*/false);
      if (j.data.is_discarded()) j.data = json::object();
      pending.push_back(std::move(j));
    }
  }
  // Newest first: a restore journaled after its safety snapshot's create is
  // undone before that create is looked at.
  std::reverse(pending.begin(), pending.end());
  Caller self{::geteuid(), ::getpid()};
  for (const auto& j : pending) {
    auto s = recover_one(j);
    if (!s && s.err() == EINPROGRESS) continue;  // a receive of another process, still running
    std::string what = j.op + " step " + std::to_string(j.step);
    if (s) {
      (void)journal_end(j.id);
      lg->warn("op=recover journal={} kind={} name={} step={} -> {}", j.id, j.op,
               quote_name(j.name), j.step,
               j.op == "create" ? "undone" : (j.op == "restore" && j.step == 0 ? "recovered" : "finished"));
      audit_result(self, "recover", j.name, Errno(), {});
    } else {
      lg->error("op=recover journal={} kind={} name={} -> {}; left for the next start", j.id, j.op,
                quote_name(j.name), s.error().message());
      audit_result(self, "recover", j.name, s.error(), what);
    }
  }
  // Work directories without a journal entry are leftovers (a purge that
  // failed after its entry ended): they hold nothing listed, so they go.  Not
  // while an entry is still pending: its work directory may hold live data.
  // Interrupted receives (their staging directories are locked while they run).
  if (auto r = recover_receives(); !r) lg->error("op=recover receives -> {}", r.error().message());
  HOODY_TRY(left, pending_operations());
  if (left > 0) return {};
  HOODY_TRY(dir, sys::opendir_at(store_.get(), "."));
  std::vector<std::string> stray;
  std::set<std::string> listed;
  {
    HOODY_TRY(all, list());
    for (auto& s : all) listed.insert(s.uuid);
  }
  for (;;) {
    errno = 0;
    struct dirent* e = ::readdir(dir.get());
    if (!e) break;
    std::string_view n = e->d_name;
    if (n == "." || n == ".." || n == kLockFile || n.substr(0, 8) == kIndexDb) continue;
    bool work = n.rfind(kStagingPrefix, 0) == 0 || n.rfind(kTrashPrefix, 0) == 0 ||
                n.rfind(kRestorePrefix, 0) == 0 || n.rfind(kDiffPrefix, 0) == 0;
    if (work) stray.emplace_back(n);
    else if (n.empty() || n[0] != '.') {
      if (!listed.count(std::string(n)))
        lg->warn("op=recover dir={} -> not in the index; left alone", n);
    }
  }
  for (const auto& n : stray) {
    lg->warn("op=recover dir={} -> stray work directory, deleted", n);
    if (auto s = purge(n.c_str(), nullptr); !s)
      lg->error("op=recover dir={} -> {}", n, s.error().message());
  }
  return {};
}

}  // namespace hoody::snapfs
