#include "diff_cache.hpp"

#include <malloc.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>

#include "hoody/log.hpp"

namespace hoody::snapfs {

bool Reader::may_search(const DirMode& d) const {
  if (uid == 0) return true;  // CAP_DAC_OVERRIDE searches any directory
  if (!d.dir) return false;
  if (uid == d.uid) return (d.mode & S_IXUSR) != 0;
  if (gid == d.gid || std::find(groups.begin(), groups.end(), d.gid) != groups.end())
    return (d.mode & S_IXGRP) != 0;
  return (d.mode & S_IXOTH) != 0;
}

bool trim_heap(std::size_t freed) {
  if (freed < kTrimThreshold) return false;
  ::malloc_trim(0);
  return true;
}

std::shared_ptr<const std::string> share_text(std::string&& text) {
  return std::shared_ptr<const std::string>(new std::string(std::move(text)),
                                            [](const std::string* s) {
                                              std::size_t n = s->capacity();
                                              delete s;
                                              trim_heap(n);
                                            });
}

// ---- DiffText -----------------------------------------------------------------

namespace {
std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? std::string() : path.substr(0, slash);
}
}  // namespace

std::shared_ptr<const DiffText> DiffText::build(const std::vector<send::Change>& changes,
                                                const StatDir& stat_old,
                                                const StatDir& stat_new) {
  std::shared_ptr<DiffText> t(new DiffText());
  std::string text;
  t->lines_.reserve(changes.size());
  struct Side {
    const StatDir& stat;
    std::vector<Dir>& dirs;
    std::unordered_map<std::string, uint32_t> ids;
    // The index of directory `path` ("" is the top: kTop), parents first.
    uint32_t intern(const std::string& path) {
      if (path.empty()) return kTop;
      if (auto it = ids.find(path); it != ids.end()) return it->second;
      uint32_t parent = intern(parent_of(path));
      auto id = static_cast<uint32_t>(dirs.size());
      dirs.push_back({parent, stat(path)});
      ids.emplace(path, id);
      return id;
    }
  };
  Side old_side{stat_old, t->old_dirs_, {}};
  Side new_side{stat_new, t->new_dirs_, {}};
  for (const auto& c : changes) {
    Line l;
    l.off = text.size();
    text += send::format(c);
    text += '\n';
    l.len = static_cast<uint32_t>(text.size() - l.off);
    switch (c.kind) {
      case send::ChangeKind::added: l.new_dir = new_side.intern(parent_of(c.path)); break;
      case send::ChangeKind::removed: l.old_dir = old_side.intern(parent_of(c.path)); break;
      case send::ChangeKind::modified:
      case send::ChangeKind::not_captured:  // shown as an M line is
        l.old_dir = old_side.intern(parent_of(c.path));
        l.new_dir = new_side.intern(parent_of(c.path));
        break;
      case send::ChangeKind::renamed:
        l.old_dir = old_side.intern(parent_of(c.path));
        l.new_dir = new_side.intern(parent_of(c.to));
        break;
    }
    t->lines_.push_back(l);
  }
  text.shrink_to_fit();
  t->text_ = share_text(std::move(text));
  t->old_dirs_.shrink_to_fit();
  t->new_dirs_.shrink_to_fit();
  return t;
}

DiffText::~DiffText() {
  std::size_t n = lines_.capacity() * sizeof(Line) +
                  (old_dirs_.capacity() + new_dirs_.capacity()) * sizeof(Dir);
  lines_ = {};
  old_dirs_ = {};
  new_dirs_ = {};
  trim_heap(n);  // the text trims itself when its last reader lets go
}

std::size_t DiffText::bytes() const {
  return (text_ ? text_->capacity() : 0) + lines_.capacity() * sizeof(Line) +
         (old_dirs_.capacity() + new_dirs_.capacity()) * sizeof(Dir) + sizeof(DiffText);
}

std::vector<bool> DiffText::reachable(const std::vector<Dir>& dirs, const Reader& r) {
  std::vector<bool> ok(dirs.size());
  for (std::size_t i = 0; i < dirs.size(); ++i) {
    const Dir& d = dirs[i];  // a parent comes before its children
    ok[i] = (d.parent == kTop || ok[d.parent]) && r.may_search(d.mode);
  }
  return ok;
}

