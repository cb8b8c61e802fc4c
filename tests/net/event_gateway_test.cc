// The event gateway over loopback, driven by Beast's own WebSocket and HTTP clients (an
// implementation independent of the gateway's framing), together with the command server
// through net::Server. The Python client test (python/gateway_client_test.py) covers resume,
// slow consumers, origins and malformed input from a third implementation.

#include "cqrs/net/event_gateway.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "cqrs/net/command_client.h"
#include "cqrs/net/event_subscriber.h"
#include "cqrs/net/server.h"
#include "cqrs/v1/gateway.pb.h"
#include "testing/coro.h"
#include "user_handlers.h"

namespace cqrs::net {
namespace {

namespace beast = ::boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using ::testing::HasSubstr;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);

// A user service: command server + in-memory log + gateway, on kernel-chosen ports.
class Service {
 public:
  explicit Service(ServerOptions options = {}) : router_({.service_id = "user-service"}) {
    EXPECT_TRUE(users::RegisterHandlers(router_, directory_).ok());
    options.commands.threads = 1;
    if (options.gateway.threads == 0) options.gateway.threads = 2;
    server_ = std::make_unique<Server>(router_, std::move(options));
    const absl::Status started = server_->Start();
    EXPECT_TRUE(started.ok()) << started;
  }
  Server& server() { return *server_; }

 private:
  CommandRouter router_;
  users::UserDirectory directory_;
  std::unique_ptr<Server> server_;
};

// A gateway subscriber on Beast's WebSocket client.
class Subscriber {
 public:
  explicit Subscriber(asio::any_io_executor executor) : ws_(std::move(executor)) {}

  // Connects and upgrades; an empty `subprotocol` offers none. (Plain pointers, not strings:
  // GCC 12 mis-destroys temporaries with destructors inside a co_await expression.)
  Awaitable<beast::error_code> Connect(std::uint16_t port, const char* subprotocol_text,
                                       const char* origin_text) {
    const std::string subprotocol = subprotocol_text;
    const std::string origin = origin_text;
    proto_ = subprotocol == "cqrs.v1.proto";
    auto& socket = beast::get_lowest_layer(ws_);
    auto [connect_ec] = co_await socket.async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), kUse);
    if (connect_ec) co_return connect_ec;
    ws_.set_option(
        websocket::stream_base::decorator([subprotocol, origin](websocket::request_type& r) {
          if (!subprotocol.empty()) r.set(http::field::sec_websocket_protocol, subprotocol);
          if (!origin.empty()) r.set(http::field::origin, origin);
        }));
    websocket::response_type response;
    auto [ec] = co_await ws_.async_handshake(response, "127.0.0.1", "/events", kUse);
    status_ = response.result_int();
    co_return ec;
  }
  Awaitable<beast::error_code> Connect(std::uint16_t port, const char* subprotocol) {
    return Connect(port, subprotocol, "");
  }
  unsigned status() const { return status_; }

  Awaitable<void> Send(const v1::ClientMessage& message) {
    std::string bytes;
    if (proto_) {
      message.SerializeToString(&bytes);
      ws_.binary(true);
    } else {
      EXPECT_TRUE(google::protobuf::util::MessageToJsonString(message, &bytes).ok());
      ws_.text(true);
    }
    auto [ec, n] = co_await ws_.async_write(asio::buffer(bytes), kUse);
    EXPECT_FALSE(ec) << ec.message();
  }
  Awaitable<void> Subscribe(const char* id, const std::vector<std::string>& channels) {
    v1::ClientMessage message;
    message.mutable_subscribe()->set_subscription_id(id);
    for (const auto& channel : channels) message.mutable_subscribe()->add_channels(channel);
    co_await Send(message);
  }
  Awaitable<void> Subscribe(const char* id, const char* channel) {
    const std::vector<std::string> channels = {channel};
    co_await Subscribe(id, channels);
  }

  // The next server message; nullopt when the connection closed (close_code() says why).
  Awaitable<std::optional<v1::ServerMessage>> Read() {
    beast::flat_buffer buffer;
    auto [ec, n] = co_await ws_.async_read(buffer, kUse);
    if (ec) {
      close_code_ = ws_.reason().code;
      close_reason_ = std::string(ws_.reason().reason.c_str());
      co_return std::nullopt;
    }
    const std::string bytes = beast::buffers_to_string(buffer.data());
    v1::ServerMessage message;
    if (proto_) {
      EXPECT_TRUE(ws_.got_binary());
      EXPECT_TRUE(message.ParseFromString(bytes));
    } else {
      EXPECT_TRUE(ws_.got_text());
      EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(bytes, &message).ok()) << bytes;
    }
    co_return message;
  }
  std::uint16_t close_code() const { return close_code_; }
  const std::string& close_reason() const { return close_reason_; }
  websocket::stream<beast::tcp_stream>& ws() { return ws_; }

 private:
  websocket::stream<beast::tcp_stream> ws_;
  bool proto_ = false;
  unsigned status_ = 0;
  std::uint16_t close_code_ = 0;
  std::string close_reason_;
};

