// File: cqrs/net/event_subscriber.h
//
// The native event listener: connects to an EventGateway over WebSocket (`ws://host:port/events`),
// subscribes to channels, and calls typed handlers for every event, in offset order. It tracks
// its position in the event log (last_offset(), epoch()); when the connection drops it
// reconnects with backoff and resumes after the last delivered offset, with no gap and no
// duplicate. Reached(offset) gives read-your-writes to a client holding a command's receipt.
//
//   asio::io_context io;
//   CQRS_ASSIGN_OR_RETURN(std::shared_ptr<EventSubscriber> subscriber,
//                         EventSubscriber::Create(io.get_executor(),
//                                                 {.url = "ws://127.0.0.1:8080/events",
//                                                  .channels = {"users"}}));
//   subscriber->On<users::v1::UserCreated>(
//       [](const users::v1::UserCreated& created, const v1::EventEnvelope& event) {
//         std::cout << event.offset() << ": user " << created.name() << " created\n";
//       });
//   co_spawn(io, subscriber->Run(), [](std::exception_ptr, absl::Status status) { ... });
//   // In a coroutine on `io`, after a command's receipt (its event_offsets and event_epoch):
//   absl::Status seen = co_await subscriber->Reached(last_offset, receipt.event_epoch(), 5s);
//   io.run();
//
// Delivery: for each event, the handlers registered with On<T>() for its payload type (found by
// the payload's type URL; the payload is parsed once, however many handlers there are), in
// registration order, then every OnAny() handler. Handlers are synchronous and run on the
// subscriber's executor; they must not block (co_spawn asynchronous work). A handler that throws
// is logged (cqrs/core/log.h) and counted; the other handlers and the subscriber go on.
//
// Position: last_offset() is the offset up to which every event of the subscribed channels has
// been delivered, or that precedes where the subscription started (a subscription without
// `from_offset` starts at the log's head). Offsets count within an epoch; a new epoch means the
// server lost its history (an in-memory log restarted), see OffsetUnavailablePolicy.
//
// Concurrency: a subscriber lives on one executor, which must not run handlers concurrently (an
// io_context run by one thread, or a strand). Call every member only from that executor (from
// elsewhere, post to get_executor()). Let the executor run until Run() has returned before
// destroying it; destroying the last reference stops the subscriber.

#ifndef CQRS_NET_EVENT_SUBSCRIBER_H_
#define CQRS_NET_EVENT_SUBSCRIBER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cqrs/core/asio.h"
#include "cqrs/net/command_client.h"
#include "cqrs/v1/event.pb.h"
#include "cqrs/v1/gateway.pb.h"

