#include "bench_ws.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "bench_wire.h"
#include "cqrs/net/websocket_codec.h"
#include "cqrs/v1/gateway.pb.h"

namespace cqrs::bench {
namespace {

namespace ws = net::ws;

// RFC 6455's example key and its accept value: any 16-byte key will do for the gateway.
constexpr char kKey[] = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr char kAccept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
constexpr char kSubprotocol[] = "cqrs.v1.proto";
constexpr std::size_t kMaxResponseHeader = 8 * 1024;
constexpr std::size_t kReadBytes = 256 * 1024;
constexpr std::uint8_t kMask[4] = {0x5a, 0xc3, 0x17, 0x8e};

// ServerMessage fields (tag bytes: field << 3 | wire type 2).
constexpr std::uint64_t kSubscribedTag = (1 << 3) | 2;
constexpr std::uint64_t kEventTag = (3 << 3) | 2;
constexpr std::uint64_t kErrorTag = (4 << 3) | 2;
// EventEnvelope fields.
constexpr std::uint64_t kOffsetField = 12;
constexpr std::uint64_t kCausationField = 15;

std::string Errno(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

// A masked client frame (FIN set) carrying `payload`.
std::string MaskedFrame(ws::Opcode opcode, absl::string_view payload) {
  std::string frame;
  frame.push_back(static_cast<char>(0x80 | static_cast<std::uint8_t>(opcode)));
  const std::size_t n = payload.size();
  if (n < 126) {
    frame.push_back(static_cast<char>(0x80 | n));
  } else if (n < 65536) {
    frame.push_back(static_cast<char>(0x80 | 126));
    frame.push_back(static_cast<char>(n >> 8));
    frame.push_back(static_cast<char>(n & 0xff));
  } else {
    frame.push_back(static_cast<char>(0x80 | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      frame.push_back(static_cast<char>((static_cast<std::uint64_t>(n) >> shift) & 0xff));
    }
  }
  frame.append(reinterpret_cast<const char*>(kMask), 4);
  for (std::size_t i = 0; i < n; ++i) {
    frame.push_back(static_cast<char>(static_cast<std::uint8_t>(payload[i]) ^ kMask[i % 4]));
  }
  return frame;
}

// Writes all of `bytes` to a non-blocking socket that is expected to take them at once (small
// handshake and control frames on an uncongested connection).
bool SendSmall(int fd, absl::string_view bytes) {
  while (!bytes.empty()) {
    const ssize_t n = send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// The value of header `name` (exact spelling, as the gateway writes it) in an HTTP response.
absl::string_view Header(absl::string_view response, absl::string_view name) {
  const std::string key = absl::StrCat("\r\n", name, ": ");
  const std::size_t at = response.find(key);
  if (at == absl::string_view::npos) return {};
  const std::size_t start = at + key.size();
  const std::size_t end = response.find("\r\n", start);
  return response.substr(start, end == absl::string_view::npos ? end : end - start);
}

std::string Printable(absl::string_view bytes) {
  return absl::CHexEscape(bytes.substr(0, std::min<std::size_t>(bytes.size(), 200)));
}

}  // namespace

struct WsSubscribers::Connection {
  enum class State { kConnecting, kUpgrading, kSubscribing, kLive, kClosed };

  int fd = -1;
  State state = State::kConnecting;
  // Handshake: the response so far. Live: bytes that arrived after `subscribed`, for the reader.
  std::string pending;
  ws::Decoder decoder{
      ws::DecoderOptions{.max_message_bytes = std::size_t{1} << 20, .require_mask = false}};

  ~Connection() {
    if (fd >= 0) close(fd);
  }
};

std::size_t EphemeralPorts() {
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  std::size_t low = 0;
  std::size_t high = 0;
  if (!(range >> low >> high) || high < low) return 28'232;  // Linux's default range.
  return high - low + 1;
}

WsSubscribers::WsSubscribers() = default;

WsSubscribers::~WsSubscribers() {
  Stop();
  Close();
}

absl::Status WsSubscribers::Connect(const WsSubscriberOptions& options,
                                    Clock::time_point deadline) {
  const std::string request = absl::StrCat(
      "GET /events HTTP/1.1\r\nHost: 127.0.0.1:", options.port,
      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ", kKey,
      "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ", kSubprotocol, "\r\n\r\n");
  v1::ClientMessage message;
  message.mutable_subscribe()->set_subscription_id("bench");
  message.mutable_subscribe()->add_channels(options.channel);
  const std::string subscribe = MaskedFrame(ws::Opcode::kBinary, message.SerializeAsString());

  const int epoll = epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) return absl::InternalError(Errno("epoll_create1"));
  struct EpollCloser {
    int fd;
    ~EpollCloser() { close(fd); }
  } epoll_closer{epoll};

  const std::size_t first = connections_.size();
  const std::size_t count = options.count;
  connections_.reserve(first + count);
  std::size_t next = 0;
  std::size_t in_flight = 0;
  std::size_t subscribed = 0;
  std::vector<char> buffer(64 * 1024);
  std::vector<epoll_event> events(256);

  const auto fail = [&](std::size_t index, std::string what) {
    return absl::UnavailableError(
        absl::StrCat("subscriber ", index - first, " of ", count, ": ", what));
  };
  // Feeds handshake bytes to connection `index`; an error status when the gateway refused.
  const auto advance = [&](std::size_t index, std::span<char> input) -> absl::Status {
    Connection& c = *connections_[index];
    std::string rest;
    if (c.state == Connection::State::kUpgrading) {
      c.pending.append(input.data(), input.size());
      const std::size_t end = c.pending.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (c.pending.size() > kMaxResponseHeader) {
          return fail(index, absl::StrCat("no end of the upgrade response in ", c.pending.size(),
                                          " bytes"));
        }
        return absl::OkStatus();
      }
      const absl::string_view head(c.pending.data(), end + 2);
      if (head.rfind("HTTP/1.1 101 ", 0) != 0 || Header(head, "Sec-WebSocket-Accept") != kAccept ||
          Header(head, "Sec-WebSocket-Protocol") != kSubprotocol) {
        return fail(index, absl::StrCat("the gateway answered the upgrade with '",
                                        Printable(c.pending), "'"));
      }
      rest = c.pending.substr(end + 4);
      std::string().swap(c.pending);
      c.state = Connection::State::kSubscribing;
      if (!SendSmall(c.fd, subscribe)) return fail(index, Errno("sending subscribe"));
      input = std::span<char>(rest.data(), rest.size());
    }
    // kSubscribing: the first message must be `subscribed`.
    for (;;) {
      switch (c.decoder.Next(input)) {
        case ws::Decoder::Event::kNeedMore:
          return absl::OkStatus();
        case ws::Decoder::Event::kPing:
          if (!SendSmall(c.fd, MaskedFrame(ws::Opcode::kPong, c.decoder.message()))) {
            return fail(index, Errno("sending pong"));
          }
          break;
        case ws::Decoder::Event::kPong:
          break;
        case ws::Decoder::Event::kClose:
          return fail(index,
                      absl::StrCat("the gateway closed the connection: ", c.decoder.close_code(),
                                   " '", c.decoder.close_reason(), "'"));
        case ws::Decoder::Event::kError:
          return fail(index,
                      absl::StrCat("undecodable frame from the gateway: ", c.decoder.error()));
        case ws::Decoder::Event::kMessage: {
          const absl::string_view bytes = c.decoder.message();
          WireReader reader(bytes.data(), bytes.size());
          std::uint64_t tag = 0;
          if (!reader.Varint(tag) || tag != kSubscribedTag) {
            v1::ServerMessage reply;
            const bool parsed = reply.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
            return fail(index, absl::StrCat("the gateway answered subscribe with ",
                                            parsed ? reply.ShortDebugString() : Printable(bytes)));
          }
          c.state = Connection::State::kLive;
          // Whatever followed `subscribed` is for the reading thread.
          c.pending.assign(input.data(), input.size());
          return absl::OkStatus();
        }
      }
    }
  };

  while (subscribed < count) {
    while (in_flight < options.max_handshakes && next < count) {
      const std::size_t index = first + next;
      connections_.push_back(std::make_unique<Connection>());
      Connection& c = *connections_.back();
      c.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (c.fd < 0) return fail(index, Errno("socket"));
      const int one = 1;
      setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      if (options.receive_buffer > 0) {
        setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &options.receive_buffer,
                   sizeof options.receive_buffer);
      }
      if (options.source_addresses > 1) {
        setsockopt(c.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        sockaddr_in source{};
        source.sin_family = AF_INET;
        source.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 +
                                       static_cast<std::uint32_t>(next % options.source_addresses));
        if (bind(c.fd, reinterpret_cast<sockaddr*>(&source), sizeof source) != 0) {
          return fail(index, Errno("bind"));
        }
      }
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      address.sin_port = htons(options.port);
      if (connect(c.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 &&
          errno != EINPROGRESS) {
        return fail(index, Errno("connect"));
      }
      epoll_event event{};
      event.events = EPOLLOUT | EPOLLIN;
      event.data.u64 = index;
      if (epoll_ctl(epoll, EPOLL_CTL_ADD, c.fd, &event) != 0) return fail(index, Errno("epoll"));
      ++next;
      ++in_flight;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat(subscribed, " of ", count, " subscribers subscribed when the time was up (",
                       in_flight, " handshakes in progress)"));
    }
    const int ready = epoll_wait(epoll, events.data(), static_cast<int>(events.size()),
                                 static_cast<int>(std::min<std::int64_t>(left, 100)));
    if (ready < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(Errno("epoll_wait"));
    }
    for (int i = 0; i < ready; ++i) {
      const auto index = static_cast<std::size_t>(events[i].data.u64);
      Connection& c = *connections_[index];
      if (c.state == Connection::State::kConnecting) {
        int error = 0;
        socklen_t length = sizeof error;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &error, &length);
        if (error != 0) {
          return fail(index, absl::StrCat("connect to 127.0.0.1:", options.port, ": ",
                                          std::strerror(error)));
        }
        if ((events[i].events & EPOLLOUT) == 0) continue;
        if (!SendSmall(c.fd, request)) return fail(index, Errno("sending the upgrade request"));
        c.state = Connection::State::kUpgrading;
        epoll_event event{};
        event.events = EPOLLIN;
        event.data.u64 = index;
        epoll_ctl(epoll, EPOLL_CTL_MOD, c.fd, &event);
        continue;
      }
      const ssize_t n = read(c.fd, buffer.data(), buffer.size());
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n <= 0) {
        return fail(index, n == 0 ? std::string("the gateway closed the connection during the "
                                                "handshake")
                                  : Errno("read"));
      }
      if (absl::Status status =
              advance(index, std::span<char>(buffer.data(), static_cast<std::size_t>(n)));
          !status.ok()) {
        return status;
      }
      if (c.state == Connection::State::kLive) {
        epoll_ctl(epoll, EPOLL_CTL_DEL, c.fd, nullptr);
        --in_flight;
        ++subscribed;
      }
    }
  }
  return absl::OkStatus();
}

