// cqrs_user_service: the user-service demo as a service. One process, two ports:
//   - commands (CreateUser, RenameUser, DeleteUser) over the TCP protocol of proto/README.md;
//   - the event gateway: events over WebSocket (/events), the browser dashboard (/), the read
//     model (GET /users), POST /users and POST /commands/<type>.
//
//   cqrs_user_service                                   # 127.0.0.1:7000 and :8080
//   cqrs_user_service --command_port=0 --gateway_port=0 # kernel-chosen ports (tests)
//   cqrs_user_service --help                            # every flag
//
// Prints one line when ready ("user-service: commands on 127.0.0.1:7000, events and dashboard on
// http://127.0.0.1:8080/", with the actual ports), serves until SIGINT or SIGTERM, then shuts
// down gracefully (commands drain, subscribers get close 1001) and exits 0.

#include <pthread.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cqrs/core/log.h"
#include "cqrs/net/server.h"
#include "cqrs/net/stop_signals.h"
#include "dashboard.h"
#include "user_handlers.h"
#include "user_projection.h"
#include "user_routes.h"

namespace {

const cqrs::net::CommandServerOptions kCommandDefaults;
const cqrs::net::EventGatewayOptions kGatewayDefaults;
const cqrs::InMemoryEventLogOptions kLogDefaults;

}  // namespace

// Where to listen.
ABSL_FLAG(std::string, address, "127.0.0.1",
          "address both servers listen on (0.0.0.0: every interface)");
ABSL_FLAG(std::uint16_t, command_port, 7000, "TCP command port (0: chosen by the kernel)");
ABSL_FLAG(std::uint16_t, gateway_port, 8080,
          "HTTP/WebSocket port of the event gateway and the dashboard (0: chosen by the kernel)");
ABSL_FLAG(std::vector<std::string>, allowed_origins, {},
          "comma-separated browser origins allowed to use the gateway (default: the dashboard's "
          "own: http://127.0.0.1:<gateway_port>, http://localhost:<gateway_port>, "
          "http://[::1]:<gateway_port>)");
ABSL_FLAG(bool, http_commands, true, "serve POST /commands/<full.type.Name> on the gateway");
ABSL_FLAG(std::string, log_level, "warning", "library log level: debug, info, warning, error");

// The command server (cqrs::net::CommandServerOptions).
ABSL_FLAG(std::uint32_t, command_threads, 0, "command server event loops (0: one per core)");
ABSL_FLAG(std::string, server_name, "user-service", "server name reported in HelloAck");
ABSL_FLAG(std::uint32_t, max_frame_bytes, kCommandDefaults.max_frame_bytes,
          "largest accepted command frame; larger: error FRAME_TOO_LARGE and close");
ABSL_FLAG(std::uint32_t, max_connections, kCommandDefaults.max_connections,
          "open command connections; beyond: error TOO_MANY_CONNECTIONS and close");
ABSL_FLAG(std::uint32_t, max_in_flight, kCommandDefaults.max_in_flight,
          "unanswered commands per connection; at the limit the server stops reading");
ABSL_FLAG(absl::Duration, hello_timeout, absl::FromChrono(kCommandDefaults.hello_timeout),
          "Hello must arrive within this after connecting");
ABSL_FLAG(absl::Duration, idle_timeout, absl::FromChrono(kCommandDefaults.idle_timeout),
          "a command connection with no frame and nothing in flight for this long is closed");
ABSL_FLAG(absl::Duration, frame_timeout, absl::FromChrono(kCommandDefaults.frame_timeout),
          "a started frame must complete within this");
ABSL_FLAG(absl::Duration, write_timeout, absl::FromChrono(kCommandDefaults.write_timeout),
          "a command connection whose writes make no progress for this long is closed");
ABSL_FLAG(absl::Duration, shutdown_drain, absl::FromChrono(kCommandDefaults.shutdown_drain),
          "on shutdown, how long in-flight commands may take");
