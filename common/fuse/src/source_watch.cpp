#include "hoody/source_watch.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cstring>

#include "hoody/log.hpp"

namespace hoody {

SourceWatch::SourceWatch(const std::string& source, std::function<void()> changed)
    : changed_(std::move(changed)) {
  std::string path = source;
  while (path.size() > 1 && path.back() == '/') path.pop_back();
  auto slash = path.rfind('/');
  std::string parent = slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
  name_ = slash == std::string::npos ? path : path.substr(slash + 1);
  inotify_.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
  if (!inotify_ || ::inotify_add_watch(inotify_.get(), parent.c_str(),
                                       IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                                           IN_ONLYDIR) < 0) {
    log::get("fuse")->warn("cannot watch {} for a replaced source: {} (a restore will need a "
                           "remount)", parent, std::strerror(errno));
    return;
  }
  stop_.reset(::eventfd(0, EFD_CLOEXEC));
  thread_ = std::thread([this] { run(); });
}

SourceWatch::~SourceWatch() {
  if (!thread_.joinable()) return;
  uint64_t one = 1;
  if (::write(stop_.get(), &one, sizeof one) < 0) {
  }
  thread_.join();
}

void SourceWatch::run() {
  alignas(inotify_event) char buf[8192];
  for (;;) {
    pollfd p[2] = {{inotify_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    bool hit = false;
    for (;;) {
      ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
      if (n <= 0) break;
      for (char* q = buf; q < buf + n;) {
        auto* ev = reinterpret_cast<inotify_event*>(q);
        if (ev->len && name_ == ev->name) hit = true;
        q += sizeof(inotify_event) + ev->len;
      }
    }
    if (hit) changed_();
  }
}

}  // namespace hoody
