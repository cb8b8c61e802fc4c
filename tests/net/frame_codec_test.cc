#include "cqrs/net/frame_codec.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "testing/frames.h"

namespace cqrs::net {
namespace {

using ::cqrs::testing::AsBytes;
using ::cqrs::testing::Encode;
using ::cqrs::testing::Header;
using ::cqrs::testing::OneFrameOfEachKind;
using ::google::protobuf::util::MessageDifferencer;

// Drains every complete frame; stops at kNeedMore or a fatal error.
std::vector<v1::Frame> Drain(FrameDecoder& decoder, std::vector<DecodeResult>* errors = nullptr) {
  std::vector<v1::Frame> frames;
  for (;;) {
    v1::Frame frame;
    const DecodeResult result = decoder.Next(frame);
    if (result == DecodeResult::kNeedMore) break;
    if (result == DecodeResult::kFrame) {
      frames.push_back(std::move(frame));
      continue;
    }
    if (errors != nullptr) errors->push_back(result);
    if (decoder.failed()) break;
  }
  return frames;
}

void ExpectSameFrames(const std::vector<v1::Frame>& got, const std::vector<v1::Frame>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(MessageDifferencer::Equals(got[i], want[i]))
        << "frame " << i << ": got " << got[i].ShortDebugString() << " want "
        << want[i].ShortDebugString();
  }
}

TEST(FrameDecoder, RoundTripsEveryFrameKind) {
  const auto frames = OneFrameOfEachKind();
  std::set<int> kinds;
  for (const auto& frame : frames) kinds.insert(frame.kind_case());
  EXPECT_EQ(kinds.size(), static_cast<std::size_t>(v1::Frame::descriptor()->field_count()))
      << "OneFrameOfEachKind() must cover every Frame kind";

  for (const auto& frame : frames) {
    FrameDecoder decoder;
    decoder.Feed(AsBytes(Encode({&frame, 1})));
    ExpectSameFrames(Drain(decoder), {frame});
    EXPECT_EQ(decoder.buffered(), 0u);
  }
}

TEST(FrameDecoder, SplitHeaderWaitsForTheRest) {
  const auto frames = OneFrameOfEachKind();
  const std::string bytes = Encode({&frames[2], 1});
  FrameDecoder decoder;
  v1::Frame frame;
  decoder.Feed(AsBytes(bytes.substr(0, 2)));
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kNeedMore);
  decoder.Feed(AsBytes(bytes.substr(2, 3)));
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kNeedMore);
  decoder.Feed(AsBytes(bytes.substr(5)));
  ExpectSameFrames(Drain(decoder), {frames[2]});
}

TEST(FrameDecoder, ByteByByte) {
  const auto frames = OneFrameOfEachKind();
  const std::string bytes = Encode(frames);
  FrameDecoder decoder;
  std::vector<v1::Frame> got;
  for (char c : bytes) {
    decoder.Feed(AsBytes(std::string(1, c)));
    auto some = Drain(decoder);
    std::move(some.begin(), some.end(), std::back_inserter(got));
  }
  ExpectSameFrames(got, frames);
  EXPECT_EQ(decoder.buffered(), 0u);
}

TEST(FrameDecoder, TwoFramesInOneRead) {
  const auto all = OneFrameOfEachKind();
  const std::vector<v1::Frame> frames = {all[0], all[2]};
  FrameDecoder decoder;
  decoder.Feed(AsBytes(Encode(frames)));
  ExpectSameFrames(Drain(decoder), frames);
}

TEST(FrameDecoder, ManyFramesInOneReadThroughPrepareAndCommit) {
  const auto all = OneFrameOfEachKind();
  std::vector<v1::Frame> frames;
  for (int i = 0; i < 1000; ++i) {
    v1::Frame frame = all[static_cast<std::size_t>(i) % all.size()];
    if (frame.has_ping()) frame.mutable_ping()->set_nonce(static_cast<std::uint64_t>(i));
    frames.push_back(std::move(frame));
  }
  const std::string bytes = Encode(frames);
  FrameDecoder decoder;
  auto space = decoder.Prepare(bytes.size());
  ASSERT_GE(space.size(), bytes.size());
  std::memcpy(space.data(), bytes.data(), bytes.size());
  decoder.Commit(bytes.size());
  ExpectSameFrames(Drain(decoder), frames);
}

TEST(FrameDecoder, PartialFramesAcrossReadsKeepOrder) {
  const auto frames = OneFrameOfEachKind();
  const std::string bytes = Encode(frames);
  // Reads of 7 bytes: frames straddle reads and the buffer compacts as it goes.
  FrameDecoder decoder;
  std::vector<v1::Frame> got;
  for (std::size_t at = 0; at < bytes.size(); at += 7) {
    const std::string chunk = bytes.substr(at, 7);
    auto space = decoder.Prepare(1);
    const std::size_t n = std::min(space.size(), chunk.size());
    std::memcpy(space.data(), chunk.data(), n);
    decoder.Commit(n);
    if (n < chunk.size()) decoder.Feed(AsBytes(chunk.substr(n)));
    auto some = Drain(decoder);
    std::move(some.begin(), some.end(), std::back_inserter(got));
  }
  ExpectSameFrames(got, frames);
}

