// Loopback tests of CommandClient against a real CommandServer on 127.0.0.1: typed calls,
// reconnecting with re-sends, deadlines, cancellation and its local limits.
//
// The client runs on an io_context driven by this thread (testing::Run, under a deadline); the
// server runs on its own threads. Steps are ordered by events (a handler arriving at the test
// gate, a response), never by sleeps.
//
// GCC 12: coroutines here take only pointers and references, and every awaitable is created in
// its own statement before it is awaited (no temporaries with destructors in a co_await).

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cqrs/net/command_client.h"
#include "cqrs/net/command_server.h"
#include "cqrs/net/frame_codec.h"
#include "testing/coro.h"
#include "testing/loopback_service.h"
#include "testing/sync.h"

namespace cqrs::net {
namespace {

using ::google::protobuf::StringValue;
using ::testing::HasSubstr;
using Response = v1::CommandResponseEnvelope;
using Result = absl::StatusOr<v1::CommandResponseEnvelope>;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kWait{5'000};

std::string ReplyText(const Response& response) {
  StringValue text;
  return response.payload().UnpackTo(&text) ? text.value() : "";
}

// Asserts that `result` is the OK answer to the command `id`.
void ExpectAnsweredOk(const std::optional<Result>& result, const std::string& id) {
  ASSERT_TRUE(result.has_value()) << id;
  ASSERT_TRUE(result->ok()) << id << ": " << result->status();
  ASSERT_EQ((*result)->status(), Response::OK) << (*result)->ShortDebugString();
  ASSERT_EQ((*result)->command_id(), id);
}

// Sends `command` with a copy of `options`, stores the outcome in `*out`, then counts `*done`.
Awaitable<void> SendInto(CommandClient* client, const google::protobuf::Message* command,
                         const SendOptions* options, std::optional<Result>* out,
                         testing::Counter* done) {
  SendOptions copy = *options;
  auto send = client->Send(*command, std::move(copy));
  *out = co_await std::move(send);
  done->Increment();
}

// Starts a gated Send for each of `ids` (one subject each) in the background; `*options` and
// `*results` are filled here and must outlive those Sends.
Awaitable<void> SpawnGated(CommandClient* client, const std::vector<std::string>* ids,
                           std::vector<SendOptions>* options,
                           std::vector<std::optional<Result>>* results, testing::Counter* done) {
  options->resize(ids->size());
  results->resize(ids->size());
  auto executor = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < ids->size(); ++i) {
    (*options)[i].id = (*ids)[i];
    (*options)[i].subject = (*ids)[i];
    asio::co_spawn(executor,
                   SendInto(client, &google::protobuf::Empty::default_instance(), &(*options)[i],
                            &(*results)[i], done),
                   asio::detached);
  }
}

class CommandClientTest : public ::testing::Test {
 protected:
  void StartServer(CommandServerOptions options = {}) {
    const absl::Status status = service_.Start(std::move(options));
    ASSERT_TRUE(status.ok()) << status;
  }

  // A client of `port` with a short reconnect backoff.
  CommandClient* MakeClient(std::uint16_t port, CommandClientOptions options = {}) {
    options.port = port;
    options.backoff.initial = milliseconds(10);
    options.backoff.max = milliseconds(100);
    client_ = CommandClient::Create(io_.get_executor(), std::move(options));
    return client_.get();
  }

  void TearDown() override {
    if (client_ != nullptr) client_->Close();
    testing::Drain(io_);
  }

  asio::io_context io_;
  testing::LoopbackService service_;
  std::shared_ptr<CommandClient> client_;
};

// --- typed calls ----------------------------------------------------------------------------

TEST_F(CommandClientTest, CallReturnsTheTypedReplyAndMapsRejectedToFailedPrecondition) {
  StartServer();
  CommandClient* client = MakeClient(service_.port());
  users::v1::CreateUser create;
  create.set_name("Bob");
  create.set_user_id("bob-1");
  auto reply = testing::Run(io_, client->Call<users::v1::CreateUserReply>(create), kWait);
  ASSERT_TRUE(reply.ok()) << reply.status();
  EXPECT_EQ(reply->user_id(), "bob-1");

  create.set_name("");
  create.set_user_id("");
  auto rejected = testing::Run(io_, client->Call<users::v1::CreateUserReply>(create), kWait);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kFailedPrecondition) << rejected.status();
  EXPECT_THAT(rejected.status().message(), HasSubstr("USER_NAME_EMPTY"));

