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
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

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

// Memory kept from command to command by whoever runs one command after another (a command
// server session keeps one per runner), so that a typical command allocates little and leaves
// the arena untouched: the message each payload is parsed into (the one kept for its type,
// whose strings are overwritten in place), the staged events and the reply's bytes. Give it to
// one command at a time (CommandContext::set_scratch); a context leaves it empty when it ends.
// Not thread-safe.
class CommandScratch {
 public:
  // Payloads and replies larger than this use the command's arena instead, so that their
  // capacity is not kept.
  static constexpr std::size_t kMaxBytes = 4096;

  CommandScratch();
  ~CommandScratch();
  CommandScratch(const CommandScratch&) = delete;
  CommandScratch& operator=(const CommandScratch&) = delete;

  // The message kept for `prototype`'s type (made on first use; the last type used is kept),
  // or null when `payload_bytes` exceeds kMaxBytes.
  google::protobuf::Message* PayloadFor(const google::protobuf::Message& prototype,
                                        std::size_t payload_bytes);
  // `size` bytes for a reply, valid until the command ends; null when `size` exceeds kMaxBytes.
  char* ReplyBytes(std::size_t size);
  // Whether a command handed its arena out (CommandContext::arena()) since the last call: the
  // owner resets the arena only then (a reset costs a few hundred instructions).
  bool TakeArenaTouched() { return std::exchange(arena_touched_, false); }

 private:
  friend class CommandContext;
  // Payload types whose Clear leaves capacity that grows with each payload (repeated fields
  // keep their cleared elements) are parsed onto the arena instead.
  static bool Reusable(const google::protobuf::Descriptor* type, int depth = 0);

  const google::protobuf::Message* prototype_ = nullptr;  // message_'s.
  std::unique_ptr<google::protobuf::Message> message_;
  bool reusable_ = false;           // message_'s type's.
  std::deque<StagedEvent> events_;  // A deque: staged events never move.
  std::string reply_;
  bool arena_touched_ = false;
};

class CommandContext {
 public:
  // `command`, `arena` (not null: staged events and the reply live on it, unless a scratch is
  // set) and `service` must outlive the context.
  CommandContext(const v1::CommandEnvelope& command, google::protobuf::Arena* arena,
                 const ServiceInfo* service);
  ~CommandContext();
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
  // (With a CommandScratch set, the first call marks the arena for a reset after the command.)
  google::protobuf::Arena* arena() const {
    if (scratch_ != nullptr) scratch_->arena_touched_ = true;
    return arena_;
  }
  // Memory reused from the previous command (null: everything on the arena). Set it before the
  // command runs; it must outlive the context, which empties it when it ends.
  void set_scratch(CommandScratch* scratch) { scratch_ = scratch; }
  CommandScratch* scratch() const { return scratch_; }
  const ServiceInfo& service() const { return *service_; }

 private:
  const v1::CommandEnvelope& command_;
  google::protobuf::Arena* arena_;
  const ServiceInfo* service_;
  CommandScratch* scratch_ = nullptr;
  // Keeps a staged event (in the scratch, or on the arena) and lists it.
  StagedEvent* Keep(StagedEvent event);
  std::string principal_;
  absl::InlinedVector<StagedEvent*, 2> staged_;  // In the scratch, or on the arena.
};

}  // namespace cqrs

#endif  // CQRS_CORE_COMMAND_CONTEXT_H_
