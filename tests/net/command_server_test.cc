// Loopback protocol tests of the TCP command server (proto/README.md sections 2 to 5): a real
// CommandServer on 127.0.0.1:0 and hand-driven RawPeers (blocking sockets plus the frame codec),
// so that well-behaved and misbehaving peers can be simulated byte by byte.
//
// Ordering never relies on sleeps: a test waits for a frame, for EOF, for a handler to arrive at
// the test gate, or for a Pong (the server answers a Ping only after every earlier frame). Waits
// are bounded; only tests about a timeout wait for the server's timer to fire.

#include <gtest/gtest.h>

#include <google/protobuf/duration.pb.h>

#include <google/protobuf/util/message_differencer.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cqrs/core/time_util.h"
#include "cqrs/net/command_server.h"
#include "cqrs/net/frame_codec.h"
#include "testing/frames.h"
#include "testing/loopback_service.h"
#include "testing/raw_peer.h"

namespace cqrs::net {
namespace {

using ::cqrs::testing::RawPeer;
using ::google::protobuf::StringValue;
using ::google::protobuf::util::MessageDifferencer;
using Response = v1::CommandResponseEnvelope;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// How long a test waits for something that must happen.
constexpr milliseconds kWait{5'000};
// The same, after a burst of thousands of commands the server must work through first (slow
// under the sanitizers on a loaded machine: ASan+UBSan with other tests on both cores once took
// over 5 s).
constexpr milliseconds kBurstWait{30'000};
// How long a test watches for something that must not happen (a bounded negative check: it can
// only miss a bug, never fail a correct server).
constexpr milliseconds kQuiet{200};
// Timeouts under test.
constexpr milliseconds kShortTimeout{300};

// --- frames ---------------------------------------------------------------------------------

v1::Frame CreateUserFrame(std::string id, std::string subject, std::string name,
                          std::string user_id = "") {
  users::v1::CreateUser create;
  create.set_name(std::move(name));
  create.set_user_id(std::move(user_id));
  return testing::CommandFrame(std::move(id), std::move(subject), create);
}

v1::Frame EchoFrame(std::string id, std::string subject, std::string value) {
  return testing::CommandFrame(std::move(id), std::move(subject),
                               testing::EchoCommand(std::move(value)));
}

v1::Frame GatedFrame(std::string id, std::string subject) {
  return testing::CommandFrame(std::move(id), std::move(subject), google::protobuf::Empty());
}

v1::Frame PingFrame(std::uint64_t nonce) {
  v1::Frame frame;
  frame.mutable_ping()->set_nonce(nonce);
  return frame;
}

// The reply a test handler packed as a StringValue ("" when there is none).
std::string ReplyText(const Response& response) {
  StringValue text;
  return response.payload().UnpackTo(&text) ? text.value() : "";
}

// --- fixture --------------------------------------------------------------------------------

class CommandServerTest : public ::testing::Test {
 protected:
  void StartServer(CommandServerOptions options = {}) {
    const absl::Status status = service_.Start(std::move(options));
    ASSERT_TRUE(status.ok()) << status;
  }

  // Connects `peer` and completes the handshake.
  void Connect(RawPeer& peer, std::string auth_token = "") {
    const absl::Status connected = peer.Connect(service_.port());
    ASSERT_TRUE(connected.ok()) << connected;
    const auto ack = peer.Handshake(std::move(auth_token));
    ASSERT_TRUE(ack.ok()) << ack.status();
  }

  // Sends one command and reads its response, which must come next.
  Response RoundTrip(RawPeer& peer, const v1::Frame& command) {
    const absl::Status sent = peer.Send(command);
    EXPECT_TRUE(sent.ok()) << sent;
    auto response = peer.ReadResponse(kWait);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    EXPECT_EQ(response->command_id(), command.command().id());
    return *std::move(response);
  }

  // Expects Error{code, fatal} next, then (when fatal) the server closing the connection.
  void ExpectError(RawPeer& peer, v1::Error::Code code, bool fatal, milliseconds timeout = kWait) {
    const auto error = peer.ReadError(timeout);
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), code) << error->ShortDebugString();
    EXPECT_EQ(error->fatal(), fatal) << error->ShortDebugString();
    EXPECT_FALSE(error->message().empty());
    if (fatal) {
      const absl::Status closed = peer.ReadEof(kWait);
      EXPECT_TRUE(closed.ok()) << closed;
    }
  }

  // The connection still serves: a command sent now is answered OK.
  void ExpectServes(RawPeer& peer, std::string id) {
    const Response response = RoundTrip(peer, EchoFrame(id, "", "still-serving"));
    EXPECT_EQ(response.status(), Response::OK) << response.ShortDebugString();
    EXPECT_EQ(ReplyText(response), "still-serving");
  }

  testing::LoopbackService service_;
};

// --- handshake ------------------------------------------------------------------------------

TEST_F(CommandServerTest, HelloAckReportsTheServersLimits) {
  StartServer({.server_name = "limits-server", .max_frame_bytes = 65'536, .max_in_flight = 17});
  RawPeer first;
  RawPeer second;
  ASSERT_TRUE(first.Connect(service_.port()).ok());
  ASSERT_TRUE(second.Connect(service_.port()).ok());
  const auto ack = first.Handshake();
  ASSERT_TRUE(ack.ok()) << ack.status();
  EXPECT_EQ(ack->protocol_version(), 1u);
  EXPECT_EQ(ack->server_name(), "limits-server");
  EXPECT_EQ(ack->max_frame_bytes(), 65'536u);
  EXPECT_EQ(ack->max_in_flight(), 17u);
  EXPECT_FALSE(ack->session_id().empty());
  const auto other = second.Handshake();
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->session_id(), ack->session_id());
  EXPECT_TRUE(first.PingPong(1).ok());
  EXPECT_TRUE(second.PingPong(2).ok());
}

TEST_F(CommandServerTest, AnythingButHelloFirstIsAFatalProtocolViolation) {
  StartServer();
  for (const v1::Frame& first : {EchoFrame("c1", "", "x"), PingFrame(7)}) {
    SCOPED_TRACE(testing::Describe(first));
    RawPeer peer;
    ASSERT_TRUE(peer.Connect(service_.port()).ok());
    ASSERT_TRUE(peer.Send(first).ok());
    ExpectError(peer, v1::Error::PROTOCOL_VIOLATION, /*fatal=*/true);
  }
  EXPECT_TRUE(service_.handlers.echo_log().empty());
  EXPECT_EQ(service_.server().stats().commands, 0u);
  EXPECT_EQ(service_.server().stats().protocol_errors, 2u);
}

TEST_F(CommandServerTest, SecondHelloIsAFatalProtocolViolation) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.Send(testing::HelloFrame()).ok());
  ExpectError(peer, v1::Error::PROTOCOL_VIOLATION, /*fatal=*/true);
}

TEST_F(CommandServerTest, UnsupportedProtocolVersionIsRefused) {
  StartServer();
  for (std::uint32_t version : {0u, 2u}) {
    SCOPED_TRACE(absl::StrCat("protocol_version ", version));
    RawPeer peer;
    ASSERT_TRUE(peer.Connect(service_.port()).ok());
    v1::Frame hello = testing::HelloFrame();
    hello.mutable_hello()->set_protocol_version(version);
    ASSERT_TRUE(peer.Send(hello).ok());
    ExpectError(peer, v1::Error::UNSUPPORTED_VERSION, /*fatal=*/true);
  }
}

absl::StatusOr<std::string> AliceOnly(absl::string_view token) {
  if (token == "alice-token") return std::string("alice");
  return absl::UnauthenticatedError("unknown token");
}

TEST_F(CommandServerTest, MissingOrBadAuthTokenIsRefused) {
  StartServer({.authenticate = AliceOnly});
  for (std::string token : {"", "mallory-token"}) {
    SCOPED_TRACE(absl::StrCat("token '", token, "'"));
    RawPeer peer;
    ASSERT_TRUE(peer.Connect(service_.port()).ok());
    v1::Frame hello = testing::HelloFrame();
    hello.mutable_hello()->set_auth_token(token);
    ASSERT_TRUE(peer.Send(hello).ok());
    ExpectError(peer, v1::Error::UNAUTHENTICATED, /*fatal=*/true);
  }
}

TEST_F(CommandServerTest, AuthenticatedPrincipalReachesTheHandler) {
  StartServer({.authenticate = AliceOnly});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer, "alice-token"));
  const Response response =
      RoundTrip(peer, testing::CommandFrame("whoami-1", "", v1::StreamInfo()));
  EXPECT_EQ(response.status(), Response::OK) << response.ShortDebugString();
  EXPECT_EQ(ReplyText(response), "alice");
}

