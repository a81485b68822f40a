// The guard main and the resource registry; see hoody/test/guard.hpp.
#define DOCTEST_CONFIG_IMPLEMENT
#include "hoody/test/guard.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "hoody/mountinfo.hpp"
#include "hoody/test/process.hpp"

namespace hoody::test {

namespace {

constexpr const char* kSessionEnv = "HOODY_TEST_SESSION_DIR";
constexpr const char* kRegistryName = "registry";
constexpr int kDefaultTimeoutSeconds = 240;

const char* kind_name(Resource k) {
  switch (k) {
    case Resource::fuse_mount: return "fuse_mount";
    case Resource::pid: return "pid";
    case Resource::mount: return "mount";
    case Resource::loop_image: return "loop_image";
    case Resource::dir: return "dir";
    case Resource::log: return "log";
  }
  return "?";
}

std::string make_session_dir() {
  const char* base = std::getenv("HOODY_TEST_TMP");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/hoody-it.XXXXXX";
  if (!::mkdtemp(tmpl.data()))
    throw std::runtime_error("mkdtemp " + tmpl + ": " + std::strerror(errno));
  // 0755: tests running as nobody must be able to walk through it.
  ::chmod(tmpl.c_str(), 0755);
  return tmpl;
}

std::atomic<std::uint64_t> g_counter{0};
bool g_failed = false;

void append_line(const std::string& line) {
  std::string path = session_dir() + "/" + kRegistryName;
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) throw std::runtime_error("open " + path + ": " + std::strerror(errno));
  // One write per line: O_APPEND makes it atomic against other writers.
  ssize_t r = ::write(fd, line.data(), line.size());
  int e = errno;
  ::close(fd);
  if (r != static_cast<ssize_t>(line.size()))
    throw std::runtime_error("write " + path + ": " + std::strerror(e));
}

// Field 22 of /proc/PID/stat: the start time, to tell a process from a pid
// reuse.  Empty for a process that is gone or a zombie.
std::string start_time(pid_t pid) {
  std::string s = slurp("/proc/" + std::to_string(pid) + "/stat");
  auto close_paren = s.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= s.size()) return {};
  if (s[close_paren + 2] == 'Z') return {};
  std::istringstream ss(s.substr(close_paren + 2));
  std::string field;
  // After "pid (comm) " the state is field 3; start time is field 22.
  for (int i = 3; i <= 22 && (ss >> field); ++i) {
  }
  return field;
}

void note(bool verbose, const std::string& msg) {
  if (verbose) std::fprintf(stderr, "guard: %s\n", msg.c_str());
}

std::vector<std::string> mounts_under(const std::string& dir) {
  std::vector<std::string> out;
  if (auto mounts = hoody::mountinfo::read())
    for (auto& m : *mounts)
      if (m.mount_point == dir || m.mount_point.rfind(dir + "/", 0) == 0) out.push_back(m.mount_point);
  // Deepest first.
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.size() > b.size(); });
  return out;
}

void unmount_lazy(const std::string& path, bool fuse, bool verbose) {
  if (!is_mounted(path)) return;
  if (fuse) {
    note(verbose, "fusermount3 -uz " + path);
    run({"fusermount3", "-uz", path}, 10s);
  }
  if (is_mounted(path)) {
    note(verbose, "umount -l " + path);
    run({find_tool("umount"), "-l", path}, 10s);
  }
  if (is_mounted(path)) note(true, "could not unmount " + path);
}

void cleanup_one(Resource kind, const std::string& value, bool verbose) {
  switch (kind) {
    case Resource::log:
      std::fprintf(stderr, "guard: === log of a daemon not stopped by the test: %s ===\n%s"
                   "guard: === end of log ===\n", value.c_str(), slurp(value).c_str());
      break;
    case Resource::fuse_mount: unmount_lazy(value, true, verbose); break;
    case Resource::mount: unmount_lazy(value, false, verbose); break;
    case Resource::pid: {
      std::istringstream ss(value);
      pid_t pid = 0;
      std::string start;
      ss >> pid >> start;
      if (pid <= 1 || start.empty() || start_time(pid) != start) break;
      note(verbose, "SIGKILL pid " + std::to_string(pid));
      ::kill(pid, SIGKILL);
      for (int i = 0; i < 200 && start_time(pid) == start; ++i) {
        ::waitpid(pid, nullptr, WNOHANG);  // reaps it if it is our child
        std::this_thread::sleep_for(10ms);
      }
      break;
    }
    case Resource::loop_image: {
      if (::access(value.c_str(), F_OK) != 0) break;
      ExitInfo e = run({find_tool("losetup"), "-j", value}, 10s);
      std::istringstream ls(e.output);
      std::string line;
      while (std::getline(ls, line)) {
        auto colon = line.find(':');
        if (colon == std::string::npos || line.rfind("/dev/", 0) != 0) continue;
        std::string dev = line.substr(0, colon);
        note(verbose, "losetup -d " + dev + " (" + value + ")");
        run({find_tool("losetup"), "-d", dev}, 10s);
      }
      break;
    }
    case Resource::dir: {
      if (::access(value.c_str(), F_OK) != 0) break;
      for (auto& m : mounts_under(value)) unmount_lazy(m, true, verbose);
      note(verbose, "rm -rf " + value);
      run({"rm", "-rf", "--one-file-system", value}, 30s);
      break;
    }
  }
}

