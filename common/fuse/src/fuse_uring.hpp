// FUSE over io_uring for libfuse 3.14 sessions (internal to session.cpp).
//
// libfuse 3.14 knows nothing of it; this file adds it around libfuse:
//  - the INIT request is seen through the session's custom-io read, and its
//    reply gets FUSE_OVER_IO_URING (and FUSE_INIT_EXT) in the custom-io writev;
//  - once the reply is written, one ring thread per possible CPU (pinned to it)
//    registers its entries (REGISTER) and serves requests: each request is
//    rebuilt as the bytes /dev/fuse would have given, handed to
//    fuse_session_process_buf, and libfuse's reply (which arrives in the
//    custom-io writev or splice_send, found by its unique) is copied into the
//    entry and committed (COMMIT_AND_FETCH);
//  - /dev/fuse is still read by libfuse's loop for what stays there (INIT,
//    FORGET, BATCH_FORGET, INTERRUPT).
// See fuse_uring.cpp for the entries of parked requests and the kick.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace hoody::fuse_uring {

// Whether this kernel and process can serve FUSE over io_uring at all: the
// fuse module's enable_uring parameter is on and an SQE128 ring can be made.
// Otherwise false and a one-line reason.
bool available(std::string* why);

struct Options {
  unsigned depth = 8;  // entries per queue at start
  std::string mountpoint;
  // FUSE_TMPFILE arrives on the ring too: the same answer as on /dev/fuse.
  std::function<int(std::uint64_t)> tmpfile_errno;
};

// Makes the rings (one per possible CPU) for the mounted session.  False and a
// reason when they cannot be made: the session then runs on /dev/fuse only.
bool prepare(fuse_session* se, int fuse_fd, const Options& opts, std::string* why);

// The custom-io hooks (valid whether or not prepare() ran or succeeded).
void saw_request(const void* buf, size_t n);  // every request read from /dev/fuse
ssize_t writev(int fd, struct iovec* iov, int count);
ssize_t splice_send(int fdin, int fdout, size_t len, unsigned int flags);

// After the session loop ended: stops and joins the ring threads.  Replies
// that arrive later (a daemon completing parked requests while it shuts down)
// are dropped.
void stop();

// For fuse_transport_info(): what was asked for, and why it is not in use.
void set_requested(const std::string& transport, const std::string& reason);

}  // namespace hoody::fuse_uring
