#include "hoody/daemon.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "hoody/fuse_log.hpp"
#include "hoody/fuse_transport.hpp"
#include "hoody/log.hpp"
#include "hoody/session.hpp"
#include "hoody/status_socket.hpp"
#include "hoody/sys.hpp"
#include "hoody_config.h"

namespace hoody {

namespace {

// The transport part of --status (every daemon).
nlohmann::json transport_status() {
  auto tr = fuse_transport_info();
  nlohmann::json jt;
  jt["name"] = tr.name;
  jt["requested"] = tr.requested;
  if (!tr.reason.empty()) jt["reason"] = tr.reason;
  if (tr.name == "uring") {
    jt["depth"] = tr.depth;
    for (auto& q : tr.queues)
      jt["queues"].push_back({{"qid", q.qid},
                              {"requests", q.requests},
                              {"entries", q.entries},
                              {"parked", q.parked},
                              {"parked_max", q.parked_max},
                              {"kicks", q.kicks},
                              {"dispatch_ns", q.dispatch_ns},
                              {"lock_dispatch_ns", q.lock_dispatch_ns}});
  }
  // Requests received by opcode, both transports (what a workload costs in
  // round trips: tests count GETXATTR after WRITE, LOOKUP per transaction).
  nlohmann::json ops = nlohmann::json::object();
  for (auto& [name, n] : fuse_request_counts()) ops[name] = n;
  jt["ops"] = ops;
  return jt;
}

}  // namespace

int daemon_main(int argc, char** argv, const DaemonSpec& spec) {
  // `DAEMON --status MOUNTPOINT` (after whatever options the daemon's main
  // put first): the running daemon's status, from its socket.
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--status") != 0) continue;
    if (i + 2 != argc) {
      std::fprintf(stderr, "usage: %s --status MOUNTPOINT\n", spec.name.c_str());
      return 2;
    }
    return status_client(spec.name, argv[i + 1]);
  }
  MountArgs args;
  try {
    args = parse_mount_args(argc, argv, spec.options);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", spec.name.c_str(), e.what());
    std::fprintf(stderr, "usage: %s [-f] [-o opt[,opt...]] SOURCE MOUNTPOINT (--help for more)\n",
                 spec.name.c_str());
    return 2;
  }
  if (args.help) {
    std::printf("usage: %s [-f] [-d] [-s] [-o opt[,opt...]] [--log-level L] SOURCE MOUNTPOINT\n\n%s\n\n"
                "    -f                         stay in the foreground, log to stderr\n"
                "    -d                         libfuse debug trace (implies -f)\n"
                "    -s                         single-threaded loop\n"
                "    --log-level L              trace|debug|info|warn|error (default: $HOODY_LOG or info)\n"
                "%s",
                spec.name.c_str(), spec.summary.c_str(), spec.options.help().c_str());
    return 0;
  }
  if (args.version) {
    std::printf("%s %s (libfuse %s)\n", spec.name.c_str(), HOODY_VERSION, fuse_pkgversion());
    return 0;
  }

  // Name the source absolutely in /proc/mounts and in messages.
  if (char* abs = ::realpath(args.source.c_str(), nullptr)) {
    args.source = abs;
    std::free(abs);
  }
  // Modes come from the callers (the kernel applies their umask).
  ::umask(0);
  log::Options lo;
  lo.level = args.log_level;
  // libfuse's -d request trace arrives at debug level through our logger.
  if (args.debug && lo.level.empty()) lo.level = "debug";
  lo.ident = spec.name;
  std::string where = args.str("log", args.foreground ? "stderr" : "syslog");
  lo.sink = where == "syslog" ? log::Sink::syslog : log::Sink::stderr_;
  log::init(lo);
  log::route_libfuse();

  std::unique_ptr<DaemonFs> fs;
  try {
    fs = spec.make(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: %s\n", spec.name.c_str(), e.what());
    return 2;
  }
  std::string why;
  if (!fs->start(&why)) {
    std::fprintf(stderr, "%s: %s\n", spec.name.c_str(), why.c_str());
    return 1;
  }

  SessionConfig sc;
  sc.program = spec.name;
  sc.mountpoint = args.mountpoint;
  sc.mount_options = kernel_mount_options(args, spec.name);
  sc.foreground = args.foreground;
  sc.debug = args.debug;
  sc.single_thread = args.single_thread;
  sc.max_threads = static_cast<unsigned>(args.uint("max_threads", 0));
  sc.clone_fd = !args.flag("noclone_fd");
  sc.transport = args.str("transport", "uring");
  sc.uring_depth = static_cast<unsigned>(std::max<uint64_t>(1, args.uint("uring_depth", 8)));
  // --status: listens before the mount appears (a client that sees the mount
  // can connect and waits in the backlog); answers once the session runs.
  std::string mountpoint_abs = sys::absolute(args.mountpoint);
  StatusServer status(spec.name, mountpoint_abs);
  auto render = [&]() {
    nlohmann::json j = fs->status();
    if (!j.is_object()) j = nlohmann::json::object();
    j["program"] = spec.name;
    j["pid"] = ::getpid();
    if (!j.contains("mountpoint")) j["mountpoint"] = mountpoint_abs;
    if (!j.contains("source")) j["source"] = args.source;
    j["transport"] = transport_status();
    return j.dump(2);
  };
  sc.on_mounted = [&](fuse_session* se) {
    fs->attached(se);
    status.run(render);
  };
  sc.tmpfile_errno = fs->tmpfile_errno();
  sc.handle_killpriv_v2 = fs->handle_killpriv_v2();
  auto ops = fs->ops();
  return run_session(ops, fs->userdata(), sc);
}

}  // namespace hoody
