#include "hoody/session.hpp"

#include <fcntl.h>
#include <sys/uio.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <chrono>
#include <thread>

#include "fuse_uring.hpp"
#include "request_info.hpp"
#include "hoody/log.hpp"
#include "hoody/mountinfo.hpp"
#include "hoody/readiness.hpp"
#include "hoody/sys.hpp"

namespace hoody {

namespace {

// The FUSE_TMPFILE filter (SessionConfig::tmpfile_errno).  libfuse's custom-io
// callbacks get only the filesystem's userdata, so the filter of the running
// session is kept here: one session per process (daemon_main runs one), set
// before the loop starts and cleared after it ends.
std::function<int(uint64_t)> g_tmpfile_errno;

constexpr uint32_t kFuseTmpfile = 51;  // FUSE_TMPFILE (kernel 6.1); libfuse 3.14 lacks it

// The leading fields of the kernel's fuse_in_header and its fuse_out_header.
struct InHeader {
  uint32_t len;
  uint32_t opcode;
  uint64_t unique;
  uint64_t nodeid;
};
struct OutHeader {
  uint32_t len;
  int32_t error;
  uint64_t unique;
};

ssize_t filtered_read(int fd, void* buf, size_t len, void*) {
  for (;;) {
    ssize_t n = ::read(fd, buf, len);
    if (n > 0) {
      fuse_req::saw_init(buf, static_cast<size_t>(n));
      fuse_uring::saw_request(buf, static_cast<size_t>(n));
      // The thread that read a request dispatches it next (libfuse's workers).
      fuse_req::note_raw(buf, static_cast<size_t>(n));
    }
    if (n < static_cast<ssize_t>(sizeof(InHeader)) || !g_tmpfile_errno) return n;
    InHeader in;
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode != kFuseTmpfile) return n;
    int err = g_tmpfile_errno(in.nodeid);
    if (err == 0) return n;
    OutHeader out{sizeof(OutHeader), -err, in.unique};
    // ENOENT: the request was interrupted meanwhile; nothing to answer.
    if (::write(fd, &out, sizeof out) < 0 && errno != ENOENT)
      log::get("fuse")->warn("op=tmpfile -> reply failed: {}", std::strerror(errno));
  }
}
ssize_t plain_writev(int fd, struct iovec* iov, int count, void*) {
  fuse_req::patch_init_reply(iov, count);
  return ::writev(fd, iov, count);
}
ssize_t plain_splice_send(int fdin, off_t* offin, int fdout, off_t* offout, size_t len,
                          unsigned int flags, void*) {
  return ::splice(fdin, offin, fdout, offout, len, flags);
}
// With the io_uring transport every reply passes here: the ones of ring
// requests go to their ring entry, the rest to /dev/fuse.
ssize_t routed_writev(int fd, struct iovec* iov, int count, void*) {
  fuse_req::patch_init_reply(iov, count);
  return fuse_uring::writev(fd, iov, count);
}
ssize_t routed_splice_send(int fdin, off_t*, int fdout, off_t*, size_t len, unsigned int flags,
                           void*) {
  return fuse_uring::splice_send(fdin, fdout, len, flags);
}

}  // namespace

bool is_mountpoint(const std::string& path, std::string* fstype) {
  auto mounts = mountinfo::read();
  if (!mounts) return false;
  std::string want = sys::absolute(path);
  // Only the mount that `path` shows counts: the last one mounted at it, and
  // only if no later mount over an ancestor hides it (a tmpfs over /run in
  // a container or a test namespace hides the host's /run/hoody/... mounts,
  // which stay in mountinfo).  The path's device tells which one it shows.
  struct stat st;
  bool have_dev = ::stat(path.c_str(), &st) == 0;
  const mountinfo::Mount* shown = nullptr;
  for (auto& m : *mounts)
    if (m.mount_point == want) shown = &m;
  if (!shown) return false;
  if (have_dev && makedev(shown->major, shown->minor) != st.st_dev) return false;
  if (fstype) *fstype = shown->fstype;
  return true;
}

std::string mount_preflight(const std::string& mountpoint) {
  {
    int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      int e = errno;
      return std::string("cannot open /dev/fuse: ") + std::strerror(e) +
             (e == ENOENT ? " (load the fuse module: modprobe fuse)"
                          : " (in a container, pass the device in: --device /dev/fuse)");
    }
    ::close(fd);
  }
  struct stat st;
  if (::stat(mountpoint.c_str(), &st) < 0) {
    int e = errno;
    if (e == ENOTCONN)
      return "mountpoint " + mountpoint +
             ": a dead FUSE mount is there (transport endpoint is not connected); "
             "unmount it first: fusermount3 -u " + mountpoint;
    if (e == ENOENT) return "mountpoint " + mountpoint + " does not exist (mkdir -p it first)";
    return "mountpoint " + mountpoint + ": " + std::strerror(e);
  }
  if (!S_ISDIR(st.st_mode)) return "mountpoint " + mountpoint + " is not a directory";
  std::string type;
  if (is_mountpoint(mountpoint, &type) && type.rfind("fuse", 0) == 0)
    return "mountpoint " + mountpoint + " is busy: a " + type +
           " filesystem is already mounted there; unmount it first (fusermount3 -u " +
           mountpoint + ")";
  return "";
}

