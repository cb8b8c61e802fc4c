#include "cqrs/net/websocket_codec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/beast/_experimental/test/stream.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "testing/websocket_frames.h"

namespace cqrs::net::ws {
namespace {

namespace asio = ::boost::asio;
namespace beast = ::boost::beast;
namespace websocket = ::boost::beast::websocket;

using ::cqrs::testing::ClientClose;
using ::cqrs::testing::ClientFrame;
using ::cqrs::testing::ClientFrameHeader;
using ::cqrs::testing::ClientFrameOptions;
using Event = Decoder::Event;

// One decoder event, with copies of what came with it.
struct Result {
  Event event;
  Opcode opcode = Opcode::kContinuation;
  std::string message;
  std::uint16_t code = 0;  // close_code() for kClose, error_code() for kError.
  std::string text;        // close_reason() for kClose, error() for kError.

  friend bool operator==(const Result&, const Result&) = default;
  friend std::ostream& operator<<(std::ostream& out, const Result& r) {
    return out << "{event " << static_cast<int>(r.event) << ", " << OpcodeName(r.opcode) << ", "
               << r.message.size() << " bytes, code " << r.code << ", \"" << r.text << "\"}";
  }
};

Result Capture(const Decoder& decoder, Event event) {
  Result result{event};
  switch (event) {
    case Event::kNeedMore:
      break;
    case Event::kMessage:
    case Event::kPing:
    case Event::kPong:
      result.opcode = decoder.message_opcode();
      result.message = std::string(decoder.message());
      break;
    case Event::kClose:
      result.opcode = decoder.message_opcode();
      result.code = decoder.close_code();
      result.text = std::string(decoder.close_reason());
      break;
    case Event::kError:
      result.code = decoder.error_code();
      result.text = std::string(decoder.error());
      break;
  }
  return result;
}

// Feeds `bytes` in chunks of `chunk` bytes (0: all at once), collecting every event other
// than kNeedMore; stops at the first error.
std::vector<Result> Decode(Decoder& decoder, std::string bytes, std::size_t chunk = 0) {
  std::vector<Result> results;
  if (chunk == 0) chunk = std::max<std::size_t>(bytes.size(), 1);
  for (std::size_t at = 0; at < bytes.size() || at == 0; at += chunk) {
    // A fresh copy per chunk, so that nothing may point into an earlier one.
    std::string piece = bytes.substr(at, chunk);
    std::span<char> input(piece.data(), piece.size());
    for (;;) {
      const Event event = decoder.Next(input);
      if (event == Event::kNeedMore) {
        EXPECT_TRUE(input.empty());
        break;
      }
      results.push_back(Capture(decoder, event));
      if (event == Event::kError) return results;
    }
    if (bytes.empty()) break;
  }
  return results;
}

std::vector<Result> Decode(std::string bytes, std::size_t chunk = 0, DecoderOptions options = {}) {
  Decoder decoder(options);
  return Decode(decoder, std::move(bytes), chunk);
}

Result Message(Opcode opcode, std::string payload) {
  return {Event::kMessage, opcode, std::move(payload)};
}
Result Control(Event event, Opcode opcode, std::string payload) {
  return {event, opcode, std::move(payload)};
}
Result Close(std::uint16_t code, std::string reason) {
  return {Event::kClose, Opcode::kClose, "", code, std::move(reason)};
}
Result Error(std::uint16_t code, std::string reason) {
  return {Event::kError, Opcode::kContinuation, "", code, std::move(reason)};
}

// The single error decoding `bytes` gives.
Result ErrorOf(std::string bytes, DecoderOptions options = {}) {
  const auto results = Decode(std::move(bytes), 0, options);
  if (results.empty()) return {Event::kNeedMore};
  return results.back();
}

// A stream with every kind of event: text, 16-bit and 64-bit lengths, a fragmented binary message
// with a ping and a pong between its fragments, and a close.
std::string MixedStream() {
  std::string bytes = ClientFrame(Opcode::kText, "hello");
  bytes += ClientFrame(Opcode::kBinary, std::string(300, 'b'));
  bytes += ClientFrame(Opcode::kText, std::string(70'000, 't'));
  bytes += ClientFrame(Opcode::kBinary, "frag-1|", {.fin = false});
  bytes += ClientFrame(Opcode::kPing, "are you there");
  bytes += ClientFrame(Opcode::kContinuation, "frag-2|", {.fin = false, .key = {1, 2, 3, 4}});
  bytes += ClientFrame(Opcode::kPong, "");
  bytes += ClientFrame(Opcode::kContinuation, "frag-3");
  bytes += ClientClose(kCloseGoingAway, "bye");
  return bytes;
}

std::vector<Result> MixedStreamEvents() {
  return {Message(Opcode::kText, "hello"),
          Message(Opcode::kBinary, std::string(300, 'b')),
          Message(Opcode::kText, std::string(70'000, 't')),
          Control(Event::kPing, Opcode::kPing, "are you there"),
          Control(Event::kPong, Opcode::kPong, ""),
          Message(Opcode::kBinary, "frag-1|frag-2|frag-3"),
          Close(kCloseGoingAway, "bye")};
}

bool Inside(absl::string_view view, const std::string& buffer) {
  return view.data() >= buffer.data() && view.data() + view.size() <= buffer.data() + buffer.size();
}

TEST(WebSocketDecoder, WholeFrameIsUnmaskedInPlaceWithoutACopy) {
  std::string bytes = ClientFrame(Opcode::kText, "hello, world");
  Decoder decoder;
  std::span<char> input(bytes.data(), bytes.size());
  ASSERT_EQ(decoder.Next(input), Event::kMessage);
  EXPECT_EQ(decoder.message(), "hello, world");
  EXPECT_EQ(decoder.message_opcode(), Opcode::kText);
  EXPECT_TRUE(Inside(decoder.message(), bytes));
  EXPECT_TRUE(input.empty());
  EXPECT_TRUE(decoder.idle());
  EXPECT_EQ(decoder.capacity(), 0u);
  EXPECT_EQ(decoder.Next(input), Event::kNeedMore);
}

TEST(WebSocketDecoder, PingPayloadIsZeroCopyToo) {
  std::string bytes = ClientFrame(Opcode::kPing, "nonce-17");
  Decoder decoder;
  std::span<char> input(bytes.data(), bytes.size());
  ASSERT_EQ(decoder.Next(input), Event::kPing);
  EXPECT_EQ(decoder.message(), "nonce-17");
  EXPECT_EQ(decoder.message_opcode(), Opcode::kPing);
  EXPECT_TRUE(Inside(decoder.message(), bytes));
}

TEST(WebSocketDecoder, SixteenAndSixtyFourBitLengths) {
  for (const std::size_t size : {125u, 126u, 300u, 65'535u, 65'536u, 200'000u}) {
    std::string payload(size, '\0');
    for (std::size_t i = 0; i < size; ++i) payload[i] = static_cast<char>(i * 7);
    std::string bytes = ClientFrame(Opcode::kBinary, payload);
    Decoder decoder;
    std::span<char> input(bytes.data(), bytes.size());
    ASSERT_EQ(decoder.Next(input), Event::kMessage) << size;
    EXPECT_EQ(decoder.message(), payload) << size;
    EXPECT_TRUE(Inside(decoder.message(), bytes)) << size;
    EXPECT_EQ(decoder.capacity(), 0u);
  }
}

TEST(WebSocketDecoder, TwoFramesInOneInput) {
  std::string bytes = ClientFrame(Opcode::kText, "first") + ClientFrame(Opcode::kBinary, "second");
  Decoder decoder;
  std::span<char> input(bytes.data(), bytes.size());
  ASSERT_EQ(decoder.Next(input), Event::kMessage);
  EXPECT_EQ(decoder.message(), "first");
  EXPECT_FALSE(input.empty());
  ASSERT_EQ(decoder.Next(input), Event::kMessage);
  EXPECT_EQ(decoder.message(), "second");
  EXPECT_EQ(decoder.message_opcode(), Opcode::kBinary);
  EXPECT_TRUE(input.empty());
  EXPECT_EQ(decoder.Next(input), Event::kNeedMore);
}

TEST(WebSocketDecoder, SplitHeaderAtEveryPoint) {
  // 64-bit length and a mask: a 14-byte header.
  const std::string bytes = ClientFrame(Opcode::kBinary, std::string(70'000, 'x'));
  for (std::size_t cut = 1; cut < 14; ++cut) {
    Decoder decoder;
    std::string head = bytes.substr(0, cut);
    std::span<char> input(head.data(), head.size());
    ASSERT_EQ(decoder.Next(input), Event::kNeedMore) << cut;
    EXPECT_TRUE(input.empty());
    EXPECT_FALSE(decoder.idle());
    std::string rest = bytes.substr(cut);
    input = {rest.data(), rest.size()};
    ASSERT_EQ(decoder.Next(input), Event::kMessage) << cut;
    EXPECT_EQ(decoder.message(), std::string(70'000, 'x'));
    // Only the header was split: the payload is still read in place.
    EXPECT_TRUE(Inside(decoder.message(), rest)) << cut;
    EXPECT_TRUE(decoder.idle());
  }
}

TEST(WebSocketDecoder, MixedStreamInOnePiece) {
  EXPECT_EQ(Decode(MixedStream()), MixedStreamEvents());
}

TEST(WebSocketDecoder, MixedStreamByteByByte) {
  EXPECT_EQ(Decode(MixedStream(), 1), MixedStreamEvents());
}

TEST(WebSocketDecoder, MixedStreamInAssortedChunks) {
  for (const std::size_t chunk : {2u, 3u, 7u, 13u, 64u, 1000u, 65'537u}) {
    EXPECT_EQ(Decode(MixedStream(), chunk), MixedStreamEvents()) << chunk;
  }
}

TEST(WebSocketDecoder, FragmentedMessageWithControlFramesBetween) {
  Decoder decoder;
  std::string first = ClientFrame(Opcode::kText, "Hel", {.fin = false});
  std::span<char> input(first.data(), first.size());
  EXPECT_EQ(decoder.Next(input), Event::kNeedMore);
  EXPECT_FALSE(decoder.idle());  // A message is in progress.

  std::string rest = ClientFrame(Opcode::kPing, "p") +
                     ClientFrame(Opcode::kContinuation, "lo, ", {.fin = false}) +
                     ClientFrame(Opcode::kPong, "q") + ClientFrame(Opcode::kContinuation, "wörld");
  input = {rest.data(), rest.size()};
  ASSERT_EQ(decoder.Next(input), Event::kPing);
  EXPECT_EQ(decoder.message(), "p");
  ASSERT_EQ(decoder.Next(input), Event::kPong);
  EXPECT_EQ(decoder.message(), "q");
  ASSERT_EQ(decoder.Next(input), Event::kMessage);
  EXPECT_EQ(decoder.message(), "Hello, wörld");
  EXPECT_EQ(decoder.message_opcode(), Opcode::kText);
  EXPECT_FALSE(Inside(decoder.message(), rest));  // Reassembled inside the decoder.
  EXPECT_TRUE(decoder.idle());
  EXPECT_EQ(decoder.Next(input), Event::kNeedMore);
}

TEST(WebSocketDecoder, EmptyMessages) {
  EXPECT_EQ(Decode(ClientFrame(Opcode::kText, "") + ClientFrame(Opcode::kBinary, "") +
                   ClientFrame(Opcode::kText, "", {.fin = false}) +
                   ClientFrame(Opcode::kContinuation, "")),
            (std::vector<Result>{Message(Opcode::kText, ""), Message(Opcode::kBinary, ""),
                                 Message(Opcode::kText, "")}));
}

TEST(WebSocketDecoder, ExactlyMaxIsAcceptedAndMaxPlusOneIsNot) {
  const DecoderOptions options{.max_message_bytes = 1000};
  EXPECT_EQ(Decode(ClientFrame(Opcode::kBinary, std::string(1000, 'm')), 0, options),
            std::vector<Result>{Message(Opcode::kBinary, std::string(1000, 'm'))});
  EXPECT_EQ(Decode(ClientFrame(Opcode::kBinary, std::string(1000, 'm')), 1, options),
            std::vector<Result>{Message(Opcode::kBinary, std::string(1000, 'm'))});
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kBinary, std::string(1001, 'm')), options),
            Error(kCloseTooBig, "message of 1001 bytes exceeds the limit of 1000"));
}

TEST(WebSocketDecoder, OversizeIsRefusedFromTheHeaderAlone) {
  Decoder decoder({.max_message_bytes = 1000});
  std::string header = ClientFrameHeader(Opcode::kText, 1001);
  std::span<char> input(header.data(), header.size());
  ASSERT_EQ(decoder.Next(input), Event::kError);
  EXPECT_EQ(decoder.error_code(), kCloseTooBig);
  EXPECT_EQ(decoder.capacity(), 0u);
}

TEST(WebSocketDecoder, HugeLengthNeverAllocates) {
  Decoder decoder;  // 1 MiB.
  std::string header = ClientFrameHeader(Opcode::kBinary, std::uint64_t{1} << 40);
  std::span<char> input(header.data(), header.size());
  ASSERT_EQ(decoder.Next(input), Event::kError);
  EXPECT_EQ(decoder.error(), "message of 1099511627776 bytes exceeds the limit of 1048576");
  EXPECT_EQ(decoder.capacity(), 0u);
}

TEST(WebSocketDecoder, MaxOverFragmentsIsAcceptedAndMaxPlusOneRefusedAtTheHeader) {
  const DecoderOptions options{.max_message_bytes = 1000};
  EXPECT_EQ(
      Decode(ClientFrame(Opcode::kText, std::string(600, 'a'), {.fin = false}) +
                 ClientFrame(Opcode::kContinuation, std::string(400, 'b')),
             7, options),
      std::vector<Result>{Message(Opcode::kText, std::string(600, 'a') + std::string(400, 'b'))});

  Decoder decoder(options);
  std::string first = ClientFrame(Opcode::kText, std::string(600, 'a'), {.fin = false});
  std::span<char> input(first.data(), first.size());
  ASSERT_EQ(decoder.Next(input), Event::kNeedMore);
  // Only the header of the next fragment: no byte of its payload has arrived.
  std::string header = ClientFrameHeader(Opcode::kContinuation, 401, {.fin = false});
  input = {header.data(), header.size()};
  ASSERT_EQ(decoder.Next(input), Event::kError);
  EXPECT_EQ(decoder.error_code(), kCloseTooBig);
  EXPECT_EQ(decoder.error(), "fragmented message reaches 1001 bytes, exceeding the limit of 1000");
  EXPECT_LE(decoder.capacity(), 1000u);
}

TEST(WebSocketDecoder, BufferGrowsWithTheBytesReceivedNotTheLengthAnnounced) {
  Decoder decoder;
  std::string bytes = ClientFrame(Opcode::kBinary, std::string(1'000'000, 'z'));
  std::string start = bytes.substr(0, 100);
  std::span<char> input(start.data(), start.size());
  ASSERT_EQ(decoder.Next(input), Event::kNeedMore);
  EXPECT_LT(decoder.capacity(), 4096u);
}

TEST(WebSocketDecoder, UnmaskedFrameIsRefusedUnlessAllowed) {
  const std::string bytes = ClientFrame(Opcode::kText, "plain", {.mask = false});
  EXPECT_EQ(ErrorOf(bytes), Error(kCloseProtocolError, "client text frame is not masked"));
  EXPECT_EQ(Decode(bytes, 0, {.require_mask = false}),
            std::vector<Result>{Message(Opcode::kText, "plain")});
}

TEST(WebSocketDecoder, ReservedBitsAreRefused) {
  EXPECT_EQ(
      ErrorOf(ClientFrame(Opcode::kText, "x", {.rsv = 0x40})),
      Error(kCloseProtocolError, "frame sets reserved bits RSV1 but no extension was negotiated"));
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kText, "x", {.rsv = 0x20})).code, kCloseProtocolError);
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kText, "x", {.rsv = 0x30})).text,
            "frame sets reserved bits RSV2 RSV3 but no extension was negotiated");
}

TEST(WebSocketDecoder, ReservedOpcodesAreRefused) {
  for (std::uint8_t opcode : {3, 4, 5, 6, 7, 11, 12, 13, 14, 15}) {
    EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kText, "x", {.raw_opcode = opcode})),
              Error(kCloseProtocolError, absl::StrCat("frame uses reserved opcode ", opcode)));
  }
}

