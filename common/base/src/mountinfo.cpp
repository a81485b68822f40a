#include "hoody/mountinfo.hpp"

#include <fcntl.h>

#include <charconv>

#include "hoody/sys.hpp"

namespace hoody::mountinfo {

namespace {

// The next space-separated field of `line` (advancing it); empty at the end.
std::string_view next_field(std::string_view& line) {
  while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
  auto sp = line.find(' ');
  std::string_view f = line.substr(0, sp);
  line.remove_prefix(sp == std::string_view::npos ? line.size() : sp);
  return f;
}

template <typename T>
bool number(std::string_view s, T* out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool is_octal(char c) { return c >= '0' && c <= '7'; }

}  // namespace

std::string unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && is_octal(s[i + 1]) && is_octal(s[i + 2]) &&
        is_octal(s[i + 3])) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::optional<Mount> parse_line(std::string_view line) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  Mount m;
  std::string_view devno;
  if (!number(next_field(line), &m.id) || !number(next_field(line), &m.parent)) return std::nullopt;
  devno = next_field(line);
  auto colon = devno.find(':');
  if (colon == std::string_view::npos || !number(devno.substr(0, colon), &m.major) ||
      !number(devno.substr(colon + 1), &m.minor))
    return std::nullopt;
  std::string_view root = next_field(line), mnt = next_field(line), opts = next_field(line);
  if (root.empty() || mnt.empty() || opts.empty()) return std::nullopt;
  m.root = unescape(root);
  m.mount_point = unescape(mnt);
  m.options = std::string(opts);
  // Zero or more optional fields, then the separator "-".
  for (;;) {
    std::string_view f = next_field(line);
    if (f.empty()) return std::nullopt;
    if (f == "-") break;
    m.optional.emplace_back(f);
  }
  std::string_view type = next_field(line), source = next_field(line), super = next_field(line);
  if (type.empty()) return std::nullopt;
  m.fstype = unescape(type);
  m.source = unescape(source);
  m.super_options = unescape(super);
  return m;
}

std::vector<Mount> parse(std::string_view text) {
  std::vector<Mount> out;
  while (!text.empty()) {
    auto nl = text.find('\n');
    if (auto m = parse_line(text.substr(0, nl))) out.push_back(std::move(*m));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
  return out;
}

Result<std::vector<Mount>> read() {
  HOODY_TRY(text, sys::read_file(AT_FDCWD, "/proc/self/mountinfo"));
  return parse(text);
}

bool has_option(std::string_view options, std::string_view option) {
  while (!options.empty()) {
    auto comma = options.find(',');
    if (options.substr(0, comma) == option) return true;
    options.remove_prefix(comma == std::string_view::npos ? options.size() : comma + 1);
  }
  return false;
}

}  // namespace hoody::mountinfo
