#include "cqrs/core/command_processor.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <google/protobuf/arena.h>
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

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cqrs/core/command_context.h"
#include "cqrs/core/command_status.h"
#include "cqrs/core/time_util.h"
#include "testing/coro.h"
#include "testing/recording_sink.h"
#include "testing/sync.h"
#include "user_handlers.h"
#include "users/v1/users.pb.h"

namespace cqrs {
namespace {

using ::cqrs::testing::Log;

using ::cqrs::testing::Spawn;
using ::cqrs::testing::SpawnedOp;
using ::cqrs::testing::WhenAll;
using ::cqrs::testing::Yield;

using ::testing::ElementsAre;
using users::v1::CreateUser;
using users::v1::CreateUserReply;
using users::v1::UserCreated;
using Envelope = v1::CommandResponseEnvelope;
using Response = CommandProcessor::Response;

// The names of the users created by `events`, in order.
std::vector<std::string> NamesOf(const std::vector<v1::EventEnvelope>& events) {
  std::vector<std::string> names;
  for (const v1::EventEnvelope& event : events) {
    UserCreated created;
    EXPECT_TRUE(event.payload().UnpackTo(&created));
    names.push_back(created.name());
  }
  return names;
}

v1::CommandEnvelope CreateUserCommand(std::string id, std::string name, std::string subject = {},
                                      std::string user_id = {}) {
  CreateUser create;
  create.set_name(std::move(name));
  create.set_user_id(std::move(user_id));
  v1::CommandEnvelope command;
  command.set_id(std::move(id));
  command.set_transaction_id("tx-1");
  command.set_subject(std::move(subject));
  command.mutable_payload()->PackFrom(create);
  return command;
}

Envelope Parse(const Response& bytes) {
  Envelope response;
  EXPECT_NE(bytes, nullptr);
  if (bytes != nullptr) {
    EXPECT_TRUE(response.ParseFromString(*bytes));
  }
  return response;
}

// Runs an admitted command with its own arena; `command` and `out` must outlive the awaitable.
Awaitable<void> RunInto(CommandProcessor& processor, CommandProcessor::Admission admission,
                        const v1::CommandEnvelope& command, Response& out,
                        std::string principal = {}) {
  google::protobuf::Arena arena;
  out = co_await processor.Run(admission, command, &arena, principal);
}

const std::string& NameOf(const google::protobuf::Message& command) {
  return static_cast<const CreateUser&>(command).name();
}

class CommandProcessorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(users::RegisterHandlers(router_, directory_).ok());
    router_.set_event_sink(&sink_);
  }

  // Admits and runs one command to completion.
  Response Process(const v1::CommandEnvelope& command, std::string principal = {}) {
    Response response;
    cqrs::testing::Run(io_, RunInto(processor_, processor_.Admit(command), command, response,
                                    std::move(principal)));
    return response;
  }

  // Logs "start:<name>", yields, logs "end:<name>" around every command.
  void TraceCommands() {
    router_.Use([this](const google::protobuf::Message& command, CommandContext&,
                       Next next) -> Awaitable<absl::Status> {
      log_.Add("start:" + NameOf(command));
      for (int i = 0; i < 3; ++i) co_await Yield();
      absl::Status status = co_await next();
      log_.Add("end:" + NameOf(command));
      co_return status;
    });
  }

  CommandRouter router_{ServiceInfo{.service_id = "user-service", .service_version = "1"}};
  users::UserDirectory directory_;
  cqrs::testing::RecordingSink sink_;
  CommandProcessor processor_{router_};
  Log log_;
  asio::io_context io_;
};