struct Entry {
  std::uint64_t id;
  Resource kind;
  std::string value;
};

// Listener: remembers whether the current test case has failed.
struct FailureListener : doctest::IReporter {
  explicit FailureListener(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { g_failed = false; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override { g_failed = true; }
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData& ad) override {
    if (ad.m_failed) g_failed = true;
  }
  void log_message(const doctest::MessageData& md) override {
    if (md.m_severity & doctest::assertType::is_check) g_failed = true;
    if (md.m_severity & doctest::assertType::is_require) g_failed = true;
  }
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

}  // namespace

REGISTER_LISTENER("hoody_failure_flag", 1, FailureListener);

const std::string& session_dir() {
  static std::string dir = [] {
    const char* env = std::getenv(kSessionEnv);
    if (env && *env) return std::string(env);
    std::string d = make_session_dir();
    ::setenv(kSessionEnv, d.c_str(), 1);
    return d;
  }();
  return dir;
}

std::uint64_t register_resource(Resource kind, const std::string& value) {
  std::uint64_t id = (static_cast<std::uint64_t>(::getpid()) << 24) | ++g_counter;
  append_line("+" + std::to_string(id) + " " + kind_name(kind) + " " + value + "\n");
  return id;
}

std::uint64_t register_pid(pid_t pid) {
  return register_resource(Resource::pid, std::to_string(pid) + " " + start_time(pid));
}

void release(std::uint64_t id) {
  if (id == 0) return;
  try {
    append_line("-" + std::to_string(id) + "\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "guard: %s\n", e.what());
  }
}

bool current_test_failed() { return g_failed; }

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && (std::strcmp(ci, "true") == 0 || std::strcmp(ci, "1") == 0);
}

void cleanup_registry(const std::string& registry_path, bool verbose) {
  std::ifstream in(registry_path);
  std::vector<Entry> entries;
  std::map<std::uint64_t, bool> released;
  std::string line;
  while (std::getline(in, line)) {
    if (line.size() < 2) continue;
    std::istringstream ls(line.substr(1));
    std::uint64_t id = 0;
    ls >> id;
    if (line[0] == '-') {
      released[id] = true;
      continue;
    }
    std::string kind;
    ls >> kind;
    std::string value;
    std::getline(ls, value);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    for (Resource k : {Resource::fuse_mount, Resource::pid, Resource::mount,
                       Resource::loop_image, Resource::dir, Resource::log})
      if (kind == kind_name(k)) entries.push_back({id, k, value});
  }
  int left = 0;
  for (auto& e : entries) left += !released.count(e.id);
  if (left == 0) return;
  note(verbose, std::to_string(left) + " resource(s) left by the test; cleaning up");
  std::stable_partition(entries.begin(), entries.end(),
                        [](const Entry& e) { return e.kind != Resource::log; });
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (released.count(it->id)) continue;
    try {
      cleanup_one(it->kind, it->value, verbose);
    } catch (const std::exception& e) {
      note(true, std::string("cleanup of ") + kind_name(it->kind) + " " + it->value + ": " +
                     e.what());
    }
  }
}

}  // namespace hoody::test

