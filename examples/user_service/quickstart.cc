// The seed's sequence, end to end over a real socket, in one process:
// a command server with the user service's CreateUser handler on 127.0.0.1 (kernel-chosen
// port), a client that sends "Create user 'Bob'", and the events the command appended.
//
//   build/release/examples/cqrs_quickstart

#include <cstdio>
#include <mutex>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "cqrs/core/event_sink.h"
#include "cqrs/net/command_client.h"
#include "cqrs/net/command_server.h"
#include "user_handlers.h"

namespace {

// Prints every appended event and numbers them from 1 (the event log comes in a later step).
class PrintingSink : public cqrs::EventSink {
 public:
  absl::StatusOr<cqrs::AppendReceipt> Append(
      std::span<cqrs::v1::EventEnvelope* const> events) override {
    std::lock_guard lock(mutex_);
    cqrs::AppendReceipt receipt{.first_offset = next_, .count = events.size(), .epoch = 1};
    for (auto* event : events) {
      event->set_offset(next_++);
      event->set_epoch(1);
      users::v1::UserCreated created;
      if (event->payload().UnpackTo(&created)) {
        std::printf("event   #%llu on '%s': User '%s' created (id %s)\n",
                    static_cast<unsigned long long>(event->offset()), event->channel().c_str(),
                    created.name().c_str(), created.user_id().c_str());
      }
    }
    return receipt;
  }

 private:
  std::mutex mutex_;
  std::uint64_t next_ = 1;
};

}  // namespace

int main() {
  cqrs::CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (auto status = users::RegisterHandlers(router, directory); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  PrintingSink sink;
  router.set_event_sink(&sink);

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
