// File: testing/recording_sink.h
//
// An EventSink for tests: assigns contiguous offsets (from 1) under one epoch and keeps a
// decoded copy of every appended event (offset and epoch set).
//
//   testing::RecordingSink sink;
//   router.set_event_sink(&sink);
//   ... EXPECT_EQ(sink.events()[0].type(), "users.v1.UserCreated");

#ifndef CQRS_TESTS_TESTING_RECORDING_SINK_H_
#define CQRS_TESTS_TESTING_RECORDING_SINK_H_

#include <mutex>
#include <vector>

#include "cqrs/core/event_sink.h"

namespace cqrs::testing {

class RecordingSink : public EventSink {
 public:
  explicit RecordingSink(std::uint64_t epoch = 1) : epoch_(epoch) {}

  absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const> events) override {
    std::lock_guard lock(mutex_);
    AppendReceipt receipt{
        .first_offset = events_.size() + 1, .count = events.size(), .epoch = epoch_};
    for (const StagedEvent* event : events) {
      v1::EventEnvelope envelope = event->Decode();
      envelope.set_offset(events_.size() + 1);
      envelope.set_epoch(epoch_);
      events_.push_back(std::move(envelope));
    }
    return receipt;
  }

  std::vector<v1::EventEnvelope> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return events_.size();
  }

 private:
  const std::uint64_t epoch_;
  mutable std::mutex mutex_;
  std::vector<v1::EventEnvelope> events_;
};

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_RECORDING_SINK_H_
