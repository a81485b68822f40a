// Crash injection for the snapshot store: with HOODY_CRASH_AT=<op>:<step> in
// the environment, the store kills itself with SIGKILL when it reaches that
// step, so a test can check that recover() leaves the old or the new state
// after a crash at every step.  Without the variable this is one getenv().
#pragma once

#include <string_view>

namespace hoody::snapfs {

inline constexpr const char* kCrashEnv = "HOODY_CRASH_AT";

void crash_point(std::string_view op, std::string_view step);

}  // namespace hoody::snapfs
