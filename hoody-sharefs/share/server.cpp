#include "share/server.hpp"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace hoody::sharefs {

namespace {
std::string trim(const std::string& s) {
  auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  auto e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

Status refuse(std::string* why, int err, const std::string& r) {
  if (why) *why = r;
  return fail(err);
}
}  // namespace

Result<ServerConf> read_server_conf(const std::string& pool, std::string* why) {
  ServerConf c;
  c.exports = pool + "/nfs-exports.conf";
  std::string file = pool + "/server.conf";
  std::ifstream in(file);
  if (!in) {
    if (errno == ENOENT) return c;
    (void)refuse(why, errno, file + ": " + std::strerror(errno));
    return fail(errno);
  }
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    line = trim(line);
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    auto bad = [&](const std::string& r) -> Result<ServerConf> {
      (void)refuse(why, EINVAL, file + ":" + std::to_string(n) + ": " + r);
      return fail(EINVAL);
    };
    if (eq == std::string::npos) return bad("not key = value");
    std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
    try {
      if (k == "address") c.address = v;
      else if (k == "view") c.view = v;
      else if (k == "exports") c.exports = v;
      else if (k == "ganesha_pid") c.ganesha_pid = v;
      else if (k == "nfs_port") c.nfs_port = std::stoi(v);
      else if (k == "mount_port") c.mount_port = std::stoi(v);
      else if (k == "peer_command") c.peer_command = v;
      else return bad("unknown key " + k);
    } catch (const std::exception&) {
      return bad(k + ": not a number");
    }
  }
  // Paths end up inside quotes of ganesha's config.
  for (auto* p : {&c.view, &c.exports})
    if (p->find_first_of("\"\n\\") != std::string::npos || p->empty() || (*p)[0] != '/') {
      (void)refuse(why, EINVAL, file + ": view and exports must be absolute paths without quotes");
      return fail(EINVAL);
    }
  return c;
}

std::string render_exports(const std::vector<ExportSpec>& exports) {
  std::ostringstream o;
  o << "# Written by hoody-share: one export per share offered to another server.\n"
       "# Do not edit; `hoody-share exports` writes it again.\n";
  for (auto& e : exports) {
    const char* access = e.read_only ? "RO" : "RW";
    o << "EXPORT {\n"
      << "  Export_Id = " << e.id << ";\n"
      << "  Path = \"" << e.path << "\";\n"
      << "  Pseudo = \"/hoody/" << e.id << "\";\n"
      << "  Protocols = 3;\n  Transports = TCP;\n  SecType = sys;\n"
      << "  Access_Type = None;\n"
      << "  Squash = All_Squash;\n"
      << "  Anonymous_Uid = " << e.anon_uid << ";\n"
      << "  Anonymous_Gid = " << e.anon_gid << ";\n"
      << "  FSAL { Name = VFS; }\n"
      << "  CLIENT { Clients = " << e.client << "; Access_Type = " << access << "; }\n"
      << "}\n";
  }
  return o.str();
}

Status write_exports(const std::string& file, const std::string& text, std::string* why) {
  std::string tmp = file + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (!f) return refuse(why, errno, tmp + ": " + std::strerror(errno));
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fflush(f) == 0) && ok && ::fsync(fileno(f)) == 0;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || ::rename(tmp.c_str(), file.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return refuse(why, e, file + ": " + std::strerror(e));
  }
  return {};
}

Status reload_ganesha(const ServerConf& conf, std::string* why) {
  std::ifstream in(conf.ganesha_pid);
  long pid = 0;
  if (!(in >> pid) || pid <= 1)
    return refuse(why, ESRCH, "nfs-ganesha is not running (no pid in " + conf.ganesha_pid + ")");
  if (::kill(static_cast<pid_t>(pid), SIGHUP) != 0)
    return refuse(why, errno, "nfs-ganesha pid " + std::to_string(pid) + ": " + std::strerror(errno));
  return {};
}

std::string export_url(const ServerConf& conf, int64_t id) {
  std::string u = "nfs://" + conf.address + conf.view + "/" + std::to_string(id) + "?nfsport=" +
                  std::to_string(conf.nfs_port);
  if (conf.mount_port) u += "&mountport=" + std::to_string(conf.mount_port);
  return u;
}

Status run_peer(const ServerConf& conf, const std::string& server, const std::vector<std::string>& args,
                std::string* why) {
  std::vector<std::string> argv;
  std::istringstream words(conf.peer_command);
  for (std::string w; words >> w;) {
    for (auto at = w.find("{server}"); at != std::string::npos; at = w.find("{server}"))
      w.replace(at, 8, server);
    argv.push_back(w);
  }
  if (argv.empty()) return refuse(why, EINVAL, "peer_command is empty");
  argv.push_back("remote");
  for (auto& a : args) argv.push_back(a);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) return refuse(why, errno, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::execvp(cargv[0], cargv.data());
    std::fprintf(stderr, "hoody-share: %s: %s\n", cargv[0], std::strerror(errno));
    ::_exit(127);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return {};
  return refuse(why, EHOSTUNREACH,
                "server " + server + ": `" + argv.front() + " ... remote " + args.front() + "` " +
                    (WIFEXITED(st) ? "exited with " + std::to_string(WEXITSTATUS(st))
                                   : "was killed by signal " + std::to_string(WTERMSIG(st))));
}

}  // namespace hoody::sharefs
