// Logging: named spdlog loggers ("fuse", "lock", "btrfs", "share", "snap", ...)
// writing to stderr (journald reads it) or syslog.
//
// Level: --log-level on the command line, else $HOODY_LOG, else "info".
// Messages are key=value:  op=setlk ino=42 owner=0x7f.. range=[1073741824,+1] -> queued
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace hoody::log {

enum class Sink { stderr_, syslog };

struct Options {
  std::string level;      // empty: $HOODY_LOG, else "info"
  Sink sink = Sink::stderr_;
  std::string ident = "hoody";  // program name in each line / syslog ident
};

// Parses "trace|debug|info|warn|error|critical|off"; nullopt if unknown.
std::optional<spdlog::level::level_enum> parse_level(std::string_view s);

// Set up the sink and the level of every logger.  Safe to call again.
// (libfuse's own messages: log::route_libfuse in hoody/fuse_log.hpp.)
void init(const Options& opts);

// The named logger, created on first use with the configured sink and level.
std::shared_ptr<spdlog::logger> get(const std::string& name);

}  // namespace hoody::log