void WsSubscribers::Start(unsigned threads, EventObserver* observer) {
  Stop();
  stop_.store(false);
  threads = std::max(1u, threads);
  for (unsigned t = 0; t < threads; ++t) {
    threads_.emplace_back([this, t, threads, observer] { ReadLoop(t, threads, observer); });
  }
}

void WsSubscribers::Stop() {
  stop_.store(true);
  for (auto& thread : threads_) thread.join();
  threads_.clear();
}

void WsSubscribers::Close() {
  Stop();
  connections_.clear();
}

std::string WsSubscribers::first_close() const {
  std::lock_guard lock(mutex_);
  return first_close_;
}

void WsSubscribers::MarkClosed(std::size_t index, std::string what, unsigned thread,
                               EventObserver* observer) {
  connections_[index]->state = Connection::State::kClosed;
  observer->OnClosed(thread, index);
  if (closed_.fetch_add(1, std::memory_order_relaxed) == 0) {
    std::lock_guard lock(mutex_);
    first_close_ = absl::StrCat("subscriber ", index, ": ", what);
  }
}

bool WsSubscribers::Consume(unsigned thread, std::size_t index, std::span<char> input,
                            std::int64_t now_ns, EventObserver* observer) {
  Connection& c = *connections_[index];
  for (;;) {
    switch (c.decoder.Next(input)) {
      case ws::Decoder::Event::kNeedMore:
        return true;
      case ws::Decoder::Event::kMessage: {
        const absl::string_view bytes = c.decoder.message();
        WireReader message(bytes.data(), bytes.size());
        std::uint64_t tag = 0;
        std::span<const std::byte> envelope;
        if (!message.Varint(tag)) break;
        if (tag == kErrorTag) {
          v1::ServerMessage reply;
          reply.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
          MarkClosed(index, absl::StrCat("the gateway sent ", reply.ShortDebugString()), thread,
                     observer);
          return false;
        }
        if (tag != kEventTag || !message.Bytes(envelope)) break;
        WireReader fields(envelope);
        std::uint64_t offset = 0;
        std::string_view causation;
        while (!fields.done()) {
          if (!fields.Varint(tag)) break;
          const std::uint64_t field = tag >> 3;
          const auto wire_type = static_cast<std::uint32_t>(tag & 7);
          if (field == kOffsetField && wire_type == 0) {
            if (!fields.Varint(offset)) break;
          } else if (field == kCausationField && wire_type == 2) {
            std::span<const std::byte> id;
            if (!fields.Bytes(id)) break;
            causation = {reinterpret_cast<const char*>(id.data()), id.size()};
          } else if (!fields.Skip(wire_type)) {
            break;
          }
        }
        observer->OnEvent(thread, index, offset, causation, now_ns);
        break;
      }
      case ws::Decoder::Event::kPing:
        SendSmall(c.fd, MaskedFrame(ws::Opcode::kPong, c.decoder.message()));
        break;
      case ws::Decoder::Event::kPong:
        break;
      case ws::Decoder::Event::kClose:
        MarkClosed(
            index,
            absl::StrCat("close ", c.decoder.close_code(), " '", c.decoder.close_reason(), "'"),
            thread, observer);
        return false;
      case ws::Decoder::Event::kError:
        MarkClosed(index, absl::StrCat("undecodable frame: ", c.decoder.error()), thread, observer);
        return false;
    }
  }
}

