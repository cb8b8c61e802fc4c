// File: cqrs/core/event_sink.h
//
// Where the events of a successful command go. The event log implements it; tests may record.
// Events arrive already serialized (CommandContext::Emit writes each envelope once); a sink
// appends offset and epoch and keeps the bytes.
//
//   class Recorder : public cqrs::EventSink {
//     absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const> events) override {
//       for (StagedEvent* event : events) kept_.push_back(event->Decode());  // or take the bytes
//       ...
//     }
//   };

#ifndef CQRS_CORE_EVENT_SINK_H_
#define CQRS_CORE_EVENT_SINK_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "cqrs/v1/event.pb.h"

namespace cqrs {

// One event on its way to a sink: a serialized cqrs.v1.EventEnvelope with every field but
// `offset` and `epoch` (the sink appends those two fields: protobuf accepts fields in any
// order), and its delivery channel.
class StagedEvent {
 public:
  // Room past the envelope's bytes that offset and epoch take at most (two one-byte tags and two
  // 10-byte varints). Emit reserves it, so that a sink appends them without reallocating.
  static constexpr std::size_t kPositionFieldsMaxBytes = 22;

  // `envelope`: a serialized cqrs.v1.EventEnvelope without offset and epoch; `channel`: the
  // envelope's channel field.
  StagedEvent(std::string envelope, std::string channel)
      : envelope_(std::move(envelope)), channel_(std::move(channel)) {}
  // Serializes `envelope`, leaving out its offset and epoch.
  static StagedEvent From(const v1::EventEnvelope& envelope);

  const std::string& envelope() const noexcept { return envelope_; }
  const std::string& channel() const noexcept { return channel_; }
  // The envelope as a message (parsed on every call: for tests and sinks that want fields).
  v1::EventEnvelope Decode() const;

  // For sinks that keep the bytes: moves them out (envelope() and channel() are empty
  // afterwards).
  std::string TakeEnvelope() noexcept { return std::exchange(envelope_, {}); }
  std::string TakeChannel() noexcept { return std::exchange(channel_, {}); }

 private:
  std::string envelope_;
  std::string channel_;
};

struct AppendReceipt {
  std::uint64_t first_offset = 0;  // Offset of the first appended event.
  std::uint64_t count = 0;         // Events appended, at contiguous offsets.
  std::uint64_t epoch = 0;
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Appends all `events` or none, in order, at contiguous offsets. Called from any thread,
  // concurrently: implementations synchronize. The events stay owned by the caller, which
  // drops them after the call: a sink may take their bytes (TakeEnvelope, TakeChannel; the
  // in-memory log does), so a sink that wraps another reads them before passing them on.
  virtual absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const> events) = 0;
};

}  // namespace cqrs

#endif  // CQRS_CORE_EVENT_SINK_H_
