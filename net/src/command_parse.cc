#include "command_parse.h"

#include <cstdint>
#include <cstring>
#include <string>

#include <google/protobuf/stubs/common.h>

namespace cqrs::net::internal {
namespace {

// A cursor over the input. Every read fails (returns false) rather than reading past the end.
class Reader {
 public:
  Reader(const std::uint8_t* begin, const std::uint8_t* end) : p_(begin), end_(end) {}

  bool done() const { return p_ == end_; }

  // A one-byte tag (field numbers 1..15): anything longer is not a field this parser knows.
  bool Tag(std::uint8_t& tag) {
    if (p_ == end_ || (*p_ & 0x80) != 0) return false;
    tag = *p_++;
    return true;
  }

  // A varint of at most 10 bytes, as protobuf reads it (bits beyond 64 dropped).
  bool Varint(std::uint64_t& value) {
    std::uint64_t result = 0;
    for (int i = 0; i < 10; ++i) {
      if (p_ == end_) return false;
      const std::uint8_t byte = *p_++;
      result |= static_cast<std::uint64_t>(byte & 0x7f) << (7 * i);
      if (byte < 0x80) {
        value = result;
        return true;
      }
    }
    return false;
  }

  // A length-delimited field's body. Lengths are taken up to 2^28 (four varint bytes); longer
  // ones (in frames over 256 MiB) are left to protobuf.
  bool Delimited(const std::uint8_t*& begin, const std::uint8_t*& end) {
    std::uint32_t length = 0;
    for (int i = 0;; ++i) {
      if (i == 4 || p_ == end_) return false;
      const std::uint8_t byte = *p_++;
      length |= static_cast<std::uint32_t>(byte & 0x7f) << (7 * i);
      if (byte < 0x80) break;
    }
    if (length > static_cast<std::size_t>(end_ - p_)) return false;
    begin = p_;
    end = p_ + length;
    p_ = end;
    return true;
  }

