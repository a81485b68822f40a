// The diffs of .hoody/diff/A..B, computed once and shared (no FUSE, no BTRFS):
//
//  - DiffText: one computed diff, immutable: its text ("+ path\n" ...) in one
//    shared buffer, and for each line the directories a reader must be able to
//    search to see it.  text_for(reader) gives the lines that reader may see:
//    the shared buffer itself when nothing is hidden from it.
//  - DiffCache: DiffTexts by the identity of their two sides.  Concurrent gets
//    of one key wait for one computation; at most max_running distinct
//    computations run at once (the others queue); finished diffs are kept
//    within a byte budget, least recently used out first.  A waiting get
//    answers EINTR when interrupted (the computation goes on for the others).
//
// Memory: an open file holds a shared_ptr to the text it reads, so a diff
// evicted from the cache lives on until its last reader closes.  Freeing a
// large buffer returns the heap to the system (malloc_trim).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "hoody/result.hpp"
#include "hoody/send_stream.hpp"

namespace hoody::snapfs {

// Owner and mode of one directory of a tree.
struct DirMode {
  bool dir = false;  // false: missing or not a directory (searchable by root only)
  uint32_t mode = 0, uid = 0, gid = 0;
};

// Who reads a diff: the caller's ids.
struct Reader {
  uint32_t uid = 0, gid = 0;
  std::vector<uint32_t> groups;  // supplementary
  // Search (x) permission on a directory by the POSIX rules without ACLs: the
  // owner's bits for the owner, the group's for a member of the group (primary
  // or supplementary), the others' for everyone else; root always.
  bool may_search(const DirMode& d) const;
};

// A buffer shared by readers; freeing a large one trims the heap.
std::shared_ptr<const std::string> share_text(std::string&& text);
// malloc_trim(0) when `freed` bytes (or more) were just freed; true if it ran.
bool trim_heap(std::size_t freed);
inline constexpr std::size_t kTrimThreshold = 1 << 20;

class DiffText {
public:
  // The mode of directory `path` ("storage/a") of one tree; asked once per
  // distinct ancestor directory of the changed paths.
  using StatDir = std::function<DirMode(const std::string& path)>;

  // One line per change (send::format).  A line is shown to a reader who can
  // search every ancestor directory of its path in the tree(s) where the path
  // exists: the old tree for `-`, the new tree for `+`, both for `M`, and for
  // `R old -> new` the old path's in the old tree and the new path's in the new.
  static std::shared_ptr<const DiffText> build(const std::vector<send::Change>& changes,
                                               const StatDir& stat_old, const StatDir& stat_new);

  // Every line.
  const std::shared_ptr<const std::string>& text() const { return text_; }
  // The lines `r` may see: text() itself when none is hidden, else a copy
  // shared with the other open readers of the same ids.
  std::shared_ptr<const std::string> text_for(const Reader& r) const;
  std::size_t lines() const { return lines_.size(); }
  // What it holds: text, line table, directory tables.
  std::size_t bytes() const;

  ~DiffText();
  DiffText(const DiffText&) = delete;
  DiffText& operator=(const DiffText&) = delete;

private:
  DiffText() = default;
  static constexpr uint32_t kNone = UINT32_MAX;     // the side does not apply
  static constexpr uint32_t kTop = UINT32_MAX - 1;  // no ancestor: a top-level name
  struct Line {
    uint64_t off = 0;
    uint32_t len = 0;
    uint32_t old_dir = kNone, new_dir = kNone;  // the parent directory in each tree
  };
  struct Dir {
    uint32_t parent = kTop;
    DirMode mode;
  };
  // searchable[i]: r may reach directory i (and search it).
  static std::vector<bool> reachable(const std::vector<Dir>& dirs, const Reader& r);

