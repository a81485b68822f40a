#include "hoody/daemon.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "hoody/fuse_log.hpp"
#include "hoody/log.hpp"
#include "hoody/session.hpp"
#include "hoody_config.h"

namespace hoody {

int daemon_main(int argc, char** argv, const DaemonSpec& spec) {
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
  sc.on_mounted = [&fs](fuse_session* se) { fs->attached(se); };
  sc.tmpfile_errno = fs->tmpfile_errno();
  sc.handle_killpriv_v2 = fs->handle_killpriv_v2();
  auto ops = fs->ops();
  return run_session(ops, fs->userdata(), sc);
}

}  // namespace hoody
