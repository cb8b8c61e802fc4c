#include "cqrs/core/subject_sequencer.h"

#include <algorithm>
#include <deque>
#include <optional>
#include <utility>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace cqrs {

struct SubjectSequencer::Waiter {
  bool granted = false;
  // Optional, to be emplaced: Asio 1.26's any_completion_handler move assignment recurses.
  std::optional<asio::any_completion_handler<void()>> handler;
  asio::any_io_executor executor;
};

struct SubjectSequencer::Queue {
  // Commands waiting behind the running one, in arrival order.
  std::deque<std::shared_ptr<Waiter>> waiting;
};

SubjectSequencer::SubjectSequencer() = default;
SubjectSequencer::~SubjectSequencer() = default;

SubjectSequencer::Turn::Turn(Turn&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)),
      subject_(std::move(other.subject_)),
      waiter_(std::move(other.waiter_)) {}

SubjectSequencer::Turn& SubjectSequencer::Turn::operator=(Turn&& other) noexcept {
  if (this != &other) {
    Release();
    owner_ = std::exchange(other.owner_, nullptr);
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
  turn.subject_ = std::string(subject);
  absl::MutexLock lock(&mutex_);
  auto [it, inserted] = queues_.try_emplace(turn.subject_);
  if (inserted) {
    it->second = std::make_unique<Queue>();
  } else {
    turn.waiter_ = std::make_shared<Waiter>();
    it->second->waiting.push_back(turn.waiter_);
  }
  return turn;
}

Awaitable<void> SubjectSequencer::Wait(Turn& turn) {
  if (turn.waiter_ == nullptr) co_return;
  auto executor = co_await asio::this_coro::executor;
  // The initiation captures only references: GCC 12 may destroy temporaries of a co_await
  // expression twice.
  Waiter* const waiter = turn.waiter_.get();
  co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
      [this, waiter, &executor](auto handler) {
        {
          absl::MutexLock lock(&mutex_);
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
    absl::MutexLock lock(&mutex_);
    const auto it = queues_.find(turn.subject_);
    if (it == queues_.end()) return;
    auto& waiting = it->second->waiting;
    if (turn.waiter_ != nullptr && !turn.waiter_->granted) {
      // The turn never came: just leave the line.
      waiting.erase(std::find(waiting.begin(), waiting.end(), turn.waiter_));
      return;
    }
    if (waiting.empty()) {
      queues_.erase(it);
      return;
    }
    next = std::move(waiting.front());
    waiting.pop_front();
    next->granted = true;
    if (!next->handler) return;  // It will see `granted` when it waits.
  }
  asio::post(next->executor,
             [handler = std::move(*next->handler)]() mutable { std::move(handler)(); });
}

std::size_t SubjectSequencer::active_subjects() const {
  absl::MutexLock lock(&mutex_);
  return queues_.size();
}

}  // namespace cqrs
