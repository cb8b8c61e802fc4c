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
#include <type_traits>
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

// Properties 4 and 5: decodes the whole stream through a specialized Next, which parses the
// frames it takes (a command, a response) into `Message`, kept across frames as a session or a
// client keeps it: leftovers must never show. `mutable_kind` puts such a message back into its
// frame for the comparison.
template <typename Message>
void DrainSpecialized(FrameDecoder& decoder, std::vector<Outcome>& out,
                      Message* (cqrs::v1::Frame::*mutable_kind)()) {
  Message kept;
  for (;;) {
    cqrs::v1::Frame frame;
    bool taken = false;
    const DecodeResult result = decoder.Next(frame, kept, taken);
    if (result == DecodeResult::kNeedMore) return;
    Outcome outcome{result, {}};
    if (result == DecodeResult::kFrame) {
      if (taken) {
        Check(frame.kind_case() == cqrs::v1::Frame::KIND_NOT_SET,
              "a frame the specialized parser took leaves the frame untouched");
        *(frame.*mutable_kind)() = kept;
      } else if constexpr (std::is_same_v<Message, cqrs::v1::CommandResponseEnvelope>) {
        Check(kept.ByteSizeLong() == 0, "a frame for protobuf leaves the response empty");
      }
      outcome.bytes = Deterministic(frame);
    } else {
      Check(!taken, "an error is not a parsed frame");
      outcome.error = decoder.error().ToString();
    }
    out.push_back(std::move(outcome));
    if (decoder.failed()) return;
  }
}

// Aborts unless `other` has exactly the one-shot outcomes: results, frames and errors.
void CheckSameOutcomes(const std::vector<Outcome>& whole, const std::vector<Outcome>& other,
                       const char* decoder) {
  const char* differs = whole.size() != other.size() ? "as many results" : nullptr;
  for (std::size_t i = 0; differs == nullptr && i < whole.size(); ++i) {
    if (whole[i].result != other[i].result) differs = "the same results";
    if (whole[i].bytes != other[i].bytes) differs = "the same frames";
    if (whole[i].error != other[i].error) differs = "the same errors";
  }
  if (differs != nullptr) {
    std::fprintf(stderr, "property violated: %s does not yield %s\n", decoder, differs);
    std::abort();
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
  DrainSpecialized(reusing_decoder, reusing, &cqrs::v1::Frame::mutable_command);
  CheckSameOutcomes(whole, reusing, "the reusing command decoder");

  std::vector<Outcome> responses;
  FrameDecoder response_decoder(kLimits);
  response_decoder.Feed({stream, length});
  DrainSpecialized(response_decoder, responses, &cqrs::v1::Frame::mutable_response);
  CheckSameOutcomes(whole, responses, "the response decoder");

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
