#include "sqlite_harness.hpp"
