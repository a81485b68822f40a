// Internals shared by the engines in io_engine.cpp and io_uring_engine.cpp.
#pragma once

#include "hoody/io_engine.hpp"

namespace hoody::io::detail {

// Run done(res); an exception it throws is logged on the "io" logger and dropped.
void call_done(Done& done, ssize_t res, const char* engine) noexcept;

// pwrite all of buf (EINTR retried, short writes continued): n, the bytes
// written before an error, or -errno if none.
ssize_t pwrite_full(int fd, const void* buf, size_t n, off_t off) noexcept;

}  // namespace hoody::io::detail