 private:
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

// Proto3 `string` fields must hold valid UTF-8 (protobuf's parse fails otherwise). ASCII, the
// common case, is checked eight bytes at a time.
bool ValidUtf8(const std::uint8_t* begin, const std::uint8_t* end) {
  const std::uint8_t* p = begin;
  for (; end - p >= 8; p += 8) {
    std::uint64_t word;
    std::memcpy(&word, p, sizeof word);
    if ((word & 0x8080808080808080ull) != 0) break;
  }
  for (; p != end; ++p) {
    if (*p >= 0x80) {
      return google::protobuf::internal::IsStructurallyValidUTF8(reinterpret_cast<const char*>(p),
                                                                 static_cast<int>(end - p));
    }
  }
  return true;
}

void Assign(std::string& to, const std::uint8_t* begin, const std::uint8_t* end) {
  to.assign(reinterpret_cast<const char*>(begin), static_cast<std::size_t>(end - begin));
}

bool AssignUtf8(std::string& to, const std::uint8_t* begin, const std::uint8_t* end) {
  if (!ValidUtf8(begin, end)) return false;
  Assign(to, begin, end);
  return true;
}

constexpr std::uint8_t Tag(int field, int wire_type) {
  return static_cast<std::uint8_t>((field << 3) | wire_type);
}
constexpr int kVarint = 0;
constexpr int kDelimited = 2;

// google.protobuf.Timestamp: seconds = 1 (int64), nanos = 2 (int32).
bool ParseTimestamp(Reader in, google::protobuf::Timestamp& timestamp) {
  std::int64_t seconds = 0;
  std::int32_t nanos = 0;
  while (!in.done()) {
    std::uint8_t tag;
    std::uint64_t value;
    if (!in.Tag(tag) || !in.Varint(value)) return false;
    if (tag == Tag(1, kVarint)) {
      seconds = static_cast<std::int64_t>(value);
    } else if (tag == Tag(2, kVarint)) {
      nanos = static_cast<std::int32_t>(static_cast<std::uint32_t>(value));
    } else {
      return false;
    }
  }
  timestamp.set_seconds(seconds);
  timestamp.set_nanos(nanos);
  return true;
}

// google.protobuf.Any: type_url = 1 (string), value = 2 (bytes).
bool ParseAny(Reader in, google::protobuf::Any& any) {
  bool type_url = false;
  bool value = false;
  while (!in.done()) {
    std::uint8_t tag;
    const std::uint8_t* begin;
    const std::uint8_t* end;
    if (!in.Tag(tag) || !in.Delimited(begin, end)) return false;
    if (tag == Tag(1, kDelimited)) {
      if (!AssignUtf8(*any.mutable_type_url(), begin, end)) return false;
      type_url = true;
    } else if (tag == Tag(2, kDelimited)) {
      Assign(*any.mutable_value(), begin, end);
      value = true;
    } else {
      return false;
    }
  }
  if (!type_url) any.clear_type_url();
  if (!value) any.clear_value();
  return true;
}

}  // namespace

bool ParseCommandReusing(std::span<const std::byte> bytes, v1::CommandEnvelope& command) noexcept {
  using Fields = v1::CommandEnvelope;
  const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
  Reader in(data, data + bytes.size());
  // Fields seen, by number: strings not seen are cleared at the end (keeping their capacity),
  // submessages not seen are removed; a submessage seen twice (protobuf would merge the two) is
  // left to protobuf.
  std::uint32_t seen = 0;
  std::int32_t version = 0;
  while (!in.done()) {
    std::uint8_t tag;
    if (!in.Tag(tag)) return false;
    const int field = tag >> 3;
    if (field == Fields::kVersionFieldNumber) {
      std::uint64_t value;
      if (tag != Tag(field, kVarint) || !in.Varint(value)) return false;
      version = static_cast<std::int32_t>(static_cast<std::uint32_t>(value));
      continue;
    }
    const std::uint8_t* begin;
    const std::uint8_t* end;
    if (tag != Tag(field, kDelimited) || !in.Delimited(begin, end)) return false;
    const std::uint32_t bit = std::uint32_t{1} << field;
    const bool again = (seen & bit) != 0;
    seen |= bit;
    switch (field) {
      case Fields::kIdFieldNumber:
        if (!AssignUtf8(*command.mutable_id(), begin, end)) return false;
        break;
      case Fields::kServiceIdFieldNumber:
        if (!AssignUtf8(*command.mutable_service_id(), begin, end)) return false;
        break;
      case Fields::kServiceInstanceIdFieldNumber:
        if (!AssignUtf8(*command.mutable_service_instance_id(), begin, end)) return false;
        break;
      case Fields::kTransactionIdFieldNumber:
        if (!AssignUtf8(*command.mutable_transaction_id(), begin, end)) return false;
        break;
      case Fields::kTypeFieldNumber:
        if (!AssignUtf8(*command.mutable_type(), begin, end)) return false;
        break;
      case Fields::kSubjectFieldNumber:
        if (!AssignUtf8(*command.mutable_subject(), begin, end)) return false;
        break;
      case Fields::kCorrelationIdFieldNumber:
        if (!AssignUtf8(*command.mutable_correlation_id(), begin, end)) return false;
        break;
      case Fields::kCausationIdFieldNumber:
        if (!AssignUtf8(*command.mutable_causation_id(), begin, end)) return false;
        break;
      case Fields::kTimestampFieldNumber:
        if (again || !ParseTimestamp(Reader(begin, end), *command.mutable_timestamp())) {
          return false;
        }
        break;
      case Fields::kDeadlineFieldNumber:
        if (again || !ParseTimestamp(Reader(begin, end), *command.mutable_deadline())) {
          return false;
        }
        break;
      case Fields::kPayloadFieldNumber:
        if (again || !ParseAny(Reader(begin, end), *command.mutable_payload())) return false;
        break;
      default:  // metadata (a map) and unknown fields: protobuf's parse keeps them.
        return false;
    }
  }
  const auto unseen = [seen](int field) { return (seen & (std::uint32_t{1} << field)) == 0; };
  if (unseen(Fields::kIdFieldNumber)) command.clear_id();
  if (unseen(Fields::kServiceIdFieldNumber)) command.clear_service_id();
  if (unseen(Fields::kServiceInstanceIdFieldNumber)) command.clear_service_instance_id();
  if (unseen(Fields::kTransactionIdFieldNumber)) command.clear_transaction_id();
  if (unseen(Fields::kTypeFieldNumber)) command.clear_type();
  if (unseen(Fields::kSubjectFieldNumber)) command.clear_subject();
  if (unseen(Fields::kCorrelationIdFieldNumber)) command.clear_correlation_id();
  if (unseen(Fields::kCausationIdFieldNumber)) command.clear_causation_id();
  if (unseen(Fields::kTimestampFieldNumber)) command.clear_timestamp();
  if (unseen(Fields::kDeadlineFieldNumber)) command.clear_deadline();
  if (unseen(Fields::kPayloadFieldNumber)) command.clear_payload();
  command.set_version(version);
  return true;
}

std::size_t RetainedBytes(const v1::CommandEnvelope& command) noexcept {
  std::size_t bytes = command.id().capacity() + command.service_id().capacity() +
                      command.service_instance_id().capacity() +
                      command.transaction_id().capacity() + command.type().capacity() +
                      command.subject().capacity() + command.correlation_id().capacity() +
                      command.causation_id().capacity();
  if (command.has_payload()) {
    bytes += command.payload().type_url().capacity() + command.payload().value().capacity();
  }
  return bytes;
}

}  // namespace cqrs::net::internal
