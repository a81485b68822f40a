// libfuse's own messages (fuse_log) into the "fuse" logger, at their level.
// In the FUSE layer so that the logging of the pure libraries needs no libfuse.
#pragma once

namespace hoody::log {

// Route libfuse's messages through spdlog (fuse_set_log_func).  Call after
// log::init; safe to call again.
void route_libfuse();

}  // namespace hoody::log