TEST(WebSocketDecoder, ControlFramesMustBeWholeAndSmall) {
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kPing, "x", {.fin = false})),
            Error(kCloseProtocolError, "ping frame is fragmented (FIN clear on a control frame)"));
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kPong, std::string(126, 'x'))),
            Error(kCloseProtocolError,
                  "pong frame payload of 126 bytes exceeds the control frame limit of 125"));
  EXPECT_EQ(ErrorOf(ClientClose(kCloseNormal, std::string(124, 'x'))).code, kCloseProtocolError);
  // 125 bytes, arriving in pieces, is fine.
  EXPECT_EQ(Decode(ClientFrame(Opcode::kPing, std::string(125, 'p')), 10),
            std::vector<Result>{Control(Event::kPing, Opcode::kPing, std::string(125, 'p'))});
}

TEST(WebSocketDecoder, FragmentationRules) {
  EXPECT_EQ(
      ErrorOf(ClientFrame(Opcode::kContinuation, "x")),
      Error(kCloseProtocolError, "continuation frame without a fragmented message in progress"));
  EXPECT_EQ(
      ErrorOf(ClientFrame(Opcode::kText, "a", {.fin = false}) + ClientFrame(Opcode::kBinary, "b")),
      Error(kCloseProtocolError,
            "binary frame while a fragmented message is in progress (expected a "
            "continuation frame)"));
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kBinary, "a", {.fin = false}) +
                    ClientFrame(Opcode::kText, "b", {.fin = false}))
                .code,
            kCloseProtocolError);
  // A finished message lets the next one start.
  EXPECT_EQ(
      Decode(ClientFrame(Opcode::kText, "a", {.fin = false}) +
             ClientFrame(Opcode::kContinuation, "b") + ClientFrame(Opcode::kContinuation, "c")),
      (std::vector<Result>{Message(Opcode::kText, "ab"),
                           Error(kCloseProtocolError,
                                 "continuation frame without a fragmented message in "
                                 "progress")}));
}

