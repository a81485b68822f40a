#include "hoody/errno_name.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace hoody {

std::string errno_name(int err) {
  if (err < 0) err = -err;
  if (err == 0) return "ok";
  const char* n = ::strerrorname_np(err);
  return n ? std::string(n) : "E" + std::to_string(err);
}

int errno_from_name(const std::string& name) {
  for (int e = 1; e < 512; ++e) {
    const char* n = ::strerrorname_np(e);
    if (n && name == n) return e;
  }
  if (name.size() > 1 && name[0] == 'E') {
    char* end = nullptr;
    long v = std::strtol(name.c_str() + 1, &end, 10);
    if (end && *end == '\0' && v > 0 && v < 4096) return static_cast<int>(v);
  }
  return EIO;
}

}  // namespace hoody
