#include "command_parse.h"

#include <array>
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

// The envelope's string fields, by field number (the other entries are empty): one table for
// parsing, for clearing the fields a command did not send, and for counting retained capacity.
using Envelope = v1::CommandEnvelope;
struct StringField {
  std::string* (Envelope::*mutable_value)() = nullptr;
  const std::string& (Envelope::*value)() const = nullptr;
  void (Envelope::*clear)() = nullptr;
};
constexpr std::array<StringField, 16> StringFields() {
  std::array<StringField, 16> fields{};
  fields[Envelope::kIdFieldNumber] = {&Envelope::mutable_id, &Envelope::id, &Envelope::clear_id};
  fields[Envelope::kServiceIdFieldNumber] = {&Envelope::mutable_service_id, &Envelope::service_id,
                                             &Envelope::clear_service_id};
  fields[Envelope::kServiceInstanceIdFieldNumber] = {&Envelope::mutable_service_instance_id,
                                                     &Envelope::service_instance_id,
                                                     &Envelope::clear_service_instance_id};
  fields[Envelope::kTransactionIdFieldNumber] = {&Envelope::mutable_transaction_id,
                                                 &Envelope::transaction_id,
                                                 &Envelope::clear_transaction_id};
  fields[Envelope::kTypeFieldNumber] = {&Envelope::mutable_type, &Envelope::type,
                                        &Envelope::clear_type};
  fields[Envelope::kSubjectFieldNumber] = {&Envelope::mutable_subject, &Envelope::subject,
                                           &Envelope::clear_subject};
  fields[Envelope::kCorrelationIdFieldNumber] = {&Envelope::mutable_correlation_id,
                                                 &Envelope::correlation_id,
                                                 &Envelope::clear_correlation_id};
  fields[Envelope::kCausationIdFieldNumber] = {
      &Envelope::mutable_causation_id, &Envelope::causation_id, &Envelope::clear_causation_id};
  return fields;
}
constexpr std::array<StringField, 16> kStringFields = StringFields();

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
    if (const StringField& string = kStringFields[field]; string.mutable_value != nullptr) {
      if (!AssignUtf8(*(command.*string.mutable_value)(), begin, end)) return false;
      continue;
    }
    switch (field) {
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
  for (std::size_t field = 0; field < kStringFields.size(); ++field) {
    if (kStringFields[field].clear != nullptr && unseen(static_cast<int>(field))) {
      (command.*kStringFields[field].clear)();
    }
  }
  if (unseen(Fields::kTimestampFieldNumber)) command.clear_timestamp();
  if (unseen(Fields::kDeadlineFieldNumber)) command.clear_deadline();
  if (unseen(Fields::kPayloadFieldNumber)) command.clear_payload();
  command.set_version(version);
  return true;
}

namespace {

// The response's string fields, by field number (the other entries are null).
using Response = v1::CommandResponseEnvelope;
constexpr std::array<std::string* (Response::*)(), 16> ResponseStrings() {
  std::array<std::string* (Response::*)(), 16> fields{};
  fields[Response::kTransactionIdFieldNumber] = &Response::mutable_transaction_id;
  fields[Response::kCommandIdFieldNumber] = &Response::mutable_command_id;
  fields[Response::kServiceIdFieldNumber] = &Response::mutable_service_id;
  fields[Response::kTypeFieldNumber] = &Response::mutable_type;
  fields[Response::kIdFieldNumber] = &Response::mutable_id;
  return fields;
}
constexpr std::array<std::string* (Response::*)(), 16> kResponseStrings = ResponseStrings();

}  // namespace

bool ParseResponse(std::span<const std::byte> bytes,
                   v1::CommandResponseEnvelope& response) noexcept {
  using Fields = v1::CommandResponseEnvelope;
  const auto* data = reinterpret_cast<const std::uint8_t*>(bytes.data());
  Reader in(data, data + bytes.size());
  bool timestamp = false;
  bool payload = false;
  while (!in.done()) {
    std::uint8_t tag;
    if (!in.Tag(tag)) return false;
    const int field = tag >> 3;
    std::uint64_t value;
    const std::uint8_t* begin;
    const std::uint8_t* end;
    if ((tag & 7) == kVarint) {
      if (!in.Varint(value)) return false;
      switch (field) {
        case Fields::kVersionFieldNumber:
          response.set_version(static_cast<std::int32_t>(static_cast<std::uint32_t>(value)));
          break;
        case Fields::kStatusFieldNumber:  // An open enum: any int32 is kept.
          response.set_status(static_cast<Fields::Status>(
              static_cast<std::int32_t>(static_cast<std::uint32_t>(value))));
          break;
        case Fields::kEventOffsetsFieldNumber:  // Unpacked: one element.
          response.add_event_offsets(value);
          break;
        case Fields::kEventEpochFieldNumber:
          response.set_event_epoch(value);
          break;
        default:
          return false;
      }
      continue;
    }
    if ((tag & 7) != kDelimited || !in.Delimited(begin, end)) return false;
    if (const auto mutable_string = kResponseStrings[field]; mutable_string != nullptr) {
      if (!AssignUtf8(*(response.*mutable_string)(), begin, end)) return false;
      continue;  // Twice: the last one wins, as in protobuf.
    }
    switch (field) {
      case Fields::kTimestampFieldNumber:
        // Twice: protobuf merges the two; left to it.
        if (timestamp || !ParseTimestamp(Reader(begin, end), *response.mutable_timestamp())) {
          return false;
        }
        timestamp = true;
        break;
      case Fields::kPayloadFieldNumber:
        if (payload || !ParseAny(Reader(begin, end), *response.mutable_payload())) return false;
        payload = true;
        break;
      case Fields::kEventOffsetsFieldNumber: {  // Packed: appended, as protobuf does.
        Reader packed(begin, end);
        while (!packed.done()) {
          if (!packed.Varint(value)) return false;
          response.add_event_offsets(value);
        }
        break;
      }
      default:  // The error (non-OK responses: rare) and unknown fields: protobuf's parse.
        return false;
    }
  }
  return true;
}

std::size_t RetainedBytes(const v1::CommandEnvelope& command) noexcept {
  std::size_t bytes = 0;
  for (const StringField& string : kStringFields) {
    if (string.value != nullptr) bytes += (command.*string.value)().capacity();
  }
  if (command.has_payload()) {
    bytes += command.payload().type_url().capacity() + command.payload().value().capacity();
  }
  return bytes;
}

}  // namespace cqrs::net::internal
