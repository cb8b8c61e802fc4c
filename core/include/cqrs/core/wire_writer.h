// File: cqrs/core/wire_writer.h
//
// Writes protobuf wire format by hand, for messages the hot path encodes from string views
// without building the message object first (each string field of a message would be a heap
// string in protobuf 3.21, arena or not): events and responses on the server, commands in the
// client. Sizes first, then one buffer, then the bytes:
//
//   std::size_t size = wire::StringField(1, id) + wire::VarintField(5, version);
//   std::string out(size, '\0');
//   wire::Writer w(out.data());
//   w.String(1, id);
//   w.Varint(5, version);
//
// Empty strings and zero numbers are left out, as proto3 does; nested messages are written
// whenever the caller writes them (as protobuf does for a set message field, even if empty).

#ifndef CQRS_CORE_WIRE_WRITER_H_
#define CQRS_CORE_WIRE_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#include <google/protobuf/io/coded_stream.h>

#include "absl/strings/string_view.h"

namespace cqrs::wire {

using google::protobuf::io::CodedOutputStream;

enum WireType : std::uint32_t { kVarint = 0, kLengthDelimited = 2 };

inline std::size_t TagSize(std::uint32_t field) {
  return CodedOutputStream::VarintSize32(field << 3);
}
inline std::size_t VarintSize(std::uint64_t value) {
  return CodedOutputStream::VarintSize64(value);
}
// A length-delimited field whose payload is `length` bytes (written even when empty).
inline std::size_t LengthField(std::uint32_t field, std::size_t length) {
  return TagSize(field) + VarintSize(length) + length;
}
inline std::size_t StringField(std::uint32_t field, absl::string_view value) {
  return value.empty() ? 0 : LengthField(field, value.size());
}
inline std::size_t VarintField(std::uint32_t field, std::uint64_t value) {
  return value == 0 ? 0 : TagSize(field) + VarintSize(value);
}
// int32 and int64 fields: negative values take ten bytes (sign-extended), as protobuf writes them.
inline std::uint64_t AsVarint(std::int64_t value) { return static_cast<std::uint64_t>(value); }

// A google.protobuf.Timestamp field (always written, as a set message field is): its size.
inline std::size_t TimestampBody(std::int64_t seconds, std::int32_t nanos) {
  return VarintField(1, AsVarint(seconds)) + VarintField(2, AsVarint(nanos));
}
inline std::size_t TimestampField(std::uint32_t field, std::int64_t seconds, std::int32_t nanos) {
  return LengthField(field, TimestampBody(seconds, nanos));
}

class Writer {
 public:
  explicit Writer(char* out) : out_(reinterpret_cast<std::uint8_t*>(out)) {}

  char* position() const { return reinterpret_cast<char*>(out_); }

  void Tag(std::uint32_t field, WireType type) {
    out_ = CodedOutputStream::WriteTagToArray((field << 3) | type, out_);
  }
  void RawVarint(std::uint64_t value) {
    out_ = CodedOutputStream::WriteVarint64ToArray(value, out_);
  }
  void Raw(absl::string_view bytes) {
    if (bytes.empty()) return;  // memcpy from a null data() is undefined even for 0 bytes.
    std::memcpy(out_, bytes.data(), bytes.size());
    out_ += bytes.size();
  }
  // The header of a length-delimited field; the caller writes `length` bytes next.
  void Length(std::uint32_t field, std::size_t length) {
    Tag(field, kLengthDelimited);
    RawVarint(length);
  }
  void String(std::uint32_t field, absl::string_view value) {
    if (value.empty()) return;
    Length(field, value.size());
    Raw(value);
  }
  void Varint(std::uint32_t field, std::uint64_t value) {
    if (value == 0) return;
    Tag(field, kVarint);
    RawVarint(value);
  }
  void Timestamp(std::uint32_t field, std::int64_t seconds, std::int32_t nanos) {
    Length(field, TimestampBody(seconds, nanos));
    Varint(1, AsVarint(seconds));
    Varint(2, AsVarint(nanos));
  }
  // Lets a message serializer (SerializeWithCachedSizesToArray) write `size` bytes in place.
  std::uint8_t* Reserve(std::size_t size) {
    std::uint8_t* at = out_;
    out_ += size;
    return at;
  }

 private:
  std::uint8_t* out_;
};

}  // namespace cqrs::wire

#endif  // CQRS_CORE_WIRE_WRITER_H_