ABSL_FLAG(absl::Duration, idempotency_window, kCommandDefaults.processor.idempotency.window,
          "how long a command id's response is remembered (duplicates get it again)");
ABSL_FLAG(std::uint64_t, idempotency_max_bytes, kCommandDefaults.processor.idempotency.max_bytes,
          "memory bound of the idempotency cache");

// The event gateway (cqrs::net::EventGatewayOptions).
ABSL_FLAG(std::uint32_t, gateway_threads, 0, "event gateway event loops (0: one per core)");
ABSL_FLAG(std::uint32_t, gateway_max_connections, kGatewayDefaults.max_connections,
          "open HTTP and WebSocket connections; beyond: 503");
ABSL_FLAG(std::uint64_t, max_message_bytes, kGatewayDefaults.max_message_bytes,
          "largest WebSocket message from a client (close 1009) and HTTP body (413)");
ABSL_FLAG(std::uint64_t, max_queue_bytes, kGatewayDefaults.max_queue_bytes,
          "unsent event bytes per subscriber; beyond: close 1013 (the client resumes)");
ABSL_FLAG(std::uint32_t, max_subscriptions, kGatewayDefaults.max_subscriptions,
          "subscriptions per WebSocket connection");
ABSL_FLAG(std::uint32_t, max_channels, kGatewayDefaults.max_channels,
          "channel patterns per subscription");
ABSL_FLAG(absl::Duration, handshake_timeout, absl::FromChrono(kGatewayDefaults.handshake_timeout),
          "an HTTP request (the WebSocket upgrade included) must arrive within this");
ABSL_FLAG(absl::Duration, gateway_idle_timeout, absl::FromChrono(kGatewayDefaults.idle_timeout),
          "a silent subscriber is pinged after half of this and closed after all of it");
ABSL_FLAG(absl::Duration, gateway_write_timeout, absl::FromChrono(kGatewayDefaults.write_timeout),
          "a gateway connection whose writes make no progress for this long is dropped");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::FromChrono(kGatewayDefaults.shutdown_grace),
          "on shutdown, how long subscribers get to take their close");

// The in-memory event log (cqrs::InMemoryEventLogOptions).
ABSL_FLAG(std::uint64_t, max_events, kLogDefaults.max_events,
          "events the log retains (the oldest go first)");
ABSL_FLAG(std::uint64_t, max_log_bytes, kLogDefaults.max_bytes,
          "bytes of events the log retains (the oldest go first)");
ABSL_FLAG(std::uint64_t, epoch, kLogDefaults.epoch,
          "the log's epoch (0: random for every start, as history does not survive one)");

namespace {

absl::StatusOr<std::chrono::milliseconds> Millis(const char* flag, absl::Duration value) {
  if (value <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, " must be positive, not ", absl::FormatDuration(value)));
  }
  return absl::ToChronoMilliseconds(value);
}

absl::StatusOr<cqrs::LogLevel> LogLevelOf(const std::string& name) {
  if (name == "debug") return cqrs::LogLevel::kDebug;
  if (name == "info") return cqrs::LogLevel::kInfo;
  if (name == "warning") return cqrs::LogLevel::kWarning;
  if (name == "error") return cqrs::LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_level must be debug, info, warning or error, not '", name, "'"));
}

