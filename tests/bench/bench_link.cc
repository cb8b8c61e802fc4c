#include "bench_link.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <span>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "bench_wire.h"
#include "cqrs/core/time_util.h"
#include "cqrs/v1/frame.pb.h"
#include "users/v1/users.pb.h"

namespace cqrs::bench {
namespace {

constexpr std::size_t kSequenceOffset = 24;  // Of the 12 sequence digits within an id.
constexpr std::size_t kRing = 1 << 16;       // Sent-time slots; far more than ever in flight.
constexpr char kPlaceholder[] = "########-####-4###-8###-############";
constexpr char kHex[] = "0123456789abcdef";

struct ResponseFacts {
  bool is_response = false;
  std::string_view command_id;
  std::uint64_t status = 0;
  std::size_t event_offsets = 0;
  std::uint64_t first_offset = 0;
};

// Reads a Frame's body: is it a response (field 4), and its command_id (2), status (10) and
// event_offsets (11, packed or not).
bool ReadResponse(std::span<const std::byte> body, ResponseFacts& facts) {
  WireReader frame(body);
  while (!frame.done()) {
    std::uint64_t tag = 0;
    if (!frame.Varint(tag)) return false;
    if (tag != ((4 << 3) | 2)) {
      if (!frame.Skip(tag & 7)) return false;
      continue;
    }
    std::span<const std::byte> response_bytes;
    if (!frame.Bytes(response_bytes)) return false;
    facts.is_response = true;
    WireReader response(response_bytes);
    while (!response.done()) {
      if (!response.Varint(tag)) return false;
      const std::uint64_t field = tag >> 3;
      const std::uint32_t wire_type = tag & 7;
      if (field == 2 && wire_type == 2) {
        std::span<const std::byte> id;
        if (!response.Bytes(id)) return false;
        facts.command_id = {reinterpret_cast<const char*>(id.data()), id.size()};
      } else if (field == 10 && wire_type == 0) {
        if (!response.Varint(facts.status)) return false;
      } else if (field == 11 && wire_type == 2) {
        std::span<const std::byte> packed;
        if (!response.Bytes(packed)) return false;
        WireReader offsets(packed);
        std::uint64_t offset = 0;
        while (!offsets.done()) {
          if (!offsets.Varint(offset)) return false;
          if (facts.event_offsets++ == 0) facts.first_offset = offset;
        }
      } else if (field == 11 && wire_type == 0) {
        std::uint64_t offset = 0;
        if (!response.Varint(offset)) return false;
        if (facts.event_offsets++ == 0) facts.first_offset = offset;
      } else if (!response.Skip(wire_type)) {
        return false;
      }
    }
  }
  return true;
}

}  // namespace

std::string CommandId(std::uint32_t run, std::uint16_t stream, std::uint16_t method,
                      std::uint64_t sequence) {
  // "%08x-%04x-4%03x-8000-%012x", written digit by digit: the CommandClient loop makes one id
  // per command, which a format call would make a visible part of what W1/W2 measure (the
  // blocking clients patch the sequence digits of a ready frame instead).
  std::string id = "00000000-0000-4000-8000-000000000000";
  const auto hex = [&id](std::size_t at, int digits, std::uint64_t value) {
    for (int i = digits - 1; i >= 0; --i) {
      id[at + static_cast<std::size_t>(i)] = kHex[value & 0xf];
      value >>= 4;
    }
  };
  hex(0, 8, run);
  hex(9, 4, stream);
  hex(15, 3, method & 0xfff);
  hex(24, 12, sequence);
  return id;
}

namespace {

// The lowercase hex digits id[begin, end) of a bench command id as a number; false when the id
// is not one of ours or a digit is not hex.
bool HexField(std::string_view id, std::size_t begin, std::size_t end, std::uint64_t* out) {
  if (id.size() != kIdBytes) return false;
  std::uint64_t value = 0;
  for (std::size_t i = begin; i < end; ++i) {
    const char c = id[i];
    int digit;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      digit = c - 'a' + 10;
    } else {
      return false;
    }
    value = (value << 4) | static_cast<std::uint64_t>(digit);
  }
  *out = value;
  return true;
}

}  // namespace

bool SequenceOf(std::string_view id, std::uint64_t* sequence) {
  return HexField(id, kSequenceOffset, kIdBytes, sequence);
}