  // Send returns every status as a value.
  auto response = testing::Run(io_, client->Send(create), kWait);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), Response::REJECTED);
  EXPECT_EQ(response->error().error_code(), "USER_NAME_EMPTY");

  // A reply of another type than the one asked for.
  create.set_name("Carol");
  auto mistyped = testing::Run(io_, client->Call<StringValue>(create), kWait);
  EXPECT_EQ(mistyped.status().code(), absl::StatusCode::kInvalidArgument) << mistyped.status();
  EXPECT_EQ(service_.sink.size(), 2u);
  EXPECT_EQ(client->stats().connects, 1u);
}

TEST_F(CommandClientTest, SendUsesTheGivenIdAndTheAuthToken) {
  StartServer({.authenticate = [](absl::string_view token) -> absl::StatusOr<std::string> {
    if (token == "t0ken") return std::string("client-principal");
    return absl::UnauthenticatedError("bad token");
  }});
  CommandClient* client = MakeClient(service_.port(), {.auth_token = "t0ken"});
  SendOptions options;
  options.id = "my-command-id";
  options.subject = "who";
  auto response = testing::Run(io_, client->Send(v1::StreamInfo(), std::move(options)), kWait);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), Response::OK) << response->ShortDebugString();
  EXPECT_EQ(response->command_id(), "my-command-id");
  EXPECT_EQ(ReplyText(*response), "client-principal");
}

// --- reconnecting ---------------------------------------------------------------------------

struct ReconnectRun {
  std::vector<std::optional<Result>> results;
  absl::Status restarted;
  CommandClientStats stats_before_restart;
};

// Sends slow commands to `*first`, stops it once they all run there, starts `*second` on the
// same port, and waits for every command to be answered.
Awaitable<void> ReconnectScenario(CommandClient* client,
                                  std::unique_ptr<testing::LoopbackService>* first,
                                  std::unique_ptr<testing::LoopbackService>* second,
                                  ReconnectRun* run) {
  constexpr int kCommands = 3;
  const google::protobuf::Duration slow = testing::DelayCommand(milliseconds(200));
  std::vector<SendOptions> options(kCommands);
  run->results.resize(kCommands);
  testing::Counter done;
  auto executor = co_await asio::this_coro::executor;
  for (int i = 0; i < kCommands; ++i) {
    options[i].id = absl::StrCat("resend-", i);
    options[i].subject = absl::StrCat("subject-", i);
    options[i].timeout = kWait;
    asio::co_spawn(executor, SendInto(client, &slow, &options[i], &run->results[i], &done),
                   asio::detached);
  }
  // Every command is running on the first server: their responses will never come from it.
  co_await (*first)->handlers.delay_started.Reached(kCommands);
  run->stats_before_restart = client->stats();
  const std::uint16_t port = (*first)->port();
  first->reset();  // Blocks: GoAway, a short drain, connections closed, threads stopped.
  *second = std::make_unique<testing::LoopbackService>();
  run->restarted = (*second)->Start({.port = port});
  if (run->restarted.ok()) co_await done.Reached(kCommands);
}

