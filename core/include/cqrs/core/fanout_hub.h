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
#include "cqrs/core/event_log.h"

namespace cqrs {

class FanoutHub {
 public:
  // One append of the log (a command's events: contiguous offsets), or the start sentinel.
  class Batch {
   public:
    Batch(std::uint64_t last_offset, std::span<const EventLog::Record> records);
    ~Batch();  // Releases the chain behind it iteratively (no recursion however long it is).
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;

    std::span<const EventLog::Record> records() const noexcept { return records_; }
    // Offset of the last record; for the sentinel, the log's head when the hub started.
    std::uint64_t last_offset() const noexcept { return last_offset_; }
    // The batch published after this one; null until there is one. Any thread.
    std::shared_ptr<const Batch> next() const noexcept;

   private:
    friend class FanoutHub;
    const std::uint64_t last_offset_;
    const absl::InlinedVector<EventLog::Record, 1> records_;
    // Written once by the publisher before `published_` is set (release); read after it (acquire).
    mutable std::shared_ptr<const Batch> next_;
    mutable std::atomic<bool> published_{false};
  };
  using BatchPtr = std::shared_ptr<const Batch>;
  // Called after every publish, on the appending thread, in offset order. Must be quick and must
  // not block or append: post a wake-up somewhere and return.
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

 private:
  void Publish(std::span<const EventLog::Record> appended);

  EventLog& log_;
  mutable std::mutex tail_mutex_;
  BatchPtr tail_ ABSL_GUARDED_BY(tail_mutex_);
  std::mutex wakers_mutex_;
  std::vector<std::pair<std::uint64_t, Waker>> wakers_ ABSL_GUARDED_BY(wakers_mutex_);
  std::uint64_t next_waker_id_ ABSL_GUARDED_BY(wakers_mutex_) = 1;
  std::atomic<std::uint64_t> published_{0};
};

}  // namespace cqrs

#endif  // CQRS_CORE_FANOUT_HUB_H_
