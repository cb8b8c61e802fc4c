#include "cqrs/net/server.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "cqrs/core/log.h"
#include "cqrs/net/http_commands.h"
#include "cqrs/net/stop_signals.h"

namespace cqrs::net {

Server::Server(CommandRouter& router, ServerOptions options)
    : Server(router, std::make_unique<InMemoryEventLog>(options.event_log), nullptr,
             std::move(options)) {}

Server::Server(CommandRouter& router, EventLog& log, ServerOptions options)
    : Server(router, nullptr, &log, std::move(options)) {}

Server::Server(CommandRouter& router, std::unique_ptr<EventLog> owned, EventLog* log,
               ServerOptions options)
    : owned_log_(std::move(owned)),
      log_(owned_log_ != nullptr ? owned_log_.get() : log),
      hub_(*log_),
      commands_(router, WithFlowControl(std::move(options.commands), hub_, options.gateway)),
      gateway_(hub_, std::move(options.gateway)) {
  router.set_event_sink(log_);
  if (options.http_commands) AddHttpCommandRoutes(gateway_, commands_);
}

CommandServerOptions Server::WithFlowControl(CommandServerOptions commands, FanoutHub& hub,
                                             const EventGatewayOptions& gateway) {
  if (!commands.downstream_saturated) {
    // Subscribers that keep up stay within an eighth of their queue limit of the newest event;
    // beyond that, commands wait at their sockets (and a slow consumer is not waited for).
    const std::uint64_t limit = std::max<std::uint64_t>(gateway.max_queue_bytes / 8, 4096);
    commands.downstream_saturated = [&hub, limit] { return hub.lag_bytes() > limit; };
  }
  return commands;
}

Server::~Server() { Shutdown(); }

absl::Status Server::Start() {
  if (absl::Status status = gateway_.Start(); !status.ok()) return status;
  if (absl::Status status = commands_.Start(); !status.ok()) {
    gateway_.Shutdown();
    return status;
  }
  return absl::OkStatus();
}

void Server::Shutdown() {
  commands_.Shutdown();
  gateway_.Shutdown();
}

absl::Status Server::Run() {
  StopSignals stop;  // Before Start: the servers' threads inherit the mask.
  absl::Status status = Start();
  if (status.ok()) {
    const int signal = stop.Wait();
    Log(LogLevel::kInfo, absl::StrCat("signal ", signal, ": shutting down"));
    Shutdown();
  }
  return status;
}

}  // namespace cqrs::net
