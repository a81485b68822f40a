#include "crash.hpp"

#include <csignal>
#include <cstdlib>
#include <string>

#include "hoody/log.hpp"

namespace hoody::snapfs {

void crash_point(std::string_view op, std::string_view step) {
  const char* want = std::getenv(kCrashEnv);
  if (!want) return;
  std::string here = std::string(op) + ":" + std::string(step);
  if (here != want) return;
  log::get("snap")->warn("op=crash_point at={} -> SIGKILL", here);
  std::raise(SIGKILL);
}

}  // namespace hoody::snapfs
