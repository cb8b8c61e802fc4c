#include "cqrs/core/subject_sequencer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "testing/coro.h"
#include "testing/sync.h"

namespace cqrs {
namespace {

using ::cqrs::testing::Log;

using ::cqrs::testing::Spawn;
using ::cqrs::testing::SpawnedOp;
using ::cqrs::testing::WhenAll;
using ::cqrs::testing::Yield;

using ::testing::ElementsAre;
using Turn = SubjectSequencer::Turn;
using PoolStrand = asio::strand<asio::thread_pool::executor_type>;

// Waits for `turn`, logs "<name>:start", yields `yields` times (anything not held back by the
// sequencer interleaves here), logs "<name>:end" and releases the turn.
Awaitable<void> TakeTurn(SubjectSequencer& sequencer, Turn turn, std::string name, Log& log,
                         int yields = 3) {
  co_await sequencer.Wait(turn);
  log.Add(name + ":start");
  for (int i = 0; i < yields; ++i) co_await Yield();
  log.Add(name + ":end");
  turn.Release();
}

TEST(SubjectSequencerTest, SameSubjectRunsInEnterOrderEvenWhenStartedInReverse) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Log log;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");
  Turn c = sequencer.Enter("user-1");
  EXPECT_EQ(sequencer.active_subjects(), 1u);

  std::vector<SpawnedOp> ops;
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(c), "c", log)));
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(b), "b", log)));
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(a), "a", log)));
  cqrs::testing::Run(io, WhenAll(std::move(ops)));

  EXPECT_THAT(log.entries(),
              ElementsAre("a:start", "a:end", "b:start", "b:end", "c:start", "c:end"));
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

// The control for the test above: the same coroutines without a subject interleave freely.
TEST(SubjectSequencerTest, EmptySubjectNeverWaits) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Log log;
  Turn a = sequencer.Enter("");
  Turn b = sequencer.Enter("");
  Turn c = sequencer.Enter("");
  EXPECT_EQ(sequencer.active_subjects(), 0u);

  std::vector<SpawnedOp> ops;
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(c), "c", log)));
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(b), "b", log)));
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(a), "a", log)));
  cqrs::testing::Run(io, WhenAll(std::move(ops)));

  const std::vector<std::string> entries = log.entries();
  ASSERT_EQ(entries.size(), 6u);
  // All three started before any finished: none waited for another.
  for (std::size_t i = 0; i < 3; ++i) EXPECT_TRUE(absl::EndsWith(entries[i], ":start")) << i;
  EXPECT_EQ(sequencer.active_subjects(), 0u);

  // Held turns without a subject do not block each other either.
  Turn held = sequencer.Enter("");
  Turn next = sequencer.Enter("");
  cqrs::testing::Run(io, sequencer.Wait(next));
  cqrs::testing::Run(io, sequencer.Wait(held));
}

// Waits for its turn, then holds it until `gate` is cancelled.
Awaitable<void> HoldUntilGate(SubjectSequencer& sequencer, Turn turn, asio::steady_timer& gate,
                              Log& log) {
  co_await sequencer.Wait(turn);
  log.Add("a:start");
  boost::system::error_code ec;
  co_await gate.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  log.Add("a:end");
}

// Waits for its turn, then opens `gate`.
Awaitable<void> OpenGate(SubjectSequencer& sequencer, Turn turn, asio::steady_timer& gate,
                         Log& log) {
  co_await sequencer.Wait(turn);
  log.Add("b:ran");
  gate.cancel();
}

TEST(SubjectSequencerTest, DifferentSubjectsDoNotWaitForEachOther) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Log log;
  // `a` holds its subject until `b` has run: if `b` waited for `a`, neither would finish.
  asio::steady_timer gate(io, std::chrono::steady_clock::time_point::max());
  Turn a = sequencer.Enter("user-a");
  Turn b = sequencer.Enter("user-b");
  EXPECT_EQ(sequencer.active_subjects(), 2u);

  std::vector<SpawnedOp> ops;
  ops.push_back(Spawn(io.get_executor(), HoldUntilGate(sequencer, std::move(a), gate, log)));
  ops.push_back(Spawn(io.get_executor(), OpenGate(sequencer, std::move(b), gate, log)));
  cqrs::testing::Run(io, WhenAll(std::move(ops)), std::chrono::seconds(5));

  EXPECT_THAT(log.entries(), ElementsAre("a:start", "b:ran", "a:end"));
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

