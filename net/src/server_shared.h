// Private: what every session of a CommandServer shares.

#ifndef CQRS_NET_SRC_SERVER_SHARED_H_
#define CQRS_NET_SRC_SERVER_SHARED_H_

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <vector>

#include "cqrs/core/command_processor.h"
#include "cqrs/core/striped_counter.h"
#include "cqrs/net/command_server.h"

namespace cqrs::net::internal {

class CommandSession;

struct ServerShared {
  ServerShared(const CommandRouter& router, CommandServerOptions opts)
      : options(std::move(opts)), processor(router, options.processor) {}

  const CommandServerOptions options;
  CommandProcessor processor;

  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_refused{0};
  StripedCounter commands;  // Every session counts each command.
  std::atomic<std::uint64_t> protocol_errors{0};
  // Live sessions, for shutdown. Guarded by `mutex`; `changed` signals every change of `open`
  // (connections not yet closed) and `alive` (session objects not yet destroyed).
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<std::weak_ptr<CommandSession>> sessions;
  std::size_t open = 0;
  std::size_t alive = 0;
  bool shutting_down = false;

  // False once shutting down: the caller then closes the connection.
  bool Add(const std::shared_ptr<CommandSession>& session) {
    std::lock_guard lock(mutex);
    if (shutting_down) return false;
    // Drop entries of sessions that ended, so the list stays as long as the open connections.
    if (sessions.size() > 2 * open + 16) {
      std::erase_if(sessions, [](const auto& w) { return w.expired(); });
    }
    sessions.push_back(session);
    ++open;
    ++alive;
    return true;
  }
  void Remove() {
    std::lock_guard lock(mutex);
    --open;
    changed.notify_all();
  }
  void Destroyed() {
    std::lock_guard lock(mutex);
    --alive;
    changed.notify_all();
  }
};

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_SERVER_SHARED_H_