TEST_F(CommandClientTest, ReconnectsAndResendsUnansweredCommandsWithTheirIds) {
  auto first = std::make_unique<testing::LoopbackService>();
  ASSERT_TRUE(first->Start({.shutdown_drain = milliseconds(50)}).ok());
  std::unique_ptr<testing::LoopbackService> second;
  CommandClient* client = MakeClient(first->port());
  ReconnectRun run;
  testing::Run(io_, ReconnectScenario(client, &first, &second, &run), kWait);
  ASSERT_TRUE(run.restarted.ok()) << run.restarted;
  EXPECT_EQ(run.stats_before_restart.connects, 1u);
  EXPECT_EQ(run.stats_before_restart.pending, 3u);
  for (std::size_t i = 0; i < run.results.size(); ++i) {
    const std::string id = absl::StrCat("resend-", i);
    ASSERT_NO_FATAL_FAILURE(ExpectAnsweredOk(run.results[i], id));
    const Result& result = *run.results[i];
    EXPECT_EQ(ReplyText(*result), id);  // The id the second server's handler saw.
  }
  const CommandClientStats stats = client->stats();
  EXPECT_EQ(stats.connects, 2u);
  EXPECT_EQ(stats.resent, 3u);
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(second->server().stats().commands, 3u);
  EXPECT_EQ(second->handlers.delay_started.value(), 3u);
  client->Close();
  testing::Drain(io_);
}

// --- writing more than the socket takes -----------------------------------------------------

struct BurstRun {
  std::vector<SendOptions> options;
  std::vector<std::optional<Result>> results;
};

// Sends `count` echo commands of `value_bytes` each at once and waits for every answer.
Awaitable<void> BurstScenario(CommandClient* client, int count, std::size_t value_bytes,
                              BurstRun* run) {
  std::vector<StringValue> commands(static_cast<std::size_t>(count));
  run->options.resize(commands.size());
  run->results.resize(commands.size());
  testing::Counter done;
  auto executor = co_await asio::this_coro::executor;
  for (std::size_t i = 0; i < commands.size(); ++i) {
    std::string value = absl::StrCat("burst-", i, "-");
    value.resize(value_bytes, 'x');
    commands[i] = testing::EchoCommand(std::move(value));
    run->options[i].id = absl::StrCat("burst-", i);
    run->options[i].timeout = kWait;
    asio::co_spawn(executor,
                   SendInto(client, &commands[i], &run->options[i], &run->results[i], &done),
                   asio::detached);
  }
  co_await done.Reached(static_cast<std::uint64_t>(count));
}

// 4,000 commands of 4 KiB (16 MB) queued at once to a server that takes 4 at a time: the
// client's writes fill the socket buffers (a few MB on loopback), wait for room and go on;
// every command is answered.
TEST_F(CommandClientTest, WritesMoreThanTheSocketTakesAndEveryCommandIsAnswered) {
  constexpr int kCommands = 4'000;
  constexpr std::size_t kValueBytes = 4096;
  StartServer({.max_in_flight = 4});
  CommandClient* client = MakeClient(service_.port());
  BurstRun run;
  testing::Run(io_, BurstScenario(client, kCommands, kValueBytes, &run), kWait);
  for (int i = 0; i < kCommands; ++i) {
    const std::string id = absl::StrCat("burst-", i);
    ASSERT_NO_FATAL_FAILURE(ExpectAnsweredOk(run.results[i], id));
    const Result& result = *run.results[i];
    ASSERT_EQ(ReplyText(*result).size(), kValueBytes);
    ASSERT_TRUE(ReplyText(*result).starts_with(absl::StrCat(id, "-"))) << id;
  }
  EXPECT_EQ(client->stats().connects, 1u);
  EXPECT_EQ(client->stats().pending, 0u);
}

// --- deadlines ------------------------------------------------------------------------------

struct DeadlineRun {
  std::optional<Result> late;
  std::optional<Result> next;
};

// A Send that times out on a handler that only the gate can end; once the gate opens its late
// response arrives before that of the next command on the same subject.
Awaitable<void> DeadlineScenario(CommandClient* client, testing::Gate* gate, DeadlineRun* run) {
  google::protobuf::Int32Value stubborn;
  SendOptions options;
  options.subject = "deadline-subject";
  options.timeout = milliseconds(100);
  auto send = client->Send(stubborn, std::move(options));
  run->late = co_await std::move(send);
  gate->Open();
  const StringValue echo = testing::EchoCommand("next");
  SendOptions next;
  next.subject = "deadline-subject";
  auto follow = client->Send(echo, std::move(next));
  run->next = co_await std::move(follow);
}

