#include <doctest/doctest.h>
#include <endian.h>

#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "hoody/send_stream.hpp"

using namespace hoody;
using namespace hoody::send;

namespace doctest {
template <> struct StringMaker<std::vector<std::string>> {
  static String convert(const std::vector<std::string>& v) {
    std::string s = "{";
    for (const auto& x : v) s += "\"" + x + "\" ";
    return (s + "}").c_str();
  }
};
}  // namespace doctest

namespace {

// Builds a send stream byte by byte, the way the kernel writes it.
class StreamBuilder {
public:
  explicit StreamBuilder(uint32_t version = 1) : version_(version) {
    buf_.append("btrfs-stream", 12);
    buf_.push_back('\0');
    put32(buf_, version);
  }

  StreamBuilder& cmd(Cmd c, std::initializer_list<std::string> tlvs) {
    std::string payload;
    for (const auto& t : tlvs) payload += t;
    std::string hdr;
    put32(hdr, static_cast<uint32_t>(payload.size()));
    put16(hdr, static_cast<uint16_t>(c));
    put32(hdr, 0);
    uint32_t crc = crc32c(crc32c(0, hdr.data(), hdr.size()), payload.data(), payload.size());
    std::string crcle;
    put32(crcle, crc);
    hdr.replace(6, 4, crcle);
    buf_ += hdr;
    buf_ += payload;
    return *this;
  }

  static std::string str(Attr a, std::string_view v) {
    std::string t;
    put16(t, static_cast<uint16_t>(a));
    put16(t, static_cast<uint16_t>(v.size()));
    t += v;
    return t;
  }
  static std::string u64(Attr a, uint64_t v) {
    std::string t;
    put16(t, static_cast<uint16_t>(a));
    put16(t, 8);
    put64(t, v);
    return t;
  }
  static std::string ts(Attr a, uint64_t sec, uint32_t nsec) {
    std::string t;
    put16(t, static_cast<uint16_t>(a));
    put16(t, 12);
    put64(t, sec);
    put32(t, nsec);
    return t;
  }
  // v2: A_DATA with only a type; the rest of the command is the data.
  static std::string data_v2(std::string_view v) {
    std::string t;
    put16(t, static_cast<uint16_t>(Attr::data));
    t += v;
    return t;
  }

  const std::string& bytes() const { return buf_; }

  static void put16(std::string& s, uint16_t v) {
    v = htole16(v);
    s.append(reinterpret_cast<const char*>(&v), 2);
  }
  static void put32(std::string& s, uint32_t v) {
    v = htole32(v);
    s.append(reinterpret_cast<const char*>(&v), 4);
  }
  static void put64(std::string& s, uint64_t v) {
    v = htole64(v);
    s.append(reinterpret_cast<const char*>(&v), 8);
  }

private:
  uint32_t version_;
  std::string buf_;
};

using B = StreamBuilder;

std::string P(std::string_view p) { return B::str(Attr::path, p); }
std::string To(std::string_view p) { return B::str(Attr::path_to, p); }
std::string Link(std::string_view p) { return B::str(Attr::path_link, p); }

std::vector<std::string> lines(const std::vector<Change>& cs) {
  std::vector<std::string> out;
  for (const auto& c : cs) out.push_back(format(c));
  return out;
}

std::vector<std::string> diff_of(const StreamBuilder& b) {
  auto s = parse(b.bytes());
  REQUIRE(s.ok());
  return lines(diff(s->commands));
}

using Lines = std::vector<std::string>;

}  // namespace

TEST_CASE("crc32c is Castagnoli without inversion") {
  // The standard check value of CRC-32C ("123456789") uses ~0 in and out.
  CHECK((crc32c(~0u, "123456789", 9) ^ ~0u) == 0xE3069283u);
  CHECK(crc32c(0, "", 0) == 0);
  // Incremental == one shot.
  CHECK(crc32c(crc32c(0, "1234", 4), "56789", 5) == crc32c(0, "123456789", 9));
}

