// The user-service example end to end on loopback: its commands' validation over TCP, the read
// model (UserProjection) fed by the log, its HTTP routes (POST /users, GET /users) and the
// embedded dashboard, all on one net::Server with kernel-chosen ports.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include "cqrs/core/time_util.h"
#include "cqrs/net/command_client.h"
#include "cqrs/net/server.h"
#include "dashboard.h"
#include "testing/coro.h"
#include "user_handlers.h"
#include "user_projection.h"
#include "user_routes.h"

namespace cqrs::net {
namespace {

namespace beast = ::boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using Envelope = v1::CommandResponseEnvelope;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);

// One HTTP request on a fresh connection. (Plain pointers: GCC 12 mis-destroys temporaries
// with destructors inside a caller's co_await expression.)
Awaitable<http::response<http::string_body>> Fetch(std::uint16_t port, http::verb verb,
                                                   const char* target, const char* body) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  auto [connect_ec] =
      co_await stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), kUse);
  EXPECT_FALSE(connect_ec) << connect_ec.message();
  http::request<http::string_body> request(verb, target, 11);
  request.set(http::field::host, "127.0.0.1");
  request.set(http::field::content_type, "application/json");
  request.body() = body;
  request.prepare_payload();
  auto [write_ec, written] = co_await http::async_write(stream, request, kUse);
  EXPECT_FALSE(write_ec) << write_ec.message();
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  auto [read_ec, read] = co_await http::async_read(stream, buffer, response, kUse);
  EXPECT_FALSE(read_ec) << read_ec.message();
  co_return response;
}

users::v1::CreateUser Create(std::string name, std::string id = "") {
  users::v1::CreateUser create;
  create.set_name(std::move(name));
  create.set_user_id(std::move(id));
  return create;
}

users::v1::RenameUser Rename(std::string id, std::string name) {
  users::v1::RenameUser rename;
  rename.set_user_id(std::move(id));
  rename.set_name(std::move(name));
  return rename;
}

users::v1::DeleteUser Delete(std::string id) {
  users::v1::DeleteUser remove;
  remove.set_user_id(std::move(id));
  return remove;
}

// "REJECTED USER_EXISTS"
std::string Outcome(const Envelope& response) {
  std::string outcome(CommandStatusName(response.status()));
  if (!response.error().error_code().empty()) outcome += " " + response.error().error_code();
  return outcome;
}

class UserServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(users::RegisterHandlers(router_, directory_).ok());
    ServerOptions options;
    options.commands.threads = 1;
    options.gateway.threads = 1;
    server_ = std::make_unique<Server>(router_, std::move(options));
    projection_.Follow(server_->log());
    users::AddUserRoutes(server_->gateway(), server_->commands(), projection_);
    dashboard::AddRoutes(server_->gateway());
    const absl::Status started = server_->Start();
    ASSERT_TRUE(started.ok()) << started;
    client_ = CommandClient::Create(io_.get_executor(), {.port = server_->command_port()});
  }

  void TearDown() override {
    if (client_ != nullptr) client_->Close();
    cqrs::testing::Drain(io_);
    if (server_ != nullptr) server_->Shutdown();
  }

  Envelope Send(const google::protobuf::Message& command, std::string subject = "") {
    SendOptions options;
    options.subject = std::move(subject);
    absl::StatusOr<Envelope> response =
        cqrs::testing::Run(io_, client_->Send(command, std::move(options)));
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *std::move(response) : Envelope();
  }

  http::response<http::string_body> Get(const char* target) {
    return cqrs::testing::Run(io_, Fetch(server_->gateway_port(), http::verb::get, target, ""));
  }
  http::response<http::string_body> Post(const char* target, const char* body) {
    return cqrs::testing::Run(io_, Fetch(server_->gateway_port(), http::verb::post, target, body));
  }

  // The events in the log, as envelopes.
  std::vector<v1::EventEnvelope> Events() {
    std::vector<v1::EventEnvelope> events;
    absl::StatusOr<std::vector<EventLog::Record>> records = server_->log().Read(0, 1000);
    EXPECT_TRUE(records.ok()) << records.status();
    for (const EventLog::Record& record : *records) {
      EXPECT_TRUE(events.emplace_back().ParseFromString(record->envelope()));
    }
    return events;
  }

  CommandRouter router_{{.service_id = "user-service"}};
  users::UserDirectory directory_;
  users::UserProjection projection_;
  std::unique_ptr<Server> server_;  // Stops before the router, directory and projection go.
  asio::io_context io_;
  std::shared_ptr<CommandClient> client_;
};