TEST_F(CommandClientTest, NoAnswerBeforeTheTimeoutIsDeadlineExceeded) {
  StartServer();
  CommandClient* client = MakeClient(service_.port());
  // Connected first, so that the deadline is about the answer, not the connection.
  auto warm_up = testing::Run(io_, client->Send(testing::EchoCommand("warm-up")), kWait);
  ASSERT_TRUE(warm_up.ok()) << warm_up.status();
  DeadlineRun run;
  const auto since = Clock::now();
  testing::Run(io_, DeadlineScenario(client, &service_.handlers.gate, &run), kWait);
  ASSERT_TRUE(run.late.has_value());
  EXPECT_EQ(run.late->status().code(), absl::StatusCode::kDeadlineExceeded) << run.late->status();
  EXPECT_GE(Clock::now() - since, milliseconds(100));
  ASSERT_TRUE(run.next.has_value());
  ASSERT_TRUE(run.next->ok()) << run.next->status();
  EXPECT_EQ(ReplyText(**run.next), "next");
  EXPECT_EQ(client->stats().pending, 0u);
  EXPECT_EQ(client->stats().connects, 1u);
}

TEST_F(CommandClientTest, CallMapsAnyMissedDeadlineToDeadlineExceeded) {
  StartServer();
  CommandClient* client = MakeClient(service_.port());
  auto warm_up = testing::Run(io_, client->Send(testing::EchoCommand("warm-up")), kWait);
  ASSERT_TRUE(warm_up.ok()) << warm_up.status();
  // The client also sends its timeout as the command's deadline, so the server's own
  // DEADLINE_EXCEEDED response may beat the client's timer: Send then returns that response
  // as a value. Call maps either outcome to kDeadlineExceeded.
  SendOptions options;
  options.timeout = milliseconds(100);
  const auto since = Clock::now();
  auto result = testing::Run(
      io_, client->Call<StringValue>(google::protobuf::Empty(), std::move(options)), kWait);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded) << result.status();
  EXPECT_GE(Clock::now() - since, milliseconds(100));
  EXPECT_EQ(service_.handlers.gate.arrivals().value(), 1u);
  EXPECT_EQ(client->stats().pending, 0u);
}

TEST_F(CommandClientTest, ClosedPortIsUnavailableAfterTheTimeout) {
  std::uint16_t closed_port;
  {
    asio::ip::tcp::acceptor acceptor(io_, {asio::ip::make_address("127.0.0.1"), 0});
    closed_port = acceptor.local_endpoint().port();
  }
  CommandClient* client = MakeClient(closed_port, {.connect_timeout = milliseconds(200)});
  SendOptions options;
  options.timeout = milliseconds(200);
  const auto since = Clock::now();
  auto result =
      testing::Run(io_, client->Send(testing::EchoCommand("nobody"), std::move(options)), kWait);
  EXPECT_EQ(result.status().code(), absl::StatusCode::kUnavailable) << result.status();
  EXPECT_GE(Clock::now() - since, milliseconds(200));
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(client->stats().connects, 0u);
}

// --- cancellation and local limits ----------------------------------------------------------

struct CancelRun {
  std::size_t winner = 0;
  std::optional<Result> cancelled;
  std::size_t pending_after_cancel = 0;
  std::optional<Result> next;
};

// Races a gated Send against a short timer (the timer must win: the gate is closed), waits until
// the command runs on the server (it was transmitted at once: the client is connected), then
// releases it and sends a command with the same subject. That one runs after the cancelled one,
// so its response arrives after the cancelled command's late response.
Awaitable<void> CancelScenario(CommandClient* client, testing::Gate* gate, CancelRun* run) {
  using namespace asio::experimental::awaitable_operators;
  const google::protobuf::Empty gated;
  SendOptions options;
  options.id = "cancel-me";
  options.subject = "cancel-subject";
  testing::Counter done;
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(milliseconds(50));
  auto send = SendInto(client, &gated, &options, &run->cancelled, &done);
  auto tick = timer.async_wait(asio::use_awaitable);
  auto raced = co_await (std::move(send) || std::move(tick));
  run->winner = raced.index();
  run->pending_after_cancel = client->stats().pending;
  co_await gate->arrivals().Reached(1);
  gate->Open();
  const StringValue echo = testing::EchoCommand("after");
  SendOptions next;
  next.subject = "cancel-subject";
  auto follow = client->Send(echo, std::move(next));
  run->next = co_await std::move(follow);
}

