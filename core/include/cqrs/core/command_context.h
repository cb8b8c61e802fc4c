// File: cqrs/core/command_context.h
//
// What a handler knows about the command it runs, and where it stages the events it produces.
//
//   Awaitable<absl::StatusOr<CreateUserReply>> Create(const CreateUser& cmd, CommandContext& ctx) {
//     UserCreated created;
//     created.set_name(cmd.name());
//     ctx.Emit(created, StreamOf("User", ctx.subject()), {.channel = "users"});
//     co_return reply;
//   }
//
// Staged events are appended to the event log only if the handler succeeds, all together, before
// the response is sent. A context belongs to one command and is used on one thread at a time.

#ifndef CQRS_CORE_COMMAND_CONTEXT_H_
#define CQRS_CORE_COMMAND_CONTEXT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include <google/protobuf/arena.h>
#include <google/protobuf/message.h>

#include "absl/base/attributes.h"
#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cqrs/core/event_sink.h"
#include "cqrs/v1/command.pb.h"
#include "cqrs/v1/event.pb.h"

namespace cqrs {

// Identifies the service that runs the handlers; copied into responses and events.
struct ServiceInfo {
  std::string service_id = "cqrs";
  std::string service_version = "0";
};

struct EmitOptions {
  // Delivery channel, e.g. "users". Empty: the event's full type name.
  absl::string_view channel;
  // Partition key. Empty: the stream id.
  absl::string_view partition_key;
  // Version of the event's schema.
  std::int32_t version = 0;
};

// The stream (aggregate instance) an event belongs to, by reference: Emit copies the strings
// into the event, so they need to live only until Emit returns.
struct StreamRef {
  StreamRef(absl::string_view entity_type_in ABSL_ATTRIBUTE_LIFETIME_BOUND,
            absl::string_view id_in ABSL_ATTRIBUTE_LIFETIME_BOUND)
      : entity_type(entity_type_in), id(id_in) {}
  // From the message form (implicit, so a v1::StreamInfo can be passed to Emit as it is).
  StreamRef(const v1::StreamInfo& stream  // NOLINT(google-explicit-constructor)
                ABSL_ATTRIBUTE_LIFETIME_BOUND)
      : entity_type(stream.entity_type()), id(stream.id()) {}

  absl::string_view entity_type;
  absl::string_view id;
};

inline StreamRef StreamOf(absl::string_view entity_type ABSL_ATTRIBUTE_LIFETIME_BOUND,
                          absl::string_view id ABSL_ATTRIBUTE_LIFETIME_BOUND) {
  return StreamRef(entity_type, id);
}

// Payload messages kept from command to command by whoever runs one command after another (a
// command server session does, per runner): a payload is parsed into the message kept for its
// type, which overwrites its strings in place instead of allocating them again. A message is
// handed out for the next command only after the previous one completed. Not thread-safe.
class PayloadCache {
 public:
  // Payloads larger than this are parsed onto the command's arena instead, so that their
  // capacity is not kept.
  static constexpr std::size_t kMaxBytes = 4096;

  PayloadCache();
  ~PayloadCache();
  PayloadCache(const PayloadCache&) = delete;
  PayloadCache& operator=(const PayloadCache&) = delete;

  // The message kept for `prototype`'s type (made on first use; the last type used is kept),
  // or null when `payload_bytes` exceeds kMaxBytes.
  google::protobuf::Message* For(const google::protobuf::Message& prototype,
                                 std::size_t payload_bytes);

 private:
  const google::protobuf::Message* prototype_ = nullptr;  // message_'s.
  std::unique_ptr<google::protobuf::Message> message_;
};

class CommandContext {
 public:
  // `command`, `arena` (not null: staged events and the reply live on it) and `service` must
  // outlive the context.
  CommandContext(const v1::CommandEnvelope& command, google::protobuf::Arena* arena,
                 const ServiceInfo* service);
  CommandContext(const CommandContext&) = delete;
  CommandContext& operator=(const CommandContext&) = delete;

  const v1::CommandEnvelope& envelope() const { return command_; }
  const std::string& id() const { return command_.id(); }
  const std::string& subject() const { return command_.subject(); }
  const std::string& correlation_id() const { return command_.correlation_id(); }
  // The command's deadline, if it has one.
  std::optional<absl::Time> deadline() const;
  // Metadata value for `key`, or "" when absent.
  absl::string_view Metadata(absl::string_view key) const;

  // Who sent the command, as established by the server's authenticator (empty: anonymous).
  // Interceptors may refine it.
  const std::string& principal() const { return principal_; }
  void set_principal(std::string principal) { principal_ = std::move(principal); }

  // Stages `event` for `stream`: serializes its cqrs.v1.EventEnvelope once (the event packed in
  // an Any, ids, type, timestamp, channel; the sink adds offset and epoch). Returns the staged
  // event (its Decode() shows the envelope), valid until the command completes.
  const StagedEvent& Emit(const google::protobuf::Message& event, StreamRef stream,
                          const EmitOptions& options = {});
  // Stages `envelope` as it is, for events that need fields Emit does not set (their own id,
  // type or transaction id): nothing is filled in; offset and epoch are left to the sink.
  const StagedEvent& Stage(const v1::EventEnvelope& envelope);
  std::span<StagedEvent* const> staged_events() const { return staged_; }
  void DiscardStagedEvents() { staged_.clear(); }

  // Scratch arena that lives as long as the command: messages created on it need no delete.
  google::protobuf::Arena* arena() const { return arena_; }
  // Where the router parses the payload (null: onto the arena). Must outlive the context.
  void set_payload_cache(PayloadCache* cache) { payload_cache_ = cache; }
  PayloadCache* payload_cache() const { return payload_cache_; }
  const ServiceInfo& service() const { return *service_; }

 private:
  const v1::CommandEnvelope& command_;
  google::protobuf::Arena* arena_;
  const ServiceInfo* service_;
  PayloadCache* payload_cache_ = nullptr;
  std::string principal_;
  absl::InlinedVector<StagedEvent*, 2> staged_;  // On the arena.
};

}  // namespace cqrs

#endif  // CQRS_CORE_COMMAND_CONTEXT_H_
