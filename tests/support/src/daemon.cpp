#include "hoody/test/daemon.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <utility>
#include <thread>

#include "hoody/test/guard.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test {

namespace {

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exit " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return std::string("killed by ") + sigabbrev_np(WTERMSIG(status));
  return "status " + std::to_string(status);
}

// Wait for pid (through pidfd) up to `limit`; true and *status when it exited.
bool wait_for(pid_t pid, int pidfd, std::chrono::milliseconds limit, int* status) {
  struct pollfd p = {pidfd, POLLIN, 0};
  ::poll(&p, 1, static_cast<int>(limit.count()));
  pid_t r;
  do {
    r = ::waitpid(pid, status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  return r == pid;
}

bool is_hoody_daemon(const std::string& program) {
  auto slash = program.rfind('/');
  std::string base = slash == std::string::npos ? program : program.substr(slash + 1);
  return base.rfind("hoody-", 0) == 0;
}

}  // namespace

std::string test_transport() {
  const char* t = std::getenv("HOODY_TEST_TRANSPORT");
  return t && *t ? t : "";
}

bool fuse_uring_enabled() {
  std::ifstream f("/sys/module/fuse/parameters/enable_uring");
  std::string v;
  f >> v;
  return v == "Y";
}

std::string expected_transport() {
  if (test_transport() == "dev") return "dev";
  return fuse_uring_enabled() ? "uring" : "dev";
}

void enable_fuse_uring() {
  const char* param = "/sys/module/fuse/parameters/enable_uring";
  int fd = ::open(param, O_RDWR | O_CLOEXEC);
  bool ok = fd >= 0 && ::write(fd, "1", 1) == 1;
  int e = errno;
  if (fd >= 0) ::close(fd);
  if (ok) return;
  // Asked for by name under CI: a kernel without it is a failure, not a fallback.
  const char* ci = std::getenv("CI");
  if (test_transport() == "uring" && ci && std::string(ci) == "true")
    throw std::runtime_error(std::string("HOODY_TEST_TRANSPORT=uring: cannot turn on ") + param +
                             ": " + std::strerror(e));
}

Daemon::Daemon(std::vector<std::string> argv, std::string mountpoint, std::string log_path)
    : Daemon(std::move(argv), std::move(mountpoint), std::move(log_path), Options{}) {}

Daemon::Daemon(std::vector<std::string> argv, std::string mountpoint, std::string log_path,
               Options opts)
    : argv_(std::move(argv)),
      mountpoint_(std::move(mountpoint)),
      log_path_(std::move(log_path)),
      opts_(opts) {
  if (argv_.empty()) throw std::invalid_argument("Daemon: empty argv");
  // The FUSE transport under test: $HOODY_TEST_TRANSPORT (uring|dev) for every
  // hoody daemon that is not given one; the kernel's ring is turned on unless
  // dev is asked for (so that -o transport=uring works wherever a test names it).
  if (is_hoody_daemon(argv_[0])) {
    bool given = false;
    for (auto& a : argv_) given = given || a.find("transport=") != std::string::npos;
    std::string t = test_transport();
    // A test that names the transport itself also sets the parameter itself.
    if (!given && !t.empty()) argv_.insert(argv_.begin() + 1, {"-o", "transport=" + t});
    if (!given && t != "dev") enable_fuse_uring();
  }
  int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("open " + log_path_ + ": " + std::strerror(errno));
  log_id_ = register_resource(Resource::log, log_path_);
  mount_id_ = register_resource(Resource::fuse_mount, mountpoint_);
  std::vector<char*> args;
  for (auto& a : argv_) args.push_back(a.data());
  args.push_back(nullptr);
  std::fflush(nullptr);
  pid_ = ::fork();
  if (pid_ < 0) {
    int e = errno;
    ::close(log_fd);
    release(std::exchange(mount_id_, 0));
    release(std::exchange(log_id_, 0));
    throw std::runtime_error(std::string("fork: ") + std::strerror(e));
  }
  if (pid_ == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(log_fd);
  pid_id_ = register_pid(pid_);
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));

  auto deadline = std::chrono::steady_clock::now() + opts_.start_timeout;
  for (;;) {
    if (is_mounted(mountpoint_, "fuse")) return;
    int status = 0;
    if (wait_for(pid_, pidfd_, 20ms, &status)) {
      stopped_ = true;
      release(std::exchange(pid_id_, 0));
      std::string msg = "daemon exited before mounting (" + describe_status(status) +
                        "): " + command() + "\n--- log ---\n" + log();
      // It may have mounted and died at once.
      if (is_mounted(mountpoint_)) run({"fusermount3", "-uz", mountpoint_}, 10s);
      release(std::exchange(mount_id_, 0));
      release(std::exchange(log_id_, 0));
      ::close(std::exchange(pidfd_, -1));
      throw std::runtime_error(msg);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::string msg = "daemon did not mount " + mountpoint_ + " within " +
                        std::to_string(opts_.start_timeout.count()) + " ms: " + command();
      stop();
      throw std::runtime_error(msg + "\n--- log ---\n" + log());
    }
  }
}

