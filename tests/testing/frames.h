// File: testing/frames.h
//
// Builders for wire frames used across tests and the fuzz corpus writer.
//
//   v1::Frame frame = testing::CommandFrame("cmd-1", "user-1", SomeCommand());
//   std::string bytes = testing::Encode({frame});

#ifndef CQRS_TESTS_TESTING_FRAMES_H_
#define CQRS_TESTS_TESTING_FRAMES_H_

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include <google/protobuf/message.h>

#include "cqrs/v1/frame.pb.h"

namespace cqrs::testing {

v1::Frame HelloFrame(std::string client_name = "test-client");
// A command frame whose payload packs `payload`.
v1::Frame CommandFrame(std::string id, std::string subject,
                       const google::protobuf::Message& payload);
// One frame of every Frame kind, each with its fields filled.
std::vector<v1::Frame> OneFrameOfEachKind();

// Length-prefixed encoding of `frames`, back to back.
std::string Encode(std::span<const v1::Frame> frames);
// A header announcing `length` bytes.
std::string Header(std::uint32_t length);

inline std::span<const std::byte> AsBytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_FRAMES_H_