std::shared_ptr<const std::string> DiffText::text_for(const Reader& r) const {
  if (r.uid == 0) return text_;
  auto ok_old = reachable(old_dirs_, r);
  auto ok_new = reachable(new_dirs_, r);
  auto all = [](const std::vector<bool>& v) {
    return std::all_of(v.begin(), v.end(), [](bool b) { return b; });
  };
  if (all(ok_old) && all(ok_new)) return text_;
  auto seen = [](uint32_t dir, const std::vector<bool>& ok) {
    return dir == kNone || dir == kTop || ok[dir];
  };
  std::vector<uint32_t> groups = r.groups;
  std::sort(groups.begin(), groups.end());
  groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
  std::string who = std::to_string(r.uid) + ":" + std::to_string(r.gid);
  for (auto g : groups) who += "," + std::to_string(g);
  // Under m_ so that concurrent readers of the same ids filter once.
  std::lock_guard g(m_);
  if (auto it = filtered_.find(who); it != filtered_.end())
    if (auto s = it->second.lock()) return s;
  std::erase_if(filtered_, [](const auto& kv) { return kv.second.expired(); });
  std::string out;
  for (const Line& l : lines_)
    if (seen(l.old_dir, ok_old) && seen(l.new_dir, ok_new)) out.append(*text_, l.off, l.len);
  if (out.size() == text_->size()) return text_;
  auto s = share_text(std::move(out));
  filtered_[who] = s;
  return s;
}

// ---- DiffCache ----------------------------------------------------------------

DiffCache::DiffCache(DiffCacheOptions opts, Runner run) : opts_(opts), run_(std::move(run)) {}

DiffCache::~DiffCache() {
  std::unique_lock g(m_);
  queue_.clear();
  cv_.wait(g, [this] { return jobs_ == 0; });
}

DiffCache::Ticket DiffCache::ticket() {
  std::lock_guard g(m_);
  Ticket t = next_ticket_++;
  live_tickets_.insert(t);
  return t;
}

void DiffCache::interrupt(Ticket t) {
  {
    std::lock_guard g(m_);
    if (!live_tickets_.count(t)) return;  // its get() has answered
    interrupted_.insert(t);
  }
  cv_.notify_all();
}

std::vector<DiffCache::EntryPtr> DiffCache::take_startable() {
  std::vector<EntryPtr> out;
  while (stats_.running < std::max<std::size_t>(1, opts_.max_running) && !queue_.empty()) {
    EntryPtr e = std::move(queue_.front());
    queue_.pop_front();
    e->state = Entry::State::running;
    ++stats_.running;
    ++jobs_;
    ++stats_.computed;
    out.push_back(std::move(e));
  }
  stats_.queued = queue_.size();
  return out;
}

void DiffCache::start(std::vector<EntryPtr> entries) {
  for (auto& e : entries) run_([this, e] { run_one(e); });
}

DiffCache::EntryPtr DiffCache::uncache(std::unordered_map<std::string, EntryPtr>::iterator it) {
  EntryPtr e = it->second;
  entries_.erase(it);
  stats_.bytes -= e->value->bytes();
  --stats_.entries;
  e->cached = false;
  return e;
}

std::vector<std::shared_ptr<const DiffText>> DiffCache::evict_over_budget() {
  std::vector<std::shared_ptr<const DiffText>> out;
  while (stats_.bytes > opts_.budget && !lru_.empty()) {
    auto it = entries_.find(lru_.back());
    lru_.pop_back();
    if (it == entries_.end()) continue;
    EntryPtr e = uncache(it);
    ++stats_.evicted;
    // A copy: a waiter woken by this entry may not have taken its value yet.
    out.push_back(e->value);
    log::get("snap")->debug("op=diff_cache key={} -> evicted", e->key);
  }
  return out;
}