// The options from the flags (ports and origins as given).
absl::StatusOr<cqrs::net::ServerOptions> OptionsFromFlags() {
  cqrs::net::ServerOptions options;
  cqrs::net::CommandServerOptions& commands = options.commands;
  commands.address = absl::GetFlag(FLAGS_address);
  commands.port = absl::GetFlag(FLAGS_command_port);
  commands.threads = absl::GetFlag(FLAGS_command_threads);
  commands.server_name = absl::GetFlag(FLAGS_server_name);
  commands.max_frame_bytes = absl::GetFlag(FLAGS_max_frame_bytes);
  commands.max_connections = absl::GetFlag(FLAGS_max_connections);
  commands.max_in_flight = absl::GetFlag(FLAGS_max_in_flight);
  commands.processor.idempotency.window = absl::GetFlag(FLAGS_idempotency_window);
  commands.processor.idempotency.max_bytes = absl::GetFlag(FLAGS_idempotency_max_bytes);

  cqrs::net::EventGatewayOptions& gateway = options.gateway;
  gateway.address = commands.address;
  gateway.port = absl::GetFlag(FLAGS_gateway_port);
  gateway.threads = absl::GetFlag(FLAGS_gateway_threads);
  gateway.max_connections = absl::GetFlag(FLAGS_gateway_max_connections);
  gateway.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  gateway.max_queue_bytes = absl::GetFlag(FLAGS_max_queue_bytes);
  gateway.max_subscriptions = absl::GetFlag(FLAGS_max_subscriptions);
  gateway.max_channels = absl::GetFlag(FLAGS_max_channels);
  gateway.allowed_origins = absl::GetFlag(FLAGS_allowed_origins);

  struct Timeout {
    const char* flag;
    absl::Duration value;
    std::chrono::milliseconds* option;
  };
  const Timeout timeouts[] = {
      {"hello_timeout", absl::GetFlag(FLAGS_hello_timeout), &commands.hello_timeout},
      {"idle_timeout", absl::GetFlag(FLAGS_idle_timeout), &commands.idle_timeout},
      {"frame_timeout", absl::GetFlag(FLAGS_frame_timeout), &commands.frame_timeout},
      {"write_timeout", absl::GetFlag(FLAGS_write_timeout), &commands.write_timeout},
      {"shutdown_drain", absl::GetFlag(FLAGS_shutdown_drain), &commands.shutdown_drain},
      {"handshake_timeout", absl::GetFlag(FLAGS_handshake_timeout), &gateway.handshake_timeout},
      {"gateway_idle_timeout", absl::GetFlag(FLAGS_gateway_idle_timeout), &gateway.idle_timeout},
      {"gateway_write_timeout", absl::GetFlag(FLAGS_gateway_write_timeout), &gateway.write_timeout},
      {"shutdown_grace", absl::GetFlag(FLAGS_shutdown_grace), &gateway.shutdown_grace},
  };
  for (const Timeout& timeout : timeouts) {
    absl::StatusOr<std::chrono::milliseconds> millis = Millis(timeout.flag, timeout.value);
    if (!millis.ok()) return millis.status();
    *timeout.option = *millis;
  }

  options.event_log.max_events = absl::GetFlag(FLAGS_max_events);
  options.event_log.max_bytes = absl::GetFlag(FLAGS_max_log_bytes);
  options.event_log.epoch = absl::GetFlag(FLAGS_epoch);
  options.http_commands = absl::GetFlag(FLAGS_http_commands);
  return options;
}

// "127.0.0.1:8080", "[::1]:8080".
std::string HostPort(const std::string& address, std::uint16_t port) {
  return absl::StrContains(address, ':') ? absl::StrCat("[", address, "]:", port)
                                         : absl::StrCat(address, ":", port);
}

// Where a browser on this machine reaches a server listening on `address`: the loopback
// address for the wildcard ones (0.0.0.0, ::), whose origins are allowed by default.
std::string BrowsableAddress(const std::string& address) {
  if (address == "0.0.0.0") return "127.0.0.1";
  if (address == "::") return "::1";
  return address;
}