namespace {

using namespace hoody::test;

int run_doctest(int argc, char** argv) {
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  int rc = ctx.run();
  return rc;
}

// Everything after the test process is gone: its process group, its
// registered resources, the session dir.
void final_cleanup(pid_t child, const std::string& dir) {
  ::killpg(child, SIGKILL);
  std::this_thread::sleep_for(50ms);
  cleanup_registry(dir + "/" + kRegistryName, true);
  // Whatever is still mounted under the session dir (an unregistered mount).
  cleanup_one(Resource::dir, dir, !mounts_under(dir).empty());
}

int timeout_seconds() {
  const char* env = std::getenv("HOODY_TEST_TIMEOUT");
  int t = env ? std::atoi(env) : 0;
  return t > 0 ? t : kDefaultTimeoutSeconds;
}

bool wait_gone(pid_t child, std::chrono::milliseconds limit, int* status) {
  auto end = std::chrono::steady_clock::now() + limit;
  do {
    pid_t r = ::waitpid(child, status, WNOHANG);
    if (r == child || (r < 0 && errno == ECHILD)) return true;
    std::this_thread::sleep_for(10ms);
  } while (std::chrono::steady_clock::now() < end);
  return false;
}

// After SIGTERM/SIGINT to the guard: meson SIGKILLs the whole process group
// 0.5 s after its SIGTERM, so the cleanup runs in a new session.
[[noreturn]] void detach_cleanup_and_exit(pid_t child, int sig, const std::string& dir) {
  ::kill(child, SIGTERM);
  std::fflush(nullptr);
  pid_t janitor = ::fork();
  if (janitor < 0) {  // no janitor: clean up here, and hope for the 0.5 s
    wait_gone(child, 200ms, nullptr);
    final_cleanup(child, dir);
    ::_exit(128 + sig);
  }
  if (janitor == 0) {
    ::setsid();
    ::signal(SIGPIPE, SIG_IGN);
    // meson stops reading our output now: the janitor writes to a file next
    // to the session dir.
    std::string log = dir.substr(0, dir.rfind('/')) + "/hoody-it-janitor.log";
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
      std::fprintf(stderr, "guard: janitor for %s (test pid %d, got %s)\n", dir.c_str(), child,
                   sigabbrev_np(sig));
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    // The test process is not our child: wait until it is gone or a zombie.
    for (int i = 0; i < 300; ++i) {
      std::string st = slurp("/proc/" + std::to_string(child) + "/stat");
      auto p = st.rfind(')');
      if (st.empty() || (p != std::string::npos && st.size() > p + 2 && st[p + 2] == 'Z')) break;
      std::this_thread::sleep_for(10ms);
    }
    final_cleanup(child, dir);
    ::_exit(0);
  }
  std::fprintf(stderr, "guard: got %s; cleanup continues in pid %d (log: %s/hoody-it-janitor.log)\n",
               sigabbrev_np(sig), janitor, dir.substr(0, dir.rfind('/')).c_str());
  int status;
  wait_gone(child, 200ms, &status);
  ::_exit(128 + sig);
}

}  // namespace

int main(int argc, char** argv) {
  if (const char* ng = std::getenv("HOODY_TEST_NO_GUARD"); ng && *ng && *ng != '0')
    return run_doctest(argc, argv);

  std::string dir;
  try {
    dir = session_dir();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "guard: %s\n", e.what());
    return 1;
  }

  sigset_t set, old;
  sigemptyset(&set);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaddset(&set, s);
  ::sigprocmask(SIG_BLOCK, &set, &old);

  std::fflush(nullptr);
  pid_t child = ::fork();
  if (child < 0) {
    std::perror("guard: fork");
    return 1;
  }
  if (child == 0) {
    ::setpgid(0, 0);
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    std::exit(run_doctest(argc, argv));  // exit(): static destructors (RAII) run
  }
  ::setpgid(child, child);

  const int timeout = timeout_seconds();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout);
  int status = 0;
  bool timed_out = false;
  for (;;) {
    pid_t r = ::waitpid(child, &status, WNOHANG);
    if (r == child) break;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      std::fprintf(stderr, "guard: deadline of %d s (HOODY_TEST_TIMEOUT) passed; "
                   "sending SIGTERM to the test\n", timeout);
      ::kill(child, SIGTERM);
      if (!wait_gone(child, 3s, &status)) {
        ::kill(child, SIGKILL);
        ::waitpid(child, &status, 0);
      }
      break;
    }
    struct timespec ts = {1, 0};  // the deadline is checked once a second
    siginfo_t info;
    int sig = ::sigtimedwait(&set, &info, &ts);
    if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP) detach_cleanup_and_exit(child, sig, dir);
  }

  final_cleanup(child, dir);

  if (timed_out) return 1;
  if (WIFSIGNALED(status)) {
    std::fprintf(stderr, "guard: the test process was killed by %s\n",
                 sigabbrev_np(WTERMSIG(status)));
    return 1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
