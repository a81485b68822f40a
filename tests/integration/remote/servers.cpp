#include "servers.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "hoody/test/capability.hpp"
#include "hoody/test/guard.hpp"

namespace hoody::test {

namespace {

std::string ns_of(pid_t pid) {
  char buf[128];
  std::string p = "/proc/" + std::to_string(pid) + "/ns/mnt";
  ssize_t n = ::readlink(p.c_str(), buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
}

std::vector<pid_t> all_pids() {
  std::vector<pid_t> out;
  DIR* d = ::opendir("/proc");
  if (!d) return out;
  while (auto* e = ::readdir(d)) {
    char* end = nullptr;
    long v = std::strtol(e->d_name, &end, 10);
    if (end && *end == '\0' && v > 0) out.push_back(static_cast<pid_t>(v));
  }
  ::closedir(d);
  return out;
}

void write_file(const std::string& path, const std::string& text, mode_t mode = 0644) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error("write " + path + ": " + std::strerror(errno));
  if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    ::close(fd);
    throw std::runtime_error("write " + path + ": short write");
  }
  ::close(fd);
}

std::string first_fields(const std::string& pub) {  // "ssh-ed25519 AAAA..."
  std::istringstream ss(pub);
  std::string type, key;
  ss >> type >> key;
  return type + " " + key;
}

}  // namespace

std::vector<pid_t> processes_in_namespace_of(pid_t pid) {
  std::vector<pid_t> out;
  std::string ns = ns_of(pid);
  if (ns.empty()) return out;
  for (pid_t p : all_pids())
    if (ns_of(p) == ns) out.push_back(p);
  return out;
}

std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  for (pid_t p : all_pids()) {
    std::string stat = slurp("/proc/" + std::to_string(p) + "/stat");
    auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream ss(stat.substr(close + 2));
    char state;
    pid_t ppid = 0;
    ss >> state >> ppid;
    if (ppid == pid) out.push_back(p);
  }
  return out;
}

Servers::Servers(Options opts) : opts_(std::move(opts)), dir_(opts_.dir) {
  require_tool("ip", "iproute2");
  require_tool("nsenter", "util-linux");
  std::string sshd = require_tool("sshd", "openssh-server");
  std::string keygen = require_tool("ssh-keygen", "openssh-client");
  require_tool("ssh", "openssh-client");
  (void)sshd;
  try {
    std::vector<std::string> hide_in_a{opts_.pool_b}, hide_in_b{opts_.pool_a};
    hide_in_a.insert(hide_in_a.end(), opts_.only_b.begin(), opts_.only_b.end());
    hide_in_b.insert(hide_in_b.end(), opts_.only_a.begin(), opts_.only_a.end());
    holder_a_ = spawn_holder(hide_in_a);
    holder_b_ = spawn_holder(hide_in_b);
    std::string b = std::to_string(holder_b_);
    run_checked(in_a({"ip", "link", "set", "lo", "up"}));
    run_checked(in_b({"ip", "link", "set", "lo", "up"}));
    run_checked(in_a({"ip", "link", "add", "hoody-a", "type", "veth", "peer", "name", "hoody-b",
                      "netns", b}));
    run_checked(in_a({"ip", "addr", "add", std::string(kAddrA) + "/24", "dev", "hoody-a"}));
    run_checked(in_a({"ip", "link", "set", "hoody-a", "up"}));
    run_checked(in_b({"ip", "addr", "add", std::string(kAddrB) + "/24", "dev", "hoody-b"}));
    run_checked(in_b({"ip", "link", "set", "hoody-b", "up"}));

    for (const char* k : {"host_key", "client_key", "stranger_key"})
      run_checked({keygen, "-q", "-t", "ed25519", "-N", "", "-C", std::string("hoody-test-") + k,
                   "-f", dir_ + "/" + k});
    // The line hoody-snap(1) documents for a peer's key.
    write_file(dir_ + "/authorized_keys",
               "restrict,command=\"" + opts_.hoody_snap + " serve --pool " + opts_.pool_b + "\" " +
                   slurp(dir_ + "/client_key.pub"),
               0600);
    write_file(dir_ + "/known_hosts",
               std::string(kAddrB) + " " + first_fields(slurp(dir_ + "/host_key.pub")) + "\n");
    start_sshd();
  } catch (...) {
    teardown();
    throw;
  }
}

Servers::~Servers() { teardown(); }

