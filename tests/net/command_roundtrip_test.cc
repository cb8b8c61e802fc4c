// Loopback: a real CommandServer on 127.0.0.1:0 and a CommandClient, the user-service handler.

#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>

#include "cqrs/net/command_client.h"
#include "cqrs/net/command_server.h"
#include "testing/coro.h"
#include "testing/recording_sink.h"
#include "user_handlers.h"

namespace cqrs::net {
namespace {

TEST(CommandRoundTrip, CreateUserOverTcp) {
  CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  ASSERT_TRUE(users::RegisterHandlers(router, directory).ok());
  testing::RecordingSink sink;
  router.set_event_sink(&sink);
  CommandServer server(router, {.threads = 2});
  ASSERT_TRUE(server.Start().ok());

  asio::io_context io;
  auto client = CommandClient::Create(io.get_executor(), {.port = server.port()});
  users::v1::CreateUser create;
  create.set_name("Bob");
  auto reply =
      testing::Run(io, client->Call<users::v1::CreateUserReply>(create, {.subject = "bob"}));
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_FALSE(reply->user_id().empty());
  EXPECT_EQ(sink.size(), 1u);

  create.set_name("");
  auto rejected = testing::Run(io, client->Send(create));
  ASSERT_TRUE(rejected.ok()) << rejected.status();
  EXPECT_EQ(rejected->status(), v1::CommandResponseEnvelope::REJECTED);
  EXPECT_EQ(rejected->error().error_code(), "USER_NAME_EMPTY");
  client->Close();
  testing::Drain(io);
  server.Shutdown();
}

}  // namespace
}  // namespace cqrs::net
