#include "testing/raw_peer.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace cqrs::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::string Errno(int error) { return std::strerror(error); }

}  // namespace

std::string Describe(const v1::Frame& frame) {
  std::string text = frame.ShortDebugString();
  constexpr std::size_t kMax = 300;
  if (text.size() > kMax) text = absl::StrCat(text.substr(0, kMax), "...");
  return text.empty() ? "<empty frame>" : text;
}

RawPeer::RawPeer(net::FrameLimits limits) : decoder_(limits) {}

RawPeer::~RawPeer() { Close(); }

absl::Status RawPeer::Connect(std::uint16_t port) {
  Close();
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return absl::InternalError(absl::StrCat("socket: ", Errno(errno)));
  if (receive_buffer_ > 0) {
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer_, sizeof receive_buffer_);
  }
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int result;
  do {
    result = ::connect(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  } while (result != 0 && errno == EINTR);
  if (result != 0) {
    const int error = errno;
    Close();
    return absl::UnavailableError(absl::StrCat("connect to 127.0.0.1:", port, ": ", Errno(error)));
  }
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  decoder_ = net::FrameDecoder(decoder_.limits());
  eof_ = false;
  eof_reason_.clear();
  return absl::OkStatus();
}

absl::StatusOr<v1::HelloAck> RawPeer::Handshake(std::string auth_token) {
  v1::Frame hello;
  hello.mutable_hello()->set_protocol_version(1);
  hello.mutable_hello()->set_client_name("raw-peer");
  hello.mutable_hello()->set_auth_token(std::move(auth_token));
  if (auto status = Send(hello); !status.ok()) return status;
  auto frame = Read();
  if (!frame.ok()) return frame.status();
  if (!frame->has_hello_ack()) {
    return absl::FailedPreconditionError(absl::StrCat("expected HelloAck, got ", Describe(*frame)));
  }
  return frame->hello_ack();
}

absl::Status RawPeer::SendBytes(std::string_view bytes) {
  if (fd_ < 0) return absl::FailedPreconditionError("not connected");
  while (!bytes.empty()) {
    const ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::UnavailableError(absl::StrCat("send: ", Errno(errno)));
    }
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return absl::OkStatus();
}

absl::Status RawPeer::Send(const v1::Frame& frame) { return Send(std::span(&frame, 1)); }

absl::Status RawPeer::Send(std::span<const v1::Frame> frames) {
  // No limit: a test may send frames larger than the server accepts.
  net::FrameEncoder encoder({.max_frame_bytes = UINT32_MAX});
  for (const auto& frame : frames) {
    if (auto status = encoder.Append(frame); !status.ok()) return status;
  }
  const auto data = encoder.data();
  return SendBytes({reinterpret_cast<const char*>(data.data()), data.size()});
}

absl::StatusOr<v1::Frame> RawPeer::Read(std::chrono::milliseconds timeout) {
  const auto until = Clock::now() + timeout;
  v1::Frame frame;
  for (;;) {
    const net::DecodeResult result = decoder_.Next(frame);
    if (result == net::DecodeResult::kFrame) return frame;
    if (result != net::DecodeResult::kNeedMore) {
      return absl::DataLossError(
          absl::StrCat("undecodable bytes from the server: ", decoder_.error().message()));
    }
    if (eof_) {
      return absl::UnavailableError(absl::StrCat(
          "the server closed the connection (", eof_reason_, ")",
          decoder_.buffered() > 0
              ? absl::StrCat(" inside a frame, ", decoder_.buffered(), " bytes buffered")
              : ""));
    }
    if (fd_ < 0) return absl::FailedPreconditionError("not connected");
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("no complete frame within ", timeout.count(), "ms"));
    }
    pollfd readable{.fd = fd_, .events = POLLIN, .revents = 0};
    const int ready = ::poll(&readable, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR)
      return absl::InternalError(absl::StrCat("poll: ", Errno(errno)));
    if (ready <= 0) continue;
    const auto space = decoder_.Prepare(16 * 1024);
    const ssize_t n = ::recv(fd_, space.data(), space.size(), 0);
    if (n > 0) {
      decoder_.Commit(static_cast<std::size_t>(n));
    } else if (n == 0) {
      eof_ = true;
      eof_reason_ = "EOF";
    } else if (errno != EINTR && errno != EAGAIN) {
      eof_ = true;
      eof_reason_ = Errno(errno);
    }
  }
}

absl::StatusOr<v1::CommandResponseEnvelope> RawPeer::ReadResponse(
    std::chrono::milliseconds timeout) {
  auto frame = Read(timeout);
  if (!frame.ok()) return frame.status();
  if (!frame->has_response()) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected a response, got ", Describe(*frame)));
  }
  return std::move(*frame->mutable_response());
}

absl::StatusOr<v1::Error> RawPeer::ReadError(std::chrono::milliseconds timeout) {
  auto frame = Read(timeout);
  if (!frame.ok()) return frame.status();
  if (!frame->has_error()) {
    return absl::FailedPreconditionError(absl::StrCat("expected an Error, got ", Describe(*frame)));
  }
  return std::move(*frame->mutable_error());
}

absl::Status RawPeer::ReadEof(std::chrono::milliseconds timeout) {
  auto frame = Read(timeout);
  if (frame.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected the connection to close, got ", Describe(*frame)));
  }
  if (absl::IsUnavailable(frame.status()) && decoder_.buffered() == 0) return absl::OkStatus();
  return frame.status();
}

absl::Status RawPeer::PingPong(std::uint64_t nonce, std::chrono::milliseconds timeout) {
  v1::Frame ping;
  ping.mutable_ping()->set_nonce(nonce);
  if (auto status = Send(ping); !status.ok()) return status;
  auto frame = Read(timeout);
  if (!frame.ok()) return frame.status();
  if (!frame->has_pong() || frame->pong().nonce() != nonce) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected Pong{nonce: ", nonce, "}, got ", Describe(*frame)));
  }
  return absl::OkStatus();
}

absl::Status RawPeer::WaitForHangup(std::chrono::milliseconds timeout) {
  if (fd_ < 0) return absl::FailedPreconditionError("not connected");
  // No events asked for: poll reports only POLLERR and POLLHUP, which it always reports.
  pollfd entry{.fd = fd_, .events = 0, .revents = 0};
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("the connection was not closed within ", timeout.count(), "ms"));
    }
    const int ready = ::poll(&entry, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return absl::InternalError(absl::StrCat("poll: ", Errno(errno)));
    if (ready > 0 && (entry.revents & (POLLERR | POLLHUP)) != 0) return absl::OkStatus();
  }
}

void RawPeer::ShutdownSend() {
  if (fd_ >= 0) ::shutdown(fd_, SHUT_WR);
}

void RawPeer::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

}  // namespace cqrs::testing
