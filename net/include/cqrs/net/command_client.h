// File: cqrs/net/command_client.h
//
// A pipelined command client: many concurrent Sends multiplex over one TCP connection, which
// reconnects by itself (exponential backoff with jitter) and re-sends unanswered commands with
// their original ids (safe: the server is idempotent by id).
//
//   asio::io_context io;
//   auto client = CommandClient::Create(io.get_executor(), {.port = 7000});
//   co_spawn(io, [&]() -> Awaitable<void> {
//     CreateUser create;
//     create.set_name("Bob");
//     absl::StatusOr<CreateUserReply> reply =
//         co_await client->Call<CreateUserReply>(create, {.subject = "bob"});
//   }, detached);
//   io.run();
//
// Concurrency: a client lives on one executor, which must not run handlers concurrently (an
// io_context run by one thread, or a strand); call it only from coroutines on that executor.
// Close() (or destroying the last reference) fails every pending Send with kCancelled; let the
// executor run until the client's coroutines have ended before destroying its io_context.

#ifndef CQRS_NET_COMMAND_CLIENT_H_
#define CQRS_NET_COMMAND_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "cqrs/core/asio.h"
#include "cqrs/core/command_status.h"
#include "cqrs/net/frame_codec.h"
#include "cqrs/v1/command.pb.h"

namespace cqrs::net {

// Reconnect delays: initial, then x multiplier per failure up to max, each randomized by
// +-jitter (a fraction). The defaults are gRPC's.
struct BackoffOptions {
  std::chrono::milliseconds initial{1'000};
  double multiplier = 1.6;
  double jitter = 0.2;
  std::chrono::milliseconds max{120'000};
};

struct CommandClientOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 0;
  std::string client_name = "cqrs-client";
  // Sent in Hello, for servers that authenticate.
  std::string auth_token;
  std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
  // Deadline of a Send that sets no timeout of its own.
  std::chrono::milliseconds default_timeout{30'000};
  // Connecting plus the Hello exchange must finish within this.
  std::chrono::milliseconds connect_timeout{5'000};
  // Sends waiting for an answer at once; beyond it Send fails with kResourceExhausted.
  std::size_t max_pending = 65'536;
  BackoffOptions backoff;
};

struct SendOptions {
  // Command id; empty: a random UUID. Reuse an id only to re-send the same command.
  std::string id;
  // Aggregate id: commands with the same subject run in order on the server.
  std::string subject;
  // Overrides CommandClientOptions::default_timeout; also sent as the command's deadline.
  std::optional<std::chrono::milliseconds> timeout;
  std::string correlation_id;
  std::string causation_id;
  std::string transaction_id;
  std::vector<std::pair<std::string, std::string>> metadata;
};

struct CommandClientStats {
  std::uint64_t connects = 0;  // Successful handshakes.
  std::uint64_t resent = 0;    // Commands re-sent after a reconnect.
  std::size_t pending = 0;
};

class CommandClient : public std::enable_shared_from_this<CommandClient> {
 public:
  // Creates a client and starts connecting in the background.
  static std::shared_ptr<CommandClient> Create(asio::any_io_executor executor,
                                               CommandClientOptions options);
  ~CommandClient();

  // Sends `command` and returns the server's response, whatever its status. Errors are
  // transport outcomes: kDeadlineExceeded (no answer in time while connected), kUnavailable
  // (no connection before the deadline), kCancelled (per-operation cancellation or Close),
  // kResourceExhausted (max_pending reached), kInvalidArgument (id already pending, or too
  // large for a frame). Supports terminal cancellation through the awaiting coroutine.
  Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> Send(
      const google::protobuf::Message& command, SendOptions options);
  Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> Send(
      const google::protobuf::Message& command) {
    return Send(command, SendOptions());
  }
  // Like Send for a fully built envelope (its id is required); `timeout` as in SendOptions.
  Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> SendEnvelope(
      v1::CommandEnvelope envelope, std::optional<std::chrono::milliseconds> timeout);
  Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> SendEnvelope(
      v1::CommandEnvelope envelope) {
    return SendEnvelope(std::move(envelope), std::nullopt);
  }

  // Send, then the typed reply: OK -> the Reply unpacked from the payload; any other status ->
  // that status as an absl::Status (REJECTED -> kFailedPrecondition, with the error code).
  template <typename Reply>
  Awaitable<absl::StatusOr<Reply>> Call(const google::protobuf::Message& command,
                                        SendOptions options) {
    return UnpackReply<Reply>(Send(command, std::move(options)));
  }
  // Overloads instead of default arguments: GCC 12 mis-destroys a default argument's temporary
  // inside a caller's co_await expression.
  template <typename Reply>
  Awaitable<absl::StatusOr<Reply>> Call(const google::protobuf::Message& command) {
    return Call<Reply>(command, SendOptions());
  }

  // Fails every pending Send with kCancelled and closes the connection for good.
  void Close();
  bool connected() const;
  CommandClientStats stats() const;
  asio::any_io_executor get_executor() const;

 private:
  struct Impl;
  explicit CommandClient(std::shared_ptr<Impl> impl);
  template <typename Reply>
  static Awaitable<absl::StatusOr<Reply>> UnpackReply(
      Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> sent) {
    auto response = co_await std::move(sent);
    if (!response.ok()) co_return response.status();
    if (absl::Status status = StatusOf(*response); !status.ok()) co_return status;
    Reply reply;
    if (!response->payload().UnpackTo(&reply)) {
      co_return absl::InvalidArgumentError(absl::StrCat("the reply is a ",
                                                        response->payload().type_url(), ", not a ",
                                                        Reply::descriptor()->full_name()));
    }
    co_return reply;
  }
  // A serialized command, from Send to its answer.
  struct Pending;
  static Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> Transmit(
      Impl* impl, v1::CommandEnvelope* envelope, std::chrono::milliseconds wait);
  static Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> Enqueue(
      Impl* impl, Pending* pending, std::chrono::milliseconds wait);
  std::shared_ptr<Impl> impl_;
};

}  // namespace cqrs::net

#endif  // CQRS_NET_COMMAND_CLIENT_H_