TEST(WebSocketDecoder, LengthEncodingRules) {
  EXPECT_EQ(ErrorOf(ClientFrameHeader(Opcode::kBinary, std::uint64_t{1} << 63)),
            Error(kCloseProtocolError, "64-bit payload length has its most significant bit set"));
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kBinary, "abc", {.length_bits = 16})),
            Error(kCloseProtocolError, "payload length 3 is not minimally encoded (16-bit form)"));
  EXPECT_EQ(
      ErrorOf(ClientFrame(Opcode::kBinary, std::string(200, 'x'), {.length_bits = 64})),
      Error(kCloseProtocolError, "payload length 200 is not minimally encoded (64-bit form)"));
}

TEST(WebSocketDecoder, TextMustBeUtf8) {
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kText, "ok\xff")),
            Error(kCloseInvalidPayload, "text message is not valid UTF-8 (byte 2)"));
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kText, "caf\xc3")),
            Error(kCloseInvalidPayload,
                  "text message is not valid UTF-8 (it ends inside a multi-byte sequence at "
                  "byte 4)"));
  // Binary messages are not checked.
  EXPECT_EQ(Decode(ClientFrame(Opcode::kBinary, "ok\xff")),
            std::vector<Result>{Message(Opcode::kBinary, "ok\xff")});
  // A code point split between fragments is fine ("é" is C3 A9).
  EXPECT_EQ(Decode(ClientFrame(Opcode::kText, "caf\xc3", {.fin = false}) +
                   ClientFrame(Opcode::kContinuation, "\xa9!")),
            std::vector<Result>{Message(Opcode::kText, "café!")});
  // Checked over the reassembled message: offsets count from its start.
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kText, "abc", {.fin = false}) +
                    ClientFrame(Opcode::kContinuation, "\xed\xa0\x80")),  // A surrogate.
            Error(kCloseInvalidPayload, "text message is not valid UTF-8 (byte 4)"));
}

