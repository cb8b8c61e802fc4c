#include "cqrs/core/idempotency_cache.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "testing/coro.h"

namespace cqrs {
namespace {

using ::cqrs::testing::SpawnedOp;
using ::cqrs::testing::WhenAll;

using Claim = IdempotencyCache::Claim;
using Response = IdempotencyCache::Response;
using PoolStrand = asio::strand<asio::thread_pool::executor_type>;

Response Bytes(std::string bytes) { return std::make_shared<const std::string>(std::move(bytes)); }

// A coroutine started on an io_context whose completion the test observes.
struct Tracked {
  bool done = false;
  std::exception_ptr error;
};

void Start(asio::io_context& io, Awaitable<void> coroutine, Tracked& tracked) {
  asio::co_spawn(io, std::move(coroutine), [&tracked](std::exception_ptr error) {
    tracked.error = error;
    tracked.done = true;
  });
}

// Runs `io` until every tracked coroutine is done, or fails after `deadline` (never sleeps).
void RunUntilDone(asio::io_context& io, const std::vector<Tracked*>& tracked,
                  std::chrono::steady_clock::duration deadline = std::chrono::seconds(10)) {
  auto all_done = [&] {
    for (const Tracked* t : tracked) {
      if (!t->done) return false;
    }
    return true;
  };
  io.restart();
  const auto until = std::chrono::steady_clock::now() + deadline;
  while (!all_done() && std::chrono::steady_clock::now() < until) {
    if (io.run_one_until(until) == 0 && io.stopped()) break;
  }
  ASSERT_TRUE(all_done()) << "waiters did not finish before the deadline";
  for (const Tracked* t : tracked) {
    if (t->error) std::rethrow_exception(t->error);
  }
}

Awaitable<void> WaitInto(IdempotencyCache& cache, Claim claim, Response& out) {
  out = co_await cache.WaitFor(std::move(claim));
}

TEST(IdempotencyCacheTest, NewThenDoneSharesTheResponse) {
  IdempotencyCache cache;
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);

  Claim first = cache.Begin("cmd-1");
  ASSERT_EQ(first.state(), IdempotencyCache::kNew);
  const Response response = Bytes("response-1");
  cache.Finish(first, response, /*remember=*/true);
  EXPECT_EQ(cache.size(), 1u);
  EXPECT_GE(cache.bytes(), response->size() + std::string("cmd-1").size());

  for (int i = 0; i < 3; ++i) {
    const Claim again = cache.Begin("cmd-1");
    ASSERT_EQ(again.state(), IdempotencyCache::kDone);
    EXPECT_EQ(again.response().get(), response.get());  // The very same bytes, shared.
    EXPECT_EQ(*again.response(), "response-1");
  }
  EXPECT_EQ(cache.size(), 1u);