TEST_F(UserServiceTest, CreateUserValidatesTheNameAndRefusesDuplicates) {
  EXPECT_EQ(Outcome(Send(Create(""))), "REJECTED USER_NAME_EMPTY");
  EXPECT_EQ(Outcome(Send(Create(" \t "))), "REJECTED USER_NAME_EMPTY");
  const Envelope too_long = Send(Create(std::string(65, 'x')));
  EXPECT_EQ(Outcome(too_long), "REJECTED USER_NAME_TOO_LONG");
  EXPECT_THAT(too_long.error().message(), HasSubstr("at most 64 characters"));
  // The limit counts characters, not bytes: 64 two-byte characters fit.
  std::string accents;
  for (int i = 0; i < 64; ++i) accents += "\xc3\xa9";
  EXPECT_EQ(Outcome(Send(Create(accents))), "OK");
  EXPECT_EQ(Outcome(Send(Create(accents + "\xc3\xa9"))), "REJECTED USER_NAME_TOO_LONG");

  const Envelope created = Send(Create("Bob", "bob-1"));
  ASSERT_EQ(Outcome(created), "OK");
  users::v1::CreateUserReply reply;
  ASSERT_TRUE(created.payload().UnpackTo(&reply));
  EXPECT_EQ(reply.user_id(), "bob-1");
  EXPECT_EQ(Outcome(Send(Create("Bob again", "bob-1"))), "REJECTED USER_EXISTS");
  EXPECT_EQ(Outcome(Send(Create("Bob", "bob-2"), "someone-else")), "INVALID USER_ID_MISMATCH");
  EXPECT_EQ(directory_.NameOf("bob-1"), "Bob");
  EXPECT_EQ(directory_.size(), 2u);
  EXPECT_EQ(server_->log().head(), 2u);  // Only the accepted commands left events.
}

TEST_F(UserServiceTest, RenameAndDeleteNeedAnExistingUserAndEmitTheOldName) {
  ASSERT_EQ(Outcome(Send(Create("Bob", "u1"))), "OK");
  EXPECT_EQ(Outcome(Send(Rename("u1", ""))), "REJECTED USER_NAME_EMPTY");
  EXPECT_EQ(Outcome(Send(Rename("u1", std::string(65, 'r')))), "REJECTED USER_NAME_TOO_LONG");
  EXPECT_EQ(Outcome(Send(Rename("nobody", "Ann"))), "REJECTED USER_NOT_FOUND");
  EXPECT_EQ(Outcome(Send(Rename("", "Ann"))), "INVALID USER_ID_REQUIRED");
  EXPECT_EQ(Outcome(Send(Rename("u1", "Ann"), "u2")), "INVALID USER_ID_MISMATCH");
  EXPECT_EQ(Outcome(Send(Rename("u1", "Robert"), "u1")), "OK");
  // The subject alone names the user.
  EXPECT_EQ(Outcome(Send(Rename("", "Rob"), "u1")), "OK");
  EXPECT_EQ(directory_.NameOf("u1"), "Rob");

  EXPECT_EQ(Outcome(Send(Delete("nobody"))), "REJECTED USER_NOT_FOUND");
  EXPECT_EQ(Outcome(Send(Delete(""))), "INVALID USER_ID_REQUIRED");
  EXPECT_EQ(Outcome(Send(Delete("u1"), "u1")), "OK");
  EXPECT_EQ(Outcome(Send(Delete("u1"))), "REJECTED USER_NOT_FOUND");
  EXPECT_EQ(Outcome(Send(Rename("u1", "Ghost"))), "REJECTED USER_NOT_FOUND");
  EXPECT_FALSE(directory_.Contains("u1"));
  // A deleted id may be used again.
  EXPECT_EQ(Outcome(Send(Create("Bob II", "u1"))), "OK");

  const std::vector<v1::EventEnvelope> events = Events();
  ASSERT_EQ(events.size(), 5u);
  users::v1::UserRenamed renamed;
  ASSERT_TRUE(events[1].payload().UnpackTo(&renamed));
  EXPECT_EQ(renamed.user_id(), "u1");
  EXPECT_EQ(renamed.old_name(), "Bob");
  EXPECT_EQ(renamed.new_name(), "Robert");
  users::v1::UserDeleted deleted;
  ASSERT_TRUE(events[3].payload().UnpackTo(&deleted));
  EXPECT_EQ(deleted.user_id(), "u1");
  EXPECT_EQ(deleted.name(), "Rob");
  for (const v1::EventEnvelope& event : events) {
    EXPECT_EQ(event.channel(), users::kUsersChannel);
    EXPECT_EQ(event.stream_info().entity_type(), "User");
    EXPECT_EQ(event.stream_info().id(), "u1");
  }
}