TEST(WebSocketDecoder, InvalidUtf8FailsBeforeTheMessageEnds) {
  Decoder decoder;
  std::string first = ClientFrame(Opcode::kText, "bad \xc0\xaf", {.fin = false});
  std::span<char> input(first.data(), first.size());
  EXPECT_EQ(decoder.Next(input), Event::kError);
  EXPECT_EQ(decoder.error_code(), kCloseInvalidPayload);
}

TEST(WebSocketDecoder, CloseFrames) {
  EXPECT_EQ(Decode(ClientFrame(Opcode::kClose, "")),
            std::vector<Result>{Close(kCloseNoStatus, "")});
  EXPECT_EQ(Decode(ClientClose(kCloseNormal)), std::vector<Result>{Close(kCloseNormal, "")});
  EXPECT_EQ(Decode(ClientClose(4000, "app says ciao ✓"), 3),
            std::vector<Result>{Close(4000, "app says ciao ✓")});
  EXPECT_EQ(ErrorOf(ClientFrame(Opcode::kClose, "\x03")),
            Error(kCloseProtocolError, "close frame has a 1-byte payload (a close code takes 2)"));
  EXPECT_EQ(ErrorOf(ClientClose(kCloseNormal, "\xc3\x28")),
            Error(kCloseInvalidPayload, "close reason is not valid UTF-8"));
}

