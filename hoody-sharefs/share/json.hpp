// The registry's records as JSON: what `hoody-share list --json` prints and
// what the daemon will serve as .hoody/shares.json.  nlohmann escapes control
// characters itself; paths are UTF-8 (offer refuses anything else).
#pragma once

#include <nlohmann/json.hpp>

#include "share/registry.hpp"

namespace hoody::sharefs {

nlohmann::json to_json(const Share& s);
nlohmann::json to_json(const Received& r);
nlohmann::json to_json(const Event& e);
nlohmann::json to_json(const Container& c);

// Everything `container` offers and receives (shares.json of its mount).
Result<nlohmann::json> container_json(Registry& reg, const std::string& container, bool all);

}  // namespace hoody::sharefs