TEST_F(CommandProcessorTest, AdmitAndRunAnswersWithASerializedResponse) {
  const v1::CommandEnvelope command = CreateUserCommand("cmd-1", "bob", "team-1");
  const Response bytes = Process(command);
  const Envelope response = Parse(bytes);

  ASSERT_EQ(response.status(), Envelope::OK) << response.DebugString();
  EXPECT_EQ(response.command_id(), "cmd-1");
  EXPECT_EQ(response.transaction_id(), "tx-1");
  EXPECT_EQ(response.service_id(), "user-service");
  EXPECT_FALSE(response.id().empty());
  CreateUserReply reply;
  ASSERT_TRUE(response.payload().UnpackTo(&reply));
  EXPECT_TRUE(directory_.Contains(reply.user_id()));
  EXPECT_THAT(response.event_offsets(), ElementsAre(1u));  // The shared sink counts from 1.

  const std::vector<v1::EventEnvelope> events = sink_.events();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].causation_id(), "cmd-1");
  EXPECT_EQ(events[0].producing_service_id(), "user-service");
  UserCreated created;
  ASSERT_TRUE(events[0].payload().UnpackTo(&created));
  EXPECT_EQ(created.user_id(), reply.user_id());

  EXPECT_EQ(processor_.idempotency().size(), 1u);
  EXPECT_EQ(processor_.sequencer().active_subjects(), 0u);
}

TEST_F(CommandProcessorTest, SameIdTwiceRunsOnceAndAnswersTheSameBytes) {
  const v1::CommandEnvelope command = CreateUserCommand("cmd-1", "bob");  // Generated user id.
  const Response first = Process(command);
  const Response second = Process(command);

  EXPECT_EQ(Parse(first).status(), Envelope::OK);
  EXPECT_EQ(*first, *second);
  EXPECT_EQ(first.get(), second.get());  // Serialized once, shared.
  EXPECT_EQ(directory_.size(), 1u);
  EXPECT_EQ(sink_.events().size(), 1u);

  // Another id runs.
  EXPECT_EQ(Parse(Process(CreateUserCommand("cmd-2", "bob"))).status(), Envelope::OK);
  EXPECT_EQ(directory_.size(), 2u);
}

TEST_F(CommandProcessorTest, SameIdConcurrentlyRunsOnce) {
  TraceCommands();  // The first run yields, so the duplicate really waits for it.
  const v1::CommandEnvelope command = CreateUserCommand("cmd-1", "bob");
  const v1::CommandEnvelope resent = command;  // E.g. re-sent on another connection.
  CommandProcessor::Admission first = processor_.Admit(command);
  CommandProcessor::Admission duplicate = processor_.Admit(resent);

  Response first_bytes;
  Response duplicate_bytes;
  std::vector<SpawnedOp> ops;  // The duplicate starts first.
  ops.push_back(Spawn(io_.get_executor(),
                      RunInto(processor_, std::move(duplicate), resent, duplicate_bytes)));
  ops.push_back(
      Spawn(io_.get_executor(), RunInto(processor_, std::move(first), command, first_bytes)));
  cqrs::testing::Run(io_, WhenAll(std::move(ops)));

  EXPECT_EQ(Parse(first_bytes).status(), Envelope::OK);
  EXPECT_EQ(first_bytes.get(), duplicate_bytes.get());
  EXPECT_EQ(directory_.size(), 1u);
  EXPECT_EQ(sink_.events().size(), 1u);
  EXPECT_THAT(log_.entries(), ElementsAre("start:bob", "end:bob"));

  // A later one is answered from the cache.
  EXPECT_EQ(Process(command).get(), first_bytes.get());
  EXPECT_EQ(directory_.size(), 1u);
}

TEST_F(CommandProcessorTest, SameSubjectRunsInAdmissionOrder) {
  TraceCommands();
  const std::vector<v1::CommandEnvelope> commands = {
      CreateUserCommand("cmd-a", "a", "team-1"),
      CreateUserCommand("cmd-b", "b", "team-1"),
      CreateUserCommand("cmd-c", "c", "team-1"),
  };
  std::vector<CommandProcessor::Admission> admissions;
  for (const v1::CommandEnvelope& command : commands) {
    admissions.push_back(processor_.Admit(command));
  }
  std::vector<Response> responses(commands.size());
  std::vector<SpawnedOp> ops;  // Started in reverse.
  for (int i = static_cast<int>(commands.size()) - 1; i >= 0; --i) {
    ops.push_back(Spawn(io_.get_executor(),
                        RunInto(processor_, std::move(admissions[i]), commands[i], responses[i])));
  }
  cqrs::testing::Run(io_, WhenAll(std::move(ops)));

  EXPECT_THAT(log_.entries(),
              ElementsAre("start:a", "end:a", "start:b", "end:b", "start:c", "end:c"));
  EXPECT_THAT(NamesOf(sink_.events()), ElementsAre("a", "b", "c"));
  for (std::size_t i = 0; i < responses.size(); ++i) {
    const Envelope response = Parse(responses[i]);
    EXPECT_EQ(response.status(), Envelope::OK);
    EXPECT_EQ(response.command_id(), commands[i].id());
    EXPECT_THAT(response.event_offsets(), ElementsAre(i + 1));
  }
  EXPECT_EQ(processor_.sequencer().active_subjects(), 0u);
}

