#include "cqrs/net/websocket_codec.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace cqrs::net::ws {
namespace {

constexpr std::uint64_t kHighBits = 0x8080808080808080ull;

bool IsControl(Opcode opcode) noexcept { return (static_cast<std::uint8_t>(opcode) & 0x8) != 0; }

bool IsKnownOpcode(std::uint8_t opcode) noexcept {
  return opcode <= 2 || (opcode >= 8 && opcode <= 10);
}

// XORs `size` payload bytes, the first of which is byte `offset` of the frame's payload, with
// the masking key (RFC 6455 section 5.3).
void Unmask(char* data, std::size_t size, const std::array<unsigned char, 4>& key,
            std::uint64_t offset) noexcept {
  std::array<unsigned char, 8> pattern;
  for (std::size_t i = 0; i < pattern.size(); ++i) pattern[i] = key[(offset + i) & 3];
  std::uint64_t word_key;
  std::memcpy(&word_key, pattern.data(), sizeof word_key);
  std::size_t i = 0;
  for (; i + 8 <= size; i += 8) {
    std::uint64_t word;
    std::memcpy(&word, data + i, sizeof word);
    word ^= word_key;
    std::memcpy(data + i, &word, sizeof word);
  }
  for (; i < size; ++i) data[i] = static_cast<char>(data[i] ^ pattern[i & 7]);
}

std::uint64_t ReadBigEndian(const char* in, std::size_t bytes) noexcept {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < bytes; ++i) value = (value << 8) | static_cast<unsigned char>(in[i]);
  return value;
}

// Where a view into `from` ends up once `from` has been moved to `to`.
absl::string_view Rebase(absl::string_view view, const char* from, std::size_t from_size,
                         const char* to) noexcept {
  const auto at = reinterpret_cast<std::uintptr_t>(view.data());
  const auto begin = reinterpret_cast<std::uintptr_t>(from);
  if (at < begin || at >= begin + from_size) return view;
  return {to + (at - begin), view.size()};
}

// Shared by IsValidUtf8 and the decoder's incremental check. Consumes `size` bytes continuing
// from `state`; returns the index of the first byte that cannot occur there, or `size`.
template <typename State>
std::size_t ScanUtf8(State& state, const char* data, std::size_t size) noexcept {
  std::size_t i = 0;
  while (i < size) {
    const auto byte = static_cast<unsigned char>(data[i]);
    if (state.need != 0) {
      if (byte < state.low || byte > state.high) return i;
      state.low = 0x80;
      state.high = 0xBF;
      --state.need;
      ++i;
      continue;
    }
    if (byte < 0x80) {
      ++i;
      // ASCII runs, eight bytes at a time.
      while (i + 8 <= size) {
        std::uint64_t word;
        std::memcpy(&word, data + i, sizeof word);
        if ((word & kHighBits) != 0) break;
        i += 8;
      }
      continue;
    }
    if (byte < 0xC2) return i;  // A continuation byte, or an overlong 2-byte form.
    if (byte < 0xE0) {
      state.need = 1;
    } else if (byte < 0xF0) {
      state.need = 2;
      if (byte == 0xE0) state.low = 0xA0;   // Overlong.
      if (byte == 0xED) state.high = 0x9F;  // Surrogates.
    } else if (byte < 0xF5) {
      state.need = 3;
      if (byte == 0xF0) state.low = 0x90;   // Overlong.
      if (byte == 0xF4) state.high = 0x8F;  // Above U+10FFFF.
    } else {
      return i;
    }
    ++i;
  }
  return size;
}

}  // namespace

absl::string_view OpcodeName(Opcode opcode) noexcept {
  switch (opcode) {
    case Opcode::kContinuation:
      return "continuation";
    case Opcode::kText:
      return "text";
    case Opcode::kBinary:
      return "binary";
    case Opcode::kClose:
      return "close";
    case Opcode::kPing:
      return "ping";
    case Opcode::kPong:
      return "pong";
  }
  return "reserved";
}

bool IsValidCloseCode(std::uint16_t code) noexcept {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
         (code >= 3000 && code <= 4999);
}

bool IsValidUtf8(absl::string_view text) noexcept {
  struct {
    std::uint8_t need = 0;
    std::uint8_t low = 0x80;
    std::uint8_t high = 0xBF;
  } state;
  return ScanUtf8(state, text.data(), text.size()) == text.size() && state.need == 0;
}

Decoder::Decoder(DecoderOptions options) noexcept : options_(options) {}

Decoder::Decoder(Decoder&& other) noexcept { *this = std::move(other); }

