#include "cqrs/core/fanout_hub.h"

#include <algorithm>

namespace cqrs {

FanoutHub::Batch::Batch(std::uint64_t last_offset, std::uint64_t end_bytes,
                        std::span<const EventLog::Record> records)
    : last_offset_(last_offset), end_bytes_(end_bytes), records_(records.begin(), records.end()) {}

FanoutHub::Batch::~Batch() {
  // Unlink successors that only this batch keeps alive one at a time, so that dropping a long
  // chain (a subscriber far behind) does not recurse once per batch.
  std::shared_ptr<const Batch> next = std::move(next_);
  while (next != nullptr && next.use_count() == 1) {
    std::shared_ptr<const Batch> after = std::move(next->next_);
    next = std::move(after);
  }
}

std::shared_ptr<const FanoutHub::Batch> FanoutHub::Batch::next() const noexcept {
  if (!published_.load(std::memory_order_acquire)) return nullptr;
  return next_;
}

FanoutHub::FanoutHub(EventLog& log)
    : log_(log),
      tail_(std::make_shared<const Batch>(log.head(), 0, std::span<const EventLog::Record>())) {
  log_.AddListener([this](std::span<const EventLog::Record> appended) { Publish(appended); });
}

FanoutHub::BatchPtr FanoutHub::Tail() const {
  std::lock_guard lock(tail_mutex_);
  return tail_;
}

void FanoutHub::Publish(std::span<const EventLog::Record> appended) {
  if (appended.empty()) return;
  std::uint64_t bytes = 0;
  for (const EventLog::Record& record : appended) bytes += record->envelope().size();
  // Publish calls come one at a time (the log orders them), so this needs no lock.
  const std::uint64_t end_bytes = tail_bytes_.load(std::memory_order_relaxed) + bytes;
  auto batch = std::make_shared<const Batch>(appended.back()->offset(), end_bytes, appended);
  std::lock_guard lock(tail_mutex_);
  // The log calls listeners one append at a time, in offset order, so tail_ is the previous
  // append's batch.
  tail_->next_ = batch;
  tail_->published_.store(true, std::memory_order_release);
  tail_ = std::move(batch);
  published_.store(published_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  tail_bytes_.store(end_bytes, std::memory_order_relaxed);
  for (auto& [id, waker] : wakers_) waker();
}

std::uint64_t FanoutHub::AddWaker(Waker waker) {
  std::lock_guard lock(tail_mutex_);
  const std::uint64_t id = next_waker_id_++;
  wakers_.emplace_back(id, std::move(waker));
  return id;
}

void FanoutHub::RemoveWaker(std::uint64_t id) {
  std::lock_guard lock(tail_mutex_);
  std::erase_if(wakers_, [id](const auto& entry) { return entry.first == id; });
}

int FanoutHub::AddConsumer() {
  std::lock_guard lock(consumers_mutex_);
  const std::uint64_t mask = consumer_mask_.load();
  for (int i = 0; i < kMaxConsumers; ++i) {
    if ((mask & (std::uint64_t{1} << i)) == 0) {
      positions_[i].store(kCaughtUp, std::memory_order_relaxed);
      consumer_mask_.store(mask | (std::uint64_t{1} << i));
      return i;
    }
  }
  return -1;
}

void FanoutHub::RemoveConsumer(int consumer) {
  if (consumer < 0) return;
  std::lock_guard lock(consumers_mutex_);
  consumer_mask_.store(consumer_mask_.load() & ~(std::uint64_t{1} << consumer));
}

std::uint64_t FanoutHub::lag_bytes() const noexcept {
  const std::uint64_t tail = tail_bytes_.load(std::memory_order_relaxed);
  std::uint64_t mask = consumer_mask_.load(std::memory_order_relaxed);
  std::uint64_t slowest = kCaughtUp;
  while (mask != 0) {
    const int i = __builtin_ctzll(mask);
    mask &= mask - 1;
    slowest = std::min(slowest, positions_[i].load(std::memory_order_relaxed));
  }
  return slowest >= tail ? 0 : tail - slowest;
}

}  // namespace cqrs