Awaitable<http::response<http::string_body>> Fetch(std::uint16_t port, http::verb verb,
                                                   const char* target, const std::string& body,
                                                   const char* command_id) {
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  auto [connect_ec] =
      co_await stream.async_connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), kUse);
  EXPECT_FALSE(connect_ec);
  http::request<http::string_body> request(verb, target, 11);
  request.set(http::field::host, "127.0.0.1");
  request.body() = body;
  if (*command_id != '\0') request.set("X-Command-Id", command_id);
  request.prepare_payload();
  auto [write_ec, written] = co_await http::async_write(stream, request, kUse);
  EXPECT_FALSE(write_ec);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  auto [read_ec, read] = co_await http::async_read(stream, buffer, response, kUse);
  EXPECT_FALSE(read_ec) << read_ec.message();
  co_return response;
}

Awaitable<http::response<http::string_body>> Fetch(std::uint16_t port, http::verb verb,
                                                   const char* target, const std::string& body) {
  return Fetch(port, verb, target, body, "");
}

users::v1::CreateUser Create(std::string name) {
  users::v1::CreateUser create;
  create.set_name(std::move(name));
  return create;
}

// (A function, not a capturing lambda: the coroutine outlives the lambda object.)
Awaitable<void> SendCreate(CommandClient* client, int i) {
  const users::v1::CreateUser create = Create("user " + std::to_string(i));
  const auto response = co_await client->Send(create);
  EXPECT_TRUE(response.ok() && response->status() == v1::CommandResponseEnvelope::OK);
}

TEST(EventGateway, SeedSequenceReachesSubscribersAAndBInJsonAndProto) {
  Service service;
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    Subscriber a(io.get_executor());
    Subscriber b(io.get_executor());
    EXPECT_FALSE(co_await a.Connect(service.server().gateway_port(), "cqrs.v1.json"));
    EXPECT_FALSE(co_await b.Connect(service.server().gateway_port(), "cqrs.v1.proto"));
    co_await a.Subscribe("A", "users");
    co_await b.Subscribe("B", "users");
    const auto subscribed_a = co_await a.Read();
    const auto subscribed_b = co_await b.Read();
    EXPECT_EQ(subscribed_a->subscribed().subscription_id(), "A");
    EXPECT_EQ(subscribed_b->subscribed().epoch(), service.server().log().epoch());

    auto client =
        CommandClient::Create(io.get_executor(), {.port = service.server().command_port()});
    const users::v1::CreateUser bob = Create("Bob");
    const auto response = co_await client->Send(bob);
    EXPECT_TRUE(response.ok());
    EXPECT_EQ(response->status(), v1::CommandResponseEnvelope::OK);
    EXPECT_EQ(response->event_offsets_size(), 1);

    // (A named array: GCC 12 cannot range-for over a braced list inside a coroutine.)
    const std::vector<Subscriber*> both = {&a, &b};
    for (Subscriber* subscriber : both) {
      const auto message = co_await subscriber->Read();
      EXPECT_TRUE(message.has_value() && message->has_event());
      if (!message.has_value()) break;
      EXPECT_EQ(message->event().offset(), response->event_offsets(0));
      EXPECT_EQ(message->event().channel(), "users");
      EXPECT_EQ(message->event().causation_id(), response->command_id());
      users::v1::UserCreated created;
      EXPECT_TRUE(message->event().payload().UnpackTo(&created));
      EXPECT_EQ(created.name(), "Bob");
    }

    // A rejected command publishes nothing: the next event is the next accepted command's.
    const users::v1::CreateUser empty = Create("");
    const auto rejected = co_await client->Send(empty);
    EXPECT_EQ(rejected->status(), v1::CommandResponseEnvelope::REJECTED);
    EXPECT_EQ(rejected->event_offsets_size(), 0);
    const users::v1::CreateUser ann = Create("Ann");
    const auto second = co_await client->Send(ann);
    const auto next = co_await a.Read();
    EXPECT_EQ(next->event().offset(), response->event_offsets(0) + 1);
    EXPECT_EQ(next->event().offset(), second->event_offsets(0));
    client->Close();
    auto [close_a] = co_await a.ws().async_close(websocket::close_code::normal, kUse);
    auto [close_b] = co_await b.ws().async_close(websocket::close_code::normal, kUse);
    EXPECT_FALSE(close_a);
    EXPECT_FALSE(close_b);
  }());
  EXPECT_GE(service.server().gateway().stats().events_delivered, 3u);
}