TEST(WebSocketDecoder, CloseCodesNotAllowedOnTheWire) {
  for (std::uint16_t code : {0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535}) {
    EXPECT_EQ(ErrorOf(ClientClose(code)),
              Error(kCloseProtocolError,
                    absl::StrCat("close code ", code, " is not allowed on the wire")));
  }
  for (std::uint16_t code :
       {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999}) {
    EXPECT_EQ(Decode(ClientClose(code)), std::vector<Result>{Close(code, "")}) << code;
  }
}

TEST(WebSocketDecoder, CloseReasonOutlivesTheInputAndLaterBytesAreDiscarded) {
  Decoder decoder;
  {
    std::string bytes =
        ClientClose(kCloseGoingAway, "restarting") + ClientFrame(Opcode::kText, "x");
    std::span<char> input(bytes.data(), bytes.size());
    ASSERT_EQ(decoder.Next(input), Event::kClose);
    EXPECT_FALSE(input.empty());
    EXPECT_EQ(decoder.Next(input), Event::kNeedMore);
    EXPECT_TRUE(input.empty());
    std::fill(bytes.begin(), bytes.end(), '?');
  }
  EXPECT_TRUE(decoder.closed());
  EXPECT_EQ(decoder.close_code(), kCloseGoingAway);
  EXPECT_EQ(decoder.close_reason(), "restarting");
  EXPECT_TRUE(decoder.idle());
}

