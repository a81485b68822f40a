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

Status validate_name(std::string_view kind, std::string_view name, std::string* reason) {
  auto problem = name_problem(name);
  if (!problem) return {};
  if (reason) *reason = std::string(kind) + " " + quote_name(name) + ": " + *problem;
  return fail(name.size() > kMaxNameBytes ? ENAMETOOLONG : EINVAL);
}

}  // namespace hoody
