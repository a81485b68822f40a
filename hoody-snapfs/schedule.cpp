// Scheduled snapshots: .hoody/schedule and the background thread's step.
//
// Every prune_interval (and at once after the schedule is set) the
// background thread runs schedule_once(now): when a new slot of the schedule
// has begun (slots are multiples of `every` since the epoch: hourly on the
// hour, daily at 00:00 UTC) it takes the snapshot "auto-<slot UTC>" of type
// "scheduled", unless onchange is set and no scope subvolume's generation
// moved since the last one; then it deletes the scheduled snapshots the
// preserve policy does not keep (store/retention.hpp).  Snapshots of any
// other type are never touched by the schedule.
#include <chrono>

#include "fs.hpp"
#include "hoody/log.hpp"
#include "hoody/names.hpp"
#include "store/format.hpp"
#include "store/retention.hpp"

namespace hoody::snapfs {

Result<std::string> Fs::schedule_text() {
  HOODY_TRY(st, store_->schedule_state());
  std::optional<TimePoint> checked;
  if (int64_t c = schedule_checked_.load(); c != INT64_MIN)
    if (auto t = time_point(c)) checked = *t;
  return schedule_json(st, checked);
}

Status Fs::set_schedule(const Who& c, std::string_view request) {
  if (!allowed(c)) {
    audit(c, "schedule", "", EPERM, "",
          "uid " + std::to_string(c.uid) + " is not root nor in allow_users/allow_groups");
    return fail(EPERM);
  }
  std::string why;
  auto req = parse_schedule_request(request, &why);
  if (!req) {
    audit(c, "schedule", "", EINVAL, std::string(request.substr(0, 128)), why);
    return fail(EINVAL);
  }
  Schedule s = req->value_or(Schedule{});
  HOODY_CHECK(store_->set_schedule(s, c.store()));
  if (s.on()) schedule_soon();
  return {};
}

void Fs::schedule_once(TimePoint t) {
  auto lg = log::get("snap");
  auto st = store_->schedule_state();
  if (!st) {
    lg->warn("op=schedule -> cannot read the schedule: {}", st.error().message());
    return;
  }
  const Schedule& sc = st->schedule;
  if (!sc.on()) return;
  Who daemon{0, 0, static_cast<int32_t>(::getpid()), {}};
  const TimePoint slot = slot_start(t, sc.every);
  if (!st->last_slot || slot > *st->last_slot) {
    auto gens = store_->generations();
    if (!gens) lg->warn("op=schedule -> generations: {}", gens.error().message());
    const std::string name = scheduled_name(slot);
    if (auto have = store_->get(name); have && have->type == kTypeScheduled) {
      // Taken already (the schedule was set again within this slot); no
      // generations kept: the next slot is taken whatever onchange says.
      (void)store_->schedule_done(slot, {}, false);
    } else if (sc.onchange && gens && !st->generations.empty() && *gens == st->generations) {
      lg->info("op=schedule slot={} -> skipped: no scope subvolume changed (onchange)",
               format_utc(slot));
      (void)store_->schedule_done(slot, *gens, false);
    } else {
      CreateOptions opts;
      opts.type = kTypeScheduled;
      opts.description = "every " + format_duration(sc.every);
      auto made = take_snapshot(name, daemon, opts);
      if (made) {
        changed();
        done(daemon, "create", name, 0, kTypeScheduled);
        // Read after the snapshot: taking it is no change to skip the next one for.
        auto after = store_->generations();
        (void)store_->schedule_done(slot, after ? *after : std::map<std::string, uint64_t>{}, true);
      } else {
        // Not retried every tick: the slot is done, the store audited why.  No
        // generations kept: the next slot is taken whatever onchange says.
        lg->warn("op=schedule slot={} name={} -> {}", format_utc(slot), quote_name(name),
                 made.error().message());
        (void)store_->schedule_done(slot, {}, false);
      }
    }
  }
  auto pruned = store_->prune_scheduled(t, sc.preserve, daemon.store());
  if (!pruned) {
    lg->warn("op=schedule -> prune: {}", pruned.error().message());
    return;
  }
  for (auto& n : *pruned) {
    done(daemon, "prune", n, 0, "", "schedule: " + format_preserve(sc.preserve));
    removed(n);
  }
  if (!pruned->empty()) {
    changed();
    forget_names(*pruned);
  }
}

}  // namespace hoody::snapfs
