#include "testing/sync.h"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

namespace cqrs::testing {

using Clock = std::chrono::steady_clock;

void Counter::Increment(std::uint64_t n) {
  std::vector<std::shared_ptr<asio::steady_timer>> wake;
  {
    std::lock_guard lock(mutex_);
    value_ += n;
    std::erase_if(waiters_, [&](const Waiter& waiter) {
      if (waiter.target > value_) return false;
      if (auto timer = waiter.timer.lock()) wake.push_back(std::move(timer));
      return true;
    });
    changed_.notify_all();
  }
  for (auto& timer : wake) {
    // Expiring (rather than cancelling) also wakes a waiter that has not started its wait yet.
    asio::post(timer->get_executor(), [timer] { timer->expires_at(Clock::time_point::min()); });
  }
}

std::uint64_t Counter::value() const {
  std::lock_guard lock(mutex_);
  return value_;
}

Awaitable<void> Counter::Reached(std::uint64_t target) {
  auto executor = co_await asio::this_coro::executor;
  auto timer = std::make_shared<asio::steady_timer>(executor, Clock::time_point::max());
  {
    std::lock_guard lock(mutex_);
    if (value_ >= target) co_return;
    waiters_.push_back({target, timer});
  }
  (void)co_await timer->async_wait(asio::as_tuple(asio::use_awaitable));
  if (value() < target) {
    throw boost::system::system_error(asio::error::operation_aborted, "Counter::Reached");
  }
}

bool Counter::WaitFor(std::uint64_t target, std::chrono::milliseconds timeout) const {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout, [&] { return value_ >= target; });
}

Awaitable<void> Gate::Wait() {
  arrivals_.Increment();
  co_await opened_.Reached(1);
}

}  // namespace cqrs::testing