TEST_CASE("parse reads commands and attributes") {
  uint8_t uuid[16];
  for (int i = 0; i < 16; ++i) uuid[i] = static_cast<uint8_t>(i + 1);
  B b;
  b.cmd(Cmd::snapshot, {P("snap"), B::str(Attr::uuid, std::string_view(reinterpret_cast<char*>(uuid), 16)),
                        B::u64(Attr::ctransid, 42)})
      .cmd(Cmd::mkfile, {P("o257-5-0"), B::u64(Attr::ino, 257)})
      .cmd(Cmd::rename, {P("o257-5-0"), To("dir/file")})
      .cmd(Cmd::chown, {P("dir/file"), B::u64(Attr::uid, 1000), B::u64(Attr::gid, 100)})
      .cmd(Cmd::utimes, {P("dir/file"), B::ts(Attr::atime, 1, 2), B::ts(Attr::mtime, 3, 4),
                         B::ts(Attr::ctime, 5, 6)})
      .cmd(Cmd::set_xattr, {P("dir/file"), B::str(Attr::xattr_name, "user.x"),
                            B::str(Attr::xattr_data, "abc")})
      .cmd(Cmd::update_extent, {P("dir/file"), B::u64(Attr::file_offset, 4096), B::u64(Attr::size, 8192)})
      .cmd(Cmd::end, {});
  auto s = parse(b.bytes());
  REQUIRE(s.ok());
  CHECK(s->version == 1);
  REQUIRE(s->commands.size() == 8);
  const auto& c = s->commands;
  CHECK(cmd_name(c[0].cmd) == "snapshot");
  CHECK(c[0].uuid == "01020304-0506-0708-090a-0b0c0d0e0f10");
  CHECK(c[0].ctransid == 42);
  CHECK(c[1].ino == 257);
  CHECK(c[2].path == "o257-5-0");
  CHECK(c[2].path_to == "dir/file");
  CHECK(c[3].uid == 1000);
  CHECK(c[3].gid == 100);
  CHECK(c[4].mtime.tv_sec == 3);
  CHECK(c[4].mtime.tv_nsec == 4);
  CHECK(c[5].xattr_name == "user.x");
  CHECK(c[5].data_len == 3);
  CHECK(c[6].file_offset == 4096);
  CHECK(c[6].size == 8192);
  CHECK(cmd_name(c[7].cmd) == "end");
  CHECK(cmd_name(999) == "cmd999");
}

TEST_CASE("parse rejects bad streams") {
  B b;
  b.cmd(Cmd::mkdir, {P("d")}).cmd(Cmd::end, {});
  std::string good = b.bytes();
  REQUIRE(parse(good).ok());

  SUBCASE("bad magic") {
    std::string s = good;
    s[0] = 'x';
    CHECK(parse(s).err() == EBADMSG);
    CHECK(parse("").err() == EBADMSG);
  }
  SUBCASE("crc mismatch in payload") {
    std::string s = good;
    s[kStreamHeaderSize + kCmdHeaderSize + 4] ^= 1;  // a byte of the path
    CHECK(parse(s).err() == EBADMSG);
  }
  SUBCASE("crc mismatch in header") {
    std::string s = good;
    s[kStreamHeaderSize + 4] ^= 1;  // the command number
    CHECK(parse(s).err() == EBADMSG);
  }
  SUBCASE("truncated") {
    for (std::size_t n = kStreamHeaderSize + 1; n < good.size(); ++n) {
      if (n == good.size() - kCmdHeaderSize) continue;  // a clean cut before `end`
      CAPTURE(n);
      CHECK(parse(good.substr(0, n)).err() == EBADMSG);
    }
  }
  SUBCASE("TLV longer than its command") {
    std::string s = good;
    // Path TLV length 1 -> 200 and fix the crc: the TLV check must catch it.
    std::size_t tlv = kStreamHeaderSize + kCmdHeaderSize;
    s[tlv + 2] = static_cast<char>(200);
    std::string hdr = s.substr(kStreamHeaderSize, kCmdHeaderSize);
    std::memset(hdr.data() + 6, 0, 4);
    uint32_t len = 5;
    uint32_t crc = crc32c(crc32c(0, hdr.data(), hdr.size()), s.data() + tlv, len);
    crc = htole32(crc);
    std::memcpy(s.data() + kStreamHeaderSize + 6, &crc, 4);
    CHECK(parse(s).err() == EBADMSG);
  }
  SUBCASE("unknown version") {
    B v9(9);
    CHECK(parse(v9.bytes()).err() == EPROTONOSUPPORT);
  }
}

