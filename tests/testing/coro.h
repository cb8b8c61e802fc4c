// File: testing/coro.h
//
// Runs a coroutine to completion on an io_context under a deadline, failing the test (instead
// of hanging) when the deadline passes. No sleeps: the io_context runs until the coroutine is
// done.
//
//   asio::io_context io;
//   auto value = cqrs::testing::Run(io, SomeCoroutine());         // default deadline: 10 s
//   cqrs::testing::Run(io, Other(), std::chrono::seconds(30));

#ifndef CQRS_TESTS_TESTING_CORO_H_
#define CQRS_TESTS_TESTING_CORO_H_

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <vector>

#include "cqrs/core/asio.h"

namespace cqrs::testing {

inline constexpr std::chrono::seconds kDefaultDeadline{10};

// Runs `io` until `*done` or the deadline; throws std::runtime_error (failing the test) when
// the deadline passes first, and rethrows `error`.
inline void RunUntilDone(asio::io_context& io, const bool* done, const std::exception_ptr* error,
                         std::chrono::steady_clock::duration deadline) {
  io.restart();
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!*done && std::chrono::steady_clock::now() < until) {
    if (io.run_one_until(until) == 0 && io.stopped()) break;
  }
  if (!*done) throw std::runtime_error("coroutine did not finish before its deadline");
  if (*error) std::rethrow_exception(*error);
}

// Returns the coroutine's value; throws std::runtime_error (failing the test) when the deadline
// passes first, and rethrows what the coroutine threw.
template <typename T>
T Run(asio::io_context& io, Awaitable<T> coroutine,
      std::chrono::steady_clock::duration deadline = kDefaultDeadline) {
  std::optional<T> value;
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(io, std::move(coroutine), [&](std::exception_ptr e, T v) {
    error = e;
    if (!e) value.emplace(std::move(v));
    done = true;
  });
  RunUntilDone(io, &done, &error, deadline);
  return std::move(*value);
}

inline void Run(asio::io_context& io, Awaitable<void> coroutine,
                std::chrono::steady_clock::duration deadline = kDefaultDeadline) {
  std::exception_ptr error;
  bool done = false;
  asio::co_spawn(io, std::move(coroutine), [&](std::exception_ptr e) {
    error = e;
    done = true;
  });
  RunUntilDone(io, &done, &error, deadline);
}

// Lets every coroutine still on `io` finish (after the objects they serve were closed), so that
// none is destroyed half-way with the io_context. Fails when work remains after `deadline`.
inline void Drain(asio::io_context& io,
                  std::chrono::steady_clock::duration deadline = kDefaultDeadline) {
  io.restart();
  io.run_for(deadline);
  if (!io.stopped()) throw std::runtime_error("io_context still busy after its drain deadline");
}

// A coroutine bound to an executor, not started yet (for WhenAll).
using SpawnedOp = decltype(asio::co_spawn(std::declval<asio::any_io_executor>(),
                                          std::declval<Awaitable<void>>(), asio::deferred));

inline SpawnedOp Spawn(asio::any_io_executor executor, Awaitable<void> coroutine) {
  return asio::co_spawn(std::move(executor), std::move(coroutine), asio::deferred);
}

// Starts `ops` in order, completes when all have, and rethrows the first failure.
inline Awaitable<void> WhenAll(std::vector<SpawnedOp> ops) {
  auto [order, errors] = co_await asio::experimental::make_parallel_group(std::move(ops))
                             .async_wait(asio::experimental::wait_for_all(), asio::use_awaitable);
  for (const std::exception_ptr& error : errors) {
    if (error) std::rethrow_exception(error);
  }
}

// Lets everything else that is ready run first.
inline Awaitable<void> Yield() {
  auto executor = co_await asio::this_coro::executor;
  co_await asio::post(executor, asio::use_awaitable);
}

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_CORO_H_