TEST(EventGateway, ManyEventsArriveInOrderToEverySubscriber) {
  Service service;
  asio::io_context io;
  constexpr int kCommands = 2'000;
  cqrs::testing::Run(
      io,
      [&]() -> Awaitable<void> {
        std::vector<std::unique_ptr<Subscriber>> subscribers;
        for (int i = 0; i < 8; ++i) {
          subscribers.push_back(std::make_unique<Subscriber>(io.get_executor()));
          EXPECT_FALSE(co_await subscribers.back()->Connect(
              service.server().gateway_port(), i % 2 == 0 ? "cqrs.v1.proto" : "cqrs.v1.json"));
          co_await subscribers.back()->Subscribe("s", i % 4 == 0 ? "*" : "users");
          EXPECT_TRUE((co_await subscribers.back()->Read())->has_subscribed());
        }
        auto client =
            CommandClient::Create(io.get_executor(), {.port = service.server().command_port()});
        std::vector<testing::SpawnedOp> sends;
        for (int i = 0; i < kCommands; ++i) {
          sends.push_back(testing::Spawn(io.get_executor(), SendCreate(client.get(), i)));
        }
        co_await testing::WhenAll(std::move(sends));
        for (auto& subscriber : subscribers) {
          for (int i = 1; i <= kCommands; ++i) {
            const auto message = co_await subscriber->Read();
            EXPECT_TRUE(message.has_value());
            if (!message.has_value()) break;
            EXPECT_EQ(message->event().offset(), static_cast<std::uint64_t>(i));
          }
        }
        client->Close();
      }(),
      std::chrono::seconds(60));
}

TEST(EventGateway, RefusesConnectionsBeyondTheLimitWith503) {
  Service service({.gateway = {.max_connections = 2}});
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    Subscriber first(io.get_executor());
    Subscriber second(io.get_executor());
    Subscriber third(io.get_executor());
    EXPECT_FALSE(co_await first.Connect(service.server().gateway_port(), ""));
    EXPECT_FALSE(co_await second.Connect(service.server().gateway_port(), ""));
    EXPECT_TRUE(co_await third.Connect(service.server().gateway_port(), ""));
    EXPECT_EQ(third.status(), 503u);
  }());
  EXPECT_EQ(service.server().gateway().stats().connections_refused, 1u);
}

TEST(EventGateway, ClosesAnIncompleteHandshakeAtTheHandshakeTimeout) {
  Service service({.gateway = {.handshake_timeout = std::chrono::milliseconds(200)}});
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    tcp::socket socket(io);
    co_await socket.async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), service.server().gateway_port()),
        asio::use_awaitable);
    const std::string half = "GET /events HTTP/1.1\r\nHost: x\r\nUpgr";
    co_await asio::async_write(socket, asio::buffer(half), asio::use_awaitable);
    const auto start = std::chrono::steady_clock::now();
    char byte;
    auto [ec, n] = co_await socket.async_read_some(asio::buffer(&byte, 1), kUse);
    EXPECT_EQ(ec, asio::error::eof);
    EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(150));
  }());
}