TEST(WebSocketDecoder, ErrorIsStickyAndLeavesTheInputAlone) {
  Decoder decoder;
  std::string bad = ClientFrame(Opcode::kContinuation, "x");
  std::span<char> input(bad.data(), bad.size());
  ASSERT_EQ(decoder.Next(input), Event::kError);
  std::string good = ClientFrame(Opcode::kText, "fine");
  input = {good.data(), good.size()};
  EXPECT_EQ(decoder.Next(input), Event::kError);
  EXPECT_EQ(input.size(), good.size());
  EXPECT_TRUE(decoder.failed());
  EXPECT_EQ(decoder.error_code(), kCloseProtocolError);
}

TEST(WebSocketDecoder, IdleAndShrinkToFit) {
  Decoder decoder;
  EXPECT_TRUE(decoder.idle());
  std::string bytes = ClientFrame(Opcode::kBinary, std::string(5000, 'q'));
  std::string head = bytes.substr(0, 3000);
  std::span<char> input(head.data(), head.size());
  ASSERT_EQ(decoder.Next(input), Event::kNeedMore);
  EXPECT_FALSE(decoder.idle());
  const std::size_t capacity = decoder.capacity();
  EXPECT_GE(capacity, 3000u - 8);
  decoder.ShrinkToFit();  // Not idle: keeps the partial frame.
  EXPECT_EQ(decoder.capacity(), capacity);

  std::string tail = bytes.substr(3000);
  input = {tail.data(), tail.size()};
  ASSERT_EQ(decoder.Next(input), Event::kMessage);
  EXPECT_EQ(decoder.message(), std::string(5000, 'q'));
  EXPECT_TRUE(decoder.idle());
  decoder.ShrinkToFit();
  EXPECT_EQ(decoder.capacity(), 0u);
  EXPECT_TRUE(decoder.message().empty());

  // And it works on afterwards.
  EXPECT_EQ(Decode(decoder, ClientFrame(Opcode::kText, "again"), 2),
            std::vector<Result>{Message(Opcode::kText, "again")});
}

TEST(WebSocketDecoder, MovedDecoderKeepsItsState) {
  Decoder decoder;
  std::string bytes = ClientFrame(Opcode::kText, "one ", {.fin = false}) +
                      ClientFrame(Opcode::kPing, std::string(50, 'p'));
  // The ping arrives in pieces, so its payload sits inside the decoder.
  std::string first = bytes.substr(0, bytes.size() - 10);
  std::span<char> input(first.data(), first.size());
  ASSERT_EQ(decoder.Next(input), Event::kNeedMore);
  Decoder moved(std::move(decoder));
  EXPECT_EQ(
      Decode(moved, bytes.substr(bytes.size() - 10) + ClientFrame(Opcode::kContinuation, "two") +
                        ClientClose(kCloseNormal, "done")),
      (std::vector<Result>{Control(Event::kPing, Opcode::kPing, std::string(50, 'p')),
                           Message(Opcode::kText, "one two"), Close(kCloseNormal, "done")}));
  Decoder again;
  again = std::move(moved);
  EXPECT_EQ(again.close_reason(), "done");
}

TEST(WebSocketUtf8, AcceptsWellFormedAndRefusesTheRest) {
  for (absl::string_view text :
       {absl::string_view(""), absl::string_view("plain ascii that is longer than eight"),
        absl::string_view("é€𝄞"), absl::string_view("\xf4\x8f\xbf\xbf"),
        absl::string_view("\xef\xbf\xbf"), absl::string_view("\0", 1)}) {
    EXPECT_TRUE(IsValidUtf8(text)) << text;
  }
  for (absl::string_view text :
       {"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xf0\x80\x80\x80",
        "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xe2\x82", "abcdefghijklmnop\xe2\x28\xa1",
        "abcdefgh\x80ijklmnop"}) {
    EXPECT_FALSE(IsValidUtf8(text)) << text;
  }
}

