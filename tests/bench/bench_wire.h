// File: bench/bench_wire.h
//
// A minimal reader of the protobuf wire format for cqrs_bench's hot paths: enough to pick a few
// fields out of a response frame or an event without parsing messages (the benchmark's clients
// share the machine's two cores with the server).
//
//   WireReader reader(bytes);
//   std::uint64_t tag = 0;
//   while (!reader.done() && reader.Varint(tag)) {
//     if (tag == ((12 << 3) | 0)) { reader.Varint(offset); continue; }
//     if (!reader.Skip(tag & 7)) return false;
//   }

#ifndef CQRS_TESTS_BENCH_BENCH_WIRE_H_
#define CQRS_TESTS_BENCH_BENCH_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <span>

namespace cqrs::bench {

class WireReader {
 public:
  explicit WireReader(std::span<const std::byte> bytes)
      : p_(reinterpret_cast<const std::uint8_t*>(bytes.data())), end_(p_ + bytes.size()) {}
  WireReader(const char* data, std::size_t size)
      : p_(reinterpret_cast<const std::uint8_t*>(data)), end_(p_ + size) {}

  bool done() const { return p_ >= end_; }

  bool Varint(std::uint64_t& value) {
    value = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      const std::uint8_t byte = *p_++;
      value |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return true;
    }
    return false;
  }
  bool Bytes(std::span<const std::byte>& out) {
    std::uint64_t length = 0;
    if (!Varint(length) || length > static_cast<std::uint64_t>(end_ - p_)) return false;
    out = {reinterpret_cast<const std::byte*>(p_), static_cast<std::size_t>(length)};
    p_ += length;
    return true;
  }
  bool Skip(std::uint32_t wire_type) {
    std::uint64_t ignored = 0;
    std::span<const std::byte> bytes;
    switch (wire_type) {
      case 0:
        return Varint(ignored);
      case 1:
        return Advance(8);
      case 2:
        return Bytes(bytes);
      case 5:
        return Advance(4);
      default:
        return false;
    }
  }

 private:
  bool Advance(std::size_t n) {
    if (static_cast<std::size_t>(end_ - p_) < n) return false;
    p_ += n;
    return true;
  }
  const std::uint8_t* p_;
  const std::uint8_t* end_;
};

}  // namespace cqrs::bench

#endif  // CQRS_TESTS_BENCH_BENCH_WIRE_H_