Awaitable<void> ReadInto(Subscriber* subscriber, std::optional<v1::ServerMessage>* out) {
  *out = co_await subscriber->Read();
}

Awaitable<void> PingAfter(Subscriber* subscriber, int milliseconds) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(std::chrono::milliseconds(milliseconds));
  co_await timer.async_wait(asio::use_awaitable);
  v1::ClientMessage ping;
  ping.mutable_ping()->set_nonce(9);
  co_await subscriber->Send(ping);
}

TEST(EventGateway, PingsAnIdleSubscriberAndClosesOneThatStaysSilent) {
  Service service({.gateway = {.idle_timeout = std::chrono::milliseconds(400)}});
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    // Beast answers pings by itself: this one stays open past several idle timeouts.
    Subscriber lively(io.get_executor());
    EXPECT_FALSE(co_await lively.Connect(service.server().gateway_port(), ""));
    int pings = 0;
    lively.ws().control_callback([&](websocket::frame_type kind, beast::string_view) {
      if (kind == websocket::frame_type::ping) ++pings;
    });
    // A raw client that completed the handshake and then says nothing at all.
    tcp::socket silent(io);
    co_await silent.async_connect(
        tcp::endpoint(asio::ip::make_address("127.0.0.1"), service.server().gateway_port()),
        asio::use_awaitable);
    const std::string upgrade =
        "GET /events HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    co_await asio::async_write(silent, asio::buffer(upgrade), asio::use_awaitable);

    // `lively` keeps a read pending (so Beast answers the gateway's pings) for 3 idle timeouts,
    // then asks for a pong: the connection is still open.
    std::optional<v1::ServerMessage> pong;
    std::vector<testing::SpawnedOp> both;
    both.push_back(testing::Spawn(io.get_executor(), ReadInto(&lively, &pong)));
    both.push_back(testing::Spawn(io.get_executor(), PingAfter(&lively, 1'200)));
    co_await testing::WhenAll(std::move(both));
    EXPECT_TRUE(pong.has_value());
    if (pong.has_value()) {
      EXPECT_EQ(pong->pong().nonce(), 9u);
    }
    EXPECT_GE(pings, 1);

    // The silent one got the 101, a ping, then a close frame (1001, naming the timeout).
    std::string received;
    char buffer[4096];
    while (true) {
      auto [ec, n] = co_await silent.async_read_some(asio::buffer(buffer), kUse);
      received.append(buffer, n);
      if (ec) break;
    }
    EXPECT_THAT(received, HasSubstr("101 Switching Protocols"));
    const std::size_t body = received.find("\r\n\r\n") + 4;
    if (body + 1 >= received.size()) {
      ADD_FAILURE() << "nothing after the 101 response";
      co_return;
    }
    EXPECT_EQ(static_cast<unsigned char>(received[body]), 0x89);  // Ping.
    const std::size_t close = body + 2 + static_cast<unsigned char>(received[body + 1]);
    if (close + 4 >= received.size()) {
      ADD_FAILURE() << "no close frame after the ping";
      co_return;
    }
    EXPECT_EQ(static_cast<unsigned char>(received[close]), 0x88);  // Close.
    EXPECT_EQ((static_cast<unsigned char>(received[close + 2]) << 8) |
                  static_cast<unsigned char>(received[close + 3]),
              1001);
    EXPECT_THAT(received.substr(close + 4), HasSubstr("idle_timeout=400"));
  }());
}

TEST(EventGateway, EnforcesTheSubscriptionLimits) {
  Service service({.gateway = {.max_subscriptions = 1, .max_channels = 2}});
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    Subscriber subscriber(io.get_executor());
    EXPECT_FALSE(co_await subscriber.Connect(service.server().gateway_port(), "cqrs.v1.proto"));
    const std::vector<std::string> wide = {"a", "b", "c"};
    co_await subscriber.Subscribe("wide", wide);
    auto reply = co_await subscriber.Read();
    EXPECT_EQ(reply->error().code(), v1::GatewayError::INVALID_SUBSCRIPTION);
    EXPECT_THAT(reply->error().message(), HasSubstr("max_channels=2"));
    co_await subscriber.Subscribe("one", "users");
    EXPECT_TRUE((co_await subscriber.Read())->has_subscribed());
    co_await subscriber.Subscribe("two", "users");
    reply = co_await subscriber.Read();
    EXPECT_THAT(reply->error().message(), HasSubstr("max_subscriptions=1"));
    co_await subscriber.Subscribe("one", "users");
    reply = co_await subscriber.Read();
    EXPECT_THAT(reply->error().message(), HasSubstr("'one' is already in use"));
  }());
}

