// Process helpers: run a command, or fork a child that runs a lambda.
//
// Output (stdout and stderr, merged) goes to a memfd, so a chatty child never
// blocks on a full pipe.  Children never make doctest assertions (they are
// another process); they report through their exit code and output.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace hoody::test {

using namespace std::chrono_literals;

inline constexpr uid_t kNobodyUid = 65534;
inline constexpr gid_t kNobodyGid = 65534;

struct ExitInfo {
  int exit_code = -1;  // when exited normally, else -1
  int signal = 0;      // the signal that killed it, else 0
  bool timed_out = false;
  std::string output;  // stdout + stderr

  bool ok() const { return exit_code == 0; }
  std::string describe() const;  // "exit 1", "killed by SIGSEGV", "timed out", + output
};

// Run argv[0] (searched on PATH); kill it after the timeout.
ExitInfo run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout = 60s);
// run() and throw std::runtime_error with the output when it does not exit 0.
std::string run_checked(const std::vector<std::string>& argv,
                        std::chrono::milliseconds timeout = 60s);
// s as one word of a sh command line: 'it'\''s'.
std::string sh_quote(const std::string& s);

struct ChildOptions {
  bool as_nobody = false;  // setgroups({}), setresgid/setresuid(65534) before fn
  std::chrono::milliseconds timeout = 30s;
};

// A forked child running fn; its exit code is fn's return value (an exception
// escaping fn gives 125).  The destructor kills and reaps a child not waited for.
class Child {
public:
  Child(std::function<int()> fn, ChildOptions opts = {});
  Child(Child&& o) noexcept;
  Child& operator=(Child&&) = delete;
  Child(const Child&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  // Wait (until the timeout given at start); kill it when the time is up.
  ExitInfo wait();

private:
  pid_t pid_ = -1;
  int pidfd_ = -1;
  int out_fd_ = -1;
  std::chrono::steady_clock::time_point deadline_;
};

// Fork, run fn, wait.
ExitInfo run_child(std::function<int()> fn, ChildOptions opts = {});

// A pipe for handshakes between a test and its children: signal() writes one
// byte, wait_signal() reads one (false on timeout or EOF).
class Pipe {
public:
  Pipe();
  ~Pipe();
  Pipe(const Pipe&) = delete;
  Pipe& operator=(const Pipe&) = delete;
  void signal();
  bool wait_signal(std::chrono::milliseconds timeout = 10s);

private:
  int fds_[2] = {-1, -1};
};

// True if `path` is a mountpoint in /proc/self/mountinfo (optionally of a
// filesystem type beginning with fstype_prefix, e.g. "fuse").
bool is_mounted(const std::string& path, const std::string& fstype_prefix = "");

// Read a whole file by path ("" when it cannot be read).
std::string slurp(const std::string& path);

}  // namespace hoody::test

namespace hoody::test {

// The full path of a program: $PATH first, then /usr/sbin and /sbin (meson may
// run tests with a PATH without the sbin dirs).  Empty when not found.
std::string find_tool(const std::string& name);

}  // namespace hoody::test
