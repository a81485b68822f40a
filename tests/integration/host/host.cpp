#include "host.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <dirent.h>
#include <fstream>
#include <sstream>

#include "hoody/mountinfo.hpp"
#include "hoody/test/guard.hpp"

namespace hoody::test {

namespace {

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

Host::Host() {
  run_dir = pool.make_temp_dir("run");
  target = pool.make_temp_dir("target");
  cgroups = pool.make_temp_dir("cgroup");
  // RUN becomes a mount of its own (a shared bind of itself): undone last.
  ids_.push_back(register_resource(Resource::mount, run_dir));
}

Host::~Host() {
  if (!downed_) {
    auto d = down();
    if (!d.ok() || current_test_failed()) std::fprintf(stderr, "hoody-down: %s\n", d.describe().c_str());
  }
  for (auto it = ids_.rbegin(); it != ids_.rend(); ++it) release(*it);
}

void Host::guard(const std::string& c) {
  if (!guarded_.insert(c).second) return;
  std::string r = run_dir + "/" + c;
  ids_.push_back(register_resource(Resource::mount, r + "/storage"));
  ids_.push_back(register_resource(Resource::mount, r + "/ramdisk"));
  for (auto* m : {"/databases", "/.snapshots", "/shares"})
    ids_.push_back(register_resource(Resource::fuse_mount, r + m));
}

ExitInfo Host::script(const std::string& name, const std::vector<std::string>& args,
                      const std::vector<std::string>& extra_env) {
  std::vector<std::string> argv{"env",
                                "HOODY_POOL=" + pool.path(),
                                "HOODY_RUN=" + run_dir,
                                "HOODY_TARGET_ROOT=" + target,
                                "HOODY_CGROUP_ROOT=" + cgroups,
                                "HOODY_IMAGE=" + pool.dir() + "/no-embedded-pool.img",
                                "HOODY_SKIP_BUILD=1"};
  // The programs of this build only, never an installed one from PATH: a
  // daemon not built is left out (sharefs), a missing dbfs fails.
  for (auto* var : {"HOODY_DBFS", "HOODY_SNAPFS", "HOODY_SHAREFS", "HOODY_SHARE"})
    argv.push_back(std::string(var) + "=" + env_or(var, "none"));
  argv.insert(argv.end(), extra_env.begin(), extra_env.end());
  argv.push_back(env_or("HOODY_SCRIPTS", "scripts") + "/" + name);
  argv.insert(argv.end(), args.begin(), args.end());
  return hoody::test::run(argv, std::chrono::seconds(90));
}

ExitInfo Host::up(const std::vector<std::string>& containers, const std::vector<std::string>& options,
                  const std::vector<std::string>& extra_env) {
  for (auto& c : containers) guard(c);
  downed_ = false;  // (the destructor takes down what this brings up)
  std::vector<std::string> args = options;
  args.insert(args.end(), containers.begin(), containers.end());
  return script("hoody-up", args, extra_env);
}

ExitInfo Host::down(const std::vector<std::string>& containers) {
  if (containers.empty()) downed_ = true;
  return script("hoody-down", containers);
}

ExitInfo Host::share(const std::vector<std::string>& args) {
  std::vector<std::string> argv{env_or("HOODY_SHARE", "hoody-share"), "--pool", pool.path()};
  argv.insert(argv.end(), args.begin(), args.end());
  return hoody::test::run(argv, std::chrono::seconds(20));
}

// ---- Container --------------------------------------------------------------

Container::Container(std::string name, const std::string& fragment)
    : name_(std::move(name)),
      child_(
          [this, fragment] {
            // A namespace of its own whose mounts are slaves of the host's:
            // what the host mounts later reaches it, nothing goes back.
            if (::unshare(CLONE_NEWNS) != 0) {
              std::perror("unshare");
              return 10;
            }
            if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) != 0) {
              std::perror("make-rslave /");
              return 11;
            }
            auto m = hoody::test::run({"mount", "-T", fragment, "-a"}, std::chrono::seconds(20));
            if (!m.ok()) {
              std::fprintf(stderr, "mount -T %s -a: %s\n", fragment.c_str(), m.describe().c_str());
              return 12;
            }
            ready_.signal();
            for (;;) ::pause();
          },
          {.timeout = std::chrono::seconds(250)}) {
  ready_ok_ = ready_.wait_signal(std::chrono::seconds(25));
}

Container::~Container() = default;  // the Child is killed; its namespace goes with it

std::string Container::failure() {
  if (ready_ok_) return "";
  ::kill(child_.pid(), SIGKILL);
  return child_.wait().describe();
}

namespace {

int enter(pid_t pid) {
  int fd = ::open(("/proc/" + std::to_string(pid) + "/ns/mnt").c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::setns(fd, CLONE_NEWNS) != 0) {
    std::perror("setns");
    return 120;
  }
  ::close(fd);
  return 0;
}

}  // namespace

ExitInfo Container::run(std::function<int()> fn, ChildOptions opts) {
  pid_t pid = child_.pid();
  return run_child([pid, fn] { return enter(pid) ? 120 : fn(); }, opts);
}

Child Container::start(std::function<int()> fn, ChildOptions opts) {
  pid_t pid = child_.pid();
  return Child([pid, fn] { return enter(pid) ? 120 : fn(); }, opts);
}

ExitInfo Container::exec(const std::vector<std::string>& argv) {
  return run([argv] {
    auto e = hoody::test::run(argv, std::chrono::seconds(20));
    std::fputs(e.output.c_str(), stdout);
    std::fflush(stdout);
    return e.exit_code < 0 ? 126 : e.exit_code;
  });
}

// ---- helpers ----------------------------------------------------------------

std::vector<MountLine> mounts_under(const std::string& dir) {
  std::vector<MountLine> out;
  auto ms = mountinfo::read();
  if (!ms) return out;
  for (auto& m : *ms) {
    if (m.mount_point != dir && m.mount_point.rfind(dir + "/", 0) != 0) continue;
    std::string prop;
    for (auto& o : m.optional) prop += (prop.empty() ? "" : " ") + o;
    out.push_back({m.id, m.mount_point, m.fstype, m.options, prop.empty() ? "private" : prop});
  }
  return out;
}

std::vector<pid_t> daemons_of(const std::string& mountpoint) {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (pid <= 0 || *end) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/cmdline", std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    std::vector<std::string> args;
    std::string a;
    while (std::getline(ss, a, '\0')) args.push_back(a);
    if (args.size() < 2) continue;
    std::string prog = args[0].substr(args[0].rfind('/') + 1);
    if (prog != "hoody-dbfs" && prog != "hoody-snapfs" && prog != "hoody-sharefs") continue;
    if (args.back() == mountpoint) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

}  // namespace hoody::test
