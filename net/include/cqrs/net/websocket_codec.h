// File: cqrs/net/websocket_codec.h
//
// RFC 6455 framing for the server side, without sockets: a Decoder for the frames a client sends
// (masked, possibly fragmented, interleaved with control frames) and encoders for the frames a
// server sends (unmasked, FIN set). Beast does the HTTP upgrade; the gateway frames messages
// itself so that many frames leave in one write and an idle connection holds no read buffer.
//
//   ws::Decoder decoder({.max_message_bytes = 1 << 20});
//   std::span<char> input(read_buffer, bytes_read);
//   for (;;) {
//     switch (decoder.Next(input)) {
//       case ws::Decoder::Event::kNeedMore: return ReadMore();  // all of `input` was consumed
//       case ws::Decoder::Event::kMessage: Handle(decoder.message()); break;
//       case ws::Decoder::Event::kPing: Queue(ws::MakeControlFrame(ws::Opcode::kPong,
//                                                                  decoder.message())); break;
//       case ws::Decoder::Event::kPong: break;
//       case ws::Decoder::Event::kClose: return Close(decoder.close_code(), "");
//       case ws::Decoder::Event::kError: return Close(decoder.error_code(), decoder.error());
//     }
//   }
//
//   const std::string payload = Serialize(message);
//   const ws::FrameHeader header = ws::MakeFrameHeader(ws::Opcode::kBinary, payload.size());
//   WriteGathered({header.view(), payload});

#ifndef CQRS_NET_WEBSOCKET_CODEC_H_
#define CQRS_NET_WEBSOCKET_CODEC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "absl/strings/string_view.h"

namespace cqrs::net::ws {

enum class Opcode : std::uint8_t {
  kContinuation = 0,
  kText = 1,
  kBinary = 2,
  kClose = 8,
  kPing = 9,
  kPong = 10,
};

// "text", "binary", "ping", ...; "reserved" for values outside the enum.
absl::string_view OpcodeName(Opcode opcode) noexcept;

// Close codes (RFC 6455 section 7.4).
inline constexpr std::uint16_t kCloseNormal = 1000;
inline constexpr std::uint16_t kCloseGoingAway = 1001;
inline constexpr std::uint16_t kCloseProtocolError = 1002;
inline constexpr std::uint16_t kCloseUnsupportedData = 1003;
// Reported by close_code() for a close frame without a code; never sent on the wire.
inline constexpr std::uint16_t kCloseNoStatus = 1005;
inline constexpr std::uint16_t kCloseInvalidPayload = 1007;
inline constexpr std::uint16_t kClosePolicyViolation = 1008;
inline constexpr std::uint16_t kCloseTooBig = 1009;
inline constexpr std::uint16_t kCloseInternalError = 1011;
inline constexpr std::uint16_t kCloseTryAgainLater = 1013;

// Control frames (close, ping, pong) carry at most this many payload bytes.
inline constexpr std::size_t kMaxControlPayload = 125;
// A close frame's reason fits in what is left after the 2-byte code.
inline constexpr std::size_t kMaxCloseReason = kMaxControlPayload - 2;

// True for the codes a peer may put in a close frame: 1000-1003, 1007-1014, 3000-4999.
bool IsValidCloseCode(std::uint16_t code) noexcept;

struct DecoderOptions {
  // Largest message accepted, summed over its fragments. A frame whose header would take the
  // message past it is refused (1009) before any of its payload is buffered.
  std::size_t max_message_bytes = 1 << 20;
  // Refuse unmasked frames (1002), as RFC 6455 requires of a server.
  bool require_mask = true;
};

// Incremental reader of the frames a client sends. Pure: bytes in, events out. Not thread-safe;
// one per connection.
//
// Memory: a frame whose payload lies entirely in the input passed to Next, and that is a whole
// message or a control frame, is unmasked in place and handed out without a copy. Only partial
// frames and fragmented messages are copied into the decoder's buffer, which never grows beyond
// max_message_bytes; partial headers and control payloads use fixed storage inside the object.
//
// Enforced (close code in parentheses): frames masked when require_mask (1002); RSV1-3 clear, no
// extension is negotiated (1002); no reserved opcode (1002); control frames not fragmented and
// at most 125 bytes (1002); continuation frames only inside a fragmented message and text/binary
// frames only outside one (1002); payload lengths minimally encoded, the 64-bit form with its top
// bit clear (1002); messages within max_message_bytes (1009); text messages valid UTF-8, checked
// as they arrive (1007); close payloads empty or a valid code plus a UTF-8 reason (1002, 1007).
// Ping, pong and close may arrive between the fragments of a message.
class Decoder {
 public:
  enum class Event : std::uint8_t { kNeedMore, kMessage, kPing, kPong, kClose, kError };

  explicit Decoder(DecoderOptions options = {}) noexcept;
  Decoder(Decoder&&) noexcept;
  Decoder& operator=(Decoder&&) noexcept;
  ~Decoder();