bool StreamOf(std::string_view id, std::uint16_t* stream) {
  constexpr std::size_t kStreamOffset = 9;  // "pppppppp-ssss-..."
  std::uint64_t value = 0;
  if (!HexField(id, kStreamOffset, kStreamOffset + 4, &value)) return false;
  *stream = static_cast<std::uint16_t>(value);
  return true;
}

void SetSequence(char* id, std::uint64_t sequence) {
  for (int i = 11; i >= 0; --i) {
    id[kSequenceOffset + static_cast<std::size_t>(i)] = kHex[sequence & 0xf];
    sequence >>= 4;
  }
}

CommandTemplate CommandTemplate::Make(std::chrono::seconds deadline_in) {
  users::v1::CreateUser create;
  create.set_name(kUserName);
  create.set_user_id(kPlaceholder);
  v1::Frame frame;
  v1::CommandEnvelope& envelope = *frame.mutable_command();
  envelope.set_id(kPlaceholder);
  envelope.set_type(users::v1::CreateUser::descriptor()->full_name());
  envelope.mutable_payload()->PackFrom(create);
  envelope.set_service_id(kClientName);
  const absl::Time now = absl::Now();
  SetTimestamp(now, *envelope.mutable_timestamp());
  SetTimestamp(now + absl::FromChrono(deadline_in), *envelope.mutable_deadline());
  net::FrameEncoder encoder;
  CommandTemplate result;
  if (!encoder.Append(frame).ok()) return result;
  result.frame.assign(reinterpret_cast<const char*>(encoder.data().data()), encoder.size());
  for (std::size_t at = result.frame.find(kPlaceholder); at != std::string::npos;
       at = result.frame.find(kPlaceholder, at + 1)) {
    result.id_offsets.push_back(at);
  }
  return result;
}

void LoadResult::Merge(LoadResult&& other) {
  rtt_ns.insert(rtt_ns.end(), other.rtt_ns.begin(), other.rtt_ns.end());
  event_offsets.insert(event_offsets.end(), other.event_offsets.begin(), other.event_offsets.end());
  answered += other.answered;
  in_time += other.in_time;
  failed += other.failed;
  busy += other.busy;
  if (error.empty()) error = std::move(other.error);
}

absl::StatusOr<std::unique_ptr<BlockingLink>> BlockingLink::Connect(std::uint16_t port, Peer peer,
                                                                    const CommandTemplate& command,
                                                                    std::uint32_t run,
                                                                    std::uint16_t stream) {
  if (command.id_offsets.size() != 2) {
    return absl::InternalError("the command template has no id and user id to fill in");
  }
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(port);
  const int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval timeout{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    const std::string error = std::strerror(errno);
    close(fd);
    return absl::UnavailableError(absl::StrCat("connect to 127.0.0.1:", port, ": ", error));
  }
  std::string frame = command.frame;
  const std::string id = CommandId(run, stream, /*method=*/1, 0);
  for (std::size_t at : command.id_offsets) frame.replace(at, kIdBytes, id);
  std::unique_ptr<BlockingLink> link(
      new BlockingLink(fd, peer, stream, std::move(frame), command.id_offsets));
  if (peer == Peer::kFloor) return link;

  v1::Frame hello;
  hello.mutable_hello()->set_protocol_version(1);
  hello.mutable_hello()->set_client_name(kClientName);
  net::FrameEncoder encoder;
  std::string error;
  if (auto status = encoder.Append(hello); !status.ok()) return status;
  if (!link->WriteAll(reinterpret_cast<const char*>(encoder.data().data()), encoder.size(),
                      error)) {
    return absl::UnavailableError(absl::StrCat("sending Hello: ", error));
  }
  v1::Frame answer;
  for (;;) {
    const net::DecodeResult result = link->decoder_.Next(answer);
    if (result == net::DecodeResult::kFrame) break;
    if (result != net::DecodeResult::kNeedMore) return link->decoder_.error();
    const auto space = link->decoder_.Prepare();
    const ssize_t n = read(fd, space.data(), space.size());
    if (n <= 0) {
      return absl::UnavailableError(
          absl::StrCat("reading HelloAck: ", n == 0 ? "closed" : std::strerror(errno)));
    }
    link->decoder_.Commit(static_cast<std::size_t>(n));
  }
  if (!answer.has_hello_ack()) {
    return absl::UnavailableError(
        absl::StrCat("the server answered Hello with ", answer.ShortDebugString()));
  }
  return link;
}