TEST_F(CommandServerTest, WithoutAuthenticationThePrincipalIsEmpty) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer, "ignored-token"));
  const Response response =
      RoundTrip(peer, testing::CommandFrame("whoami-1", "", v1::StreamInfo()));
  EXPECT_EQ(response.status(), Response::OK) << response.ShortDebugString();
  EXPECT_EQ(ReplyText(response), "");
}

// --- command outcomes -----------------------------------------------------------------------

TEST_F(CommandServerTest, OkCarriesTheReplyAndTheEventOffsets) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  for (std::uint64_t offset : {1u, 2u}) {
    const Response response = RoundTrip(peer, CreateUserFrame(absl::StrCat("create-", offset), "",
                                                              "Bob", absl::StrCat("u", offset)));
    ASSERT_EQ(response.status(), Response::OK) << response.ShortDebugString();
    users::v1::CreateUserReply reply;
    ASSERT_TRUE(response.payload().UnpackTo(&reply));
    EXPECT_EQ(reply.user_id(), absl::StrCat("u", offset));
    EXPECT_EQ(response.type(), "users.v1.CreateUserReply");
    EXPECT_EQ(response.service_id(), "test-service");
    EXPECT_FALSE(response.id().empty());
    EXPECT_FALSE(response.has_error());
    ASSERT_EQ(response.event_offsets_size(), 1);
    EXPECT_EQ(response.event_offsets(0), offset);
    EXPECT_EQ(response.event_epoch(), 1u);
  }
  const auto events = service_.sink.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].channel(), "users");
  EXPECT_EQ(events[1].causation_id(), "create-2");
}

TEST_F(CommandServerTest, RejectedCarriesTheDomainErrorCode) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const Response response = RoundTrip(peer, CreateUserFrame("empty-name", "", ""));
  EXPECT_EQ(response.status(), Response::REJECTED) << response.ShortDebugString();
  EXPECT_EQ(response.error().error_code(), "USER_NAME_EMPTY");
  EXPECT_FALSE(response.error().message().empty());
  EXPECT_FALSE(response.has_payload());
  EXPECT_EQ(response.event_offsets_size(), 0);
  EXPECT_EQ(service_.sink.size(), 0u);
}

TEST_F(CommandServerTest, UnknownCommandTypeIsNotFound) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  v1::Frame command = EchoFrame("unknown-1", "", "x");
  command.mutable_command()->mutable_payload()->set_type_url("type.googleapis.com/no.such.Type");
  const Response response = RoundTrip(peer, command);
  EXPECT_EQ(response.status(), Response::NOT_FOUND) << response.ShortDebugString();
  EXPECT_EQ(response.error().error_code(), "NO_HANDLER");
  ExpectServes(peer, "after-not-found");
}