TEST(FrameDecoder, ExactlyMaxIsAcceptedAndMaxPlusOneIsNot) {
  const auto frames = OneFrameOfEachKind();
  const v1::Frame& frame = frames[2];
  const auto body = static_cast<std::uint32_t>(frame.ByteSizeLong());
  const std::string bytes = Encode({&frame, 1});

  FrameDecoder at_max({.max_frame_bytes = body});
  at_max.Feed(AsBytes(bytes));
  ExpectSameFrames(Drain(at_max), {frame});

  FrameDecoder below({.max_frame_bytes = body - 1});
  below.Feed(AsBytes(bytes));
  v1::Frame out;
  EXPECT_EQ(below.Next(out), DecodeResult::kTooLarge);
  EXPECT_TRUE(below.failed());
}

TEST(FrameDecoder, OversizeLengthIsRefusedFromTheHeaderAlone) {
  FrameDecoder decoder({.max_frame_bytes = 1024});
  decoder.Feed(AsBytes(Header(1025)));
  v1::Frame frame;
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kTooLarge);
  EXPECT_EQ(decoder.error().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(decoder.error().message(), "frame length 1025 exceeds max_frame_bytes=1024");
  // Sticky: the stream cannot be resynchronized.
  decoder.Feed(AsBytes(Encode(OneFrameOfEachKind())));
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kTooLarge);
}

TEST(FrameDecoder, HugeLengthNeverGrowsTheBuffer) {
  FrameDecoder decoder;  // Default limit: 4 MiB.
  decoder.Feed(AsBytes(Header(0xFFFFFFFFu)));
  v1::Frame frame;
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kTooLarge);
  EXPECT_EQ(decoder.error().message(), "frame length 4294967295 exceeds max_frame_bytes=4194304");
}

TEST(FrameDecoder, PrepareOffersTheRestOfAnAcceptedFrame) {
  FrameDecoder decoder({.max_frame_bytes = 1 << 20});
  decoder.Feed(AsBytes(Header(600'000)));
  v1::Frame frame;
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kNeedMore);
  EXPECT_GE(decoder.Prepare(1).size(), 600'000u);
}

// Found by frame_decoder_fuzz: bytes committed after the header was checked (without a Next in
// between) may exceed the pending frame; Prepare must not compute a negative remainder.
TEST(FrameDecoder, PrepareAfterCommittingPastThePendingFrame) {
  const auto frames = OneFrameOfEachKind();
  const std::string bytes = Encode({&frames[4], 1}) + Encode({&frames[5], 1});
  FrameDecoder decoder;
  decoder.Feed(AsBytes(bytes.substr(0, 5)));
  v1::Frame frame;
  ASSERT_EQ(decoder.Next(frame), DecodeResult::kNeedMore);  // Header checked, body pending.
  auto space = decoder.Prepare(16);
  ASSERT_GE(space.size(), 10u);
  std::memcpy(space.data(), bytes.data() + 5, 10);  // More than the rest of frame 1.
  decoder.Commit(10);
  decoder.Feed(AsBytes(bytes.substr(15)));
  ExpectSameFrames(Drain(decoder), {frames[4], frames[5]});
}

TEST(FrameDecoder, ZeroLengthFrameIsAnErrorButTheStreamGoesOn) {
  const auto frames = OneFrameOfEachKind();
  FrameDecoder decoder;
  decoder.Feed(AsBytes(Header(0) + Encode({&frames[4], 1})));
  v1::Frame frame;
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kEmpty);
  EXPECT_FALSE(decoder.failed());
  EXPECT_EQ(decoder.error().code(), absl::StatusCode::kInvalidArgument);
  ExpectSameFrames(Drain(decoder), {frames[4]});
}

TEST(FrameDecoder, GarbagePayloadIsMalformedButTheStreamGoesOn) {
  const auto frames = OneFrameOfEachKind();
  const std::string garbage = "\xff\xff\xff\xff\xff";  // An unterminated varint tag.
  FrameDecoder decoder;
  decoder.Feed(AsBytes(Header(static_cast<std::uint32_t>(garbage.size())) + garbage +
                       Encode({&frames[5], 1})));
  v1::Frame frame;
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kMalformed);
  EXPECT_EQ(decoder.error().message(), "frame of 5 bytes is not a valid cqrs.v1.Frame protobuf");
  ExpectSameFrames(Drain(decoder), {frames[5]});
}

TEST(FrameDecoder, FrameWithNoKnownKindIsMalformed) {
  const std::string unknown_field = "\xa0\x06\x01";  // Field 100, varint 1.
  FrameDecoder decoder;
  decoder.Feed(AsBytes(Header(3) + unknown_field));
  v1::Frame frame;
  EXPECT_EQ(decoder.Next(frame), DecodeResult::kMalformed);
  EXPECT_EQ(decoder.error().message(), "frame of 3 bytes sets no known cqrs.v1.Frame kind");
}

TEST(FrameDecoder, NextBodyHandsOutRawBytes) {
  const auto frames = OneFrameOfEachKind();
  FrameDecoder decoder;
  decoder.Feed(AsBytes(Encode({&frames[0], 1})));
  std::span<const std::byte> body;
  ASSERT_EQ(decoder.NextBody(body), DecodeResult::kFrame);
  v1::Frame frame;
  ASSERT_TRUE(frame.ParseFromArray(body.data(), static_cast<int>(body.size())));
  EXPECT_TRUE(MessageDifferencer::Equals(frame, frames[0]));
  EXPECT_EQ(decoder.NextBody(body), DecodeResult::kNeedMore);
}

TEST(FrameEncoder, BatchesFramesInOneBuffer) {
  const auto frames = OneFrameOfEachKind();
  FrameEncoder encoder;
  std::size_t expected = 0;
  for (const auto& frame : frames) {
    ASSERT_TRUE(encoder.Append(frame).ok());
    expected += kFrameHeaderBytes + frame.ByteSizeLong();
  }
  EXPECT_EQ(encoder.frame_count(), frames.size());
  EXPECT_EQ(encoder.size(), expected);
  EXPECT_EQ(ReadFrameHeader(encoder.data().data()), frames[0].ByteSizeLong());

  encoder.Clear();
  EXPECT_TRUE(encoder.empty());
  ASSERT_TRUE(encoder.Append(frames[1]).ok());
  FrameDecoder decoder;
  decoder.Feed(encoder.data());
  ExpectSameFrames(Drain(decoder), {frames[1]});
}

TEST(FrameEncoder, RefusesEmptyAndOversizeFramesAndKeepsWhatItHas) {
  const auto frames = OneFrameOfEachKind();
  FrameEncoder encoder({.max_frame_bytes = 16});
  ASSERT_TRUE(encoder.Append(frames[4]).ok());  // A small ping.
  const std::size_t before = encoder.size();

  const absl::Status empty = encoder.Append(v1::Frame());
  EXPECT_EQ(empty.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.message(), "cannot encode a cqrs.v1.Frame with no kind set");

  const absl::Status big = encoder.Append(frames[2]);
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.message().find("exceeds max_frame_bytes=16"), absl::string_view::npos);
  EXPECT_EQ(encoder.size(), before);
  EXPECT_EQ(encoder.frame_count(), 1u);
}

