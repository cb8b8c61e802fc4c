#include "cqrs/core/command_context.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cqrs/core/any_util.h"
#include "cqrs/core/time_util.h"

namespace cqrs {

CommandContext::CommandContext(const v1::CommandEnvelope& command, google::protobuf::Arena* arena,
                               const ServiceInfo* service)
    : command_(command), arena_(arena), service_(service) {}

std::optional<absl::Time> CommandContext::deadline() const {
  if (!command_.has_deadline()) return std::nullopt;
  return FromTimestamp(command_.deadline());
}

absl::string_view CommandContext::Metadata(absl::string_view key) const {
  const auto& metadata = command_.metadata();
  const auto it = metadata.find(std::string(key));
  return it == metadata.end() ? absl::string_view() : absl::string_view(it->second);
}

v1::EventEnvelope& CommandContext::Emit(const google::protobuf::Message& event,
                                        const v1::StreamInfo& stream, const EmitOptions& options) {
  auto* envelope = google::protobuf::Arena::CreateMessage<v1::EventEnvelope>(arena_);
  const std::string& type = event.GetDescriptor()->full_name();
  absl::StrAppend(envelope->mutable_id(), command_.id(), "/", staged_.size());
  envelope->set_transaction_id(command_.transaction_id());
  SetTimestamp(Now(), *envelope->mutable_timestamp());
  envelope->set_type(type);
  envelope->set_version(options.version);
  *envelope->mutable_stream_info() = stream;
  PackAny(event, *envelope->mutable_payload());
  envelope->set_partition_key(options.partition_key.empty() ? stream.id()
                                                            : std::string(options.partition_key));
  envelope->set_producing_service_id(service_->service_id);
  envelope->set_producing_service_version(service_->service_version);
  envelope->set_channel(options.channel.empty() ? type : std::string(options.channel));
  envelope->set_causation_id(command_.id());
  envelope->set_correlation_id(command_.correlation_id().empty() ? command_.id()
                                                                 : command_.correlation_id());
  staged_.push_back(envelope);
  return *envelope;
}

}  // namespace cqrs
