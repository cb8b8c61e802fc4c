// File: cqrs/core/event_sink.h
//
// Where the events of a successful command go. The event log implements it; tests may record.
//
//   class Recorder : public cqrs::EventSink {
//     absl::StatusOr<AppendReceipt> Append(std::span<v1::EventEnvelope* const> events) override;
//   };

#ifndef CQRS_CORE_EVENT_SINK_H_
#define CQRS_CORE_EVENT_SINK_H_

#include <cstdint>
#include <span>

#include "absl/status/statusor.h"
#include "cqrs/v1/event.pb.h"

namespace cqrs {

struct AppendReceipt {
  std::uint64_t first_offset = 0;  // Offset of the first appended event.
  std::uint64_t count = 0;         // Events appended, at contiguous offsets.
  std::uint64_t epoch = 0;
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  // Appends all `events` or none, in order, at contiguous offsets, and sets each envelope's
  // `offset` and `epoch`. Called from any thread, concurrently: implementations synchronize.
  // The envelopes stay owned by the caller (they live on the command's arena).
  virtual absl::StatusOr<AppendReceipt> Append(std::span<v1::EventEnvelope* const> events) = 0;
};

}  // namespace cqrs

#endif  // CQRS_CORE_EVENT_SINK_H_
