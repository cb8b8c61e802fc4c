// File: testing/raw_peer.h
//
// A hand-driven protocol peer for server tests: a blocking loopback socket plus the frame codec,
// so a test can send anything (valid frames, raw bytes, half frames) and read the server's
// frames one at a time, each read bounded by a timeout.
//
//   testing::RawPeer peer;
//   ASSERT_TRUE(peer.Connect(server.port()).ok());
//   auto ack = peer.Handshake();                              // Hello, then HelloAck
//   ASSERT_TRUE(peer.Send(testing::CommandFrame("c1", "s", payload)).ok());
//   auto response = peer.ReadResponse();                      // next frame, must be a response
//   EXPECT_TRUE(peer.ReadEof().ok());                         // the server closes next
//
// Not thread-safe; one thread drives one peer.

#ifndef CQRS_TESTS_TESTING_RAW_PEER_H_
#define CQRS_TESTS_TESTING_RAW_PEER_H_

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cqrs/net/frame_codec.h"
#include "cqrs/v1/frame.pb.h"

namespace cqrs::testing {

inline constexpr std::chrono::milliseconds kReadTimeout{5'000};

class RawPeer {
 public:
  // Decodes the server's frames with `limits` (default: the protocol's 4 MiB).
  explicit RawPeer(net::FrameLimits limits = {});
  ~RawPeer();
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  // Connects to 127.0.0.1:`port`. kUnavailable (with errno's text) when refused.
  absl::Status Connect(std::uint16_t port);
  // A small receive buffer (SO_RCVBUF, applied by the next Connect) makes the server's writes
  // fill up after a few KiB when this peer does not read. 0: the system's default.
  void set_receive_buffer(int bytes) { receive_buffer_ = bytes; }
  // Sends Hello{version 1, auth_token} and returns the server's HelloAck; kFailedPrecondition
  // naming the frame when the server answers with anything else (e.g. an Error).
  absl::StatusOr<v1::HelloAck> Handshake(std::string auth_token = "");

  // Writes all bytes (blocking). kUnavailable when the connection is gone.
  absl::Status SendBytes(std::string_view bytes);
  absl::Status Send(const v1::Frame& frame);
  // Every frame in one write.
  absl::Status Send(std::span<const v1::Frame> frames);

  // The next frame from the server. kDeadlineExceeded when none is complete within `timeout`,
  // kUnavailable when the server closed the connection (EOF or reset) first, kDataLoss when its
  // bytes do not decode.
  absl::StatusOr<v1::Frame> Read(std::chrono::milliseconds timeout = kReadTimeout);
  // Like Read, and kFailedPrecondition naming the frame unless it is a response.
  absl::StatusOr<v1::CommandResponseEnvelope> ReadResponse(
      std::chrono::milliseconds timeout = kReadTimeout);
  // Like Read, and kFailedPrecondition naming the frame unless it is an Error.
  absl::StatusOr<v1::Error> ReadError(std::chrono::milliseconds timeout = kReadTimeout);
  // OK when the server closes the connection within `timeout` without sending another frame;
  // kFailedPrecondition naming the frame when one arrives, kDeadlineExceeded on timeout.
  absl::Status ReadEof(std::chrono::milliseconds timeout = kReadTimeout);
  // A barrier: sends Ping{nonce} and expects Pong{nonce} as the very next frame, which proves
  // that the server has handled every frame sent before it.
  absl::Status PingPong(std::uint64_t nonce, std::chrono::milliseconds timeout = kReadTimeout);

  // OK once the connection is reset or hung up by the server (e.g. it closed with data of ours
  // unread or its responses unsent), whatever is still unread; kDeadlineExceeded otherwise.
  // Reads nothing.
  absl::Status WaitForHangup(std::chrono::milliseconds timeout = kReadTimeout);

  // Half-closes the sending side (the server sees EOF).
  void ShutdownSend();
  void Close();
  bool connected() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
  int receive_buffer_ = 0;
  net::FrameDecoder decoder_;
  bool eof_ = false;
  std::string eof_reason_;
};

// A short description of a frame for failure messages ("error{code: TIMEOUT ...}").
std::string Describe(const v1::Frame& frame);

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_RAW_PEER_H_
