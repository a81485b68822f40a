// A progress line on stderr for long transfers (send, receive, copy, sync):
// bytes, rate and, when the size is known, an ETA.  On a terminal the line is
// redrawn in place every half second (the first once 1 MiB or 100 ms has
// passed, so that its rate means something); on
// anything else one line a minute, so that a log is not flooded.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "store/transfer.hpp"

namespace hoody::snapcli {

class Progress {
public:
  Progress(const char* verb, bool on) : verb_(verb), on_(on), tty_(::isatty(2)) {
    t0_ = last_ = std::chrono::steady_clock::now();
  }
  bool on_terminal() const { return on_ && tty_; }
  // The clock starts again: the rate counts from here, `done` bytes in (a
  // copy's stream, once the sender has measured what it will send).
  void restart(uint64_t done) {
    t0_ = last_ = std::chrono::steady_clock::now();
    base_ = done;
  }
  void update(uint64_t done, uint64_t expected) {
    if (!on_) return;
    auto now = std::chrono::steady_clock::now();
    auto every = tty_ ? std::chrono::milliseconds(500) : std::chrono::milliseconds(60000);
    bool first = tty_ && !shown_ &&
                 (done - base_ >= (1u << 20) || now - t0_ >= std::chrono::milliseconds(100));
    if (!first && now - last_ < every) return;
    last_ = now;
    shown_ = true;
    print(done, expected, now, false);
  }
  // The last line: on a terminal it ends the redrawn line; elsewhere only
  // when a line was printed before (a short transfer prints none).
  void done(uint64_t bytes) {
    if (!on_ || (!tty_ && !shown_ && !always_last_)) return;
    print(bytes, 0, std::chrono::steady_clock::now(), true);
  }
  // done() prints its line even when the transfer was short (send, receive
  // --progress: asked for by name).
  Progress& always_last() {
    always_last_ = true;
    return *this;
  }

private:
  void print(uint64_t done, uint64_t expected, std::chrono::steady_clock::time_point now,
             bool last) {
    using hoody::snapfs::xfer::human_bytes;
    double secs = std::chrono::duration<double>(now - t0_).count();
    double rate = secs > 0 ? static_cast<double>(done - base_) / secs : 0;
    std::string line = std::string(verb_) + " " + human_bytes(static_cast<double>(done));
    if (expected > done && !last) line += " of ~" + human_bytes(static_cast<double>(expected));
    line += ", " + human_bytes(rate) + "/s";
    if (expected > done && rate > 0 && !last) {
      long eta = static_cast<long>(static_cast<double>(expected - done) / rate);
      char b[32];
      std::snprintf(b, sizeof b, ", ETA %ld:%02ld", eta / 60, eta % 60);
      line += b;
    }
    if (last) {
      char b[32];
      std::snprintf(b, sizeof b, " in %.1f s", secs);
      line += b;
    }
    if (tty_) std::fprintf(stderr, "\r\033[K%s%s", line.c_str(), last ? "\n" : "");
    else std::fprintf(stderr, "hoody-snap: %s\n", line.c_str());
    std::fflush(stderr);
  }
  const char* verb_;
  bool on_, tty_;
  bool shown_ = false, always_last_ = false;
  uint64_t base_ = 0;
  std::chrono::steady_clock::time_point t0_, last_;
};

}  // namespace hoody::snapcli
