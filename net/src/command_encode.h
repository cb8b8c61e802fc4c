// Private: the serialized cqrs.v1.CommandEnvelope a CommandClient sends, written straight from
// its parts (no envelope message, whose string fields would each be a heap string, and no Any).

#ifndef CQRS_NET_SRC_COMMAND_ENCODE_H_
#define CQRS_NET_SRC_COMMAND_ENCODE_H_

#include <optional>
#include <string>

#include <google/protobuf/message.h>

#include "absl/strings/string_view.h"
#include "cqrs/core/time_util.h"

namespace cqrs::net::internal {

struct CommandFields {
  absl::string_view id;
  TimestampParts timestamp;
  absl::string_view service_id;
  absl::string_view transaction_id;
  absl::string_view type;
  absl::string_view subject;
  const google::protobuf::Message* payload = nullptr;  // Not null: packed as an Any.
  std::optional<TimestampParts> deadline;
  absl::string_view correlation_id;
  absl::string_view causation_id;
};

// The bytes protobuf writes for the envelope with these fields (the payload set with PackFrom,
// the timestamp always, the deadline when set): field-number order, empty strings left out.
std::string EncodeCommand(const CommandFields& fields);

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_COMMAND_ENCODE_H_
