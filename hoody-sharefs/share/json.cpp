#include "share/json.hpp"

#include "share/text.hpp"

namespace hoody::sharefs {

using nlohmann::json;

json to_json(const Share& s) {
  json to = s.to_container.empty() ? json{{"project", s.to_project}} : json{{"container", s.to_container}};
  json receivers = json::array();
  for (auto& r : s.receipts)
    receivers.push_back({{"container", r.container}, {"state", to_string(r.state)},
                         {"changed", rfc3339(r.changed)}});
  json j = {{"name", s.name}, {"owner", s.owner}, {"source", s.source}, {"mode", to_string(s.mode)},
          {"to", to}, {"state", to_string(s.state)}, {"created", rfc3339(s.created)},
          {"changed", rfc3339(s.changed)}, {"receivers", receivers}};
  if (!s.peer.empty()) {
    j["server"] = s.peer;  // the other server (the audience's, or the owner's)
    if (!s.url.empty()) j["url"] = s.url;
  }
  return j;
}

json to_json(const Received& r) {
  json j = {{"name", r.name}, {"owner", r.owner}, {"source", r.source}, {"mode", to_string(r.mode)},
          {"state", to_string(r.state)}, {"changed", rfc3339(r.changed)}};
  if (!r.url.empty()) {
    j["server"] = r.peer;
    j["url"] = r.url;
  }
  return j;
}

json to_json(const Event& e) {
  return {{"id", e.id}, {"time", rfc3339(e.time)}, {"actor", e.actor}, {"action", e.action},
          {"subject", e.subject}, {"detail", e.detail}, {"result", e.result}};
}

json to_json(const Container& c) {
  return {{"id", c.id}, {"project", c.project.empty() ? json(nullptr) : json(c.project)},
          {"added", rfc3339(c.added)}};
}

Result<json> container_json(Registry& reg, const std::string& container, bool all) {
  HOODY_TRY(c, reg.container(container));
  if (!c) return fail(ENOENT);
  HOODY_TRY(offers, reg.offered_by(container, all));
  HOODY_TRY(receives, reg.shares_for(container, all));
  json o = json::array(), r = json::array();
  for (auto& s : offers) o.push_back(to_json(s));
  for (auto& s : receives) r.push_back(to_json(s));
  return json{{"container", c->id},
              {"project", c->project.empty() ? json(nullptr) : json(c->project)},
              {"offers", o},
              {"receives", r}};
}

}  // namespace hoody::sharefs
