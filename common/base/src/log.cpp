#include "hoody/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <syslog.h>

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace hoody::log {

namespace {
struct State {
  std::mutex mu;
  spdlog::sink_ptr sink;
  spdlog::level::level_enum level = spdlog::level::info;
  std::string ident = "hoody";
};

State& state() {
  static State s;
  return s;
}

spdlog::sink_ptr default_sink() { return std::make_shared<spdlog::sinks::stderr_sink_mt>(); }

}  // namespace

std::optional<spdlog::level::level_enum> parse_level(std::string_view s) {
  if (s == "trace") return spdlog::level::trace;
  if (s == "debug") return spdlog::level::debug;
  if (s == "info") return spdlog::level::info;
  if (s == "warn" || s == "warning") return spdlog::level::warn;
  if (s == "error" || s == "err") return spdlog::level::err;
  if (s == "critical") return spdlog::level::critical;
  if (s == "off") return spdlog::level::off;
  return std::nullopt;
}

void init(const Options& opts) {
  auto& st = state();
  std::lock_guard lock(st.mu);
  std::string level = opts.level;
  if (level.empty()) {
    const char* env = std::getenv("HOODY_LOG");
    level = env ? env : "info";
  }
  st.level = parse_level(level).value_or(spdlog::level::info);
  st.ident = opts.ident;
  if (opts.sink == Sink::syslog)
    st.sink = std::make_shared<spdlog::sinks::syslog_sink_mt>(st.ident, LOG_PID, LOG_DAEMON, false);
  else
    st.sink = default_sink();
  st.sink->set_pattern(opts.sink == Sink::syslog ? "%n: %v" : "%Y-%m-%dT%H:%M:%S.%e %^%l%$ " + st.ident + "[%P] %n: %v");
  // Re-point the loggers that already exist.
  spdlog::apply_all([&](std::shared_ptr<spdlog::logger> l) {
    l->sinks().clear();
    l->sinks().push_back(st.sink);
    l->set_level(st.level);
  });
}

std::shared_ptr<spdlog::logger> get(const std::string& name) {
  if (auto l = spdlog::get(name)) return l;
  auto& st = state();
  std::lock_guard lock(st.mu);
  if (auto l = spdlog::get(name)) return l;
  if (!st.sink) {
    st.sink = default_sink();
    st.sink->set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ " + st.ident + "[%P] %n: %v");
    const char* env = std::getenv("HOODY_LOG");
    if (env) st.level = parse_level(env).value_or(spdlog::level::info);
  }
  auto l = std::make_shared<spdlog::logger>(name, st.sink);
  l->set_level(st.level);
  l->flush_on(spdlog::level::warn);
  spdlog::register_logger(l);
  return l;
}

}  // namespace hoody::log
