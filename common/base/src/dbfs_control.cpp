#include "hoody/dbfs_control.hpp"

#include <poll.h>
#include <string.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "hoody/sys.hpp"

namespace hoody::ctl {

sockaddr_un control_address(const std::string& source_realpath, socklen_t* len) {
  sockaddr_un addr;
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  std::string name = "hoody-dbfs-ctl:" + source_realpath;
  if (name.size() > sizeof(addr.sun_path) - 1) name.resize(sizeof(addr.sun_path) - 1);
  // Abstract namespace: sun_path[0] == '\0', nothing to clean up after a crash.
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  *len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  return addr;
}

Result<Client> Client::connect(const std::string& source_realpath) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd) return fail(Errno::last());
  socklen_t len = 0;
  sockaddr_un addr = control_address(source_realpath, &len);
  if (sys::retry_eintr([&] {
        return ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), len);
      }) < 0)
    return fail(Errno::last());
  return Client(std::move(fd));
}

namespace {

// Waits for `events` on fd until `deadline`: 0 when ready, else ETIMEDOUT or
// the poll error.
int wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() < 0) left = std::chrono::milliseconds(0);
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return ETIMEDOUT;
    return 0;  // ready, or POLLHUP/POLLERR: the next call reports it
  }
}

}  // namespace

Result<nlohmann::json> Client::call(const nlohmann::json& req, std::chrono::milliseconds timeout) {
  if (!fd_) return fail(ENOTCONN);
  std::string out = req.dump();
  if (out.size() > kMaxMessage) return fail(EMSGSIZE);
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto broken = [this](int err) {
    fd_.reset();  // a late reply must never answer a later call
    return fail(err);
  };

  if (int e = wait_for(fd_.get(), POLLOUT, deadline)) return broken(e);
  ssize_t n = sys::retry_eintr(
      [&] { return ::send(fd_.get(), out.data(), out.size(), MSG_NOSIGNAL | MSG_DONTWAIT); });
  if (n < 0) {
    int e = errno;
    return broken(e == EPIPE ? ECONNRESET : e == EAGAIN ? ETIMEDOUT : e);
  }

  if (int e = wait_for(fd_.get(), POLLIN, deadline)) return broken(e);
  std::vector<char> buf(kMaxMessage + 1);
  n = sys::retry_eintr([&] { return ::recv(fd_.get(), buf.data(), buf.size(), MSG_DONTWAIT); });
  if (n < 0) {
    int e = errno;
    return broken(e == EPIPE ? ECONNRESET : e == EAGAIN ? ETIMEDOUT : e);
  }
  if (n == 0) return broken(ECONNRESET);
  if (static_cast<size_t>(n) > kMaxMessage) return broken(EPROTO);
  auto reply = nlohmann::json::parse(buf.data(), buf.data() + n, nullptr, false);
  if (reply.is_discarded() || !reply.is_object() || !reply.contains("ok") ||
      !reply["ok"].is_boolean())
    return broken(EPROTO);
  return reply;
}

}  // namespace hoody::ctl
