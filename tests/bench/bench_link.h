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

#include <atomic>
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
// The stream of an id made by CommandId; false for anything else.
bool StreamOf(std::string_view id, std::uint16_t* stream);
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
  // The event offset of every answer with exactly one (links with TrackEvents only).
  std::vector<std::uint64_t> event_offsets;

  void Merge(LoadResult&& other);
};

enum class Peer { kServer, kFloor };

// When each command was sent, by stream and sequence: written by the link that sends it, read by
// other threads (W3's subscribers map an event's causation id, the command id, to its send time).
// Fixed capacity: sequences 0..per_stream-1 of streams 0..streams-1.
class SendTimes {
 public:
  SendTimes(std::size_t streams, std::size_t per_stream);

  std::size_t per_stream() const { return per_stream_; }
  void Set(std::uint16_t stream, std::uint64_t sequence, std::int64_t ns) {
    if (stream < streams_ && sequence < per_stream_) {
      times_[stream * per_stream_ + sequence].store(ns, std::memory_order_relaxed);
    }
  }
  // Steady-clock nanoseconds; 0 when unknown.
  std::int64_t Get(std::uint16_t stream, std::uint64_t sequence) const {
    if (stream >= streams_ || sequence >= per_stream_) return 0;
    return times_[stream * per_stream_ + sequence].load(std::memory_order_relaxed);
  }

 private:
  std::size_t streams_;
  std::size_t per_stream_;
  std::unique_ptr<std::atomic<std::int64_t>[]> times_;
};

// Steady-clock nanoseconds (Clock::now()), the time base of SendTimes and of the W3 subscribers.
inline std::int64_t NowNs() { return Clock::now().time_since_epoch().count(); }

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

  // Open loop: sends `count` commands, the i-th at start + i / `rate` per second (late ones
  // together, in one write), never waiting for answers before sending; reads the answers in
  // between, then waits (up to 10 s) for those still due.
  void RunPaced(double rate, std::uint64_t count, LoadResult& result, bool record = true);

  // From now on, stamps every command's send time into `times` (null: stop) and keeps the event
  // offsets of the answers in LoadResult::event_offsets. `times` must outlive the runs.
  void TrackEvents(SendTimes* times) { times_ = times; }
  // Commands sent so far (the next command's sequence).
  std::uint64_t sent() const { return next_sequence_; }
  std::uint16_t stream() const { return stream_; }

  // Size of the last answer frame received, length prefix included.
  std::size_t last_response_bytes() const { return last_response_bytes_; }
  std::size_t request_bytes() const { return frame_.size(); }

 private:
  struct Sent {
    std::uint64_t sequence = kUnlimited;
    std::int64_t at_ns = 0;
  };
  BlockingLink(int fd, Peer peer, std::uint16_t stream, std::string frame,
               std::vector<std::size_t> id_offsets);
  bool WriteAll(const char* data, std::size_t size, std::string& error);
  // One read (blocking up to the socket's timeout), then every complete answer in it: counts
  // them into `result` (in time when received by `deadline_ns`) and `in_flight`; `now_ns` is
  // the time of the read. False on a transport error or a frame that is not a response to a
  // command in flight (result.error says which).
  bool ReadAnswers(LoadResult& result, bool record, std::int64_t deadline_ns,
                   std::uint64_t& in_flight, std::int64_t& now_ns);
  // Appends `count` new command frames to the batch, stamped `now`.
  void AddCommands(std::size_t count, std::int64_t now_ns);

  int fd_;
  Peer peer_;
  std::uint16_t stream_;
  SendTimes* times_ = nullptr;
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
