#include "cqrs/core/command_router.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/arena.h>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/system/system_error.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cqrs/core/command_context.h"
#include "cqrs/core/command_status.h"
#include "cqrs/core/event_sink.h"
#include "cqrs/core/interceptor.h"
#include "cqrs/core/time_util.h"
#include "testing/coro.h"
#include "user_handlers.h"
#include "users/v1/users.pb.h"

namespace cqrs {
namespace {

using ::cqrs::testing::SpawnedOp;
using ::cqrs::testing::WhenAll;
using ::cqrs::testing::Yield;

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using users::v1::CreateUser;
using users::v1::CreateUserReply;
using users::v1::UserCreated;
using Envelope = v1::CommandResponseEnvelope;
using CreateUserResult = Awaitable<absl::StatusOr<CreateUserReply>>;

// Appends events at contiguous offsets starting at `first_offset`, and keeps copies of them.
class RecordingSink final : public EventSink {
 public:
  explicit RecordingSink(std::uint64_t first_offset = 0, std::uint64_t epoch = 1)
      : next_offset_(first_offset), epoch_(epoch) {}

  absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const> events) override {
    std::lock_guard lock(mutex_);
    AppendReceipt receipt{.first_offset = next_offset_, .count = events.size(), .epoch = epoch_};
    for (const StagedEvent* event : events) {
      v1::EventEnvelope& kept = events_.emplace_back(event->Decode());
      EXPECT_EQ(kept.channel(), event->channel());
      kept.set_offset(next_offset_++);
      kept.set_epoch(epoch_);
    }
    ++appends_;
    return receipt;
  }

  std::vector<v1::EventEnvelope> events() const {
    std::lock_guard lock(mutex_);
    return events_;
  }
  int appends() const {
    std::lock_guard lock(mutex_);
    return appends_;
  }

 private:
  mutable std::mutex mutex_;
  std::uint64_t next_offset_;
  std::uint64_t epoch_;
  std::vector<v1::EventEnvelope> events_;
  int appends_ = 0;
};

// A sink whose log is down.
class FailingSink final : public EventSink {
 public:
  absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const>) override {
    return absl::UnavailableError("the event log is down");
  }
};

CreateUser NewUser(std::string name, std::string user_id = {}) {
  CreateUser command;
  command.set_name(std::move(name));
  command.set_user_id(std::move(user_id));
  return command;
}

v1::CommandEnvelope MakeCommand(std::string id, const google::protobuf::Message& payload) {
  v1::CommandEnvelope command;
  command.set_id(std::move(id));
  command.set_transaction_id("tx-1");
  command.mutable_payload()->PackFrom(payload);
  return command;
}

// A command of a second type (most tests register handlers only for CreateUser).
v1::StreamInfo OtherCommand(std::string id) {
  v1::StreamInfo message;
  message.set_entity_type("User");
  message.set_id(std::move(id));
  return message;
}

// Dispatches `command` with its own arena and context; `response` must outlive the awaitable.
Awaitable<void> DispatchInto(const CommandRouter& router, const v1::CommandEnvelope& command,
                             Envelope& response, std::string principal = {}) {
  google::protobuf::Arena arena;
  CommandContext ctx(command, &arena, &router.service());
  ctx.set_principal(std::move(principal));
  co_await router.Dispatch(ctx, response);
  // Whatever the outcome, nothing stays staged once the command completed unsuccessfully.
  if (response.status() != Envelope::OK) {
    EXPECT_TRUE(ctx.staged_events().empty());
  }
}

Envelope Dispatch(const CommandRouter& router, const v1::CommandEnvelope& command,
                  std::string principal = {}) {
  asio::io_context io;
  Envelope response;
  cqrs::testing::Run(io, DispatchInto(router, command, response, std::move(principal)));
  return response;
}

// Dispatches `command` with its own arena and `scratch`, as a server session's runner does.
Envelope DispatchWithScratch(const CommandRouter& router, const v1::CommandEnvelope& command,
                             CommandScratch& scratch) {
  asio::io_context io;
  Envelope response;
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    google::protobuf::Arena arena;
    CommandContext ctx(command, &arena, &router.service());
    ctx.set_scratch(&scratch);
    co_await router.Dispatch(ctx, response);
  }());
  return response;
}

// A handler that emits one UserCreated and answers with the user id.
CreateUserResult CreateAndEmit(const CreateUser& command, CommandContext& ctx) {
  UserCreated created;
  created.set_user_id(command.user_id());
  created.set_name(command.name());
  ctx.Emit(created, StreamOf("User", command.user_id()));
  CreateUserReply reply;
  reply.set_user_id(command.user_id());
  co_return reply;
}

class CommandRouterTest : public ::testing::Test {
 protected:
  CommandRouter router_{ServiceInfo{.service_id = "test-service", .service_version = "1.2"}};
  RecordingSink sink_{/*first_offset=*/100, /*epoch=*/7};
};

// --- Outcomes ------------------------------------------------------------------------------

TEST_F(CommandRouterTest, OkCarriesReplyPayloadAndEventOffsets) {
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        UserCreated created;
                        created.set_user_id(command.user_id());
                        created.set_name(command.name());
                        ctx.Emit(created, StreamOf("User", command.user_id()));
                        ctx.Emit(created, StreamOf("User", command.user_id()));
                        CreateUserReply reply;
                        reply.set_user_id(command.user_id());
                        co_return reply;
                      })
                  .ok());

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob", "u-1")));
  ASSERT_EQ(response.status(), Envelope::OK) << response.DebugString();
  EXPECT_FALSE(response.has_error());
  EXPECT_EQ(response.type(), "users.v1.CreateUserReply");
  CreateUserReply reply;
  ASSERT_TRUE(response.payload().UnpackTo(&reply));
  EXPECT_EQ(reply.user_id(), "u-1");
  EXPECT_THAT(response.event_offsets(), ElementsAre(100u, 101u));
  EXPECT_EQ(response.event_epoch(), 7u);

  const std::vector<v1::EventEnvelope> events = sink_.events();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(sink_.appends(), 1);  // All events of a command are appended together.
  for (std::size_t i = 0; i < events.size(); ++i) {
    EXPECT_EQ(events[i].offset(), 100u + i);
    EXPECT_EQ(events[i].epoch(), 7u);
    UserCreated created;
    ASSERT_TRUE(events[i].payload().UnpackTo(&created));
    EXPECT_EQ(created.name(), "bob");
    EXPECT_EQ(created.user_id(), "u-1");
  }

  // The next command's events follow on.
  const Envelope second = Dispatch(router_, MakeCommand("cmd-2", NewUser("eve", "u-2")));
  ASSERT_EQ(second.status(), Envelope::OK) << second.DebugString();
  EXPECT_THAT(second.event_offsets(), ElementsAre(102u, 103u));
}

// DispatchSerialized writes OK responses by hand: the bytes must be what protobuf writes for the
// response Dispatch builds (same fields; canonical order and encoding), for every shape of OK
// response and for the failures it renders as messages.
Awaitable<CommandStatus> DispatchBytesInto(const CommandRouter& router,
                                           const v1::CommandEnvelope& command, std::string& out) {
  google::protobuf::Arena arena;
  CommandContext ctx(command, &arena, &router.service());
  co_return co_await router.DispatchSerialized(ctx, out);
}