TEST(WebSocketEncoder, FrameHeaderUsesTheShortestLength) {
  const auto hex = [](absl::string_view bytes) {
    std::string out;
    for (char c : bytes)
      absl::StrAppend(&out, absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
    return out;
  };
  EXPECT_EQ(hex(MakeFrameHeader(Opcode::kText, 0).view()), "8100");
  EXPECT_EQ(hex(MakeFrameHeader(Opcode::kBinary, 125).view()), "827d");
  EXPECT_EQ(hex(MakeFrameHeader(Opcode::kBinary, 126).view()), "827e007e");
  EXPECT_EQ(hex(MakeFrameHeader(Opcode::kText, 65535).view()), "817effff");
  EXPECT_EQ(hex(MakeFrameHeader(Opcode::kText, 65536).view()), "817f0000000000010000");
  EXPECT_EQ(hex(MakeFrameHeader(Opcode::kPong, 3).view()), "8a03");
  EXPECT_EQ(hex(MakeCloseFrame(kCloseNoStatus, "ignored")), "8800");
  EXPECT_EQ(hex(MakeCloseFrame(kCloseTooBig, "big")), "880503f1626967");
}

TEST(WebSocketEncoder, DecoderReadsWhatTheEncoderWrites) {
  std::string bytes;
  for (const std::size_t size : {0u, 1u, 125u, 126u, 65'535u, 65'536u}) {
    const std::string payload(size, 'e');
    bytes += std::string(MakeFrameHeader(Opcode::kBinary, size).view()) + payload;
  }
  bytes += MakeControlFrame(Opcode::kPing, "ping") + MakeControlFrame(Opcode::kPong, "pong") +
           MakeCloseFrame(kCloseGoingAway, "shutting down");
  std::vector<Result> want;
  for (const std::size_t size : {0u, 1u, 125u, 126u, 65'535u, 65'536u}) {
    want.push_back(Message(Opcode::kBinary, std::string(size, 'e')));
  }
  want.push_back(Control(Event::kPing, Opcode::kPing, "ping"));
  want.push_back(Control(Event::kPong, Opcode::kPong, "pong"));
  want.push_back(Close(kCloseGoingAway, "shutting down"));
  EXPECT_EQ(Decode(bytes, 0, {.require_mask = false}), want);
  EXPECT_EQ(Decode(bytes, 5, {.require_mask = false}), want);
}

TEST(WebSocketEncoder, CloseReasonIsCutOnACodePointBoundary) {
  std::string reason;
  for (int i = 0; i < 100; ++i) reason += "é";  // 2 bytes each: 123 would split one.
  const std::string frame = MakeCloseFrame(kClosePolicyViolation, reason);
  ASSERT_EQ(frame.size(), 2u + 2u + 122u);
  const auto results = Decode(frame, 0, {.require_mask = false});
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0], Close(kClosePolicyViolation, reason.substr(0, 122)));

  const std::string ascii(200, 'a');
  EXPECT_EQ(MakeCloseFrame(kCloseNormal, ascii).size(), 2u + 125u);
  EXPECT_EQ(MakeControlFrame(Opcode::kPing, ascii).size(), 2u + 125u);
}

// --- Cross-checks against Beast's own WebSocket implementation -------------------------------

// A Beast client and server over connected in-memory test streams, past the opening handshake.
class BeastPair : public ::testing::Test {
 protected:
  struct Completion {
    bool done = false;
    beast::error_code error;
    std::size_t bytes = 0;
  };
  static auto Record(Completion& completion) {
    return [&completion](beast::error_code error, std::size_t bytes = 0) {
      completion = {true, error, bytes};
    };
  }

  void SetUp() override {
    beast::test::connect(client_.next_layer(), server_.next_layer());
    client_.async_handshake("localhost", "/events", Record(handshake_));
    server_.async_accept(Record(accept_));
    ASSERT_TRUE(RunUntil([&] { return handshake_.done && accept_.done; }));
    ASSERT_FALSE(handshake_.error) << handshake_.error.message();
    ASSERT_FALSE(accept_.error) << accept_.error.message();
  }

