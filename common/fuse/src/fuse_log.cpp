#include "hoody/fuse_log.hpp"

#include <fuse_log.h>

#include <cstdarg>
#include <cstdio>
#include <string_view>

#include "hoody/log.hpp"

namespace hoody::log {

namespace {
void fuse_log_to_spdlog(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  std::string_view msg(buf);
  while (!msg.empty() && msg.back() == '\n') msg.remove_suffix(1);
  auto lvl = spdlog::level::info;
  switch (level) {
    case FUSE_LOG_EMERG:
    case FUSE_LOG_ALERT:
    case FUSE_LOG_CRIT: lvl = spdlog::level::critical; break;
    case FUSE_LOG_ERR: lvl = spdlog::level::err; break;
    case FUSE_LOG_WARNING: lvl = spdlog::level::warn; break;
    case FUSE_LOG_NOTICE:
    case FUSE_LOG_INFO: lvl = spdlog::level::info; break;
    case FUSE_LOG_DEBUG: lvl = spdlog::level::debug; break;
  }
  get("fuse")->log(lvl, "libfuse: {}", msg);
}
}  // namespace

void route_libfuse() { fuse_set_log_func(fuse_log_to_spdlog); }

}  // namespace hoody::log