Decoder& Decoder::operator=(Decoder&& other) noexcept {
  if (this == &other) return *this;
  options_ = other.options_;
  state_ = other.state_;
  header_ = other.header_;
  header_size_ = other.header_size_;
  frame_opcode_ = other.frame_opcode_;
  frame_fin_ = other.frame_fin_;
  frame_masked_ = other.frame_masked_;
  mask_ = other.mask_;
  frame_length_ = other.frame_length_;
  frame_received_ = other.frame_received_;
  in_message_ = other.in_message_;
  message_in_buffer_ = other.message_in_buffer_;
  message_opcode_ = other.message_opcode_;
  utf8_ = other.utf8_;
  buffer_ = std::move(other.buffer_);
  capacity_ = std::exchange(other.capacity_, 0);
  size_ = std::exchange(other.size_, 0);
  control_ = other.control_;
  // Views into the other decoder's inline storage follow it; views into its heap buffer (now
  // ours) or into the caller's input stay as they are.
  message_ = Rebase(other.message_, other.control_.data(), control_.size(), control_.data());
  close_reason_ =
      Rebase(other.close_reason_, other.control_.data(), control_.size(), control_.data());
  event_opcode_ = other.event_opcode_;
  close_code_ = other.close_code_;
  error_code_ = other.error_code_;
  error_ = std::move(other.error_);
  // The moved-from decoder starts over, as if new.
  other.state_ = State::kHeader;
  other.header_size_ = 0;
  other.in_message_ = false;
  other.message_in_buffer_ = false;
  other.message_ = {};
  other.close_reason_ = {};
  other.close_code_ = kCloseNoStatus;
  other.error_code_ = 0;
  other.error_.clear();
  return *this;
}

Decoder::~Decoder() = default;

bool Decoder::idle() const noexcept {
  return state_ != State::kPayload && header_size_ == 0 && !in_message_;
}

void Decoder::ShrinkToFit() noexcept {
  if (!idle()) return;
  if (message_in_buffer_) message_ = {};
  message_in_buffer_ = false;
  buffer_.reset();
  capacity_ = 0;
  size_ = 0;
}

void Decoder::Reserve(std::size_t needed) noexcept {
  if (needed <= capacity_) return;
  // Grows with the bytes received (not with the length a header announces), geometrically, and
  // never past the limit (which `needed` is within: headers are checked first).
  const std::size_t capacity =
      std::min(std::max({needed, capacity_ * 2, std::size_t{256}}), options_.max_message_bytes);
  auto grown = std::make_unique_for_overwrite<char[]>(capacity);
  if (size_ != 0) std::memcpy(grown.get(), buffer_.get(), size_);
  buffer_ = std::move(grown);
  capacity_ = capacity;
}

Decoder::Event Decoder::Fail(std::uint16_t code, std::string reason) noexcept {
  state_ = State::kError;
  error_code_ = code;
  error_ = std::move(reason);
  header_size_ = 0;
  in_message_ = false;
  message_in_buffer_ = false;
  size_ = 0;
  message_ = {};
  return Event::kError;
}

Decoder::Event Decoder::CheckText(const char* data, std::size_t size, std::size_t offset) noexcept {
  const std::size_t bad = ScanUtf8(utf8_, data, size);
  if (bad == size) return Event::kNeedMore;
  return Fail(kCloseInvalidPayload,
              absl::StrCat("text message is not valid UTF-8 (byte ", offset + bad, ")"));
}

