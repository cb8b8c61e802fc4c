// Fuzzes FrameDecoder (and FrameEncoder through the round trip).
//
// Input: byte 0 = control c; k = c % 8 bytes of chunk lengths follow (each + 1); the rest is the
// byte stream. With k == 0 the stream is cut into chunks of 1 + c / 8 bytes, else into the k
// lengths, cycled. Properties:
//   1. decoding the stream chunk by chunk (alternating Feed and Prepare/Commit) yields exactly
//      the results of decoding it in one piece: the same frames, errors and order;
//   2. every decoded frame re-encodes, and that decodes to an equal message;
//   3. a length prefix above the (small) limit is refused before any allocation of its size:
//      the run uses -malloc_limit_mb, so allocating the announced length would abort;
//   4. the reusing decoder (Next(frame, command, is_command), one command message reused across
//      the input's frames, as a server session does) yields exactly the one-shot results.
//   5. the client's response decoder (Next(frame, response, is_response), one response message
//      across the input's frames, as a client does) yields exactly the one-shot results.

#include <google/protobuf/stubs/logging.h>
#include <google/protobuf/util/message_differencer.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cqrs/net/frame_codec.h"
#include "fuzz_util.h"

namespace {

using cqrs::fuzz::Deterministic;

using cqrs::net::DecodeResult;
using cqrs::net::FrameDecoder;
using cqrs::net::FrameEncoder;

constexpr cqrs::net::FrameLimits kLimits{.max_frame_bytes = 64 * 1024};

struct Outcome {
  DecodeResult result;
  std::string bytes;  // Deterministic serialization of the frame, for kFrame.
  std::string error;  // decoder.error(), for the other results.
};

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
  }
}

void CheckRoundTrip(const cqrs::v1::Frame& frame) {
  FrameEncoder encoder(kLimits);
  Check(encoder.Append(frame).ok(), "a decoded frame must re-encode");
  FrameDecoder decoder(kLimits);
  decoder.Feed(encoder.data());
  cqrs::v1::Frame again;
  Check(decoder.Next(again) == DecodeResult::kFrame, "a re-encoded frame must decode");
  Check(google::protobuf::util::MessageDifferencer::Equals(frame, again),
        "re-encoded frame decodes to the same message");
  Check(decoder.buffered() == 0, "re-encoded frame leaves no bytes behind");
}

// Property 4: decodes the whole stream through the reusing path.
void DrainReusing(FrameDecoder& decoder, std::vector<Outcome>& out) {
  cqrs::v1::CommandEnvelope reused;  // Kept across frames: leftovers must never show.
  for (;;) {
    cqrs::v1::Frame frame;
    bool is_command = false;
    const DecodeResult result = decoder.Next(frame, reused, is_command);
    if (result == DecodeResult::kNeedMore) return;
    Outcome outcome{result, {}};
    if (result == DecodeResult::kFrame) {
      if (is_command) {
        Check(frame.kind_case() == cqrs::v1::Frame::KIND_NOT_SET,
              "a reused command leaves the frame untouched");
        *frame.mutable_command() = reused;
      }
      outcome.bytes = Deterministic(frame);
    } else {
      Check(!is_command, "an error is not a command");
      outcome.error = decoder.error().ToString();
    }
    out.push_back(std::move(outcome));
    if (decoder.failed()) return;
  }
}

// Property 5: decodes the whole stream through the response path.
void DrainResponses(FrameDecoder& decoder, std::vector<Outcome>& out) {
  cqrs::v1::CommandResponseEnvelope response;  // Kept across frames, as the client keeps it.
  for (;;) {
    cqrs::v1::Frame frame;
    bool is_response = false;
    const DecodeResult result = decoder.Next(frame, response, is_response);
    if (result == DecodeResult::kNeedMore) return;
    Outcome outcome{result, {}};
    if (result == DecodeResult::kFrame) {
      if (is_response) {
        Check(frame.kind_case() == cqrs::v1::Frame::KIND_NOT_SET,
              "a parsed response leaves the frame untouched");
        *frame.mutable_response() = response;
      } else {
        Check(response.ByteSizeLong() == 0, "a frame for protobuf leaves the response empty");
      }
      outcome.bytes = Deterministic(frame);
    } else {
      Check(!is_response, "an error is not a response");
      outcome.error = decoder.error().ToString();
    }
    out.push_back(std::move(outcome));
    if (decoder.failed()) return;
  }
}

