// File: cqrs/core/event_log.h
//
// The event log: every appended event gets the next offset (gap-free, from 1) under an epoch
// that identifies this history (an in-memory log gets a new one each time it starts), and is
// serialized once into immutable shared bytes that readers and subscribers share.
//
//   InMemoryEventLog log({.max_events = 100'000});
//   router.set_event_sink(&log);                       // commands append through it
//   log.AddListener([](std::span<const EventLog::Record> appended) { ... });  // live
//   auto replay = log.Read(/*after=*/41, /*max=*/1000);                        // resume
//
// Durable and distributed backends implement the same interface.

#ifndef CQRS_CORE_EVENT_LOG_H_
#define CQRS_CORE_EVENT_LOG_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cqrs/core/adaptive_mutex.h"
#include "cqrs/core/event_sink.h"

namespace cqrs {

// One event as stored: its position, its channel and its serialized cqrs.v1.EventEnvelope
// (offset and epoch included). Immutable once appended; the gateway's wire forms of it are made
// from these bytes (proto: a short prefix before `envelope`; JSON: rendered once, on first use).
class EventRecord {
 public:
  // `envelope`: a serialized cqrs.v1.EventEnvelope whose offset field is `offset`.
  EventRecord(std::uint64_t offset, std::string channel, std::string envelope);
  // For the log only (the key's constructor is private): `envelope` lacks offset and epoch and
  // has room for them; the log adds both (Seal) before anyone else sees the record.
  class Unsealed {
    friend class InMemoryEventLog;
    Unsealed() = default;
  };
  EventRecord(Unsealed, std::string channel, std::string envelope);
  EventRecord(const EventRecord&) = delete;
  EventRecord& operator=(const EventRecord&) = delete;

  std::uint64_t offset() const noexcept { return offset_; }
  const std::string& channel() const noexcept { return channel_; }
  // The serialized cqrs.v1.EventEnvelope.
  const std::string& envelope() const noexcept { return envelope_; }

  // The bytes that turn `envelope()` into a serialized cqrs.v1.ServerMessage{event}: send
  // proto_prefix() then envelope(). No copy of the envelope is made.
  absl::string_view proto_prefix() const noexcept {
    return absl::string_view(proto_prefix_.data(), proto_prefix_size_);
  }
  // cqrs.v1.ServerMessage{event} in protobuf's canonical JSON mapping, payload included when its
  // type is linked into the program (otherwise the payload is rendered as {"@type": url,
  // "value": base64}). Rendered on the first call, from any thread; the same bytes afterwards.
  const std::string& server_message_json() const;

 private:
  friend class InMemoryEventLog;
  void Seal(std::uint64_t offset, std::uint64_t epoch);
  void SetPrefix();

  std::uint64_t offset_ = 0;  // Set once, before the record is shared.
  const std::string channel_;
  std::string envelope_;  // Completed by Seal, before the record is shared.
  std::array<char, 8> proto_prefix_{};
  std::uint8_t proto_prefix_size_ = 0;
  mutable absl::once_flag json_once_;
  mutable std::string json_;
};

class EventLog : public EventSink {
 public:
  using Record = std::shared_ptr<const EventRecord>;
  // Called after every append with the records it added. Calls come one append at a time, in
  // offset order, on the appending thread, outside the log's lock (Read works meanwhile); a
  // listener must not block and must not append.
  using Listener = std::function<void(std::span<const Record> appended)>;

  // Up to `max` records with offsets after `after` (0: from the beginning), oldest first.
  // kOutOfRange when events after `after` are no longer retained (the message names the
  // earliest offset and the epoch); kInvalidArgument when `after` is beyond the head.
  virtual absl::StatusOr<std::vector<Record>> Read(std::uint64_t after, std::size_t max) const = 0;
  // Newest offset (0 when nothing was appended yet).
  virtual std::uint64_t head() const = 0;
  // Oldest retained offset; head() + 1 when nothing is retained.
  virtual std::uint64_t earliest() const = 0;
  virtual std::uint64_t epoch() const = 0;
  // Listeners are called for every later append. Add them before appends start.
  virtual void AddListener(Listener listener) = 0;
};

struct InMemoryEventLogOptions {
  // Retention: the oldest events go once either bound is exceeded.
  std::size_t max_events = 1'000'000;
  std::size_t max_bytes = std::size_t{256} << 20;
  // 0: a random non-zero epoch, new for every instance (history does not survive a restart).
  std::uint64_t epoch = 0;
};

// The embedded default: a bounded window of the history in memory. Thread-safe.
class InMemoryEventLog final : public EventLog {
 public:
  explicit InMemoryEventLog(InMemoryEventLogOptions options = {});

  absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const> events) override;
  absl::StatusOr<std::vector<Record>> Read(std::uint64_t after, std::size_t max) const override;
  std::uint64_t head() const override;
  std::uint64_t earliest() const override;
  std::uint64_t epoch() const override { return epoch_; }
  void AddListener(Listener listener) override;

  std::size_t retained_events() const;
  std::size_t retained_bytes() const;

 private:
  // Read-only once appends start.
  const InMemoryEventLogOptions options_;
  const std::uint64_t epoch_;
  std::vector<Listener> listeners_;
  // What every append writes, kept off the lines above (they would move to the core of
  // whichever thread appends next, and every reader of the options with them): the lock with
  // the counters in one cache line, the window, the notification lock.
  struct Retained {
    Record record;
    std::size_t cost;  // Against max_bytes; kept here so that eviction need not read the record.
  };
  alignas(64) mutable AdaptiveMutex mutex_;
  std::uint64_t head_ ABSL_GUARDED_BY(mutex_) = 0;
  std::size_t bytes_ ABSL_GUARDED_BY(mutex_) = 0;
  alignas(64) std::deque<Retained> records_ ABSL_GUARDED_BY(mutex_);
  alignas(64) AdaptiveMutex notify_mutex_;  // Orders listener calls; taken while holding mutex_.
};

}  // namespace cqrs

#endif  // CQRS_CORE_EVENT_LOG_H_
