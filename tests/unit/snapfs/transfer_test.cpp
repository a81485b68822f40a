// The hoody send stream's header (store/transfer.hpp): what send writes,
// receive reads back, and what receive refuses before it acts.
#include <doctest/doctest.h>

#include "hoody/send_stream.hpp"
#include "store/transfer.hpp"

using namespace hoody;
using namespace hoody::snapfs;
using json = nlohmann::json;

namespace {
const char* kU1 = "0123abcd-0000-4000-8000-000000000001";
const char* kU2 = "0123abcd-0000-4000-8000-000000000002";
const char* kU3 = "0123abcd-0000-4000-8000-000000000003";

xfer::Header sample() {
  xfer::Header h;
  h.snapshot.name = "nightly-2";
  h.snapshot.uuid = kU1;
  h.snapshot.created = Clock::from_time_t(1795703423) + std::chrono::nanoseconds(123);
  h.snapshot.type = "sync";
  h.snapshot.description = "line\nwith \x1b escape";
  h.snapshot.consistency = kTransaction;
  h.snapshot.busy = {"databases/app.db"};
  h.subvolumes.push_back({"databases", kU2, "", 7, kU3});
  h.subvolumes.push_back({"storage", kU3, kU2, 9, ""});
  h.parent = xfer::ParentHeader{"nightly-1", kU2, {{"databases", kU3, "", 5, ""}}};
  h.estimated_bytes = 12345;
  return h;
}
}  // namespace

TEST_CASE("a header survives the round trip") {
  auto h = sample();
  std::string why;
  auto back = xfer::header_from_json(xfer::to_json(h), &why);
  REQUIRE_MESSAGE(back, why);
  CHECK(back->snapshot.name == h.snapshot.name);
  CHECK(back->snapshot.uuid == h.snapshot.uuid);
  CHECK(back->snapshot.created == h.snapshot.created);
  CHECK(back->snapshot.type == "sync");
  CHECK(back->snapshot.description == h.snapshot.description);
  CHECK(back->snapshot.consistency == kTransaction);
  CHECK(back->snapshot.busy == h.snapshot.busy);
  REQUIRE(back->subvolumes.size() == 2);
  CHECK(back->subvolumes[0].parent_key == kU3);
  CHECK(back->subvolumes[1].key() == kU2);  // received_uuid wins
  CHECK(back->subvolumes[0].key() == kU2);  // else its uuid
  REQUIRE(back->parent);
  CHECK(back->parent->name == "nightly-1");
  CHECK(back->estimated_bytes == 12345);
}

TEST_CASE("the preamble: magic, version, length, JSON, crc32c") {
  std::string p = xfer::encode_preamble(sample());
  REQUIRE(p.size() > 19);
  CHECK(p.substr(0, 11) == std::string("hoody-send\0", 11));
  CHECK(static_cast<unsigned char>(p[11]) == 1);
  uint32_t len = static_cast<unsigned char>(p[15]) | static_cast<unsigned char>(p[16]) << 8 |
                 static_cast<unsigned char>(p[17]) << 16 |
                 static_cast<uint32_t>(static_cast<unsigned char>(p[18])) << 24;
  CHECK(p.size() == 19 + len + 4);
  std::string body = p.substr(19, len);
  CHECK(json::parse(body)["format"] == "hoody-send");
  uint32_t crc = send::crc32c(0, body.data(), body.size());
  CHECK(p.substr(19 + len) == std::string(reinterpret_cast<const char*>(&crc), 4));
  CHECK(xfer::encode_trailer(258) == std::string("hoody-end\0\x02\x01\0\0\0\0\0\0", 18));
}

TEST_CASE("headers that would reach outside the staging directory or lie are refused") {
  std::string why;
  auto bad = [&](const std::function<void(json&)>& edit) {
    json j = xfer::to_json(sample());
    edit(j);
    return !xfer::header_from_json(j, &why);
  };
  CHECK(bad([](json& j) { j["format"] = "btrfs"; }));
  CHECK(bad([](json& j) { j["subvolumes"][0]["name"] = "../etc"; }));
  CHECK(bad([](json& j) { j["subvolumes"][0]["name"] = ".snapshots"; }));
  CHECK(bad([](json& j) { j["subvolumes"][0]["name"] = "a/b"; }));
  CHECK(bad([](json& j) { j["subvolumes"][0]["name"] = ""; }));
  CHECK(bad([](json& j) { j["subvolumes"][1]["name"] = "databases"; }));  // twice
  CHECK(bad([](json& j) { j["subvolumes"] = json::array(); }));
  CHECK(bad([](json& j) { j["subvolumes"][0]["uuid"] = "nope"; }));
  CHECK(bad([](json& j) { j["subvolumes"][0]["parent_key"] = "ABC"; }));
  CHECK(bad([](json& j) { j["snapshot"]["uuid"] = "x"; }));
  CHECK(bad([](json& j) { j["snapshot"].erase("created_ns"); }));
  CHECK(bad([](json& j) { j["snapshot"]["description"] = std::string(5000, 'd'); }));
  CHECK(bad([](json& j) { j["parent"] = nullptr; }));  // incremental without its parent
  CHECK_FALSE(bad([](json&) {}));
  // An unknown consistency is "crash", never trusted as "transaction".
  json j = xfer::to_json(sample());
  j["snapshot"]["consistency"] = "perfect";
  CHECK(xfer::header_from_json(j, &why)->snapshot.consistency == kCrash);
}

TEST_CASE("human_bytes") {
  CHECK(xfer::human_bytes(0) == "0 B");
  CHECK(xfer::human_bytes(1023) == "1023 B");
  CHECK(xfer::human_bytes(1536) == "1.5 KiB");
  CHECK(xfer::human_bytes(1073741824.0) == "1.0 GiB");
}
