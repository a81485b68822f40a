// Result<T> and Errno: how every internal function of hoody reports failure.
//
// Shaped like std::expected<T, Errno> (C++23), which g++ 12 does not have in C++20.
// An Errno holds a positive errno value; a Result<T> holds either a T or an Errno.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace hoody {

// A positive errno value.  Errno{} is "no error" only as a default; a failed
// Result never holds 0.
class Errno {
public:
  constexpr Errno() = default;
  constexpr explicit Errno(int value) : value_(value < 0 ? -value : value) {}

  // The errno of the calling thread, read now.  Use it right after the failed
  // call and before anything that may clobber errno (close, logging, free).
  static Errno last() { return Errno(errno); }

  constexpr int value() const { return value_; }
  std::string message() const { return std::strerror(value_); }
  friend constexpr bool operator==(Errno a, Errno b) { return a.value_ == b.value_; }

private:
  int value_ = 0;
};

template <typename T> class [[nodiscard]] Result;

namespace detail {
struct Unexpected {
  Errno err;
};
}  // namespace detail

// fail(ENOENT) converts to any Result<T>.
constexpr detail::Unexpected fail(int err) { return {Errno(err)}; }
constexpr detail::Unexpected fail(Errno err) { return {err}; }

template <typename T> class [[nodiscard]] Result {
public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(detail::Unexpected u) : v_(std::in_place_index<1>, u.err) {}
  Result(Errno err) : v_(std::in_place_index<1>, err) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  Errno error() const { return ok() ? Errno() : std::get<1>(v_); }
  // The errno for a FUSE reply: 0 on success.
  int err() const { return ok() ? 0 : std::get<1>(v_).value(); }

  T value_or(T other) const& { return ok() ? value() : std::move(other); }

private:
  std::variant<T, Errno> v_;
};

template <> class [[nodiscard]] Result<void> {
public:
  Result() = default;
  Result(detail::Unexpected u) : err_(u.err) {}
  Result(Errno err) : err_(err) {}

  bool ok() const { return err_.value() == 0; }
  explicit operator bool() const { return ok(); }
  Errno error() const { return err_; }
  int err() const { return err_.value(); }

private:
  Errno err_{};
};

using Status = Result<void>;

// Propagate a failed Result from the current function:
//   HOODY_TRY(fd, sys::openat(dir, name, O_RDONLY));
#define HOODY_TRY_CONCAT2(a, b) a##b
#define HOODY_TRY_CONCAT(a, b) HOODY_TRY_CONCAT2(a, b)
#define HOODY_TRY(var, expr)                                  \
  auto HOODY_TRY_CONCAT(hoody_r_, __LINE__) = (expr);         \
  if (!HOODY_TRY_CONCAT(hoody_r_, __LINE__).ok())             \
    return ::hoody::fail(HOODY_TRY_CONCAT(hoody_r_, __LINE__).error()); \
  auto var = std::move(*HOODY_TRY_CONCAT(hoody_r_, __LINE__))
#define HOODY_CHECK(expr)                                     \
  do {                                                        \
    auto hoody_s_ = (expr);                                   \
    if (!hoody_s_.ok()) return ::hoody::fail(hoody_s_.error()); \
  } while (0)

}  // namespace hoody
