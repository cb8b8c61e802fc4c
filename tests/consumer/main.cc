// Uses the installed headers and libraries: encodes a command frame, decodes it back, maps a
// status. Exits 0 when everything agrees.

#include <iostream>

#include "cqrs/core/command_status.h"
#include "cqrs/net/frame_codec.h"
#include "cqrs/v1/frame.pb.h"

int main() {
  cqrs::v1::Frame frame;
  frame.mutable_command()->set_id("consumer-1");
  frame.mutable_command()->set_subject("user-1");

  cqrs::net::FrameEncoder encoder;
  if (auto status = encoder.Append(frame); !status.ok()) {
    std::cerr << status << "\n";
    return 1;
  }
  cqrs::net::FrameDecoder decoder;
  decoder.Feed(encoder.data());
  cqrs::v1::Frame decoded;
  if (decoder.Next(decoded) != cqrs::net::DecodeResult::kFrame ||
      decoded.command().id() != "consumer-1") {
    std::cerr << "decode failed: " << decoder.error() << "\n";
    return 1;
  }
  if (cqrs::ToCommandStatus(absl::StatusCode::kFailedPrecondition) !=
      cqrs::v1::CommandResponseEnvelope::REJECTED) {
    std::cerr << "status mapping failed\n";
    return 1;
  }
  std::cout << "consumer: OK\n";
  return 0;
}
