#include "cqrs/core/fanout_hub.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <google/protobuf/util/json_util.h>

#include "cqrs/core/any_util.h"
#include "cqrs/v1/event.pb.h"
#include "cqrs/v1/gateway.pb.h"
#include "users/v1/users.pb.h"

namespace cqrs {
namespace {

v1::EventEnvelope Created(std::string name, std::string channel = "users") {
  users::v1::UserCreated created;
  created.set_user_id("id-" + name);
  created.set_name(std::move(name));
  v1::EventEnvelope event;
  event.set_id("e-" + created.name());
  event.set_channel(std::move(channel));
  event.set_type("users.v1.UserCreated");
  PackAny(created, *event.mutable_payload());
  return event;
}

void Append(EventLog& log, const std::vector<v1::EventEnvelope>& events) {
  std::vector<StagedEvent> staged;
  for (const auto& event : events) staged.push_back(StagedEvent::From(event));
  std::vector<StagedEvent*> pointers;
  for (auto& event : staged) pointers.push_back(&event);
  ASSERT_TRUE(log.Append(pointers).ok());
}

std::vector<std::uint64_t> OffsetsAfter(FanoutHub::BatchPtr cursor) {
  std::vector<std::uint64_t> offsets;
  for (auto next = cursor->next(); next != nullptr; cursor = next, next = cursor->next()) {
    for (const auto& record : next->records()) offsets.push_back(record->offset());
  }
  return offsets;
}

TEST(FanoutHub, PublishesEveryAppendAsOneBatchInOffsetOrder) {
  InMemoryEventLog log;
  Append(log, {Created("early")});  // Before the hub: not published, the sentinel starts after it.
  FanoutHub hub(log);
  const FanoutHub::BatchPtr start = hub.Tail();
  EXPECT_EQ(start->last_offset(), 1u);
  EXPECT_TRUE(start->records().empty());
  EXPECT_EQ(start->next(), nullptr);

  Append(log, {Created("a"), Created("b")});
  Append(log, {Created("c")});
  const FanoutHub::BatchPtr first = start->next();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->records().size(), 2u);  // One command's events stay together.
  EXPECT_EQ(first->last_offset(), 3u);
  EXPECT_EQ(hub.Tail()->last_offset(), 4u);
  EXPECT_THAT(OffsetsAfter(start), ::testing::ElementsAre(2, 3, 4));
  EXPECT_EQ(hub.published(), 2u);
}

TEST(FanoutHub, RecordsAreTheLogsOwnSharedBytes) {
  InMemoryEventLog log;
  FanoutHub hub(log);
  const auto start = hub.Tail();
  Append(log, {Created("a")});
  const auto read = log.Read(0, 10);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(start->next()->records()[0].get(), (*read)[0].get());
}

TEST(FanoutHub, WakersAreCalledPerAppendUntilRemoved) {
  InMemoryEventLog log;
  FanoutHub hub(log);
  int calls = 0;
  const std::uint64_t id = hub.AddWaker([&] { ++calls; });
  Append(log, {Created("a")});
  Append(log, {Created("b"), Created("c")});
  EXPECT_EQ(calls, 2);
  hub.RemoveWaker(id);
  Append(log, {Created("d")});
  EXPECT_EQ(calls, 2);
}

TEST(FanoutHub, WakersComeAndGoWhileAnotherThreadAppends) {
  // Wakers run under the hub's lock: one added on another thread is called for later appends,
  // and once RemoveWaker has returned it is never called again.
  InMemoryEventLog log({.max_events = 1000});
  FanoutHub hub(log);
  constexpr int kWakers = 200;
  std::atomic<bool> done{false};
  std::vector<std::unique_ptr<std::atomic<int>>> calls;
  for (int i = 0; i < kWakers; ++i) calls.push_back(std::make_unique<std::atomic<int>>(0));
  std::vector<int> at_removal(kWakers, 0);
  int appends = 0;
  std::thread appender([&] {
    while (!done.load()) {
      Append(log, {Created(std::to_string(appends++))});
    }
  });
  std::thread waker_owner([&] {
    for (int i = 0; i < kWakers; ++i) {
      std::atomic<int>& mine = *calls[i];
      const std::uint64_t id = hub.AddWaker([&mine] { mine.fetch_add(1); });
      // Wait until an append after the registration has called it.
      const std::uint64_t seen = hub.published();
      while (hub.published() < seen + 2) std::this_thread::yield();
      hub.RemoveWaker(id);
      at_removal[i] = mine.load();
    }
    done.store(true);
  });
  waker_owner.join();
  appender.join();
  for (int i = 0; i < kWakers; ++i) {
    EXPECT_GT(at_removal[i], 0) << "waker " << i << " was never called";
    EXPECT_EQ(calls[i]->load(), at_removal[i]) << "waker " << i << " was called after removal";
  }
  EXPECT_EQ(hub.published(), static_cast<std::uint64_t>(appends));
}

TEST(FanoutHub, ConcurrentAppendersAndWalkersSeeEveryOffsetOnceInOrder) {
  InMemoryEventLog log;
  FanoutHub hub(log);
  const auto start = hub.Tail();
  constexpr int kPerThread = 2000;
  std::atomic<bool> done{false};
  std::vector<std::uint64_t> walked;
  std::thread walker([&] {
    FanoutHub::BatchPtr cursor = start;
    while (true) {
      const bool finished = done.load();
      for (auto next = cursor->next(); next != nullptr; cursor = next, next = cursor->next()) {
        for (const auto& record : next->records()) walked.push_back(record->offset());
      }
      if (finished) break;
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> appenders;
  for (int t = 0; t < 2; ++t) {
    appenders.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) Append(log, {Created("x")});
    });
  }
  for (auto& thread : appenders) thread.join();
  done.store(true);
  walker.join();
  ASSERT_EQ(walked.size(), 2u * kPerThread);
  for (std::size_t i = 0; i < walked.size(); ++i) EXPECT_EQ(walked[i], i + 1);
}

TEST(FanoutHub, DroppingALongChainDoesNotRecurse) {
  InMemoryEventLog log({.max_events = 10});
  auto hub = std::make_unique<FanoutHub>(log);
  FanoutHub::BatchPtr held = hub->Tail();
  for (int i = 0; i < 300'000; ++i) Append(log, {Created("x")});
  held.reset();  // Frees 300,000 batches; recursion would overflow the stack.
  SUCCEED();
}

TEST(EventRecord, ProtoPrefixMakesAServerMessageWithoutCopyingTheEnvelope) {
  InMemoryEventLog log;
  Append(log, {Created("Bob")});
  const auto record = (*log.Read(0, 1))[0];
  const std::string wire = std::string(record->proto_prefix()) + record->envelope();
  v1::ServerMessage message;
  ASSERT_TRUE(message.ParseFromString(wire));
  ASSERT_TRUE(message.has_event());
  EXPECT_EQ(message.event().offset(), 1u);
  EXPECT_EQ(message.event().epoch(), log.epoch());
  EXPECT_EQ(message.event().channel(), "users");
  users::v1::UserCreated created;
  ASSERT_TRUE(message.event().payload().UnpackTo(&created));
  EXPECT_EQ(created.name(), "Bob");
}

TEST(EventRecord, JsonIsTheCanonicalMappingRenderedOnce) {
  InMemoryEventLog log;
  Append(log, {Created("Bob")});
  const auto record = (*log.Read(0, 1))[0];
  const std::string& json = record->server_message_json();
  EXPECT_EQ(&json, &record->server_message_json());  // Same bytes every time.
  v1::ServerMessage message;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &message).ok()) << json;
  EXPECT_EQ(message.event().offset(), 1u);
  EXPECT_THAT(json, ::testing::HasSubstr(
                        R"("payload":{"@type":"type.googleapis.com/users.v1.UserCreated")"));
  EXPECT_THAT(json, ::testing::HasSubstr(R"("name":"Bob")"));
}

TEST(EventRecord, JsonKeepsAPayloadOfAnUnknownTypeAsBase64) {
  InMemoryEventLog log;
  v1::EventEnvelope event = Created("Bob");
  event.mutable_payload()->set_type_url("type.googleapis.com/not.linked.Type");
  event.mutable_payload()->set_value("\x01\x02\xff");
  Append(log, {event});
  const std::string& json = (*log.Read(0, 1))[0]->server_message_json();
  EXPECT_THAT(json,
              ::testing::HasSubstr(
                  R"("payload":{"@type":"type.googleapis.com/not.linked.Type","value":"AQL/"})"));
  EXPECT_THAT(json, ::testing::HasSubstr(R"("channel":"users")"));
}

TEST(EventRecord, JsonRenderingIsSafeFromManyThreads) {
  InMemoryEventLog log;
  Append(log, {Created("Bob")});
  const auto record = (*log.Read(0, 1))[0];
  std::vector<const std::string*> seen(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { seen[i] = &record->server_message_json(); });
  }
  for (auto& thread : threads) thread.join();
  for (const auto* json : seen) EXPECT_EQ(json, seen[0]);
}

}  // namespace
}  // namespace cqrs
