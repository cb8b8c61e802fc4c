// The seed's sequence, end to end over a real socket, in one process:
// a command server with the user service's CreateUser handler on 127.0.0.1 (kernel-chosen
// port), a client that sends "Create user 'Bob'", and the events the command appended to the
// in-memory event log.
//
//   build/release/examples/cqrs_quickstart

#include <cstdio>
#include <span>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "cqrs/core/event_log.h"
#include "cqrs/net/command_client.h"
#include "cqrs/net/command_server.h"
#include "user_handlers.h"

namespace {

// Prints each appended event as the seed's listeners would ("User 'Bob' created").
void PrintEvents(std::span<const cqrs::EventLog::Record> appended) {
  for (const auto& record : appended) {
    cqrs::v1::EventEnvelope event;
    users::v1::UserCreated created;
    if (event.ParseFromString(record->envelope()) && event.payload().UnpackTo(&created)) {
      std::printf("event   #%llu on '%s': User '%s' created (id %s)\n",
                  static_cast<unsigned long long>(record->offset()), record->channel().c_str(),
                  created.name().c_str(), created.user_id().c_str());
    }
  }
}

}  // namespace

int main() {
  cqrs::CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (auto status = users::RegisterHandlers(router, directory); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  cqrs::InMemoryEventLog log;
  log.AddListener(PrintEvents);
  router.set_event_sink(&log);

  cqrs::net::CommandServer server(router, {.threads = 1});
  if (auto status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("server  listening on 127.0.0.1:%u\n", server.port());

  boost::asio::io_context io;
  auto client = cqrs::net::CommandClient::Create(io.get_executor(), {.port = server.port()});
  int exit_code = 1;
  boost::asio::co_spawn(
      io,
      [&]() -> cqrs::Awaitable<void> {
        users::v1::CreateUser create;
        create.set_name("Bob");
        std::printf("client  -> CreateUser{name: 'Bob'}\n");
        auto reply = co_await client->Call<users::v1::CreateUserReply>(create);
        if (reply.ok()) {
          std::printf("client  <- OK, user id %s\n", reply->user_id().c_str());
          exit_code = 0;
        } else {
          std::printf("client  <- %s\n", reply.status().ToString().c_str());
        }
        create.set_name("");
        std::printf("client  -> CreateUser{name: ''}\n");
        auto rejected = co_await client->Call<users::v1::CreateUserReply>(create);
        std::printf("client  <- %s\n", rejected.status().ToString().c_str());
        client->Close();
      },
      boost::asio::detached);
  io.run();
  server.Shutdown();
  std::printf("server  stopped after %llu commands\n",
              static_cast<unsigned long long>(server.stats().commands));
  return exit_code;
}
