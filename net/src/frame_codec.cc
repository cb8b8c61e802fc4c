#include "cqrs/net/frame_codec.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <optional>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include "absl/strings/str_cat.h"
#include "command_parse.h"

namespace cqrs::net {
namespace {

// Allocates `capacity` bytes and moves `used` bytes from `from` into the start of them.
std::unique_ptr<std::byte[]> Reallocate(const std::byte* from, std::size_t used,
                                        std::size_t capacity) {
  auto grown = std::make_unique_for_overwrite<std::byte[]>(capacity);
  if (used != 0) std::memcpy(grown.get(), from, used);
  return grown;
}

}  // namespace

void WriteFrameHeader(std::uint32_t body_bytes, std::byte* out) noexcept {
  out[0] = static_cast<std::byte>(body_bytes >> 24);
  out[1] = static_cast<std::byte>(body_bytes >> 16);
  out[2] = static_cast<std::byte>(body_bytes >> 8);
  out[3] = static_cast<std::byte>(body_bytes);
}

std::uint32_t ReadFrameHeader(const std::byte* in) noexcept {
  return (std::to_integer<std::uint32_t>(in[0]) << 24) |
         (std::to_integer<std::uint32_t>(in[1]) << 16) |
         (std::to_integer<std::uint32_t>(in[2]) << 8) | std::to_integer<std::uint32_t>(in[3]);
}

FrameDecoder::FrameDecoder(FrameLimits limits) noexcept : limits_(limits) {
  // protobuf parses at most INT_MAX bytes at once.
  limits_.max_frame_bytes = std::min<std::uint32_t>(limits_.max_frame_bytes, INT_MAX);
}

FrameDecoder::FrameDecoder(FrameDecoder&&) noexcept = default;
FrameDecoder& FrameDecoder::operator=(FrameDecoder&&) noexcept = default;
FrameDecoder::~FrameDecoder() = default;

void FrameDecoder::Reserve(std::size_t free_bytes) {
  if (begin_ == end_) begin_ = end_ = 0;
  if (capacity_ - end_ >= free_bytes) return;
  const std::size_t used = end_ - begin_;
  if (capacity_ - used >= free_bytes) {
    std::memmove(buffer_.get(), buffer_.get() + begin_, used);
  } else {
    const std::size_t capacity = std::max(capacity_ * 2, used + free_bytes);
    buffer_ = Reallocate(buffer_.get() + begin_, used, capacity);
    capacity_ = capacity;
  }
  begin_ = 0;
  end_ = used;
}

std::span<std::byte> FrameDecoder::Prepare(std::size_t min_bytes) {
  std::size_t want = std::max<std::size_t>(min_bytes, 1);
  if (header_checked_) {
    // The header passed the limit check: growing to the rest of this frame is bounded by it.
    // (Bytes committed since the last Next may already hold more than the frame.)
    const std::size_t frame = kFrameHeaderBytes + pending_length_;
    if (buffered() < frame) want = std::max(want, frame - buffered());
  }
  Reserve(want);
  return {buffer_.get() + end_, capacity_ - end_};
}

void FrameDecoder::Commit(std::size_t n) noexcept { end_ += std::min(n, capacity_ - end_); }

void FrameDecoder::Feed(std::span<const std::byte> bytes) {
  if (bytes.empty()) return;
  auto space = Prepare(bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  Commit(bytes.size());
}

DecodeResult FrameDecoder::NextBody(std::span<const std::byte>& body) noexcept {
  if (failed_) return DecodeResult::kTooLarge;
  const std::size_t available = end_ - begin_;
  if (!header_checked_) {
    if (available < kFrameHeaderBytes) return DecodeResult::kNeedMore;
    const std::uint32_t length = ReadFrameHeader(buffer_.get() + begin_);
    if (length > limits_.max_frame_bytes) {
      failed_ = true;
      last_error_ = DecodeResult::kTooLarge;
      last_error_length_ = length;
      return DecodeResult::kTooLarge;
    }
    pending_length_ = length;
    header_checked_ = true;
  }
  if (available < kFrameHeaderBytes + pending_length_) return DecodeResult::kNeedMore;
  body = {buffer_.get() + begin_ + kFrameHeaderBytes, static_cast<std::size_t>(pending_length_)};
  begin_ += kFrameHeaderBytes + pending_length_;
  header_checked_ = false;
  if (pending_length_ == 0) {
    last_error_ = DecodeResult::kEmpty;
    last_error_length_ = 0;
    return DecodeResult::kEmpty;
  }
  return DecodeResult::kFrame;
}

DecodeResult FrameDecoder::Next(v1::Frame& frame) noexcept {
  std::span<const std::byte> body;
  const DecodeResult result = NextBody(body);
  if (result != DecodeResult::kFrame) return result;
  return Parse(body, frame);
}

namespace {

// The body of field `tag` (length-delimited) when it is the frame's only field, as senders write
// a command or a response: the tag, the length, then exactly that many bytes.
std::optional<std::span<const std::byte>> SoleField(std::span<const std::byte> body,
                                                    std::uint8_t tag) noexcept {
  const auto* p = reinterpret_cast<const std::uint8_t*>(body.data());
  const auto* end = p + body.size();
  if (p == end || *p++ != tag) return std::nullopt;
  std::uint32_t length = 0;
  for (int shift = 0; p != end && shift < 28; shift += 7) {
    const std::uint8_t byte = *p++;
    length |= static_cast<std::uint32_t>(byte & 0x7f) << shift;
    if (byte < 0x80) {
      if (length != static_cast<std::size_t>(end - p)) return std::nullopt;
      return std::span<const std::byte>(reinterpret_cast<const std::byte*>(p), length);
    }
  }
  return std::nullopt;
}

template <int kField>
constexpr std::uint8_t kSoleTag =
    static_cast<std::uint8_t>(google::protobuf::internal::WireFormatLite::MakeTag(
        kField, google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
static_assert(v1::Frame::kCommandFieldNumber < 16 && v1::Frame::kResponseFieldNumber < 16,
              "one-byte tags");

}  // namespace

DecodeResult FrameDecoder::Next(v1::Frame& frame, v1::CommandEnvelope& command,
                                bool& is_command) noexcept {
  is_command = false;
  std::span<const std::byte> body;
  const DecodeResult result = NextBody(body);
  if (result != DecodeResult::kFrame) return result;
  if (const auto inner = SoleField(body, kSoleTag<v1::Frame::kCommandFieldNumber>);
      inner && internal::ParseCommandReusing(*inner, command)) {
    is_command = true;
    return DecodeResult::kFrame;
  }
  return Parse(body, frame);
}

DecodeResult FrameDecoder::Next(v1::Frame& frame, v1::CommandResponseEnvelope& response,
                                bool& is_response) noexcept {
  is_response = false;
  std::span<const std::byte> body;
  const DecodeResult result = NextBody(body);
  if (result != DecodeResult::kFrame) return result;
  response.Clear();
  if (const auto inner = SoleField(body, kSoleTag<v1::Frame::kResponseFieldNumber>); inner) {
    if (internal::ParseResponse(*inner, response)) {
      is_response = true;
      return DecodeResult::kFrame;
    }
    response.Clear();
  }
  return Parse(body, frame);
}

DecodeResult FrameDecoder::Parse(std::span<const std::byte> body, v1::Frame& frame) noexcept {
  const bool parsed = frame.ParseFromArray(body.data(), static_cast<int>(body.size()));
  if (parsed && frame.kind_case() != v1::Frame::KIND_NOT_SET) return DecodeResult::kFrame;
  last_error_ = DecodeResult::kMalformed;
  last_error_unknown_kind_ = parsed;
  last_error_length_ = body.size();
  return DecodeResult::kMalformed;
}

absl::Status FrameDecoder::error() const {
  switch (last_error_) {
    case DecodeResult::kTooLarge:
      return absl::ResourceExhaustedError(
          absl::StrCat("frame length ", last_error_length_,
                       " exceeds max_frame_bytes=", limits_.max_frame_bytes));
    case DecodeResult::kEmpty:
      return absl::InvalidArgumentError(
          "zero-length frame: a frame must hold a non-empty cqrs.v1.Frame");
    case DecodeResult::kMalformed:
      return absl::InvalidArgumentError(
          last_error_unknown_kind_ ? absl::StrCat("frame of ", last_error_length_,
                                                  " bytes sets no known cqrs.v1.Frame kind")
                                   : absl::StrCat("frame of ", last_error_length_,
                                                  " bytes is not a valid cqrs.v1.Frame protobuf"));
    case DecodeResult::kFrame:
    case DecodeResult::kNeedMore:
      break;
  }
  return absl::OkStatus();
}

std::byte* FrameEncoder::Grow(std::size_t bytes) {
  const std::size_t needed = size_ + bytes;
  if (needed > capacity_) {
    const std::size_t capacity = std::max(capacity_ * 2, std::max<std::size_t>(needed, 4096));
    buffer_ = Reallocate(buffer_.get(), size_, capacity);
    capacity_ = capacity;
  }
  std::byte* out = buffer_.get() + size_;
  size_ = needed;
  ++frames_;
  return out;
}

absl::Status FrameEncoder::Append(const v1::Frame& frame) {
  if (frame.kind_case() == v1::Frame::KIND_NOT_SET) {
    return absl::InvalidArgumentError("cannot encode a cqrs.v1.Frame with no kind set");
  }
  const std::size_t body = frame.ByteSizeLong();
  if (body > limits_.max_frame_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame of ", body, " bytes exceeds max_frame_bytes=", limits_.max_frame_bytes));
  }
  std::byte* out = Grow(kFrameHeaderBytes + body);
  WriteFrameHeader(static_cast<std::uint32_t>(body), out);
  frame.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(out + kFrameHeaderBytes));
  return absl::OkStatus();
}

absl::Status FrameEncoder::AppendSerialized(v1::Frame::KindCase kind, std::string_view message) {
  if (kind == v1::Frame::KIND_NOT_SET) {
    return absl::InvalidArgumentError("cannot encode a cqrs.v1.Frame with no kind set");
  }
  using google::protobuf::internal::WireFormatLite;
  using google::protobuf::io::CodedOutputStream;
  const std::uint32_t tag =
      WireFormatLite::MakeTag(static_cast<int>(kind), WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
  const std::size_t body = CodedOutputStream::VarintSize32(tag) +
                           CodedOutputStream::VarintSize64(message.size()) + message.size();
  if (body > limits_.max_frame_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "frame of ", body, " bytes exceeds max_frame_bytes=", limits_.max_frame_bytes));
  }
  std::byte* out = Grow(kFrameHeaderBytes + body);
  WriteFrameHeader(static_cast<std::uint32_t>(body), out);
  auto* p = reinterpret_cast<std::uint8_t*>(out + kFrameHeaderBytes);
  p = CodedOutputStream::WriteVarint32ToArray(tag, p);
  p = CodedOutputStream::WriteVarint64ToArray(message.size(), p);
  std::memcpy(p, message.data(), message.size());
  return absl::OkStatus();
}

}  // namespace cqrs::net