TEST(EventGateway, ClosesAConnectionThatKeepsSendingMalformedMessages) {
  Service service({.gateway = {.max_malformed_messages = 2}});
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    Subscriber subscriber(io.get_executor());
    EXPECT_FALSE(co_await subscriber.Connect(service.server().gateway_port(), ""));
    const std::string garbage = "{not json";
    for (int i = 0; i < 3; ++i) {
      subscriber.ws().text(true);
      auto [ec, n] = co_await subscriber.ws().async_write(asio::buffer(garbage), kUse);
      EXPECT_FALSE(ec);
    }
    for (int i = 0; i < 2; ++i) {
      const auto reply = co_await subscriber.Read();
      EXPECT_TRUE(reply.has_value());
      if (reply.has_value()) {
        EXPECT_EQ(reply->error().code(), v1::GatewayError::MALFORMED_MESSAGE);
      }
    }
    EXPECT_FALSE((co_await subscriber.Read()).has_value());
    EXPECT_EQ(subscriber.close_code(), 1008);
    EXPECT_THAT(subscriber.close_reason(), HasSubstr("max_malformed_messages=2"));
  }());
}

TEST(EventGateway, ServesRoutesHealthAndClearHttpErrors) {
  InMemoryEventLog log;
  FanoutHub hub(log);
  EventGateway gateway(hub, {.threads = 1, .max_message_bytes = 64});
  gateway.Route("POST", "/echo", [](const HttpRequest& request) -> Awaitable<HttpResponse> {
    co_return HttpResponse{.status = 201, .content_type = "text/plain", .body = request.body};
  });
  gateway.Route("POST", "/commands/", [](const HttpRequest& request) -> Awaitable<HttpResponse> {
    co_return HttpResponse{.body = "prefix " + request.path};
  });
  gateway.Route("GET", "/boom", [](const HttpRequest&) -> Awaitable<HttpResponse> {
    throw std::runtime_error("kaboom");
    co_return HttpResponse{};
  });
  ASSERT_TRUE(gateway.Start().ok());
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    const std::string hello = "hello";
    const std::string none;
    const std::string too_big(65, 'x');
    auto response = co_await Fetch(gateway.port(), http::verb::post, "/echo", hello);
    EXPECT_EQ(response.result_int(), 201u);
    EXPECT_EQ(response.body(), "hello");
    response = co_await Fetch(gateway.port(), http::verb::post, "/commands/a.B?x=1", none);
    EXPECT_EQ(response.body(), "prefix /commands/a.B");
    response = co_await Fetch(gateway.port(), http::verb::get, "/echo", none);
    EXPECT_EQ(response.result_int(), 405u);
    response = co_await Fetch(gateway.port(), http::verb::get, "/boom", none);
    EXPECT_EQ(response.result_int(), 500u);
    response = co_await Fetch(gateway.port(), http::verb::post, "/echo", too_big);
    EXPECT_EQ(response.result_int(), 413u);
    EXPECT_THAT(response.body(), HasSubstr("max_message_bytes=64"));
    response = co_await Fetch(gateway.port(), http::verb::get, "/healthz", none);
    EXPECT_EQ(response.result_int(), 200u);
    EXPECT_THAT(response.body(), HasSubstr(R"("status":"ok")"));
    response = co_await Fetch(gateway.port(), http::verb::get, "/missing", none);
    EXPECT_EQ(response.result_int(), 404u);
  }());
  gateway.Shutdown();
  EXPECT_GE(gateway.stats().http_requests, 6u);
}

