// File: cqrs/net/server.h
//
// A whole CQRS service in one object: the TCP command server, the event log its handlers'
// events are appended to, and the event gateway that streams them to subscribers over
// WebSocket. This is what most services need; the parts stay usable on their own.
//
//   cqrs::CommandRouter router({.service_id = "user-service"});
//   router.Handle<CreateUser>(...);
//   cqrs::net::Server server(router, {.commands = {.port = 7000}, .gateway = {.port = 8080}});
//   return server.Run().ok() ? 0 : 1;      // serves until SIGINT/SIGTERM, then drains
//
// The server makes itself the router's event sink. With the default in-memory log, history
// starts empty under a new epoch every time the process starts. Flow control: while the
// subscribers that keep up are more than an eighth of the gateway's max_queue_bytes behind,
// command sessions stop reading (CommandServerOptions::downstream_saturated), so a burst of
// commands cannot outrun event delivery; a subscriber that stops reading is not waited for
// (see EventGatewayOptions::slow_consumer_grace) and is closed at max_queue_bytes.

#ifndef CQRS_NET_SERVER_H_
#define CQRS_NET_SERVER_H_

#include <memory>

#include "absl/status/status.h"
#include "cqrs/core/command_router.h"
#include "cqrs/core/event_log.h"
#include "cqrs/core/fanout_hub.h"
#include "cqrs/net/command_server.h"
#include "cqrs/net/event_gateway.h"

namespace cqrs::net {

struct ServerOptions {
  CommandServerOptions commands;
  EventGatewayOptions gateway;
  // For the embedded in-memory log (ignored when a log is passed in).
  InMemoryEventLogOptions event_log;
  // POST /commands/<full.type.Name> on the gateway's port (cqrs/net/http_commands.h).
  bool http_commands = true;
};

class Server {
 public:
  // Uses an embedded InMemoryEventLog. `router` must outlive the server.
  explicit Server(CommandRouter& router, ServerOptions options = {});
  // Uses `log` (which must outlive the server) instead.
  Server(CommandRouter& router, EventLog& log, ServerOptions options = {});
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Starts the gateway, then the command server. kUnavailable when a port cannot be bound
  // (nothing is left running then); kFailedPrecondition when already started.
  absl::Status Start();
  // Graceful: the command server drains first (its last events still reach subscribers), then
  // the gateway closes its subscribers (1001). Blocks; idempotent; not from a server thread.
  void Shutdown();
  // Start(), serve until SIGINT or SIGTERM, Shutdown().
  absl::Status Run();

  std::uint16_t command_port() const { return commands_.port(); }
  std::uint16_t gateway_port() const { return gateway_.port(); }
  EventLog& log() { return *log_; }
  FanoutHub& hub() { return hub_; }
  CommandServer& commands() { return commands_; }
  // Add HTTP routes here before Start().
  EventGateway& gateway() { return gateway_; }

 private:
  Server(CommandRouter& router, std::unique_ptr<EventLog> owned, EventLog* log,
         ServerOptions options);
  static CommandServerOptions WithFlowControl(CommandServerOptions commands, FanoutHub& hub,
                                              const EventGatewayOptions& gateway);

  std::unique_ptr<EventLog> owned_log_;
  EventLog* log_;
  FanoutHub hub_;
  CommandServer commands_;
  EventGateway gateway_;
};

}  // namespace cqrs::net

#endif  // CQRS_NET_SERVER_H_
