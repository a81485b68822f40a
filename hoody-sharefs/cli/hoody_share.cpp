// hoody-share: the share registry POOL/shares.db from the command line.
// Containers offer directories of their storage to another container or to
// a whole project, receivers accept, reject or leave, owners revoke.  It works
// on the registry directly (no mount needed); running hoody-sharefs daemons
// see each change through the pool's change signal.
//
// Across servers (hoody-sharefs(8) "Shares across servers"): `offer --to
// C@SERVER` records the share, writes one nfs-ganesha export for it (the
// export view POOL's `hoody-sharefs -o exports` serves, SERVER only,
// squashed ids), reloads ganesha and tells SERVER's registry through
// server.conf's peer_command (`hoody-share remote offer ...` there); revoke
// and mode likewise.  On the receiving server, accept, reject and leave of
// such a share tell the owner's server (`remote state`), which drops the
// export of a rejected or left share.  `remote ...` is that server-to-server
// half; `exports` writes the exports again (after a restart of ganesha).
//
// Exit status: 0 done, 1 refused or failed (the message says why), 2 usage.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hoody/log.hpp"
#include "share/json.hpp"
#include "share/registry.hpp"
#include "share/server.hpp"
#include "share/text.hpp"

namespace {

using namespace hoody::sharefs;

constexpr const char* kDefaultPool = "/var/lib/hoody";
constexpr int kRefused = 1;
constexpr int kUsage = 2;

int refused(const std::string& why) {
  std::fprintf(stderr, "hoody-share: %s\n", escape(why).c_str());
  return kRefused;
}

int usage(const std::string& why) {
  std::fprintf(stderr, "hoody-share: %s\nRun with --help for more information.\n", why.c_str());
  return kUsage;
}

void print_json(const nlohmann::json& j) {
  std::fputs(j.dump(2).c_str(), stdout);
  std::fputc('\n', stdout);
}

std::string audience(const Share& s) {
  return s.to_container.empty() ? "project:" + s.to_project : s.to_container;
}

std::string receivers(const Share& s) {
  std::string out;
  for (auto& r : s.receipts)
    out += (out.empty() ? "" : ",") + r.container + ":" + std::string(to_string(r.state));
  return out.empty() ? "-" : out;
}

// Every field printed in a listing goes through escape(): a newline in a
// path becomes \x0a and cannot make a row of its own.
void row(const std::vector<std::string>& cols, const std::vector<int>& widths) {
  std::string line;
  for (std::size_t i = 0; i < cols.size(); ++i) {
    std::string f = escape(cols[i]);
    if (i + 1 < cols.size() && static_cast<int>(f.size()) < widths[i]) f.resize(static_cast<std::size_t>(widths[i]), ' ');
    line += f;
    if (i + 1 < cols.size()) line += ' ';
  }
  std::puts(line.c_str());
}

// How long an export's VIEW/ID may take to appear (the view daemon follows
// the registry within 100 ms).
constexpr auto kViewWait = std::chrono::seconds(5);
// How long a change waits for the running daemons to confirm it.
constexpr auto kApplyBound = std::chrono::milliseconds(2000);

// Writes one nfs-ganesha export per live share offered to another server and
// makes ganesha reload them.  An export whose VIEW/ID is not there (the view
// is not mounted) is left out: ganesha refuses a whole reload for one bad path.
hoody::Status publish(Registry& reg, std::string* why) {
  auto conf = read_server_conf(reg.pool(), why);
  if (!conf) return hoody::fail(conf.error());
  auto shares = reg.exports();
  if (!shares) {
    *why = "exports: " + shares.error().message();
    return hoody::fail(shares.error());
  }
  std::vector<ExportSpec> out;
  std::string missing;
  for (auto& s : *shares) {
    ExportSpec e;
    e.id = s.id;
    e.path = conf->view + "/" + std::to_string(s.id);
    e.client = s.peer;
    e.read_only = s.mode == Mode::ro;
    // Every caller from the peer acts as the owner of the shared directory.
    std::string ignored;
    auto storage = reg.open_storage(s.owner, &ignored);
    if (storage) {
      auto src = open_source(storage->get(), s.source, s.owner, &ignored);
      struct stat st {};
      if (src && ::fstat(src->get(), &st) == 0) {
        e.anon_uid = st.st_uid;
        e.anon_gid = st.st_gid;
      }
    }
    auto deadline = std::chrono::steady_clock::now() + kViewWait;
    struct stat vs {};
    while (::stat(e.path.c_str(), &vs) != 0 && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (::stat(e.path.c_str(), &vs) != 0 || !S_ISDIR(vs.st_mode)) {
      missing += (missing.empty() ? "" : ", ") + e.path;
      continue;
    }
    out.push_back(e);
  }
  if (auto s = write_exports(conf->exports, render_exports(out), why); !s) return s;
  if (auto s = reload_ganesha(*conf, why); !s) return s;
  if (!missing.empty()) {
    *why = "not exported (is `hoody-sharefs -o exports " + reg.pool() + " " + conf->view +
           "` mounted?): " + missing;
    return hoody::fail(ENOENT);
  }
  return {};
}

// The share `owner` (or the one live share) calls `name`, if it is offered to another server.
std::optional<Share> outbound(Registry& reg, const std::string& owner, const std::string& name) {
  auto all = reg.list(false);
  if (!all) return std::nullopt;
  for (auto& s : *all)
    if (s.name == name && (owner.empty() || s.owner == owner) && !s.peer.empty() && s.url.empty())
      return s;
  return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hoody-share: offer, accept, reject, leave, revoke and list the shares between "
               "containers of a hoody pool. See hoody-share(1)."};
  app.require_subcommand(1);
  const char* env = std::getenv("HOODY_POOL");
  std::string pool = env && *env ? env : kDefaultPool;
  std::string level = "warn";
  app.add_option("--pool", pool, "the pool directory holding shares.db (default $HOODY_POOL or /var/lib/hoody)");
  app.add_option("--log-level", level, "trace, debug, info, warn (default), error");

  std::string name, container, project, from, to;
  bool json = false, all = false, ro = false, rw = false;
  int limit = 50;

  auto* cont = app.add_subcommand("container", "register containers and their project");
  cont->require_subcommand(1);
  auto* cadd = cont->add_subcommand("add", "add container C (to project P); idempotent");
  cadd->add_option("C", container, "container id")->required();
  cadd->add_option("--project", project, "the project C belongs to");
  auto* crm = cont->add_subcommand("remove", "revoke what C offers, drop what it receives, forget C");
  crm->add_option("C", container, "container id")->required();
  auto* cls = cont->add_subcommand("list", "list the containers and their projects");
  cls->add_flag("--json", json, "print JSON");

  auto* offer = app.add_subcommand("offer", "offer a directory of a container's storage");
  offer->add_option("--from", from, "C:PATH, PATH relative to POOL/containers/C/storage")->required();
  auto* oto = offer->add_option("--to", to, "the receiving container (C@SERVER: on another server)");
  auto* oproj = offer->add_option("--project", project, "every container of this project");
  oto->excludes(oproj);
  auto* oro = offer->add_flag("--ro", ro, "read-only");
  auto* orw = offer->add_flag("--rw", rw, "read-write");
  oro->excludes(orw);
  offer->add_option("NAME", name, "share name, as the receiver will see it")->required();

  auto* revoke = app.add_subcommand("revoke", "withdraw a share from every receiver at once");
  revoke->add_option("--from", from, "the owner (needed when several containers offer NAME)");
  revoke->add_option("NAME", name, "share name")->required();

  bool mro = false, mrw = false;
  auto* mode = app.add_subcommand("mode", "make a share read-only or read-write for every receiver at once");
  mode->add_option("--from", from, "the owner (needed when several containers offer NAME)");
  auto* mro_f = mode->add_flag("--ro", mro, "read-only");
  auto* mrw_f = mode->add_flag("--rw", mrw, "read-write");
  mro_f->excludes(mrw_f);
  mode->add_option("NAME", name, "share name")->required();

  auto* list = app.add_subcommand("list", "list shares (all, or what one container offers and receives)");
  list->add_option("--container", container, "only what this container offers and receives");
  list->add_flag("--all", all, "also revoked, rejected and left shares");
  list->add_flag("--json", json, "print JSON");

  std::map<std::string, CLI::App*> verbs;
  const std::pair<const char*, const char*> receiver_verbs[] = {
      {"accept", "accept a share offered to a container"},
      {"reject", "reject a share offered to a container"},
      {"leave", "leave a share a container accepted"}};
  for (auto [v, help] : receiver_verbs) {
    auto* s = app.add_subcommand(v, help);
    s->add_option("--container", container, "the receiving container")->required();
    s->add_option("NAME", name, "share name")->required();
    verbs[v] = s;
  }

  app.add_subcommand("exports", "write the nfs-ganesha exports of the shares offered to other servers again, reload ganesha");

  // The server-to-server half (run by the other server through peer_command).
  auto* remote = app.add_subcommand("remote", "what another server's hoody-share asks of this one (see hoody-share(1))");
  remote->require_subcommand(1);
  std::string owner, url, receiver;
  bool racc = false, rrej = false, rleave = false;
  auto* r_offer = remote->add_subcommand("offer", "a container there offers a share to a container here");
  r_offer->add_option("--owner", owner, "C@SERVER, the owner")->required();
  r_offer->add_option("--to", to, "the receiving container here")->required();
  r_offer->add_option("--url", url, "the export: nfs://SERVER/PATH?nfsport=N&mountport=M")->required();
  r_offer->add_flag("--ro", ro, "read-only");
  r_offer->add_flag("--rw", rw, "read-write");
  r_offer->add_option("NAME", name, "share name")->required();
  auto* r_revoke = remote->add_subcommand("revoke", "the owner there revoked a share");
  r_revoke->add_option("--owner", owner, "C@SERVER, the owner")->required();
  r_revoke->add_option("NAME", name, "share name")->required();
  auto* r_mode = remote->add_subcommand("mode", "the owner there changed a share's mode");
  r_mode->add_option("--owner", owner, "C@SERVER, the owner")->required();
  r_mode->add_flag("--ro", ro, "read-only");
  r_mode->add_flag("--rw", rw, "read-write");
  r_mode->add_option("NAME", name, "share name")->required();
  auto* r_state = remote->add_subcommand("state", "a receiver there accepted, rejected or left a share of a container here");
  r_state->add_option("--owner", owner, "the owner here")->required();
  r_state->add_option("--receiver", receiver, "the receiving container there")->required();
  r_state->add_flag("--accept", racc, "accepted");
  r_state->add_flag("--reject", rrej, "rejected");
  r_state->add_flag("--leave", rleave, "left");
  r_state->add_option("NAME", name, "share name")->required();

  auto* log = app.add_subcommand("log", "the registry's event log: who did what, when, result");
  log->add_option("--limit", limit, "the last N events (default 50)")->check(CLI::PositiveNumber);
  log->add_flag("--json", json, "print JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    (void)app.exit(e);
    return kUsage;
  }

  auto lvl = hoody::log::parse_level(level);
  if (!lvl) return usage("--log-level " + level + ": not one of trace, debug, info, warn, error");
  hoody::log::init({level, hoody::log::Sink::stderr_, "hoody-share"});

  std::string why;
  auto reg = Registry::open(pool, &why);
  if (!reg) return refused(why);
  // A change is in force when the command returns: every running
  // hoody-sharefs of the pool has applied it (a revoked share is gone, also
  // for open files).  A daemon that does not confirm in time is named.
  struct WaitApplied {
    Registry& reg;
    ~WaitApplied() {
      auto behind = reg.wait_applied(kApplyBound);
      if (behind.empty()) return;
      std::string pids;
      for (pid_t p : behind) pids += (pids.empty() ? "" : ", ") + std::to_string(p);
      std::fprintf(stderr,
                   "hoody-share: warning: hoody-sharefs (pid %s) did not confirm the change within "
                   "%lld ms; it applies it at its next look\n",
                   pids.c_str(), static_cast<long long>(kApplyBound.count()));
    }
  } wait_applied{*reg};

  if (*cont) {
    if (*cadd) {
      if (!reg->add_container(container, project, &why)) return refused(why);
      std::printf("container %s%s\n", container.c_str(),
                  project.empty() ? "" : (" in project " + project).c_str());
      return 0;
    }
    if (*crm) {
      // What crosses servers is told to the other side after the removal:
      // C's shares offered out are revoked there (and unexported here), C's
      // shares from other servers are left (or rejected) there.
      std::vector<Share> out;
      std::vector<Received> in;
      if (auto os = reg->offered_by(container, false))
        for (auto& s : *os)
          if (!s.peer.empty() && s.url.empty()) out.push_back(s);
      if (auto rs = reg->shares_for(container, false))
        for (auto& r : *rs)
          if (!r.url.empty()) in.push_back(r);
      if (!reg->remove_container(container, &why)) return refused(why);
      int rc = 0;
      if (!out.empty() || !in.empty()) {
        auto conf = read_server_conf(pool, &why);
        if (!conf) return refused(why);
        if (!out.empty() && !publish(*reg, &why)) rc = refused("container remove " + container + ": " + why);
        for (auto& s : out)
          if (!run_peer(*conf, s.peer, {"revoke", "--owner", s.owner + "@" + conf->address, "--", s.name}, &why))
            rc = refused("container remove " + container + ": revoke " + s.name + ": " + why);
        for (auto& r : in)
          if (!run_peer(*conf, r.peer,
                        {"state", "--owner", r.owner.substr(0, r.owner.find('@')), "--receiver", container,
                         r.state == State::accepted ? "--leave" : "--reject", "--", r.name},
                        &why))
            rc = refused("container remove " + container + ": leave " + r.name + ": " + why);
      }
      std::printf("removed container %s\n", container.c_str());
      return rc;
    }
    auto cs = reg->containers();
    if (!cs) return refused("list containers: " + cs.error().message());
    if (json) {
      nlohmann::json arr = nlohmann::json::array();
      for (auto& c : *cs) arr.push_back(to_json(c));
      print_json({{"containers", arr}});
      return 0;
    }
    std::vector<int> w{24, 24};
    row({"CONTAINER", "PROJECT", "ADDED"}, w);
    for (auto& c : *cs) row({c.id, c.project.empty() ? "-" : c.project, rfc3339(c.added)}, w);
    return 0;
  }

  if (*offer) {
    auto colon = from.find(':');
    if (colon == std::string::npos || colon == 0)
      return usage("--from " + escape(from) + ": give it as CONTAINER:PATH (PATH may be .)");
    if (to.empty() && project.empty()) return usage("offer: give --to CONTAINER or --project PROJECT");
    if (!ro && !rw) return usage("offer: give --ro or --rw");
    Offer o;
    o.from = from.substr(0, colon);
    o.source = from.substr(colon + 1);
    o.to_container = to;
    o.to_project = project;
    o.mode = rw ? Mode::rw : Mode::ro;
    o.name = name;
    ServerConf conf;
    if (auto at = to.find('@'); at != std::string::npos) {
      o.to_container = to.substr(0, at);
      o.to_server = to.substr(at + 1);
      auto c = read_server_conf(pool, &why);
      if (!c) return refused(why);
      if (c->address.empty())
        return refused("offer to another server: set `address = ...` (this server as " + o.to_server +
                       " reaches it) in " + pool + "/server.conf");
      conf = *c;
    }
    auto s = reg->offer(o, &why);
    if (!s) return refused(why);
    if (!o.to_server.empty()) {
      // Exported first, then announced: the receiver can reach what it sees.
      std::string pwhy;
      auto p = publish(*reg, &pwhy);
      if (p)
        p = run_peer(conf, o.to_server,
                     {"offer", "--owner", o.from + "@" + conf.address, "--to", o.to_container, "--url",
                      export_url(conf, s->id), rw ? "--rw" : "--ro", "--", o.name},
                     &pwhy);
      if (!p) {
        std::string ignored;
        (void)reg->revoke(o.from, o.name, &ignored);
        (void)publish(*reg, &ignored);
        return refused("offer " + o.name + " to " + to + ": " + pwhy + " (withdrawn)");
      }
    }
    std::printf("offered %s from %s:%s to %s (%s)\n", s->name.c_str(), s->owner.c_str(),
                escape(s->source).c_str(), audience(*s).c_str(), std::string(to_string(s->mode)).c_str());
    return 0;
  }

  if (*revoke) {
    auto out = outbound(*reg, from, name);
    if (!reg->revoke(from, name, &why)) return refused(why);
    if (out) {
      // The export goes first: from then on the peer's requests fail.
      int rc = 0;
      if (!publish(*reg, &why)) rc = refused("revoke " + name + ": " + why);
      auto conf = read_server_conf(pool, &why);
      if (conf && !run_peer(*conf, out->peer, {"revoke", "--owner", out->owner + "@" + conf->address, "--", name}, &why))
        rc = refused("revoke " + name + ": " + why + " (its export is removed)");
      if (rc) return rc;
    }
    std::printf("revoked %s\n", name.c_str());
    return 0;
  }

  if (*mode) {
    if (!mro && !mrw) return usage("mode: give --ro or --rw");
    Mode m = mro ? Mode::ro : Mode::rw;
    auto out = outbound(*reg, from, name);
    if (!reg->set_mode(from, name, m, &why)) return refused(why);
    if (out) {
      if (!publish(*reg, &why)) return refused("mode " + name + ": " + why);
      auto conf = read_server_conf(pool, &why);
      if (!conf) return refused(why);
      if (!run_peer(*conf, out->peer, {"mode", "--owner", out->owner + "@" + conf->address,
                                       m == Mode::ro ? "--ro" : "--rw", "--", name}, &why))
        return refused("mode " + name + ": " + why + " (its export is " + std::string(to_string(m)) + ")");
    }
    std::printf("%s is %s\n", name.c_str(), std::string(to_string(m)).c_str());
    return 0;
  }

  for (auto& [verb, sub] : verbs) {
    if (!*sub) continue;
    // A share from another server: its owner's server is told after.
    std::optional<Received> inbound;
    if (auto rs = reg->shares_for(container, false))
      for (auto& r : *rs)
        if (r.name == name && !r.url.empty()) inbound = r;
    hoody::Status s = verb == "accept"   ? reg->accept(container, name, &why)
                      : verb == "reject" ? reg->reject(container, name, &why)
                                         : reg->leave(container, name, &why);
    if (!s) return refused(why);
    if (inbound) {
      auto conf = read_server_conf(pool, &why);
      std::string owner_c = inbound->owner.substr(0, inbound->owner.find('@'));
      if (!conf || !run_peer(*conf, inbound->peer,
                             {"state", "--owner", owner_c, "--receiver", container, "--" + verb, "--", name},
                             &why))
        return refused(verb + " " + name + ": done here, but the owner's server was not told: " + why);
    }
    std::printf("%s %s for %s\n", verb == "accept" ? "accepted" : verb == "reject" ? "rejected" : "left",
                name.c_str(), container.c_str());
    return 0;
  }

  if (*list) {
    if (!container.empty()) {
      auto c = reg->container(container);
      if (!c) return refused("list: " + c.error().message());
      if (!*c) return refused("list: no such container " + container);
      if (json) {
        auto j = container_json(*reg, container, all);
        if (!j) return refused("list: " + j.error().message());
        print_json(*j);
        return 0;
      }
      auto offers = reg->offered_by(container, all);
      auto receives = reg->shares_for(container, all);
      if (!offers || !receives) return refused("list: cannot read shares.db");
      std::vector<int> w{8, 24, 24, 4, 8};
      row({"ROLE", "NAME", "PEER", "MODE", "STATE", "SOURCE"}, w);
      for (auto& s : *offers)
        row({"offers", s.name, audience(s), std::string(to_string(s.mode)), std::string(to_string(s.state)),
             s.source}, w);
      for (auto& r : *receives)
        row({"receives", r.name, r.owner, std::string(to_string(r.mode)), std::string(to_string(r.state)),
             r.source}, w);
      return 0;
    }
    auto shares = reg->list(all);
    if (!shares) return refused("list: " + shares.error().message());
    if (json) {
      nlohmann::json arr = nlohmann::json::array();
      for (auto& s : *shares) arr.push_back(to_json(s));
      print_json({{"shares", arr}});
      return 0;
    }
    std::vector<int> w{16, 24, 4, 24, 8, 32};
    row({"OWNER", "NAME", "MODE", "TO", "STATE", "RECEIVERS", "SOURCE"}, w);
    for (auto& s : *shares)
      row({s.owner, s.name, std::string(to_string(s.mode)), audience(s), std::string(to_string(s.state)),
           receivers(s), s.source}, w);
    return 0;
  }

  if (app.got_subcommand("exports")) {
    if (!publish(*reg, &why)) return refused("exports: " + why);
    std::printf("exports written\n");
    return 0;
  }

  if (*remote) {
    if (*r_offer) {
      if (ro == rw) return usage("remote offer: give --ro or --rw");
      Inbound in;
      in.owner = owner;
      in.peer = owner.substr(owner.find('@') == std::string::npos ? owner.size() : owner.find('@') + 1);
      in.url = url;
      in.to_container = to;
      in.mode = rw ? Mode::rw : Mode::ro;
      in.name = name;
      auto s = reg->receive(in, &why);
      if (!s) return refused(why);
      std::printf("received %s from %s for %s\n", name.c_str(), owner.c_str(), to.c_str());
      return 0;
    }
    if (*r_revoke) {
      if (!reg->revoke(owner, name, &why)) return refused(why);
      std::printf("revoked %s\n", name.c_str());
      return 0;
    }
    if (*r_mode) {
      if (ro == rw) return usage("remote mode: give --ro or --rw");
      if (!reg->set_mode(owner, name, rw ? Mode::rw : Mode::ro, &why)) return refused(why);
      std::printf("%s is %s\n", name.c_str(), rw ? "rw" : "ro");
      return 0;
    }
    if (int(racc) + int(rrej) + int(rleave) != 1) return usage("remote state: give one of --accept --reject --leave");
    Action a = racc ? Action::accept : rrej ? Action::reject : Action::leave;
    if (!reg->remote_state(owner, receiver, name, a, &why)) return refused(why);
    // A rejected or left share needs no export any more.
    if (a != Action::accept && !publish(*reg, &why)) return refused(why);
    std::printf("%s: %s\n", name.c_str(), std::string(to_string(a)).c_str());
    return 0;
  }

  if (*log) {
    auto evs = reg->events(limit);
    if (!evs) return refused("log: " + evs.error().message());
    if (json) {
      nlohmann::json arr = nlohmann::json::array();
      for (auto& e : *evs) arr.push_back(to_json(e));
      print_json({{"events", arr}});
      return 0;
    }
    for (auto& e : *evs)
      row({rfc3339(e.time), e.actor.empty() ? "-" : e.actor, e.action, e.subject, e.result, e.detail},
          {20, 16, 16, 32, 0});
    return 0;
  }
  return 0;
}
