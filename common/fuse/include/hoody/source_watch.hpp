// SourceWatch: tells a daemon when the directory at its SOURCE path was
// replaced, e.g. by a snapshot restore that swaps subvolumes with
// renameat2(RENAME_EXCHANGE).  An inotify watch on SOURCE's parent sees the
// moves, creations and deletions of SOURCE's name; `changed` runs on the
// watch's own thread after each such event (never concurrently with itself).
#pragma once

#include <functional>
#include <string>
#include <thread>

#include "hoody/unique_fd.hpp"

namespace hoody {

class SourceWatch {
public:
  SourceWatch(const std::string& source, std::function<void()> changed);
  ~SourceWatch();
  SourceWatch(const SourceWatch&) = delete;
  SourceWatch& operator=(const SourceWatch&) = delete;
  bool active() const { return thread_.joinable(); }

private:
  void run();
  std::string name_;
  std::function<void()> changed_;
  UniqueFd inotify_;
  UniqueFd stop_;  // eventfd
  std::thread thread_;
};

}  // namespace hoody
