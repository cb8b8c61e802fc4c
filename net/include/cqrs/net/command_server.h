// File: cqrs/net/command_server.h
//
// The TCP command server: length-prefixed cqrs.v1.Frame over TCP (proto/README.md), one
// coroutine session per connection, commands run through a CommandProcessor (idempotency,
// per-subject ordering, router).
//
//   cqrs::CommandRouter router({.service_id = "user-service"});
//   ... router.Handle<CreateUser>(...) ...
//   cqrs::net::CommandServer server(router, {.port = 7000});
//   CQRS_RETURN_IF_ERROR(server.Start());
//   server.Wait();            // until Shutdown() (or use Run(): serves until SIGINT/SIGTERM)
//
// Threads: `threads` event loops (one io_context each); connections are spread over them and
// each session lives on one loop, so a session needs no locks. Handlers run on their session's
// loop. Every limit in CommandServerOptions is enforced with an Error frame and a log line.

#ifndef CQRS_NET_COMMAND_SERVER_H_
#define CQRS_NET_COMMAND_SERVER_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cqrs/core/command_processor.h"
#include "cqrs/core/command_router.h"
#include "cqrs/net/frame_codec.h"

namespace cqrs::net {

struct CommandServerOptions {
  // Address to listen on, and port (0: chosen by the kernel, see port()).
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;
  // Event-loop threads; 0 means one per core.
  unsigned threads = 0;
  // Reported in HelloAck.
  std::string server_name = "cqrs";
  // Largest accepted frame (length prefix).
  std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Connections beyond this get Error{TOO_MANY_CONNECTIONS} and are closed.
  std::uint32_t max_connections = 10'000;
  // Unanswered commands per connection; at the limit the session stops reading (backpressure).
  std::uint32_t max_in_flight = 1024;
  // No Hello within this time after connecting: Error{TIMEOUT}, close.
  std::chrono::milliseconds hello_timeout{5'000};
  // No complete frame for this long while nothing is in flight: Error{TIMEOUT}, close.
  std::chrono::milliseconds idle_timeout{60'000};
  // A frame whose first byte arrived must be complete within this: Error{TIMEOUT}, close.
  std::chrono::milliseconds frame_timeout{10'000};
  // A pending write that makes no progress for this long closes the connection.
  std::chrono::milliseconds write_timeout{10'000};
  // On shutdown, how long in-flight commands may take before connections are closed anyway.
  std::chrono::milliseconds shutdown_drain{5'000};
  // Checks Hello.auth_token and returns the principal (passed to handlers as
  // CommandContext::principal()), or an error: Error{UNAUTHENTICATED} and close. Unset: every
  // client is accepted, with an empty principal. Called on a server thread; must not block.
  std::function<absl::StatusOr<std::string>(absl::string_view token)> authenticate;
  // Flow control from downstream (net::Server wires the event fan-out in): polled before each
  // read batch; while it returns true, sessions stop reading commands (checking again every
  // 200 µs), so clients are slowed by TCP instead of events piling up. Unset: never pauses.
  // Called on server threads; must be cheap and must not block.
  std::function<bool()> downstream_saturated;
  CommandProcessorOptions processor;
};

struct CommandServerStats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // Over max_connections.
  std::uint64_t connections_open = 0;
  std::uint64_t commands = 0;         // Command frames received.
  std::uint64_t protocol_errors = 0;  // Error frames sent.
};

class CommandServer {
 public:
  // `router` must outlive the server.
  explicit CommandServer(const CommandRouter& router, CommandServerOptions options = {});
  // Shuts down (gracefully) if still running.
  ~CommandServer();
  CommandServer(const CommandServer&) = delete;
  CommandServer& operator=(const CommandServer&) = delete;

  // Binds, listens and starts the event loops. kUnavailable when the address cannot be bound,
  // kFailedPrecondition when already started.
  absl::Status Start();
  // The bound port (after Start).
  std::uint16_t port() const;

  // Graceful shutdown: stop accepting, send GoAway on every connection, answer new commands
  // UNAVAILABLE, let in-flight commands finish and their responses go out (up to
  // shutdown_drain), then close everything and stop the threads. Blocks until done. Safe to call
  // from any thread except the server's own, and more than once.
  void Shutdown();
  // Blocks until Shutdown has completed.
  void Wait();
  // Start(), then serve until SIGINT or SIGTERM, then Shutdown().
  absl::Status Run();

  // Runs `command` through this server's own pipeline (idempotency by id, per-subject order,
  // interceptors, handler, event append) as if it had arrived on a connection, and returns its
  // response; for in-process front ends such as HTTP command endpoints. Runs on the calling
  // coroutine's executor; `command` and `principal` must outlive the awaitable. Answers
  // UNAVAILABLE once Shutdown has begun (or before Start). Thread-safe.
  Awaitable<v1::CommandResponseEnvelope> Execute(const v1::CommandEnvelope& command,
                                                 const std::string& principal);

  CommandServerStats stats() const;
  const CommandServerOptions& options() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cqrs::net

#endif  // CQRS_NET_COMMAND_SERVER_H_
