#include "cqrs/core/event_log.h"

#include <random>

#include "absl/strings/str_cat.h"

namespace cqrs {
namespace {

std::uint64_t RandomEpoch() {
  std::random_device device;
  std::uint64_t epoch = 0;
  while (epoch == 0) epoch = (static_cast<std::uint64_t>(device()) << 32) | device();
  return epoch;
}

// Bytes an event costs the retention budget: its serialized envelope and channel, plus
// bookkeeping.
std::size_t CostOf(const EventRecord& record) {
  return record.envelope.size() + record.channel.size() + 96;
}

}  // namespace

InMemoryEventLog::InMemoryEventLog(InMemoryEventLogOptions options)
    : options_(options), epoch_(options.epoch != 0 ? options.epoch : RandomEpoch()) {}

absl::StatusOr<AppendReceipt> InMemoryEventLog::Append(std::span<v1::EventEnvelope* const> events) {
  if (events.empty()) return AppendReceipt{.first_offset = 0, .count = 0, .epoch = epoch_};
  std::vector<std::shared_ptr<EventRecord>> built;
  built.reserve(events.size());
  for (v1::EventEnvelope* event : events) {
    auto record = std::make_shared<EventRecord>();
    record->channel = event->channel();
    built.push_back(std::move(record));
  }
  std::vector<Record> appended;
  appended.reserve(events.size());
  AppendReceipt receipt{.first_offset = 0, .count = events.size(), .epoch = epoch_};
  mutex_.Lock();
  receipt.first_offset = head_ + 1;
  for (std::size_t i = 0; i < events.size(); ++i) {
    // Offsets are assigned under the lock, so the serialization (which includes them) is too;
    // it is the only copy ever made of the event.
    events[i]->set_offset(head_ + 1);
    events[i]->set_epoch(epoch_);
    built[i]->offset = head_ + 1;
    events[i]->SerializeToString(&built[i]->envelope);
    ++head_;
    bytes_ += CostOf(*built[i]);
    records_.push_back(built[i]);
    appended.push_back(std::move(built[i]));
  }
  while (!records_.empty() &&
         (records_.size() > options_.max_events || bytes_ > options_.max_bytes)) {
    bytes_ -= CostOf(*records_.front());
    records_.pop_front();
  }
  // Listeners see appends in offset order: the notification lock is taken before the log's
  // lock is released, and readers are not held up while listeners run.
  notify_mutex_.Lock();
  mutex_.Unlock();
  for (const Listener& listener : listeners_) listener(appended);
  notify_mutex_.Unlock();
  return receipt;
}

absl::StatusOr<std::vector<EventLog::Record>> InMemoryEventLog::Read(std::uint64_t after,
                                                                     std::size_t max) const {
  absl::MutexLock lock(&mutex_);
  if (after > head_) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", after, " is beyond the head ", head_, " of epoch ", epoch_));
  }
  const std::uint64_t earliest = records_.empty() ? head_ + 1 : records_.front()->offset;
  if (after + 1 < earliest) {
    return absl::OutOfRangeError(absl::StrCat("events after offset ", after,
                                              " are no longer retained: the earliest is ", earliest,
                                              " in epoch ", epoch_));
  }
  std::vector<Record> out;
  if (records_.empty()) return out;
  // Offsets are contiguous: the record after `after` sits at a computable index.
  std::size_t index = static_cast<std::size_t>(after + 1 - earliest);
  for (; index < records_.size() && out.size() < max; ++index) out.push_back(records_[index]);
  return out;
}

std::uint64_t InMemoryEventLog::head() const {
  absl::MutexLock lock(&mutex_);
  return head_;
}

std::uint64_t InMemoryEventLog::earliest() const {
  absl::MutexLock lock(&mutex_);
  return records_.empty() ? head_ + 1 : records_.front()->offset;
}

void InMemoryEventLog::AddListener(Listener listener) { listeners_.push_back(std::move(listener)); }

std::size_t InMemoryEventLog::retained_events() const {
  absl::MutexLock lock(&mutex_);
  return records_.size();
}

std::size_t InMemoryEventLog::retained_bytes() const {
  absl::MutexLock lock(&mutex_);
  return bytes_;
}

}  // namespace cqrs