TEST_F(CommandRouterTest, DispatchSerializedWritesWhatDispatchBuilds) {
  // Offsets from 300: two-byte varints in the packed field.
  RecordingSink sink(/*first_offset=*/300, /*epoch=*/1ULL << 40);
  router_.set_event_sink(&sink);
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        if (command.name() == "reject") co_return Rejected("NO", "refused");
                        const int events = command.user_id() == "none"  ? 0
                                           : command.user_id() == "two" ? 2
                                                                        : 1;
                        for (int i = 0; i < events; ++i) {
                          ctx.Emit(UserCreated(), StreamOf("User", command.user_id()));
                        }
                        CreateUserReply reply;
                        if (command.name() != "empty-reply") reply.set_user_id(command.user_id());
                        co_return reply;
                      })
                  .ok());
  ASSERT_TRUE(router_
                  .Handle<v1::StreamInfo>(
                      [](const v1::StreamInfo&, CommandContext&) -> Awaitable<absl::Status> {
                        co_return absl::OkStatus();  // No reply message, no events.
                      })
                  .ok());

  std::vector<v1::CommandEnvelope> commands = {
      MakeCommand("cmd-1", NewUser("bob", "one")),
      MakeCommand(std::string(200, 'c'), NewUser("bob", "two")),  // A long command id.
      MakeCommand("cmd-3", NewUser("bob", "none")),
      MakeCommand("cmd-4", NewUser("empty-reply", "one")),
      MakeCommand("cmd-5", OtherCommand("x")),
      MakeCommand("cmd-6", NewUser("reject", "one")),  // Failures take the message path.
      MakeCommand("cmd-7", NewUser("", "")),
  };
  commands[2].clear_transaction_id();
  for (const v1::CommandEnvelope& command : commands) {
    SCOPED_TRACE(command.id().substr(0, 8));
    asio::io_context io;
    std::string bytes;
    CommandStatus status = Envelope::STATUS_UNSPECIFIED;
    cqrs::testing::Run(io, [&]() -> Awaitable<void> {
      status = co_await DispatchBytesInto(router_, command, bytes);
    }());
    Envelope written;
    ASSERT_TRUE(written.ParseFromString(bytes));
    EXPECT_EQ(written.status(), status);
    // Canonical: protobuf writes the parsed message back to the very same bytes.
    EXPECT_EQ(written.SerializeAsString(), bytes);

    // The same command through Dispatch (a new response id and time; its events follow on).
    Envelope built = Dispatch(router_, command);
    EXPECT_NE(built.id(), written.id());
    EXPECT_TRUE(absl::StartsWith(written.id(), built.id().substr(0, built.id().find('-') + 1)));
    built.set_id(written.id());
    *built.mutable_timestamp() = written.timestamp();
    for (int i = 0; i < built.event_offsets_size(); ++i) {
      EXPECT_EQ(built.event_offsets(i), written.event_offsets(i) + written.event_offsets_size());
      built.set_event_offsets(i, written.event_offsets(i));
    }
    EXPECT_EQ(built.SerializeAsString(), bytes) << built.DebugString() << written.DebugString();
  }
}

// A response's id and time are taken when its command starts (before the handler runs), on
// both paths.
TEST_F(CommandRouterTest, ResponseTimeIsWhenTheCommandStarted) {
  router_.set_event_sink(&sink_);
  absl::Time in_handler;
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&in_handler](const CreateUser&, CommandContext&) -> CreateUserResult {
                        in_handler = absl::Now();
                        co_return CreateUserReply();
                      })
                  .ok());
  const absl::Time before = absl::Now();
  const Envelope built = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob")));
  EXPECT_GE(FromTimestamp(built.timestamp()), before);
  EXPECT_LE(FromTimestamp(built.timestamp()), in_handler);

  asio::io_context io;
  std::string bytes;
  const absl::Time before_serialized = absl::Now();
  cqrs::testing::Run(io, [&]() -> Awaitable<void> {
    co_await DispatchBytesInto(router_, MakeCommand("cmd-2", NewUser("bob")), bytes);
  }());
  Envelope written;
  ASSERT_TRUE(written.ParseFromString(bytes));
  ASSERT_EQ(written.status(), Envelope::OK);
  EXPECT_GE(FromTimestamp(written.timestamp()), before_serialized);
  EXPECT_LE(FromTimestamp(written.timestamp()), in_handler);
}

TEST_F(CommandRouterTest, UserServiceHandlersCreateAUser) {
  users::UserDirectory directory;
  ASSERT_TRUE(users::RegisterHandlers(router_, directory).ok());
  router_.set_event_sink(&sink_);

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("Bob")));
  ASSERT_EQ(response.status(), Envelope::OK) << response.DebugString();
  CreateUserReply reply;
  ASSERT_TRUE(response.payload().UnpackTo(&reply));
  EXPECT_FALSE(reply.user_id().empty());
  EXPECT_TRUE(directory.Contains(reply.user_id()));
  EXPECT_THAT(response.event_offsets(), ElementsAre(100u));

  const std::vector<v1::EventEnvelope> events = sink_.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].channel(), users::kUsersChannel);
  EXPECT_EQ(events[0].stream_info().entity_type(), "User");
  EXPECT_EQ(events[0].stream_info().id(), reply.user_id());
  UserCreated created;
  ASSERT_TRUE(events[0].payload().UnpackTo(&created));
  EXPECT_EQ(created.user_id(), reply.user_id());
  EXPECT_EQ(created.name(), "Bob");

  // A domain refusal from the real handler: the same user id again.
  const Envelope duplicate =
      Dispatch(router_, MakeCommand("cmd-2", NewUser("Bob", reply.user_id())));
  EXPECT_EQ(duplicate.status(), Envelope::REJECTED);
  EXPECT_EQ(duplicate.error().error_code(), "USER_EXISTS");
  EXPECT_EQ(sink_.events().size(), 1u);
}

TEST_F(CommandRouterTest, StatusOnlyHandlerAnswersWithoutPayload) {
  int runs = 0;
  ASSERT_TRUE(router_
                  .Handle<v1::StreamInfo>([&runs](const v1::StreamInfo& command,
                                                  CommandContext&) -> Awaitable<absl::Status> {
                    ++runs;
                    if (command.id() == "busy") co_return absl::UnavailableError("try later");
                    co_return absl::OkStatus();
                  })
                  .ok());

  const Envelope ok = Dispatch(router_, MakeCommand("cmd-1", OtherCommand("u-1")));
  EXPECT_EQ(ok.status(), Envelope::OK) << ok.DebugString();
  EXPECT_FALSE(ok.has_payload());
  EXPECT_TRUE(ok.type().empty());
  EXPECT_TRUE(ok.event_offsets().empty());

  const Envelope busy = Dispatch(router_, MakeCommand("cmd-2", OtherCommand("busy")));
  EXPECT_EQ(busy.status(), Envelope::UNAVAILABLE);
  EXPECT_EQ(busy.error().message(), "try later");
  EXPECT_EQ(busy.error().error_code(), "UNAVAILABLE");  // No code attached: the status name.
  EXPECT_EQ(runs, 2);
}

