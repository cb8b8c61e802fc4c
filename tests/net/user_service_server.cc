// A user-service server for tests driven by other languages (tests/net/python): a command
// server and an event gateway on 127.0.0.1 with kernel-chosen ports, an in-memory event log.
// Prints "PORT <command port>" and "GATEWAY <gateway port>" on stdout, serves until
// SIGTERM/SIGINT, then shuts down gracefully (GoAway, drain) and exits 0.
//
//   cqrs_test_user_server [--drain-ms N] [--max-events N] [--max-queue-bytes N]
//                         [--max-message-bytes N] [--write-timeout-ms N]
//                         [--allowed-origin ORIGIN]...

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <string>

#include "cqrs/net/server.h"
#include "cqrs/net/stop_signals.h"
#include "user_handlers.h"

int main(int argc, char** argv) {
  cqrs::net::ServerOptions server_options;
  cqrs::net::CommandServerOptions& options = server_options.commands;
  cqrs::InMemoryEventLogOptions& log_options = server_options.event_log;
  cqrs::net::EventGatewayOptions& gateway_options = server_options.gateway;
  options.threads = 2;
  gateway_options.threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const char* value = argv[i + 1];
    if (flag == "--drain-ms") {
      options.shutdown_drain = std::chrono::milliseconds(std::atoi(value));
    } else if (flag == "--max-events") {
      log_options.max_events = std::strtoull(value, nullptr, 10);
    } else if (flag == "--max-queue-bytes") {
      gateway_options.max_queue_bytes = std::strtoull(value, nullptr, 10);
    } else if (flag == "--max-message-bytes") {
      gateway_options.max_message_bytes = std::strtoull(value, nullptr, 10);
    } else if (flag == "--write-timeout-ms") {
      gateway_options.write_timeout = std::chrono::milliseconds(std::atoi(value));
    } else if (flag == "--allowed-origin") {
      gateway_options.allowed_origins.push_back(value);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  cqrs::net::StopSignals stop;  // Before the server's threads start: they inherit the mask.

  cqrs::CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (auto status = users::RegisterHandlers(router, directory); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  cqrs::net::Server server(router, std::move(server_options));
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("PORT %u\nGATEWAY %u\n", server.command_port(), server.gateway_port());
  std::fflush(stdout);
  stop.Wait();
  server.Shutdown();
  std::printf("STOPPED commands=%llu events=%llu\n",
              static_cast<unsigned long long>(server.commands().stats().commands),
              static_cast<unsigned long long>(server.log().head()));
  return 0;
}