TEST_F(CommandServerTest, MalformedCommandsAreInvalidAndTheConnectionStaysOpen) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));

  v1::Frame bad_payload = CreateUserFrame("bad-payload", "", "Bob");
  bad_payload.mutable_command()->mutable_payload()->set_value("\xff\xff\xff\xff");
  Response response = RoundTrip(peer, bad_payload);
  EXPECT_EQ(response.status(), Response::INVALID) << response.ShortDebugString();
  EXPECT_EQ(response.error().error_code(), "INVALID_PAYLOAD");

  v1::Frame no_id = EchoFrame("", "", "x");
  ASSERT_TRUE(peer.Send(no_id).ok());
  auto unnamed = peer.ReadResponse(kWait);
  ASSERT_TRUE(unnamed.ok()) << unnamed.status();
  EXPECT_EQ(unnamed->status(), Response::INVALID) << unnamed->ShortDebugString();
  EXPECT_EQ(unnamed->command_id(), "");
  EXPECT_EQ(unnamed->error().error_code(), "INVALID_COMMAND");

  v1::Frame no_payload = EchoFrame("no-payload", "", "x");
  no_payload.mutable_command()->clear_payload();
  response = RoundTrip(peer, no_payload);
  EXPECT_EQ(response.status(), Response::INVALID) << response.ShortDebugString();
  EXPECT_EQ(response.error().error_code(), "INVALID_COMMAND");

  ExpectServes(peer, "after-invalid");
  EXPECT_EQ(service_.directory.size(), 0u);
}

TEST_F(CommandServerTest, ThrowingHandlerIsInternalAndTheConnectionKeepsServing) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  google::protobuf::BoolValue fail;
  fail.set_value(true);
  const Response response = RoundTrip(peer, testing::CommandFrame("throws", "", fail));
  EXPECT_EQ(response.status(), Response::INTERNAL) << response.ShortDebugString();
  EXPECT_EQ(response.error().error_code(), "HANDLER_EXCEPTION");
  const Response created = RoundTrip(peer, CreateUserFrame("after-throw", "", "Bob"));
  EXPECT_EQ(created.status(), Response::OK) << created.ShortDebugString();
}

TEST_F(CommandServerTest, PastDeadlineIsDeadlineExceededAndTheHandlerDoesNotRun) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  v1::Frame late = EchoFrame("late", "", "never");
  late.mutable_command()->mutable_deadline()->set_seconds(1'000'000'000);  // 2001.
  const Response response = RoundTrip(peer, late);
  EXPECT_EQ(response.status(), Response::DEADLINE_EXCEEDED) << response.ShortDebugString();
  EXPECT_TRUE(service_.handlers.echo_log().empty());
  ExpectServes(peer, "after-deadline");
}

TEST_F(CommandServerTest, HandlerStillWaitingAtItsDeadlineIsCancelledAndAnsweredAtOnce) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  google::protobuf::Duration hour;
  hour.set_seconds(3600);  // The delay handler would wait this long.
  v1::Frame slow = testing::CommandFrame("slow", "", hour);
  SetTimestamp(absl::Now() + absl::Milliseconds(200), *slow.mutable_command()->mutable_deadline());
  const auto sent = std::chrono::steady_clock::now();
  const Response response = RoundTrip(peer, slow);
  EXPECT_EQ(response.status(), Response::DEADLINE_EXCEEDED) << response.ShortDebugString();
  EXPECT_EQ(response.error().error_code(), "DEADLINE_EXCEEDED");
  EXPECT_LT(std::chrono::steady_clock::now() - sent, std::chrono::seconds(5));
  ExpectServes(peer, "after-cancelled");
  // The coroutine that ran "slow" runs the next commands too: one that suspends completes.
  const Response delayed = RoundTrip(
      peer, testing::CommandFrame("delayed", "", testing::DelayCommand(milliseconds(10))));
  EXPECT_EQ(delayed.status(), Response::OK) << delayed.ShortDebugString();
}

// Commands of a connection run one after another on the same few coroutines: what a handler
// does to its coroutine's cancellation state must not reach the next command.
TEST_F(CommandServerTest, AHandlerDisablingCancellationLeavesTheNextCommandCancellable) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  service_.handlers.gate.Open();
  // The stubborn handler disables cancellation for the coroutine it runs on.
  const Response stubborn =
      RoundTrip(peer, testing::CommandFrame("stubborn", "", google::protobuf::Int32Value()));
  EXPECT_EQ(stubborn.status(), Response::OK) << stubborn.ShortDebugString();
  google::protobuf::Duration hour;
  hour.set_seconds(3600);
  v1::Frame slow = testing::CommandFrame("slow", "", hour);
  SetTimestamp(absl::Now() + absl::Milliseconds(200), *slow.mutable_command()->mutable_deadline());
  const Response response = RoundTrip(peer, slow);
  EXPECT_EQ(response.status(), Response::DEADLINE_EXCEEDED) << response.ShortDebugString();
}

// --- pipelining and ordering ----------------------------------------------------------------

TEST_F(CommandServerTest, ThousandPipelinedCommandsAreEachAnsweredOnce) {
  constexpr int kCommands = 1000;
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  std::vector<v1::Frame> commands;
  for (int i = 0; i < kCommands; ++i) {
    commands.push_back(EchoFrame(absl::StrCat("cmd-", i), absl::StrCat("subject-", i % 10),
                                 absl::StrCat("value-", i)));
  }
  ASSERT_TRUE(peer.Send(commands).ok());  // Everything before reading anything.
  std::map<std::string, int> answered;
  for (int i = 0; i < kCommands; ++i) {
    auto response = peer.ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << "after " << i << " responses: " << response.status();
    ASSERT_EQ(response->status(), Response::OK) << response->ShortDebugString();
    const std::string& id = response->command_id();
    ASSERT_TRUE(id.starts_with("cmd-")) << id;
    EXPECT_EQ(ReplyText(*response), absl::StrCat("value-", id.substr(4)));
    ++answered[id];
  }
  EXPECT_EQ(answered.size(), static_cast<std::size_t>(kCommands));
  for (const auto& [id, count] : answered) EXPECT_EQ(count, 1) << id;
  // Nothing else is queued: the next frame is the Pong.
  EXPECT_TRUE(peer.PingPong(99).ok());
  EXPECT_EQ(service_.server().stats().commands, static_cast<std::uint64_t>(kCommands));
}

