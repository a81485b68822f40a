#include "hoody/status_socket.hpp"

#include <limits.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "hoody/log.hpp"
#include "hoody/sys.hpp"

namespace hoody {

namespace {

socklen_t socket_address(const std::string& program, const std::string& mountpoint,
                         sockaddr_un* addr) {
  std::memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  std::string name = program + ":" + mountpoint;
  if (name.size() > sizeof(addr->sun_path) - 1) name.resize(sizeof(addr->sun_path) - 1);
  // Abstract namespace: sun_path[0] == '\0', no file to clean up after a crash.
  std::memcpy(addr->sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

}  // namespace

StatusServer::StatusServer(const std::string& program, const std::string& mountpoint) {
  auto log = log::get("fuse");
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr;
  socklen_t len = socket_address(program, mountpoint, &addr);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) < 0 || ::listen(fd, 8) < 0) {
    log->warn("status socket for {}: {} (--status will not work)", mountpoint, std::strerror(errno));
    if (fd >= 0) ::close(fd);
    return;
  }
  listen_.reset(fd);
  stop_.reset(::eventfd(0, EFD_CLOEXEC));
}

void StatusServer::run(std::function<std::string()> render) {
  if (!listen_ || thread_.joinable()) return;
  render_ = std::move(render);
  thread_ = std::thread([this] { serve(); });
}

StatusServer::~StatusServer() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    if (::write(stop_.get(), &one, sizeof one) < 0) {
    }
    thread_.join();
  }
}

void StatusServer::serve() {
  for (;;) {
    pollfd p[2] = {{listen_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (::poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (p[1].revents) return;
    UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) continue;
    ucred cred{};
    socklen_t cl = sizeof cred;
    if (::getsockopt(c.get(), SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0 ||
        (cred.uid != 0 && cred.uid != ::getuid())) {
      (void)sys::write_all(c.get(), "{\"error\": \"permission denied: only root may read the status\"}\n");
      continue;
    }
    std::string out = render_() + "\n";
    (void)sys::write_all(c.get(), out);
  }
}

int status_client(const std::string& program, const std::string& mountpoint_arg) {
  std::string mountpoint = sys::absolute(mountpoint_arg);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr;
  socklen_t len = socket_address(program, mountpoint, &addr);
  if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) < 0) {
    std::fprintf(stderr, "%s: no %s serves %s (%s)\n", program.c_str(), program.c_str(),
                 mountpoint.c_str(), std::strerror(errno));
    return 1;
  }
  char buf[65536];
  for (;;) {
    ssize_t n = sys::retry_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n <= 0) break;
    std::fwrite(buf, 1, static_cast<size_t>(n), stdout);
  }
  return 0;
}

}  // namespace hoody
