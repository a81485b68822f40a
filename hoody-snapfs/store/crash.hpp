// Crash injection for the snapshot store: with HOODY_CRASH_AT=<op>:<step> in
// the environment, the store kills itself with SIGKILL when it reaches that
// step, so a test can check that recover() leaves the old or the new state
// after a crash at every step.
//
// With HOODY_PAUSE_AT=<op>:<step> and HOODY_PAUSE_DIR=<dir>, the store stops
// at that step instead, the first time it reaches it: it creates <dir>/paused
// (holding "<op>:<step>\n") and waits for <dir>/go (at most 60 s), which it
// removes before it goes on.  A test does something to the world meanwhile
// (kills the hoody-dbfs the store holds quiesced, remounts it).
//
// Without the variables this is two getenv().  Test-only: no user sets them.
#pragma once

#include <string_view>

namespace hoody::snapfs {

inline constexpr const char* kCrashEnv = "HOODY_CRASH_AT";
inline constexpr const char* kPauseEnv = "HOODY_PAUSE_AT";
inline constexpr const char* kPauseDirEnv = "HOODY_PAUSE_DIR";

void crash_point(std::string_view op, std::string_view step);

}  // namespace hoody::snapfs