TEST_F(CommandProcessorTest, DifferentSubjectsDoNotWaitForEachOther) {
  // "slow" holds its subject until "fast", on another subject, has run.
  asio::steady_timer gate(io_, std::chrono::steady_clock::time_point::max());
  router_.Use([this, &gate](const google::protobuf::Message& command, CommandContext&,
                            Next next) -> Awaitable<absl::Status> {
    log_.Add("start:" + NameOf(command));
    if (NameOf(command) == "slow") {
      boost::system::error_code ec;
      co_await gate.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    } else {
      gate.cancel();
    }
    absl::Status status = co_await next();
    log_.Add("end:" + NameOf(command));
    co_return status;
  });
  const v1::CommandEnvelope slow = CreateUserCommand("cmd-1", "slow", "team-1");
  const v1::CommandEnvelope fast = CreateUserCommand("cmd-2", "fast", "team-2");
  CommandProcessor::Admission slow_admission = processor_.Admit(slow);
  CommandProcessor::Admission fast_admission = processor_.Admit(fast);

  Response slow_bytes;
  Response fast_bytes;
  std::vector<SpawnedOp> ops;
  ops.push_back(
      Spawn(io_.get_executor(), RunInto(processor_, std::move(slow_admission), slow, slow_bytes)));
  ops.push_back(
      Spawn(io_.get_executor(), RunInto(processor_, std::move(fast_admission), fast, fast_bytes)));
  cqrs::testing::Run(io_, WhenAll(std::move(ops)), std::chrono::seconds(5));

  EXPECT_THAT(log_.entries(), ElementsAre("start:slow", "start:fast", "end:fast", "end:slow"));
  EXPECT_EQ(Parse(slow_bytes).status(), Envelope::OK);
  EXPECT_EQ(Parse(fast_bytes).status(), Envelope::OK);
}

TEST_F(CommandProcessorTest, SameSubjectKeepsItsOrderAcrossThreads) {
  constexpr int kCommands = 30;
  asio::thread_pool pool(2);
  const asio::strand<asio::thread_pool::executor_type> strands[2] = {asio::make_strand(pool),
                                                                     asio::make_strand(pool)};
  std::vector<v1::CommandEnvelope> commands;
  std::vector<std::string> names;
  for (int i = 0; i < kCommands; ++i) {
    names.push_back(absl::StrCat("user-", i));
    commands.push_back(CreateUserCommand(absl::StrCat("cmd-", i), names.back(), "team-1"));
  }
  std::vector<CommandProcessor::Admission> admissions;
  for (const v1::CommandEnvelope& command : commands) {
    admissions.push_back(processor_.Admit(command));
  }
  std::vector<Response> responses(kCommands);
  std::vector<SpawnedOp> ops;  // Reverse order, alternating between two strands of two threads.
  for (int i = kCommands - 1; i >= 0; --i) {
    ops.push_back(Spawn(strands[i % 2],
                        RunInto(processor_, std::move(admissions[i]), commands[i], responses[i])));
  }
  cqrs::testing::Run(io_, WhenAll(std::move(ops)));
  pool.join();

  EXPECT_EQ(NamesOf(sink_.events()), names);
  for (int i = 0; i < kCommands; ++i) {
    const Envelope response = Parse(responses[i]);
    EXPECT_EQ(response.status(), Envelope::OK);
    EXPECT_THAT(response.event_offsets(), ElementsAre(static_cast<std::uint64_t>(i) + 1));
  }
  EXPECT_EQ(processor_.sequencer().active_subjects(), 0u);
}

