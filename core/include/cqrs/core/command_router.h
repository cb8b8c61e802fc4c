// File: cqrs/core/command_router.h
//
// Typed command handlers, found by the payload's type, wrapped by interceptors.
//
//   CommandRouter router({.service_id = "user-service"});
//   CQRS_RETURN_IF_ERROR(router.Handle<CreateUser>(
//       [&users](const CreateUser& cmd, CommandContext& ctx)
//           -> Awaitable<absl::StatusOr<CreateUserReply>> {
//         if (cmd.name().empty()) co_return Rejected("USER_NAME_EMPTY", "name is empty");
//         ...
//         co_return reply;
//       }));
//
// A handler is a coroutine `(const Command&, CommandContext&)` returning Awaitable<absl::Status>
// or Awaitable<absl::StatusOr<Reply>> (Reply: a protobuf message, sent back packed in an Any).
// Handlers and interceptors are stored in the router and must stay valid as long as it; they
// run concurrently on any server thread, so state they share needs its own synchronization
// (commands with the same subject never run concurrently: see CommandProcessor).
// Register everything before the router serves commands; Dispatch is then thread-safe.

#ifndef CQRS_CORE_COMMAND_ROUTER_H_
#define CQRS_CORE_COMMAND_ROUTER_H_

#include <atomic>
#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <google/protobuf/message.h>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cqrs/core/asio.h"
#include "cqrs/core/command_context.h"
#include "cqrs/core/command_status.h"
#include "cqrs/core/event_sink.h"
#include "cqrs/core/interceptor.h"
#include "cqrs/core/striped_counter.h"
#include "cqrs/v1/command.pb.h"

namespace cqrs {
namespace internal {

template <typename T>
struct AwaitableValue : std::false_type {};
template <typename T, typename Executor>
struct AwaitableValue<asio::awaitable<T, Executor>> : std::true_type {
  using type = T;
};

template <typename T>
struct StatusOrValue : std::false_type {};
template <typename T>
struct StatusOrValue<absl::StatusOr<T>> : std::true_type {
  using type = T;
};

// Checks a handler's form with one readable message per mistake, without cascading errors.
template <typename Command, typename Handler>
constexpr bool CheckHandler() {
  static_assert(std::is_base_of_v<google::protobuf::Message, Command>,
                "Handle<Command>: Command must be a generated protobuf message type");
  if constexpr (!std::is_invocable_v<Handler&, const Command&, CommandContext&>) {
    static_assert(std::is_invocable_v<Handler&, const Command&, CommandContext&>,
                  "Handle<Command>(handler): expected a handler callable as "
                  "handler(const Command&, CommandContext&) returning "
                  "Awaitable<absl::Status> or Awaitable<absl::StatusOr<Reply>>");
    return false;
  } else {
    using Result = std::invoke_result_t<Handler&, const Command&, CommandContext&>;
    if constexpr (!AwaitableValue<Result>::value) {
      static_assert(AwaitableValue<Result>::value,
                    "Handle<Command>(handler): the handler must be a coroutine returning "
                    "Awaitable<absl::Status> or Awaitable<absl::StatusOr<Reply>>");
      return false;
    } else {
      using Value = typename AwaitableValue<Result>::type;
      if constexpr (std::is_same_v<Value, absl::Status>) {
        return true;
      } else if constexpr (!StatusOrValue<Value>::value) {
        static_assert(StatusOrValue<Value>::value,
                      "Handle<Command>(handler): the handler's coroutine must yield "
                      "absl::Status or absl::StatusOr<Reply>");
        return false;
      } else {
        static_assert(
            std::is_base_of_v<google::protobuf::Message, typename StatusOrValue<Value>::type>,
            "Handle<Command>(handler): in Awaitable<absl::StatusOr<Reply>>, Reply must be a "
            "protobuf message");
        return true;
      }
    }
  }
}

}  // namespace internal

class CommandRouter {
 public:
  // A handler's reply, serialized once, on the command's arena (valid as long as the arena).
  struct Reply {
    const google::protobuf::Descriptor* type = nullptr;  // Null: the handler returned no reply.
    absl::string_view bytes;
  };
  // Runs a parsed command; sets `reply` on success when the handler returns a reply message.
  using Invoker = std::function<Awaitable<absl::Status>(const google::protobuf::Message& command,
                                                        CommandContext& ctx, Reply& reply)>;

  explicit CommandRouter(ServiceInfo service = {});
  ~CommandRouter();
  CommandRouter(const CommandRouter&) = delete;
  CommandRouter& operator=(const CommandRouter&) = delete;

  // Registers `handler` for commands whose payload is a `Command`. kAlreadyExists when that type
  // already has a handler. A handler of the wrong form fails to compile with a message naming
  // the expected one.
  template <typename Command, typename Handler>
  [[nodiscard]] absl::Status Handle(Handler handler) {
    if constexpr (internal::CheckHandler<Command, Handler>()) {
      return Register(Command::descriptor()->full_name(), &Command::default_instance(),
                      [handler = std::move(handler)](const google::protobuf::Message& command,
                                                     CommandContext& ctx, Reply& reply) mutable {
                        return Invoke<Command>(handler, command, ctx, reply);
                      });
    } else {
      return absl::InvalidArgumentError("unreachable");
    }
  }