  // Runs the I/O until `done` holds; false when 10 seconds pass first.
  bool RunUntil(const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (io_.stopped()) io_.restart();
      io_.run_one_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  // The bytes the client has sent since the handshake (masked frames), taken off the wire.
  std::string TakeClientBytes() {
    std::string bytes(server_.next_layer().str());
    server_.next_layer().clear();
    return bytes;
  }

  asio::io_context io_;
  websocket::stream<beast::test::stream> client_{io_};
  websocket::stream<beast::test::stream> server_{io_};
  Completion handshake_, accept_;
};

TEST_F(BeastPair, DecoderReadsBeastClientFrames) {
  Completion write;
  client_.text(true);
  client_.async_write(asio::buffer(std::string_view("héllo from beast")), Record(write));
  ASSERT_TRUE(RunUntil([&] { return write.done; }));
  client_.binary(true);
  const std::string big(70'000, 'B');
  write = {};
  client_.async_write(asio::buffer(big), Record(write));
  ASSERT_TRUE(RunUntil([&] { return write.done; }));
  const std::string medium(300, 'M');
  write = {};
  client_.async_write(asio::buffer(medium), Record(write));
  ASSERT_TRUE(RunUntil([&] { return write.done; }));

  const std::string bytes = TakeClientBytes();
  const std::vector<Result> want = {Message(Opcode::kText, "héllo from beast"),
                                    Message(Opcode::kBinary, big),
                                    Message(Opcode::kBinary, medium)};
  EXPECT_EQ(Decode(bytes), want);
  EXPECT_EQ(Decode(bytes, 1), want);
}

TEST_F(BeastPair, DecoderReassemblesBeastFragmentsAroundAPing) {
  Completion op;
  client_.text(true);
  client_.async_write_some(false, asio::buffer(std::string_view(R"({"subscribe":)")), Record(op));
  ASSERT_TRUE(RunUntil([&] { return op.done; }));
  op = {};
  client_.async_ping("keepalive", Record(op));
  ASSERT_TRUE(RunUntil([&] { return op.done; }));
  op = {};
  client_.async_write_some(true, asio::buffer(std::string_view(R"({"channels":["users"]}})")),
                           Record(op));
  ASSERT_TRUE(RunUntil([&] { return op.done; }));
  // The close frame goes out at once; the close handshake then waits for an answer that never
  // comes, until the test ends.
  const std::size_t before = server_.next_layer().str().size();
  client_.async_close(websocket::close_reason(websocket::close_code::going_away, "tab closed"),
                      [](beast::error_code) {});
  ASSERT_TRUE(RunUntil([&] { return server_.next_layer().str().size() > before; }));

  const std::string bytes = TakeClientBytes();
  const std::vector<Result> want = {
      Control(Event::kPing, Opcode::kPing, "keepalive"),
      Message(Opcode::kText, R"({"subscribe":{"channels":["users"]}})"),
      Close(kCloseGoingAway, "tab closed")};
  EXPECT_EQ(Decode(bytes), want);
  EXPECT_EQ(Decode(bytes, 3), want);
}

TEST_F(BeastPair, DecoderReadsBeastAutoFragmentedMessage) {
  client_.auto_fragment(true);
  client_.write_buffer_bytes(1024);
  client_.binary(true);
  std::string payload(3000, '\0');
  for (std::size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i);
  Completion write;
  client_.async_write(asio::buffer(payload), Record(write));
  ASSERT_TRUE(RunUntil([&] { return write.done; }));
  const std::string bytes = TakeClientBytes();
  // Several frames on the wire: the first one does not have FIN set.
  ASSERT_FALSE(bytes.empty());
  EXPECT_EQ(static_cast<unsigned char>(bytes[0]) & 0x80, 0);
  EXPECT_EQ(Decode(bytes, 100, {.max_message_bytes = 3000}),
            std::vector<Result>{Message(Opcode::kBinary, payload)});
  EXPECT_EQ(ErrorOf(bytes, {.max_message_bytes = 2999}).code, kCloseTooBig);
}

TEST_F(BeastPair, BeastReadsOurServerFrames) {
  const std::string medium(300, 'm');
  const std::string big(70'000, 'g');
  std::string bytes = MakeControlFrame(Opcode::kPing, "ping from us");
  bytes += std::string(MakeFrameHeader(Opcode::kText, 11).view()) + "hello beast";
  bytes += std::string(MakeFrameHeader(Opcode::kBinary, medium.size()).view()) + medium;
  bytes += std::string(MakeFrameHeader(Opcode::kBinary, big.size()).view()) + big;
  bytes += MakeCloseFrame(kCloseTryAgainLater, "overloaded, retry");
  client_.next_layer().append(bytes);

  std::vector<std::string> pings;
  client_.control_callback([&](websocket::frame_type kind, beast::string_view payload) {
    if (kind == websocket::frame_type::ping) pings.emplace_back(payload);
  });
  std::vector<std::pair<bool, std::string>> messages;  // (text?, payload)
  for (;;) {
    beast::flat_buffer buffer;
    Completion read;
    client_.async_read(buffer, Record(read));
    ASSERT_TRUE(RunUntil([&] { return read.done; }));
    if (read.error) {
      EXPECT_EQ(read.error, websocket::error::closed) << read.error.message();
      break;
    }
    messages.emplace_back(client_.got_text(), beast::buffers_to_string(buffer.data()));
  }
  EXPECT_EQ(pings, std::vector<std::string>{"ping from us"});
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages[0], std::make_pair(true, std::string("hello beast")));
  EXPECT_EQ(messages[1], std::make_pair(false, medium));
  EXPECT_EQ(messages[2], std::make_pair(false, big));
  EXPECT_EQ(client_.reason().code, kCloseTryAgainLater);
  EXPECT_EQ(client_.reason().reason, "overloaded, retry");
}

}  // namespace
}  // namespace cqrs::net::ws
