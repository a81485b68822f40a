#include "request_info.hpp"

#include <array>
#include <atomic>
#include <cstring>

#include "hoody/fuse_transport.hpp"
#include "hoody/log.hpp"

namespace hoody::fuse_req {

namespace {

// The kernel ABI (uapi linux/fuse.h 7.36+; libfuse 3.14's copy is older).
constexpr std::uint32_t kOpOpen = 14, kOpWrite = 16, kOpInit = 26;
constexpr std::uint32_t kWriteKillSuidgid = 1u << 2;  // FUSE_WRITE_KILL_SUIDGID
constexpr std::uint32_t kOpenKillSuidgid = 1u << 0;   // FUSE_OPEN_KILL_SUIDGID
constexpr std::uint32_t kHandleKillprivV2 = 1u << 28; // FUSE_HANDLE_KILLPRIV_V2
constexpr std::size_t kInHeader = 40;                 // sizeof(fuse_in_header)
constexpr std::size_t kNames = 53;

constexpr std::array<const char*, kNames> kOpNames = {
    "?",         "LOOKUP",     "FORGET",     "GETATTR",      "SETATTR",     "READLINK",
    "SYMLINK",   "?",          "MKNOD",      "MKDIR",        "UNLINK",      "RMDIR",
    "RENAME",    "LINK",       "OPEN",       "READ",         "WRITE",       "STATFS",
    "RELEASE",   "?",          "FSYNC",      "SETXATTR",     "GETXATTR",    "LISTXATTR",
    "REMOVEXATTR", "FLUSH",    "INIT",       "OPENDIR",      "READDIR",     "RELEASEDIR",
    "FSYNCDIR",  "GETLK",      "SETLK",      "SETLKW",       "ACCESS",      "CREATE",
    "INTERRUPT", "BMAP",       "DESTROY",    "IOCTL",        "POLL",        "NOTIFY_REPLY",
    "BATCH_FORGET", "FALLOCATE", "READDIRPLUS", "RENAME2",   "LSEEK",       "COPY_FILE_RANGE",
    "SETUPMAPPING", "REMOVEMAPPING", "SYNCFS", "TMPFILE",    "STATX"};

std::array<std::atomic<std::uint64_t>, kNames> g_counts{};
// WRITEs of the page cache (FUSE_WRITE_CACHE: a shared mapping's dirty
// pages, e.g. SQLite's -shm, or the writeback cache), also counted in WRITE.
std::atomic<std::uint64_t> g_cache_writes{0};
constexpr std::uint32_t kWriteCache = 1u << 0;  // FUSE_WRITE_CACHE
thread_local bool tls_kill = false;

std::atomic<bool> g_want_v2{false};
std::atomic<bool> g_offered_v2{false};
std::atomic<std::uint64_t> g_init_unique{0};

std::uint32_t u32_at(const void* p, std::size_t off) {
  std::uint32_t v;
  std::memcpy(&v, static_cast<const char*>(p) + off, sizeof v);
  return v;
}

}  // namespace

void note(std::uint32_t opcode, const void* op_in, std::size_t n) {
  g_counts[opcode < kNames ? opcode : 0].fetch_add(1, std::memory_order_relaxed);
  bool kill = false;
  // fuse_write_in: fh, offset, size, write_flags; fuse_open_in: flags, open_flags.
  if (opcode == kOpWrite && n >= 24) {
    std::uint32_t flags = u32_at(op_in, 20);
    kill = flags & kWriteKillSuidgid;
    if (flags & kWriteCache) g_cache_writes.fetch_add(1, std::memory_order_relaxed);
  }
  else if (opcode == kOpOpen && n >= 8) kill = u32_at(op_in, 4) & kOpenKillSuidgid;
  tls_kill = kill;
}

void note_raw(const void* buf, std::size_t n) {
  if (n < kInHeader) return;
  note(u32_at(buf, 4), static_cast<const char*>(buf) + kInHeader, n - kInHeader);
}

void want_killpriv_v2(bool on) { g_want_v2.store(on); }

void saw_init(const void* buf, std::size_t n) {
  // fuse_init_in: major, minor, max_readahead, flags, ...
  if (n < kInHeader + 16 || u32_at(buf, 4) != kOpInit) return;
  std::uint64_t unique;
  std::memcpy(&unique, static_cast<const char*>(buf) + 8, sizeof unique);
  g_init_unique.store(unique);
  g_offered_v2.store((u32_at(buf, kInHeader + 12) & kHandleKillprivV2) != 0);
}

void patch_init_reply(struct iovec* iov, int count) {
  std::uint64_t unique = g_init_unique.load();
  if (unique == 0 || count < 2 || iov[0].iov_len < 16 || iov[1].iov_len < 16) return;
  std::uint64_t out_unique;
  std::int32_t error;
  std::memcpy(&error, static_cast<char*>(iov[0].iov_base) + 4, sizeof error);
  std::memcpy(&out_unique, static_cast<char*>(iov[0].iov_base) + 8, sizeof out_unique);
  if (out_unique != unique || error != 0) return;
  g_init_unique.store(0);
  // fuse_init_out: major, minor, max_readahead, flags, ...
  if (!g_want_v2.load() || !g_offered_v2.load()) return;
  std::uint32_t flags = u32_at(iov[1].iov_base, 12) | kHandleKillprivV2;
  std::memcpy(static_cast<char*>(iov[1].iov_base) + 12, &flags, sizeof flags);
  log::get("fuse")->info("init handle_killpriv_v2=1 (the daemon clears setuid, setgid and file "
                         "capabilities: no GETXATTR per WRITE)");
}

}  // namespace hoody::fuse_req

namespace hoody {

bool fuse_request_kills_suidgid() { return fuse_req::tls_kill; }

std::vector<std::pair<std::string, std::uint64_t>> fuse_request_counts() {
  std::vector<std::pair<std::string, std::uint64_t>> out;
  for (std::size_t i = 0; i < fuse_req::kNames; ++i)
    if (auto n = fuse_req::g_counts[i].load(std::memory_order_relaxed))
      out.emplace_back(fuse_req::kOpNames[i], n);
  if (auto n = fuse_req::g_cache_writes.load(std::memory_order_relaxed))
    out.emplace_back("WRITE_PAGECACHE", n);
  return out;
}

}  // namespace hoody
