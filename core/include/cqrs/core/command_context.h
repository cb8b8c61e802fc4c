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

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <google/protobuf/arena.h>
#include <google/protobuf/message.h>

#include "absl/container/inlined_vector.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
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

inline v1::StreamInfo StreamOf(absl::string_view entity_type, absl::string_view id) {
  v1::StreamInfo stream;
  stream.set_entity_type(std::string(entity_type));
  stream.set_id(std::string(id));
  return stream;
}

class CommandContext {
 public:
  // `command` and `arena` must outlive the context; `service` too.
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

  // Stages `event` (copied, packed into an Any) for `stream`. Returns the staged envelope for
  // callers that want to set more fields. Valid until the command completes.
  v1::EventEnvelope& Emit(const google::protobuf::Message& event, const v1::StreamInfo& stream,
                          const EmitOptions& options = {});
  std::span<v1::EventEnvelope* const> staged_events() const { return staged_; }
  void DiscardStagedEvents() { staged_.clear(); }

  // Scratch arena that lives as long as the command: messages created on it need no delete.
  google::protobuf::Arena* arena() const { return arena_; }
  const ServiceInfo& service() const { return *service_; }

 private:
  const v1::CommandEnvelope& command_;
  google::protobuf::Arena* arena_;
  const ServiceInfo* service_;
  std::string principal_;
  absl::InlinedVector<v1::EventEnvelope*, 2> staged_;
};

}  // namespace cqrs

#endif  // CQRS_CORE_COMMAND_CONTEXT_H_
