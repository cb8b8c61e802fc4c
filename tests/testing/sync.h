// File: testing/sync.h
//
// Thread-safe events that both coroutines (on any single-threaded executor) and plain threads can
// wait for, so that a test orders its steps on what happened, never on sleeps.
//
//   testing::Gate gate;                          // shared by a handler and the test
//   // in a handler, on a server thread:
//   co_await gate.Wait();                        // counts an arrival, then blocks until Open()
//   // in the test:
//   ASSERT_TRUE(gate.arrivals().WaitFor(4, std::chrono::seconds(5)));   // blocking thread
//   co_await gate.arrivals().Reached(4);                                // or in a coroutine
//   gate.Open();                                 // releases every waiter, now and later
//
// A coroutine waiting in Reached()/Wait() is woken by a handler posted to its own executor, which
// must not run handlers concurrently (an io_context run by one thread, or a strand).

#ifndef CQRS_TESTS_TESTING_SYNC_H_
#define CQRS_TESTS_TESTING_SYNC_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/steady_timer.hpp>

#include "cqrs/core/asio.h"

namespace cqrs::testing {

// A counter that only grows.
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Increment(std::uint64_t n = 1);
  std::uint64_t value() const;

  // Completes once value() >= target (at once when it already is). Supports terminal
  // cancellation, which ends it with boost::system::system_error(operation_aborted).
  Awaitable<void> Reached(std::uint64_t target);
  // Blocks the calling thread until value() >= target; false when `timeout` passes first.
  bool WaitFor(std::uint64_t target, std::chrono::milliseconds timeout) const;

 private:
  struct Waiter {
    std::uint64_t target;
    std::weak_ptr<asio::steady_timer> timer;
  };
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  std::uint64_t value_ = 0;
  std::vector<Waiter> waiters_;
};

// Holds coroutines until it is opened; stays open.
class Gate {
 public:
  // Counts an arrival, then completes once Open() was called. Cancellable like
  // Counter::Reached.
  Awaitable<void> Wait();
  void Open() { opened_.Increment(); }
  bool is_open() const { return opened_.value() > 0; }
  // How many coroutines have entered Wait() so far.
  Counter& arrivals() { return arrivals_; }

 private:
  Counter opened_;
  Counter arrivals_;
};

// What happened, in order, from any thread.
class Log {
 public:
  void Add(std::string entry) {
    std::lock_guard lock(mutex_);
    entries_.push_back(std::move(entry));
  }
  std::vector<std::string> entries() const {
    std::lock_guard lock(mutex_);
    return entries_;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> entries_;
};

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_SYNC_H_
