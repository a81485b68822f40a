// processes_using(): the /proc scan behind a restore's list of processes to
// restart (and `restore --if-idle`).
#include "quiesce.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "hoody/sys.hpp"

namespace hoody::snapfs {

namespace {

bool numeric(const char* s) {
  if (!*s) return false;
  for (; *s; ++s)
    if (*s < '0' || *s > '9') return false;
  return true;
}

// st_dev of what /proc/PID/<name> points at, without asking its filesystem
// (a FUSE server, possibly quiesced or stuck, never sees a request).
bool dev_of(int dir, const char* name, dev_t* dev) {
  struct statx sx {};
  if (::statx(dir, name, AT_STATX_DONT_SYNC, 0, &sx) < 0) return false;
  *dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  return true;
}

std::string link_of(int dir, const char* name) {
  auto l = sys::read_link(dir, name);
  return l ? *l : std::string("?");
}

}  // namespace

std::vector<Holder> processes_using(const std::vector<dev_t>& devs,
                                    const std::vector<pid_t>& exclude) {
  std::vector<Holder> out;
  if (devs.empty()) return out;
  auto wanted = [&](dev_t d) { return std::find(devs.begin(), devs.end(), d) != devs.end(); };
  auto proc = sys::opendir_at(AT_FDCWD, "/proc");
  if (!proc) return out;
  const pid_t self = ::getpid();
  while (auto* e = ::readdir(proc->get())) {
    if (!numeric(e->d_name)) continue;
    pid_t pid = static_cast<pid_t>(std::atol(e->d_name));
    if (pid == self || std::find(exclude.begin(), exclude.end(), pid) != exclude.end()) continue;
    auto pdir = sys::openat(::dirfd(proc->get()), e->d_name, O_RDONLY | O_DIRECTORY);
    if (!pdir) continue;  // gone
    std::string what;
    dev_t d = 0;
    for (const char* name : {"cwd", "root"})
      if (what.empty() && dev_of(pdir->get(), name, &d) && wanted(d))
        what = std::string(name) + " " + link_of(pdir->get(), name);
    if (what.empty()) {
      if (auto list = sys::opendir_at(pdir->get(), "fd"); list) {
        int lfd = ::dirfd(list->get());
        while (auto* f = ::readdir(list->get())) {
          if (!numeric(f->d_name)) continue;
          if (dev_of(lfd, f->d_name, &d) && wanted(d)) {
            what = link_of(lfd, f->d_name);
            break;
          }
        }
      }
    }
    if (what.empty()) continue;
    auto comm = sys::read_file(pdir->get(), "comm");
    std::string c = comm ? *comm : std::string("?");
    while (!c.empty() && c.back() == '\n') c.pop_back();
    out.push_back({pid, c, what});
  }
  std::sort(out.begin(), out.end(), [](const Holder& a, const Holder& b) { return a.pid < b.pid; });
  return out;
}

std::string describe(const std::vector<Holder>& holders) {
  std::string s;
  for (const auto& h : holders) {
    if (!s.empty()) s += ", ";
    s += std::to_string(h.pid) + " " + h.comm;
    if (!h.path.empty()) s += " (" + h.path + ")";
  }
  return s;
}

}  // namespace hoody::snapfs
