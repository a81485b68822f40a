// A list of calls with the errnos they may give, run in a child that prints
// one line per call and exits with the number of calls that did something
// else.  Checks live in the child (no doctest there); the test asserts on the
// exit code and prints the lines.
#pragma once

#include <cerrno>
#include <cstdio>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "rig.hpp"

namespace hoody::test {

struct Op {
  std::string name;
  std::function<long()> call;  // < 0 with errno set on failure
  std::vector<int> want;       // acceptable errnos; empty: must succeed
};

class OpList {
public:
  void add(std::string name, std::function<long()> call, std::initializer_list<int> want) {
    ops_.push_back({std::move(name), std::move(call), want});
  }
  // Runs every op; prints "ok|BAD name: got X (want A|B)"; returns the count of BADs.
  int run() const {
    int bad = 0;
    for (auto& op : ops_) {
      errno = 0;
      long r = op.call();
      int e = r < 0 ? errno : 0;
      bool good = false;
      std::string wants;
      for (int w : op.want) {
        good = good || e == w;
        wants += (wants.empty() ? "" : "|") + errname(w);
      }
      if (op.want.empty()) good = r >= 0, wants = "success";
      bad += good ? 0 : 1;
      std::printf("%s %s: got %s (want %s)\n", good ? "ok " : "BAD", op.name.c_str(),
                  r < 0 ? errname(e).c_str() : ("rc=" + std::to_string(r)).c_str(), wants.c_str());
      std::fflush(stdout);
    }
    std::fflush(stdout);
    return bad;
  }

private:
  std::vector<Op> ops_;
};

}  // namespace hoody::test