bool Decoder::ReadHeader(std::span<char>& input) noexcept {
  // Takes header bytes from `input` until `want` of them are held.
  const auto gather = [&](std::size_t want) {
    if (header_size_ < want) {
      const std::size_t n = std::min(want - header_size_, input.size());
      if (n == 0) return false;
      std::memcpy(header_.data() + header_size_, input.data(), n);
      input = input.subspan(n);
      header_size_ = static_cast<std::uint8_t>(header_size_ + n);
    }
    return header_size_ >= want;
  };

  if (!gather(2)) return false;
  const auto b0 = static_cast<unsigned char>(header_[0]);
  const auto b1 = static_cast<unsigned char>(header_[1]);
  const bool fin = (b0 & 0x80) != 0;
  const std::uint8_t raw_opcode = b0 & 0x0F;
  const auto opcode = static_cast<Opcode>(raw_opcode);
  const bool masked = (b1 & 0x80) != 0;
  const std::uint8_t length7 = b1 & 0x7F;

  if ((b0 & 0x70) != 0) {
    Fail(kCloseProtocolError,
         absl::StrCat("frame sets reserved bits", (b0 & 0x40) != 0 ? " RSV1" : "",
                      (b0 & 0x20) != 0 ? " RSV2" : "", (b0 & 0x10) != 0 ? " RSV3" : "",
                      " but no extension was negotiated"));
    return false;
  }
  if (!IsKnownOpcode(raw_opcode)) {
    Fail(kCloseProtocolError, absl::StrCat("frame uses reserved opcode ", raw_opcode));
    return false;
  }
  if (!masked && options_.require_mask) {
    Fail(kCloseProtocolError, absl::StrCat("client ", OpcodeName(opcode), " frame is not masked"));
    return false;
  }
  if (IsControl(opcode) && !fin) {
    Fail(kCloseProtocolError,
         absl::StrCat(OpcodeName(opcode), " frame is fragmented (FIN clear on a control frame)"));
    return false;
  }
  if (opcode == Opcode::kContinuation && !in_message_) {
    Fail(kCloseProtocolError, "continuation frame without a fragmented message in progress");
    return false;
  }
  if ((opcode == Opcode::kText || opcode == Opcode::kBinary) && in_message_) {
    Fail(kCloseProtocolError,
         absl::StrCat(OpcodeName(opcode),
                      " frame while a fragmented message is in progress (expected a "
                      "continuation frame)"));
    return false;
  }

  const std::size_t length_bytes = length7 == 127 ? 8 : length7 == 126 ? 2 : 0;
  if (!gather(2 + length_bytes)) return false;
  const std::uint64_t length =
      length_bytes == 0 ? length7 : ReadBigEndian(header_.data() + 2, length_bytes);
  if (length_bytes == 8 && (length >> 63) != 0) {
    Fail(kCloseProtocolError, "64-bit payload length has its most significant bit set");
    return false;
  }
  if ((length_bytes == 2 && length < 126) || (length_bytes == 8 && length <= 0xFFFF)) {
    Fail(kCloseProtocolError, absl::StrCat("payload length ", length, " is not minimally encoded (",
                                           length_bytes * 8, "-bit form)"));
    return false;
  }
  if (IsControl(opcode)) {
    if (length > kMaxControlPayload) {
      Fail(kCloseProtocolError,
           absl::StrCat(OpcodeName(opcode), " frame payload of ", length,
                        " bytes exceeds the control frame limit of ", kMaxControlPayload));
      return false;
    }
  } else {
    const std::size_t before = in_message_ ? size_ : 0;
    if (length > options_.max_message_bytes - before) {
      Fail(kCloseTooBig,
           fin && !in_message_
               ? absl::StrCat("message of ", length, " bytes exceeds the limit of ",
                              options_.max_message_bytes)
               : absl::StrCat("fragmented message reaches ", before + length,
                              " bytes, exceeding the limit of ", options_.max_message_bytes));
      return false;
    }
  }

  const std::size_t header_bytes = 2 + length_bytes + (masked ? 4 : 0);
  if (!gather(header_bytes)) return false;
  frame_opcode_ = opcode;
  frame_fin_ = fin;
  frame_masked_ = masked;
  if (masked) std::memcpy(mask_.data(), header_.data() + 2 + length_bytes, 4);
  frame_length_ = length;
  frame_received_ = 0;
  if (opcode == Opcode::kText || opcode == Opcode::kBinary) {
    in_message_ = !fin;
    message_opcode_ = opcode;
    utf8_ = {};
    size_ = 0;
  }
  state_ = State::kPayload;
  return true;
}

Decoder::Event Decoder::FinishControl(absl::string_view payload) noexcept {
  message_ = payload;
  event_opcode_ = frame_opcode_;
  if (frame_opcode_ == Opcode::kPing) return Event::kPing;
  if (frame_opcode_ == Opcode::kPong) return Event::kPong;

  if (payload.size() == 1) {
    return Fail(kCloseProtocolError, "close frame has a 1-byte payload (a close code takes 2)");
  }
  std::uint16_t code = kCloseNoStatus;
  absl::string_view reason;
  if (payload.size() >= 2) {
    code = static_cast<std::uint16_t>(ReadBigEndian(payload.data(), 2));
    if (!IsValidCloseCode(code)) {
      return Fail(kCloseProtocolError,
                  absl::StrCat("close code ", code, " is not allowed on the wire"));
    }
    reason = payload.substr(2);
    if (!IsValidUtf8(reason)) return Fail(kCloseInvalidPayload, "close reason is not valid UTF-8");
  }
  // Keep the payload: the reason must outlive the caller's input.
  if (payload.data() != control_.data() && !payload.empty()) {
    std::memmove(control_.data(), payload.data(), payload.size());
  }
  message_ = {control_.data(), payload.size()};
  close_code_ = code;
  close_reason_ = message_.substr(std::min<std::size_t>(2, payload.size()));
  state_ = State::kClosed;
  in_message_ = false;
  size_ = 0;
  return Event::kClose;
}

