#include "hoody/names.hpp"

#include <cstdio>

namespace hoody {

namespace {
bool allowed(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == ':' || c == '@' || c == '+' || c == '-';
}

std::string describe(unsigned char c) {
  switch (c) {
    case '/': return "'/'";
    case '\0': return "a NUL byte";
    case '\n': return "a newline";
    case ' ': return "a space";
    default: break;
  }
  char buf[32];
  if (c > 0x20 && c < 0x7f)
    std::snprintf(buf, sizeof buf, "'%c'", c);
  else
    std::snprintf(buf, sizeof buf, "the byte 0x%02x", c);
  return buf;
}
}  // namespace

std::optional<std::string> name_problem(std::string_view name) {
  if (name.empty()) return "name may not be empty";
  if (name.size() > kMaxNameBytes)
    return "name is " + std::to_string(name.size()) + " bytes, at most " +
           std::to_string(kMaxNameBytes) + " are allowed";
  if (name == "." || name == "..") return "name may not be '.' or '..'";
  for (unsigned char c : name)
    if (!allowed(c))
      return "name may not contain " + describe(c) + " (allowed: A-Z a-z 0-9 . _ : @ + -)";
  if (name.front() == '.') return "name may not start with '.' (reserved for control files)";
  if (name.front() == '-') return "name may not start with '-'";
  return std::nullopt;
}

std::string quote_name(std::string_view name) {
  constexpr std::size_t kMaxShown = 64;
  std::string out = "\"";
  std::size_t n = 0;
  for (unsigned char c : name) {
    if (n++ == kMaxShown) {
      out += "...";
      break;
    }
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  out += '"';
  return out;
}

namespace {
// The length of the UTF-8 sequence at s[i], 0 if it is not valid UTF-8
// (overlong forms, surrogates and code points above U+10FFFF are not).
std::size_t utf8_length(std::string_view s, std::size_t i) {
  auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[i + k]); };
  auto cont = [&](std::size_t k) { return i + k < s.size() && (b(k) & 0xc0) == 0x80; };
  unsigned char c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c >= 0xe0 && c <= 0xef) {
    if (!cont(1) || !cont(2)) return 0;
    if (c == 0xe0 && b(1) < 0xa0) return 0;  // overlong
    if (c == 0xed && b(1) >= 0xa0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xf0 && c <= 0xf4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    if (c == 0xf0 && b(1) < 0x90) return 0;  // overlong
    if (c == 0xf4 && b(1) >= 0x90) return 0;  // above U+10FFFF
    return 4;
  }
  return 0;
}
}  // namespace

std::string escape_control(std::string_view text, bool escape_backslash) {
  std::string out;
  out.reserve(text.size());
  char buf[16];
  for (std::size_t i = 0; i < text.size();) {
    auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      switch (c) {
        case '\n': out += "\\n"; break;
        case '\t': out += "\\t"; break;
        case '\r': out += "\\r"; break;
        default:
          std::snprintf(buf, sizeof buf, "\\x%02x", c);
          out += buf;
      }
      ++i;
      continue;
    }
    if (c == '\\') {
      out += escape_backslash ? "\\\\" : "\\";
      ++i;
      continue;
    }
    std::size_t n = utf8_length(text, i);
    if (n == 0) {
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
      ++i;
      continue;
    }
    if (n == 2 && c == 0xc2 && static_cast<unsigned char>(text[i + 1]) < 0xa0) {
      // U+0080..U+009F: the C1 controls (U+009B is CSI, an escape sequence by itself).
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(text[i + 1]));
      out += buf;
    } else {
      out.append(text.substr(i, n));
    }
    i += n;
  }
  return out;
}

Status validate_name(std::string_view kind, std::string_view name, std::string* reason) {
  auto problem = name_problem(name);
  if (!problem) return {};
  if (reason) *reason = std::string(kind) + " " + quote_name(name) + ": " + *problem;
  return fail(name.size() > kMaxNameBytes ? ENAMETOOLONG : EINVAL);
}

Status validate_snapshot_name(std::string_view name, std::string* reason) {
  HOODY_CHECK(validate_name("snapshot", name, reason));
  if (name.find("..") != std::string_view::npos) {
    if (reason)
      *reason = "snapshot " + quote_name(name) +
                ": name may not contain \"..\" (it separates the two names in .hoody/diff/A..B)";
    return fail(EINVAL);
  }
  return {};
}

}  // namespace hoody
