// SnapshotStore: the schedule kept in index.db and the pruning of scheduled
// snapshots (the retention rules themselves are pure: retention.cpp).
#include <nlohmann/json.hpp>

#include "hoody/btrfs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "retention.hpp"
#include "snapshot_store.hpp"
#include "store_detail.hpp"

namespace hoody::snapfs {

using json = nlohmann::json;
using namespace detail;

Result<ScheduleState> SnapshotStore::schedule_state() const {
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_,
              "SELECT every, preserve, preserve_min, onchange, last_slot, last_taken, generations "
              "FROM schedule WHERE id = 1");
  HOODY_TRY(row, q.step());
  ScheduleState st;
  if (!row) return st;
  st.schedule.every = std::chrono::seconds(q.int64(0));
  if (st.schedule.on()) {
    std::string why;
    auto p = parse_preserve(q.text(1), &why);
    if (!p) {
      log::get("snap")->error("op=schedule preserve={} -> {}; the schedule is off until it is set",
                              quote_name(q.text(1)), why);
      st.schedule.every = std::chrono::seconds(0);
    } else {
      st.schedule.preserve = *p;
    }
  }
  st.schedule.preserve.min = std::chrono::seconds(q.int64(2));
  st.schedule.onchange = q.int64(3) != 0;
  if (auto v = q.opt_int64(4)) st.last_slot = from_ns(*v);
  if (auto v = q.opt_int64(5)) st.last_taken = from_ns(*v);
  try {
    const json g = json::parse(q.text(6));
    if (g.is_object())
      for (auto it = g.begin(); it != g.end(); ++it)
        if (it->is_number_unsigned()) st.generations[it.key()] = it->get<uint64_t>();
  } catch (const std::exception&) {
    // Forgotten generations only cost one snapshot that onchange would have skipped.
  }
  return st;
}

Status SnapshotStore::set_schedule(const Schedule& s, const Caller& caller) {
  std::lock_guard lock(db_mu_);
  sql::Txn txn(db_);
  HOODY_CHECK(txn.begin());
  // A new schedule starts afresh: its first slot is taken at once.
  sql::Stmt q(db_,
              "UPDATE schedule SET every = ?, preserve = ?, preserve_min = ?, onchange = ?, "
              "last_slot = NULL, generations = '{}' WHERE id = 1");
  q.bind(1, static_cast<int64_t>(s.every.count()))
      .bind(2, s.on() ? format_preserve(s.preserve) : std::string())
      .bind(3, static_cast<int64_t>(s.preserve.min.count()))
      .bind(4, static_cast<int64_t>(s.onchange ? 1 : 0));
  HOODY_CHECK(q.run());
  std::string what = "off";
  if (s.on()) {
    what = "every " + format_duration(s.every) + " preserve " + format_preserve(s.preserve);
    if (s.preserve.min.count() > 0) what += " preserve_min " + format_duration(s.preserve.min);
    if (s.onchange) what += " onchange";
  }
  HOODY_CHECK(audit(caller, "schedule", "", "ok", what));
  HOODY_CHECK(txn.commit());
  log::get("snap")->info("op=schedule uid={} -> {}", caller.uid, what);
  return {};
}

Status SnapshotStore::schedule_done(TimePoint slot, const std::map<std::string, uint64_t>& gens,
                                    bool taken) {
  json g = json::object();
  for (auto& [k, v] : gens) g[k] = v;
  std::lock_guard lock(db_mu_);
  sql::Stmt q(db_, taken ? "UPDATE schedule SET last_slot = ?, generations = ?, last_taken = ? "
                           "WHERE id = 1"
                         : "UPDATE schedule SET last_slot = ?, generations = ? WHERE id = 1");
  q.bind(1, to_ns(slot)).bind(2, std::string_view(g.dump()));
  if (taken) q.bind(3, to_ns(now()));
  return q.run();
}

Result<std::map<std::string, uint64_t>> SnapshotStore::generations() const {
  // Commit first: data written since the last commit (up to 30 s of it) has
  // not moved a generation yet, and must not read as "nothing changed".
  HOODY_CHECK(btrfs::sync(source_.get()));
  HOODY_TRY(subvols, scope());
  std::map<std::string, uint64_t> out;
  for (const auto& sv : subvols) {
    HOODY_TRY(fd, btrfs::open_dir(source_.get(), sv.c_str()));
    HOODY_TRY(info, btrfs::info(fd.get()));
    out[sv] = info.generation;
  }
  return out;
}

Result<std::vector<std::string>> SnapshotStore::prune_scheduled(TimePoint when, const Preserve& p,
                                                                const Caller& caller) {
  std::lock_guard lock(op_mu_);
  std::vector<Dated> scheduled;
  {
    std::lock_guard dl(db_mu_);
    // Only the schedule's own snapshots: manual ones and restore's safety
    // snapshots are never touched by it, nor a scheduled one renamed out of
    // auto-* (the way to keep one).
    sql::Stmt q(db_, "SELECT name, created FROM snapshots WHERE type = ? ORDER BY created, name");
    q.bind(1, std::string_view(kTypeScheduled));
    for (;;) {
      HOODY_TRY(row, q.step());
      if (!row) break;
      std::string name = q.text(0);
      if (name.rfind(kScheduledPrefix, 0) != 0) continue;
      scheduled.push_back({std::move(name), from_ns(q.int64(1))});
    }
  }
  std::vector<std::string> pruned;
  const std::string why = "schedule " + format_preserve(p);
  for (const auto& n : to_prune(std::move(scheduled), when, p)) {
    auto s = remove_locked(n, caller, "prune", why);
    if (s) {
      pruned.push_back(n);
    } else if (s.err() != ENOENT) {
      return fail(s.error());
    }
  }
  if (!pruned.empty())
    log::get("snap")->info("op=prune-scheduled count={} policy=\"{}\" -> ok", pruned.size(),
                           format_preserve(p));
  return pruned;
}

}  // namespace hoody::snapfs