TEST_F(CommandServerTest, ResponsesComeOutOfOrderAcrossSubjects) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.Send(GatedFrame("slow", "subject-a")).ok());
  ASSERT_TRUE(peer.Send(EchoFrame("fast", "subject-b", "quick")).ok());
  auto first = peer.ReadResponse(kWait);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->command_id(), "fast");
  EXPECT_TRUE(service_.handlers.gate.arrivals().WaitFor(1, kWait));  // "slow" is running.
  service_.handlers.gate.Open();
  auto second = peer.ReadResponse(kWait);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->command_id(), "slow");
  EXPECT_EQ(second->status(), Response::OK);
}

// Regression: the watchdog's cancellation reached a command still waiting for its subject's
// turn, which then threw at its next co_await and was answered INTERNAL.
TEST_F(CommandServerTest, DeadlinePassingWhileWaitingForTheSubjectIsDeadlineExceeded) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.Send(GatedFrame("holder", "subject-a")).ok());
  ASSERT_TRUE(service_.handlers.gate.arrivals().WaitFor(1, kWait));
  v1::Frame waiter = EchoFrame("waiter", "subject-a", "late");
  SetTimestamp(absl::Now() + absl::Milliseconds(100),
               *waiter.mutable_command()->mutable_deadline());
  ASSERT_TRUE(peer.Send(waiter).ok());
  // The waiter's deadline passes while "holder" runs; nothing is answered before the gate opens.
  EXPECT_FALSE(peer.ReadResponse(std::chrono::milliseconds(300)).ok());
  service_.handlers.gate.Open();
  std::map<std::string, Response> responses;
  for (int i = 0; i < 2; ++i) {
    auto response = peer.ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << response.status();
    responses[response->command_id()] = *response;
  }
  EXPECT_EQ(responses["holder"].status(), Response::OK);
  EXPECT_EQ(responses["waiter"].status(), Response::DEADLINE_EXCEEDED)
      << responses["waiter"].ShortDebugString();
}

TEST_F(CommandServerTest, SameSubjectRunsInArrivalOrder) {
  constexpr int kCommands = 200;
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  // Two subjects interleaved, so that the server has concurrent work to mix them up with.
  std::vector<v1::Frame> commands;
  for (int i = 0; i < kCommands; ++i) {
    commands.push_back(
        EchoFrame(absl::StrCat("cmd-", i), i % 2 == 0 ? "even" : "odd", absl::StrCat(i)));
  }
  // Half in one write, then the rest in small writes (several reads on the server).
  ASSERT_TRUE(peer.Send(std::span(commands).first(kCommands / 2)).ok());
  for (int i = kCommands / 2; i < kCommands; i += 7) {
    ASSERT_TRUE(peer.Send(std::span(commands).subspan(i, std::min(7, kCommands - i))).ok());
  }
  for (int i = 0; i < kCommands; ++i) {
    auto response = peer.ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << response.status();
    ASSERT_EQ(response->status(), Response::OK);
  }
  std::map<std::string, std::vector<std::string>> by_subject;
  for (const std::string& entry : service_.handlers.echo_log()) {
    const auto colon = entry.find(':');
    by_subject[entry.substr(0, colon)].push_back(entry.substr(colon + 1));
  }
  for (const std::string subject : {"even", "odd"}) {
    std::vector<std::string> expected;
    for (int i = subject == "even" ? 0 : 1; i < kCommands; i += 2) {
      expected.push_back(absl::StrCat(i));       // started,
      expected.push_back(absl::StrCat("/", i));  // finished before the next one starts.
    }
    EXPECT_EQ(by_subject[subject], expected) << subject;
  }
}

// --- idempotency ----------------------------------------------------------------------------

TEST_F(CommandServerTest, DuplicateIdIsAnsweredFromTheCache) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const v1::Frame create = CreateUserFrame("create-once", "user-1", "Bob", "user-1");
  const Response first = RoundTrip(peer, create);
  ASSERT_EQ(first.status(), Response::OK) << first.ShortDebugString();
  // Run again, the handler would answer REJECTED USER_EXISTS.
  const Response second = RoundTrip(peer, create);
  EXPECT_TRUE(MessageDifferencer::Equals(first, second)) << first.ShortDebugString() << "\nvs\n"
                                                         << second.ShortDebugString();
  EXPECT_EQ(service_.sink.size(), 1u);
  EXPECT_EQ(service_.directory.size(), 1u);

  // Another connection sees the same cache.
  RawPeer other;
  ASSERT_NO_FATAL_FAILURE(Connect(other));
  const Response third = RoundTrip(other, create);
  EXPECT_TRUE(MessageDifferencer::Equals(first, third)) << third.ShortDebugString();
  EXPECT_EQ(service_.sink.size(), 1u);
}

TEST_F(CommandServerTest, ConcurrentDuplicateWaitsForTheFirstRun) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const v1::Frame gated = GatedFrame("twice", "");
  ASSERT_TRUE(peer.Send(std::vector<v1::Frame>{gated, gated}).ok());
  // The Pong proves both commands were admitted; neither can have been answered yet.
  ASSERT_TRUE(peer.PingPong(1).ok());
  EXPECT_EQ(service_.handlers.gate.arrivals().value(), 1u);
  service_.handlers.gate.Open();
  auto first = peer.ReadResponse(kWait);
  auto second = peer.ReadResponse(kWait);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->status(), Response::OK);
  EXPECT_EQ(first->command_id(), "twice");
  EXPECT_TRUE(MessageDifferencer::Equals(*first, *second)) << first->ShortDebugString() << "\nvs\n"
                                                           << second->ShortDebugString();
  EXPECT_EQ(service_.handlers.gate.arrivals().value(), 1u);
  EXPECT_EQ(service_.server().stats().commands, 2u);
}