TEST_CASE("parse v2: A_DATA runs to the end of the command") {
  B b(2);
  b.cmd(Cmd::write, {P("f"), B::u64(Attr::file_offset, 0), B::data_v2(std::string(70000 % 1000, 'x'))})
      .cmd(Cmd::end, {});
  auto s = parse(b.bytes());
  REQUIRE(s.ok());
  CHECK(s->version == 2);
  REQUIRE(s->commands.size() == 2);
  CHECK(s->commands[0].path == "f");
  CHECK(s->commands[0].data_len == 70000 % 1000);
  // In v1 the same bytes are a malformed TLV.
  std::string v1 = b.bytes();
  v1[13] = 1;
  CHECK(parse(v1).err() == EBADMSG);
}

TEST_CASE("unknown commands and attributes are kept and skipped") {
  B b;
  b.cmd(static_cast<Cmd>(77), {B::str(static_cast<Attr>(99), "zz"), P("x")});
  auto s = parse(b.bytes());
  REQUIRE(s.ok());
  CHECK(s->commands[0].cmd == 77);
  CHECK(s->commands[0].path == "x");
  CHECK(diff(s->commands).empty());
}

TEST_CASE("diff: the measured stream of research Appendix B") {
  B b;
  b.cmd(Cmd::snapshot, {P("s-after")})
      .cmd(Cmd::update_extent, {P("f1"), B::u64(Attr::file_offset, 0), B::u64(Attr::size, 24)})
      .cmd(Cmd::unlink, {P("f2")})
      .cmd(Cmd::link, {P("f3-renamed"), Link("f3")})
      .cmd(Cmd::unlink, {P("f3")})
      .cmd(Cmd::chmod, {P("f4"), B::u64(Attr::mode, 0600)})
      .cmd(Cmd::mkdir, {P("o2258-17-0")})
      .cmd(Cmd::rename, {P("o2258-17-0"), To("newdir")})
      .cmd(Cmd::mkfile, {P("o2259-17-0")})
      .cmd(Cmd::rename, {P("o2259-17-0"), To("newdir/n")})
      .cmd(Cmd::update_extent, {P("newdir/n")})
      .cmd(Cmd::symlink, {P("o2260-17-0"), Link("/etc/passwd")})
      .cmd(Cmd::rename, {P("o2260-17-0"), To("lnk")})
      .cmd(Cmd::utimes, {P("")})
      .cmd(Cmd::utimes, {P("f1")})
      .cmd(Cmd::utimes, {P("f3-renamed")})
      .cmd(Cmd::utimes, {P("newdir")})
      .cmd(Cmd::utimes, {P("newdir/n")})
      .cmd(Cmd::end, {});
  CHECK(diff_of(b) == Lines{"M f1", "- f2", "R f3 -> f3-renamed", "M f4", "+ lnk", "+ newdir",
                            "+ newdir/n"});
}

TEST_CASE("diff: a renamed directory and changes beneath it") {
  B b;
  b.cmd(Cmd::rename, {P("d"), To("e")})
      .cmd(Cmd::update_extent, {P("e/x")})
      .cmd(Cmd::mkfile, {P("o300-9-0")})
      .cmd(Cmd::rename, {P("o300-9-0"), To("e/new")})
      .cmd(Cmd::rename, {P("e/sub"), To("e/sub2")})
      .cmd(Cmd::chmod, {P("e/sub2/deep")})
      .cmd(Cmd::utimes, {P("e")})
      .cmd(Cmd::utimes, {P("e/sub2")});
  CHECK(diff_of(b) == Lines{"R d -> e", "R d/sub -> e/sub2", "+ e/new", "M e/sub2/deep", "M e/x"});
}