TEST_F(CommandRouterTest, UnknownTypeIsNotFound) {
  int runs = 0;
  ASSERT_TRUE(
      router_
          .Handle<CreateUser>([&runs](const CreateUser&, CommandContext&) -> CreateUserResult {
            ++runs;
            co_return CreateUserReply();
          })
          .ok());

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", OtherCommand("u-1")));
  EXPECT_EQ(response.status(), Envelope::NOT_FOUND);
  EXPECT_EQ(response.error().error_code(), "NO_HANDLER");
  EXPECT_THAT(response.error().message(), HasSubstr("cqrs.v1.StreamInfo"));
  EXPECT_THAT(response.error().developer_message(),
              HasSubstr("type.googleapis.com/cqrs.v1.StreamInfo"));
  EXPECT_FALSE(response.has_payload());
  EXPECT_EQ(response.command_id(), "cmd-1");
  EXPECT_EQ(runs, 0);
}

TEST_F(CommandRouterTest, TypeUrlPrefixIsIgnored) {
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(router_.Handle<CreateUser>(CreateAndEmit).ok());
  v1::CommandEnvelope command = MakeCommand("cmd-1", NewUser("bob", "u-1"));
  command.mutable_payload()->PackFrom(NewUser("bob", "u-1"), "example.com/schemas");
  ASSERT_EQ(command.payload().type_url(), "example.com/schemas/users.v1.CreateUser");

  const Envelope response = Dispatch(router_, command);
  EXPECT_EQ(response.status(), Envelope::OK) << response.DebugString();
}

TEST_F(CommandRouterTest, PayloadThatDoesNotParseIsInvalid) {
  int runs = 0;
  ASSERT_TRUE(
      router_
          .Handle<CreateUser>([&runs](const CreateUser&, CommandContext&) -> CreateUserResult {
            ++runs;
            co_return CreateUserReply();
          })
          .ok());
  // Field 1 (name) announces 5 bytes, 2 follow.
  const std::string truncated(
      "\x0a\x05"
      "ab",
      4);
  ASSERT_FALSE(CreateUser().ParseFromString(truncated));
  v1::CommandEnvelope command;
  command.set_id("cmd-1");
  command.mutable_payload()->set_type_url("type.googleapis.com/users.v1.CreateUser");
  command.mutable_payload()->set_value(truncated);

  const Envelope response = Dispatch(router_, command);
  EXPECT_EQ(response.status(), Envelope::INVALID);
  EXPECT_EQ(response.error().error_code(), "INVALID_PAYLOAD");
  EXPECT_THAT(response.error().message(), HasSubstr("users.v1.CreateUser"));
  EXPECT_EQ(runs, 0);
}

TEST_F(CommandRouterTest, ScratchReusesOnePayloadMessageAndNothingCarriesOver) {
  struct Seen {
    const CreateUser* address;
    std::string name;
    std::string user_id;
  };
  std::vector<Seen> seen;
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&seen](const CreateUser& command, CommandContext&) -> CreateUserResult {
                        seen.push_back({&command, command.name(), command.user_id()});
                        co_return CreateUserReply();
                      })
                  .ok());
  ASSERT_TRUE(router_
                  .Handle<v1::StreamInfo>([](const v1::StreamInfo& command,
                                             CommandContext&) -> Awaitable<absl::Status> {
                    EXPECT_EQ(command.entity_type(), "User");
                    co_return absl::OkStatus();
                  })
                  .ok());
  CommandScratch scratch;
  const auto dispatch = [&](const v1::CommandEnvelope& command) {
    return DispatchWithScratch(router_, command, scratch).status();
  };

  EXPECT_EQ(dispatch(MakeCommand("c1", NewUser("alice-with-a-long-name", "user-0123456789abcdef"))),
            Envelope::OK);
  EXPECT_EQ(dispatch(MakeCommand("c2", NewUser("bob"))), Envelope::OK);
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].address, seen[0].address)
      << "the second payload was not parsed into the first's message";
  EXPECT_EQ(seen[1].name, "bob");
  EXPECT_EQ(seen[1].user_id, "") << "a field of the previous command carried over";

  // A payload over kMaxBytes is parsed onto the arena (its capacity is not kept).
  const std::string big(CommandScratch::kMaxBytes + 1, 'x');
  EXPECT_EQ(dispatch(MakeCommand("c3", NewUser(big))), Envelope::OK);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_NE(seen[2].address, seen[0].address);
  EXPECT_EQ(seen[2].name, big);

  // A payload that does not parse leaves the cache usable; another type takes the cache over.
  v1::CommandEnvelope broken = MakeCommand("c4", NewUser("x"));
  broken.mutable_payload()->set_value(
      std::string("\x0a\x05"
                  "ab",
                  4));
  EXPECT_EQ(dispatch(broken), Envelope::INVALID);
  EXPECT_EQ(dispatch(MakeCommand("c5", OtherCommand("user-1"))), Envelope::OK);
  EXPECT_EQ(dispatch(MakeCommand("c6", NewUser("carol", "u-6"))), Envelope::OK);
  ASSERT_EQ(seen.size(), 4u);
  EXPECT_EQ(seen[3].name, "carol");
  EXPECT_EQ(seen[3].user_id, "u-6");
}

TEST_F(CommandRouterTest, ScratchKeepsEventsAndReplyOffTheArena) {
  router_.set_event_sink(&sink_);
  std::vector<const StagedEvent*> staged;
  ASSERT_TRUE(router_
                  .Handle<CreateUser>([&staged](const CreateUser& command,
                                                CommandContext& ctx) -> CreateUserResult {
                    UserCreated created;
                    created.set_user_id(command.user_id());
                    created.set_name(command.name());
                    const StagedEvent& first = ctx.Emit(created, StreamOf("User", "a"));
                    for (int i = 0; i < 40; ++i) ctx.Emit(created, StreamOf("User", "b"));
                    staged = {ctx.staged_events().begin(), ctx.staged_events().end()};
                    EXPECT_EQ(&first, staged.front()) << "a staged event moved";
                    EXPECT_EQ(first.Decode().stream_info().id(), "a");
                    CreateUserReply reply;
                    reply.set_user_id(command.user_id());
                    co_return reply;
                  })
                  .ok());
  CommandScratch scratch;
  for (const std::string name : {"first", "second"}) {
    SCOPED_TRACE(name);
    const v1::CommandEnvelope command = MakeCommand("cmd-" + name, NewUser(name, "u-" + name));
    asio::io_context io;
    Envelope response;
    std::uint64_t arena_used = 1;
    cqrs::testing::Run(io, [&]() -> Awaitable<void> {
      google::protobuf::Arena arena;
      {
        CommandContext ctx(command, &arena, &router_.service());
        ctx.set_scratch(&scratch);
        co_await router_.Dispatch(ctx, response);
      }
      arena_used = arena.SpaceUsed();
    }());
    ASSERT_EQ(response.status(), Envelope::OK) << response.DebugString();
    EXPECT_EQ(arena_used, 0u) << "the command used its arena";
    CreateUserReply reply;
    ASSERT_TRUE(response.payload().UnpackTo(&reply));
    EXPECT_EQ(reply.user_id(), "u-" + name);
    EXPECT_EQ(response.event_offsets_size(), 41);
    ASSERT_EQ(staged.size(), 41u) << "events of the previous command were still staged";
  }
  const std::vector<v1::EventEnvelope> events = sink_.events();
  ASSERT_EQ(events.size(), 82u);
  UserCreated created;
  ASSERT_TRUE(events.back().payload().UnpackTo(&created));
  EXPECT_EQ(created.name(), "second");
}