void Drain(FrameDecoder& decoder, std::vector<Outcome>& out, bool round_trip) {
  for (;;) {
    cqrs::v1::Frame frame;
    const DecodeResult result = decoder.Next(frame);
    if (result == DecodeResult::kNeedMore) return;
    Outcome outcome{result, {}};
    if (result == DecodeResult::kFrame) {
      if (round_trip) CheckRoundTrip(frame);
      outcome.bytes = Deterministic(frame);
    } else {
      Check(!decoder.error().ok(), "an error result comes with an error status");
      outcome.error = decoder.error().ToString();
    }
    out.push_back(std::move(outcome));
    if (decoder.failed()) return;
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
  const std::size_t k = control % 8;
  if (size < 1 + k) return 0;
  std::vector<std::size_t> chunks;
  if (k == 0) {
    chunks.push_back(1 + control / 8);
  } else {
    for (std::size_t i = 0; i < k; ++i) chunks.push_back(1 + data[1 + i]);
  }
  const auto* stream = reinterpret_cast<const std::byte*>(data + 1 + k);
  const std::size_t length = size - 1 - k;

  std::vector<Outcome> whole;
  FrameDecoder one_shot(kLimits);
  one_shot.Feed({stream, length});
  Drain(one_shot, whole, /*round_trip=*/true);

  std::vector<Outcome> reusing;
  FrameDecoder reusing_decoder(kLimits);
  reusing_decoder.Feed({stream, length});
  DrainReusing(reusing_decoder, reusing);
  Check(whole.size() == reusing.size(), "the reusing decoder yields as many results");
  for (std::size_t i = 0; i < whole.size(); ++i) {
    Check(whole[i].result == reusing[i].result, "the reusing decoder yields the same results");
    Check(whole[i].bytes == reusing[i].bytes, "the reusing decoder yields the same frames");
    Check(whole[i].error == reusing[i].error, "the reusing decoder reports the same errors");
  }

  std::vector<Outcome> responses;
  FrameDecoder response_decoder(kLimits);
  response_decoder.Feed({stream, length});
  DrainResponses(response_decoder, responses);
  Check(whole.size() == responses.size(), "the response decoder yields as many results");
  for (std::size_t i = 0; i < whole.size(); ++i) {
    Check(whole[i].result == responses[i].result, "the response decoder yields the same results");
    Check(whole[i].bytes == responses[i].bytes, "the response decoder yields the same frames");
    Check(whole[i].error == responses[i].error, "the response decoder reports the same errors");
  }

  std::vector<Outcome> split;
  FrameDecoder pieces(kLimits);
  std::size_t at = 0;
  for (std::size_t i = 0; at < length && !pieces.failed(); ++i) {
    const std::size_t n = std::min(chunks[i % chunks.size()], length - at);
    if (i % 2 == 0) {
      pieces.Feed({stream + at, n});
    } else {
      auto space = pieces.Prepare(1);
      const std::size_t direct = std::min(space.size(), n);
      std::memcpy(space.data(), stream + at, direct);
      pieces.Commit(direct);
      if (direct < n) pieces.Feed({stream + at + direct, n - direct});
    }
    at += n;
    Drain(pieces, split, /*round_trip=*/false);
  }

  Check(whole.size() == split.size(), "split decode yields as many results as one-shot");
  for (std::size_t i = 0; i < whole.size(); ++i) {
    Check(whole[i].result == split[i].result, "split decode yields the same results");
    Check(whole[i].bytes == split[i].bytes, "split decode yields the same frames");
  }
  Check(one_shot.failed() == pieces.failed(), "split and one-shot agree on failure");
  if (!one_shot.failed()) {
    Check(one_shot.buffered() == pieces.buffered(), "split and one-shot keep the same tail");
  }
  return 0;
}