TEST_CASE("diff: a deleted tree goes through an orphan name") {
  B b;
  b.cmd(Cmd::rename, {P("d"), To("o260-7-0")})
      .cmd(Cmd::unlink, {P("o260-7-0/a")})
      .cmd(Cmd::rmdir, {P("o260-7-0/sub")})
      .cmd(Cmd::rmdir, {P("o260-7-0")})
      .cmd(Cmd::utimes, {P("")});
  CHECK(diff_of(b) == Lines{"- d", "- d/a", "- d/sub"});
}

TEST_CASE("diff: an existing entry orphanized and renamed into place") {
  // a and b swapped names: b goes to an orphan name first.
  B b;
  b.cmd(Cmd::rename, {P("b"), To("o258-3-0")})
      .cmd(Cmd::rename, {P("a"), To("b")})
      .cmd(Cmd::rename, {P("o258-3-0"), To("a")});
  CHECK(diff_of(b) == Lines{"R a -> b", "R b -> a"});
}

TEST_CASE("diff: hard links, name reuse, dedup") {
  SUBCASE("a link kept beside its original is an addition") {
    B b;
    b.cmd(Cmd::link, {P("hard"), Link("orig")}).cmd(Cmd::utimes, {P("orig")});
    CHECK(diff_of(b) == Lines{"+ hard", "M orig"});
  }
  SUBCASE("a link to a file created in this stream") {
    B b;
    b.cmd(Cmd::mkfile, {P("o1-1-0")})
        .cmd(Cmd::rename, {P("o1-1-0"), To("x")})
        .cmd(Cmd::link, {P("y"), Link("x")});
    CHECK(diff_of(b) == Lines{"+ x", "+ y"});
  }
  SUBCASE("a name deleted and created again") {
    B b;
    b.cmd(Cmd::unlink, {P("a")})
        .cmd(Cmd::mkdir, {P("o5-1-0")})
        .cmd(Cmd::rename, {P("o5-1-0"), To("a")});
    CHECK(diff_of(b) == Lines{"+ a", "- a"});
  }
  SUBCASE("a renamed file with new content") {
    B b;
    b.cmd(Cmd::link, {P("new"), Link("old")})
        .cmd(Cmd::unlink, {P("old")})
        .cmd(Cmd::truncate, {P("new")})
        .cmd(Cmd::update_extent, {P("new")})
        .cmd(Cmd::utimes, {P("new")});
    CHECK(diff_of(b) == Lines{"M new", "R old -> new"});
  }
  SUBCASE("many metadata commands are one M") {
    B b;
    b.cmd(Cmd::chmod, {P("f")})
        .cmd(Cmd::chown, {P("f")})
        .cmd(Cmd::set_xattr, {P("f")})
        .cmd(Cmd::remove_xattr, {P("f")})
        .cmd(Cmd::clone, {P("f")})
        .cmd(Cmd::write, {P("f")})
        .cmd(Cmd::utimes, {P("f")})
        .cmd(Cmd::utimes, {P("d")});
    CHECK(diff_of(b) == Lines{"M d", "M f"});
  }
  SUBCASE("new special files") {
    B b;
    b.cmd(Cmd::mknod, {P("o1-1-0")})
        .cmd(Cmd::rename, {P("o1-1-0"), To("dev")})
        .cmd(Cmd::mkfifo, {P("o2-1-0")})
        .cmd(Cmd::rename, {P("o2-1-0"), To("fifo")})
        .cmd(Cmd::mksock, {P("o3-1-0")})
        .cmd(Cmd::rename, {P("o3-1-0"), To("sock")});
    CHECK(diff_of(b) == Lines{"+ dev", "+ fifo", "+ sock"});
  }
}

TEST_CASE("format escapes one change to one line") {
  CHECK(format(Change{ChangeKind::added, "a\nb", ""}) == "+ a\\nb");
  CHECK(format(Change{ChangeKind::renamed, "a\\b", "c\x01"}) == "R a\\\\b -> c\\x01");
  CHECK(format(Change{ChangeKind::removed, "x y", ""}) == "- x y");
  CHECK(format(Change{ChangeKind::modified, "m", ""}) == "M m");
}
