#include "cqrs/core/subject_sequencer.h"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/hash/hash.h"
#include "cqrs/core/adaptive_mutex.h"

namespace cqrs {

struct SubjectSequencer::Waiter {
  bool granted = false;
  // Optional, to be emplaced: Asio 1.26's any_completion_handler move assignment recurses.
  std::optional<asio::any_completion_handler<void()>> handler;
  asio::any_io_executor executor;
};

// Each shard starts its own cache line: neighbours are locked by different threads.
struct alignas(64) SubjectSequencer::Shard {
  AdaptiveMutex mutex;
  // Per subject with a command running: the commands waiting behind it, in arrival order
  // (usually none, so no allocation).
  absl::flat_hash_map<std::string, std::vector<std::shared_ptr<Waiter>>> queues;
};

SubjectSequencer::SubjectSequencer() : shards_(kShards) {}
SubjectSequencer::~SubjectSequencer() = default;

SubjectSequencer::Shard& SubjectSequencer::ShardOf(absl::string_view subject) const {
  // The top bits: the shard's table uses the low ones (its probes compare a 7-bit tag taken
  // from the bottom first).
  return shards_[absl::HashOf(subject) >> (sizeof(std::size_t) * 8 - kShardBits)];
}

SubjectSequencer::Turn::Turn(Turn&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      shard_(std::exchange(other.shard_, nullptr)),
      subject_(std::move(other.subject_)),
      waiter_(std::move(other.waiter_)) {}

SubjectSequencer::Turn& SubjectSequencer::Turn::operator=(Turn&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
    shard_ = std::exchange(other.shard_, nullptr);
    subject_ = std::move(other.subject_);
    waiter_ = std::move(other.waiter_);
  }
  return *this;
}

void SubjectSequencer::Turn::Release() {
  if (owner_ != nullptr) owner_->Leave(*this);
  owner_ = nullptr;
}

SubjectSequencer::Turn SubjectSequencer::Enter(absl::string_view subject) {
  Turn turn;
  if (subject.empty()) return turn;
  turn.owner_ = this;
  turn.shard_ = &ShardOf(subject);
  turn.subject_ = std::string(subject);
  std::lock_guard lock(turn.shard_->mutex);
  auto [it, inserted] = turn.shard_->queues.try_emplace(turn.subject_);
  if (!inserted) {
    turn.waiter_ = std::make_shared<Waiter>();
    it->second.push_back(turn.waiter_);
  }
  return turn;
}

Awaitable<void> SubjectSequencer::Wait(Turn& turn) {
  if (turn.waiter_ == nullptr) co_return;
  auto executor = co_await asio::this_coro::executor;
  // The initiation captures only references: GCC 12 may destroy temporaries of a co_await
  // expression twice.
  Waiter* const waiter = turn.waiter_.get();
  Shard* const shard = turn.shard_;
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [shard, waiter, &executor](auto handler) {
        {
          std::lock_guard lock(shard->mutex);
          if (!waiter->granted) {
            waiter->handler.emplace(std::move(handler));
            waiter->executor = executor;
            return;
          }
        }
        asio::post(executor, std::move(handler));
      },
      asio::use_awaitable);
}

void SubjectSequencer::Leave(Turn& turn) {
  std::shared_ptr<Waiter> next;
  {
    Shard& shard = *turn.shard_;
    std::lock_guard lock(shard.mutex);
    const auto it = shard.queues.find(turn.subject_);
    if (it == shard.queues.end()) return;
    auto& waiting = it->second;
    if (turn.waiter_ != nullptr && !turn.waiter_->granted) {
      // The turn never came: just leave the line.
      waiting.erase(std::find(waiting.begin(), waiting.end(), turn.waiter_));
      return;
    }
    if (waiting.empty()) {
      shard.queues.erase(it);
      return;
    }
    next = std::move(waiting.front());
    waiting.erase(waiting.begin());
    next->granted = true;
    if (!next->handler) return;  // It will see `granted` when it waits.
  }
  asio::post(next->executor,
             [handler = std::move(*next->handler)]() mutable { std::move(handler)(); });
}

std::size_t SubjectSequencer::active_subjects() const {
  std::size_t active = 0;
  for (std::size_t i = 0; i < kShards; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    active += shards_[i].queues.size();
  }
  return active;
}

}  // namespace cqrs
