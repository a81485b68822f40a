// The control channel between hoody-snapfs and hoody-dbfs (issue 11).
//
// hoody-dbfs listens on an abstract unix socket (SOCK_SEQPACKET) named
// "\0hoody-dbfs-ctl:" + realpath(SOURCE), so hoody-snapfs finds the dbfs that
// serves a scope subvolume from the pool alone.  One JSON request per
// datagram, one JSON reply per request, each <= 64 KiB; every reply has
// "ok": true|false and, when false, "errno" (a name such as "EBUSY") and
// "error" (a sentence).  The calls (quiesce, resume, source-replaced, holders)
// are described in man/hoody-dbfs.8 and in hoody-dbfs/control.hpp.
//
// Both daemons use this one header: the address function, so they agree on
// the name, and a small blocking client.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "hoody/errno_name.hpp"
#include "hoody/result.hpp"
#include "hoody/unique_fd.hpp"

namespace hoody::ctl {

// The largest request or reply datagram.
inline constexpr size_t kMaxMessage = 64 * 1024;

// The abstract address "\0hoody-dbfs-ctl:<source_realpath>", truncated to fit
// sun_path (as the status socket's name is).  *len receives the address length
// to pass to bind/connect.
sockaddr_un control_address(const std::string& source_realpath, socklen_t* len);

// The "errno" field of a reply is hoody::errno_name (hoody/errno_name.hpp).

// A blocking client of one control connection.  A quiesce belongs to the
// connection: keep the Client alive while it is held; destroying it (or the
// process dying) makes dbfs resume at once.
class Client {
public:
  // Connects to the hoody-dbfs serving `source_realpath`.  ECONNREFUSED (or
  // ENOENT) means no hoody-dbfs serves it; EACCES-like failures come from the
  // peer closing the connection at the first call (peer credentials refused).
  static Result<Client> connect(const std::string& source_realpath);

  // Sends `req` and waits up to `timeout` for its reply.  Errors:
  //   ETIMEDOUT  no reply in time (the connection is then closed, so a late
  //              reply cannot be read as the answer to a later call, and a
  //              quiesce it may hold is dropped by dbfs);
  //   ECONNRESET the peer closed the connection (dbfs exited, or refused our
  //              credentials);
  //   EMSGSIZE   the request is larger than kMaxMessage;
  //   EPROTO     the reply is not a JSON object with a boolean "ok";
  //   ENOTCONN   the connection was closed by an earlier failure.
  // A reply with "ok": false is returned as a value: the caller reads its
  // "errno" and "error".
  Result<nlohmann::json> call(const nlohmann::json& req, std::chrono::milliseconds timeout);

  int fd() const { return fd_.get(); }

private:
  explicit Client(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace hoody::ctl