TEST_F(CommandProcessorTest, PrincipalReachesTheChain) {
  std::string seen;
  router_.Use([&seen](const google::protobuf::Message&, CommandContext& ctx,
                      Next next) -> Awaitable<absl::Status> {
    seen = ctx.principal();
    co_return co_await next();
  });
  EXPECT_EQ(Parse(Process(CreateUserCommand("cmd-1", "bob"), "alice")).status(), Envelope::OK);
  EXPECT_EQ(seen, "alice");
}

TEST_F(CommandProcessorTest, RefuseAnswersUnavailableWithoutRunning) {
  v1::CommandEnvelope command = CreateUserCommand("cmd-1", "bob");
  command.set_transaction_id("tx-9");
  const Envelope response =
      Parse(processor_.Refuse(command, absl::UnavailableError("the server is shutting down")));

  EXPECT_EQ(response.status(), Envelope::UNAVAILABLE);
  EXPECT_EQ(response.command_id(), "cmd-1");
  EXPECT_EQ(response.transaction_id(), "tx-9");
  EXPECT_EQ(response.service_id(), "user-service");
  EXPECT_FALSE(response.id().empty());
  EXPECT_TRUE(response.has_timestamp());
  EXPECT_EQ(response.error().message(), "the server is shutting down");
  EXPECT_EQ(response.error().error_code(), "UNAVAILABLE");
  EXPECT_EQ(directory_.size(), 0u);
  EXPECT_TRUE(sink_.events().empty());

  // Refusing does not claim the id: the command can still run.
  EXPECT_EQ(Parse(Process(command)).status(), Envelope::OK);
  EXPECT_EQ(directory_.size(), 1u);
}

TEST_F(CommandProcessorTest, DeadlineExceededIsNotRemembered) {
  v1::CommandEnvelope late = CreateUserCommand("cmd-1", "bob");
  SetTimestamp(absl::Now() - absl::Seconds(1), *late.mutable_deadline());
  EXPECT_EQ(Parse(Process(late)).status(), Envelope::DEADLINE_EXCEEDED);
  EXPECT_EQ(directory_.size(), 0u);
  EXPECT_EQ(processor_.idempotency().size(), 0u);

  // The client retries the same id in time: it runs.
  const v1::CommandEnvelope retry = CreateUserCommand("cmd-1", "bob");
  const Response retried = Process(retry);
  EXPECT_EQ(Parse(retried).status(), Envelope::OK);
  EXPECT_EQ(directory_.size(), 1u);
  EXPECT_EQ(Process(retry).get(), retried.get());  // And that outcome is remembered.
}

TEST_F(CommandProcessorTest, RejectedIsRemembered) {
  const Response rejected = Process(CreateUserCommand("cmd-1", ""));
  const Envelope response = Parse(rejected);
  EXPECT_EQ(response.status(), Envelope::REJECTED);
  EXPECT_EQ(response.error().error_code(), "USER_NAME_EMPTY");

  // The same id answers the same, even with another body: the command ran once.
  const Response again = Process(CreateUserCommand("cmd-1", "bob"));
  EXPECT_EQ(*again, *rejected);
  EXPECT_EQ(directory_.size(), 0u);
  EXPECT_EQ(processor_.sequencer().active_subjects(), 0u);
}

TEST_F(CommandProcessorTest, MissingIdIsInvalidAndNotRemembered) {
  const v1::CommandEnvelope command = CreateUserCommand("", "bob", "team-1");
  const Envelope first = Parse(Process(command));
  const Envelope second = Parse(Process(command));
  EXPECT_EQ(first.status(), Envelope::INVALID);
  EXPECT_EQ(first.error().error_code(), "INVALID_COMMAND");
  EXPECT_EQ(second.status(), Envelope::INVALID);
  EXPECT_NE(first.id(), second.id());  // Two separate answers.
  EXPECT_EQ(processor_.idempotency().size(), 0u);
  EXPECT_EQ(processor_.sequencer().active_subjects(), 0u);
  EXPECT_EQ(directory_.size(), 0u);
}