namespace cqrs::net {

enum class EventFormat {
  kProto,  // Subprotocol "cqrs.v1.proto": binary frames, serialized messages.
  // Subprotocol "cqrs.v1.json": text frames, protobuf's canonical JSON. Every payload type must
  // be linked into the program (JSON names it by type URL); an event whose payload type is
  // unknown cannot be parsed and is skipped with a warning. For debugging and interoperability.
  kJson,
};

// What to do when the gateway cannot resume where the subscriber is (OFFSET_UNAVAILABLE): the
// events after last_offset() are no longer retained, or the log's epoch changed.
enum class OffsetUnavailablePolicy {
  // Run() returns kOutOfRange, naming the position and what the gateway still holds.
  kFail,
  // Skip to the earliest retained event (of the new epoch, when it changed), report the gap to
  // OnGap() and go on.
  kFromEarliest,
};

struct EventSubscriberOptions {
  // "ws://host[:port][/path][?query]"; port 80 when absent, path "/events" when empty.
  // wss:// is not supported yet (kInvalidArgument).
  std::string url = "ws://127.0.0.1:8080/events";
  // Channel names or patterns: "users", "users.*", "*" (see cqrs/core/channel_pattern.h).
  std::vector<std::string> channels = {"*"};
  // Start after this offset of `epoch` (replaying what the gateway retains); unset: live events
  // only, from the log's head at the time of the first subscription.
  std::optional<std::uint64_t> from_offset;
  // The epoch `from_offset` belongs to; 0: whichever the gateway has.
  std::uint64_t epoch = 0;
  EventFormat format = EventFormat::kProto;
  // Names the subscription on the wire (non-empty).
  std::string subscription_id = "cqrs-subscriber";
  OffsetUnavailablePolicy on_offset_unavailable = OffsetUnavailablePolicy::kFail;
  // Delays between connection attempts. A subscription that lived at least `initial` resets the
  // backoff and reconnects at once.
  BackoffOptions reconnect;
  // Resolving, connecting, the WebSocket handshake and the Subscribed answer must all finish
  // within this; it also bounds the closing handshake.
  std::chrono::milliseconds connect_timeout{10'000};
  // A connection that received nothing (pings included) for this long is pinged, then closed
  // and re-established; 0: never. Keep it above the gateway's idle_timeout / 2 (its ping period).
  std::chrono::milliseconds idle_timeout{60'000};
  // Largest message accepted from the gateway. A larger one cannot be skipped without losing
  // events: Run() returns kResourceExhausted.
  std::size_t max_message_bytes = std::size_t{16} << 20;
};

// A jump over events that were not delivered (OffsetUnavailablePolicy::kFromEarliest).
struct EventGap {
  // Where the subscriber was: events of `epoch` after `after_offset` are missing.
  std::uint64_t epoch = 0;
  std::uint64_t after_offset = 0;
  // Where delivery goes on: from `earliest_offset` of `new_epoch`. `new_epoch != epoch` when the
  // log's history was lost.
  std::uint64_t new_epoch = 0;
  std::uint64_t earliest_offset = 0;
  // The gateway's explanation.
  std::string message;
};

struct EventSubscriberStats {
  std::uint64_t subscriptions = 0;   // Successful (re)subscriptions.
  std::uint64_t events = 0;          // Events delivered to the handlers.
  std::uint64_t duplicates = 0;      // Events at or before last_offset(), skipped.
  std::uint64_t gaps = 0;            // Reported to OnGap().
  std::uint64_t handler_errors = 0;  // Handlers that threw, payloads that did not parse.
};

class EventSubscriber {
 public:
  // kInvalidArgument for a malformed or non-ws:// URL, no or invalid channel patterns, an empty
  // subscription id or a zero max_message_bytes. Connecting starts with Run().
  static absl::StatusOr<std::shared_ptr<EventSubscriber>> Create(asio::any_io_executor executor,
                                                                 EventSubscriberOptions options);
  ~EventSubscriber();
  EventSubscriber(const EventSubscriber&) = delete;
  EventSubscriber& operator=(const EventSubscriber&) = delete;

  // Registers `handler` for events whose payload is an `Event`; several per type allowed.
  // `handler` is callable as handler(const Event&, const v1::EventEnvelope&) or
  // handler(const Event&); its references are valid during the call only. Register before Run().
  template <typename Event, typename Handler>
  void On(Handler handler) {
    static_assert(std::is_base_of_v<google::protobuf::Message, Event>,
                  "On<Event>: Event must be a generated protobuf message type");
    if constexpr (std::is_invocable_v<Handler&, const Event&, const v1::EventEnvelope&>) {
      static_assert(
          !IsAwaitable<
              std::invoke_result_t<Handler&, const Event&, const v1::EventEnvelope&>>::value,
          "On<Event>(handler): handlers are synchronous; co_spawn asynchronous work");
      Register(Event::descriptor(), &Event::default_instance(),
               [handler = std::move(handler)](const google::protobuf::Message& event,
                                              const v1::EventEnvelope& envelope) mutable {
                 handler(static_cast<const Event&>(event), envelope);
               });
    } else if constexpr (std::is_invocable_v<Handler&, const Event&>) {
      static_assert(!IsAwaitable<std::invoke_result_t<Handler&, const Event&>>::value,
                    "On<Event>(handler): handlers are synchronous; co_spawn asynchronous work");
      Register(Event::descriptor(), &Event::default_instance(),
               [handler = std::move(handler)](const google::protobuf::Message& event,
                                              const v1::EventEnvelope&) mutable {
                 handler(static_cast<const Event&>(event));
               });
    } else {
      static_assert(std::is_invocable_v<Handler&, const Event&>,
                    "On<Event>(handler): expected a handler callable as "
                    "handler(const Event&, const cqrs::v1::EventEnvelope&) or "
                    "handler(const Event&)");
    }
  }

  // Registers a handler called with every event, after the typed ones. Register before Run().
  void OnAny(std::function<void(const v1::EventEnvelope&)> handler);
  // Called after every successful (re)subscription, with the gateway's answer, before the
  // events it replays are delivered.
  void OnConnected(std::function<void(const v1::Subscribed&)> handler);
  // Called when a connection, or an attempt to connect, ends before Stop(); the status says why
  // (kUnavailable, or the error Run() is about to return).
  void OnDisconnected(std::function<void(const absl::Status&)> handler);
  // Called when OffsetUnavailablePolicy::kFromEarliest skips events.
  void OnGap(std::function<void(const EventGap&)> handler);

  // Connects, subscribes and delivers events until Stop(), reconnecting with backoff. Returns OK
  // after Stop(); kOutOfRange when the position cannot be resumed under
  // OffsetUnavailablePolicy::kFail; kFailedPrecondition when the server refuses the WebSocket
  // upgrade with a 4xx status or without the requested subprotocol, or when Run() was called
  // before; kInvalidArgument when the gateway rejects the subscription; kResourceExhausted for
  // a message over max_message_bytes; kCancelled after per-operation cancellation (terminal,
  // which acts as Stop() without the close handshake). One Run() per subscriber.
  Awaitable<absl::Status> Run();

  // Ends Run() (closing the connection with 1000) and completes every Reached() with
  // kCancelled. Final; idempotent; may be called from a handler.
  void Stop();

  // Completes once the event at `offset` of `epoch` was delivered to the handlers, i.e. once
  // last_offset() >= offset in that epoch; at once when it already was (and for offset 0).
  // `epoch` 0, and the form without it, mean the current epoch: the subscriber's at the time of
  // the call, or the first one it learns of (options.epoch, Subscribed) when it has none yet.
  // Errors: kDeadlineExceeded after `timeout`; kCancelled on Stop() or per-operation
  // cancellation (terminal); kDataLoss when `offset` was skipped by a gap; kAborted when `epoch`
  // was replaced by a new one (the server lost its history); Run()'s error when it ended. Only
  // events of the subscribed channels advance the position: wait for offsets of those channels
  // (a command's receipt names the offsets of its events). Any number may wait at once.
  Awaitable<absl::Status> Reached(std::uint64_t offset, std::chrono::milliseconds timeout);
  Awaitable<absl::Status> Reached(std::uint64_t offset, std::uint64_t epoch,
                                  std::chrono::milliseconds timeout);

  // 0 until a position is known (from_offset, or the first subscription).
  std::uint64_t last_offset() const;
  std::uint64_t epoch() const;
  // Subscribed and reading.
  bool connected() const;
  EventSubscriberStats stats() const;
  const EventSubscriberOptions& options() const;
  asio::any_io_executor get_executor() const;

 private:
  struct Impl;
  using TypedHandler =
      std::function<void(const google::protobuf::Message&, const v1::EventEnvelope&)>;
  template <typename T>
  struct IsAwaitable : std::false_type {};
  template <typename T, typename Executor>
  struct IsAwaitable<asio::awaitable<T, Executor>> : std::true_type {};

  explicit EventSubscriber(std::shared_ptr<Impl> impl);
  void Register(const google::protobuf::Descriptor* type,
                const google::protobuf::Message* prototype, TypedHandler handler);
  static Awaitable<absl::Status> RunOn(Impl* impl);
  static Awaitable<absl::Status> WaitFor(Impl* impl, std::uint64_t offset, std::uint64_t epoch,
                                         std::chrono::milliseconds timeout);

  std::shared_ptr<Impl> impl_;
};

}  // namespace cqrs::net

#endif  // CQRS_NET_EVENT_SUBSCRIBER_H_
