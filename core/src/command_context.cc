#include "cqrs/core/command_context.h"

#include <cassert>

#include "absl/strings/str_cat.h"
#include "cqrs/core/any_util.h"
#include "cqrs/core/time_util.h"
#include "cqrs/core/wire_writer.h"

namespace cqrs {

CommandScratch::CommandScratch() = default;
CommandScratch::~CommandScratch() = default;

char* CommandScratch::ReplyBytes(std::size_t size) {
  if (size > kMaxBytes) return nullptr;
  reply_.resize(size);
  return reply_.data();
}

google::protobuf::Message* CommandScratch::PayloadFor(const google::protobuf::Message& prototype,
                                                      std::size_t payload_bytes) {
  if (payload_bytes > kMaxBytes) return nullptr;
  if (prototype_ != &prototype) {
    prototype_ = &prototype;
    reusable_ = Reusable(prototype.GetDescriptor());
    message_.reset(reusable_ ? prototype.New() : nullptr);
  }
  return message_.get();
}

bool CommandScratch::Reusable(const google::protobuf::Descriptor* type, int depth) {
  // Singular submessages are cleared in place only when they have presence bits (proto2);
  // proto3's are freed by Clear. Either way, a repeated field below them would keep its
  // cleared elements. Deeply nested or recursive types are simply not reused.
  if (depth > 8) return false;
  for (int i = 0; i < type->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = type->field(i);
    if (field->is_repeated()) return false;  // Maps too.
    if (field->message_type() != nullptr && !Reusable(field->message_type(), depth + 1)) {
      return false;
    }
  }
  return true;
}

CommandContext::CommandContext(const v1::CommandEnvelope& command, google::protobuf::Arena* arena,
                               const ServiceInfo* service)
    : command_(command), arena_(arena), service_(service) {
  assert(arena_ != nullptr);
}

CommandContext::~CommandContext() {
  if (scratch_ != nullptr) scratch_->events_.clear();
}

StagedEvent* CommandContext::Keep(StagedEvent event) {
  StagedEvent* staged =
      scratch_ != nullptr ? &scratch_->events_.emplace_back(std::move(event))
                          : google::protobuf::Arena::Create<StagedEvent>(arena_, std::move(event));
  staged_.push_back(staged);
  return staged;
}

const StagedEvent& CommandContext::Stage(const v1::EventEnvelope& envelope) {
  return *Keep(StagedEvent::From(envelope));
}

std::optional<absl::Time> CommandContext::deadline() const {
  if (!command_.has_deadline()) return std::nullopt;
  return FromTimestamp(command_.deadline());
}

absl::string_view CommandContext::Metadata(absl::string_view key) const {
  const auto& metadata = command_.metadata();
  const auto it = metadata.find(std::string(key));
  return it == metadata.end() ? absl::string_view() : absl::string_view(it->second);
}

const StagedEvent& CommandContext::Emit(const google::protobuf::Message& event, StreamRef stream,
                                        const EmitOptions& options) {
  // The envelope is written straight from its parts, field by field in field-number order
  // (the bytes protobuf itself would write): no EventEnvelope message, whose string fields
  // would each be a heap string, and no second serialization in the log.
  using EventFields = v1::EventEnvelope;
  const google::protobuf::Descriptor* descriptor = event.GetDescriptor();
  const std::string& type = descriptor->full_name();
  const std::string& type_url = TypeUrlOf(descriptor);
  const absl::AlphaNum index(staged_.size());
  const std::size_t id_size = command_.id().size() + 1 + index.size();  // "<command id>/<index>"
  const TimestampParts now = ToTimestampParts(Now());
  const std::size_t stream_size =
      wire::StringField(1, stream.id) + wire::StringField(2, stream.entity_type);
  const std::size_t payload_size = event.ByteSizeLong();  // Caches the sizes for the write below.
  const std::size_t any_size =
      wire::StringField(1, type_url) + (payload_size == 0 ? 0 : wire::LengthField(2, payload_size));
  const absl::string_view partition_key =
      options.partition_key.empty() ? stream.id : options.partition_key;
  const absl::string_view channel = options.channel.empty() ? type : options.channel;
  const std::string& correlation_id =
      command_.correlation_id().empty() ? command_.id() : command_.correlation_id();
  const std::string& service_id = service_->service_id;
  const std::string& service_version = service_->service_version;

  const std::size_t size =
      wire::LengthField(EventFields::kIdFieldNumber, id_size) +
      wire::StringField(EventFields::kTransactionIdFieldNumber, command_.transaction_id()) +
      wire::TimestampField(EventFields::kTimestampFieldNumber, now.seconds, now.nanos) +
      wire::StringField(EventFields::kTypeFieldNumber, type) +
      wire::VarintField(EventFields::kVersionFieldNumber, wire::AsVarint(options.version)) +
      wire::LengthField(EventFields::kStreamInfoFieldNumber, stream_size) +
      wire::LengthField(EventFields::kPayloadFieldNumber, any_size) +
      wire::StringField(EventFields::kPartitionKeyFieldNumber, partition_key) +
      wire::StringField(EventFields::kProducingServiceIdFieldNumber, service_id) +
      wire::StringField(EventFields::kProducingServiceVersionFieldNumber, service_version) +
      wire::StringField(EventFields::kChannelFieldNumber, channel) +
      wire::StringField(EventFields::kCausationIdFieldNumber, command_.id()) +
      wire::StringField(EventFields::kCorrelationIdFieldNumber, correlation_id);
  std::string bytes;
  bytes.reserve(size + StagedEvent::kPositionFieldsMaxBytes);  // The sink appends these.
  bytes.resize(size);

  wire::Writer out(bytes.data());
  out.Length(EventFields::kIdFieldNumber, id_size);
  out.Raw(command_.id());
  out.Raw("/");
  out.Raw(index.Piece());
  out.String(EventFields::kTransactionIdFieldNumber, command_.transaction_id());
  out.Timestamp(EventFields::kTimestampFieldNumber, now.seconds, now.nanos);
  out.String(EventFields::kTypeFieldNumber, type);
  out.Varint(EventFields::kVersionFieldNumber, wire::AsVarint(options.version));
  out.Length(EventFields::kStreamInfoFieldNumber, stream_size);
  out.String(1, stream.id);
  out.String(2, stream.entity_type);
  out.Length(EventFields::kPayloadFieldNumber, any_size);
  out.String(1, type_url);
  if (payload_size != 0) {
    out.Length(2, payload_size);
    event.SerializeWithCachedSizesToArray(out.Reserve(payload_size));
  }
  out.String(EventFields::kPartitionKeyFieldNumber, partition_key);
  out.String(EventFields::kProducingServiceIdFieldNumber, service_id);
  out.String(EventFields::kProducingServiceVersionFieldNumber, service_version);
  out.String(EventFields::kChannelFieldNumber, channel);
  out.String(EventFields::kCausationIdFieldNumber, command_.id());
  out.String(EventFields::kCorrelationIdFieldNumber, correlation_id);
  assert(out.position() == bytes.data() + bytes.size());

  return *Keep(StagedEvent(std::move(bytes), std::string(channel)));
}

}  // namespace cqrs
