#include "cqrs/core/striped_counter.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace cqrs {
namespace {

constexpr int kThreads = 8;
constexpr int kPerThread = 20'000;

TEST(StripedCounterTest, SumsWhatEveryThreadAdded) {
  StripedCounter counter;
  EXPECT_EQ(counter.Sum(), 0u);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&counter, t] {
      for (int i = 0; i < kPerThread; ++i) counter.Add(t % 2 == 0 ? 1 : 2);
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter.Sum(), std::uint64_t{kPerThread} * (kThreads / 2) * 3);
}

TEST(StripedCounterTest, NextNeverRepeatsAcrossThreadsAndCounts) {
  StripedCounter counter;
  std::vector<std::vector<std::uint64_t>> taken(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&counter, &mine = taken[t]] {
      for (int i = 0; i < kPerThread; ++i) mine.push_back(counter.Next());
    });
  }
  for (auto& thread : threads) thread.join();
  absl::flat_hash_set<std::uint64_t> seen;
  for (const auto& mine : taken) {
    for (std::uint64_t n : mine) EXPECT_TRUE(seen.insert(n).second) << n << " was returned twice";
  }
  EXPECT_EQ(seen.size(), std::size_t{kThreads} * kPerThread);
  EXPECT_EQ(counter.Sum(), std::uint64_t{kThreads} * kPerThread);
}

}  // namespace
}  // namespace cqrs