void WsSubscribers::ReadLoop(unsigned thread, unsigned threads, EventObserver* observer) {
  const int epoll = epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) return;
  std::unique_ptr<char[]> buffer(new char[kReadBytes]);
  for (std::size_t i = thread; i < connections_.size(); i += threads) {
    Connection& c = *connections_[i];
    if (c.state != Connection::State::kLive) continue;
    if (!c.pending.empty()) {
      std::string pending = std::move(c.pending);
      c.pending.clear();
      if (!Consume(thread, i, std::span<char>(pending.data(), pending.size()), NowNs(), observer)) {
        continue;
      }
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = i;
    epoll_ctl(epoll, EPOLL_CTL_ADD, c.fd, &event);
  }
  std::vector<epoll_event> events(512);
  while (!stop_.load(std::memory_order_relaxed)) {
    const int ready = epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 20);
    for (int k = 0; k < ready; ++k) {
      const auto index = static_cast<std::size_t>(events[k].data.u64);
      Connection& c = *connections_[index];
      const ssize_t n = read(c.fd, buffer.get(), kReadBytes);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      bool open = n > 0;
      if (n == 0) {
        MarkClosed(index, "the gateway closed the connection (EOF)", thread, observer);
      } else if (n < 0) {
        MarkClosed(index, Errno("read"), thread, observer);
      } else {
        open = Consume(thread, index, std::span<char>(buffer.get(), static_cast<std::size_t>(n)),
                       NowNs(), observer);
      }
      if (!open) epoll_ctl(epoll, EPOLL_CTL_DEL, c.fd, nullptr);
    }
  }
  close(epoll);
}

}  // namespace cqrs::bench
