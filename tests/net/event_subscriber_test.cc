// Loopback tests of EventSubscriber against a fake gateway: a small Beast WebSocket server on
// 127.0.0.1 (port from the kernel) that keeps a log of events with offsets under an epoch,
// answers Subscribe with Subscribed (replaying what it retains after from_offset) or with
// OFFSET_UNAVAILABLE, pushes appended events to live subscribers, and drops or closes
// connections on command. Independent of the real EventGateway's own WebSocket framing.
//
// The subscriber and the fake run on one io_context driven by this thread (testing::Run, under a
// deadline). Steps are ordered by events (subscriptions counted, offsets Reached), never by
// sleeps.
//
// GCC 12: coroutines here take only pointers, references and trivial values, and no temporary
// with a destructor appears inside a co_await expression.

#include "cqrs/net/event_subscriber.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <google/protobuf/util/json_util.h>
#include <google/protobuf/wrappers.pb.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/stream.hpp>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cqrs/core/channel_pattern.h"
#include "cqrs/core/log.h"
#include "testing/coro.h"
#include "testing/sync.h"
#include "users/v1/users.pb.h"

namespace cqrs::net {
namespace {

namespace beast = ::boost::beast;
namespace http = ::boost::beast::http;
namespace websocket = ::boost::beast::websocket;
using ::google::protobuf::StringValue;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::users::v1::UserCreated;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
constexpr milliseconds kWait{5'000};
constexpr std::uint64_t kEpoch = 7;

UserCreated User(const std::string& name) {
  UserCreated created;
  created.set_user_id(absl::StrCat("id-", name));
  created.set_name(name);
  return created;
}

StringValue Text(const std::string& value) {
  StringValue text;
  text.set_value(value);
  return text;
}

// --- the fake gateway -------------------------------------------------------------------------

class FakeGateway {
 public:
  struct Out {
    std::string bytes;
    bool text = false;
    std::optional<websocket::close_reason> close;
  };
  struct Conn {
    explicit Conn(tcp::socket socket) : ws(std::move(socket)), wake(ws.get_executor()) {}
    websocket::stream<tcp::socket> ws;
    asio::steady_timer wake;
    std::deque<Out> queue;
    std::vector<ChannelPattern> patterns;
    std::string target;     // The request target of the upgrade.
    std::string requested;  // Sec-WebSocket-Protocol as requested.
    bool json = false;
    bool live = false;    // Subscribed: appended events are pushed.
    bool closed = false;  // Writer: stop.
    int text_frames = 0;  // Client messages that came as text.
    int close_code = -1;  // Of the client's close frame, when it sent one.
  };

  explicit FakeGateway(asio::io_context& io) : io_(io), acceptor_(io) {
    const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(endpoint.protocol());
    acceptor_.bind(endpoint);
    acceptor_.listen();
    asio::co_spawn(io_, Accept(this), asio::detached);
  }

  std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
  std::string url() const { return absl::StrCat("ws://127.0.0.1:", port(), "/events"); }

  std::uint64_t earliest() const { return log_.empty() ? head_ + 1 : log_.front().offset(); }

  // Appends an event with the next offset and pushes it to the live subscribers it matches.
  std::uint64_t Append(const google::protobuf::Message& payload, const std::string& channel) {
    v1::EventEnvelope event;
    event.set_id(absl::StrCat("event-", head_ + 1));
    event.set_type(payload.GetDescriptor()->full_name());
    event.mutable_payload()->PackFrom(payload);
    event.set_offset(++head_);
    event.set_epoch(epoch);
    event.set_channel(channel);
    log_.push_back(event);
    for (auto& conn : conns_) {
      if (conn->live && Matches(*conn, channel)) SendEvent(*conn, event);
    }
    return head_;
  }
  std::uint64_t Append(const google::protobuf::Message& payload) {
    return Append(payload, "users");
  }

  // Forgets the events before `earliest` (retention).
  void Trim(std::uint64_t earliest) {
    while (!log_.empty() && log_.front().offset() < earliest) log_.pop_front();
  }

  // A server restart with an in-memory log: a new epoch, no history, every connection dropped.
  void Restart(std::uint64_t new_epoch) {
    DropAll();
    epoch = new_epoch;
    log_.clear();
    head_ = 0;
  }

  // Closes every connection at the TCP level, without a close frame.
  void DropAll() {
    for (auto& conn : conns_) {
      conn->live = false;
      conn->closed = true;
      conn->wake.cancel();
      boost::system::error_code ignored;
      conn->ws.next_layer().close(ignored);
    }
  }

  // Sends a close frame on every connection (after what is queued).
  void CloseAll(websocket::close_code code, const std::string& reason) {
    for (auto& conn : conns_) {
      if (!conn->live) continue;
      conn->live = false;
      conn->queue.push_back({.close = websocket::close_reason(code, reason)});
      conn->wake.cancel();
    }
  }

  void Shutdown() {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    DropAll();
  }

  const std::vector<std::shared_ptr<Conn>>& conns() const { return conns_; }

  std::uint64_t epoch = kEpoch;
  // The next connections: answered with these HTTP statuses instead of an upgrade.
  std::deque<unsigned> reject_with;
  // The next connections: accepted, then never answered.
  int stall_next = 0;
  // Answer the upgrade with this subprotocol instead of the requested one.
  std::optional<std::string> answer_subprotocol;
  std::vector<v1::Subscribe> subscribes;  // Every Subscribe received, in order.
  testing::Counter accepted;              // WebSocket upgrades.
  testing::Counter ended;                 // Connections whose reader has finished.

 private:
  static Awaitable<void> Accept(FakeGateway* gateway) {
    for (;;) {
      auto [ec, socket] = co_await gateway->acceptor_.async_accept(kUse);
      if (ec) co_return;
      gateway->conns_.push_back(std::make_shared<Conn>(std::move(socket)));
      asio::co_spawn(gateway->io_, Serve(gateway, gateway->conns_.back().get()), asio::detached);
    }
  }

  static Awaitable<void> Serve(FakeGateway* gateway, Conn* conn) {
    boost::system::error_code ignored;
    conn->ws.next_layer().set_option(tcp::no_delay(true), ignored);
    if (gateway->stall_next > 0) {  // Holds the connection open without answering.
      --gateway->stall_next;
      co_return;
    }
    beast::flat_buffer buffer;
    http::request<http::string_body> request;
    auto [read_error, n] = co_await http::async_read(conn->ws.next_layer(), buffer, request, kUse);
    if (read_error) co_return;
    if (!gateway->reject_with.empty()) {
      http::response<http::string_body> response(
          static_cast<http::status>(gateway->reject_with.front()), request.version());
      gateway->reject_with.pop_front();
      response.body() = "refused by the test";
      response.prepare_payload();
      co_await http::async_write(conn->ws.next_layer(), response, kUse);
      conn->ws.next_layer().close(ignored);
      co_return;
    }
    conn->target = std::string(request.target());
    conn->requested = std::string(request[http::field::sec_websocket_protocol]);
    const std::string chosen = gateway->answer_subprotocol.value_or(conn->requested);
    conn->json = chosen != "cqrs.v1.proto";
    conn->ws.set_option(
        websocket::stream_base::decorator([chosen](websocket::response_type& response) {
          if (!chosen.empty()) response.set(http::field::sec_websocket_protocol, chosen);
        }));
    auto [accept_error] = co_await conn->ws.async_accept(request, kUse);
    if (accept_error) co_return;
    gateway->accepted.Increment();
    asio::co_spawn(gateway->io_, Write(conn), asio::detached);
    for (;;) {
      buffer.consume(buffer.size());
      auto [ec, bytes] = co_await conn->ws.async_read(buffer, kUse);
      if (ec) {
        if (ec == websocket::error::closed) conn->close_code = conn->ws.reason().code;
        break;
      }
      const auto data = buffer.cdata();
      const std::string text(static_cast<const char*>(data.data()), data.size());
      v1::ClientMessage message;
      if (conn->ws.got_text()) {
        ++conn->text_frames;
        if (!google::protobuf::util::JsonStringToMessage(text, &message).ok()) continue;
      } else if (!message.ParseFromString(text)) {
        continue;
      }
      if (message.has_subscribe()) gateway->OnSubscribe(*conn, message.subscribe());
    }
    conn->live = false;
    conn->closed = true;
    conn->wake.cancel();
    gateway->ended.Increment();
  }

  static Awaitable<void> Write(Conn* conn) {
    for (;;) {
      while (conn->queue.empty() && !conn->closed) {
        conn->wake.expires_at(Clock::time_point::max());
        co_await conn->wake.async_wait(kUse);
      }
      if (conn->closed) co_return;
      Out out = std::move(conn->queue.front());
      conn->queue.pop_front();
      if (out.close) {
        co_await conn->ws.async_close(*out.close, kUse);
        co_return;
      }
      conn->ws.text(out.text);
      auto [ec, n] = co_await conn->ws.async_write(asio::buffer(out.bytes), kUse);
      if (ec) co_return;
    }
  }

  static bool Matches(const Conn& conn, const std::string& channel) {
    for (const ChannelPattern& pattern : conn.patterns) {
      if (pattern.Matches(channel)) return true;
    }
    return false;
  }

  void Send(Conn& conn, const v1::ServerMessage& message) {
    Out out;
    out.text = conn.json;
    if (conn.json) {
      EXPECT_TRUE(google::protobuf::util::MessageToJsonString(message, &out.bytes).ok());
    } else {
      out.bytes = message.SerializeAsString();
    }
    conn.queue.push_back(std::move(out));
    conn.wake.cancel();
  }

  void SendEvent(Conn& conn, const v1::EventEnvelope& event) {
    v1::ServerMessage message;
    *message.mutable_event() = event;
    Send(conn, message);
  }

  void OnSubscribe(Conn& conn, const v1::Subscribe& subscribe) {
    subscribes.push_back(subscribe);
    v1::ServerMessage reply;
    if (subscribe.has_from_offset() &&
        ((subscribe.epoch() != 0 && subscribe.epoch() != epoch) ||
         subscribe.from_offset() + 1 < earliest() || subscribe.from_offset() > head_)) {
      v1::GatewayError& error = *reply.mutable_error();
      error.set_code(v1::GatewayError::OFFSET_UNAVAILABLE);
      error.set_subscription_id(subscribe.subscription_id());
      error.set_message(absl::StrCat("cannot resume after offset ", subscribe.from_offset(),
                                     " of epoch ", subscribe.epoch()));
      error.set_earliest_offset(earliest());
      error.set_epoch(epoch);
      Send(conn, reply);
      return;
    }
    conn.patterns.clear();
    for (const std::string& channel : subscribe.channels()) {
      auto pattern = ChannelPattern::Parse(channel);
      EXPECT_TRUE(pattern.ok()) << pattern.status();
      if (pattern.ok()) conn.patterns.push_back(*std::move(pattern));
    }
    v1::Subscribed& subscribed = *reply.mutable_subscribed();
    subscribed.set_subscription_id(subscribe.subscription_id());
    subscribed.set_head_offset(head_);
    subscribed.set_earliest_offset(earliest());
    subscribed.set_epoch(epoch);
    Send(conn, reply);
    if (subscribe.has_from_offset()) {
      for (const v1::EventEnvelope& event : log_) {
        if (event.offset() > subscribe.from_offset() && Matches(conn, event.channel())) {
          SendEvent(conn, event);
        }
      }
    }
    conn.live = true;
  }

  asio::io_context& io_;
  tcp::acceptor acceptor_;
  std::vector<std::shared_ptr<Conn>> conns_;
  std::deque<v1::EventEnvelope> log_;
  std::uint64_t head_ = 0;
};

// --- helpers ----------------------------------------------------------------------------------

struct RunResult {
  std::optional<absl::Status> status;
  testing::Counter done;
};

Awaitable<void> RunInto(EventSubscriber* subscriber, RunResult* out) {
  auto run = subscriber->Run();
  out->status = co_await std::move(run);
  out->done.Increment();
}

struct WaitResult {
  std::optional<absl::Status> status;
  std::uint64_t offset_then = 0;  // last_offset() when Reached completed.
};

Awaitable<void> ReachedInto(EventSubscriber* subscriber, std::uint64_t offset, std::uint64_t epoch,
                            milliseconds timeout, WaitResult* out, testing::Counter* done) {
  auto reached = subscriber->Reached(offset, epoch, timeout);
  out->status = co_await std::move(reached);
  out->offset_then = subscriber->last_offset();
  done->Increment();
}

class EventSubscriberTest : public ::testing::Test {
 protected:
  EventSubscriberOptions Options() {
    EventSubscriberOptions options;
    options.url = gateway_.url();
    options.channels = {"users"};
    options.reconnect.initial = milliseconds(10);
    options.reconnect.max = milliseconds(50);
    options.connect_timeout = kWait;
    return options;
  }

  // Creates the subscriber and counts its subscriptions and disconnects; start it with Start().
  EventSubscriber* Make(EventSubscriberOptions options) {
    auto created = EventSubscriber::Create(io_.get_executor(), std::move(options));
    EXPECT_TRUE(created.ok()) << created.status();
    if (!created.ok()) throw std::runtime_error("Create failed");
    subscriber_ = *std::move(created);
    subscriber_->OnConnected([this](const v1::Subscribed& subscribed) {
      subscribed_log_.push_back(subscribed);
      subscribed_.Increment();
    });
    subscriber_->OnDisconnected(
        [this](const absl::Status& status) { disconnects_.push_back(status); });
    return subscriber_.get();
  }

  void Start() { asio::co_spawn(io_, RunInto(subscriber_.get(), &run_), asio::detached); }

  void WaitSubscribed(std::uint64_t n) { testing::Run(io_, subscribed_.Reached(n)); }

  absl::Status Reached(std::uint64_t offset) {
    return testing::Run(io_, subscriber_->Reached(offset, kWait));
  }

  // Starts a Reached in the background.
  void SpawnReached(std::uint64_t offset, std::uint64_t epoch, milliseconds timeout,
                    WaitResult* out) {
    asio::co_spawn(io_, ReachedInto(subscriber_.get(), offset, epoch, timeout, out, &waited_),
                   asio::detached);
  }

  // The status Run() returned.
  absl::Status RunEnded() {
    testing::Run(io_, run_.done.Reached(1));
    return run_.status.value_or(absl::UnknownError("no status"));
  }

  absl::Status StopAndWait() {
    subscriber_->Stop();
    return RunEnded();
  }

  void TearDown() override {
    if (subscriber_ != nullptr) subscriber_->Stop();
    gateway_.Shutdown();
    testing::Drain(io_);
  }

  asio::io_context io_;
  FakeGateway gateway_{io_};
  std::shared_ptr<EventSubscriber> subscriber_;
  RunResult run_;
  testing::Counter subscribed_;
  testing::Counter waited_;
  std::vector<v1::Subscribed> subscribed_log_;
  std::vector<absl::Status> disconnects_;
};

// --- dispatch ---------------------------------------------------------------------------------

TEST_F(EventSubscriberTest, DispatchesByPayloadTypeToEveryHandlerInOrderThenTheCatchAll) {
  EventSubscriber* subscriber = Make(Options());
  std::vector<std::string> seen;
  const UserCreated* parsed_for_first = nullptr;
  int parsed_once = 0;
  subscriber->On<UserCreated>([&](const UserCreated& created, const v1::EventEnvelope& event) {
    seen.push_back(absl::StrCat("first ", event.offset(), " ", created.name()));
    parsed_for_first = &created;
  });
  subscriber->On<UserCreated>([&](const UserCreated& created) {
    seen.push_back(absl::StrCat("second ", created.name()));
    if (&created == parsed_for_first) ++parsed_once;
  });
  subscriber->On<StringValue>([&](const StringValue& text, const v1::EventEnvelope& event) {
    seen.push_back(absl::StrCat("text ", event.offset(), " ", text.value()));
  });
  subscriber->OnAny([&](const v1::EventEnvelope& event) {
    seen.push_back(absl::StrCat("any ", event.offset(), " ", event.channel()));
  });
  // Before the subscription: not delivered (no from_offset means live events only).
  gateway_.Append(User("Early"));
  Start();
  WaitSubscribed(1);
  gateway_.Append(User("Bob"));
  gateway_.Append(Text("hello"));
  gateway_.Append(User("Other"), "orders");  // Another channel: not subscribed.
  gateway_.Append(User("Carol"));
  ASSERT_TRUE(Reached(5).ok());

  EXPECT_THAT(seen, ElementsAre("first 2 Bob", "second Bob", "any 2 users", "text 3 hello",
                                "any 3 users", "first 5 Carol", "second Carol", "any 5 users"));
  EXPECT_EQ(parsed_once, 2);  // Both handlers of an event got the same parsed message.
  EXPECT_EQ(subscriber->last_offset(), 5u);
  EXPECT_EQ(subscriber->epoch(), kEpoch);
  EXPECT_TRUE(subscriber->connected());
  EXPECT_EQ(subscriber->stats().events, 3u);

  ASSERT_EQ(gateway_.subscribes.size(), 1u);
  const v1::Subscribe& subscribe = gateway_.subscribes[0];
  EXPECT_FALSE(subscribe.has_from_offset());
  EXPECT_THAT(subscribe.channels(), ElementsAre("users"));
  EXPECT_EQ(subscribe.subscription_id(), "cqrs-subscriber");
  ASSERT_EQ(gateway_.conns().size(), 1u);
  EXPECT_EQ(gateway_.conns()[0]->requested, "cqrs.v1.proto");
  EXPECT_EQ(gateway_.conns()[0]->target, "/events");
  EXPECT_EQ(gateway_.conns()[0]->text_frames, 0);
  ASSERT_EQ(subscribed_log_.size(), 1u);
  EXPECT_EQ(subscribed_log_[0].head_offset(), 1u);
  EXPECT_EQ(subscribed_log_[0].epoch(), kEpoch);
  EXPECT_TRUE(StopAndWait().ok());
}

TEST_F(EventSubscriberTest, JsonFormatReplaysFromOffsetZeroAndGoesLive) {
  gateway_.Append(User("Bob"));
  gateway_.Append(Text("not for the typed handler"));
  EventSubscriberOptions options = Options();
  options.format = EventFormat::kJson;
  options.url = absl::StrCat("ws://127.0.0.1:", gateway_.port());  // No path: /events.
  options.from_offset = 0;
  EventSubscriber* subscriber = Make(std::move(options));
  std::vector<std::string> seen;
  subscriber->On<UserCreated>([&](const UserCreated& created, const v1::EventEnvelope& event) {
    seen.push_back(absl::StrCat(event.offset(), " ", created.name(), " ", created.user_id()));
  });
  subscriber->OnAny([&](const v1::EventEnvelope& event) {
    seen.push_back(absl::StrCat("any ", event.offset(), " ", event.payload().type_url()));
  });
  Start();
  ASSERT_TRUE(Reached(2).ok());
  gateway_.Append(User("Carol"));
  ASSERT_TRUE(Reached(3).ok());

  EXPECT_THAT(
      seen, ElementsAre("1 Bob id-Bob", "any 1 type.googleapis.com/users.v1.UserCreated",
                        "any 2 type.googleapis.com/google.protobuf.StringValue", "3 Carol id-Carol",
                        "any 3 type.googleapis.com/users.v1.UserCreated"));
  ASSERT_EQ(gateway_.conns().size(), 1u);
  EXPECT_EQ(gateway_.conns()[0]->requested, "cqrs.v1.json");
  EXPECT_EQ(gateway_.conns()[0]->target, "/events");
  EXPECT_EQ(gateway_.conns()[0]->text_frames, 1);
  ASSERT_EQ(gateway_.subscribes.size(), 1u);
  EXPECT_TRUE(gateway_.subscribes[0].has_from_offset());  // Present in JSON although 0.
  EXPECT_EQ(gateway_.subscribes[0].from_offset(), 0u);
  EXPECT_TRUE(StopAndWait().ok());
}

TEST_F(EventSubscriberTest, AHandlerThatThrowsIsLoggedAndTheOthersGoOn) {
  std::vector<std::string> lines;
  SetLogSink([&](LogLevel level, absl::string_view line) {
    if (level >= LogLevel::kError) lines.emplace_back(line);
  });
  EventSubscriber* subscriber = Make(Options());
  std::vector<std::uint64_t> second;
  std::vector<std::uint64_t> any;
  subscriber->On<UserCreated>([&](const UserCreated& created) {
    if (created.name() == "Bob") throw std::runtime_error("boom");
  });
  subscriber->On<UserCreated>([&](const UserCreated&, const v1::EventEnvelope& event) {
    second.push_back(event.offset());
  });
  subscriber->OnAny([&](const v1::EventEnvelope& event) {
    any.push_back(event.offset());
    if (event.offset() == 2) throw 42;  // Not a std::exception.
  });
  Start();
  WaitSubscribed(1);
  gateway_.Append(User("Bob"));
  gateway_.Append(User("Carol"));
  gateway_.Append(User("Dave"));
  const absl::Status reached = Reached(3);
  SetLogSink(nullptr);
  ASSERT_TRUE(reached.ok()) << reached;
  EXPECT_THAT(second, ElementsAre(1, 2, 3));
  EXPECT_THAT(any, ElementsAre(1, 2, 3));
  EXPECT_EQ(subscriber->stats().handler_errors, 2u);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_THAT(lines[0], HasSubstr("event 1 (users.v1.UserCreated) threw: boom"));
  EXPECT_THAT(lines[1], HasSubstr("not derived from std::exception"));
  EXPECT_TRUE(StopAndWait().ok());
}

// --- Reached ----------------------------------------------------------------------------------

TEST_F(EventSubscriberTest, ReachedReturnsOnceTheOffsetWasDeliveredOrTimesOut) {
  EventSubscriber* subscriber = Make(Options());
  std::vector<std::uint64_t> delivered;
  subscriber->OnAny([&](const v1::EventEnvelope& event) { delivered.push_back(event.offset()); });
  // Offset 0 is always reached, even before Run.
  EXPECT_TRUE(testing::Run(io_, subscriber->Reached(0, milliseconds(0))).ok());
  // Waiting before the subscriber has a position or an epoch.
  WaitResult early;
  SpawnReached(1, 0, kWait, &early);
  Start();
  WaitSubscribed(1);
  WaitResult later;
  WaitResult other_epoch;
  WaitResult timed_out;
  SpawnReached(3, 0, kWait, &later);
  SpawnReached(3, kEpoch + 1, milliseconds(30), &other_epoch);
  SpawnReached(100, kEpoch, milliseconds(30), &timed_out);
  testing::Run(io_, waited_.Reached(2));  // The two that time out.
  EXPECT_FALSE(early.status.has_value());
  EXPECT_FALSE(later.status.has_value());
  ASSERT_TRUE(timed_out.status.has_value());
  EXPECT_EQ(timed_out.status->code(), absl::StatusCode::kDeadlineExceeded) << *timed_out.status;
  EXPECT_THAT(timed_out.status->message(), HasSubstr("offset 100 of epoch 7"));
  ASSERT_TRUE(other_epoch.status.has_value());
  EXPECT_EQ(other_epoch.status->code(), absl::StatusCode::kDeadlineExceeded);

  gateway_.Append(User("Bob"));
  gateway_.Append(User("Carol"));
  gateway_.Append(User("Dave"));
  testing::Run(io_, waited_.Reached(4));
  ASSERT_TRUE(early.status.has_value() && later.status.has_value());
  EXPECT_TRUE(early.status->ok()) << *early.status;
  EXPECT_TRUE(later.status->ok()) << *later.status;
  EXPECT_GE(early.offset_then, 1u);
  EXPECT_GE(later.offset_then, 3u);
  EXPECT_THAT(delivered, ElementsAre(1, 2, 3));

  // Already reached: completes at once, even with no time to wait.
  EXPECT_TRUE(testing::Run(io_, subscriber->Reached(2, milliseconds(0))).ok());
  EXPECT_TRUE(testing::Run(io_, subscriber->Reached(3, kEpoch, milliseconds(0))).ok());
  EXPECT_EQ(testing::Run(io_, subscriber->Reached(4, milliseconds(0))).code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(StopAndWait().ok());
}

TEST_F(EventSubscriberTest, ReachedSupportsPerOperationCancellation) {
  EventSubscriber* subscriber = Make(Options());
  Start();
  WaitSubscribed(1);
  asio::cancellation_signal signal;
  std::optional<absl::Status> result;
  asio::co_spawn(
      io_, subscriber->Reached(10, kWait),
      asio::bind_cancellation_slot(signal.slot(), [&](std::exception_ptr, absl::Status status) {
        result = std::move(status);
      }));
  io_.restart();
  io_.poll();  // Up to the wait.
  ASSERT_FALSE(result.has_value());
  signal.emit(asio::cancellation_type::terminal);
  io_.restart();
  io_.poll();
  ASSERT_TRUE(result.has_value());
  EXPECT_EQ(result->code(), absl::StatusCode::kCancelled) << *result;
  EXPECT_TRUE(StopAndWait().ok());
}

// --- reconnecting -----------------------------------------------------------------------------

TEST_F(EventSubscriberTest,
       ReconnectsAfterADropOrASlowConsumerCloseAndResumesWithoutGapOrDuplicate) {
  gateway_.Append(User("Before"));
  gateway_.Append(User("Before too"));
  EventSubscriber* subscriber = Make(Options());
  std::vector<std::uint64_t> delivered;
  subscriber->On<UserCreated>([&](const UserCreated&, const v1::EventEnvelope& event) {
    delivered.push_back(event.offset());
  });
  Start();
  WaitSubscribed(1);
  EXPECT_EQ(subscriber->last_offset(), 2u);  // A live subscription starts at the head.

  // Dropped before any event: resumes from the head it started at, not live from a new head.
  gateway_.DropAll();
  gateway_.Append(User("While away"));
  WaitSubscribed(2);
  ASSERT_TRUE(Reached(3).ok());
  gateway_.Append(User("Live"));
  ASSERT_TRUE(Reached(4).ok());

  // Dropped after events: resumes after the last delivered offset, under the same epoch.
  gateway_.DropAll();
  gateway_.Append(User("While away again"));
  WaitSubscribed(3);
  ASSERT_TRUE(Reached(5).ok());

  // The gateway's slow-consumer close (1013): reconnect and resume.
  gateway_.CloseAll(websocket::close_code::try_again_later, "slow consumer");
  gateway_.Append(User("After 1013"));
  WaitSubscribed(4);
  ASSERT_TRUE(Reached(6).ok());

  EXPECT_THAT(delivered, ElementsAre(3, 4, 5, 6));
  ASSERT_EQ(gateway_.subscribes.size(), 4u);
  EXPECT_FALSE(gateway_.subscribes[0].has_from_offset());
  EXPECT_EQ(gateway_.subscribes[1].from_offset(), 2u);
  EXPECT_EQ(gateway_.subscribes[1].epoch(), kEpoch);
  EXPECT_EQ(gateway_.subscribes[2].from_offset(), 4u);
  EXPECT_EQ(gateway_.subscribes[2].epoch(), kEpoch);
  EXPECT_EQ(gateway_.subscribes[3].from_offset(), 5u);
  EXPECT_EQ(gateway_.subscribes[3].epoch(), kEpoch);
  ASSERT_EQ(disconnects_.size(), 3u);
  EXPECT_EQ(disconnects_[2].code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(disconnects_[2].message(), HasSubstr("1013 slow consumer"));
  EXPECT_EQ(subscriber->stats().subscriptions, 4u);
  EXPECT_EQ(subscriber->stats().duplicates, 0u);
  EXPECT_TRUE(StopAndWait().ok());
}

// --- OFFSET_UNAVAILABLE -----------------------------------------------------------------------

TEST_F(EventSubscriberTest, AnOffsetNoLongerRetainedFailsRunUnderThePolicyFail) {
  for (int i = 0; i < 5; ++i) gateway_.Append(User(absl::StrCat("user", i)));
  gateway_.Trim(4);
  EventSubscriberOptions options = Options();
  options.from_offset = 1;
  options.epoch = kEpoch;
  EventSubscriber* subscriber = Make(std::move(options));
  int delivered = 0;
  subscriber->OnAny([&](const v1::EventEnvelope&) { ++delivered; });
  WaitResult waiting;
  SpawnReached(5, 0, kWait, &waiting);
  Start();
  const absl::Status status = RunEnded();
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_THAT(status.message(), HasSubstr("cannot resume after offset 1 of epoch 7"));
  EXPECT_THAT(status.message(), HasSubstr("earliest retained offset 4, epoch 7"));
  EXPECT_EQ(delivered, 0);
  testing::Run(io_, waited_.Reached(1));
  ASSERT_TRUE(waiting.status.has_value());
  EXPECT_EQ(waiting.status->code(), absl::StatusCode::kOutOfRange) << *waiting.status;
  ASSERT_EQ(disconnects_.size(), 1u);
  EXPECT_EQ(disconnects_[0], status);
  // Run is once per subscriber.
  EXPECT_EQ(testing::Run(io_, subscriber->Run()).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EventSubscriberTest, ThePolicyFromEarliestSkipsTheGapAndReportsIt) {
  for (int i = 0; i < 5; ++i) gateway_.Append(User(absl::StrCat("user", i)));
  gateway_.Trim(4);
  EventSubscriberOptions options = Options();
  options.from_offset = 1;
  options.epoch = kEpoch;
  options.on_offset_unavailable = OffsetUnavailablePolicy::kFromEarliest;
  EventSubscriber* subscriber = Make(std::move(options));
  std::vector<std::uint64_t> delivered;
  std::vector<EventGap> gaps;
  subscriber->OnAny([&](const v1::EventEnvelope& event) { delivered.push_back(event.offset()); });
  subscriber->OnGap([&](const EventGap& gap) { gaps.push_back(gap); });
  WaitResult lost;
  SpawnReached(2, 0, kWait, &lost);
  Start();
  ASSERT_TRUE(Reached(5).ok());
  EXPECT_THAT(delivered, ElementsAre(4, 5));
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].epoch, kEpoch);
  EXPECT_EQ(gaps[0].after_offset, 1u);
  EXPECT_EQ(gaps[0].new_epoch, kEpoch);
  EXPECT_EQ(gaps[0].earliest_offset, 4u);
  EXPECT_THAT(gaps[0].message, HasSubstr("cannot resume after offset 1"));
  testing::Run(io_, waited_.Reached(1));
  ASSERT_TRUE(lost.status.has_value());
  EXPECT_EQ(lost.status->code(), absl::StatusCode::kDataLoss) << *lost.status;
  ASSERT_EQ(gateway_.subscribes.size(), 2u);
  EXPECT_EQ(gateway_.subscribes[1].from_offset(), 3u);
  EXPECT_EQ(gateway_.subscribes[1].epoch(), kEpoch);
  EXPECT_EQ(subscriber->stats().gaps, 1u);
  EXPECT_TRUE(StopAndWait().ok());
}

TEST_F(EventSubscriberTest, ANewEpochUnderThePolicyFromEarliestStartsOverFromItsBeginning) {
  EventSubscriberOptions options = Options();
  options.on_offset_unavailable = OffsetUnavailablePolicy::kFromEarliest;
  EventSubscriber* subscriber = Make(std::move(options));
  std::vector<std::string> delivered;
  std::vector<EventGap> gaps;
  subscriber->OnAny([&](const v1::EventEnvelope& event) {
    delivered.push_back(absl::StrCat(event.epoch(), ":", event.offset()));
  });
  subscriber->OnGap([&](const EventGap& gap) { gaps.push_back(gap); });
  Start();
  WaitSubscribed(1);
  gateway_.Append(User("Bob"));
  gateway_.Append(User("Carol"));
  ASSERT_TRUE(Reached(2).ok());
  WaitResult old_epoch;
  SpawnReached(3, kEpoch, kWait, &old_epoch);

  gateway_.Restart(9);  // History lost: new epoch, offsets from 1 again.
  gateway_.Append(User("Dave"));
  WaitSubscribed(2);
  ASSERT_TRUE(testing::Run(io_, subscriber->Reached(1, 9, kWait)).ok());

  EXPECT_THAT(delivered, ElementsAre("7:1", "7:2", "9:1"));
  EXPECT_EQ(subscriber->epoch(), 9u);
  EXPECT_EQ(subscriber->last_offset(), 1u);
  ASSERT_EQ(gaps.size(), 1u);
  EXPECT_EQ(gaps[0].epoch, kEpoch);
  EXPECT_EQ(gaps[0].after_offset, 2u);
  EXPECT_EQ(gaps[0].new_epoch, 9u);
  EXPECT_EQ(gaps[0].earliest_offset, 1u);
  testing::Run(io_, waited_.Reached(1));
  ASSERT_TRUE(old_epoch.status.has_value());
  EXPECT_EQ(old_epoch.status->code(), absl::StatusCode::kAborted) << *old_epoch.status;
  EXPECT_EQ(testing::Run(io_, subscriber->Reached(1, kEpoch, kWait)).code(),
            absl::StatusCode::kAborted);
  ASSERT_EQ(gateway_.subscribes.size(), 3u);
  EXPECT_EQ(gateway_.subscribes[1].from_offset(), 2u);
  EXPECT_EQ(gateway_.subscribes[1].epoch(), kEpoch);
  EXPECT_EQ(gateway_.subscribes[2].from_offset(), 0u);
  EXPECT_EQ(gateway_.subscribes[2].epoch(), 9u);
  EXPECT_TRUE(StopAndWait().ok());
}

// --- stopping and failing ---------------------------------------------------------------------

TEST_F(EventSubscriberTest, StopEndsRunWithACloseFrameAndCancelsTheWaiters) {
  EventSubscriber* subscriber = Make(Options());
  Start();
  WaitSubscribed(1);
  WaitResult waiting;
  SpawnReached(10, 0, kWait, &waiting);
  testing::Run(io_, testing::Yield());
  EXPECT_TRUE(StopAndWait().ok());
  testing::Run(io_, waited_.Reached(1));
  ASSERT_TRUE(waiting.status.has_value());
  EXPECT_EQ(waiting.status->code(), absl::StatusCode::kCancelled) << *waiting.status;
  EXPECT_FALSE(subscriber->connected());
  testing::Run(io_, gateway_.ended.Reached(1));
  ASSERT_EQ(gateway_.conns().size(), 1u);
  EXPECT_EQ(gateway_.conns()[0]->close_code, static_cast<int>(websocket::close_code::normal));
  EXPECT_TRUE(disconnects_.empty());
  // After Stop: reached offsets still answer OK, others kCancelled at once.
  EXPECT_EQ(testing::Run(io_, subscriber->Reached(10, kWait)).code(), absl::StatusCode::kCancelled);
}

TEST_F(EventSubscriberTest, StopFromAHandlerDeliversNothingAfterIt) {
  EventSubscriber* subscriber = Make(Options());
  std::vector<std::uint64_t> delivered;
  subscriber->OnAny([&](const v1::EventEnvelope& event) {
    delivered.push_back(event.offset());
    subscriber->Stop();
  });
  Start();
  WaitSubscribed(1);
  gateway_.Append(User("Bob"));
  gateway_.Append(User("Carol"));
  EXPECT_TRUE(RunEnded().ok());
  EXPECT_THAT(delivered, ElementsAre(1));
  EXPECT_EQ(subscriber->last_offset(), 1u);
}

TEST_F(EventSubscriberTest, StopWhileConnectingEndsRun) {
  // Nothing accepts on this port once the acceptor is closed: connecting fails and backs off.
  EventSubscriberOptions options = Options();
  gateway_.Shutdown();
  options.reconnect.initial = milliseconds(60'000);
  EventSubscriber* subscriber = Make(std::move(options));
  Start();
  testing::Run(io_, testing::Yield());
  subscriber->Stop();
  EXPECT_TRUE(RunEnded().ok());
}

TEST_F(EventSubscriberTest, CancellingRunStopsIt) {
  EventSubscriber* subscriber = Make(Options());
  asio::cancellation_signal signal;
  asio::co_spawn(io_, RunInto(subscriber, &run_),
                 asio::bind_cancellation_slot(signal.slot(), [](std::exception_ptr error) {
                   if (error) std::rethrow_exception(error);
                 }));
  WaitSubscribed(1);
  WaitResult waiting;
  SpawnReached(10, 0, kWait, &waiting);
  testing::Run(io_, testing::Yield());
  signal.emit(asio::cancellation_type::terminal);
  const absl::Status status = RunEnded();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  testing::Run(io_, waited_.Reached(1));
  ASSERT_TRUE(waiting.status.has_value());
  EXPECT_EQ(waiting.status->code(), absl::StatusCode::kCancelled) << *waiting.status;
  EXPECT_FALSE(subscriber->connected());
}

TEST_F(EventSubscriberTest, RetriesAStalledHandshakeAndA503) {
  gateway_.stall_next = 1;
  gateway_.reject_with = {503};
  EventSubscriberOptions options = Options();
  options.connect_timeout = milliseconds(100);
  Make(std::move(options));
  Start();
  WaitSubscribed(1);
  ASSERT_EQ(disconnects_.size(), 2u);
  EXPECT_EQ(disconnects_[0].code(), absl::StatusCode::kUnavailable) << disconnects_[0];
  EXPECT_EQ(disconnects_[1].code(), absl::StatusCode::kUnavailable) << disconnects_[1];
  EXPECT_THAT(disconnects_[1].message(), HasSubstr("HTTP 503"));
  EXPECT_TRUE(StopAndWait().ok());
}

TEST_F(EventSubscriberTest, A404FailsRun) {
  gateway_.reject_with = {404};
  Make(Options());
  Start();
  const absl::Status status = RunEnded();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("refused the WebSocket upgrade with HTTP 404"));
}

TEST_F(EventSubscriberTest, AGatewayThatIgnoresTheSubprotocolFailsRun) {
  gateway_.answer_subprotocol = "";
  Make(Options());
  Start();
  const absl::Status status = RunEnded();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("did not accept the subprotocol cqrs.v1.proto"));
}

TEST_F(EventSubscriberTest, AMessageOverTheLimitFailsRun) {
  EventSubscriberOptions options = Options();
  options.max_message_bytes = 256;
  Make(std::move(options));
  Start();
  WaitSubscribed(1);
  gateway_.Append(User(std::string(1'000, 'x')));
  const absl::Status status = RunEnded();
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted) << status;
  EXPECT_THAT(status.message(), HasSubstr("max_message_bytes=256"));
}

TEST(EventSubscriberCreateTest, RejectsBadOptionsWithPreciseErrors) {
  asio::io_context io;
  auto create = [&](std::string url, std::vector<std::string> channels) {
    EventSubscriberOptions options;
    options.url = std::move(url);
    options.channels = std::move(channels);
    return EventSubscriber::Create(io.get_executor(), std::move(options)).status();
  };
  EXPECT_TRUE(create("ws://localhost:8080/events", {"users.*"}).ok());
  EXPECT_TRUE(create("ws://[::1]:8080/events?x=1", {"*"}).ok());
  const absl::Status wss = create("wss://localhost/events", {"users"});
  EXPECT_EQ(wss.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wss.message(), HasSubstr("wss:// (TLS) is not supported yet"));
  EXPECT_THAT(create("http://localhost/events", {"users"}).message(),
              HasSubstr("must start with ws://"));
  EXPECT_THAT(create("not a url", {"users"}).message(), HasSubstr("not a valid URI"));
  EXPECT_THAT(create("ws://localhost/events#x", {"users"}).message(), HasSubstr("fragment"));
  EXPECT_THAT(create("ws://localhost:0/events", {"users"}).message(), HasSubstr("port"));
  EXPECT_THAT(create("ws://localhost/events", {}).message(), HasSubstr("channels"));
  const absl::Status pattern = create("ws://localhost/events", {"us*ers"});
  EXPECT_EQ(pattern.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(pattern.message(), HasSubstr("'us*ers'"));
}

}  // namespace
}  // namespace cqrs::net