TEST(FrameEncoder, AppendSerializedMatchesAppend) {
  for (const auto& frame : OneFrameOfEachKind()) {
    FrameEncoder whole;
    ASSERT_TRUE(whole.Append(frame).ok());
    // The kind's message alone, serialized, then framed without building a Frame.
    const auto* field = v1::Frame::descriptor()->FindFieldByNumber(frame.kind_case());
    const std::string message = frame.GetReflection()->GetMessage(frame, field).SerializeAsString();
    FrameEncoder serialized;
    ASSERT_TRUE(serialized.AppendSerialized(frame.kind_case(), message).ok());
    EXPECT_EQ(
        std::string(reinterpret_cast<const char*>(serialized.data().data()), serialized.size()),
        std::string(reinterpret_cast<const char*>(whole.data().data()), whole.size()))
        << field->name();
  }
  FrameEncoder small({.max_frame_bytes = 8});
  EXPECT_EQ(small.AppendSerialized(v1::Frame::kResponse, std::string(16, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(small.empty());
}

// The committed fuzz seed corpus stays decodable as the schema evolves, and covers every kind.
TEST(FrameDecoder, SeedCorpusDecodesAndCoversEveryKind) {
  const std::filesystem::path dir = std::filesystem::path(CQRS_FUZZ_CORPUS_DIR) / "frame_decoder";
  std::set<int> kinds;
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    // regression_* files are inputs that once crashed the fuzzer: arbitrary bytes by design.
    if (entry.path().filename().string().starts_with("regression_")) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ASSERT_FALSE(bytes.empty()) << entry.path();
    // The first byte is the fuzzer's split control, see fuzz/frame_decoder_fuzz.cc.
    const std::size_t splits = static_cast<unsigned char>(bytes[0]) % 8;
    FrameDecoder decoder;
    decoder.Feed(AsBytes(bytes.substr(1 + splits)));
    std::vector<DecodeResult> errors;
    for (const auto& frame : Drain(decoder, &errors)) kinds.insert(frame.kind_case());
    EXPECT_FALSE(decoder.failed()) << entry.path();
    ++files;
  }
  EXPECT_GT(files, 0);
  EXPECT_EQ(kinds.size(), static_cast<std::size_t>(v1::Frame::descriptor()->field_count()));
}

}  // namespace
}  // namespace cqrs::net