// --- framing errors -------------------------------------------------------------------------

TEST_F(CommandServerTest, OversizeLengthPrefixIsFatalAndOtherConnectionsKeepServing) {
  StartServer({.max_frame_bytes = 1024});
  RawPeer bystander;
  ASSERT_NO_FATAL_FAILURE(Connect(bystander));
  for (std::uint32_t length : {1025u, 0xffffffffu}) {
    SCOPED_TRACE(absl::StrCat("length prefix ", length));
    RawPeer peer;
    ASSERT_NO_FATAL_FAILURE(Connect(peer));
    ASSERT_TRUE(peer.SendBytes(testing::Header(length)).ok());  // The header alone must do.
    const auto error = peer.ReadError(kWait);
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), v1::Error::FRAME_TOO_LARGE);
    EXPECT_TRUE(error->fatal());
    EXPECT_NE(error->message().find("max_frame_bytes=1024"), std::string::npos) << error->message();
    EXPECT_TRUE(peer.ReadEof(kWait).ok());
  }
  ExpectServes(bystander, "bystander");
  RawPeer newcomer;
  ASSERT_NO_FATAL_FAILURE(Connect(newcomer));
  ExpectServes(newcomer, "newcomer");
}

// A command frame whose serialized Frame is exactly `body_bytes` long (padded in `type`).
v1::Frame CommandFrameOfSize(std::string id, std::size_t body_bytes) {
  v1::Frame frame = CreateUserFrame(std::move(id), "", "Bob");
  for (std::size_t pad = 0; pad < body_bytes; ++pad) {
    frame.mutable_command()->set_type(std::string(pad, 'p'));
    if (frame.ByteSizeLong() == body_bytes) return frame;
  }
  ADD_FAILURE() << "no padding gives a frame of " << body_bytes << " bytes";
  return frame;
}

TEST_F(CommandServerTest, FrameOfExactlyMaxFrameBytesIsAccepted) {
  StartServer({.max_frame_bytes = 1024});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const Response response = RoundTrip(peer, CommandFrameOfSize("exactly-max", 1024));
  EXPECT_EQ(response.status(), Response::OK) << response.ShortDebugString();
  ASSERT_TRUE(peer.Send(CommandFrameOfSize("one-more", 1025)).ok());
  ExpectError(peer, v1::Error::FRAME_TOO_LARGE, /*fatal=*/true);
  EXPECT_EQ(service_.directory.size(), 1u);
}

// The server closes only after the peer has closed (or a linger time), draining what it still
// sends, so that its close is a FIN and not a reset (with input left unread). On loopback a
// reset happens not to destroy the Error frame, so this checks the outcome, not the mechanism.
TEST_F(CommandServerTest, OversizeFrameWithItsBodyStillGetsTheErrorAndAnOrderlyClose) {
  StartServer({.max_frame_bytes = 1024});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.SendBytes(testing::Header(200'000) + std::string(200'000, 'x')).ok());
  ExpectError(peer, v1::Error::FRAME_TOO_LARGE, /*fatal=*/true);
  EXPECT_TRUE(peer.ReadEof(kWait).ok());
}

TEST_F(CommandServerTest, GarbageClosesOnlyThatConnection) {
  StartServer();
  RawPeer bystander;
  ASSERT_NO_FATAL_FAILURE(Connect(bystander));
  {
    SCOPED_TRACE("text instead of a frame, after Hello");  // "GARB" is a huge length prefix.
    RawPeer peer;
    ASSERT_NO_FATAL_FAILURE(Connect(peer));
    ASSERT_TRUE(peer.SendBytes("GARBAGE GARBAGE GARBAGE").ok());
    ExpectError(peer, v1::Error::FRAME_TOO_LARGE, /*fatal=*/true);
  }
  {
    SCOPED_TRACE("an undecodable frame instead of Hello");
    RawPeer peer;
    ASSERT_TRUE(peer.Connect(service_.port()).ok());
    ASSERT_TRUE(peer.SendBytes(testing::Header(8) + std::string(8, '\xff')).ok());
    const auto error = peer.ReadError(kWait);
    ASSERT_TRUE(error.ok()) << error.status();
    EXPECT_EQ(error->code(), v1::Error::MALFORMED_FRAME);
    // Before Hello the server gives up on the peer, and says so.
    EXPECT_TRUE(error->fatal());
    EXPECT_TRUE(peer.ReadEof(kWait).ok());
  }
  ExpectServes(bystander, "bystander");
}

TEST_F(CommandServerTest, ZeroLengthFrameIsMalformedButNotFatal) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.SendBytes(testing::Header(0)).ok());
  ExpectError(peer, v1::Error::MALFORMED_FRAME, /*fatal=*/false);
  ExpectServes(peer, "after-empty-frame");
}

TEST_F(CommandServerTest, UndecodableBodyIsMalformedButNotFatal) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  // Not protobuf at all.
  ASSERT_TRUE(peer.SendBytes(testing::Header(3) + "\xff\xff\xff").ok());
  ExpectError(peer, v1::Error::MALFORMED_FRAME, /*fatal=*/false);
  // Valid protobuf, but only an unknown field (99, varint 1): no known kind.
  ASSERT_TRUE(peer.SendBytes(testing::Header(3) + "\x98\x06\x01").ok());
  ExpectError(peer, v1::Error::MALFORMED_FRAME, /*fatal=*/false);
  ExpectServes(peer, "after-malformed");
}

TEST_F(CommandServerTest, ServerOnlyFramesFromAClientAreNonFatalProtocolViolations) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  std::vector<v1::Frame> server_frames;
  for (const v1::Frame& frame : testing::OneFrameOfEachKind()) {
    if (frame.has_hello_ack() || frame.has_response() || frame.has_go_away()) {
      server_frames.push_back(frame);
    }
  }
  ASSERT_EQ(server_frames.size(), 3u);
  for (const v1::Frame& frame : server_frames) {
    SCOPED_TRACE(testing::Describe(frame));
    ASSERT_TRUE(peer.Send(frame).ok());
    ExpectError(peer, v1::Error::PROTOCOL_VIOLATION, /*fatal=*/false);
  }
  ExpectServes(peer, "after-violations");
}

