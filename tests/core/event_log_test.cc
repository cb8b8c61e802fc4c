#include "cqrs/core/event_log.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cqrs/v1/event.pb.h"

namespace cqrs {
namespace {

v1::EventEnvelope Event(std::string id, std::string channel = "users") {
  v1::EventEnvelope event;
  event.set_id(std::move(id));
  event.set_channel(std::move(channel));
  event.set_type("users.v1.UserCreated");
  return event;
}

absl::StatusOr<AppendReceipt> AppendAll(EventLog& log,
                                        const std::vector<v1::EventEnvelope>& events) {
  std::vector<StagedEvent> staged;
  for (const auto& event : events) staged.push_back(StagedEvent::From(event));
  std::vector<StagedEvent*> pointers;
  for (auto& event : staged) pointers.push_back(&event);
  return log.Append(pointers);
}

v1::EventEnvelope Decode(const EventLog::Record& record) {
  v1::EventEnvelope event;
  EXPECT_TRUE(event.ParseFromString(record->envelope()));
  return event;
}

// What the retained records cost the byte budget, as the log documents it (envelope, channel and
// bookkeeping).
std::size_t BytesOf(const std::vector<EventLog::Record>& records) {
  std::size_t bytes = 0;
  for (const auto& record : records) bytes += record->envelope().size() + record->channel().size();
  return bytes + records.size() * 160;
}

TEST(InMemoryEventLog, AssignsContiguousOffsetsFromOneUnderOneEpoch) {
  InMemoryEventLog log;
  EXPECT_NE(log.epoch(), 0u);
  EXPECT_EQ(log.head(), 0u);
  EXPECT_EQ(log.earliest(), 1u);

  std::vector<v1::EventEnvelope> batch = {Event("a"), Event("b"), Event("c")};
  const auto receipt = AppendAll(log, batch);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->first_offset, 1u);
  EXPECT_EQ(receipt->count, 3u);
  EXPECT_EQ(receipt->epoch, log.epoch());
  const auto stored = log.Read(0, 10);
  ASSERT_TRUE(stored.ok()) << stored.status();
  ASSERT_EQ(stored->size(), 3u);
  EXPECT_EQ((*stored)[2]->offset(), 3u);
  EXPECT_EQ(Decode((*stored)[2]).offset(), 3u);  // The stored envelope carries both too.
  EXPECT_EQ(Decode((*stored)[2]).epoch(), log.epoch());
  EXPECT_EQ(Decode((*stored)[2]).id(), "c");

  std::vector<v1::EventEnvelope> next = {Event("d")};
  EXPECT_EQ(AppendAll(log, next)->first_offset, 4u);
  EXPECT_EQ(log.head(), 4u);
}

TEST(InMemoryEventLog, EveryInstanceHasItsOwnEpochUnlessOneIsGiven) {
  InMemoryEventLog a;
  InMemoryEventLog b;
  EXPECT_NE(a.epoch(), b.epoch());
  EXPECT_EQ(InMemoryEventLog({.epoch = 7}).epoch(), 7u);
}

TEST(InMemoryEventLog, ReadsFromAnOffsetWithTheSerializedEnvelope) {
  InMemoryEventLog log({.epoch = 3});
  std::vector<v1::EventEnvelope> batch = {Event("a"), Event("b", "orders"), Event("c")};
  ASSERT_TRUE(AppendAll(log, batch).ok());

  const auto all = log.Read(0, 100);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 3u);
  EXPECT_EQ((*all)[1]->offset(), 2u);
  EXPECT_EQ((*all)[1]->channel(), "orders");
  const v1::EventEnvelope second = Decode((*all)[1]);
  EXPECT_EQ(second.id(), "b");
  EXPECT_EQ(second.offset(), 2u);
  EXPECT_EQ(second.epoch(), 3u);

  const auto after_one = log.Read(1, 1);
  ASSERT_TRUE(after_one.ok());
  ASSERT_EQ(after_one->size(), 1u);
  EXPECT_EQ((*after_one)[0]->offset(), 2u);

  const auto at_head = log.Read(3, 10);
  ASSERT_TRUE(at_head.ok());
  EXPECT_TRUE(at_head->empty());

