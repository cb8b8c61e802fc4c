#include "command_encode.h"

#include <cassert>

#include "cqrs/core/any_util.h"
#include "cqrs/core/wire_writer.h"
#include "cqrs/v1/command.pb.h"

namespace cqrs::net::internal {

std::string EncodeCommand(const CommandFields& fields) {
  using Fields = v1::CommandEnvelope;
  const std::string& type_url = TypeUrlOf(fields.payload->GetDescriptor());
  const std::size_t value_size = fields.payload->ByteSizeLong();  // Cached for the write below.
  const std::size_t any_size =
      wire::StringField(1, type_url) + (value_size == 0 ? 0 : wire::LengthField(2, value_size));
  const std::size_t size =
      wire::StringField(Fields::kIdFieldNumber, fields.id) +
      wire::TimestampField(Fields::kTimestampFieldNumber, fields.timestamp.seconds,
                           fields.timestamp.nanos) +
      wire::StringField(Fields::kServiceIdFieldNumber, fields.service_id) +
      wire::StringField(Fields::kTransactionIdFieldNumber, fields.transaction_id) +
      wire::StringField(Fields::kTypeFieldNumber, fields.type) +
      wire::StringField(Fields::kSubjectFieldNumber, fields.subject) +
      wire::LengthField(Fields::kPayloadFieldNumber, any_size) +
      (fields.deadline ? wire::TimestampField(Fields::kDeadlineFieldNumber,
                                              fields.deadline->seconds, fields.deadline->nanos)
                       : 0) +
      wire::StringField(Fields::kCorrelationIdFieldNumber, fields.correlation_id) +
      wire::StringField(Fields::kCausationIdFieldNumber, fields.causation_id);
  std::string bytes(size, '\0');
  wire::Writer out(bytes.data());
  out.String(Fields::kIdFieldNumber, fields.id);
  out.Timestamp(Fields::kTimestampFieldNumber, fields.timestamp.seconds, fields.timestamp.nanos);
  out.String(Fields::kServiceIdFieldNumber, fields.service_id);
  out.String(Fields::kTransactionIdFieldNumber, fields.transaction_id);
  out.String(Fields::kTypeFieldNumber, fields.type);
  out.String(Fields::kSubjectFieldNumber, fields.subject);
  out.Length(Fields::kPayloadFieldNumber, any_size);
  out.String(1, type_url);
  if (value_size != 0) {
    out.Length(2, value_size);
    fields.payload->SerializeWithCachedSizesToArray(out.Reserve(value_size));
  }
  if (fields.deadline) {
    out.Timestamp(Fields::kDeadlineFieldNumber, fields.deadline->seconds, fields.deadline->nanos);
  }
  out.String(Fields::kCorrelationIdFieldNumber, fields.correlation_id);
  out.String(Fields::kCausationIdFieldNumber, fields.causation_id);
  assert(out.position() == bytes.data() + bytes.size());
  return bytes;
}

}  // namespace cqrs::net::internal
