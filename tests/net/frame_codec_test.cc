#include "cqrs/net/frame_codec.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "command_encode.h"
#include "command_parse.h"
#include "cqrs/v1/event.pb.h"
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

// --- The reusing command decoder: Next(frame, command, is_command) ------------------------------

// A frame holding `envelope_bytes` as its `tag` field (the command: field 3, length-delimited),
// behind a length prefix.
std::string CommandFrameBytes(const std::string& envelope_bytes, char tag = '\x1a') {
  std::string body(1, tag);
  for (std::size_t n = envelope_bytes.size();; n >>= 7) {
    body.push_back(static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0)));
    if (n < 0x80) break;
  }
  body += envelope_bytes;
  return Header(static_cast<std::uint32_t>(body.size())) + body;
}

v1::CommandEnvelope FullCommand(const std::string& id) {
  v1::CommandEnvelope command;
  command.set_id(id);
  command.mutable_timestamp()->set_seconds(1'700'000'000);
  command.mutable_timestamp()->set_nanos(123'456'789);
  command.set_service_id("a-client-with-a-longer-name");
  command.set_service_instance_id("instance-7");
  command.set_transaction_id("tx-0123456789abcdef0123");
  command.set_version(3);
  command.set_type("users.v1.CreateUser");
  command.set_subject("subject-0123456789abcdef");
  command.mutable_payload()->set_type_url("type.googleapis.com/users.v1.CreateUser");
  command.mutable_payload()->set_value(std::string(60, '\x12'));
  command.mutable_deadline()->set_seconds(1'700'000'005);
  command.set_correlation_id("corr-0123456789abcdef");
  command.set_causation_id("cause-0123456789abcdef");
  return command;
}

struct ReuseCase {
  std::string name;
  std::string frame;  // Length prefix and body.
  bool reusable;      // Whether the reusing parser takes it (else protobuf parses it).
};

std::vector<ReuseCase> ReuseCases() {
  std::vector<ReuseCase> cases;
  const auto add = [&](std::string name, const v1::CommandEnvelope& command, bool reusable) {
    cases.push_back({std::move(name), CommandFrameBytes(command.SerializeAsString()), reusable});
  };
  add("full", FullCommand("00000000-0000-4000-8000-000000000001"), true);
  v1::CommandEnvelope sparse;  // After "full": every field it lacks must read as unset.
  sparse.set_id("short");
  add("sparse", sparse, true);
  add("empty", v1::CommandEnvelope(), true);
  add("full again", FullCommand("00000000-0000-4000-8000-000000000002"), true);
  v1::CommandEnvelope empty_submessages = FullCommand("x");
  empty_submessages.mutable_payload()->Clear();  // Present but empty: has_payload() stays true.
  empty_submessages.mutable_timestamp()->Clear();
  add("empty submessages", empty_submessages, true);
  v1::CommandEnvelope negative = FullCommand("neg");
  negative.set_version(-1);  // 10-byte varints.
  negative.mutable_timestamp()->set_seconds(-5);
  negative.mutable_timestamp()->set_nanos(-1);
  add("negative numbers", negative, true);
  // An 11-byte varint: protobuf refuses the frame.
  cases.push_back({"overlong varint",
                   CommandFrameBytes("\x30\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), false});
  v1::CommandEnvelope unicode = FullCommand("ид-команды-✓");
  unicode.set_subject("Zoë");
  add("unicode", unicode, true);
  v1::CommandEnvelope with_metadata = FullCommand("meta");
  (*with_metadata.mutable_metadata())["k"] = "v";
  add("metadata", with_metadata, false);
  v1::CommandEnvelope long_value = FullCommand("long");
  long_value.mutable_payload()->set_value(std::string(20'000, 'v'));  // 3-byte lengths.
  add("long payload", long_value, true);

  const std::string full = FullCommand("dup").SerializeAsString();
  // A string field twice: the last one wins, as in protobuf.
  cases.push_back({"repeated id", CommandFrameBytes(full + "\x0a\x03two"), true});
  // A submessage twice: protobuf merges them; left to it.
  cases.push_back({"repeated timestamp", CommandFrameBytes(full + "\x12\x02\x10\x07"), false});
  // Unknown field 20 (varint): protobuf keeps it as an unknown field.
  cases.push_back({"unknown field", CommandFrameBytes(full + "\xa0\x01\x05"), false});
  // Field 1 (a string) sent as a varint: an unknown field to protobuf.
  cases.push_back({"wrong wire type", CommandFrameBytes(full + "\x08\x01"), false});
  // Invalid UTF-8 in a string field: protobuf refuses the frame.
  cases.push_back({"invalid utf-8", CommandFrameBytes("\x0a\x02\xc3\x28"), false});
  // Invalid UTF-8 in Any.type_url (a string) but not in Any.value (bytes).
  cases.push_back({"invalid utf-8 in type_url", CommandFrameBytes("\x4a\x03\x0a\x01\xff"), false});
  cases.push_back({"binary value", CommandFrameBytes("\x4a\x03\x12\x01\xff"), true});
  // A length running past the end of the envelope.
  cases.push_back({"truncated", CommandFrameBytes("\x0a\x09short"), false});
  // The command followed by a second Frame field (ping): not a command-only frame.
  {
    std::string frame = CommandFrameBytes(full).substr(4) + std::string("\x2a\x00", 2);
    cases.push_back(
        {"command then ping", Header(static_cast<std::uint32_t>(frame.size())) + frame, false});
  }
  cases.push_back({"full last", CommandFrameBytes(full), true});
  return cases;
}

// One frame decoded by Next (the reference) and by one of its specialized forms, `next`, each
// through a decoder of its own; checks what every case must agree on. True when there is a frame
// to compare.
struct BothWays {
  v1::Frame want;   // Next's.
  v1::Frame frame;  // The specialized form's, unless it parsed the message itself.
};
template <typename SpecializedNext>
bool DecodeBothWays(const std::string& bytes, SpecializedNext next, BothWays& out) {
  FrameDecoder plain;
  plain.Feed(AsBytes(bytes));
  const DecodeResult want_result = plain.Next(out.want);
  FrameDecoder decoder;
  decoder.Feed(AsBytes(bytes));
  const DecodeResult result = next(decoder, out.frame);
  EXPECT_EQ(result, want_result);
  EXPECT_EQ(decoder.buffered(), 0u);
  if (result != DecodeResult::kFrame) {
    EXPECT_EQ(decoder.error(), plain.error());
  }
  return result == DecodeResult::kFrame && want_result == DecodeResult::kFrame;
}

TEST(FrameDecoder, ReusingNextDecodesWhatNextDecodes) {
  v1::CommandEnvelope reused;  // One message through every case, as a session slot keeps it.
  for (const ReuseCase& c : ReuseCases()) {
    SCOPED_TRACE(c.name);
    bool is_command = true;
    BothWays both;
    const bool decoded = DecodeBothWays(
        c.frame,
        [&](FrameDecoder& decoder, v1::Frame& frame) {
          return decoder.Next(frame, reused, is_command);
        },
        both);
    EXPECT_EQ(is_command, c.reusable);
    if (!decoded) continue;
    const v1::Frame& want = both.want;
    const v1::Frame& frame = both.frame;
    if (!want.has_command()) {  // A later field of the oneof won.
      EXPECT_FALSE(is_command);
      EXPECT_TRUE(MessageDifferencer::Equals(frame, want));
      continue;
    }
    const v1::CommandEnvelope& got = is_command ? reused : frame.command();
    EXPECT_EQ(is_command, !frame.has_command());
    EXPECT_TRUE(MessageDifferencer::Equals(got, want.command()))
        << "got " << got.ShortDebugString() << "\nwant " << want.command().ShortDebugString();
    EXPECT_EQ(got.has_timestamp(), want.command().has_timestamp());
    EXPECT_EQ(got.has_payload(), want.command().has_payload());
    EXPECT_EQ(got.has_deadline(), want.command().has_deadline());
    EXPECT_EQ(got.SerializeAsString(), want.command().SerializeAsString());
  }
}

TEST(FrameDecoder, ReusingNextKeepsStringsAndSubmessagesFromCommandToCommand) {
  v1::CommandEnvelope reused;
  FrameDecoder decoder;
  v1::Frame frame;
  bool is_command = false;
  decoder.Feed(
      AsBytes(CommandFrameBytes(FullCommand("first-0123456789abcdef").SerializeAsString())));
  ASSERT_EQ(decoder.Next(frame, reused, is_command), DecodeResult::kFrame);
  ASSERT_TRUE(is_command);
  const char* id = reused.id().data();
  const char* value = reused.payload().value().data();
  const google::protobuf::Any* payload = &reused.payload();
  const google::protobuf::Timestamp* deadline = &reused.deadline();

  decoder.Feed(
      AsBytes(CommandFrameBytes(FullCommand("second-0123456789abcde").SerializeAsString())));
  ASSERT_EQ(decoder.Next(frame, reused, is_command), DecodeResult::kFrame);
  ASSERT_TRUE(is_command);
  EXPECT_EQ(reused.id(), "second-0123456789abcde");
  EXPECT_EQ(reused.id().data(), id) << "the id's buffer was allocated again";
  EXPECT_EQ(reused.payload().value().data(), value);
  EXPECT_EQ(&reused.payload(), payload);
  EXPECT_EQ(&reused.deadline(), deadline);
}

TEST(FrameDecoder, RetainedBytesCountsWhatTheReusedCommandKeeps) {
  // A session starts its reused command afresh once this exceeds its bound: a large command
  // (or one the reusing parser gave up on halfway) must not leave its capacity behind.
  v1::CommandEnvelope reused;
  v1::CommandEnvelope big = FullCommand("big");
  big.mutable_payload()->set_value(std::string(50'000, 'v'));
  big.set_correlation_id(std::string(10'000, 'c'));
  ASSERT_TRUE(internal::ParseCommandReusing(AsBytes(big.SerializeAsString()), reused));
  EXPECT_GE(internal::RetainedBytes(reused), 60'000u);
  ASSERT_TRUE(
      internal::ParseCommandReusing(AsBytes(FullCommand("small").SerializeAsString()), reused));
  EXPECT_EQ(reused.id(), "small");
  EXPECT_GE(internal::RetainedBytes(reused), 60'000u) << "capacity is kept: the caller bounds it";
  v1::CommandEnvelope fresh;
  EXPECT_LT(internal::RetainedBytes(fresh), 200u);
}

TEST(FrameDecoder, ReusingNextLeavesOtherFramesToTheFrame) {
  v1::CommandEnvelope reused;
  for (const v1::Frame& want : OneFrameOfEachKind()) {
    SCOPED_TRACE(want.ShortDebugString());
    FrameDecoder decoder;
    decoder.Feed(AsBytes(Encode({&want, 1})));
    v1::Frame frame;
    bool is_command = false;
    ASSERT_EQ(decoder.Next(frame, reused, is_command), DecodeResult::kFrame);
    // The metadata map is left to protobuf.
    EXPECT_EQ(is_command, want.has_command() && want.command().metadata().empty());
    if (is_command) {
      EXPECT_TRUE(MessageDifferencer::Equals(reused, want.command()));
    } else {
      EXPECT_TRUE(MessageDifferencer::Equals(frame, want));
    }
  }
}

// --- The client's response decoder: Next(frame, response, is_response) --------------------------

std::string ResponseFrameBytes(const std::string& envelope_bytes) {
  return CommandFrameBytes(envelope_bytes, '\x22');  // Frame.response: field 4.
}

v1::CommandResponseEnvelope FullResponse(const std::string& command_id) {
  v1::CommandResponseEnvelope response;
  response.set_transaction_id("tx-0123456789abcdef0123");
  response.set_command_id(command_id);
  response.mutable_timestamp()->set_seconds(1'700'000'000);
  response.mutable_timestamp()->set_nanos(123'456'789);
  response.set_service_id("user-service");
  response.set_type("users.v1.CreateUserReply");
  response.set_version(2);
  response.mutable_payload()->set_type_url("type.googleapis.com/users.v1.CreateUserReply");
  response.mutable_payload()->set_value(std::string(38, '\x0a'));
  response.set_id("0123456789abcdef-42");
  response.set_status(v1::CommandResponseEnvelope::OK);
  response.add_event_offsets(1'000'000'000'000);
  response.add_event_offsets(1'000'000'000'001);
  response.set_event_epoch(7);
  return response;
}

std::vector<ReuseCase> ResponseCases() {
  std::vector<ReuseCase> cases;
  const auto add = [&](std::string name, const v1::CommandResponseEnvelope& response, bool fast) {
    cases.push_back({std::move(name), ResponseFrameBytes(response.SerializeAsString()), fast});
  };
  add("full", FullResponse("00000000-0000-4000-8000-000000000001"), true);
  v1::CommandResponseEnvelope sparse;
  sparse.set_command_id("short");
  sparse.set_status(v1::CommandResponseEnvelope::OK);
  add("sparse", sparse, true);
  add("empty", v1::CommandResponseEnvelope(), true);
  v1::CommandResponseEnvelope empty_submessages = FullResponse("x");
  empty_submessages.mutable_payload()->Clear();  // Present but empty: has_payload() stays true.
  empty_submessages.mutable_timestamp()->Clear();
  empty_submessages.clear_event_offsets();
  add("empty submessages", empty_submessages, true);
  v1::CommandResponseEnvelope negative = FullResponse("neg");
  negative.set_version(-1);  // 10-byte varints.
  negative.mutable_timestamp()->set_seconds(-5);
  negative.mutable_timestamp()->set_nanos(-1);
  negative.set_status(static_cast<v1::CommandResponseEnvelope::Status>(-3));  // An open enum.
  add("negative numbers", negative, true);
  v1::CommandResponseEnvelope unknown_status = FullResponse("future");
  unknown_status.set_status(static_cast<v1::CommandResponseEnvelope::Status>(99));
  add("status from a newer server", unknown_status, true);
  v1::CommandResponseEnvelope unicode = FullResponse("ид-команды-✓");
  unicode.set_service_id("Zoë");
  add("unicode", unicode, true);
  v1::CommandResponseEnvelope long_value = FullResponse("long");
  long_value.mutable_payload()->set_value(std::string(20'000, 'v'));  // 3-byte lengths.
  add("long payload", long_value, true);
  v1::CommandResponseEnvelope many_offsets = FullResponse("many");
  for (int i = 0; i < 300; ++i) many_offsets.add_event_offsets(static_cast<std::uint64_t>(i));
  add("many offsets", many_offsets, true);
  v1::CommandResponseEnvelope rejected = FullResponse("rejected");
  rejected.set_status(v1::CommandResponseEnvelope::REJECTED);
  rejected.mutable_error()->set_error_code("USER_EXISTS");
  add("with an error", rejected, false);  // Rare: left to protobuf.

  const std::string full = FullResponse("dup").SerializeAsString();
  // A string field twice: the last one wins, as in protobuf.
  cases.push_back({"repeated command id", ResponseFrameBytes(full + "\x12\x03two"), true});
  // Offsets unpacked (one varint each) and a second packed run: protobuf appends them all.
  cases.push_back(
      {"unpacked offsets", ResponseFrameBytes(full + "\x58\x05\x58\x06\x5a\x02\x07\x08"), true});
  // A packed run whose last varint runs past its end: protobuf refuses the frame.
  cases.push_back({"broken packed offsets", ResponseFrameBytes(full + "\x5a\x01\x80"), false});
  // A submessage twice: protobuf merges them; left to it.
  cases.push_back({"repeated timestamp", ResponseFrameBytes(full + "\x1a\x02\x10\x07"), false});
  cases.push_back(
      {"repeated payload", ResponseFrameBytes(full + std::string("\x3a\x02\x12\x00", 4)), false});
  // Unknown field 20 (varint): protobuf keeps it as an unknown field.
  cases.push_back({"unknown field", ResponseFrameBytes(full + "\xa0\x01\x05"), false});
  // Field 2 (a string) sent as a varint: an unknown field to protobuf.
  cases.push_back({"wrong wire type", ResponseFrameBytes(full + "\x10\x01"), false});
  // Field 10 (the status) sent length-delimited: the same.
  cases.push_back({"status as bytes", ResponseFrameBytes(full + "\x52\x01\x01"), false});
  // A fixed64 field: not a wire type this parser takes.
  cases.push_back({"fixed64", ResponseFrameBytes(full + "\x61" + std::string(8, '\0')), false});
  cases.push_back({"invalid utf-8", ResponseFrameBytes("\x12\x02\xc3\x28"), false});
  cases.push_back({"invalid utf-8 in type_url", ResponseFrameBytes("\x3a\x03\x0a\x01\xff"), false});
  cases.push_back({"binary value", ResponseFrameBytes("\x3a\x03\x12\x01\xff"), true});
  cases.push_back({"truncated", ResponseFrameBytes("\x12\x09short"), false});
  cases.push_back({"overlong varint",
                   ResponseFrameBytes("\x50\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"), false});
  {
    std::string frame = ResponseFrameBytes(full).substr(4) + std::string("\x2a\x00", 2);  // A ping.
    cases.push_back(
        {"response then ping", Header(static_cast<std::uint32_t>(frame.size())) + frame, false});
  }
  // A command frame: not a response.
  cases.push_back({"command", CommandFrameBytes(FullCommand("c").SerializeAsString()), false});
  cases.push_back({"full last", ResponseFrameBytes(full), true});
  return cases;
}

TEST(FrameDecoder, ResponseNextDecodesWhatNextDecodes) {
  v1::CommandResponseEnvelope response;  // One message through every case, as the client does.
  for (const ReuseCase& c : ResponseCases()) {
    SCOPED_TRACE(c.name);
    bool is_response = !c.reusable;
    BothWays both;
    const bool decoded = DecodeBothWays(
        c.frame,
        [&](FrameDecoder& decoder, v1::Frame& frame) {
          return decoder.Next(frame, response, is_response);
        },
        both);
    EXPECT_EQ(is_response, c.reusable);
    if (!decoded) continue;
    const v1::Frame& want = both.want;
    const v1::Frame& frame = both.frame;
    if (!is_response) {
      EXPECT_TRUE(MessageDifferencer::Equals(frame, want));
      EXPECT_EQ(response.ByteSizeLong(), 0u) << "left empty when the frame holds the result";
      continue;
    }
    ASSERT_TRUE(want.has_response());
    EXPECT_FALSE(frame.has_response());
    EXPECT_TRUE(MessageDifferencer::Equals(response, want.response()))
        << "got " << response.ShortDebugString() << "\nwant " << want.response().ShortDebugString();
    EXPECT_EQ(response.has_timestamp(), want.response().has_timestamp());
    EXPECT_EQ(response.has_payload(), want.response().has_payload());
    EXPECT_EQ(response.SerializeAsString(), want.response().SerializeAsString());
  }
}

TEST(FrameDecoder, ResponseNextLeavesOtherFramesToTheFrame) {
  v1::CommandResponseEnvelope response;
  for (const v1::Frame& want : OneFrameOfEachKind()) {
    SCOPED_TRACE(want.ShortDebugString());
    FrameDecoder decoder;
    decoder.Feed(AsBytes(Encode({&want, 1})));
    v1::Frame frame;
    bool is_response = false;
    ASSERT_EQ(decoder.Next(frame, response, is_response), DecodeResult::kFrame);
    EXPECT_EQ(is_response, want.has_response() && !want.response().has_error());
    if (is_response) {
      EXPECT_TRUE(MessageDifferencer::Equals(response, want.response()));
    } else {
      EXPECT_TRUE(MessageDifferencer::Equals(frame, want));
    }
  }
}

// --- The client's command encoder --------------------------------------------------------

TEST(EncodeCommand, WritesWhatProtobufWritesForTheSameEnvelope) {
  v1::StreamInfo payload;
  payload.set_entity_type("User");
  payload.set_id("user-0123456789abcdef0123456789abcdef");
  const v1::Ping empty_payload;  // Packs to an Any without a value.
  struct Case {
    std::string name;
    internal::CommandFields fields;
  };
  const std::string long_subject(300, 's');  // Two-byte lengths.
  std::vector<Case> cases;
  cases.push_back({"every field",
                   {.id = "00000000-0000-4000-8000-000000000001",
                    .timestamp = {1'700'000'000, 123'456'789},
                    .service_id = "client",
                    .transaction_id = "tx",
                    .type = "cqrs.v1.StreamInfo",
                    .subject = "user-1",
                    .payload = &payload,
                    .deadline = TimestampParts{1'700'000'010, 5},
                    .correlation_id = "corr",
                    .causation_id = "cause"}});
  cases.push_back(
      {"no deadline, empty strings",
       {.id = "x", .timestamp = {1, 0}, .type = "cqrs.v1.StreamInfo", .payload = &payload}});
  cases.push_back({"empty payload, zero timestamps, unicode",
                   {.id = "ид",
                    .timestamp = {0, 0},
                    .service_id = "клиент",
                    .type = "cqrs.v1.Ping",
                    .subject = long_subject,
                    .payload = &empty_payload,
                    .deadline = TimestampParts{0, 0}}});
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const internal::CommandFields& f = c.fields;
    v1::CommandEnvelope want;  // As Send builds it through the message.
    want.set_id(std::string(f.id));
    want.mutable_timestamp()->set_seconds(f.timestamp.seconds);
    want.mutable_timestamp()->set_nanos(f.timestamp.nanos);
    want.set_service_id(std::string(f.service_id));
    want.set_transaction_id(std::string(f.transaction_id));
    want.set_type(std::string(f.type));
    want.set_subject(std::string(f.subject));
    want.mutable_payload()->PackFrom(*f.payload);
    if (f.deadline) {
      want.mutable_deadline()->set_seconds(f.deadline->seconds);
      want.mutable_deadline()->set_nanos(f.deadline->nanos);
    }
    want.set_correlation_id(std::string(f.correlation_id));
    want.set_causation_id(std::string(f.causation_id));
    const std::string bytes = internal::EncodeCommand(f);
    EXPECT_EQ(bytes, want.SerializeAsString());
    v1::CommandEnvelope parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes));
    EXPECT_TRUE(MessageDifferencer::Equals(parsed, want));
    EXPECT_EQ(parsed.has_deadline(), f.deadline.has_value());
  }
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
  int parsed_commands = 0;
  int parsed_responses = 0;
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
    // Which seeds the hand-written parsers take (the fuzzer mutates from there).
    FrameDecoder commands;
    commands.Feed(AsBytes(bytes.substr(1 + splits)));
    v1::Frame frame;
    v1::CommandEnvelope command;
    for (bool is_command = false;
         commands.Next(frame, command, is_command) == DecodeResult::kFrame;) {
      parsed_commands += is_command ? 1 : 0;
    }
    FrameDecoder responses;
    responses.Feed(AsBytes(bytes.substr(1 + splits)));
    v1::CommandResponseEnvelope response;
    for (bool is_response = false;
         responses.Next(frame, response, is_response) == DecodeResult::kFrame;) {
      parsed_responses += is_response ? 1 : 0;
    }
  }
  EXPECT_GT(files, 0);
  EXPECT_EQ(kinds.size(), static_cast<std::size_t>(v1::Frame::descriptor()->field_count()));
  EXPECT_GT(parsed_commands, 0) << "no seed reaches the reusing command parser";
  EXPECT_GT(parsed_responses, 0) << "no seed reaches the response parser";
}

}  // namespace
}  // namespace cqrs::net