TEST(EventGateway, RunsCommandsPostedAsJsonThroughTheCommandPipeline) {
  Service service;
  const std::uint16_t port = service.server().gateway_port();
  asio::io_context io;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    const std::string bob = R"({"name": "Bob"})";
    auto response =
        co_await Fetch(port, http::verb::post, "/commands/users.v1.CreateUser", bob, "http-1");
    EXPECT_EQ(response.result_int(), 200u);
    v1::CommandResponseEnvelope ok;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(response.body(), &ok).ok())
        << response.body();
    EXPECT_EQ(ok.command_id(), "http-1");
    EXPECT_EQ(ok.status(), v1::CommandResponseEnvelope::OK);
    EXPECT_EQ(ok.event_offsets_size(), 1);
    EXPECT_THAT(response.body(), HasSubstr("users.v1.CreateUserReply"));

    // The same id again: the first response, not a second user (the server's idempotency).
    response =
        co_await Fetch(port, http::verb::post, "/commands/users.v1.CreateUser", bob, "http-1");
    v1::CommandResponseEnvelope again;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(response.body(), &again).ok());
    EXPECT_EQ(again.SerializeAsString(), ok.SerializeAsString());
    EXPECT_EQ(service.server().log().head(), 1u);

    const std::string empty = R"({"name": ""})";
    response = co_await Fetch(port, http::verb::post, "/commands/users.v1.CreateUser", empty);
    EXPECT_EQ(response.result_int(), 422u);
    EXPECT_THAT(response.body(), HasSubstr(R"("status":"REJECTED")"));
    EXPECT_THAT(response.body(), HasSubstr("USER_NAME_EMPTY"));

    // A body bigger than any internal buffer: the command's own validation answers.
    const std::string long_name = R"({"name": ")" + std::string(20'000, 'x') + R"("})";
    response = co_await Fetch(port, http::verb::post, "/commands/users.v1.CreateUser", long_name);
    EXPECT_EQ(response.result_int(), 422u);
    EXPECT_THAT(response.body(), HasSubstr("USER_NAME_TOO_LONG"));

    response = co_await Fetch(port, http::verb::post, "/commands/no.such.Type", bob);
    EXPECT_EQ(response.result_int(), 404u);
    EXPECT_THAT(response.body(), HasSubstr("unknown command type 'no.such.Type'"));

    const std::string broken = R"({"nam": )";
    response = co_await Fetch(port, http::verb::post, "/commands/users.v1.CreateUser", broken);
    EXPECT_EQ(response.result_int(), 400u);
    EXPECT_THAT(response.body(), HasSubstr("not a valid users.v1.CreateUser"));

    // A command type without a handler: NOT_FOUND from the router, 404.
    response = co_await Fetch(port, http::verb::post, "/commands/users.v1.UserCreated", bob);
    EXPECT_EQ(response.result_int(), 404u);
    EXPECT_THAT(response.body(), HasSubstr(R"("status":"NOT_FOUND")"));
  }());
}

Awaitable<void> RunSubscriber(EventSubscriber* subscriber, absl::Status* result) {
  *result = co_await subscriber->Run();
}

TEST(EventGateway, NativeSubscriberReadsItsOwnWritesThroughReached) {
  Service service;
  asio::io_context io;
  std::vector<std::string> names;
  absl::Status run_result = absl::UnknownError("not run");
  auto subscriber = EventSubscriber::Create(
      io.get_executor(),
      {.url = absl::StrCat("ws://127.0.0.1:", service.server().gateway_port(), "/events"),
       .channels = {"users"},
       .from_offset = 0});  // Everything: no race with the first command.
  ASSERT_TRUE(subscriber.ok()) << subscriber.status();
  (*subscriber)->On<users::v1::UserCreated>([&](const users::v1::UserCreated& created) {
    names.push_back(created.name());
  });
  asio::co_spawn(io, RunSubscriber(subscriber->get(), &run_result), asio::detached);
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    auto client =
        CommandClient::Create(io.get_executor(), {.port = service.server().command_port()});
    for (const char* name : {"Ann", "Bob", "Cid"}) {
      const users::v1::CreateUser create = Create(name);
      const auto response = co_await client->Send(create);
      EXPECT_TRUE(response.ok());
      if (!response.ok()) break;
      // The receipt's offset: once Reached returns, the subscriber has seen this event.
      const absl::Status reached =
          co_await (*subscriber)
              ->Reached(response->event_offsets(0), std::chrono::milliseconds(5'000));
      EXPECT_TRUE(reached.ok()) << reached;
      EXPECT_FALSE(names.empty());
      if (!names.empty()) {
        EXPECT_EQ(names.back(), name);
      }
    }
    client->Close();
    (*subscriber)->Stop();
  }());
  cqrs::testing::Drain(io);
  EXPECT_TRUE(run_result.ok()) << run_result;
  EXPECT_EQ(names, (std::vector<std::string>{"Ann", "Bob", "Cid"}));
}

