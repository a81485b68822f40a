#include "crash.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <string>
#include <thread>

#include "hoody/log.hpp"

namespace hoody::snapfs {

namespace {

// HOODY_PAUSE_AT: the first time the step is reached, create DIR/paused
// (holding the step), wait for DIR/go (at most kPauseMax), remove it, go on.
constexpr auto kPauseMax = std::chrono::seconds(60);
std::atomic<bool> paused_once{false};

void pause_here(const std::string& here) {
  const char* dir = std::getenv(kPauseDirEnv);
  if (!dir || paused_once.exchange(true)) return;
  auto lg = log::get("snap");
  std::string paused = std::string(dir) + "/paused", go = std::string(dir) + "/go";
  lg->warn("op=pause_point at={} -> waiting for {}", here, go);
  int fd = ::open(paused.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd >= 0) {
    std::string line = here + "\n";
    (void)!::write(fd, line.data(), line.size());
    ::close(fd);
  }
  auto until = std::chrono::steady_clock::now() + kPauseMax;
  while (::access(go.c_str(), F_OK) != 0 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  ::unlink(go.c_str());
  lg->warn("op=pause_point at={} -> going on", here);
}

}  // namespace

void crash_point(std::string_view op, std::string_view step) {
  const char* crash = std::getenv(kCrashEnv);
  const char* pause = std::getenv(kPauseEnv);
  if (!crash && !pause) return;
  std::string here = std::string(op) + ":" + std::string(step);
  if (pause && here == pause) pause_here(here);
  if (!crash || here != crash) return;
  log::get("snap")->warn("op=crash_point at={} -> SIGKILL", here);
  std::raise(SIGKILL);
}

}  // namespace hoody::snapfs