TEST_F(CommandRouterTest, ScratchLeavesTypesWithRepeatedFieldsToTheArena) {
  // Clear keeps a repeated field's cleared elements (and their strings): a kept message of such
  // a type would grow with every payload, so those are parsed onto the arena.
  int runs = 0;
  ASSERT_TRUE(
      router_
          .Handle<v1::CommandResponseEnvelope>([&runs](const v1::CommandResponseEnvelope& command,
                                                       CommandContext&) -> Awaitable<absl::Status> {
            EXPECT_EQ(command.event_offsets_size(), 3);
            ++runs;
            co_return absl::OkStatus();
          })
          .ok());
  ASSERT_TRUE(router_
                  .Handle<v1::StreamInfo>(
                      [](const v1::StreamInfo&, CommandContext&) -> Awaitable<absl::Status> {
                        co_return absl::OkStatus();
                      })
                  .ok());
  CommandScratch scratch;
  const auto dispatch = [&](const v1::CommandEnvelope& command) {
    return DispatchWithScratch(router_, command, scratch).status();
  };
  v1::CommandResponseEnvelope repeated;
  repeated.add_event_offsets(1);
  repeated.add_event_offsets(2);
  repeated.add_event_offsets(3);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(dispatch(MakeCommand(absl::StrCat("r", i), repeated)), Envelope::OK);
    EXPECT_TRUE(scratch.TakeArenaTouched()) << "a payload with a repeated field was kept";
  }
  EXPECT_EQ(runs, 2);
  EXPECT_EQ(dispatch(MakeCommand("s", OtherCommand("user-1"))), Envelope::OK);
  EXPECT_FALSE(scratch.TakeArenaTouched()) << "a plain payload went to the arena";
}

TEST_F(CommandRouterTest, MissingIdOrPayloadIsInvalid) {
  int runs = 0;
  ASSERT_TRUE(
      router_
          .Handle<CreateUser>([&runs](const CreateUser&, CommandContext&) -> CreateUserResult {
            ++runs;
            co_return CreateUserReply();
          })
          .ok());

  const Envelope no_id = Dispatch(router_, MakeCommand("", NewUser("bob")));
  EXPECT_EQ(no_id.status(), Envelope::INVALID);
  EXPECT_EQ(no_id.error().error_code(), "INVALID_COMMAND");
  EXPECT_THAT(no_id.error().message(), HasSubstr("id"));
  EXPECT_FALSE(no_id.id().empty());  // The response still has its own id.

  v1::CommandEnvelope without_payload;
  without_payload.set_id("cmd-2");
  const Envelope no_payload = Dispatch(router_, without_payload);
  EXPECT_EQ(no_payload.status(), Envelope::INVALID);
  EXPECT_EQ(no_payload.error().error_code(), "INVALID_COMMAND");
  EXPECT_THAT(no_payload.error().message(), HasSubstr("payload"));
  EXPECT_EQ(no_payload.command_id(), "cmd-2");

  EXPECT_EQ(runs, 0);
}

TEST_F(CommandRouterTest, RejectedCarriesErrorAndAppendsNoEvents) {
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        UserCreated created;
                        created.set_name(command.name());
                        ctx.Emit(created, StreamOf("User", "u-1"));  // Staged, then refused.
                        co_return Rejected("USER_EXISTS", "user bob already exists",
                                           "directory has u-1");
                      })
                  .ok());

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob")));
  EXPECT_EQ(response.status(), Envelope::REJECTED);
  EXPECT_EQ(response.error().error_code(), "USER_EXISTS");
  EXPECT_EQ(response.error().message(), "user bob already exists");
  EXPECT_EQ(response.error().developer_message(), "directory has u-1");
  EXPECT_FALSE(response.has_payload());
  EXPECT_TRUE(response.type().empty());
  EXPECT_TRUE(response.event_offsets().empty());
  EXPECT_EQ(sink_.appends(), 0);
  EXPECT_TRUE(sink_.events().empty());
}

TEST_F(CommandRouterTest, HandlerThatThrowsIsInternalAndTheNextCommandStillWorks) {
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        UserCreated created;
                        ctx.Emit(created, StreamOf("User", "u-1"));
                        if (command.name() == "boom") throw std::runtime_error("kaboom");
                        if (command.name() == "int") throw 42;
                        co_return CreateUserReply();
                      })
                  .ok());

  const Envelope thrown = Dispatch(router_, MakeCommand("cmd-1", NewUser("boom")));
  EXPECT_EQ(thrown.status(), Envelope::INTERNAL);
  EXPECT_EQ(thrown.error().error_code(), "HANDLER_EXCEPTION");
  EXPECT_THAT(thrown.error().developer_message(), HasSubstr("kaboom"));
  EXPECT_THAT(thrown.error().developer_message(), HasSubstr("users.v1.CreateUser"));
  EXPECT_TRUE(sink_.events().empty());

  const Envelope thrown_int = Dispatch(router_, MakeCommand("cmd-2", NewUser("int")));
  EXPECT_EQ(thrown_int.status(), Envelope::INTERNAL);
  EXPECT_EQ(thrown_int.error().error_code(), "HANDLER_EXCEPTION");
  EXPECT_THAT(thrown_int.error().developer_message(), HasSubstr("non-std exception"));

  const Envelope next = Dispatch(router_, MakeCommand("cmd-4", NewUser("fine")));
  EXPECT_EQ(next.status(), Envelope::OK) << next.DebugString();
  EXPECT_EQ(sink_.events().size(), 1u);
}

TEST_F(CommandRouterTest, HandlerThatThrowsBeforeItsDeadlineIsInternalAtOnce) {
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(
      router_
          .Handle<CreateUser>([](const CreateUser&, CommandContext& ctx) -> CreateUserResult {
            ctx.Emit(UserCreated(), StreamOf("User", "u-1"));
            throw std::runtime_error("kaboom");
            co_return CreateUserReply();
          })
          .ok());
  // With a deadline the handler races a timer; its exception must still end the race.
  constexpr absl::Duration kDeadline = absl::Seconds(1);
  v1::CommandEnvelope command = MakeCommand("cmd-1", NewUser("bob"));
  const absl::Time start = absl::Now();
  SetTimestamp(start + kDeadline, *command.mutable_deadline());

  const Envelope response = Dispatch(router_, command);
  EXPECT_EQ(response.status(), Envelope::INTERNAL) << response.DebugString();
  EXPECT_EQ(response.error().error_code(), "HANDLER_EXCEPTION");
  EXPECT_THAT(response.error().developer_message(), HasSubstr("kaboom"));
  EXPECT_LT(absl::Now() - start, kDeadline);
  EXPECT_TRUE(sink_.events().empty());
}