TEST_F(UserServiceTest, TheProjectionFollowsTheEvents) {
  ASSERT_EQ(Outcome(Send(Create("Ann", "a"))), "OK");
  ASSERT_EQ(Outcome(Send(Create("Bob", "b"))), "OK");
  ASSERT_EQ(Outcome(Send(Create("Cid", "c"))), "OK");
  ASSERT_EQ(Outcome(Send(Rename("b", "Robert"))), "OK");
  ASSERT_EQ(Outcome(Send(Delete("a"))), "OK");
  ASSERT_EQ(Outcome(Send(Create(""))), "REJECTED USER_NAME_EMPTY");

  // Listeners run inside the append, before the response: the projection is up to date.
  const users::v1::UserList list = projection_.List();
  EXPECT_EQ(list.offset(), 5u);
  EXPECT_EQ(list.epoch(), server_->log().epoch());
  std::vector<std::pair<std::string, std::string>> seen;
  for (const users::v1::UserView& user : list.users())
    seen.emplace_back(user.user_id(), user.name());
  EXPECT_THAT(seen, ElementsAre(Pair("b", "Robert"), Pair("c", "Cid")));
  const std::optional<users::v1::UserView> robert = projection_.Find("b");
  ASSERT_TRUE(robert.has_value());
  EXPECT_EQ(robert->offset(), 4u);
  EXPECT_LT(FromTimestamp(robert->created_at()), FromTimestamp(robert->updated_at()));
  EXPECT_FALSE(projection_.Find("a").has_value());
}

TEST(UserProjection, IgnoresReplayedEventsAndStartsOverInANewEpoch) {
  users::UserProjection projection;
  const auto event = [](std::uint64_t epoch, std::uint64_t offset,
                        const google::protobuf::Message& payload) {
    v1::EventEnvelope envelope;
    envelope.set_epoch(epoch);
    envelope.set_offset(offset);
    envelope.mutable_payload()->PackFrom(payload);
    return envelope;
  };
  users::v1::UserCreated bob;
  bob.set_user_id("b");
  bob.set_name("Bob");
  users::v1::UserRenamed renamed;
  renamed.set_user_id("b");
  renamed.set_old_name("Bob");
  renamed.set_new_name("Robert");
  projection.Apply(event(7, 1, bob));
  projection.Apply(event(7, 2, renamed));
  projection.Apply(event(7, 1, bob));  // A replay of offset 1: no effect.
  ASSERT_TRUE(projection.Find("b").has_value());
  EXPECT_EQ(projection.Find("b")->name(), "Robert");
  EXPECT_EQ(projection.offset(), 2u);

  users::v1::UserCreated ann;
  ann.set_user_id("a");
  ann.set_name("Ann");
  projection.Apply(event(8, 1, ann));  // New epoch: the old history is gone.
  const users::v1::UserList list = projection.List();
  ASSERT_EQ(list.users_size(), 1);
  EXPECT_EQ(list.users(0).name(), "Ann");
  EXPECT_EQ(list.epoch(), 8u);
  EXPECT_EQ(list.offset(), 1u);
}

TEST_F(UserServiceTest, PostUsersCreatesAUserThroughTheCommandPipeline) {
  auto response = Post("/users", R"({"name": "Bob"})");
  ASSERT_EQ(response.result_int(), 201u) << response.body();
  EXPECT_EQ(response[http::field::content_type], "application/json");
  google::protobuf::Struct body;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(response.body(), &body).ok())
      << response.body();
  const std::string id = body.fields().at("userId").string_value();
  EXPECT_FALSE(id.empty());
  EXPECT_FALSE(body.fields().at("commandId").string_value().empty());
  EXPECT_EQ(body.fields().at("eventOffsets").list_value().values(0).string_value(), "1");
  EXPECT_EQ(response[http::field::location], "/users/" + id);
  EXPECT_EQ(directory_.NameOf(id), "Bob");
  // The command ran with the new user's id as its subject (through the server's pipeline).
  const std::vector<v1::EventEnvelope> events = Events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].stream_info().id(), id);

  response = Get("/users");
  EXPECT_EQ(response.result_int(), 200u);
  users::v1::UserList list;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(response.body(), &list).ok());
  ASSERT_EQ(list.users_size(), 1);
  EXPECT_EQ(list.users(0).user_id(), id);
  EXPECT_EQ(list.users(0).name(), "Bob");
  EXPECT_EQ(list.offset(), 1u);

  const std::string one_user = "/users/" + id;
  response = Get(one_user.c_str());
  EXPECT_EQ(response.result_int(), 200u);
  EXPECT_THAT(response.body(), HasSubstr(R"("name":"Bob")"));
  response = Get("/users/nobody");
  EXPECT_EQ(response.result_int(), 404u);
  EXPECT_THAT(response.body(), HasSubstr(R"("code":"USER_NOT_FOUND")"));
}

