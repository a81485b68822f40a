#include "hoody/test/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "hoody/mountinfo.hpp"

namespace hoody::test {

namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

std::string read_fd_from_start(int fd) {
  std::string out;
  char buf[8192];
  off_t off = 0;
  for (;;) {
    ssize_t r = ::pread(fd, buf, sizeof buf, off);
    if (r <= 0) break;
    out.append(buf, static_cast<size_t>(r));
    off += r;
  }
  return out;
}

ExitInfo decode(int status) {
  ExitInfo e;
  if (WIFEXITED(status)) e.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) e.signal = WTERMSIG(status);
  return e;
}

// Wait for the child behind pidfd until the deadline; SIGKILL it then.
ExitInfo wait_child(pid_t pid, int pidfd, std::chrono::steady_clock::time_point deadline) {
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
    struct pollfd p = {pidfd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long>(left.count(), 1000)));
    if (r > 0) break;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  ExitInfo e = decode(status);
  e.timed_out = timed_out;
  return e;
}

[[noreturn]] void child_fail(const char* what) {
  std::fprintf(stderr, "%s: %s\n", what, std::strerror(errno));
  std::fflush(stderr);
  ::_exit(126);
}

}  // namespace

std::string ExitInfo::describe() const {
  std::string s;
  if (timed_out) s = "timed out, ";
  if (signal) s += std::string("killed by ") + sigabbrev_np(signal);
  else s += "exit " + std::to_string(exit_code);
  if (!output.empty()) s += "; output:\n" + output;
  return s;
}

ExitInfo run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  return run_child(
      [&]() -> int {
        std::vector<char*> args;
        for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
        return 127;
      },
      ChildOptions{false, timeout});
}

std::string sh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

std::string run_checked(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  ExitInfo e = run(argv, timeout);
  if (!e.ok()) {
    std::string cmd;
    for (auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
    throw std::runtime_error("command failed: " + cmd + ": " + e.describe());
  }
  return e.output;
}

Child::Child(std::function<int()> fn, ChildOptions opts) {
  out_fd_ = ::memfd_create("hoody-test-child-output", MFD_CLOEXEC);
  if (out_fd_ < 0) throw std::runtime_error(std::string("memfd_create: ") + std::strerror(errno));
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(out_fd_, 1);
    ::dup2(out_fd_, 2);
    ::signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (opts.as_nobody) {
      if (::setgroups(0, nullptr) < 0) child_fail("setgroups");
      if (::setresgid(kNobodyGid, kNobodyGid, kNobodyGid) < 0) child_fail("setresgid");
      if (::setresuid(kNobodyUid, kNobodyUid, kNobodyUid) < 0) child_fail("setresuid");
    }
    int rc = 125;
    try {
      rc = fn();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "exception: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "unknown exception\n");
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  pidfd_ = pidfd_open(pid_);
  deadline_ = std::chrono::steady_clock::now() + opts.timeout;
}

Child::Child(Child&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      pidfd_(std::exchange(o.pidfd_, -1)),
      out_fd_(std::exchange(o.out_fd_, -1)),
      deadline_(o.deadline_) {}

ExitInfo Child::wait() {
  if (pid_ < 0) return {};
  ExitInfo e = wait_child(pid_, pidfd_, deadline_);
  e.output = read_fd_from_start(out_fd_);
  pid_ = -1;
  ::close(pidfd_);
  ::close(out_fd_);
  pidfd_ = out_fd_ = -1;
  return e;
}

Child::~Child() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    int status;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  if (pidfd_ >= 0) ::close(pidfd_);
  if (out_fd_ >= 0) ::close(out_fd_);
}

ExitInfo run_child(std::function<int()> fn, ChildOptions opts) {
  Child c(std::move(fn), opts);
  return c.wait();
}

Pipe::Pipe() {
  if (::pipe2(fds_, O_CLOEXEC) < 0) throw std::runtime_error("pipe2 failed");
}
Pipe::~Pipe() {
  ::close(fds_[0]);
  ::close(fds_[1]);
}
void Pipe::signal() {
  char c = 'x';
  while (::write(fds_[1], &c, 1) < 0 && errno == EINTR) {
  }
}
bool Pipe::wait_signal(std::chrono::milliseconds timeout) {
  struct pollfd p = {fds_[0], POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
  char c;
  return ::read(fds_[0], &c, 1) == 1;
}

bool is_mounted(const std::string& path, const std::string& fstype_prefix) {
  auto mounts = hoody::mountinfo::read();
  if (!mounts) return false;
  for (auto& m : *mounts)
    if (m.mount_point == path && m.fstype.rfind(fstype_prefix, 0) == 0) return true;
  return false;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace hoody::test

namespace hoody::test {

std::string find_tool(const std::string& name) {
  std::string path = std::getenv("PATH") ? std::getenv("PATH") : "";
  path += ":/usr/local/sbin:/usr/sbin:/sbin:/usr/bin:/bin";
  std::istringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string p = dir + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return {};
}

}  // namespace hoody::test