TEST_F(CommandRouterTest, DeadlineAlreadyPassedDoesNotRunTheHandler) {
  int runs = 0;
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&runs](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        ++runs;
                        co_return co_await CreateAndEmit(command, ctx);
                      })
                  .ok());
  v1::CommandEnvelope command = MakeCommand("cmd-1", NewUser("bob", "u-1"));
  SetTimestamp(absl::Now() - absl::Seconds(1), *command.mutable_deadline());

  const Envelope response = Dispatch(router_, command);
  EXPECT_EQ(response.status(), Envelope::DEADLINE_EXCEEDED);
  EXPECT_EQ(response.error().error_code(), "DEADLINE_EXCEEDED");
  EXPECT_THAT(response.error().message(), HasSubstr("before it ran"));
  EXPECT_EQ(runs, 0);
  EXPECT_TRUE(sink_.events().empty());

  // A deadline in the future lets it run (through the racing path).
  SetTimestamp(absl::Now() + absl::Hours(1), *command.mutable_deadline());
  const Envelope in_time = Dispatch(router_, command);
  EXPECT_EQ(in_time.status(), Envelope::OK) << in_time.DebugString();
  EXPECT_EQ(runs, 1);
  EXPECT_THAT(in_time.event_offsets(), ElementsAre(100u));
}

TEST_F(CommandRouterTest, DeadlinePassingWhileTheHandlerWaitsCancelsItAndDropsItsEvents) {
  router_.set_event_sink(&sink_);
  bool started = false;
  bool cancelled = false;
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        started = true;
                        UserCreated created;
                        created.set_name(command.name());
                        ctx.Emit(created, StreamOf("User", "u-1"));
                        // Far longer than the deadline: only cancellation ends this wait in time.
                        asio::steady_timer timer(co_await asio::this_coro::executor,
                                                 std::chrono::hours(1));
                        try {
                          co_await timer.async_wait(asio::use_awaitable);
                        } catch (const boost::system::system_error& e) {
                          cancelled = e.code() == asio::error::operation_aborted;
                          throw;
                        }
                        co_return CreateUserReply();
                      })
                  .ok());
  v1::CommandEnvelope command = MakeCommand("cmd-1", NewUser("bob"));
  SetTimestamp(absl::Now() + absl::Milliseconds(200), *command.mutable_deadline());

  // The router's contract: whoever awaits Dispatch cancels it at the deadline (the server's
  // session does this); the handler's pending operation then ends as cancelled.
  asio::io_context io;
  Envelope response;
  asio::cancellation_signal cancel;
  asio::steady_timer at_deadline(io, std::chrono::milliseconds(200));
  at_deadline.async_wait([&](boost::system::error_code ec) {
    if (!ec) cancel.emit(asio::cancellation_type::terminal);
  });
  bool done = false;
  asio::co_spawn(io, DispatchInto(router_, command, response, {}),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr) {
                   done = true;
                   at_deadline.cancel();
                 }));
  io.run_for(std::chrono::seconds(10));
  ASSERT_TRUE(done);
  EXPECT_EQ(response.status(), Envelope::DEADLINE_EXCEEDED) << response.DebugString();
  EXPECT_EQ(response.error().error_code(), "DEADLINE_EXCEEDED");
  EXPECT_THAT(response.error().message(), HasSubstr("while it ran"));
  EXPECT_TRUE(started);
  EXPECT_TRUE(cancelled);
  EXPECT_FALSE(response.has_payload());
  EXPECT_TRUE(response.event_offsets().empty());
  EXPECT_EQ(sink_.appends(), 0);
}

TEST_F(CommandRouterTest, EventsWithoutSinkAreInternal) {
  ASSERT_TRUE(router_.Handle<CreateUser>(CreateAndEmit).ok());
  ASSERT_EQ(router_.event_sink(), nullptr);

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob", "u-1")));
  EXPECT_EQ(response.status(), Envelope::INTERNAL);
  EXPECT_EQ(response.error().error_code(), "NO_EVENT_SINK");
  EXPECT_THAT(response.error().developer_message(), HasSubstr("1 staged events"));
  EXPECT_FALSE(response.has_payload());
  EXPECT_TRUE(response.event_offsets().empty());
}

TEST_F(CommandRouterTest, NoSinkIsFineWithoutEvents) {
  ASSERT_TRUE(
      router_
          .Handle<CreateUser>([](const CreateUser& command, CommandContext&) -> CreateUserResult {
            CreateUserReply reply;
            reply.set_user_id(command.user_id());
            co_return reply;
          })
          .ok());
  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob", "u-1")));
  EXPECT_EQ(response.status(), Envelope::OK) << response.DebugString();
  EXPECT_TRUE(response.has_payload());
}

TEST_F(CommandRouterTest, FailedAppendKeepsItsCodeAndDropsThePayload) {
  FailingSink sink;
  router_.set_event_sink(&sink);
  ASSERT_TRUE(router_.Handle<CreateUser>(CreateAndEmit).ok());

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob", "u-1")));
  EXPECT_EQ(response.status(), Envelope::UNAVAILABLE);
  EXPECT_EQ(response.error().error_code(), "EVENT_APPEND_FAILED");
  EXPECT_THAT(response.error().message(), HasSubstr("the event log is down"));
  EXPECT_FALSE(response.has_payload());
  EXPECT_TRUE(response.type().empty());
}

TEST_F(CommandRouterTest, DuplicateRegistrationIsAlreadyExists) {
  int first_runs = 0;
  int second_runs = 0;
  EXPECT_FALSE(router_.Has("users.v1.CreateUser"));
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&first_runs](const CreateUser&, CommandContext&) -> CreateUserResult {
                        ++first_runs;
                        co_return CreateUserReply();
                      })
                  .ok());
  const absl::Status again = router_.Handle<CreateUser>(
      [&second_runs](const CreateUser&, CommandContext&) -> Awaitable<absl::Status> {
        ++second_runs;
        co_return absl::OkStatus();
      });
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.message(), HasSubstr("users.v1.CreateUser"));
  EXPECT_TRUE(router_.Has("users.v1.CreateUser"));
  EXPECT_FALSE(router_.Has("users.v1.UserCreated"));

  // The first registration stays in place.
  EXPECT_EQ(Dispatch(router_, MakeCommand("cmd-1", NewUser("bob"))).status(), Envelope::OK);
  EXPECT_EQ(first_runs, 1);
  EXPECT_EQ(second_runs, 0);
}

TEST_F(CommandRouterTest, HeaderFieldsAreFilledWhateverTheOutcome) {
  ASSERT_TRUE(router_.Handle<CreateUser>(CreateAndEmit).ok());
  router_.set_event_sink(&sink_);
  EXPECT_EQ(router_.service().service_id, "test-service");

  const absl::Time before = absl::Now();
  v1::CommandEnvelope ok_command = MakeCommand("cmd-1", NewUser("bob", "u-1"));
  ok_command.set_transaction_id("tx-ok");
  const Envelope ok = Dispatch(router_, ok_command);
  const Envelope not_found = Dispatch(router_, MakeCommand("cmd-2", OtherCommand("u-1")));
  const absl::Time after = absl::Now();

  EXPECT_EQ(ok.status(), Envelope::OK);
  EXPECT_EQ(not_found.status(), Envelope::NOT_FOUND);
  for (const Envelope* response : {&ok, &not_found}) {
    EXPECT_EQ(response->service_id(), "test-service");
    EXPECT_FALSE(response->id().empty());
    ASSERT_TRUE(response->has_timestamp());
    const absl::Time stamped = FromTimestamp(response->timestamp());
    EXPECT_GE(stamped, before);
    EXPECT_LE(stamped, after);
  }
  EXPECT_EQ(ok.command_id(), "cmd-1");
  EXPECT_EQ(ok.transaction_id(), "tx-ok");
  EXPECT_EQ(not_found.command_id(), "cmd-2");
  EXPECT_EQ(not_found.transaction_id(), "tx-1");
  EXPECT_NE(ok.id(), not_found.id());

  // Response ids are unique per response, also for the same command, and across routers.
  absl::flat_hash_set<std::string> ids = {ok.id(), not_found.id()};
  CommandRouter other;
  for (int i = 0; i < 100; ++i) {
    Envelope a;
    Envelope b;
    router_.FillHeader(ok_command, a);
    other.FillHeader(ok_command, b);
    EXPECT_TRUE(ids.insert(a.id()).second) << a.id();
    EXPECT_TRUE(ids.insert(b.id()).second) << b.id();
    EXPECT_EQ(b.service_id(), "cqrs");
  }
}