TEST_F(CommandServerTest, ErrorFrameFromAClientIsIgnored) {
  StartServer();
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  v1::Frame error;
  error.mutable_error()->set_code(v1::Error::INTERNAL);
  error.mutable_error()->set_message("the client had a problem");
  ASSERT_TRUE(peer.Send(error).ok());
  EXPECT_TRUE(peer.PingPong(3).ok());  // No answer to the Error: the Pong comes next.
  ExpectServes(peer, "after-client-error");
}

// --- timeouts -------------------------------------------------------------------------------

// Reads the Error{TIMEOUT} that must come after at least `timeout`, then EOF.
void ExpectTimeout(RawPeer& peer, Clock::time_point since, milliseconds timeout,
                   const std::string& option) {
  const auto error = peer.ReadError(kWait);
  ASSERT_TRUE(error.ok()) << error.status();
  EXPECT_GE(Clock::now() - since, timeout);
  EXPECT_EQ(error->code(), v1::Error::TIMEOUT) << error->ShortDebugString();
  EXPECT_TRUE(error->fatal());
  EXPECT_NE(error->message().find(option), std::string::npos) << error->message();
  EXPECT_TRUE(peer.ReadEof(kWait).ok());
}

TEST_F(CommandServerTest, HalfFrameStallTimesOut) {
  StartServer({.frame_timeout = kShortTimeout});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const auto since = Clock::now();
  ASSERT_TRUE(peer.SendBytes(testing::Header(100) + std::string(10, 'x')).ok());
  ExpectTimeout(peer, since, kShortTimeout, "frame_timeout");
}

TEST_F(CommandServerTest, TricklingFrameStillTimesOut) {
  StartServer({.frame_timeout = kShortTimeout});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const auto since = Clock::now();
  ASSERT_TRUE(peer.SendBytes(testing::Header(100)).ok());
  // One more byte every 50 ms: progress, but the frame is never complete in time.
  for (int sent = 0; sent < 100; ++sent) {
    auto frame = peer.Read(milliseconds(50));
    if (frame.ok()) {
      ASSERT_TRUE(frame->has_error()) << testing::Describe(*frame);
      EXPECT_GE(Clock::now() - since, kShortTimeout);
      EXPECT_EQ(frame->error().code(), v1::Error::TIMEOUT);
      EXPECT_TRUE(peer.ReadEof(kWait).ok());
      return;
    }
    ASSERT_TRUE(absl::IsDeadlineExceeded(frame.status())) << frame.status();
    ASSERT_TRUE(peer.SendBytes("x").ok());
  }
  FAIL() << "the whole frame trickled in without frame_timeout firing";
}

TEST_F(CommandServerTest, NoHelloTimesOut) {
  StartServer({.hello_timeout = kShortTimeout});
  RawPeer peer;
  const auto since = Clock::now();
  ASSERT_TRUE(peer.Connect(service_.port()).ok());
  ExpectTimeout(peer, since, kShortTimeout, "hello_timeout");
}

TEST_F(CommandServerTest, IdleConnectionTimesOut) {
  StartServer({.idle_timeout = kShortTimeout});
  RawPeer peer;
  const auto since = Clock::now();  // Before the server can start its idle timer.
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ExpectTimeout(peer, since, kShortTimeout, "idle_timeout");
}

TEST_F(CommandServerTest, PingsKeepAnIdleConnectionOpen) {
  constexpr milliseconds kIdle{400};
  StartServer({.idle_timeout = kIdle});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  const auto since = Clock::now();
  // Quiet spells of 150 ms, each ended by a Ping, for well over the idle timeout.
  for (std::uint64_t nonce = 1; Clock::now() - since < 3 * kIdle; ++nonce) {
    const auto quiet = peer.Read(milliseconds(150));
    ASSERT_TRUE(absl::IsDeadlineExceeded(quiet.status()))
        << (quiet.ok() ? testing::Describe(*quiet) : quiet.status().ToString());
    ASSERT_TRUE(peer.PingPong(nonce).ok());
  }
  ExpectServes(peer, "after-pings");
}

TEST_F(CommandServerTest, CommandInFlightKeepsTheConnectionFromIdling) {
  StartServer({.idle_timeout = milliseconds(100)});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.Send(GatedFrame("long-running", "")).ok());
  ASSERT_TRUE(service_.handlers.gate.arrivals().WaitFor(1, kWait));
  // Twice the idle timeout with a command in flight and no frame either way.
  const auto quiet = peer.Read(milliseconds(200));
  EXPECT_TRUE(absl::IsDeadlineExceeded(quiet.status()))
      << (quiet.ok() ? testing::Describe(*quiet) : quiet.status().ToString());
  const auto since = Clock::now();
  service_.handlers.gate.Open();
  auto response = peer.ReadResponse(kWait);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->status(), Response::OK);
  // Idle again: now the timeout applies.
  ExpectTimeout(peer, since, milliseconds(100), "idle_timeout");
}

// --- limits ---------------------------------------------------------------------------------

