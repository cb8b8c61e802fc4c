// File: bench/bench_link.h
//
// The blocking-socket side of cqrs_bench: one TCP connection that speaks the command protocol
// (Hello, then CreateUser command frames) to a CommandServer, or sends the same bytes to the
// echo floor, with `window` commands in flight and batched writes.
//
//   CommandTemplate command = CommandTemplate::Make(std::chrono::minutes(10));
//   auto link = BlockingLink::Connect(port, Peer::kServer, command, run_id, /*stream=*/1);
//   LoadResult result;
//   (*link)->Run(/*window=*/64, kUnlimited, Clock::now() + std::chrono::seconds(1), result);
//
// Not thread-safe: one thread per link. Every read and write has a 5 s timeout.

#ifndef CQRS_TESTS_BENCH_BENCH_LINK_H_
#define CQRS_TESTS_BENCH_BENCH_LINK_H_

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cqrs/net/frame_codec.h"

namespace cqrs::bench {

using Clock = std::chrono::steady_clock;

inline constexpr std::uint64_t kUnlimited = std::numeric_limits<std::uint64_t>::max();
inline constexpr char kUserName[] = "Bob Benchmarking";  // 16 characters.
inline constexpr char kClientName[] = "cqrs_bench";
inline constexpr std::size_t kIdBytes = 36;

// Command ids (also the created user's id): "pppppppp-ssss-4mmm-8000-nnnnnnnnnnnn" with a random
// run prefix, a stream (connection or coroutine), a method, and a sequence number.
std::string CommandId(std::uint32_t run, std::uint16_t stream, std::uint16_t method,
                      std::uint64_t sequence);
// The sequence number of an id made by CommandId; false for anything else.
bool SequenceOf(std::string_view id, std::uint64_t* sequence);
// Writes `sequence` as the last 12 hex digits of the id starting at `id`.
void SetSequence(char* id, std::uint64_t sequence);

// One CreateUser command frame (length prefix included) as CommandClient::Send builds it: id,
// type, payload, service id, timestamp, deadline; the created user's id equals the command id.
struct CommandTemplate {
  // The deadline is `deadline_in` from now (so it does not expire during the run).
  static CommandTemplate Make(std::chrono::seconds deadline_in);

  std::string frame;
  // Where the command id and the user id start in `frame`.
  std::vector<std::size_t> id_offsets;
};

// What a run measured; Run adds to it.
struct LoadResult {
  std::vector<std::uint32_t> rtt_ns;  // Per answered command (when recording).
  std::uint64_t answered = 0;         // Answers received.
  std::uint64_t in_time = 0;          // Answers received by the deadline.
  std::uint64_t failed = 0;           // Answers that were not OK with one event offset.
  Clock::duration busy{};             // From the first send to the last answer, summed.
  std::string error;                  // The transport failure that ended a run, if any.

  void Merge(LoadResult&& other);
};

enum class Peer { kServer, kFloor };

class BlockingLink {
 public:
  // Connects to 127.0.0.1:`port`; with a server, also exchanges Hello/HelloAck. Ids of this link
  // are CommandId(run, stream, /*method=*/1, n).
  static absl::StatusOr<std::unique_ptr<BlockingLink>> Connect(std::uint16_t port, Peer peer,
                                                               const CommandTemplate& command,
                                                               std::uint32_t run,
                                                               std::uint16_t stream);
  ~BlockingLink();
  BlockingLink(const BlockingLink&) = delete;
  BlockingLink& operator=(const BlockingLink&) = delete;

  // Keeps up to `window` commands in flight, writing each batch of new commands in one write,
  // until `max_commands` were sent or `deadline` passed; then waits (up to 10 s) for the answers
  // still due. Stops early on a transport error (result.error) or an unexpected frame.
  void Run(std::size_t window, std::uint64_t max_commands, Clock::time_point deadline,
           LoadResult& result, bool record = true);

  // Size of the last answer frame received, length prefix included.
  std::size_t last_response_bytes() const { return last_response_bytes_; }
  std::size_t request_bytes() const { return frame_.size(); }

 private:
  struct Sent {
    std::uint64_t sequence = kUnlimited;
    std::int64_t at_ns = 0;
  };
  BlockingLink(int fd, Peer peer, std::string frame, std::vector<std::size_t> id_offsets);
  bool WriteAll(const char* data, std::size_t size, std::string& error);
  // Appends `count` new command frames to the batch, stamped `now`.
  void AddCommands(std::size_t count, std::int64_t now_ns);

  int fd_;
  Peer peer_;
  std::string frame_;  // This link's template: run and stream already in the ids.
  std::vector<std::size_t> id_offsets_;
  net::FrameDecoder decoder_;
  std::string batch_;
  std::vector<Sent> sent_;  // Ring, indexed by sequence.
  std::uint64_t next_sequence_ = 0;
  std::uint64_t next_answer_ = 0;  // The floor answers in order.
  std::size_t last_response_bytes_ = 0;
};

// Percentile `p` (0..100) of `values` (nanoseconds), in microseconds. Reorders `values`.
double PercentileMicros(std::vector<std::uint32_t>& values, double p);

}  // namespace cqrs::bench

#endif  // CQRS_TESTS_BENCH_BENCH_LINK_H_
