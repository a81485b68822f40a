// Which road FUSE requests take between the kernel and this daemon, for
// --status and logs: "uring" (FUSE over io_uring, Linux 6.14+: one queue per
// CPU, served by a ring thread pinned to that CPU) or "dev" (read/write on
// /dev/fuse by the worker pool, as libfuse 3.14 does it).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hoody {

struct TransportQueueInfo {
  unsigned qid = 0;
  std::uint64_t requests = 0;   // served on this queue
  std::uint64_t entries = 0;    // ring entries registered (grows with parked requests)
  std::uint64_t parked = 0;     // requests answered later, now
  std::uint64_t parked_max = 0; // the most parked at once
  std::uint64_t kicks = 0;      // forced fetches (see fuse_uring.cpp: the kick)
  // Mean ns from a request's arrival to its commit, for requests answered at
  // once (libfuse's dispatch, the op, the reply copy); and for GETLK/SETLK.
  std::uint64_t dispatch_ns = 0, lock_dispatch_ns = 0;
};

struct TransportInfo {
  std::string name = "dev";      // what serves requests now: "uring" or "dev"
  std::string requested = "dev"; // -o transport=
  std::string reason;            // why "dev" when "uring" was asked for
  unsigned depth = 0;            // entries per queue at start
  std::vector<TransportQueueInfo> queues;
};

// A snapshot of the running session's transport (one session per process).
TransportInfo fuse_transport_info();

// Requests received so far by opcode name ("WRITE", "GETXATTR", ...), both
// transports together; opcodes never seen are left out.  "WRITE_PAGECACHE"
// counts the WRITEs of dirty page-cache pages (FUSE_WRITE_CACHE: a shared
// mapping such as SQLite's -shm), which WRITE includes.
std::vector<std::pair<std::string, std::uint64_t>> fuse_request_counts();

// For an op handler: the request this thread is dispatching carries the
// kernel's FUSE_WRITE_KILL_SUIDGID (WRITE) or FUSE_OPEN_KILL_SUIDGID (OPEN
// with O_TRUNC): its caller lacks CAP_FSETID, so setuid (and setgid with
// group-exec) must go, as a write or truncate clears them natively.  Only
// sent once FUSE_HANDLE_KILLPRIV_V2 was agreed at INIT (SessionConfig);
// libfuse 3.14 drops both flags, so they are read from the raw request.
bool fuse_request_kills_suidgid();

}  // namespace hoody
