// File: cqrs/net/frame_codec.h
//
// The TCP command protocol's framing, without sockets: a 4-byte big-endian length N, then N
// bytes holding one serialized cqrs.v1.Frame (proto/README.md).
//
//   FrameDecoder decoder({.max_frame_bytes = 1 << 20});
//   auto space = decoder.Prepare();             // read straight into the decoder's buffer
//   size_t n = read(fd, space.data(), space.size());
//   decoder.Commit(n);
//   cqrs::v1::Frame frame;
//   for (;;) {
//     auto result = decoder.Next(frame);
//     if (result == DecodeResult::kNeedMore) break;
//     if (result != DecodeResult::kFrame) { log(decoder.error()); if (decoder.failed()) close();
//     continue; } Handle(frame);
//   }
//
//   FrameEncoder encoder;                       // reusable buffer; many frames, one write
//   encoder.Append(frame_a); encoder.Append(frame_b);
//   write(fd, encoder.data().data(), encoder.size());
//   encoder.Clear();

#ifndef CQRS_NET_FRAME_CODEC_H_
#define CQRS_NET_FRAME_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "absl/status/status.h"
#include "cqrs/v1/frame.pb.h"

namespace cqrs::net {

inline constexpr std::size_t kFrameHeaderBytes = 4;
inline constexpr std::uint32_t kDefaultMaxFrameBytes = 4 * 1024 * 1024;

struct FrameLimits {
  // Largest accepted length prefix (bytes after the header). Frames above it are refused before
  // any buffer grows to hold them.
  std::uint32_t max_frame_bytes = kDefaultMaxFrameBytes;
};

enum class DecodeResult : std::uint8_t {
  kFrame,      // A frame was decoded.
  kNeedMore,   // The buffered bytes hold no complete frame.
  kTooLarge,   // The length prefix exceeds the limit. Fatal: the stream cannot be resynchronized.
  kEmpty,      // Zero-length frame. Skipped; the stream stays usable.
  kMalformed,  // The body is not a valid Frame, or names no known kind. Skipped.
};

// Incremental decoder. Bytes go in through Prepare/Commit (zero-copy reads) or Feed; Next takes
// complete frames out, in order. After kTooLarge the decoder is failed(): every further Next
// returns kTooLarge. Not thread-safe; one per connection.
class FrameDecoder {
 public:
  explicit FrameDecoder(FrameLimits limits = {}) noexcept;
  FrameDecoder(FrameDecoder&&) noexcept;
  FrameDecoder& operator=(FrameDecoder&&) noexcept;
  ~FrameDecoder();

  // Writable space for at least `min_bytes` (and, once a frame's header has been accepted, at
  // least the rest of that frame). Valid until the next call to a non-const member.
  std::span<std::byte> Prepare(std::size_t min_bytes = 16 * 1024);
  // Marks `n` bytes of the last Prepare() span as received.
  void Commit(std::size_t n) noexcept;
  // Copies `bytes` in (Prepare + memcpy + Commit).
  void Feed(std::span<const std::byte> bytes);

  // Decodes the next buffered frame into `frame` (which may live on an arena). The content of
  // `frame` is meaningful only when the result is kFrame.
  DecodeResult Next(v1::Frame& frame) noexcept;
  // Like Next, but a frame that holds only a command (as every client sends them) is parsed
  // into `command` instead of `frame`, and `is_command` is set. `command` is meant to be reused
  // from frame to frame, off any arena: its strings and submessages are overwritten in place,
  // so that a steady stream of commands costs no allocation to decode. The outcome is exactly
  // Next's (other frames, odd encodings and every error go through Next's parse).
  DecodeResult Next(v1::Frame& frame, v1::CommandEnvelope& command, bool& is_command) noexcept;
  // Like Next, but a frame that holds only a response (as servers send them) is parsed into
  // `response` by a single-purpose parser, and `is_response` is set. The outcome is exactly
  // Next's (other frames, error responses, odd encodings and malformed bodies go through Next's
  // parse into `frame`). Whenever a frame is taken out, `response` is cleared first (and stays
  // empty unless `is_response`); on kNeedMore, kEmpty and kTooLarge it is left as it was.
  DecodeResult Next(v1::Frame& frame, v1::CommandResponseEnvelope& response,
                    bool& is_response) noexcept;
  // Like Next, but hands out the frame's body bytes without parsing them. The span stays valid
  // until the next non-const call. kMalformed is never returned.
  DecodeResult NextBody(std::span<const std::byte>& body) noexcept;

  // Why the last Next/NextBody did not return kFrame or kNeedMore, naming the limit or length.
  absl::Status error() const;
  bool failed() const noexcept { return failed_; }
  // Bytes received but not yet taken out as frames.
  std::size_t buffered() const noexcept { return end_ - begin_; }
  const FrameLimits& limits() const noexcept { return limits_; }

 private:
  void Reserve(std::size_t free_bytes);
  DecodeResult Parse(std::span<const std::byte> body, v1::Frame& frame) noexcept;

  FrameLimits limits_;
  std::unique_ptr<std::byte[]> buffer_;
  std::size_t capacity_ = 0;
  std::size_t begin_ = 0;  // First unconsumed byte.
  std::size_t end_ = 0;    // One past the last received byte.
  std::uint64_t pending_length_ =
      0;  // Body length of the frame at begin_, once its header is checked.
  bool header_checked_ = false;
  bool failed_ = false;
  DecodeResult last_error_ = DecodeResult::kFrame;
  bool last_error_unknown_kind_ = false;
  std::uint64_t last_error_length_ = 0;
};

// Appends frames to one reusable contiguous buffer, so that every frame ready at a given moment
// leaves in a single write. Not thread-safe.
class FrameEncoder {
 public:
  explicit FrameEncoder(FrameLimits limits = {}) noexcept : limits_(limits) {}

  // Serializes `frame` behind its length prefix. kInvalidArgument when the frame is empty (no
  // kind set) or larger than max_frame_bytes; the buffer is then left unchanged.
  absl::Status Append(const v1::Frame& frame);
  // Appends a Frame whose `kind` is an already serialized message (e.g. a cached response),
  // without parsing or copying it into a Frame first. Same errors as Append.
  absl::Status AppendSerialized(v1::Frame::KindCase kind, std::string_view message);

  std::span<const std::byte> data() const noexcept { return {buffer_.get(), size_}; }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  std::size_t frame_count() const noexcept { return frames_; }
  // Forgets the frames, keeps the capacity.
  void Clear() noexcept {
    size_ = 0;
    frames_ = 0;
  }

 private:
  std::byte* Grow(std::size_t bytes);

  FrameLimits limits_;
  std::unique_ptr<std::byte[]> buffer_;
  std::size_t size_ = 0;
  std::size_t capacity_ = 0;
  std::size_t frames_ = 0;
};

// The 4-byte big-endian length prefix of a frame with `body_bytes` bytes.
void WriteFrameHeader(std::uint32_t body_bytes, std::byte* out) noexcept;
std::uint32_t ReadFrameHeader(const std::byte* in) noexcept;

}  // namespace cqrs::net

#endif  // CQRS_NET_FRAME_CODEC_H_
