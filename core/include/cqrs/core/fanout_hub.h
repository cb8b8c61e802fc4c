// File: cqrs/core/fanout_hub.h
//
// The fan-out hub: follows an EventLog and publishes every append as an immutable Batch on a
// singly linked chain. Each subscriber holds a pointer to the last batch it has taken and walks
// on at its own pace: no lock and no copy per subscriber per event, and the same record bytes
// (see EventRecord) go to every subscriber. A batch stays alive while a subscriber still needs
// it, so a subscriber that falls behind pins memory: its owner bounds that (the gateway closes a
// subscriber whose unsent bytes pass its queue limit).
//
//   cqrs::InMemoryEventLog log;
//   cqrs::FanoutHub hub(log);                        // before appends start
//   auto cursor = hub.Tail();                        // live from here
//   hub.AddWaker([&] { post(loop, drain_subscribers); });
//   ... for (auto b = cursor->next(); b; cursor = b, b = b->next()) send(b->records()) ...

#ifndef CQRS_CORE_FANOUT_HUB_H_
#define CQRS_CORE_FANOUT_HUB_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/inlined_vector.h"
#include "cqrs/core/adaptive_mutex.h"
#include "cqrs/core/event_log.h"

namespace cqrs {

class FanoutHub {
 public:
  // One append of the log (a command's events: contiguous offsets), or the start sentinel.
  class Batch {
   public:
    Batch(std::uint64_t last_offset, std::uint64_t end_bytes,
          std::span<const EventLog::Record> records);
    ~Batch();  // Releases the chain behind it iteratively (no recursion however long it is).
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    std::span<const EventLog::Record> records() const noexcept { return records_; }
    // Offset of the last record; for the sentinel, the log's head when the hub started.
    std::uint64_t last_offset() const noexcept { return last_offset_; }
    // Serialized bytes of every event published since the hub started, this batch included
    // (a position in bytes, for flow control).
    std::uint64_t end_bytes() const noexcept { return end_bytes_; }
    // The batch published after this one; null until there is one. Any thread.
    std::shared_ptr<const Batch> next() const noexcept;
    // The same without touching the reference count, for walking: valid while this batch is.
    const Batch* next_raw() const noexcept {
      return published_.load(std::memory_order_acquire) ? next_.get() : nullptr;
    }

   private:
    friend class FanoutHub;
    const std::uint64_t last_offset_;
    const std::uint64_t end_bytes_;
    const absl::InlinedVector<EventLog::Record, 1> records_;
    // Written once by the publisher before `published_` is set (release); read after it (acquire).
    mutable std::shared_ptr<const Batch> next_;
    mutable std::atomic<bool> published_{false};
  };
  using BatchPtr = std::shared_ptr<const Batch>;
  // Called after every publish, on the appending thread, in offset order, while the hub's lock is
  // held. Must be quick and must not block or append: post a wake-up somewhere (post, never
  // dispatch) and return; it must not call Tail(), AddWaker() or RemoveWaker().
  using Waker = std::function<void()>;

  // Registers a listener on `log`; create the hub before appends start. The hub must outlive
  // every later append to `log`.
  explicit FanoutHub(EventLog& log);
  FanoutHub(const FanoutHub&) = delete;
  FanoutHub& operator=(const FanoutHub&) = delete;

  EventLog& log() const noexcept { return log_; }
  // The newest batch: walking on from it yields every event with offset > Tail()->last_offset().
  BatchPtr Tail() const;

  // Adds a waker; returns its id for RemoveWaker.
  std::uint64_t AddWaker(Waker waker);
  // After it returns, the waker is not running and is never called again.
  void RemoveWaker(std::uint64_t id);

  // Batches published since the hub started.
  std::uint64_t published() const noexcept { return published_.load(std::memory_order_relaxed); }

  // Flow control. A consumer (e.g. one gateway event loop) reports, as an end_bytes() position,
  // how far it has taken the events of its subscribers that keep up; lag_bytes() is how far
  // the slowest consumer is behind the newest batch, so the command path can pause while
  // fan-out catches up. At most kMaxConsumers; AddConsumer returns -1 beyond that.
  static constexpr int kMaxConsumers = 64;
  int AddConsumer();
  void RemoveConsumer(int consumer);
  // `position`: an end_bytes() value, or kCaughtUp when nothing is pending for it.
  void SetConsumerPosition(int consumer, std::uint64_t position) noexcept {
    positions_[consumer].store(position, std::memory_order_relaxed);
  }
  static constexpr std::uint64_t kCaughtUp = ~std::uint64_t{0};
  std::uint64_t lag_bytes() const noexcept;

 private:
  void Publish(std::span<const EventLog::Record> appended);

  EventLog& log_;
  // What every publish writes sits in two cache lines (they move to the core of whichever thread
  // appends next): the lock with the tail, then the counters and the wakers it reads. One lock
  // guards the tail and the wakers: wakers run under it (they only post a wake-up).
  alignas(64) mutable AdaptiveMutex tail_mutex_;
  BatchPtr tail_ ABSL_GUARDED_BY(tail_mutex_);
  // Written by Publish only (calls come one at a time), read by anyone.
  alignas(64) std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> tail_bytes_{0};
  std::vector<std::pair<std::uint64_t, Waker>> wakers_ ABSL_GUARDED_BY(tail_mutex_);
  std::uint64_t next_waker_id_ ABSL_GUARDED_BY(tail_mutex_) = 1;
  alignas(64) std::mutex consumers_mutex_;
  std::atomic<std::uint64_t> consumer_mask_{0};
  std::array<std::atomic<std::uint64_t>, kMaxConsumers> positions_{};
};

}  // namespace cqrs

#endif  // CQRS_CORE_FANOUT_HUB_H_