// A service whose handler is unavailable until `available` is set.
class FlakyService {
 public:
  FlakyService() {
    EXPECT_TRUE(router
                    .Handle<v1::StreamInfo>(
                        [this](const v1::StreamInfo&, CommandContext&) -> Awaitable<absl::Status> {
                          ++runs;
                          co_await Yield();
                          if (!available) co_return absl::UnavailableError("dependency down");
                          co_return absl::OkStatus();
                        })
                    .ok());
  }

  v1::CommandEnvelope Command(std::string id) const {
    v1::CommandEnvelope command;
    command.set_id(std::move(id));
    v1::StreamInfo payload;  // The command type this service handles.
    payload.set_id("u-1");
    command.mutable_payload()->PackFrom(payload);
    return command;
  }

  int runs = 0;
  bool available = false;
  CommandRouter router;
  CommandProcessor processor{router};
};

TEST(CommandProcessorFlakyTest, UnavailableIsNotRemembered) {
  asio::io_context io;
  FlakyService service;
  const v1::CommandEnvelope command = service.Command("cmd-1");
  auto process = [&] {
    Response response;
    cqrs::testing::Run(
        io, RunInto(service.processor, service.processor.Admit(command), command, response));
    return Parse(response);
  };

  EXPECT_EQ(process().status(), Envelope::UNAVAILABLE);
  EXPECT_EQ(process().status(), Envelope::UNAVAILABLE);
  EXPECT_EQ(service.runs, 2);
  service.available = true;
  const Envelope ok = process();
  EXPECT_EQ(ok.status(), Envelope::OK);
  EXPECT_EQ(service.runs, 3);
  // OK is remembered.
  EXPECT_EQ(process().id(), ok.id());
  EXPECT_EQ(service.runs, 3);
}

TEST(CommandProcessorFlakyTest, DuplicateWaitingOnAnUnavailableRunSharesItsAnswerAndRetriesRun) {
  asio::io_context io;
  FlakyService service;
  const v1::CommandEnvelope command = service.Command("cmd-1");
  CommandProcessor::Admission first = service.processor.Admit(command);
  CommandProcessor::Admission duplicate = service.processor.Admit(command);

  Response first_bytes;
  Response duplicate_bytes;
  std::vector<SpawnedOp> ops;
  ops.push_back(Spawn(io.get_executor(),
                      RunInto(service.processor, std::move(duplicate), command, duplicate_bytes)));
  ops.push_back(
      Spawn(io.get_executor(), RunInto(service.processor, std::move(first), command, first_bytes)));
  cqrs::testing::Run(io, WhenAll(std::move(ops)));

  EXPECT_EQ(Parse(first_bytes).status(), Envelope::UNAVAILABLE);
  EXPECT_EQ(first_bytes.get(), duplicate_bytes.get());
  EXPECT_EQ(service.runs, 1);

  service.available = true;
  Response retried;
  cqrs::testing::Run(
      io, RunInto(service.processor, service.processor.Admit(command), command, retried));
  EXPECT_EQ(Parse(retried).status(), Envelope::OK);
  EXPECT_EQ(service.runs, 2);
}

TEST(CommandProcessorFlakyTest, DroppedAdmissionDoesNotBlockItsIdForever) {
  // Declared so that a stuck waiter (owned by the cache) is destroyed before the io_context.
  asio::io_context io;
  Response response;
  FlakyService service;
  service.available = true;
  const v1::CommandEnvelope command = service.Command("cmd-1");
  { CommandProcessor::Admission dropped = service.processor.Admit(command); }

  cqrs::testing::Run(
      io, RunInto(service.processor, service.processor.Admit(command), command, response),
      std::chrono::seconds(2));
  EXPECT_EQ(Parse(response).status(), Envelope::OK);
}

}  // namespace
}  // namespace cqrs