SendTimes::SendTimes(std::size_t streams, std::size_t per_stream)
    : streams_(streams),
      per_stream_(per_stream),
      times_(std::make_unique<std::atomic<std::int64_t>[]>(streams * per_stream)) {}

BlockingLink::BlockingLink(int fd, Peer peer, std::uint16_t stream, std::string frame,
                           std::vector<std::size_t> id_offsets)
    : fd_(fd),
      peer_(peer),
      stream_(stream),
      frame_(std::move(frame)),
      id_offsets_(std::move(id_offsets)),
      sent_(kRing) {}

BlockingLink::~BlockingLink() { close(fd_); }

bool BlockingLink::WriteAll(const char* data, std::size_t size, std::string& error) {
  while (size > 0) {
    const ssize_t n = write(fd_, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      error = absl::StrCat("write: ", n == 0 ? "nothing written" : std::strerror(errno));
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

void BlockingLink::AddCommands(std::size_t count, std::int64_t now_ns) {
  const std::size_t size = frame_.size();
  std::size_t at = batch_.size();
  batch_.resize(at + count * size);
  for (std::size_t i = 0; i < count; ++i, at += size) {
    char* out = batch_.data() + at;
    std::memcpy(out, frame_.data(), size);
    const std::uint64_t sequence = next_sequence_++;
    for (std::size_t offset : id_offsets_) SetSequence(out + offset, sequence);
    sent_[sequence % kRing] = {sequence, now_ns};
    if (times_ != nullptr) times_->Set(stream_, sequence, now_ns);
  }
}

bool BlockingLink::ReadAnswers(LoadResult& result, bool record, std::int64_t deadline_ns,
                               std::uint64_t& in_flight, std::int64_t& now_ns) {
  const auto space = decoder_.Prepare(64 * 1024);
  ssize_t n = 0;
  do {
    n = read(fd_, space.data(), space.size());
  } while (n < 0 && errno == EINTR);
  if (n <= 0) {
    result.error =
        n == 0 ? "the peer closed the connection" : absl::StrCat("read: ", std::strerror(errno));
    return false;
  }
  decoder_.Commit(static_cast<std::size_t>(n));
  now_ns = NowNs();
  std::span<const std::byte> body;
  net::DecodeResult decoded;
  while ((decoded = decoder_.NextBody(body)) == net::DecodeResult::kFrame) {
    last_response_bytes_ = body.size() + net::kFrameHeaderBytes;
    std::uint64_t sequence = 0;
    bool ok = true;
    if (peer_ == Peer::kFloor) {
      sequence = next_answer_++;
    } else {
      ResponseFacts facts;
      if (!ReadResponse(body, facts) || !facts.is_response ||
          !SequenceOf(facts.command_id, &sequence)) {
        result.error = "the server sent a frame that is not a response to a command of ours";
        return false;
      }
      ok = facts.status == 1 /* OK */ && facts.event_offsets == 1;
      if (times_ != nullptr && facts.event_offsets == 1) {
        result.event_offsets.push_back(facts.first_offset);
      }
    }
    Sent& slot = sent_[sequence % kRing];
    if (slot.sequence != sequence) {
      result.error = absl::StrCat("an answer for command ", sequence, " which is not in flight");
      return false;
    }
    slot.sequence = kUnlimited;  // A second answer would be an error.
    --in_flight;
    ++result.answered;
    if (now_ns <= deadline_ns) ++result.in_time;
    if (!ok) ++result.failed;
    if (record) result.rtt_ns.push_back(static_cast<std::uint32_t>(now_ns - slot.at_ns));
  }
  if (decoded != net::DecodeResult::kNeedMore) {
    result.error = absl::StrCat("undecodable answer: ", decoder_.error().message());
    return false;
  }
  return true;
}

void BlockingLink::Run(std::size_t window, std::uint64_t max_commands, Clock::time_point deadline,
                       LoadResult& result, bool record) {
  const std::int64_t deadline_ns = deadline.time_since_epoch().count();
  const std::int64_t start_ns = NowNs();
  std::int64_t last_ns = start_ns;
  std::uint64_t sent = 0;
  std::uint64_t in_flight = 0;
  const auto send_more = [&](std::int64_t now_ns) {
    if (now_ns >= deadline_ns || sent >= max_commands || in_flight >= window) return true;
    const std::uint64_t count = std::min<std::uint64_t>(window - in_flight, max_commands - sent);
    batch_.clear();
    AddCommands(count, NowNs());
    sent += count;
    in_flight += count;
    return WriteAll(batch_.data(), batch_.size(), result.error);
  };
  if (!send_more(start_ns)) return;
  // Once sending has stopped, the answers still due must come within this.
  constexpr std::int64_t kDrainNs = 10'000'000'000;
  std::int64_t drain_until = std::numeric_limits<std::int64_t>::max();
  while (in_flight > 0) {
    if (drain_until == std::numeric_limits<std::int64_t>::max() &&
        (sent >= max_commands || last_ns >= deadline_ns)) {
      drain_until = last_ns + kDrainNs;
    }
    if (last_ns > drain_until) {
      result.error = absl::StrCat(in_flight, " answers still missing 10 s after the last send");
      break;
    }
    std::int64_t now_ns = last_ns;
    if (!ReadAnswers(result, record, deadline_ns, in_flight, now_ns)) break;
    last_ns = now_ns;
    if (!send_more(now_ns)) break;
  }
  result.busy += std::chrono::nanoseconds(last_ns - start_ns);
}

void BlockingLink::RunPaced(double rate, std::uint64_t count, LoadResult& result, bool record) {
  // The schedule's precision: the default timer slack (50 us) would delay most sends.
  const int slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  prctl(PR_SET_TIMERSLACK, 1'000, 0, 0, 0);
  constexpr std::int64_t kDrainNs = 10'000'000'000;
  const double period_ns = 1e9 / rate;
  const std::int64_t start_ns = NowNs();
  std::int64_t last_ns = start_ns;
  std::int64_t drain_until = std::numeric_limits<std::int64_t>::max();
  std::uint64_t sent = 0;
  std::uint64_t in_flight = 0;
  while (sent < count || in_flight > 0) {
    const std::int64_t now_ns = NowNs();
    if (sent < count) {
      const auto due = std::min<std::uint64_t>(
          count,
          static_cast<std::uint64_t>(static_cast<double>(now_ns - start_ns) / period_ns) + 1);
      if (due > sent) {
        batch_.clear();
        AddCommands(due - sent, now_ns);
        in_flight += due - sent;
        sent = due;
        if (!WriteAll(batch_.data(), batch_.size(), result.error)) break;
        if (sent == count) drain_until = NowNs() + kDrainNs;
      }
    } else if (now_ns > drain_until) {
      result.error = absl::StrCat(in_flight, " answers still missing 10 s after the last send");
      break;
    }
    const std::int64_t wake_ns =
        sent < count ? start_ns + static_cast<std::int64_t>(static_cast<double>(sent) * period_ns)
                     : drain_until;
    const std::int64_t wait_ns = std::max<std::int64_t>(0, wake_ns - NowNs());
    pollfd p{.fd = fd_, .events = POLLIN, .revents = 0};
    const timespec timeout{.tv_sec = static_cast<time_t>(wait_ns / 1'000'000'000),
                           .tv_nsec = static_cast<long>(wait_ns % 1'000'000'000)};
    const int ready = ppoll(&p, 1, &timeout, nullptr);
    if (ready < 0 && errno != EINTR) {
      result.error = absl::StrCat("poll: ", std::strerror(errno));
      break;
    }
    if (ready > 0) {
      std::int64_t read_ns = now_ns;
      if (!ReadAnswers(result, record, std::numeric_limits<std::int64_t>::max(), in_flight,
                       read_ns)) {
        break;
      }
      last_ns = read_ns;
    }
  }
  result.busy += std::chrono::nanoseconds(last_ns - start_ns);
  prctl(PR_SET_TIMERSLACK, slack > 0 ? slack : 50'000, 0, 0, 0);
}

double PercentileMicros(std::vector<std::uint32_t>& values, double p) {
  if (values.empty()) return 0;
  std::size_t rank = static_cast<std::size_t>(std::ceil(p / 100.0 * values.size()));
  rank = std::clamp<std::size_t>(rank, 1, values.size()) - 1;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(rank),
                   values.end());
  return values[rank] / 1000.0;
}

}  // namespace cqrs::bench