int run_session(const fuse_lowlevel_ops& ops, void* userdata, const SessionConfig& cfg) {
  auto log = log::get("fuse");
  if (auto why = mount_preflight(cfg.mountpoint); !why.empty()) {
    std::fprintf(stderr, "%s: %s\n", cfg.program.c_str(), why.c_str());
    return 1;
  }

  // Resolved before the mount: afterwards resolving the mountpoint could mean
  // a request to this very mount, whose loop is not running yet.
  const std::string mountpoint_abs = sys::absolute(cfg.mountpoint);
  std::string opts;
  for (auto& o : cfg.mount_options) opts += (opts.empty() ? "" : ",") + o;
  std::vector<std::string> argv_s = {cfg.program, "-o", opts};
  if (cfg.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  struct fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  struct fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, userdata);
  if (!se) {
    std::fprintf(stderr, "%s: cannot create the FUSE session (options: %s)\n", cfg.program.c_str(),
                 opts.c_str());
    return 1;
  }
  std::unique_ptr<fuse_session, void (*)(fuse_session*)> se_guard(se, fuse_session_destroy);

  if (fuse_set_signal_handlers(se) != 0) {
    std::fprintf(stderr, "%s: cannot install signal handlers\n", cfg.program.c_str());
    return 1;
  }
  if (fuse_session_mount(se, cfg.mountpoint.c_str()) != 0) {
    std::fprintf(stderr, "%s: cannot mount on %s (see the libfuse message above)\n",
                 cfg.program.c_str(), cfg.mountpoint.c_str());
    fuse_remove_signal_handlers(se);
    return 1;
  }
  log->info("mounted on {} options={}", cfg.mountpoint, opts);
  if (fuse_daemonize(cfg.foreground ? 1 : 0) != 0) {
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    return 1;
  }
  // The transport (after daemonize: the ring threads must live in the
  // process that serves).  Any reason not to use the ring is one info line and
  // the session runs on /dev/fuse as without it.
  bool uring = false;
  if (cfg.transport == "uring") {
    std::string why;
    fuse_uring::Options uo;
    uo.depth = cfg.uring_depth;
    uo.mountpoint = mountpoint_abs;
    uo.tmpfile_errno = cfg.tmpfile_errno;
    if (fuse_uring::available(&why) &&
        fuse_uring::prepare(se, fuse_session_fd(se), uo, &why)) {
      uring = true;
      fuse_uring::set_requested("uring", "");
    } else {
      fuse_uring::set_requested("uring", why);
      log->info("transport=dev reason=\"{}\"", why);
    }
  } else {
    fuse_uring::set_requested("dev", "");
  }
  // Always: the read hook notes each request (counts by opcode, the kill
  // flags libfuse drops) and the writev hook adds FUSE_HANDLE_KILLPRIV_V2 to
  // the INIT reply.  With splice_read the kernel's requests bypass the read
  // hook, so the daemon does not ask for killpriv_v2 then (DaemonFs).
  fuse_req::want_killpriv_v2(cfg.handle_killpriv_v2);
  {
    fuse_custom_io io{};
    io.read = filtered_read;
    io.writev = uring ? routed_writev : plain_writev;
    // replies keep splicing as without custom io
    io.splice_send = uring ? routed_splice_send : plain_splice_send;
    g_tmpfile_errno = cfg.tmpfile_errno;
    if (fuse_session_custom_io(se, &io, fuse_session_fd(se)) != 0) {
      fuse_req::want_killpriv_v2(false);
      if (cfg.tmpfile_errno)
        log->warn("op=tmpfile -> cannot filter requests: open(O_TMPFILE) gives EOPNOTSUPP");
      if (uring) {
        fuse_uring::stop();
        fuse_uring::set_requested("uring", "libfuse refused the custom io");
        log->info("transport=dev reason=\"libfuse refused the custom io\"");
      }
    }
  }

  if (cfg.on_mounted) cfg.on_mounted(se);
  // After the fork of fuse_daemonize: the thread and the notifications belong
  // to the process that serves.
  // Its thread is joined by the destructor when this function returns: after the
  // unmount has ended the connection, so a stat() still waiting has returned.
  Readiness ready(cfg.program, mountpoint_abs);
  ready.start();
  // HOODY_TEST_LOOP_DELAY_MS is for tests only: the loop starts that much
  // later, so that a mount that is there but does not answer yet is observable.
  if (const char* d = std::getenv("HOODY_TEST_LOOP_DELAY_MS"); d && *d) {
    log->warn("HOODY_TEST_LOOP_DELAY_MS={}: the loop starts late (tests only)", d);
    std::this_thread::sleep_for(std::chrono::milliseconds(std::atoi(d)));
  }
  int ret;
  if (cfg.single_thread) {
    ret = fuse_session_loop(se);
  } else {
    unsigned threads = cfg.max_threads;
    if (threads == 0) threads = std::max(4u, 2 * std::thread::hardware_concurrency());
    std::unique_ptr<fuse_loop_config, void (*)(fuse_loop_config*)> lc(fuse_loop_cfg_create(),
                                                                       fuse_loop_cfg_destroy);
    // libfuse 3.14's passthrough_hp parses --clone-fd but never applies it;
    // here it is applied: one /dev/fuse fd per worker (17% less latency measured).
    fuse_loop_cfg_set_clone_fd(lc.get(), cfg.clone_fd ? 1 : 0);
    fuse_loop_cfg_set_max_threads(lc.get(), threads);
    fuse_loop_cfg_set_idle_threads(lc.get(), threads);
    ret = fuse_session_loop_mt(se, lc.get());
  }
  ready.stopping();
  fuse_session_unmount(se);
  fuse_uring::stop();
  fuse_remove_signal_handlers(se);
  g_tmpfile_errno = nullptr;
  log->info("unmounted {}", cfg.mountpoint);
  // libfuse 3.14 returns the signal number for a loop ended by SIGTERM,
  // SIGINT or SIGHUP (and resets the session's exited flag): a clean exit.
  // Only a negative errno is a failure.
  if (ret < 0) {
    log->error("FUSE loop failed: {}", std::strerror(-ret));
    return 1;
  }
  return 0;
}

}  // namespace hoody
