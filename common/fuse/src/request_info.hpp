// What the raw request bytes say that libfuse 3.14 drops on the way to the
// ops, and a count of requests by opcode (internal to common/fuse).
//
// Both transports call note() on the thread that dispatches the request,
// right before libfuse does (the /dev/fuse read hook in session.cpp, the ring
// dispatch in fuse_uring.cpp), so an op handler reads the flags of its own
// request through fuse_request_kills_suidgid() (fuse_transport.hpp).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

namespace hoody::fuse_req {

// opcode and the op's own header (fuse_write_in, fuse_open_in, ...), n bytes.
void note(std::uint32_t opcode, const void* op_in, std::size_t n);
// The same from a whole request as /dev/fuse gives it (fuse_in_header first).
void note_raw(const void* buf, std::size_t n);

// FUSE_HANDLE_KILLPRIV_V2 at INIT: whether the daemon asks for it, and the
// hooks that see INIT and its reply (the reply's flags get the bit when the
// kernel offered it).  One session per process.
void want_killpriv_v2(bool on);
void saw_init(const void* buf, std::size_t n);
void patch_init_reply(struct iovec* iov, int count);

}  // namespace hoody::fuse_req