  // Consumes bytes from the front of `input` (advancing it) until one event is complete. The
  // bytes of `input` are unmasked in place.
  //   kNeedMore: all of `input` was consumed and any partial frame is kept; call again with more.
  //   kMessage:  a complete text or binary message (fragments reassembled): message() and
  //              message_opcode().
  //   kPing, kPong: a control frame; message() is its payload (at most 125 bytes).
  //   kClose:    the peer's close frame: close_code() (kCloseNoStatus if it had none) and
  //              close_reason(); message() is the raw payload. The decoder is then closed():
  //              later input is discarded, the peer must send nothing after a close.
  //   kError:    a protocol violation: error_code() is the close code to send (1002, 1007 or
  //              1009) and error() says what was wrong. The error is sticky: every later call
  //              returns kError and leaves `input` alone.
  // Call again until kNeedMore: one input can hold many events.
  Event Next(std::span<char>& input) noexcept;

  // The payload of the last kMessage, kPing, kPong or kClose. Points into the input given to
  // Next (zero-copy) or into the decoder; valid until the next call to Next or ShrinkToFit, and
  // for as long as those input bytes live.
  absl::string_view message() const noexcept { return message_; }
  // kText or kBinary after kMessage; kPing, kPong or kClose after those events.
  Opcode message_opcode() const noexcept { return event_opcode_; }

  // After kClose. The reason is kept inside the decoder and stays valid while it lives.
  std::uint16_t close_code() const noexcept { return close_code_; }
  absl::string_view close_reason() const noexcept { return close_reason_; }
  bool closed() const noexcept { return state_ == State::kClosed; }

  // After kError: the close code to answer with, and a reason naming the fault (e.g. "message of
  // 2000000 bytes exceeds the limit of 1048576"). 0 and "" otherwise.
  std::uint16_t error_code() const noexcept { return error_code_; }
  absl::string_view error() const noexcept { return error_; }
  bool failed() const noexcept { return state_ == State::kError; }

  // True when no partial frame or fragmented message is buffered: the caller may drop its read
  // buffer (once it is done with message()).
  bool idle() const noexcept;
  // Releases the decoder's buffer when idle(); otherwise does nothing. Invalidates message() if
  // the last message was reassembled inside the decoder.
  void ShrinkToFit() noexcept;
  // Bytes of buffer memory held (0 after ShrinkToFit).
  std::size_t capacity() const noexcept { return capacity_; }

  const DecoderOptions& options() const noexcept { return options_; }

 private:
  enum class State : std::uint8_t { kHeader, kPayload, kClosed, kError };
  // Client frame header: 2 fixed bytes, up to 8 of extended length, 4 of masking key.
  static constexpr std::size_t kMaxHeaderBytes = 14;

  // Incremental UTF-8 check: the continuation bytes still expected and their allowed range.
  struct Utf8State {
    std::uint8_t need = 0;
    std::uint8_t low = 0x80;
    std::uint8_t high = 0xBF;
  };

  bool ReadHeader(std::span<char>& input) noexcept;
  Event FinishControl(absl::string_view payload) noexcept;
  Event Fail(std::uint16_t code, std::string reason) noexcept;
  Event CheckText(const char* data, std::size_t size, std::size_t offset) noexcept;
  void Reserve(std::size_t needed) noexcept;

  DecoderOptions options_;
  State state_ = State::kHeader;

  // The frame being read.
  std::array<char, kMaxHeaderBytes> header_{};
  std::uint8_t header_size_ = 0;
  Opcode frame_opcode_ = Opcode::kContinuation;
  bool frame_fin_ = false;
  bool frame_masked_ = false;
  std::array<unsigned char, 4> mask_{};
  std::uint64_t frame_length_ = 0;
  std::uint64_t frame_received_ = 0;

  // The message being reassembled (fragments, or one frame that arrived in pieces).
  bool in_message_ = false;
  bool message_in_buffer_ = false;  // message_ points into buffer_ until the next Next.
  Opcode message_opcode_ = Opcode::kText;
  Utf8State utf8_;
  std::unique_ptr<char[]> buffer_;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;

  // Payload of a control frame that arrived in pieces, and the close payload once seen.
  std::array<char, kMaxControlPayload> control_{};

  absl::string_view message_;
  Opcode event_opcode_ = Opcode::kText;
  std::uint16_t close_code_ = kCloseNoStatus;
  absl::string_view close_reason_;
  std::uint16_t error_code_ = 0;
  std::string error_;
};

// A server frame header: FIN set, no mask, the shortest length encoding. Send `view()` followed
// by the payload bytes.
struct FrameHeader {
  std::array<char, 10> bytes;
  std::uint8_t size;
  absl::string_view view() const noexcept { return {bytes.data(), size}; }
};
FrameHeader MakeFrameHeader(Opcode opcode, std::uint64_t payload_bytes) noexcept;

// A complete close frame: `code` (big-endian) then `reason`, cut on a UTF-8 boundary to fit 123
// bytes. For kCloseNoStatus the frame has an empty payload. `code` should satisfy
// IsValidCloseCode.
std::string MakeCloseFrame(std::uint16_t code, absl::string_view reason);
// A complete ping or pong frame. `payload` beyond 125 bytes is cut off.
std::string MakeControlFrame(Opcode opcode, absl::string_view payload);

// Whether `text` is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates or code points
// above U+10FFFF).
bool IsValidUtf8(absl::string_view text) noexcept;

}  // namespace cqrs::net::ws

#endif  // CQRS_NET_WEBSOCKET_CODEC_H_