Decoder::Event Decoder::Next(std::span<char>& input) noexcept {
  if (state_ == State::kError) return Event::kError;
  if (state_ == State::kClosed) {
    input = input.last(0);
    return Event::kNeedMore;
  }
  if (message_in_buffer_) {
    message_in_buffer_ = false;
    size_ = 0;
  }
  message_ = {};

  for (;;) {
    if (state_ == State::kHeader && !ReadHeader(input)) {
      return state_ == State::kError ? Event::kError : Event::kNeedMore;
    }
    const bool control = IsControl(frame_opcode_);
    const bool text = message_opcode_ == Opcode::kText && !control;
    absl::string_view payload;
    if (frame_received_ == 0 && input.size() >= frame_length_ &&
        (control || (frame_fin_ && !in_message_ && size_ == 0))) {
      // The whole frame is in the caller's buffer: unmask it there.
      const auto size = static_cast<std::size_t>(frame_length_);
      if (frame_masked_) Unmask(input.data(), size, mask_, 0);
      payload = {input.data(), size};
      input = input.subspan(size);
      if (text && CheckText(payload.data(), size, 0) == Event::kError) return Event::kError;
    } else {
      const auto size = static_cast<std::size_t>(
          std::min<std::uint64_t>(frame_length_ - frame_received_, input.size()));
      char* out;
      if (control) {
        out = control_.data() + frame_received_;
      } else {
        Reserve(size_ + size);
        out = buffer_.get() + size_;
      }
      if (size != 0) std::memcpy(out, input.data(), size);
      input = input.subspan(size);
      if (frame_masked_) Unmask(out, size, mask_, frame_received_);
      frame_received_ += size;
      if (!control) {
        const std::size_t offset = size_;
        size_ += size;
        if (text && CheckText(out, size, offset) == Event::kError) return Event::kError;
      }
      if (frame_received_ < frame_length_) return Event::kNeedMore;
      payload = control ? absl::string_view(control_.data(), frame_length_)
                        : absl::string_view(buffer_.get(), size_);
    }

    state_ = State::kHeader;
    header_size_ = 0;
    if (control) return FinishControl(payload);
    if (!frame_fin_) continue;
    if (text && utf8_.need != 0) {
      return Fail(kCloseInvalidPayload,
                  absl::StrCat("text message is not valid UTF-8 (it ends inside a ",
                               "multi-byte sequence at byte ", payload.size(), ")"));
    }
    in_message_ = false;
    message_in_buffer_ = !payload.empty() && payload.data() == buffer_.get();
    if (!message_in_buffer_) size_ = 0;
    message_ = payload;
    event_opcode_ = message_opcode_;
    return Event::kMessage;
  }
}

FrameHeader MakeFrameHeader(Opcode opcode, std::uint64_t payload_bytes) noexcept {
  FrameHeader header{};
  header.bytes[0] = static_cast<char>(0x80 | static_cast<std::uint8_t>(opcode));
  std::size_t length_bytes = 0;
  if (payload_bytes < 126) {
    header.bytes[1] = static_cast<char>(payload_bytes);
  } else if (payload_bytes <= 0xFFFF) {
    header.bytes[1] = 126;
    length_bytes = 2;
  } else {
    header.bytes[1] = 127;
    length_bytes = 8;
  }
  for (std::size_t i = 0; i < length_bytes; ++i) {
    header.bytes[2 + i] = static_cast<char>(payload_bytes >> (8 * (length_bytes - 1 - i)));
  }
  header.size = static_cast<std::uint8_t>(2 + length_bytes);
  return header;
}

std::string MakeCloseFrame(std::uint16_t code, absl::string_view reason) {
  if (code == kCloseNoStatus) return std::string(MakeFrameHeader(Opcode::kClose, 0).view());
  std::size_t cut = std::min(reason.size(), kMaxCloseReason);
  if (cut < reason.size()) {
    // Back off to the start of the code point that straddles the cut.
    while (cut > 0 && (static_cast<unsigned char>(reason[cut]) & 0xC0) == 0x80) --cut;
  }
  const FrameHeader header = MakeFrameHeader(Opcode::kClose, 2 + cut);
  std::string frame;
  frame.reserve(header.size + 2 + cut);
  frame.append(header.view().data(), header.size);
  frame.push_back(static_cast<char>(code >> 8));
  frame.push_back(static_cast<char>(code & 0xFF));
  frame.append(reason.data(), cut);
  return frame;
}

std::string MakeControlFrame(Opcode opcode, absl::string_view payload) {
  payload = payload.substr(0, kMaxControlPayload);
  const FrameHeader header = MakeFrameHeader(opcode, payload.size());
  std::string frame;
  frame.reserve(header.size + payload.size());
  frame.append(header.view().data(), header.size);
  frame.append(payload.data(), payload.size());
  return frame;
}

}  // namespace cqrs::net::ws
