// Fuzzes the event gateway's inbound path: ws::Decoder over a client byte stream, then
// DecodeClientMessage on every message (and the server-side encoders through round trips).
//
// Input: byte 0 = control c:
//   bit 0     wire format of the connection: 0 JSON, 1 proto;
//   bits 1-3  k: k bytes of chunk lengths follow (each + 1); k == 0: the stream goes byte by byte;
//   bits 4-5  max_message_bytes: 4096, 125, 1000, 65536;
//   bit 6     set: unmasked frames are accepted (require_mask = false).
// The rest is the stream. Properties:
//   1. decoding the stream in one piece and in the chosen chunks (each a separate allocation,
//      so that nothing may point into an earlier one; the decoder shrunk whenever idle and moved
//      now and then, as the gateway does) yields the same events, messages, close codes and
//      errors, and leaves the decoder in the same state;
//   2. every event respects its contract: messages within the limit, text valid UTF-8, control
//      payloads <= 125 bytes, close codes valid, error codes 1002/1007/1009, the buffer within
//      the limit (the run uses -malloc_limit_mb: allocating an announced length would abort);
//   3. whatever the decoder hands out, the server encoders re-frame, and that decodes the same;
//   4. a message that DecodeClientMessage accepts (in either format) encodes back, and that
//      decodes to an equal message; so does a ServerMessage answering it (EncodeServerMessage);
//   5. ChooseSubprotocol, given the stream's first bytes as a header, picks one of ours or fails
//      with kInvalidArgument.

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "cqrs/net/gateway_protocol.h"
#include "cqrs/net/websocket_codec.h"
#include "fuzz_util.h"