TEST_F(CommandRouterTest, ConcurrentDispatchOnTwoThreads) {
  router_.set_event_sink(&sink_);
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        co_await Yield();
                        UserCreated created;
                        created.set_name(command.name());
                        ctx.Emit(created, StreamOf("User", command.name()));
                        co_await Yield();
                        CreateUserReply reply;
                        reply.set_user_id(command.name());
                        co_return reply;
                      })
                  .ok());

  constexpr int kCommands = 40;
  std::vector<v1::CommandEnvelope> commands;
  for (int i = 0; i < kCommands; ++i) {
    commands.push_back(MakeCommand(absl::StrCat("cmd-", i), NewUser(absl::StrCat("user-", i))));
  }
  std::vector<Envelope> responses(kCommands);

  asio::io_context io;
  asio::thread_pool pool(2);
  std::vector<SpawnedOp> ops;
  for (int i = 0; i < kCommands; ++i) {
    ops.push_back(asio::co_spawn(asio::any_io_executor(asio::make_strand(pool)),
                                 DispatchInto(router_, commands[i], responses[i]), asio::deferred));
  }
  cqrs::testing::Run(io, WhenAll(std::move(ops)));
  pool.join();

  absl::flat_hash_set<std::uint64_t> offsets;
  absl::flat_hash_set<std::string> response_ids;
  for (int i = 0; i < kCommands; ++i) {
    const Envelope& response = responses[i];
    ASSERT_EQ(response.status(), Envelope::OK) << response.DebugString();
    EXPECT_EQ(response.command_id(), commands[i].id());
    CreateUserReply reply;
    ASSERT_TRUE(response.payload().UnpackTo(&reply));
    EXPECT_EQ(reply.user_id(), absl::StrCat("user-", i));
    ASSERT_EQ(response.event_offsets_size(), 1);
    offsets.insert(response.event_offsets(0));
    response_ids.insert(response.id());
  }
  EXPECT_EQ(offsets.size(), static_cast<std::size_t>(kCommands));
  EXPECT_EQ(response_ids.size(), static_cast<std::size_t>(kCommands));
  for (std::uint64_t offset = 100; offset < 100 + kCommands; ++offset) {
    EXPECT_TRUE(offsets.contains(offset)) << offset;
  }
  EXPECT_EQ(sink_.events().size(), static_cast<std::size_t>(kCommands));
}

// --- CommandContext and Emit ---------------------------------------------------------------

// A context for command "cmd-9"; tests change the command and the service info as they need
// (the context reads both when asked).
class CommandContextTest : public ::testing::Test {
 protected:
  v1::CommandEnvelope command_ = MakeCommand("cmd-9", NewUser("bob"));
  google::protobuf::Arena arena_;
  ServiceInfo service_;
  CommandContext ctx_{command_, &arena_, &service_};
};

TEST_F(CommandContextTest, EmitFillsTheEnvelope) {
  command_.set_transaction_id("tx-9");
  service_ = {.service_id = "svc", .service_version = "3.1"};
  CommandContext& ctx = ctx_;
  UserCreated created;
  created.set_user_id("u-1");
  created.set_name("bob");

  const absl::Time before = absl::Now();
  const StagedEvent& first_staged = ctx.Emit(created, StreamOf("User", "u-1"));
  const StagedEvent& second_staged = ctx.Emit(
      created, StreamOf("User", "u-1"), {.channel = "users", .partition_key = "pk", .version = 2});
  const absl::Time after = absl::Now();
  const v1::EventEnvelope first = first_staged.Decode();
  const v1::EventEnvelope second = second_staged.Decode();

  EXPECT_EQ(first.id(), "cmd-9/0");
  EXPECT_EQ(second.id(), "cmd-9/1");
  for (const v1::EventEnvelope* event : {&first, &second}) {
    EXPECT_EQ(event->type(), "users.v1.UserCreated");
    EXPECT_EQ(event->transaction_id(), "tx-9");
    EXPECT_EQ(event->stream_info().entity_type(), "User");
    EXPECT_EQ(event->stream_info().id(), "u-1");
    EXPECT_EQ(event->causation_id(), "cmd-9");
    EXPECT_EQ(event->correlation_id(), "cmd-9");  // Defaults to the command id.
    EXPECT_EQ(event->producing_service_id(), "svc");
    EXPECT_EQ(event->producing_service_version(), "3.1");
    EXPECT_EQ(event->offset(), 0u);  // The sink adds offset and epoch.
    EXPECT_EQ(event->epoch(), 0u);
    ASSERT_TRUE(event->has_timestamp());
    EXPECT_GE(FromTimestamp(event->timestamp()), before);
    EXPECT_LE(FromTimestamp(event->timestamp()), after);
    UserCreated unpacked;
    ASSERT_TRUE(event->payload().UnpackTo(&unpacked));
    EXPECT_EQ(unpacked.user_id(), "u-1");
    EXPECT_EQ(unpacked.name(), "bob");
  }
  EXPECT_EQ(first.channel(), "users.v1.UserCreated");  // Default: the type's full name.
  EXPECT_EQ(first_staged.channel(), "users.v1.UserCreated");
  EXPECT_EQ(first.partition_key(), "u-1");  // Default: the stream id.
  EXPECT_EQ(first.version(), 0);
  EXPECT_EQ(second.channel(), "users");
  EXPECT_EQ(second_staged.channel(), "users");
  EXPECT_EQ(second.partition_key(), "pk");
  EXPECT_EQ(second.version(), 2);

  ASSERT_EQ(ctx.staged_events().size(), 2u);
  EXPECT_EQ(ctx.staged_events()[0], &first_staged);
  EXPECT_EQ(ctx.staged_events()[1], &second_staged);
  ctx.DiscardStagedEvents();
  EXPECT_TRUE(ctx.staged_events().empty());
}

