// A pool directory in /tmp for registry tests: containers/<id>/storage are
// plain directories (the registry needs no BTRFS).  Removed, with the pool's
// change signal, on destruction.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <doctest/doctest.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "share/change_signal.hpp"
#include "share/registry.hpp"

namespace share_test {

struct TempPool {
  std::string path;
  TempPool() {
    char tmpl[] = "/tmp/hoody-share-test-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempPool() {
    int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
      hoody::sharefs::ChangeSignal::remove(hoody::sharefs::ChangeSignal::name_for_pool(fd));
      ::close(fd);
    }
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempPool(const TempPool&) = delete;
  TempPool& operator=(const TempPool&) = delete;

  std::string storage(const std::string& c) const { return path + "/containers/" + c + "/storage"; }
  // Makes POOL/containers/c/storage/sub.
  std::string mkdir(const std::string& c, const std::string& sub = "") const {
    std::string p = storage(c) + (sub.empty() ? "" : "/" + sub);
    std::filesystem::create_directories(p);
    return p;
  }
};

// The pool's registry, opened (the test stops with the reason if it cannot).
inline hoody::sharefs::Registry open_reg(const TempPool& p) {
  std::string why;
  auto r = hoody::sharefs::Registry::open(p.path, &why);
  REQUIRE_MESSAGE(r.ok(), why);
  return std::move(*r);
}

}  // namespace share_test
