// The control client against a tiny server in the test: the address, a round
// trip, and every failure the client promises to report.
#include <doctest/doctest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>

#include "hoody/dbfs_control.hpp"

using namespace std::chrono_literals;
using hoody::UniqueFd;
using nlohmann::json;
namespace ctl = hoody::ctl;

namespace {

std::string unique_source(const char* tag) {
  return std::string("/test/dbfs-control/") + tag + "/" + std::to_string(::getpid());
}

// Accepts one connection and answers each datagram with answer(request).
// An empty answer means "do not reply"; "<close>" closes the connection.
class TinyServer {
public:
  TinyServer(const std::string& source, std::function<std::string(const std::string&)> answer)
      : answer_(std::move(answer)) {
    listen_.reset(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
    socklen_t len = 0;
    sockaddr_un addr = ctl::control_address(source, &len);
    REQUIRE(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), len) == 0);
    REQUIRE(::listen(listen_.get(), 4) == 0);
    thread_ = std::thread([this] { serve(); });
  }
  ~TinyServer() {
    stop_ = true;
    ::shutdown(listen_.get(), SHUT_RDWR);
    thread_.join();
  }

private:
  void serve() {
    UniqueFd c;
    while (!stop_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      c.reset(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (c) break;
    }
    char buf[70000];
    while (!stop_ && c) {
      pollfd p{c.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
      if (n <= 0) break;
      std::string a = answer_(std::string(buf, static_cast<size_t>(n)));
      if (a == "<close>") {
        c.reset();
        break;
      }
      if (!a.empty()) (void)::send(c.get(), a.data(), a.size(), MSG_NOSIGNAL);
    }
  }
  std::function<std::string(const std::string&)> answer_;
  UniqueFd listen_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

TEST_CASE("control_address: abstract, named after the source, truncated to fit") {
  socklen_t len = 0;
  sockaddr_un a = ctl::control_address("/pool/containers/c/databases", &len);
  CHECK(a.sun_family == AF_UNIX);
  CHECK(a.sun_path[0] == '\0');
  std::string name(a.sun_path + 1, len - offsetof(sockaddr_un, sun_path) - 1);
  CHECK(name == "hoody-dbfs-ctl:/pool/containers/c/databases");

  std::string longp = "/" + std::string(300, 'x');
  a = ctl::control_address(longp, &len);
  CHECK(len == sizeof(sockaddr_un));
  CHECK(std::string(a.sun_path + 1, 15) == "hoody-dbfs-ctl:");
}

TEST_CASE("connect without a server: ECONNREFUSED") {
  auto c = ctl::Client::connect(unique_source("absent"));
  REQUIRE(!c.ok());
  CHECK((c.error().value() == ECONNREFUSED || c.error().value() == ENOENT));
}

TEST_CASE("call: one request, one reply, both JSON") {
  std::string src = unique_source("roundtrip");
  TinyServer srv(src, [](const std::string& req) {
    json r = json::parse(req);
    return json{{"ok", true}, {"echo", r["op"]}}.dump();
  });
  auto c = ctl::Client::connect(src);
  REQUIRE(c.ok());
  for (const char* op : {"holders", "quiesce", "resume"}) {
    auto r = c->call({{"op", op}}, 1000ms);
    REQUIRE(r.ok());
    CHECK((*r)["ok"] == true);
    CHECK((*r)["echo"] == op);
  }
}

TEST_CASE("call: an ok:false reply is a value, with its errno name") {
  std::string src = unique_source("refusal");
  TinyServer srv(src, [](const std::string&) {
    return json{{"ok", false}, {"errno", "EBUSY"}, {"error", "held by another"}}.dump();
  });
  auto c = ctl::Client::connect(src);
  REQUIRE(c.ok());
  auto r = c->call({{"op", "quiesce"}}, 1000ms);
  REQUIRE(r.ok());
  CHECK((*r)["ok"] == false);
  CHECK(hoody::errno_from_name((*r)["errno"]) == EBUSY);
}

TEST_CASE("call: no reply -> ETIMEDOUT on time, and the connection is closed") {
  std::string src = unique_source("silent");
  TinyServer srv(src, [](const std::string&) { return std::string(); });
  auto c = ctl::Client::connect(src);
  REQUIRE(c.ok());
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->call({{"op", "quiesce"}}, 150ms);
  auto took = std::chrono::steady_clock::now() - t0;
  REQUIRE(!r.ok());
  CHECK(r.error().value() == ETIMEDOUT);
  CHECK(took >= 140ms);
  CHECK(took < 1000ms);
  auto again = c->call({{"op", "resume"}}, 150ms);
  REQUIRE(!again.ok());
  CHECK(again.error().value() == ENOTCONN);
}

TEST_CASE("call: the server closes -> ECONNRESET, at once") {
  std::string src = unique_source("closing");
  TinyServer srv(src, [](const std::string&) { return std::string("<close>"); });
  auto c = ctl::Client::connect(src);
  REQUIRE(c.ok());
  auto t0 = std::chrono::steady_clock::now();
  auto r = c->call({{"op", "holders"}}, 5000ms);
  REQUIRE(!r.ok());
  CHECK(r.error().value() == ECONNRESET);
  CHECK(std::chrono::steady_clock::now() - t0 < 2000ms);
}

TEST_CASE("call: a reply that is not a JSON object with ok -> EPROTO") {
  std::string src = unique_source("garbage");
  int n = 0;
  TinyServer srv(src, [&n](const std::string&) {
    return ++n == 1 ? std::string("not json") : std::string("[1,2]");
  });
  auto c = ctl::Client::connect(src);
  REQUIRE(c.ok());
  auto r = c->call({{"op", "holders"}}, 1000ms);
  REQUIRE(!r.ok());
  CHECK(r.error().value() == EPROTO);
}

TEST_CASE("call: a request larger than 64 KiB -> EMSGSIZE, the connection stays") {
  std::string src = unique_source("large");
  TinyServer srv(src, [](const std::string&) { return json{{"ok", true}}.dump(); });
  auto c = ctl::Client::connect(src);
  REQUIRE(c.ok());
  auto r = c->call({{"op", "holders"}, {"pad", std::string(70000, 'x')}}, 1000ms);
  REQUIRE(!r.ok());
  CHECK(r.error().value() == EMSGSIZE);
  auto ok = c->call({{"op", "holders"}}, 1000ms);
  REQUIRE(ok.ok());
  CHECK((*ok)["ok"] == true);
}