  std::shared_ptr<const std::string> text_;
  std::vector<Line> lines_;
  std::vector<Dir> old_dirs_, new_dirs_;
  // Filtered copies in use, by reader ids.  Guards filtered_ only; a leaf lock.
  mutable std::mutex m_;
  mutable std::map<std::string, std::weak_ptr<const std::string>> filtered_;
};

struct DiffCacheOptions {
  std::size_t budget = 64u << 20;  // bytes of finished diffs kept
  std::size_t max_running = 2;     // distinct computations at once; more queue
  std::chrono::milliseconds idle{600000};  // drop_idle() drops diffs unused this long
};

class DiffCache {
public:
  using Compute = std::function<Result<std::shared_ptr<const DiffText>>()>;
  // Runs a job on a thread of its own (the daemon's offload()).
  using Runner = std::function<void(std::function<void()>)>;
  using Ticket = uint64_t;

  DiffCache(DiffCacheOptions opts, Runner run);
  // Waits for the computations that run.
  ~DiffCache();
  DiffCache(const DiffCache&) = delete;
  DiffCache& operator=(const DiffCache&) = delete;

  // A ticket for one get(): interrupt(t) makes that get answer EINTR, also
  // when it comes before the get starts waiting.  Every ticket must be passed
  // to get() once.
  Ticket ticket();
  void interrupt(Ticket t);

  // The diff of `key`: the cached one, else the computation in flight for
  // `key` (joined), else `compute` queued; blocks until it is done.  With
  // keep=false (the live state) the result is shared only while in flight,
  // never cached.  A failed computation is not cached: its waiters get its
  // error.  An interrupted get answers EINTR; a queued computation that
  // nobody waits for any more is dropped, a running one finishes.
  Result<std::shared_ptr<const DiffText>> get(const std::string& key, bool keep, Ticket t,
                                              Compute compute);

  struct Stats {
    uint64_t computed = 0;     // computations started
    uint64_t hits = 0;         // gets answered from the cache
    uint64_t joined = 0;       // gets that waited for a computation in flight
    uint64_t interrupted = 0;  // gets answered EINTR
    uint64_t evicted = 0;      // cached diffs dropped for the budget
    uint64_t expired = 0;      // cached diffs dropped by drop_idle()
    std::size_t bytes = 0;     // of the cached diffs
    std::size_t entries = 0;   // cached diffs
    std::size_t running = 0, queued = 0;
  };
  Stats stats() const;
  // Drops every cached diff (open files keep theirs).
  void clear();
  // Drops the cached diffs not used for opts.idle before `now` (the daemon
  // calls it from its background thread): memory goes back when nobody looks.
  void drop_idle(std::chrono::steady_clock::time_point now);

private:
  struct Entry {
    std::string key;
    bool keep = false;
    enum class State { queued, running, done } state = State::queued;
    Compute compute;
    std::shared_ptr<const DiffText> value;
    Errno err;
    std::size_t waiters = 0;
    bool cached = false;
    std::list<std::string>::iterator lru;
    std::chrono::steady_clock::time_point used;  // last get() of a cached entry
  };
  using EntryPtr = std::shared_ptr<Entry>;
  // Entries to start: moved out of queue_ (under m_), started after unlocking.
  std::vector<EntryPtr> take_startable();
  void start(std::vector<EntryPtr> entries);
  void run_one(const EntryPtr& e);
  // Drops least recently used entries until the budget holds; returns them
  // so that they are freed after m_ is released.
  std::vector<std::shared_ptr<const DiffText>> evict_over_budget();
  // Takes a cached entry out of the cache (mu_ held); returns its value, for
  // the caller to free after mu_ is released.
  EntryPtr uncache(std::unordered_map<std::string, EntryPtr>::iterator it);

  const DiffCacheOptions opts_;
  Runner run_;
  // Guards everything below.  A leaf lock: compute and run_ are called
  // without it, and no DiffText is freed under it.
  mutable std::mutex m_;
  std::condition_variable cv_;
  std::unordered_map<std::string, EntryPtr> entries_;  // cached and in flight
  std::deque<EntryPtr> queue_;
  std::list<std::string> lru_;  // cached keys, most recently used first
  std::size_t jobs_ = 0;  // run_one()s started and not yet returned
  Ticket next_ticket_ = 1;
  std::unordered_set<Ticket> live_tickets_, interrupted_;
  Stats stats_;
};

}  // namespace hoody::snapfs