// A port the kernel considers free on `address` now (bound, read, released).
absl::StatusOr<std::uint16_t> FreePort(const std::string& address) {
  boost::asio::io_context io;
  boost::system::error_code ec;
  const boost::asio::ip::address ip = boost::asio::ip::make_address(address, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("--address '", address, "': ", ec.message()));
  boost::asio::ip::tcp::acceptor probe(io);
  const boost::asio::ip::tcp::endpoint endpoint(ip, 0);
  probe.open(endpoint.protocol(), ec);
  if (!ec) probe.bind(endpoint, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot bind ", address, ":0: ", ec.message()));
  return probe.local_endpoint().port();
}

// The service: write side (handlers, directory), read side (projection), and the server.
class UserService {
 public:
  UserService() : router_({.service_id = "user-service"}) {}

  absl::Status Start(cqrs::net::ServerOptions options) {
    if (absl::Status registered = users::RegisterHandlers(router_, directory_); !registered.ok()) {
      return registered;
    }
    // The dashboard's own origins, unless --allowed_origins names others. The port must be
    // known first: with --gateway_port=0, take a free one (and try again should another process
    // take it in between).
    const bool default_origins = options.gateway.allowed_origins.empty();
    const bool probe = default_origins && options.gateway.port == 0;
    absl::Status started;
    for (int attempt = 0; attempt < 5; ++attempt) {
      cqrs::net::ServerOptions these = options;
      if (probe) {
        absl::StatusOr<std::uint16_t> port = FreePort(options.gateway.address);
        if (!port.ok()) return port.status();
        these.gateway.port = *port;
      }
      if (default_origins) {
        these.gateway.allowed_origins = {absl::StrCat("http://127.0.0.1:", these.gateway.port),
                                         absl::StrCat("http://localhost:", these.gateway.port),
                                         absl::StrCat("http://[::1]:", these.gateway.port)};
      }
      server_.reset();
      server_ = std::make_unique<cqrs::net::Server>(router_, std::move(these));
      projection_.Follow(server_->log());
      users::AddUserRoutes(server_->gateway(), server_->commands(), projection_);
      dashboard::AddRoutes(server_->gateway());
      started = server_->Start();
      if (started.ok() || !probe || started.code() != absl::StatusCode::kUnavailable) break;
    }
    return started;
  }

  cqrs::net::Server& server() { return *server_; }

 private:
  cqrs::CommandRouter router_;
  users::UserDirectory directory_;
  users::UserProjection projection_;
  std::unique_ptr<cqrs::net::Server> server_;  // Last: stops before what it serves goes.
};

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the cqrs-cpp user-service demo: commands over TCP, events over WebSocket, a browser "
      "dashboard.\n  cqrs_user_service [--command_port=7000] [--gateway_port=8080] [flags...]");
  // --help lists this program's flags (the ones defined in this file).
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "user_service/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  const std::vector<char*> rest = absl::ParseCommandLine(argc, argv);
  if (rest.size() > 1) {
    std::fprintf(stderr, "cqrs_user_service: unexpected argument '%s' (see --help)\n", rest[1]);
    return 2;
  }
  absl::StatusOr<cqrs::net::ServerOptions> options = OptionsFromFlags();
  absl::StatusOr<cqrs::LogLevel> log_level = LogLevelOf(absl::GetFlag(FLAGS_log_level));
  for (const absl::Status& status : {options.status(), log_level.status()}) {
    if (!status.ok()) {
      std::fprintf(stderr, "cqrs_user_service: %s\n", std::string(status.message()).c_str());
      return 2;
    }
  }
  cqrs::SetLogLevel(*log_level);

  // Before the servers start (their threads inherit the mask); this program reports the bound
  // ports before it waits, which net::Server::Run does not.
  cqrs::net::StopSignals stop;

  UserService service;
  if (absl::Status status = service.Start(*std::move(options)); !status.ok()) {
    std::fprintf(stderr, "cqrs_user_service: %s\n", status.ToString().c_str());
    return 1;
  }
  cqrs::net::Server& server = service.server();
  const std::string address = absl::GetFlag(FLAGS_address);
  std::printf("user-service: commands on %s, events and dashboard on http://%s/\n",
              HostPort(address, server.command_port()).c_str(),
              HostPort(BrowsableAddress(address), server.gateway_port()).c_str());
  std::fflush(stdout);

  const int signal = stop.Wait();
  server.Shutdown();
  std::printf("user-service: stopped (%s, %llu events)\n", strsignal(signal),
              static_cast<unsigned long long>(server.log().head()));
  return 0;
}
