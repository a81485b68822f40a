#include <doctest/doctest.h>
#include <fuse_log.h>
#include <spdlog/sinks/ostream_sink.h>

#include <cstdlib>
#include <sstream>

#include "hoody/fuse_log.hpp"
#include "hoody/log.hpp"

using namespace hoody;

TEST_CASE("log levels parse by name") {
  CHECK(log::parse_level("trace") == spdlog::level::trace);
  CHECK(log::parse_level("debug") == spdlog::level::debug);
  CHECK(log::parse_level("info") == spdlog::level::info);
  CHECK(log::parse_level("warn") == spdlog::level::warn);
  CHECK(log::parse_level("warning") == spdlog::level::warn);
  CHECK(log::parse_level("error") == spdlog::level::err);
  CHECK(log::parse_level("off") == spdlog::level::off);
  CHECK_FALSE(log::parse_level("loud").has_value());
}

TEST_CASE("the level comes from the option, else $HOODY_LOG, else info") {
  ::setenv("HOODY_LOG", "debug", 1);
  log::init({});
  CHECK(log::get("lock")->level() == spdlog::level::debug);
  log::init({.level = "warn"});
  CHECK(log::get("lock")->level() == spdlog::level::warn);
  CHECK(log::get("a-new-one")->level() == spdlog::level::warn);  // created after init
  ::unsetenv("HOODY_LOG");
  log::init({});
  CHECK(log::get("lock")->level() == spdlog::level::info);
}

TEST_CASE("named loggers are shared, and libfuse's messages reach the fuse logger") {
  log::init({.level = "debug"});
  log::route_libfuse();
  CHECK(log::get("btrfs") == log::get("btrfs"));
  CHECK(log::get("btrfs") != log::get("share"));
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  sink->set_pattern("%n %l %v");
  auto fuse_logger = log::get("fuse");
  fuse_logger->sinks().push_back(sink);
  fuse_log(FUSE_LOG_ERR, "fuse: bad mount point `%s': %s\n", "/x", "No such file or directory");
  fuse_log(FUSE_LOG_DEBUG, "unique: %d, opcode: LOOKUP\n", 7);
  fuse_logger->flush();
  std::string got = out.str();
  CHECK_MESSAGE(got.find("fuse error libfuse: fuse: bad mount point `/x'") != std::string::npos, got);
  CHECK_MESSAGE(got.find("fuse debug libfuse: unique: 7") != std::string::npos, got);
  CHECK(got.find("\n\n") == std::string::npos);  // libfuse's trailing newline is dropped
  fuse_logger->sinks().pop_back();
}