Awaitable<void> SendMany(CommandClient* client, int count, int* ok) {
  for (int i = 0; i < count; ++i) {
    const users::v1::CreateUser create = Create("user " + std::to_string(i));
    const auto response = co_await client->Send(create);
    if (response.ok() && response->status() == v1::CommandResponseEnvelope::OK) ++*ok;
  }
}

// Reads `count` events; counts those whose offsets are 1, 2, 3, ... in order.
Awaitable<void> ReadEvents(Subscriber* subscriber, int count, int* in_order) {
  for (int i = 1; i <= count; ++i) {
    const auto message = co_await subscriber->Read();
    if (!message.has_value()) break;
    if (message->event().offset() == static_cast<std::uint64_t>(i)) ++*in_order;
  }
}

TEST(EventGateway, AStalledSubscriberIsClosedWithoutHoldingCommandsOrOthersBack) {
  Service service({.gateway = {.max_queue_bytes = 64 * 1024,
                               .slow_consumer_grace = std::chrono::milliseconds(50)}});
  asio::io_context io;
  // Enough JSON for the stalled subscriber to fill the kernel's socket buffers (~4 MiB on
  // loopback) and then its 64 KiB queue.
  constexpr int kCommands = 20'000;
  cqrs::testing::Run(
      io,
      [&]() -> Awaitable<void> {
        // The stalled one: subscribes, then never reads again (a tiny receive buffer).
        Subscriber stalled(io.get_executor());
        beast::get_lowest_layer(stalled.ws()).socket().open(tcp::v4());
        beast::get_lowest_layer(stalled.ws())
            .socket()
            .set_option(asio::socket_base::receive_buffer_size(4096));
        EXPECT_FALSE(co_await stalled.Connect(service.server().gateway_port(), "cqrs.v1.json"));
        co_await stalled.Subscribe("s", "users");
        Subscriber healthy(io.get_executor());
        EXPECT_FALSE(co_await healthy.Connect(service.server().gateway_port(), "cqrs.v1.proto"));
        co_await healthy.Subscribe("h", "users");
        EXPECT_TRUE((co_await healthy.Read())->has_subscribed());

        auto client =
            CommandClient::Create(io.get_executor(), {.port = service.server().command_port()});
        int ok = 0;
        int in_order = 0;
        std::vector<testing::SpawnedOp> work;
        // The healthy one reads while the commands are sent.
        work.push_back(
            testing::Spawn(io.get_executor(), ReadEvents(&healthy, kCommands, &in_order)));
        for (int i = 0; i < 8; ++i) {
          work.push_back(
              testing::Spawn(io.get_executor(), SendMany(client.get(), kCommands / 8, &ok)));
        }
        co_await testing::WhenAll(std::move(work));
        EXPECT_EQ(ok, kCommands);
        EXPECT_EQ(in_order, kCommands);
        client->Close();
      }(),
      std::chrono::seconds(60));
  EXPECT_EQ(service.server().gateway().stats().slow_consumers_closed, 1u);
}

TEST(EventGateway, StartTwiceAndBadAddressAreClearErrors) {
  InMemoryEventLog log;
  FanoutHub hub(log);
  EventGateway bad(hub, {.address = "not an address"});
  EXPECT_EQ(bad.Start().code(), absl::StatusCode::kInvalidArgument);
  EventGateway gateway(hub, {.threads = 1});
  ASSERT_TRUE(gateway.Start().ok());
  EXPECT_EQ(gateway.Start().code(), absl::StatusCode::kFailedPrecondition);
  EventGateway taken(hub, {.port = gateway.port(), .threads = 1});
  EXPECT_EQ(taken.Start().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace cqrs::net