  const auto beyond = log.Read(4, 10);
  EXPECT_EQ(beyond.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(InMemoryEventLog, RetentionByCountAndBytesForgetsTheOldest) {
  InMemoryEventLog by_count({.max_events = 2});
  std::vector<v1::EventEnvelope> batch = {Event("a"), Event("b"), Event("c")};
  ASSERT_TRUE(AppendAll(by_count, batch).ok());
  EXPECT_EQ(by_count.retained_events(), 2u);
  EXPECT_EQ(by_count.earliest(), 2u);
  const auto too_old = by_count.Read(0, 10);
  EXPECT_EQ(too_old.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(too_old.status().message().find("the earliest is 2"), absl::string_view::npos)
      << too_old.status();
  const auto from_earliest = by_count.Read(1, 10);
  ASSERT_TRUE(from_earliest.ok());
  EXPECT_EQ(from_earliest->size(), 2u);

  InMemoryEventLog by_bytes({.max_bytes = 400});
  for (int i = 0; i < 20; ++i) {
    std::vector<v1::EventEnvelope> one = {Event(std::string(50, 'x'))};
    ASSERT_TRUE(AppendAll(by_bytes, one).ok());
  }
  EXPECT_LE(by_bytes.retained_bytes(), 400u);
  EXPECT_GT(by_bytes.retained_events(), 0u);
  EXPECT_EQ(by_bytes.head(), 20u);
  EXPECT_EQ(by_bytes.earliest(), 20u - by_bytes.retained_events() + 1);
}

TEST(InMemoryEventLog, LongRunsKeepExactlyTheNewestWindow) {
  // Many evictions, one at a time and many in one append (each fetches what the next ones
  // release ahead of time): the window holds exactly the newest events, in order.
  constexpr std::size_t kWindow = 100;
  InMemoryEventLog log({.max_events = kWindow});
  std::uint64_t appended = 0;
  for (std::size_t batch_size : {1, 1, 3, 250, 1, 7, 120, 1, 64}) {
    for (int round = 0; round < 20; ++round) {
      std::vector<v1::EventEnvelope> batch;
      for (std::size_t i = 0; i < batch_size; ++i) {
        batch.push_back(Event(absl::StrCat("event-", ++appended)));
      }
      ASSERT_TRUE(AppendAll(log, batch).ok());
      ASSERT_EQ(log.retained_events(), std::min<std::size_t>(kWindow, appended));
    }
  }
  EXPECT_EQ(log.head(), appended);
  EXPECT_EQ(log.earliest(), appended - kWindow + 1);
  const auto window = log.Read(appended - kWindow, kWindow + 1);
  ASSERT_TRUE(window.ok()) << window.status();
  ASSERT_EQ(window->size(), kWindow);
  for (std::size_t i = 0; i < kWindow; ++i) {
    const std::uint64_t offset = appended - kWindow + 1 + i;
    EXPECT_EQ((*window)[i]->offset(), offset);
    EXPECT_EQ(Decode((*window)[i]).id(), absl::StrCat("event-", offset));
  }
  EXPECT_EQ(log.retained_bytes(), BytesOf(*window));
}

TEST(InMemoryEventLog, LongRunsWithinAByteBudgetKeepTheNewestWindow) {
  InMemoryEventLog log({.max_bytes = 20'000});
  std::uint64_t appended = 0;
  for (std::size_t batch_size : {1, 5, 1, 40, 2, 1, 17}) {
    for (int round = 0; round < 30; ++round) {
      std::vector<v1::EventEnvelope> batch;
      for (std::size_t i = 0; i < batch_size; ++i) {
        // Sizes vary, so the window's length does too.
        ++appended;
        batch.push_back(
            Event(absl::StrCat("event-", appended, "-", std::string(appended % 97, 'x'))));
      }
      ASSERT_TRUE(AppendAll(log, batch).ok());
      ASSERT_LE(log.retained_bytes(), 20'000u);
    }
  }
  const std::uint64_t earliest = log.earliest();
  ASSERT_GT(earliest, 1u);
  const auto window = log.Read(earliest - 1, appended);
  ASSERT_TRUE(window.ok()) << window.status();
  ASSERT_EQ(window->size(), appended - earliest + 1);
  EXPECT_EQ(window->back()->offset(), appended);
  EXPECT_EQ(log.retained_bytes(), BytesOf(*window));
}

TEST(InMemoryEventLog, ListenersSeeEveryAppendInOffsetOrder) {
  InMemoryEventLog log;
  std::vector<std::uint64_t> seen;
  log.AddListener([&seen](std::span<const EventLog::Record> appended) {
    for (const auto& record : appended) seen.push_back(record->offset());
  });
  std::vector<v1::EventEnvelope> first = {Event("a"), Event("b")};
  std::vector<v1::EventEnvelope> second = {Event("c")};
  ASSERT_TRUE(AppendAll(log, first).ok());
  ASSERT_TRUE(AppendAll(log, second).ok());
  EXPECT_EQ(seen, (std::vector<std::uint64_t>{1, 2, 3}));
}

TEST(InMemoryEventLog, ConcurrentAppendsStayGapFreeContiguousAndOrderedForListeners) {
  InMemoryEventLog log;
  std::vector<std::uint64_t> seen;  // Listener calls are serialized by the log.
  log.AddListener([&seen](std::span<const EventLog::Record> appended) {
    for (const auto& record : appended) seen.push_back(record->offset());
  });
  constexpr int kThreads = 4;
  constexpr int kBatches = 500;
  std::vector<std::thread> threads;
  std::vector<std::vector<AppendReceipt>> receipts(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kBatches; ++i) {
        std::vector<v1::EventEnvelope> batch = {Event("x"), Event("y")};
        auto receipt = AppendAll(log, batch);
        ASSERT_TRUE(receipt.ok());
        ASSERT_EQ(receipt->count, 2u);  // At contiguous offsets (checked through `seen` below).
        receipts[t].push_back(*receipt);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(log.head(), static_cast<std::uint64_t>(kThreads * kBatches * 2));
  ASSERT_EQ(seen.size(), static_cast<std::size_t>(kThreads * kBatches * 2));
  for (std::size_t i = 0; i < seen.size(); ++i) EXPECT_EQ(seen[i], i + 1) << i;
}

TEST(InMemoryEventLog, EmptyAppendIsANoOp) {
  InMemoryEventLog log;
  const auto receipt = log.Append({});
  ASSERT_TRUE(receipt.ok());
  EXPECT_EQ(receipt->count, 0u);
  EXPECT_EQ(log.head(), 0u);
}

}  // namespace
}  // namespace cqrs