  // Other ids are independent.
  Claim other = cache.Begin("cmd-2");
  EXPECT_EQ(other.state(), IdempotencyCache::kNew);
  EXPECT_EQ(other.response(), nullptr);
  EXPECT_EQ(cache.size(), 2u);
}

TEST(IdempotencyCacheTest, DuplicateWhileRunningWaitsForTheFirstResponse) {
  asio::io_context io;
  IdempotencyCache cache;
  Claim first = cache.Begin("cmd-1");
  ASSERT_EQ(first.state(), IdempotencyCache::kNew);
  Claim second = cache.Begin("cmd-1");
  Claim third = cache.Begin("cmd-1");
  ASSERT_EQ(second.state(), IdempotencyCache::kRunning);
  ASSERT_EQ(third.state(), IdempotencyCache::kRunning);

  Response got_second;
  Response got_third;
  Tracked second_waiter;
  Tracked third_waiter;
  Start(io, WaitInto(cache, second, got_second), second_waiter);
  Start(io, WaitInto(cache, third, got_third), third_waiter);
  io.poll();  // Both are now waiting; nothing can complete them yet.
  EXPECT_FALSE(second_waiter.done);
  EXPECT_FALSE(third_waiter.done);

  const Response response = Bytes("response-1");
  cache.Finish(first, response, /*remember=*/true);
  RunUntilDone(io, {&second_waiter, &third_waiter});
  EXPECT_EQ(got_second.get(), response.get());
  EXPECT_EQ(got_third.get(), response.get());

  // A claim taken while running but awaited after Finish also gets the response.
  Claim late = cache.Begin("cmd-2");
  Claim late_duplicate = cache.Begin("cmd-2");
  ASSERT_EQ(late_duplicate.state(), IdempotencyCache::kRunning);
  const Response late_response = Bytes("response-2");
  cache.Finish(late, late_response, /*remember=*/true);
  Response got_late;
  cqrs::testing::Run(io, WaitInto(cache, late_duplicate, got_late));
  EXPECT_EQ(got_late.get(), late_response.get());
}

Awaitable<void> WaitOnStrand(IdempotencyCache& cache, Claim claim, PoolStrand strand, Response& out,
                             bool& on_strand) {
  out = co_await cache.WaitFor(std::move(claim));
  on_strand = strand.running_in_this_thread();
}

Awaitable<void> FinishWith(IdempotencyCache& cache, Claim& claim, Response response) {
  cache.Finish(claim, std::move(response), /*remember=*/true);
  co_return;
}

TEST(IdempotencyCacheTest, WaiterOnAnotherThreadResumesOnItsExecutor) {
  asio::io_context io;
  IdempotencyCache cache;
  asio::thread_pool pool(2);
  const PoolStrand strand = asio::make_strand(pool);
  Claim first = cache.Begin("cmd-1");
  Claim second = cache.Begin("cmd-1");
  ASSERT_EQ(second.state(), IdempotencyCache::kRunning);

  Response got;
  bool on_strand = false;
  const Response response = Bytes("response-1");
  // The waiter on a pool thread, the first run finishing on the test's thread, in either order.
  std::vector<SpawnedOp> ops;
  ops.push_back(asio::co_spawn(asio::any_io_executor(strand),
                               WaitOnStrand(cache, second, strand, got, on_strand),
                               asio::deferred));
  ops.push_back(
      asio::co_spawn(io.get_executor(), FinishWith(cache, first, response), asio::deferred));
  cqrs::testing::Run(io, WhenAll(std::move(ops)));
  EXPECT_EQ(got.get(), response.get());
  EXPECT_TRUE(on_strand);
}

TEST(IdempotencyCacheTest, ForgottenOutcomeWakesWaitersAndLetsARetryRun) {
  asio::io_context io;
  IdempotencyCache cache;
  Claim first = cache.Begin("cmd-1");
  Claim waiting = cache.Begin("cmd-1");
  Claim late = cache.Begin("cmd-1");
  ASSERT_EQ(waiting.state(), IdempotencyCache::kRunning);

  Response got;
  Tracked waiter;
  Start(io, WaitInto(cache, waiting, got), waiter);
  io.poll();
  EXPECT_FALSE(waiter.done);

  const Response unavailable = Bytes("unavailable");
  cache.Finish(first, unavailable, /*remember=*/false);
  EXPECT_EQ(cache.size(), 0u);
  EXPECT_EQ(cache.bytes(), 0u);
  RunUntilDone(io, {&waiter});
  EXPECT_EQ(got.get(), unavailable.get());

  // A duplicate that was already in line when the first finished still gets its answer.
  Response got_late;
  cqrs::testing::Run(io, WaitInto(cache, late, got_late));
  EXPECT_EQ(got_late.get(), unavailable.get());

  // A retry runs again.
  Claim retry = cache.Begin("cmd-1");
  EXPECT_EQ(retry.state(), IdempotencyCache::kNew);
  const Response ok = Bytes("ok");
  cache.Finish(retry, ok, /*remember=*/true);
  const Claim after = cache.Begin("cmd-1");
  ASSERT_EQ(after.state(), IdempotencyCache::kDone);
  EXPECT_EQ(after.response().get(), ok.get());
}

TEST(IdempotencyCacheTest, ZeroWindowForgetsAtOnce) {
  IdempotencyCache cache({.window = absl::ZeroDuration()});
  Claim first = cache.Begin("cmd-1");
  cache.Finish(first, Bytes("response-1"), /*remember=*/true);
  const Claim again = cache.Begin("cmd-1");
  EXPECT_EQ(again.state(), IdempotencyCache::kNew);
  EXPECT_EQ(cache.bytes(), 0u);  // The expired entry no longer counts.
}

TEST(IdempotencyCacheTest, EntryExpiresOnceTheClockPassesTheWindow) {
  constexpr auto kWindow = std::chrono::milliseconds(1);
  IdempotencyCache cache({.window = absl::FromChrono(kWindow)});
  Claim first = cache.Begin("cmd-1");
  cache.Finish(first, Bytes("response-1"), /*remember=*/true);
  EXPECT_GT(cache.bytes(), 0u);
  // Busy-wait on the clock (no sleep): the entry's expiry is at most this far away.
  const auto expired_by = std::chrono::steady_clock::now() + kWindow;
  while (std::chrono::steady_clock::now() < expired_by) {
  }
  const Claim again = cache.Begin("cmd-1");
  EXPECT_EQ(again.state(), IdempotencyCache::kNew);
  EXPECT_EQ(cache.bytes(), 0u);
}

TEST(IdempotencyCacheTest, EntriesWithinTheWindowAreKept) {
  IdempotencyCache cache({.window = absl::Hours(1)});
  for (int i = 0; i < 100; ++i) {
    Claim claim = cache.Begin(absl::StrCat("cmd-", i));
    cache.Finish(claim, Bytes(absl::StrCat("response-", i)), /*remember=*/true);
  }
  for (int i = 0; i < 100; ++i) {
    const Claim claim = cache.Begin(absl::StrCat("cmd-", i));
    ASSERT_EQ(claim.state(), IdempotencyCache::kDone) << i;
    EXPECT_EQ(*claim.response(), absl::StrCat("response-", i));
  }
  EXPECT_EQ(cache.size(), 100u);
}

TEST(IdempotencyCacheTest, MaxBytesBoundsMemoryAndForgetsTheOldest) {
  const IdempotencyOptions options{.window = absl::Hours(1), .max_bytes = 64 * 1024};
  IdempotencyCache cache(options);
  const Response response = Bytes(std::string(100, 'r'));
  constexpr int kCommands = 2000;  // About ten times what fits.
  for (int i = 0; i < kCommands; ++i) {
    Claim claim = cache.Begin(absl::StrFormat("cmd-%04d", i));
    ASSERT_EQ(claim.state(), IdempotencyCache::kNew) << i;
    cache.Finish(claim, response, /*remember=*/true);
    ASSERT_LE(cache.bytes(), options.max_bytes) << i;
  }
  EXPECT_GT(cache.size(), 0u);
  EXPECT_LT(cache.size(), static_cast<std::size_t>(kCommands));
  EXPECT_LE(cache.size() * response->size(), options.max_bytes);
  // The newest is remembered, the oldest forgotten.
  EXPECT_EQ(cache.Begin(absl::StrFormat("cmd-%04d", kCommands - 1)).state(),
            IdempotencyCache::kDone);
  EXPECT_EQ(cache.Begin("cmd-0000").state(), IdempotencyCache::kNew);
}

TEST(IdempotencyCacheTest, MemoryPressureNeverForgetsRunningCommands) {
  IdempotencyCache cache({.window = absl::Hours(1), .max_bytes = 16 * 1024});
  Claim running = cache.Begin("running");
  ASSERT_EQ(running.state(), IdempotencyCache::kNew);
  for (int i = 0; i < 1000; ++i) {
    Claim claim = cache.Begin(absl::StrFormat("cmd-%04d", i));
    cache.Finish(claim, Bytes(std::string(100, 'r')), /*remember=*/true);
  }
  EXPECT_EQ(cache.Begin("running").state(), IdempotencyCache::kRunning);
  cache.Finish(running, Bytes("done"), /*remember=*/true);
  const Claim after = cache.Begin("running");
  ASSERT_EQ(after.state(), IdempotencyCache::kDone);
  EXPECT_EQ(*after.response(), "done");
}

// The cost of one remembered entry of `response_size` bytes, as the cache accounts it.
std::size_t EntryCost(std::size_t response_size) {
  IdempotencyCache cache({.window = absl::Hours(1)});
  Claim claim = cache.Begin("cmd-00");
  cache.Finish(claim, Bytes(std::string(response_size, 'r')), /*remember=*/true);
  return cache.bytes();
}

TEST(IdempotencyCacheTest, ResponseThatFitsMaxBytesIsRemembered) {
  const IdempotencyOptions options{.window = absl::Hours(1), .max_bytes = 64 * 1024};
  IdempotencyCache cache(options);
  Claim claim = cache.Begin("cmd-1");
  cache.Finish(claim, Bytes(std::string(8 * 1024, 'r')), /*remember=*/true);  // 1/8 of the limit.
  EXPECT_LE(cache.bytes(), options.max_bytes);
  EXPECT_EQ(cache.Begin("cmd-1").state(), IdempotencyCache::kDone);
}

TEST(IdempotencyCacheTest, HoldsAsManyEntriesAsMaxBytesAllowsAndForgetsOldestFirst) {
  constexpr int kFits = 20;
  const std::size_t cost = EntryCost(100);
  const IdempotencyOptions options{.window = absl::Hours(1), .max_bytes = kFits * cost};
  IdempotencyCache cache(options);
  for (int i = 0; i <= kFits; ++i) {  // One more than fits.
    Claim claim = cache.Begin(absl::StrFormat("cmd-%02d", i));
    cache.Finish(claim, Bytes(std::string(100, 'r')), /*remember=*/true);
    EXPECT_LE(cache.bytes(), options.max_bytes);
  }
  // Only the oldest was forgotten.
  for (int i = kFits; i >= 1; --i) {
    EXPECT_EQ(cache.Begin(absl::StrFormat("cmd-%02d", i)).state(), IdempotencyCache::kDone) << i;
  }
  EXPECT_EQ(cache.Begin("cmd-00").state(), IdempotencyCache::kNew);
}

TEST(IdempotencyCacheTest, ALongRunThroughASmallBudgetKeepsExactlyTheNewestEntries) {
  // Thousands of forgets, each fetching what the next ones release ahead of time: the budget
  // holds exactly the newest kFits responses, byte for byte, and forgets the rest in order.
  constexpr int kFits = 50;
  constexpr int kTotal = 3000;
  const std::size_t cost = EntryCost(100);
  const IdempotencyOptions options{.window = absl::Hours(1), .max_bytes = kFits * cost};
  IdempotencyCache cache(options);
  for (int i = 0; i < kTotal; ++i) {
    Claim claim = cache.Begin(absl::StrFormat("cmd-%04d", i));
    ASSERT_EQ(claim.state(), IdempotencyCache::kNew) << i;
    cache.Finish(claim, absl::StrFormat("response-%04d-%s", i, std::string(86, 'r')),
                 /*remember=*/true);
    ASSERT_LE(cache.bytes(), options.max_bytes);
  }
  EXPECT_EQ(cache.size(), static_cast<std::size_t>(kFits));
  for (int i = kTotal - kFits; i < kTotal; ++i) {
    Claim claim = cache.Begin(absl::StrFormat("cmd-%04d", i));
    ASSERT_EQ(claim.state(), IdempotencyCache::kDone) << i;
    EXPECT_EQ(claim.response()->substr(0, 13), absl::StrFormat("response-%04d", i));
  }
  EXPECT_EQ(cache.Begin(absl::StrFormat("cmd-%04d", kTotal - kFits - 1)).state(),
            IdempotencyCache::kNew);
}

TEST(IdempotencyCacheTest, ConcurrentBeginsClaimEachIdOnce) {
  constexpr int kIds = 2000;
  IdempotencyCache cache({.window = absl::Hours(1)});
  std::vector<std::atomic<int>> claimed(kIds);
  std::atomic<int> done_without_response{0};
  auto worker = [&](bool forward) {
    for (int n = 0; n < kIds; ++n) {
      const int i = forward ? n : kIds - 1 - n;
      Claim claim = cache.Begin(absl::StrCat("cmd-", i));
      switch (claim.state()) {
        case IdempotencyCache::kNew:
          ++claimed[i];
          cache.Finish(claim, Bytes(absl::StrCat("response-", i)), /*remember=*/true);
          break;
        case IdempotencyCache::kDone:
          if (claim.response() == nullptr || *claim.response() != absl::StrCat("response-", i)) {
            ++done_without_response;
          }
          break;
        case IdempotencyCache::kRunning:
          break;
      }
    }
  };
  std::thread forward(worker, true);
  std::thread backward(worker, false);
  forward.join();
  backward.join();

  for (int i = 0; i < kIds; ++i) EXPECT_EQ(claimed[i].load(), 1) << i;
  EXPECT_EQ(done_without_response.load(), 0);
  EXPECT_EQ(cache.size(), static_cast<std::size_t>(kIds));
}

}  // namespace
}  // namespace cqrs
