// A server for the example programs' end-to-end tests (cli_test.py): net::Server with the user
// service's handlers plus clitest.v1.Echo (a type the command-line tool does not link), on
// 127.0.0.1. Prints "PORT <command port>", "GATEWAY <gateway port>" and "EPOCH <the log's epoch>"
// once serving, serves
// until SIGTERM/SIGINT, then shuts down gracefully and exits 0.
//
//   cqrs_test_cli_server [--command_port N] [--gateway_port N]   # 0 (default): kernel-chosen

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <google/protobuf/struct.pb.h>

#include "absl/strings/numbers.h"
#include "clitest/v1/echo.pb.h"
#include "cqrs/core/command_router.h"
#include "cqrs/net/server.h"
#include "cqrs/net/stop_signals.h"
#include "user_handlers.h"

namespace {

absl::Status RegisterEcho(cqrs::CommandRouter& router) {
  return router.Handle<clitest::v1::Echo>(
      [](const clitest::v1::Echo& echo,
         cqrs::CommandContext& ctx) -> cqrs::Awaitable<absl::StatusOr<clitest::v1::EchoReply>> {
        clitest::v1::Echoed echoed;
        echoed.set_text(echo.text());
        ctx.Emit(echoed, cqrs::StreamOf("Echo", echo.text()), {.channel = "echo"});
        google::protobuf::Struct text;
        (*text.mutable_fields())["text"].set_string_value(echo.text());
        ctx.Emit(text, cqrs::StreamOf("Echo", echo.text()), {.channel = "echo"});
        clitest::v1::EchoReply reply;
        reply.set_text(echo.text());
        reply.set_length(static_cast<int>(echo.text().size()));
        if (echo.has_at()) *reply.mutable_at() = echo.at();
        *reply.mutable_numbers() = echo.numbers();
        co_return reply;
      });
}

}  // namespace

int main(int argc, char** argv) {
  cqrs::net::ServerOptions options;
  options.commands.threads = 1;
  options.gateway.threads = 1;
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    std::uint32_t port = 0;
    if (i + 1 >= argc || !absl::SimpleAtoi(argv[i + 1], &port) || port > 65535) {
      std::fprintf(stderr, "usage: %s [--command_port N] [--gateway_port N]\n", argv[0]);
      return 2;
    }
    if (flag == "--command_port") {
      options.commands.port = static_cast<std::uint16_t>(port);
    } else if (flag == "--gateway_port") {
      options.gateway.port = static_cast<std::uint16_t>(port);
    } else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  cqrs::net::StopSignals stop;  // Before the server's threads start: they inherit the mask.

  cqrs::CommandRouter router({.service_id = "cli-test-server"});
  users::UserDirectory directory;
  for (const absl::Status& status :
       {users::RegisterHandlers(router, directory), RegisterEcho(router)}) {
    if (!status.ok()) {
      std::fprintf(stderr, "%s\n", status.ToString().c_str());
      return 1;
    }
  }
  cqrs::net::Server server(router, options);
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("PORT %u\nGATEWAY %u\nEPOCH %llu\n", server.command_port(), server.gateway_port(),
              static_cast<unsigned long long>(server.log().epoch()));
  std::fflush(stdout);
  stop.Wait();
  server.Shutdown();
  std::printf("STOPPED events=%llu\n", static_cast<unsigned long long>(server.log().head()));
  std::fflush(stdout);
  return 0;
}