  // Adds an interceptor at the end of the chain.
  void Use(std::shared_ptr<Interceptor> interceptor);
  // Adds a coroutine `(const google::protobuf::Message&, CommandContext&, Next)` returning
  // Awaitable<absl::Status> as an interceptor.
  template <typename Fn>
  requires std::is_invocable_r_v<Awaitable<absl::Status>, Fn&, const google::protobuf::Message&,
                                 CommandContext&, Next> void
  Use(Fn fn) {
    struct FunctionInterceptor final : Interceptor {
      explicit FunctionInterceptor(Fn f) : fn(std::move(f)) {}
      Awaitable<absl::Status> Intercept(const google::protobuf::Message& command,
                                        CommandContext& ctx, Next next) override {
        return fn(command, ctx, next);
      }
      Fn fn;
    };
    Use(std::make_shared<FunctionInterceptor>(std::move(fn)));
  }

  // Where the events of successful commands are appended. Must outlive the router's use.
  // Without a sink, a command that emits events fails with INTERNAL (nothing is dropped silently).
  void set_event_sink(EventSink* sink) { sink_ = sink; }
  EventSink* event_sink() const { return sink_; }

  // True when a handler is registered for `full_type_name` (e.g. "users.v1.CreateUser").
  bool Has(absl::string_view full_type_name) const;
  const ServiceInfo& service() const { return service_; }

  // Runs one command end to end and fills `response` completely: header fields (command id,
  // response id, timestamp, service id, transaction id), status and error, reply payload and
  // event offsets. Outcomes: missing id or payload, or a payload that does not parse -> INVALID;
  // unknown type -> NOT_FOUND; deadline passed (before or while running) -> DEADLINE_EXCEEDED
  // (a handler still suspended at its deadline is stopped by cancelling the awaiting coroutine:
  // per-operation cancellation reaches the operation the handler awaits);
  // handler error -> its status (domain errors: REJECTED); handler throws -> INTERNAL. Staged
  // events are appended to the sink only on success, before this returns. Never throws.
  // `ctx` and `response` must stay valid until the returned awaitable completes.
  Awaitable<void> Dispatch(CommandContext& ctx, v1::CommandResponseEnvelope& response) const;
  // The same, writing the serialized response into `out` (replacing what it held; what the
  // command server sends and remembers): an OK response is written straight from its parts,
  // without building the message. Returns the response's status.
  Awaitable<CommandStatus> DispatchSerialized(CommandContext& ctx, std::string& out) const;

  // Fills the response fields that do not depend on the outcome: command id, transaction id,
  // service id, a fresh response id and the current time.
  void FillHeader(const v1::CommandEnvelope& command, v1::CommandResponseEnvelope& response) const;

 private:
  struct Entry {
    const google::protobuf::Message* prototype;
    Invoker invoke;
  };
  friend class Next;
  friend struct Invocation;

  absl::Status Register(const std::string& type, const google::protobuf::Message* prototype,
                        Invoker invoke);
  // The synchronous checks before a handler runs: id, payload, handler lookup, deadline, parse.
  // Sets `entry` and `type` on the way.
  absl::StatusOr<google::protobuf::Message*> Prepare(CommandContext& ctx, const Entry*& entry,
                                                     absl::string_view& type) const;
  // Serializes `reply` onto the command's arena.
  static void KeepReply(const google::protobuf::Message& reply, CommandContext& ctx, Reply& out);
  // A handler's (or interceptor's) exception as the command's INTERNAL status.
  static absl::Status HandlerFailed(std::exception_ptr error, absl::string_view type);
  // Everything but the response itself: checks, interceptors and handler, deadline, event
  // append. Returns the outcome; `reply` and `receipt` are set only when it is OK.
  Awaitable<absl::Status> Execute(CommandContext& ctx, Reply& reply, AppendReceipt& receipt) const;
  // After the handler chain returned `status`: the deadline check, then the event append.
  // Returns the outcome; `reply` and `receipt` are kept only when it is OK.
  absl::Status Settle(CommandContext& ctx, absl::Status status, Reply& reply,
                      AppendReceipt& receipt) const;
  // What a response says about itself, fixed when the command starts: its id and time.
  struct Header {
    std::uint64_t number;  // The response id is "<prefix>-<number>".
    absl::Time time;
  };
  Header NextHeader() const;
  void FillHeader(const v1::CommandEnvelope& command, const Header& header,
                  v1::CommandResponseEnvelope& response) const;
  // The response as a message (every outcome).
  void Render(const v1::CommandEnvelope& command, const Header& header, const absl::Status& status,
              const Reply& reply, const AppendReceipt& receipt,
              v1::CommandResponseEnvelope& response) const;

  template <typename Command, typename Handler>
  static Awaitable<absl::Status> Invoke(Handler& handler, const google::protobuf::Message& command,
                                        CommandContext& ctx, Reply& reply) {
    auto result = co_await handler(static_cast<const Command&>(command), ctx);
    if constexpr (std::is_same_v<decltype(result), absl::Status>) {
      co_return result;
    } else {
      if (!result.ok()) co_return result.status();
      KeepReply(*result, ctx, reply);
      co_return absl::OkStatus();
    }
  }

  ServiceInfo service_;
  std::string response_id_prefix_;
  mutable StripedCounter response_ids_;
  absl::flat_hash_map<std::string, Entry> handlers_;
  std::vector<std::shared_ptr<Interceptor>> interceptors_;
  EventSink* sink_ = nullptr;
};

}  // namespace cqrs

#endif  // CQRS_CORE_COMMAND_ROUTER_H_
