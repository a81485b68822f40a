// The engine factory and the "sync" engine.  The "uring" engine is in
// io_uring_engine.cpp.
#include "hoody/io_engine.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "hoody/log.hpp"
#include "io_engine_detail.hpp"
#include "hoody/sys.hpp"

namespace hoody::io {

void detail::call_done(Done& done, ssize_t res, const char* engine) noexcept {
  try {
    done(res);
  } catch (const std::exception& e) {
    log::get("io")->error("engine={} done callback threw: {} (dropped)", engine, e.what());
  } catch (...) {
    log::get("io")->error("engine={} done callback threw a non-std exception (dropped)", engine);
  }
}

ssize_t detail::pwrite_full(int fd, const void* buf, size_t n, off_t off) noexcept {
  const auto* p = static_cast<const char*>(buf);
  size_t total = 0;
  while (total < n) {
    ssize_t r = sys::retry_eintr(
        [&] { return ::pwrite(fd, p + total, n - total, off + static_cast<off_t>(total)); });
    if (r < 0) {
      int e = errno;
      if (total == 0) return -e;
      break;
    }
    if (r == 0) {  // no progress and no error: do not spin
      if (total == 0) return -EIO;
      break;
    }
    total += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(total);
}

namespace {

using detail::call_done;

class SyncEngine final : public Engine {
public:
  const char* name() const override { return "sync"; }

  void read(int fd, void* buf, size_t n, off_t off, Done done) override {
    auto* p = static_cast<char*>(buf);
    size_t total = 0;
    while (total < n) {
      ssize_t r = sys::retry_eintr(
          [&] { return ::pread(fd, p + total, n - total, off + static_cast<off_t>(total)); });
      if (r < 0) {
        int e = errno;
        if (total == 0) return call_done(done, -e, "sync");
        break;
      }
      if (r == 0) break;  // EOF
      total += static_cast<size_t>(r);
    }
    call_done(done, static_cast<ssize_t>(total), "sync");
  }

  void write(int fd, const void* buf, size_t n, off_t off, Done done) override {
    call_done(done, detail::pwrite_full(fd, buf, n, off), "sync");
  }

  void fsync(int fd, bool datasync, Done done) override {
    auto st = datasync ? sys::fdatasync(fd) : sys::fsync(fd);
    call_done(done, st.ok() ? 0 : -static_cast<ssize_t>(st.err()), "sync");
  }
};

}  // namespace

std::optional<Kind> parse_kind(std::string_view s) {
  if (s == "uring") return Kind::uring;
  if (s == "sync") return Kind::sync;
  return std::nullopt;
}

const char* to_string(Kind kind) { return kind == Kind::uring ? "uring" : "sync"; }

std::unique_ptr<Engine> make_sync_engine() { return std::make_unique<SyncEngine>(); }

std::unique_ptr<Engine> make_engine(Kind kind, const Options& opts) {
  if (kind == Kind::sync) return make_sync_engine();
  const char* env = std::getenv("HOODY_IO_URING_DISABLE");
  if (env && std::strcmp(env, "1") == 0) {
    log::get("io")->info("engine=sync reason=HOODY_IO_URING_DISABLE=1 (io=uring not used)");
    return make_sync_engine();
  }
  auto r = make_uring_engine(opts);
  if (r) return std::move(*r);
  log::get("io")->warn(
      "engine=sync reason=\"io_uring_queue_init failed: {}\" (errno={}); falling back to "
      "pread/pwrite. Check kernel.io_uring_disabled and RLIMIT_MEMLOCK, or pass -o io=sync",
      r.error().message(), r.err());
  return make_sync_engine();
}

}  // namespace hoody::io