TEST_F(CommandClientTest, CancelledSendEndsWithCancelledAndItsLateResponseIsIgnored) {
  StartServer();
  CommandClient* client = MakeClient(service_.port());
  auto warm_up = testing::Run(io_, client->Send(testing::EchoCommand("warm-up")), kWait);
  ASSERT_TRUE(warm_up.ok()) << warm_up.status();
  CancelRun run;
  testing::Run(io_, CancelScenario(client, &service_.handlers.gate, &run), kWait);
  EXPECT_EQ(run.winner, 1u);
  ASSERT_TRUE(run.cancelled.has_value());
  EXPECT_EQ(run.cancelled->status().code(), absl::StatusCode::kCancelled)
      << run.cancelled->status();
  EXPECT_EQ(run.pending_after_cancel, 0u);
  ASSERT_TRUE(run.next.has_value());
  ASSERT_TRUE(run.next->ok()) << run.next->status();
  EXPECT_EQ(ReplyText(**run.next), "after");
  EXPECT_EQ(client->stats().pending, 0u);
  EXPECT_EQ(service_.server().stats().commands, 3u);
}

struct LimitRun {
  std::vector<SendOptions> options;
  std::vector<std::optional<Result>> gated;
  std::optional<Result> refused;
};

// Fills the client with gated Sends, checks one more Send with `extra`, then releases them.
Awaitable<void> LimitScenario(CommandClient* client, testing::Gate* gate,
                              const std::vector<std::string>* ids, const SendOptions* extra,
                              LimitRun* run) {
  testing::Counter done;
  co_await SpawnGated(client, ids, &run->options, &run->gated, &done);
  co_await gate->arrivals().Reached(ids->size());
  const StringValue echo = testing::EchoCommand("one-too-many");
  SendOptions options = *extra;
  auto send = client->Send(echo, std::move(options));
  run->refused = co_await std::move(send);
  gate->Open();
  co_await done.Reached(ids->size());
}

TEST_F(CommandClientTest, MaxPendingIsResourceExhausted) {
  StartServer();
  CommandClient* client = MakeClient(service_.port(), {.max_pending = 2});
  const std::vector<std::string> ids = {"pending-0", "pending-1"};
  const SendOptions extra;
  LimitRun run;
  testing::Run(io_, LimitScenario(client, &service_.handlers.gate, &ids, &extra, &run), kWait);
  ASSERT_TRUE(run.refused.has_value());
  EXPECT_EQ(run.refused->status().code(), absl::StatusCode::kResourceExhausted)
      << run.refused->status();
  for (const auto& result : run.gated) {
    ASSERT_TRUE(result.has_value());
    ASSERT_TRUE(result->ok()) << result->status();
    EXPECT_EQ((*result)->status(), Response::OK);
  }
  EXPECT_EQ(service_.handlers.echo_log().size(), 0u);  // Never sent.
}

TEST_F(CommandClientTest, IdAlreadyPendingIsInvalidArgument) {
  StartServer();
  CommandClient* client = MakeClient(service_.port());
  const std::vector<std::string> ids = {"same-id"};
  SendOptions extra;
  extra.id = "same-id";
  LimitRun run;
  testing::Run(io_, LimitScenario(client, &service_.handlers.gate, &ids, &extra, &run), kWait);
  ASSERT_TRUE(run.refused.has_value());
  EXPECT_EQ(run.refused->status().code(), absl::StatusCode::kInvalidArgument)
      << run.refused->status();
  ASSERT_TRUE(run.gated[0].has_value());
  ASSERT_TRUE(run.gated[0]->ok()) << run.gated[0]->status();
  EXPECT_EQ(ReplyText(**run.gated[0]), "same-id");
}

