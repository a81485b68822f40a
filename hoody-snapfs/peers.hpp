// The hoody-dbfs daemons that serve the scope subvolumes of this container,
// reached over their control sockets (common/ hoody/dbfs_control.hpp): the
// store's Quiescer for one operation.  A subvolume without a dbfs (nothing
// listens on "hoody-dbfs-ctl:" + realpath(SOURCE/sv)) is skipped, as before
// issue 11.  Connections live as long as this object: a quiesce belongs to
// its connection, so a snapfs that dies (kill -9) lets dbfs resume at once.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hoody/dbfs_control.hpp"
#include "store/quiesce.hpp"

namespace hoody::snapfs {

class DbfsPeers final : public Quiescer {
public:
  // source_realpath: realpath(SOURCE); timeout: quiesce_timeout.
  DbfsPeers(std::string source_realpath, std::chrono::milliseconds timeout);
  ~DbfsPeers() override;

  Result<QuiesceResult> quiesce(const std::vector<std::string>& subvols,
                                std::string* why) override;
  Status still_held(std::string* why) override;
  void resume() override;
  Result<std::vector<Holder>> replaced(const std::string& sv, std::string* why) override;
  Result<std::vector<Holder>> holders(const std::vector<std::string>& subvols,
                                     std::string* why) override;
  std::vector<pid_t> server_pids() const override;

  // How long a server may take beyond the quiesce timeout to answer, and the
  // bound of every other call.
  static constexpr std::chrono::milliseconds kSlack{1000};
  static constexpr std::chrono::milliseconds kCallTimeout{10000};
  // dbfs lets go by itself after this long (a snapfs that hangs).
  static constexpr std::chrono::milliseconds kHold{60000};

private:
  struct Peer {
    std::string sv;    // scope subvolume name
    std::string path;  // realpath(SOURCE/sv): the dbfs SOURCE
    ctl::Client client;
    pid_t pid = 0;     // the server's (SO_PEERCRED), 0 if unknown
    bool quiesced = false;
  };
  // The connected server of `sv`, connecting on first use; nullptr if none.
  Peer* peer(const std::string& sv);
  static std::vector<Holder> holders_of(const nlohmann::json& list, const std::string& sv);

  std::string source_;
  std::chrono::milliseconds timeout_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::vector<std::string> absent_;  // subvolumes known to have no server
};

}  // namespace hoody::snapfs