TEST(SubjectSequencerTest, TurnDestroyedBeforeItsTurnLeavesTheLine) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Log log;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");
  Turn c = sequencer.Enter("user-1");
  { Turn dropped = std::move(b); }  // E.g. its connection closed before it ran.
  EXPECT_EQ(sequencer.active_subjects(), 1u);

  std::vector<SpawnedOp> ops;
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(c), "c", log)));
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(a), "a", log)));
  cqrs::testing::Run(io, WhenAll(std::move(ops)), std::chrono::seconds(5));

  EXPECT_THAT(log.entries(), ElementsAre("a:start", "a:end", "c:start", "c:end"));
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

TEST(SubjectSequencerTest, LastInLineLeavingEmptiesTheSubject) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");
  b = Turn();  // Leaves the line (move assignment releases).
  EXPECT_EQ(sequencer.active_subjects(), 1u);
  a.Release();
  EXPECT_EQ(sequencer.active_subjects(), 0u);

  // The subject starts afresh: the next turn is granted at once.
  Turn c = sequencer.Enter("user-1");
  cqrs::testing::Run(io, sequencer.Wait(c));
  c.Release();
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

TEST(SubjectSequencerTest, TurnGrantedBeforeItWaitsCompletesAtOnce) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");
  a.Release();  // `b` is granted before anyone waits for it.
  cqrs::testing::Run(io, sequencer.Wait(b));
  EXPECT_EQ(sequencer.active_subjects(), 1u);
  b.Release();
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

// Releases `a` twice, yields so that anything wrongly woken runs, then releases `b`.
Awaitable<void> ReleaseTwiceThenB(Turn& a, Turn& b, Log& log) {
  a.Release();
  a.Release();  // Must not release `b`'s turn on its behalf.
  for (int i = 0; i < 5; ++i) co_await Yield();
  log.Add("b:release");
  b.Release();
}

TEST(SubjectSequencerTest, ReleasingTwiceIsHarmless) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Log log;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");
  Turn c = sequencer.Enter("user-1");

  std::vector<SpawnedOp> ops;
  ops.push_back(Spawn(io.get_executor(), TakeTurn(sequencer, std::move(c), "c", log, 0)));
  ops.push_back(Spawn(io.get_executor(), ReleaseTwiceThenB(a, b, log)));
  cqrs::testing::Run(io, WhenAll(std::move(ops)), std::chrono::seconds(5));

  EXPECT_THAT(log.entries(), ElementsAre("b:release", "c:start", "c:end"));
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