std::string Daemon::stop() {
  if (stopped_) return "stopped";
  stopped_ = true;
  if (is_mounted(mountpoint_)) {
    ExitInfo e = run({"fusermount3", "-u", mountpoint_}, 10s);
    if (!e.ok() && is_mounted(mountpoint_)) {
      std::fprintf(stderr, "Daemon: fusermount3 -u %s: %s; lazy unmount\n", mountpoint_.c_str(),
                   e.describe().c_str());
      run({"fusermount3", "-uz", mountpoint_}, 10s);
      if (is_mounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
    }
  }
  release(std::exchange(mount_id_, 0));
  int status = 0;
  std::string result;
  // After the unmount a FUSE daemon exits by itself; SIGTERM it if not.
  if (wait_for(pid_, pidfd_, 2s, &status)) {
    result = describe_status(status);
  } else {
    ::kill(pid_, SIGTERM);
    if (wait_for(pid_, pidfd_, opts_.stop_timeout, &status)) {
      result = describe_status(status) + " after SIGTERM";
    } else {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, &status, 0);
      result = describe_status(status) + " after SIGTERM timed out";
    }
  }
  release(std::exchange(pid_id_, 0));
  release(std::exchange(log_id_, 0));
  ::close(std::exchange(pidfd_, -1));
  return result;
}

std::string Daemon::terminate(int sig) {
  if (stopped_) return "stopped";
  stopped_ = true;
  ::kill(pid_, sig);
  int status = 0;
  std::string result;
  if (wait_for(pid_, pidfd_, opts_.stop_timeout, &status)) {
    result = describe_status(status);
  } else {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    result = describe_status(status) + " (did not exit within " +
             std::to_string(opts_.stop_timeout.count()) + " ms)";
  }
  release(std::exchange(pid_id_, 0));
  if (is_mounted(mountpoint_)) {
    result += " (left mounted)";
    run({"fusermount3", "-uz", mountpoint_}, 10s);
    if (is_mounted(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
  }
  release(std::exchange(mount_id_, 0));
  release(std::exchange(log_id_, 0));
  ::close(std::exchange(pidfd_, -1));
  return result;
}

Daemon::~Daemon() {
  std::string how = stop();
  if (current_test_failed()) {
    std::fprintf(stderr, "=== daemon log (%s; %s) ===\n%s=== end of daemon log ===\n",
                 command().c_str(), how.c_str(), log().c_str());
  }
}

std::string Daemon::log() const { return slurp(log_path_); }

std::string Daemon::command() const {
  std::string s;
  for (auto& a : argv_) s += (s.empty() ? "" : " ") + a;
  return s;
}

const DbfsCommand& dbfs_command() {
  static DbfsCommand cmd = [] {
    DbfsCommand c;
    const char* env = std::getenv("HOODY_DBFS");
    if (env && *env) {
      c.program = env;
      return c;
    }
    c.program = find_tool("bindfs");
    c.is_bindfs = true;
    std::fprintf(stderr,
                 "NOTE: $HOODY_DBFS is unset (the hoody-dbfs target is not built): testing "
                 "against bindfs (%s) instead\n",
                 c.program.empty() ? "not found" : c.program.c_str());
    if (c.program.empty()) c.program = "bindfs";
    return c;
  }();
  return cmd;
}

std::vector<std::string> dbfs_argv(const std::string& source, const std::string& mountpoint,
                                   const std::string& options) {
  const DbfsCommand& c = dbfs_command();
  std::vector<std::string> argv{c.program, "-f"};
  if (c.is_bindfs) argv.push_back("--multithreaded");
  if (!options.empty()) {
    argv.push_back("-o");
    argv.push_back(options);
  }
  argv.push_back(source);
  argv.push_back(mountpoint);
  return argv;
}

}  // namespace hoody::test
