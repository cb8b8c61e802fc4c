// File: testing/websocket_frames.h
//
// Builders for the WebSocket frames a client sends (masked), including malformed ones, for the
// websocket codec tests and the gateway fuzz corpus. Independent of ws::MakeFrameHeader.
//
//   std::string bytes = testing::ClientFrame(ws::Opcode::kText, R"({"ping":{}})");
//   bytes += testing::ClientFrame(ws::Opcode::kPing, "", {.mask = false});

#ifndef CQRS_TESTS_TESTING_WEBSOCKET_FRAMES_H_
#define CQRS_TESTS_TESTING_WEBSOCKET_FRAMES_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "cqrs/net/websocket_codec.h"

namespace cqrs::testing {

struct ClientFrameOptions {
  bool fin = true;
  bool mask = true;
  std::array<unsigned char, 4> key = {0x37, 0xfa, 0x21, 0x3d};
  std::uint8_t rsv = 0;  // RSV1..3 as bits 0x40, 0x20, 0x10.
  // Length encoding: 0 the shortest, else 7, 16 or 64 bits regardless of the length.
  int length_bits = 0;
  // Announced payload length, when it should differ from the payload given.
  std::optional<std::uint64_t> announced_length;
  // Raw opcode, to send reserved ones.
  std::optional<std::uint8_t> raw_opcode;
};

// The header of a client frame (including the masking key when masked).
inline std::string ClientFrameHeader(net::ws::Opcode opcode, std::uint64_t length,
                                     const ClientFrameOptions& options = {}) {
  std::string out;
  const std::uint8_t code = options.raw_opcode.value_or(static_cast<std::uint8_t>(opcode));
  out.push_back(static_cast<char>((options.fin ? 0x80 : 0) | options.rsv | code));
  const std::uint8_t mask_bit = options.mask ? 0x80 : 0;
  int bits = options.length_bits;
  if (bits == 0) bits = length < 126 ? 7 : length <= 0xFFFF ? 16 : 64;
  if (bits == 7) {
    out.push_back(static_cast<char>(mask_bit | length));
  } else {
    out.push_back(static_cast<char>(mask_bit | (bits == 16 ? 126 : 127)));
    for (int shift = bits - 8; shift >= 0; shift -= 8) {
      out.push_back(static_cast<char>(length >> shift));
    }
  }
  if (options.mask) out.append(reinterpret_cast<const char*>(options.key.data()), 4);
  return out;
}

// A whole client frame carrying `payload`, masked unless options.mask is false.
inline std::string ClientFrame(net::ws::Opcode opcode, std::string_view payload,
                               const ClientFrameOptions& options = {}) {
  std::string out =
      ClientFrameHeader(opcode, options.announced_length.value_or(payload.size()), options);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    out.push_back(static_cast<char>(options.mask ? payload[i] ^ options.key[i % 4] : payload[i]));
  }
  return out;
}

// A client close frame with `code` (big-endian) and `reason`.
inline std::string ClientClose(std::uint16_t code, std::string_view reason = "",
                               const ClientFrameOptions& options = {}) {
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  payload.append(reason);
  return ClientFrame(net::ws::Opcode::kClose, payload, options);
}

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_WEBSOCKET_FRAMES_H_