struct CloseRun {
  std::vector<SendOptions> options;
  std::vector<std::optional<Result>> gated;
  std::optional<Result> after_close;
};

Awaitable<void> CloseScenario(CommandClient* client, testing::Gate* gate,
                              const std::vector<std::string>* ids, CloseRun* run) {
  testing::Counter done;
  co_await SpawnGated(client, ids, &run->options, &run->gated, &done);
  co_await gate->arrivals().Reached(ids->size());
  client->Close();
  co_await done.Reached(ids->size());
  const StringValue echo = testing::EchoCommand("after-close");
  auto send = client->Send(echo);
  run->after_close = co_await std::move(send);
}

TEST_F(CommandClientTest, CloseFailsPendingSendsWithCancelled) {
  StartServer();
  CommandClient* client = MakeClient(service_.port());
  const std::vector<std::string> ids = {"close-0", "close-1", "close-2"};
  CloseRun run;
  testing::Run(io_, CloseScenario(client, &service_.handlers.gate, &ids, &run), kWait);
  for (const auto& result : run.gated) {
    ASSERT_TRUE(result.has_value());
    EXPECT_EQ(result->status().code(), absl::StatusCode::kCancelled) << result->status();
  }
  ASSERT_TRUE(run.after_close.has_value());
  EXPECT_EQ(run.after_close->status().code(), absl::StatusCode::kCancelled)
      << run.after_close->status();
  EXPECT_FALSE(client->connected());
  EXPECT_EQ(client->stats().pending, 0u);
}

// --- reconnect backoff ----------------------------------------------------------------------

namespace backoff {

constexpr auto kUse = asio::as_tuple(asio::use_awaitable);

// A misbehaving server: accepts, answers Hello with HelloAck, hangs up; counts connections.
Awaitable<void> HelloAndHangUp(asio::ip::tcp::acceptor* acceptor, int* accepts) {
  for (;;) {
    auto [accept_error, socket] = co_await acceptor->async_accept(kUse);
    if (accept_error) co_return;
    ++*accepts;
    FrameDecoder decoder;
    v1::Frame frame;
    while (decoder.Next(frame) != DecodeResult::kFrame) {
      const auto space = decoder.Prepare();
      auto [read_error, n] =
          co_await socket.async_read_some(asio::buffer(space.data(), space.size()), kUse);
      if (read_error) break;
      decoder.Commit(n);
    }
    v1::Frame ack;
    ack.mutable_hello_ack()->set_protocol_version(1);
    FrameEncoder encoder;
    if (!encoder.Append(ack).ok()) co_return;
    co_await asio::async_write(socket, asio::buffer(encoder.data().data(), encoder.size()), kUse);
    boost::system::error_code ignored;
    socket.close(ignored);
  }
}

}  // namespace backoff

// A connection that the server drops right after the handshake counts as a failed attempt:
// the client backs off instead of reconnecting in a tight loop. The test watches a fixed window
// and counts connections; the exact count depends on timing, the bound does not.
TEST_F(CommandClientTest, ServerHangingUpAfterTheHandshakeGetsBackoffNotATightLoop) {
  asio::ip::tcp::acceptor acceptor(io_, {asio::ip::make_address("127.0.0.1"), 0});
  int accepts = 0;
  asio::co_spawn(io_, backoff::HelloAndHangUp(&acceptor, &accepts), asio::detached);
  CommandClientOptions options;
  options.port = acceptor.local_endpoint().port();
  options.backoff.initial = milliseconds(50);
  options.backoff.multiplier = 2.0;
  options.backoff.jitter = 0.0;
  options.backoff.max = milliseconds(1'000);
  client_ = CommandClient::Create(io_.get_executor(), std::move(options));
  io_.run_for(milliseconds(400));  // Attempts near 0, 50, 150 and 350 ms.
  EXPECT_GE(accepts, 2);
  EXPECT_LE(accepts, 8) << "the client reconnected without backing off";
  boost::system::error_code ignored;
  acceptor.close(ignored);
}

}  // namespace
}  // namespace cqrs::net