// Emit writes the envelope by hand: its bytes must be exactly what protobuf writes for the same
// message (field order, omitted defaults, nested messages, negative varints, long strings whose
// length takes two bytes, field numbers above 15), so every reader decodes them alike.
TEST_F(CommandContextTest, EmitWritesWhatProtobufWrites) {
  struct Case {
    std::string command_id, transaction_id, correlation_id, entity_type, stream_id, name;
    EmitOptions options;
    ServiceInfo service;
  };
  const std::string long_id(200, 'i');
  const std::vector<Case> cases = {
      {"cmd-1", "tx-1", "", "User", "u-1", "bob", {}, {}},
      {"cmd-2", "", "corr", "User", "u-2", "", {.channel = "users", .version = 7}, {"svc", "1.2"}},
      {long_id,
       "",
       "",
       "",
       "",
       std::string(300, 'n'),
       {.partition_key = "pk", .version = -3},
       {"", ""}},
      {"c", "t", "", "E", long_id, "x", {.channel = "c", .partition_key = "p"}, {"s", "v"}},
      // An empty event (no Any value) and the most negative version (a ten-byte varint).
      {"e", "", "", "User", "", "", {.version = std::numeric_limits<std::int32_t>::min()}, {}},
  };
  for (const Case& c : cases) {
    v1::CommandEnvelope command = MakeCommand(c.command_id, NewUser("bob"));
    command.set_transaction_id(c.transaction_id);
    command.set_correlation_id(c.correlation_id);
    google::protobuf::Arena arena;
    CommandContext ctx(command, &arena, &c.service);
    UserCreated created;
    created.set_user_id(c.stream_id);
    created.set_name(c.name);
    const StagedEvent& staged = ctx.Emit(created, StreamOf(c.entity_type, c.stream_id), c.options);

    // The same envelope built field by field as a message (with Emit's timestamp, which the
    // test cannot predict).
    v1::EventEnvelope expected;
    expected.set_id(c.command_id + "/0");
    expected.set_transaction_id(c.transaction_id);
    *expected.mutable_timestamp() = staged.Decode().timestamp();
    expected.set_type("users.v1.UserCreated");
    expected.set_version(c.options.version);
    expected.mutable_stream_info()->set_id(c.stream_id);
    expected.mutable_stream_info()->set_entity_type(c.entity_type);
    expected.mutable_payload()->PackFrom(created);
    expected.set_partition_key(
        c.options.partition_key.empty() ? c.stream_id : std::string(c.options.partition_key));
    expected.set_producing_service_id(c.service.service_id);
    expected.set_producing_service_version(c.service.service_version);
    expected.set_channel(c.options.channel.empty() ? "users.v1.UserCreated"
                                                   : std::string(c.options.channel));
    expected.set_causation_id(c.command_id);
    expected.set_correlation_id(c.correlation_id.empty() ? c.command_id : c.correlation_id);

    EXPECT_EQ(staged.envelope(), expected.SerializeAsString()) << c.command_id;
    EXPECT_EQ(staged.channel(), expected.channel());
    // Room for the offset and epoch the sink appends.
    EXPECT_GE(staged.envelope().capacity(),
              staged.envelope().size() + StagedEvent::kPositionFieldsMaxBytes);
  }
}

TEST_F(CommandContextTest, EmitAcceptsTheStreamAsAMessage) {
  CommandContext& ctx = ctx_;
  v1::StreamInfo stream;
  stream.set_entity_type("User");
  stream.set_id("u-7");
  const v1::EventEnvelope event = ctx.Emit(UserCreated(), stream).Decode();
  EXPECT_EQ(event.stream_info().entity_type(), "User");
  EXPECT_EQ(event.stream_info().id(), "u-7");
  EXPECT_EQ(event.partition_key(), "u-7");
}

TEST_F(CommandContextTest, StageKeepsTheEnvelopeAsItIs) {
  CommandContext& ctx = ctx_;
  v1::EventEnvelope envelope;
  envelope.set_id("my-own-id");
  envelope.set_type("legacy.Type");
  envelope.set_channel("users");
  envelope.set_offset(5);  // Left to the sink.
  const StagedEvent& staged = ctx.Stage(envelope);
  ASSERT_EQ(ctx.staged_events().size(), 1u);
  EXPECT_EQ(ctx.staged_events()[0], &staged);
  EXPECT_EQ(staged.channel(), "users");
  const v1::EventEnvelope decoded = staged.Decode();
  EXPECT_EQ(decoded.id(), "my-own-id");
  EXPECT_EQ(decoded.type(), "legacy.Type");
  EXPECT_EQ(decoded.offset(), 0u);
  EXPECT_TRUE(decoded.causation_id().empty());  // Nothing filled in.
}

TEST_F(CommandContextTest, EmitKeepsAnExplicitCorrelationId) {
  command_.set_correlation_id("corr-1");
  CommandContext& ctx = ctx_;
  EXPECT_EQ(ctx.correlation_id(), "corr-1");

  const v1::EventEnvelope event = ctx.Emit(UserCreated(), StreamOf("User", "u-1")).Decode();
  EXPECT_EQ(event.correlation_id(), "corr-1");
  EXPECT_EQ(event.causation_id(), "cmd-9");
  EXPECT_EQ(event.producing_service_id(), "cqrs");
}

TEST(StagedEventTest, FromLeavesOutOffsetAndEpoch) {
  v1::EventEnvelope envelope;
  envelope.set_id("e-1");
  envelope.set_channel("users");
  envelope.set_offset(42);
  envelope.set_epoch(7);
  StagedEvent staged = StagedEvent::From(envelope);
  EXPECT_EQ(staged.channel(), "users");
  const v1::EventEnvelope decoded = staged.Decode();
  EXPECT_EQ(decoded.id(), "e-1");
  EXPECT_EQ(decoded.offset(), 0u);
  EXPECT_EQ(decoded.epoch(), 0u);
  EXPECT_EQ(envelope.offset(), 42u);  // The source is left as it was.

  const std::string bytes = staged.TakeEnvelope();
  EXPECT_EQ(bytes, decoded.SerializeAsString());
  EXPECT_TRUE(staged.envelope().empty());
}

TEST_F(CommandContextTest, Accessors) {
  command_.set_subject("user-1");
  (*command_.mutable_metadata())["tenant"] = "acme";
  CommandContext& ctx = ctx_;

  EXPECT_EQ(ctx.id(), "cmd-9");
  EXPECT_EQ(ctx.subject(), "user-1");
  EXPECT_EQ(&ctx.envelope(), &command_);
  EXPECT_EQ(ctx.arena(), &arena_);
  EXPECT_EQ(&ctx.service(), &service_);
  EXPECT_EQ(ctx.Metadata("tenant"), "acme");
  EXPECT_EQ(ctx.Metadata("absent"), "");
  EXPECT_EQ(ctx.deadline(), std::nullopt);
  EXPECT_TRUE(ctx.principal().empty());
  ctx.set_principal("alice");
  EXPECT_EQ(ctx.principal(), "alice");

  const absl::Time deadline = absl::FromUnixMillis(1'700'000'000'123);
  SetTimestamp(deadline, *command_.mutable_deadline());
  ASSERT_TRUE(ctx.deadline().has_value());
  EXPECT_EQ(*ctx.deadline(), deadline);
}

// --- Interceptors --------------------------------------------------------------------------

// Records "<name>:before" and "<name>:after <status code>" around the rest of the chain.
class TracingInterceptor final : public Interceptor {
 public:
  TracingInterceptor(std::string name, std::vector<std::string>& trace)
      : name_(std::move(name)), trace_(trace) {}
  Awaitable<absl::Status> Intercept(const google::protobuf::Message&, CommandContext&,
                                    Next next) override {
    trace_.push_back(name_ + ":before");
    absl::Status status = co_await next();
    trace_.push_back(absl::StrCat(name_, ":after ", absl::StatusCodeToString(status.code())));
    co_return status;
  }