void DiffCache::run_one(const EntryPtr& e) {
  auto t0 = std::chrono::steady_clock::now();
  Result<std::shared_ptr<const DiffText>> r = e->compute();
  // The computation's own buffers (send stream, parsed commands) are gone.
  trim_heap(kTrimThreshold);
  auto took = std::chrono::steady_clock::now() - t0;
  double ms = std::chrono::duration<double, std::milli>(took).count();
  if (r)
    log::get("snap")->debug("op=diff_compute key={} lines={} bytes={} ms={:.1f} -> ok", e->key,
                            (*r)->lines(), (*r)->bytes(), ms);
  else
    log::get("snap")->debug("op=diff_compute key={} ms={:.1f} -> {}", e->key, ms,
                            r.error().message());
  std::vector<std::shared_ptr<const DiffText>> dropped;
  std::vector<EntryPtr> next;
  Compute done_fn;
  {
    std::lock_guard g(m_);
    done_fn = std::move(e->compute);
    e->state = Entry::State::done;
    --stats_.running;
    if (r) e->value = std::move(*r);
    else e->err = r.error();
    auto it = entries_.find(e->key);
    bool mine = it != entries_.end() && it->second == e;
    if (r && e->keep && e->value->bytes() <= opts_.budget && mine) {
      lru_.push_front(e->key);
      e->lru = lru_.begin();
      e->cached = true;
      e->used = std::chrono::steady_clock::now();
      stats_.bytes += e->value->bytes();
      ++stats_.entries;
      dropped = evict_over_budget();
    } else if (mine) {
      entries_.erase(it);  // its waiters hold it
    }
    next = take_startable();
  }
  cv_.notify_all();
  dropped.clear();
  done_fn = nullptr;
  start(std::move(next));
  // The last touch of *this: the destructor may return once jobs_ is 0.
  std::lock_guard g(m_);
  --jobs_;
  cv_.notify_all();
}

Result<std::shared_ptr<const DiffText>> DiffCache::get(const std::string& key, bool keep,
                                                       Ticket t, Compute compute) {
  std::unique_lock g(m_);
  auto finish = [&] {
    live_tickets_.erase(t);
    interrupted_.erase(t);
  };
  EntryPtr e;
  if (auto it = entries_.find(key); it != entries_.end()) {
    e = it->second;
    if (e->cached) {
      ++stats_.hits;
      e->used = std::chrono::steady_clock::now();
      lru_.splice(lru_.begin(), lru_, e->lru);
      finish();
      return e->value;
    }
    ++stats_.joined;
  } else {
    e = std::make_shared<Entry>();
    e->key = key;
    e->keep = keep;
    e->compute = std::move(compute);
    entries_.emplace(key, e);
    queue_.push_back(e);
    stats_.queued = queue_.size();
  }
  // Counted before m_ is let go below: a queued entry nobody waits for is dropped.
  ++e->waiters;
  auto startable = take_startable();
  if (!startable.empty()) {
    g.unlock();
    start(std::move(startable));
    g.lock();
  }
  cv_.wait(g, [&] { return e->state == Entry::State::done || interrupted_.count(t); });
  --e->waiters;
  if (e->state != Entry::State::done) {
    ++stats_.interrupted;
    if (e->state == Entry::State::queued && e->waiters == 0) {
      std::erase(queue_, e);
      stats_.queued = queue_.size();
      if (auto it = entries_.find(key); it != entries_.end() && it->second == e) entries_.erase(it);
      log::get("snap")->debug("op=diff_cache key={} -> dropped from the queue: nobody waits", key);
    }
    finish();
    return fail(EINTR);
  }
  finish();
  if (!e->value) return fail(e->err);
  return e->value;
}

DiffCache::Stats DiffCache::stats() const {
  std::lock_guard g(m_);
  return stats_;
}

void DiffCache::clear() {
  std::vector<std::shared_ptr<const DiffText>> dropped;
  {
    std::lock_guard g(m_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      if (it->second->cached) {
        it->second->cached = false;
        dropped.push_back(it->second->value);
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
    lru_.clear();
    stats_.bytes = 0;
    stats_.entries = 0;
  }
}

void DiffCache::drop_idle(std::chrono::steady_clock::time_point now) {
  std::vector<std::shared_ptr<const DiffText>> dropped;
  {
    std::lock_guard g(m_);
    // lru_ is in order of use: the idle ones are at its end.
    while (!lru_.empty()) {
      auto it = entries_.find(lru_.back());
      if (it != entries_.end() && now - it->second->used < opts_.idle) break;
      lru_.pop_back();
      if (it == entries_.end()) continue;
      EntryPtr e = uncache(it);
      ++stats_.expired;
      dropped.push_back(e->value);
      log::get("snap")->debug("op=diff_cache key={} -> dropped, unused", e->key);
    }
  }
}

}  // namespace hoody::snapfs