namespace {

using cqrs::fuzz::Deterministic;

using cqrs::net::WireFormat;
using cqrs::net::ws::Decoder;
using cqrs::net::ws::Opcode;
using Event = Decoder::Event;

constexpr std::array<std::size_t, 4> kLimits = {4096, 125, 1000, 65536};

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

struct Outcome {
  Event event;
  Opcode opcode = Opcode::kContinuation;
  std::string bytes;  // message() or close_reason() or error().
  std::uint16_t code = 0;
  bool operator==(const Outcome&) const = default;
};

// Property 4 for one message payload, in `format`.
void CheckClientMessage(WireFormat format, absl::string_view payload) {
  cqrs::v1::ClientMessage message;
  const absl::Status status = cqrs::net::DecodeClientMessage(format, payload, message);
  if (!status.ok()) {
    Check(status.code() == absl::StatusCode::kInvalidArgument,
          "decode errors are kInvalidArgument");
    Check(!status.message().empty(), "decode errors say what is wrong");
    return;
  }
  Check(message.kind_case() != cqrs::v1::ClientMessage::KIND_NOT_SET,
        "accepted messages set a kind");

  const std::string binary = Deterministic(message);
  cqrs::v1::ClientMessage again;
  Check(cqrs::net::DecodeClientMessage(WireFormat::kProto, binary, again).ok(),
        "a decoded message re-serializes to bytes that decode");
  Check(Deterministic(again) == binary, "binary round trip gives an equal message");

  // JSON carries no unknown fields.
  cqrs::v1::ClientMessage known = message;
  known.DiscardUnknownFields();
  std::string json;
  Check(google::protobuf::util::MessageToJsonString(known, &json).ok(),
        "a decoded message prints as JSON");
  cqrs::v1::ClientMessage from_json;
  Check(cqrs::net::DecodeClientMessage(WireFormat::kJson, json, from_json).ok(),
        "printed JSON decodes");
  Check(google::protobuf::util::MessageDifferencer::Equals(known, from_json),
        "JSON round trip gives an equal message");

  // The gateway's answer to it, in both formats.
  cqrs::v1::ServerMessage answer;
  switch (message.kind_case()) {
    case cqrs::v1::ClientMessage::kSubscribe:
      answer.mutable_subscribed()->set_subscription_id(message.subscribe().subscription_id());
      answer.mutable_subscribed()->set_head_offset(message.subscribe().from_offset());
      answer.mutable_subscribed()->set_epoch(message.subscribe().epoch());
      break;
    case cqrs::v1::ClientMessage::kUnsubscribe:
      answer.mutable_error()->set_code(cqrs::v1::GatewayError::UNKNOWN_SUBSCRIPTION);
      answer.mutable_error()->set_subscription_id(message.unsubscribe().subscription_id());
      break;
    default:
      answer.mutable_pong()->set_nonce(message.ping().nonce());
      break;
  }
  const absl::StatusOr<std::string> answer_json =
      cqrs::net::EncodeServerMessage(WireFormat::kJson, answer);
  Check(answer_json.ok(), "a server message without Any encodes as JSON");
  cqrs::v1::ServerMessage parsed;
  Check(google::protobuf::util::JsonStringToMessage(*answer_json, &parsed).ok(),
        "an encoded server message parses as JSON");
  Check(google::protobuf::util::MessageDifferencer::Equals(answer, parsed),
        "server message JSON round trip");
  const absl::StatusOr<std::string> answer_proto =
      cqrs::net::EncodeServerMessage(WireFormat::kProto, answer);
  Check(answer_proto.ok() && parsed.ParseFromString(*answer_proto) &&
            google::protobuf::util::MessageDifferencer::Equals(answer, parsed),
        "server message binary round trip");
}

// Property 3: what the decoder handed out, framed by the server encoders, decodes the same.
void CheckReframed(const Outcome& outcome, std::size_t limit) {
  std::string frame;
  switch (outcome.event) {
    case Event::kMessage:
      frame =
          std::string(cqrs::net::ws::MakeFrameHeader(outcome.opcode, outcome.bytes.size()).view()) +
          outcome.bytes;
      break;
    case Event::kPing:
    case Event::kPong:
      frame = cqrs::net::ws::MakeControlFrame(outcome.opcode, outcome.bytes);
      break;
    case Event::kClose:
      frame = cqrs::net::ws::MakeCloseFrame(outcome.code, outcome.bytes);
      break;
    default:
      return;
  }
  Decoder decoder({.max_message_bytes = limit, .require_mask = false});
  std::span<char> input(frame.data(), frame.size());
  const Event event = decoder.Next(input);
  Check(event == outcome.event, "a re-framed event decodes to the same event");
  Check(input.empty(), "a re-framed event is consumed whole");
  if (event == Event::kClose) {
    Check(decoder.close_code() == outcome.code, "re-framed close keeps its code");
    Check(decoder.close_reason() == outcome.bytes, "re-framed close keeps its reason");
  } else {
    Check(decoder.message() == outcome.bytes, "re-framed payload is unchanged");
    Check(decoder.message_opcode() == outcome.opcode, "re-framed opcode is unchanged");
  }
}

// Property 2 for the event just returned, and its record.
Outcome Record(const Decoder& decoder, Event event, std::size_t limit) {
  Check(decoder.capacity() <= limit, "the buffer stays within the message limit");
  Outcome outcome{event};
  switch (event) {
    case Event::kNeedMore:
      break;
    case Event::kMessage:
      outcome.opcode = decoder.message_opcode();
      outcome.bytes = std::string(decoder.message());
      Check(outcome.opcode == Opcode::kText || outcome.opcode == Opcode::kBinary,
            "messages are text or binary");
      Check(outcome.bytes.size() <= limit, "messages are within the limit");
      Check(outcome.opcode != Opcode::kText || cqrs::net::ws::IsValidUtf8(outcome.bytes),
            "text messages are UTF-8");
      break;
    case Event::kPing:
    case Event::kPong:
      outcome.opcode = decoder.message_opcode();
      outcome.bytes = std::string(decoder.message());
      Check(outcome.bytes.size() <= cqrs::net::ws::kMaxControlPayload,
            "control payloads are small");
      break;
    case Event::kClose:
      outcome.opcode = decoder.message_opcode();
      outcome.code = decoder.close_code();
      outcome.bytes = std::string(decoder.close_reason());
      Check(outcome.code == cqrs::net::ws::kCloseNoStatus ||
                cqrs::net::ws::IsValidCloseCode(outcome.code),
            "close codes are valid");
      Check(cqrs::net::ws::IsValidUtf8(outcome.bytes), "close reasons are UTF-8");
      Check(decoder.closed() && decoder.idle(), "a close frame closes the decoder");
      break;
    case Event::kError:
      outcome.code = decoder.error_code();
      outcome.bytes = std::string(decoder.error());
      Check(outcome.code == cqrs::net::ws::kCloseProtocolError ||
                outcome.code == cqrs::net::ws::kCloseInvalidPayload ||
                outcome.code == cqrs::net::ws::kCloseTooBig,
            "errors carry 1002, 1007 or 1009");
      Check(!outcome.bytes.empty(), "errors say what is wrong");
      break;
  }
  return outcome;
}

// Runs `decoder` over `input` until it needs more; false after an error.
bool Drain(Decoder& decoder, std::span<char> input, std::size_t limit, std::vector<Outcome>& out) {
  for (;;) {
    const Event event = decoder.Next(input);
    if (event == Event::kNeedMore) {
      Check(input.empty(), "kNeedMore consumes the whole input");
      return true;
    }
    out.push_back(Record(decoder, event, limit));
    if (event == Event::kError) return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Invalid UTF-8 in string fields is an expected parse failure; keep protobuf quiet about it.
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t control = data[0];
  const WireFormat format = (control & 1) != 0 ? WireFormat::kProto : WireFormat::kJson;
  const std::size_t k = (control >> 1) & 7;
  const std::size_t limit = kLimits[(control >> 4) & 3];
  const cqrs::net::ws::DecoderOptions options{.max_message_bytes = limit,
                                              .require_mask = (control & 0x40) == 0};
  if (size < 1 + k) return 0;
  std::vector<std::size_t> chunks;
  for (std::size_t i = 0; i < k; ++i) chunks.push_back(1 + data[1 + i]);
  if (chunks.empty()) chunks.push_back(1);
  const char* stream = reinterpret_cast<const char*>(data + 1 + k);
  const std::size_t length = size - 1 - k;

  std::vector<Outcome> whole;
  Decoder one_shot(options);
  {
    std::vector<char> copy(stream, stream + length);
    Drain(one_shot, copy, limit, whole);
  }

  std::vector<Outcome> split;
  Decoder pieces(options);
  std::size_t at = 0;
  for (std::size_t i = 0; at < length; ++i) {
    const std::size_t n = std::min(chunks[i % chunks.size()], length - at);
    auto piece = std::make_unique<char[]>(n);
    std::memcpy(piece.get(), stream + at, n);
    at += n;
    if (!Drain(pieces, {piece.get(), n}, limit, split)) break;
    if (pieces.idle()) {
      pieces.ShrinkToFit();
      Check(pieces.capacity() == 0, "an idle decoder shrinks to nothing");
    }
    if (i % 3 == 2) {
      Decoder moved(std::move(pieces));
      pieces = std::move(moved);
    }
  }

  Check(whole == split, "split decode yields the same events as one-shot");
  Check(one_shot.failed() == pieces.failed(), "split and one-shot agree on failure");
  Check(one_shot.closed() == pieces.closed(), "split and one-shot agree on close");
  Check(one_shot.idle() == pieces.idle(), "split and one-shot agree on what is pending");
  if (one_shot.closed()) {
    Check(one_shot.close_code() == pieces.close_code() &&
              one_shot.close_reason() == pieces.close_reason(),
          "the close reason survives the input and moves");
  }

  const absl::StatusOr<cqrs::net::Subprotocol> chosen =
      cqrs::net::ChooseSubprotocol({stream, std::min<std::size_t>(length, 64)});
  if (chosen.ok()) {
    Check(chosen->header.empty() || chosen->header == cqrs::net::SubprotocolName(chosen->format),
          "the echoed subprotocol names the chosen format");
  } else {
    Check(chosen.status().code() == absl::StatusCode::kInvalidArgument,
          "an unsupported subprotocol is kInvalidArgument");
  }

  for (const Outcome& outcome : whole) {
    CheckReframed(outcome, limit);
    if (outcome.event != Event::kMessage) continue;
    CheckClientMessage(format, outcome.bytes);
    CheckClientMessage(format == WireFormat::kJson ? WireFormat::kProto : WireFormat::kJson,
                       outcome.bytes);
  }
  return 0;
}