TEST_F(UserServiceTest, PostUsersAnswersErrorsWithTheCommandStatusAndCode) {
  auto response = Post("/users", R"({"name": ""})");
  EXPECT_EQ(response.result_int(), 422u);
  EXPECT_THAT(response.body(), HasSubstr(R"({"status":"REJECTED","commandId":")"));
  EXPECT_THAT(response.body(),
              HasSubstr(R"("error":{"code":"USER_NAME_EMPTY","message":"the user name must not)"));

  const std::string too_long = R"({"name": ")" + std::string(65, 'x') + R"("})";
  response = Post("/users", too_long.c_str());
  EXPECT_EQ(response.result_int(), 422u);
  EXPECT_THAT(response.body(), HasSubstr("USER_NAME_TOO_LONG"));

  response = Post("/users", R"({"name": "Ann", "userId": "ann"})");
  EXPECT_EQ(response.result_int(), 201u);
  EXPECT_THAT(response.body(), HasSubstr(R"({"userId":"ann",)"));
  response = Post("/users", R"({"name": "Ann", "userId": "ann"})");
  EXPECT_EQ(response.result_int(), 422u);
  EXPECT_THAT(response.body(), HasSubstr("USER_EXISTS"));

  response = Post("/users", R"({"name": )");
  EXPECT_EQ(response.result_int(), 400u);
  EXPECT_THAT(response.body(),
              HasSubstr(R"({"status":"INVALID","error":{"code":"BAD_REQUEST_BODY")"));
  response = Post("/users", R"({"nickname": "Bob"})");
  EXPECT_EQ(response.result_int(), 400u);
  EXPECT_THAT(response.body(), HasSubstr("nickname"));
  EXPECT_EQ(server_->log().head(), 1u);

  // The generic route runs the other commands; RenameUser by subject.
  response = Post("/commands/users.v1.RenameUser", R"({"userId": "ann", "name": "Anna"})");
  EXPECT_EQ(response.result_int(), 200u) << response.body();
  EXPECT_EQ(projection_.Find("ann")->name(), "Anna");
  response = Post("/commands/users.v1.DeleteUser", R"({"userId": "nobody"})");
  EXPECT_EQ(response.result_int(), 422u);
  EXPECT_THAT(response.body(), HasSubstr("USER_NOT_FOUND"));
}

TEST_F(UserServiceTest, ServesTheEmbeddedDashboard) {
  auto response = Get("/");
  EXPECT_EQ(response.result_int(), 200u);
  EXPECT_EQ(response[http::field::content_type], "text/html; charset=utf-8");
  EXPECT_THAT(response.body(), HasSubstr("<script src=\"/app.js\""));
  EXPECT_THAT(std::string(response["Content-Security-Policy"]), HasSubstr("connect-src 'self'"));
  EXPECT_EQ(Get("/index.html").body(), response.body());

  response = Get("/app.js");
  EXPECT_EQ(response.result_int(), 200u);
  EXPECT_EQ(response[http::field::content_type], "text/javascript; charset=utf-8");
  EXPECT_THAT(response.body(), HasSubstr("'cqrs.v1.json'"));
  const dashboard::Asset* app = dashboard::FindAsset("/app.js");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(response.body(), app->body);  // Byte for byte.

  EXPECT_EQ(Get("/style.css")[http::field::content_type], "text/css; charset=utf-8");
  EXPECT_EQ(Get("/favicon.svg")[http::field::content_type], "image/svg+xml");
  EXPECT_EQ(Get("/nothing-here").result_int(), 404u);
  // The gateway's own paths still win over the dashboard's "/".
  EXPECT_THAT(Get("/healthz").body(), HasSubstr(R"("status":"ok")"));
  EXPECT_EQ(Get("/users").result_int(), 200u);
}

}  // namespace
}  // namespace cqrs::net