TEST_F(CommandServerTest, MaxInFlightStopsReadingUntilAResponseLeaves) {
  StartServer({.max_in_flight = 4});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(peer.Send(GatedFrame(absl::StrCat("gated-", i), absl::StrCat("s", i))).ok());
  }
  ASSERT_TRUE(service_.handlers.gate.arrivals().WaitFor(4, kWait));
  // At the limit: a fast command and a Ping stay unread, so nothing comes back.
  ASSERT_TRUE(peer.Send(std::vector<v1::Frame>{EchoFrame("fast", "", "x"), PingFrame(5)}).ok());
  const auto quiet = peer.Read(kQuiet);
  EXPECT_TRUE(absl::IsDeadlineExceeded(quiet.status()))
      << "the server read past max_in_flight: "
      << (quiet.ok() ? testing::Describe(*quiet) : quiet.status().ToString());
  EXPECT_EQ(service_.server().stats().commands, 4u);

  service_.handlers.gate.Open();
  std::set<std::string> gated_answered;
  bool fast_answered = false;
  bool pong = false;
  for (int i = 0; i < 6; ++i) {
    auto frame = peer.Read(kWait);
    ASSERT_TRUE(frame.ok()) << frame.status();
    if (frame->has_pong()) {
      EXPECT_FALSE(gated_answered.empty()) << "the Pong overtook every released response";
      pong = true;
      continue;
    }
    ASSERT_TRUE(frame->has_response()) << testing::Describe(*frame);
    EXPECT_EQ(frame->response().status(), Response::OK);
    if (frame->response().command_id() == "fast") {
      EXPECT_FALSE(gated_answered.empty()) << "the fast command overtook the released ones";
      fast_answered = true;
    } else {
      gated_answered.insert(frame->response().command_id());
    }
  }
  EXPECT_EQ(gated_answered.size(), 4u);
  EXPECT_TRUE(fast_answered);
  EXPECT_TRUE(pong);
  EXPECT_LE(service_.handlers.max_gated_running(), 4);
}

// Regression: the limit once stopped only the next socket read, so 12 commands that arrived in
// one write with max_in_flight=4 all ran at once.
TEST_F(CommandServerTest, MaxInFlightHoldsForABurstInOneWrite) {
  constexpr int kCommands = 12;
  StartServer({.max_in_flight = 4});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  std::vector<v1::Frame> burst;
  for (int i = 0; i < kCommands; ++i) {
    burst.push_back(GatedFrame(absl::StrCat("gated-", i), absl::StrCat("s", i)));
  }
  ASSERT_TRUE(peer.Send(burst).ok());  // One write: one read on the server.
  ASSERT_TRUE(service_.handlers.gate.arrivals().WaitFor(4, kWait));
  // A fifth arrival within the quiet period means more than max_in_flight commands run at once.
  EXPECT_FALSE(service_.handlers.gate.arrivals().WaitFor(5, kQuiet))
      << service_.handlers.gate.arrivals().value() << " commands in flight with max_in_flight=4";
  service_.handlers.gate.Open();
  for (int i = 0; i < kCommands; ++i) {
    auto response = peer.ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status(), Response::OK);
  }
  EXPECT_LE(service_.handlers.max_gated_running(), 4);
}