TEST(SubjectSequencerTest, MoveAssignmentReleasesTheTurnItReplaces) {
  asio::io_context io;
  SubjectSequencer sequencer;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");
  a = std::move(b);  // Releases the running turn; `a` now holds the (granted) second one.
  cqrs::testing::Run(io, sequencer.Wait(a));
  b.Release();  // Moved from: nothing to release.
  EXPECT_EQ(sequencer.active_subjects(), 1u);

  Turn moved(std::move(a));
  a.Release();
  EXPECT_EQ(sequencer.active_subjects(), 1u);
  moved.Release();
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

TEST(SubjectSequencerTest, ActiveSubjectsCountsRunningAndWaitingSubjects) {
  SubjectSequencer sequencer;
  EXPECT_EQ(sequencer.active_subjects(), 0u);
  {
    Turn a1 = sequencer.Enter("a");
    Turn a2 = sequencer.Enter("a");
    Turn b1 = sequencer.Enter("b");
    Turn none = sequencer.Enter("");
    EXPECT_EQ(sequencer.active_subjects(), 2u);
    b1.Release();
    EXPECT_EQ(sequencer.active_subjects(), 1u);
    a1.Release();
    EXPECT_EQ(sequencer.active_subjects(), 1u);  // `a2` is now running.
  }                                              // `a2` released by its destructor.
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

struct Shared {
  SubjectSequencer sequencer;
  Log log;
  std::atomic<int> in_flight[2] = {0, 0};
  std::atomic<int> overlaps{0};
  std::atomic<int> off_strand{0};
};

// Runs one command of `subject` on `strand`, counting overlaps with another command of the same
// subject and resumptions off its own executor after waiting.
Awaitable<void> RunOnStrand(Shared& shared, Turn turn, int subject, int index, PoolStrand strand) {
  co_await shared.sequencer.Wait(turn);
  if (!strand.running_in_this_thread()) ++shared.off_strand;
  if (shared.in_flight[subject].fetch_add(1) != 0) ++shared.overlaps;
  shared.log.Add(absl::StrCat(subject, ":", index));
  co_await Yield();
  co_await Yield();
  shared.in_flight[subject].fetch_sub(1);
  turn.Release();
}

TEST(SubjectSequencerTest, HandsTurnsAcrossExecutorsAndThreadsInOrder) {
  constexpr int kPerSubject = 30;
  asio::io_context io;
  Shared shared;
  asio::thread_pool pool(2);
  const PoolStrand strands[2] = {asio::make_strand(pool), asio::make_strand(pool)};

  // Arrival order: subjects interleaved; each subject's commands alternate between the strands,
  // so every handoff crosses executors.
  std::vector<std::pair<Turn, int>> arrivals;
  for (int i = 0; i < kPerSubject; ++i) {
    for (int subject = 0; subject < 2; ++subject) {
      arrivals.emplace_back(shared.sequencer.Enter(absl::StrCat("subject-", subject)), subject);
    }
  }
  EXPECT_EQ(shared.sequencer.active_subjects(), 2u);
  // Started in reverse arrival order, so the sequencer alone restores the order.
  std::vector<SpawnedOp> ops;
  for (int k = static_cast<int>(arrivals.size()) - 1; k >= 0; --k) {
    const int subject = arrivals[k].second;
    const int index = k / 2;
    const PoolStrand& strand = strands[index % 2];
    ops.push_back(
        Spawn(strand, RunOnStrand(shared, std::move(arrivals[k].first), subject, index, strand)));
  }
  cqrs::testing::Run(io, WhenAll(std::move(ops)));
  pool.join();

  std::vector<std::string> per_subject[2];
  for (const std::string& entry : shared.log.entries()) {
    per_subject[entry[0] - '0'].push_back(entry);
  }
  for (int subject = 0; subject < 2; ++subject) {
    ASSERT_EQ(per_subject[subject].size(), static_cast<std::size_t>(kPerSubject));
    for (int i = 0; i < kPerSubject; ++i) {
      EXPECT_EQ(per_subject[subject][i], absl::StrCat(subject, ":", i));
    }
  }
  EXPECT_EQ(shared.overlaps.load(), 0);
  EXPECT_EQ(shared.off_strand.load(), 0);
  EXPECT_EQ(shared.sequencer.active_subjects(), 0u);
}

// Two io_contexts, each run by the test thread in turn: the release on one wakes the waiter on
// the other, on the waiter's own context.
Awaitable<void> WaitOn(SubjectSequencer& sequencer, Turn& turn, asio::io_context& expected,
                       bool& resumed_on_expected) {
  co_await sequencer.Wait(turn);
  resumed_on_expected = expected.get_executor().running_in_this_thread();
}

Awaitable<void> ReleaseTurn(Turn& turn) {
  turn.Release();
  co_return;
}

TEST(SubjectSequencerTest, WaiterResumesOnItsOwnIoContext) {
  asio::io_context first;
  asio::io_context second;
  SubjectSequencer sequencer;
  Turn a = sequencer.Enter("user-1");
  Turn b = sequencer.Enter("user-1");

  bool done = false;
  bool resumed_on_second = false;
  asio::co_spawn(second, WaitOn(sequencer, b, second, resumed_on_second),
                 [&done](std::exception_ptr error) {
                   done = true;
                   if (error) std::rethrow_exception(error);
                 });
  second.poll();  // Registers the waiter; nothing can complete it yet.
  EXPECT_FALSE(done);

  // `a` is released from a coroutine on the first context.
  cqrs::testing::Run(first, ReleaseTurn(a));
  EXPECT_FALSE(done);  // The wake-up went to `second`, which has not run yet.
  second.restart();
  second.poll();
  EXPECT_TRUE(done);
  EXPECT_TRUE(resumed_on_second);
  b.Release();
  EXPECT_EQ(sequencer.active_subjects(), 0u);
}

}  // namespace
}  // namespace cqrs