pid_t Servers::spawn_holder(const std::vector<std::string>& hide) {
  Pipe ready;
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    if (::unshare(CLONE_NEWNET | CLONE_NEWNS) < 0) {
      std::fprintf(stderr, "unshare: %s\n", std::strerror(errno));
      ::_exit(1);
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) < 0) ::_exit(2);
    // A home of its own: sshd runs the forced command through root's shell,
    // which would read the machine's dotfiles (a pyenv hook there waited on
    // a lock for a minute); a server has its own.
    if (::mount("tmpfs", "/root", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700,size=16m") < 0) {
      std::fprintf(stderr, "mount tmpfs on /root: %s\n", std::strerror(errno));
      ::_exit(4);
    }
    for (auto& h : hide)
      if (::umount2(h.c_str(), MNT_DETACH) < 0) {
        std::fprintf(stderr, "umount %s: %s\n", h.c_str(), std::strerror(errno));
        ::_exit(3);
      }
    ready.signal();
    for (;;) ::pause();
  }
  ids_.push_back(register_pid(pid));
  if (!ready.wait_signal(10s)) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw std::runtime_error("a server's namespaces could not be made");
  }
  return pid;
}

void Servers::start_sshd() {
  // sshd's privilege separation dir (Debian makes it at boot, tmpfiles.d).
  ::mkdir("/run/sshd", 0755);
  std::string cfg = dir_ + "/sshd_config";
  write_file(cfg,
             "Port 22\n"
             "ListenAddress " + std::string(kAddrB) + "\n"
             "HostKey " + dir_ + "/host_key\n"
             "AuthorizedKeysFile " + dir_ + "/authorized_keys\n"
             "PermitRootLogin forced-commands-only\n"
             "PasswordAuthentication no\n"
             "KbdInteractiveAuthentication no\n"
             "UsePAM no\n"
             // The session dir lies in /tmp (world-writable): StrictModes would
             // refuse its authorized_keys.  A real server keeps StrictModes.
             "StrictModes no\n"
             "PidFile none\n"
             "LogLevel VERBOSE\n");
  std::string log = dir_ + "/sshd.log";
  int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error("open " + log);
  auto argv = in_b({find_tool("sshd"), "-D", "-e", "-f", cfg});
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::fflush(nullptr);
  sshd_ = ::fork();
  if (sshd_ == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    ::dup2(devnull, 0);
    ::dup2(log_fd, 1);
    ::dup2(log_fd, 2);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (sshd_ < 0) throw std::runtime_error("fork sshd");
  ids_.push_back(register_pid(sshd_));
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (sshd_log().find("Server listening on") == std::string::npos) {
    int status;
    if (::waitpid(sshd_, &status, WNOHANG) == sshd_) {
      sshd_ = -1;
      throw std::runtime_error("sshd exited at start:\n" + sshd_log());
    }
    if (std::chrono::steady_clock::now() > deadline)
      throw std::runtime_error("sshd did not listen within 10 s:\n" + sshd_log());
    std::this_thread::sleep_for(20ms);
  }
}

void Servers::teardown() {
  if (sshd_ > 0) {
    ::kill(sshd_, SIGKILL);
    ::waitpid(sshd_, nullptr, 0);
    sshd_ = -1;
  }
  // Whatever else lives in a server's namespaces (sshd's sessions, a receive
  // they ran, a command left behind by a failed check): gone, so the
  // namespaces and their copies of the mounts go with them.
  for (pid_t holder : {holder_a_, holder_b_}) {
    if (holder <= 0) continue;
    for (int round = 0; round < 3; ++round) {
      for (pid_t p : processes_in_namespace_of(holder))
        if (p != holder) ::kill(p, SIGKILL);
      std::this_thread::sleep_for(20ms);
    }
  }
  for (pid_t* holder : {&holder_a_, &holder_b_}) {
    if (*holder <= 0) continue;
    ::kill(*holder, SIGKILL);
    ::waitpid(*holder, nullptr, 0);
    *holder = -1;
  }
  for (auto id : ids_) release(id);
  ids_.clear();
}

std::vector<std::string> Servers::in_a(const std::vector<std::string>& argv) const {
  std::vector<std::string> out{find_tool("nsenter"), "-t", std::to_string(holder_a_), "-n", "-m",
                               "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::vector<std::string> Servers::in_b(const std::vector<std::string>& argv) const {
  std::vector<std::string> out{find_tool("nsenter"), "-t", std::to_string(holder_b_), "-n", "-m",
                               "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

ExitInfo Servers::run_a(const std::vector<std::string>& argv, std::chrono::milliseconds t) const {
  return run(in_a(argv), t);
}

ExitInfo Servers::run_b(const std::vector<std::string>& argv, std::chrono::milliseconds t) const {
  return run(in_b(argv), t);
}

std::string Servers::ssh_command(bool stranger) const {
  return "ssh -F /dev/null -i " + dir_ + (stranger ? "/stranger_key" : "/client_key") +
         " -o IdentitiesOnly=yes -o IdentityAgent=none -o BatchMode=yes -o UserKnownHostsFile=" +
         dir_ + "/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes" +
         " -o ConnectTimeout=10";
}

}  // namespace hoody::test
