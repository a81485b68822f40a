// The hoody send stream (issue 9): one snapshot, all its scope subvolumes and
// its metadata, as one byte stream that `hoody-snap send` writes and
// `hoody-snap receive` reads (over a pipe or ssh).  Pure format code here; the
// store's send()/receive() (store/transfer.cpp) produce and consume it.
//
// Layout (all integers little-endian):
//   "hoody-send\0"  11 bytes magic
//   u32 version     kStreamVersion (1)
//   u32 length      of the header JSON (at most kMaxHeaderBytes)
//   header JSON     see Header (to_json/header_from_json)
//   u32 crc32c      of the header JSON (btrfs send's crc32c, seed 0)
//   for each subvolume of header.subvolumes, in order: its btrfs send stream
//     in frames: u32 n (1..kMaxFrame) + n bytes; a frame with n == 0 ends it
//   "hoody-end\0"   10 bytes trailer magic
//   u64 bytes       the sum of every frame's n: a truncated stream has no
//                   trailer (or a wrong count) and is refused
// The btrfs send streams carry a crc32c per command, which btrfs receive
// checks: a garbled byte inside them is refused there.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "hoody/result.hpp"
#include "../snapshot.hpp"

namespace hoody::snapfs::xfer {

inline constexpr std::string_view kMagic{"hoody-send\0", 11};
inline constexpr std::string_view kTrailerMagic{"hoody-end\0", 10};
inline constexpr uint32_t kStreamVersion = 1;
inline constexpr uint32_t kMaxHeaderBytes = 1u << 20;
inline constexpr uint32_t kMaxFrame = 4u << 20;

// One scope subvolume of the sent snapshot.
struct SubvolumeHeader {
  std::string name;            // "storage"
  std::string uuid;            // the sender's subvolume uuid
  std::string received_uuid;   // the sender's received_uuid ("" if none)
  uint64_t ctransid = 0;
  // Incremental: the key of the parent's subvolume of the same name, as btrfs
  // send names it (its received_uuid if set, else its uuid); "" for a full stream.
  std::string parent_key;
  // What the receiver's subvolume must carry as received_uuid: received_uuid
  // if set, else uuid (btrfs send's rule).
  std::string key() const { return received_uuid.empty() ? uuid : received_uuid; }
};

struct ParentHeader {
  std::string name;
  std::string uuid;  // the hoody snapshot uuid on the sender
  std::vector<SubvolumeHeader> subvolumes;  // its name, uuid, received_uuid
};

struct Header {
  Snapshot snapshot;  // name, uuid, created, expires, type, description, consistency, busy, nested
  std::vector<SubvolumeHeader> subvolumes;  // sorted by name
  std::optional<ParentHeader> parent;
  // Bytes of the btrfs streams, when the sender estimated them (0: unknown).
  uint64_t estimated_bytes = 0;
};

nlohmann::json to_json(const Header& h);
// EBADMSG with *why for anything malformed (bad names, uuids, types).
Result<Header> header_from_json(const nlohmann::json& j, std::string* why);

// The bytes before the first frame.
std::string encode_preamble(const Header& h);
std::string encode_trailer(uint64_t bytes);
// A little-endian u32 of the stream.
uint32_t get_le32(const unsigned char* p);

// "1.5 GiB", "12.0 MiB/s"
std::string human_bytes(double bytes);

}  // namespace hoody::snapfs::xfer
