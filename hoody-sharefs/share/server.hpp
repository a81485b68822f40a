// Cross-server shares, the owner's side and the link between two servers
// (no FUSE headers).
//
// POOL/server.conf (key = value, # comments; every key optional):
//   address       this server as the other servers reach it (required to
//                 offer to another server: it is in the export's url)
//   view          the export view: a `hoody-sharefs -o exports` mount
//                 (default /run/hoody/nfs/view)
//   exports       the nfs-ganesha EXPORT blocks hoody writes, %included by
//                 ganesha.conf (default POOL/nfs-exports.conf)
//   ganesha_pid   nfs-ganesha's pid file: a SIGHUP reloads the exports
//                 (default /run/ganesha/ganesha.pid)
//   nfs_port, mount_port   the ports peers use (default 2049 and 0: ask rpcbind)
//   peer_command  how hoody-share reaches hoody-share on another server;
//                 {server} is replaced, words split at spaces, then
//                 `remote VERB ARGS` appended
//                 (default: ssh -o BatchMode=yes root@{server} hoody-share)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "hoody/result.hpp"

namespace hoody::sharefs {

struct ServerConf {
  std::string address;
  std::string view = "/run/hoody/nfs/view";
  std::string exports;
  std::string ganesha_pid = "/run/ganesha/ganesha.pid";
  int nfs_port = 2049;
  int mount_port = 0;
  std::string peer_command = "ssh -o BatchMode=yes root@{server} hoody-share";
};

// POOL/server.conf (a missing file: the defaults).
Result<ServerConf> read_server_conf(const std::string& pool, std::string* why);

// One nfs-ganesha export of a share offered to another server.
struct ExportSpec {
  int64_t id = 0;      // the share's id: Export_Id and VIEW/ID
  std::string path;    // VIEW/ID
  std::string client;  // the peer server (its address or name)
  bool read_only = true;
  uid_t anon_uid = 65534;  // every caller is squashed to the source's owner
  gid_t anon_gid = 65534;
};
// The EXPORT blocks (NFSv3, TCP, sys, All_Squash, the peer only).
std::string render_exports(const std::vector<ExportSpec>& exports);
// Writes `text` to `file` atomically (a temp file renamed over it).
Status write_exports(const std::string& file, const std::string& text, std::string* why);
// SIGHUP to nfs-ganesha: it rereads its exports (adds, changes, removes).
Status reload_ganesha(const ServerConf& conf, std::string* why);
// The url a peer reaches share `id` at.
std::string export_url(const ServerConf& conf, int64_t id);
// Runs `remote ARGS` of hoody-share on `server` through peer_command; its
// stderr is passed through.
Status run_peer(const ServerConf& conf, const std::string& server, const std::vector<std::string>& args,
                std::string* why);

}  // namespace hoody::sharefs
