// Two "servers" on one machine, for copy and sync between them (issue 9 item 5).
//
// Each server is a process holding its own network and mount namespaces
// (unshare --net --mount --propagation private), made from the test's mount
// namespace: so it sees the test's session dir and the pools and mounts made
// before it, and the rig unmounts the other server's pool (and whatever else
// is given as the other's) in it: server A cannot reach B's pool but over
// ssh, and the other way round; each has an empty /root of its own (tmpfs),
// so that no dotfile of the machine's root runs in sshd's sessions.  A veth pair joins them: A is 10.77.0.1, B is
// 10.77.0.2 (private to their network namespaces, so nothing on the host
// changes).  B runs sshd (Debian's openssh-server) on port 22 with a
// generated host key; its authorized_keys holds one generated client key,
// restricted to `hoody-snap serve --pool POOL_B` (restrict + command=), as
// hoody-snap(1) documents; a second generated key is not in it.
//
// Teardown (the destructor, also after a failed check): every process left
// in either server's namespaces (sshd, its sessions, the holders) is killed
// with SIGKILL and reaped, so the namespaces and their mounts go; the holders
// and sshd are registered with the guard, which kills them when the test
// binary itself dies.  Declare the Servers after the pools and daemons it
// sees, so that it goes first.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <string>
#include <vector>

#include "hoody/test/process.hpp"

namespace hoody::test {

class Servers {
public:
  struct Options {
    std::string pool_a, pool_b;       // the two pools' roots (BtrfsPool::path())
    std::vector<std::string> only_a;  // more mounts to hide from B (A's snapfs mount)
    std::vector<std::string> only_b;  // more mounts to hide from A
    std::string hoody_snap;           // the hoody-snap binary the forced command runs
    std::string dir;                  // where keys, configs and the sshd log go
  };
  explicit Servers(Options opts);
  ~Servers();
  Servers(const Servers&) = delete;
  Servers& operator=(const Servers&) = delete;

  static constexpr const char* kAddrA = "10.77.0.1";
  static constexpr const char* kAddrB = "10.77.0.2";

  // argv run in server A's (or B's) namespaces: nsenter -t HOLDER -n -m -- argv.
  std::vector<std::string> in_a(const std::vector<std::string>& argv) const;
  std::vector<std::string> in_b(const std::vector<std::string>& argv) const;
  ExitInfo run_a(const std::vector<std::string>& argv, std::chrono::milliseconds t = 120s) const;
  ExitInfo run_b(const std::vector<std::string>& argv, std::chrono::milliseconds t = 120s) const;

  // The ssh command hoody-snap copy/sync are given (--ssh): the client key
  // (or the stranger's), B's host key pinned, no config or agent of the host.
  std::string ssh_command(bool stranger = false) const;
  std::string authorized_keys() const { return slurp(dir_ + "/authorized_keys"); }
  std::string sshd_log() const { return slurp(dir_ + "/sshd.log"); }
  pid_t holder_a() const { return holder_a_; }
  pid_t holder_b() const { return holder_b_; }

private:
  pid_t spawn_holder(const std::vector<std::string>& hide);
  void start_sshd();
  void teardown();

  Options opts_;
  std::string dir_;
  pid_t holder_a_ = -1, holder_b_ = -1, sshd_ = -1;
  std::vector<std::uint64_t> ids_;
};

// Every process whose mount namespace is that of `pid` (pid itself included).
std::vector<pid_t> processes_in_namespace_of(pid_t pid);

// The children of `pid` (from /proc/*/stat).
std::vector<pid_t> children_of(pid_t pid);

}  // namespace hoody::test