// Responses to a peer that falls behind wait in the server (its writes find the socket full)
// and all arrive, in order, once the peer reads. 20,000 responses are ~4 MB: far more than the
// 4 KiB receive buffer and the server's send buffer hold.
TEST_F(CommandServerTest, ResponsesWaitForAPeerThatFallsBehind) {
  constexpr int kCommands = 20'000;
  StartServer({.max_in_flight = 100'000});
  RawPeer peer;
  peer.set_receive_buffer(4096);
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  std::vector<v1::Frame> burst;
  for (int i = 0; i < kCommands; ++i) {
    burst.push_back(EchoFrame(absl::StrCat("echo-", i), "", absl::StrCat("value-", i)));
  }
  ASSERT_TRUE(peer.Send(burst).ok());  // Not reading meanwhile: the server's writes back up.
  for (int i = 0; i < kCommands; ++i) {
    auto response = peer.ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << "response " << i << ": " << response.status();
    ASSERT_EQ(response->command_id(), absl::StrCat("echo-", i));
    ASSERT_EQ(ReplyText(*response), absl::StrCat("value-", i));
  }
}

// A peer that stops reading is closed once the server's writes make no progress for
// write_timeout; other connections are not affected.
TEST_F(CommandServerTest, WriteTimeoutClosesAPeerThatStopsReading) {
  constexpr int kCommands = 20'000;
  StartServer({.max_in_flight = 100'000, .write_timeout = kShortTimeout});
  RawPeer stalled;
  stalled.set_receive_buffer(4096);
  ASSERT_NO_FATAL_FAILURE(Connect(stalled));
  RawPeer healthy;
  ASSERT_NO_FATAL_FAILURE(Connect(healthy));
  std::vector<v1::Frame> burst;
  for (int i = 0; i < kCommands; ++i) {
    burst.push_back(EchoFrame(absl::StrCat("echo-", i), "", "x"));
  }
  // The server may already close the connection while this is being sent.
  (void)stalled.Send(burst);
  EXPECT_TRUE(stalled.WaitForHangup(kBurstWait).ok());
  EXPECT_EQ(service_.server().stats().connections_open, 1u);
  const Response response = RoundTrip(healthy, EchoFrame("after", "", "still here"));
  EXPECT_EQ(response.status(), Response::OK);
  EXPECT_EQ(ReplyText(response), "still here");
}

TEST_F(CommandServerTest, MaxConnectionsRefusesTheNextUntilOneCloses) {
  // One loop thread: the closed session is gone before the next accept is handled.
  StartServer({.threads = 1, .max_connections = 2});
  RawPeer first;
  RawPeer second;
  ASSERT_NO_FATAL_FAILURE(Connect(first));
  ASSERT_NO_FATAL_FAILURE(Connect(second));

  RawPeer refused;
  ASSERT_TRUE(refused.Connect(service_.port()).ok());  // Accepted by TCP, then refused.
  ExpectError(refused, v1::Error::TOO_MANY_CONNECTIONS, /*fatal=*/true);
  CommandServerStats stats = service_.server().stats();
  EXPECT_EQ(stats.connections_accepted, 3u);
  EXPECT_EQ(stats.connections_refused, 1u);
  EXPECT_EQ(stats.connections_open, 2u);

  // `first` leaves cleanly: EOF from us, then the server closes its side.
  first.ShutdownSend();
  ASSERT_TRUE(first.ReadEof(kWait).ok());
  RawPeer next;
  ASSERT_NO_FATAL_FAILURE(Connect(next));
  ExpectServes(next, "next");
  ExpectServes(second, "second");
  stats = service_.server().stats();
  EXPECT_EQ(stats.connections_accepted, 4u);
  EXPECT_EQ(stats.connections_refused, 1u);
  EXPECT_EQ(stats.connections_open, 2u);
}

TEST_F(CommandServerTest, ThousandConnectionsAtOnce) {
  constexpr int kConnections = 1000;
  StartServer();
  std::vector<std::unique_ptr<RawPeer>> peers;
  for (int i = 0; i < kConnections; ++i) {
    peers.push_back(std::make_unique<RawPeer>());
    const absl::Status connected = peers.back()->Connect(service_.port());
    ASSERT_TRUE(connected.ok()) << "connection " << i << ": " << connected;
  }
  // Every connection is open before any says Hello.
  for (int i = 0; i < kConnections; ++i) {
    ASSERT_TRUE(peers[i]
                    ->Send(std::vector<v1::Frame>{
                        testing::HelloFrame(),
                        EchoFrame(absl::StrCat("cmd-", i), absl::StrCat("s", i), "x")})
                    .ok());
  }
  std::set<std::string> sessions;
  for (int i = 0; i < kConnections; ++i) {
    auto ack = peers[i]->Read(kWait);
    ASSERT_TRUE(ack.ok()) << "connection " << i << ": " << ack.status();
    ASSERT_TRUE(ack->has_hello_ack()) << testing::Describe(*ack);
    sessions.insert(ack->hello_ack().session_id());
    auto response = peers[i]->ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << "connection " << i << ": " << response.status();
    EXPECT_EQ(response->command_id(), absl::StrCat("cmd-", i));
    EXPECT_EQ(response->status(), Response::OK);
  }
  EXPECT_EQ(sessions.size(), static_cast<std::size_t>(kConnections));
  const CommandServerStats stats = service_.server().stats();
  EXPECT_EQ(stats.connections_accepted, static_cast<std::uint64_t>(kConnections));
  EXPECT_EQ(stats.connections_refused, 0u);
  EXPECT_EQ(stats.connections_open, static_cast<std::uint64_t>(kConnections));
  EXPECT_EQ(stats.commands, static_cast<std::uint64_t>(kConnections));
}

// --- graceful shutdown ----------------------------------------------------------------------

TEST_F(CommandServerTest, ShutdownDrainsInFlightCommandsThenCloses) {
  // One loop thread: the acceptor is closed before any GoAway goes out.
  StartServer({.threads = 1, .shutdown_drain = kWait});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  std::vector<v1::Frame> in_flight;
  for (int i = 0; i < 3; ++i) in_flight.push_back(GatedFrame(absl::StrCat("in-flight-", i), ""));
  ASSERT_TRUE(peer.Send(in_flight).ok());
  ASSERT_TRUE(service_.handlers.gate.arrivals().WaitFor(3, kWait));

  std::thread shutdown([&] { service_.server().Shutdown(); });
  absl::Cleanup join = [&] {
    service_.handlers.gate.Open();
    shutdown.join();
  };
  auto go_away = peer.Read(kWait);
  ASSERT_TRUE(go_away.ok()) << go_away.status();
  ASSERT_TRUE(go_away->has_go_away()) << testing::Describe(*go_away);
  EXPECT_EQ(go_away->go_away().drain_ms(), static_cast<std::uint32_t>(kWait.count()));
  EXPECT_FALSE(go_away->go_away().reason().empty());

  // After GoAway: refused without running, and no new connections.
  const Response refused = RoundTrip(peer, CreateUserFrame("too-late", "", "Bob"));
  EXPECT_EQ(refused.status(), Response::UNAVAILABLE) << refused.ShortDebugString();
  EXPECT_EQ(service_.directory.size(), 0u);
  RawPeer newcomer;
  EXPECT_FALSE(newcomer.Connect(service_.port()).ok());

  service_.handlers.gate.Open();
  std::set<std::string> answered;
  for (int i = 0; i < 3; ++i) {
    auto response = peer.ReadResponse(kWait);
    ASSERT_TRUE(response.ok()) << response.status();
    EXPECT_EQ(response->status(), Response::OK) << response->ShortDebugString();
    answered.insert(response->command_id());
  }
  EXPECT_EQ(answered, (std::set<std::string>{"in-flight-0", "in-flight-1", "in-flight-2"}));
  EXPECT_TRUE(peer.ReadEof(kWait).ok());
  std::move(join).Invoke();
  EXPECT_EQ(service_.server().stats().connections_open, 0u);
}

TEST_F(CommandServerTest, ShutdownClosesConnectionsThatDoNotDrainInTime) {
  StartServer({.shutdown_drain = kShortTimeout});
  RawPeer peer;
  ASSERT_NO_FATAL_FAILURE(Connect(peer));
  ASSERT_TRUE(peer.Send(GatedFrame("stuck", "")).ok());
  ASSERT_TRUE(service_.handlers.gate.arrivals().WaitFor(1, kWait));
  const auto since = Clock::now();
  std::thread shutdown([&] { service_.server().Shutdown(); });
  // Opening the gate lets the stuck handler end, so that Shutdown need not wait any longer.
  absl::Cleanup join = [&] {
    service_.handlers.gate.Open();
    shutdown.join();
  };
  auto go_away = peer.Read(kWait);
  ASSERT_TRUE(go_away.ok()) << go_away.status();
  EXPECT_TRUE(go_away->has_go_away()) << testing::Describe(*go_away);
  // No response: the command stays unanswered, for the client to re-send elsewhere.
  EXPECT_TRUE(peer.ReadEof(kWait).ok());
  EXPECT_GE(Clock::now() - since, kShortTimeout);
}

}  // namespace
}  // namespace cqrs::net