 private:
  std::string name_;
  std::vector<std::string>& trace_;
};

TEST_F(CommandRouterTest, InterceptorsRunInRegistrationOrderAroundTheHandler) {
  std::vector<std::string> trace;
  router_.Use(std::make_shared<TracingInterceptor>("first", trace));
  router_.Use([&trace](const google::protobuf::Message&, CommandContext&,
                       Next next) -> Awaitable<absl::Status> {
    trace.push_back("second:before");
    co_await Yield();  // Interceptors may suspend.
    absl::Status status = co_await next();
    trace.push_back(absl::StrCat("second:after ", absl::StatusCodeToString(status.code())));
    co_return status;
  });
  router_.Use(std::make_shared<TracingInterceptor>("third", trace));
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&trace](const CreateUser& command, CommandContext&) -> CreateUserResult {
                        trace.push_back("handler");
                        if (command.name().empty()) co_return Rejected("USER_NAME_EMPTY", "empty");
                        co_return CreateUserReply();
                      })
                  .ok());

  EXPECT_EQ(Dispatch(router_, MakeCommand("cmd-1", NewUser("bob"))).status(), Envelope::OK);
  EXPECT_THAT(trace, ElementsAre("first:before", "second:before", "third:before", "handler",
                                 "third:after OK", "second:after OK", "first:after OK"));

  // Interceptors see the handler's outcome on the way back.
  trace.clear();
  EXPECT_EQ(Dispatch(router_, MakeCommand("cmd-2", NewUser(""))).status(), Envelope::REJECTED);
  EXPECT_THAT(trace,
              ElementsAre("first:before", "second:before", "third:before", "handler",
                          "third:after FAILED_PRECONDITION", "second:after FAILED_PRECONDITION",
                          "first:after FAILED_PRECONDITION"));

  // No handler, no parsed command: the chain does not run.
  trace.clear();
  EXPECT_EQ(Dispatch(router_, MakeCommand("cmd-3", OtherCommand("u"))).status(),
            Envelope::NOT_FOUND);
  EXPECT_TRUE(trace.empty());
}

TEST_F(CommandRouterTest, InterceptorShortCircuitStopsTheChain) {
  router_.set_event_sink(&sink_);
  std::vector<std::string> trace;
  router_.Use(std::make_shared<TracingInterceptor>("outer", trace));
  router_.Use([&trace](const google::protobuf::Message&, CommandContext& ctx,
                       Next next) -> Awaitable<absl::Status> {
    trace.push_back("auth");
    if (ctx.principal().empty()) co_return absl::UnauthenticatedError("log in first");
    co_return co_await next();
  });
  router_.Use(std::make_shared<TracingInterceptor>("inner", trace));
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&trace](const CreateUser& command, CommandContext& ctx) -> CreateUserResult {
                        trace.push_back("handler");
                        co_return co_await CreateAndEmit(command, ctx);
                      })
                  .ok());

  const Envelope anonymous = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob", "u-1")));
  EXPECT_EQ(anonymous.status(), Envelope::UNAUTHENTICATED);
  EXPECT_EQ(anonymous.error().message(), "log in first");
  EXPECT_EQ(anonymous.error().error_code(), "UNAUTHENTICATED");
  EXPECT_THAT(trace, ElementsAre("outer:before", "auth", "outer:after UNAUTHENTICATED"));
  EXPECT_TRUE(sink_.events().empty());

  trace.clear();
  const Envelope alice =
      Dispatch(router_, MakeCommand("cmd-2", NewUser("bob", "u-1")), /*principal=*/"alice");
  EXPECT_EQ(alice.status(), Envelope::OK) << alice.DebugString();
  EXPECT_THAT(trace, ElementsAre("outer:before", "auth", "inner:before", "handler",
                                 "inner:after OK", "outer:after OK"));
  EXPECT_EQ(sink_.events().size(), 1u);
}

TEST_F(CommandRouterTest, InterceptorSeesTheParsedCommandAndPrincipal) {
  std::string seen_type;
  std::string seen_name;
  std::string seen_principal;
  std::string handler_principal;
  router_.Use([&](const google::protobuf::Message& command, CommandContext& ctx,
                  Next next) -> Awaitable<absl::Status> {
    seen_type = command.GetDescriptor()->full_name();
    const auto* create = dynamic_cast<const CreateUser*>(&command);
    seen_name = create != nullptr ? create->name() : "<not a CreateUser>";
    seen_principal = ctx.principal();
    ctx.set_principal("refined:" + ctx.principal());  // Interceptors may refine the principal.
    co_return co_await next();
  });
  ASSERT_TRUE(
      router_
          .Handle<CreateUser>(
              [&handler_principal](const CreateUser&, CommandContext& ctx) -> CreateUserResult {
                handler_principal = ctx.principal();
                co_return CreateUserReply();
              })
          .ok());

  const Envelope response =
      Dispatch(router_, MakeCommand("cmd-1", NewUser("bob")), /*principal=*/"alice");
  EXPECT_EQ(response.status(), Envelope::OK);
  EXPECT_EQ(seen_type, "users.v1.CreateUser");
  EXPECT_EQ(seen_name, "bob");
  EXPECT_EQ(seen_principal, "alice");
  EXPECT_EQ(handler_principal, "refined:alice");
}

TEST_F(CommandRouterTest, InterceptorCanRejectWithAnErrorCode) {
  bool handler_ran = false;
  router_.Use([](const google::protobuf::Message& command, CommandContext&,
                 Next next) -> Awaitable<absl::Status> {
    const auto& create = static_cast<const CreateUser&>(command);
    if (create.name().size() > 3) {
      co_return Rejected("NAME_TOO_LONG", "at most 3 characters", "validation interceptor");
    }
    co_return co_await next();
  });
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&handler_ran](const CreateUser&, CommandContext&) -> CreateUserResult {
                        handler_ran = true;
                        co_return CreateUserReply();
                      })
                  .ok());

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("robert")));
  EXPECT_EQ(response.status(), Envelope::REJECTED);
  EXPECT_EQ(response.error().error_code(), "NAME_TOO_LONG");
  EXPECT_EQ(response.error().developer_message(), "validation interceptor");
  EXPECT_FALSE(handler_ran);
}

TEST_F(CommandRouterTest, InterceptorThatThrowsIsInternal) {
  bool handler_ran = false;
  router_.Use(
      [](const google::protobuf::Message&, CommandContext&, Next next) -> Awaitable<absl::Status> {
        throw std::logic_error("interceptor bug");
        co_return co_await next();
      });
  ASSERT_TRUE(router_
                  .Handle<CreateUser>(
                      [&handler_ran](const CreateUser&, CommandContext&) -> CreateUserResult {
                        handler_ran = true;
                        co_return CreateUserReply();
                      })
                  .ok());

  const Envelope response = Dispatch(router_, MakeCommand("cmd-1", NewUser("bob")));
  EXPECT_EQ(response.status(), Envelope::INTERNAL);
  EXPECT_EQ(response.error().error_code(), "HANDLER_EXCEPTION");
  EXPECT_THAT(response.error().developer_message(), HasSubstr("interceptor bug"));
  EXPECT_FALSE(handler_ran);
}

}  // namespace
}  // namespace cqrs
