// File: testing/test_handlers.h
//
// Command handlers with controllable behaviour for loopback tests. Each is keyed by a well-known
// protobuf message used as the command (no test schema to generate):
//
//   google.protobuf.StringValue  echo: logs "<subject>:<value>" when it starts and
//                                "<subject>:/<value>" when it ends, yielding to its executor in
//                                between (inviting interleaving); replies the same StringValue.
//   google.protobuf.Empty        gated: waits on `gate` (entering counts as an arrival) and replies
//                                StringValue(command id). Records how many run at once.
//   google.protobuf.Int32Value   stubborn: like gated, but ignores cancellation, so that not even
//                                the command's deadline ends it before the gate opens.
//   google.protobuf.Duration     delay: counts a start in `delay_started`, waits that long on a
//                                timer, replies StringValue(command id).
//   google.protobuf.BoolValue    fail: throws std::runtime_error.
//   cqrs.v1.StreamInfo           whoami: replies StringValue(ctx.principal()).
//
//   CommandRouter router;
//   testing::TestHandlers handlers;            // must outlive the router's use
//   ASSERT_TRUE(handlers.Register(router).ok());
//
// Thread-safe: handlers run on any server thread.

#ifndef CQRS_TESTS_TESTING_TEST_HANDLERS_H_
#define CQRS_TESTS_TESTING_TEST_HANDLERS_H_

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/empty.pb.h>
#include <google/protobuf/wrappers.pb.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cqrs/core/command_router.h"
#include "cqrs/v1/event.pb.h"
#include "testing/sync.h"

namespace cqrs::testing {

class TestHandlers {
 public:
  absl::Status Register(CommandRouter& router);

  // Every echo start and end, in the order they happened.
  std::vector<std::string> echo_log() const;
  // The most gated handlers that were waiting at the same time.
  int max_gated_running() const { return max_gated_running_.load(); }

  Gate gate;
  Counter delay_started;

 private:
  Awaitable<absl::StatusOr<google::protobuf::StringValue>> Echo(
      const google::protobuf::StringValue& command, CommandContext& ctx);
  Awaitable<absl::StatusOr<google::protobuf::StringValue>> Gated(CommandContext& ctx);
  Awaitable<absl::StatusOr<google::protobuf::StringValue>> Stubborn(CommandContext& ctx);
  Awaitable<absl::StatusOr<google::protobuf::StringValue>> Delay(
      const google::protobuf::Duration& command, CommandContext& ctx);
  void Log(std::string entry);

  mutable std::mutex mutex_;
  std::vector<std::string> echo_log_;
  std::atomic<int> gated_running_{0};
  std::atomic<int> max_gated_running_{0};
};

// Commands for the handlers above.
google::protobuf::StringValue EchoCommand(std::string value);
google::protobuf::Duration DelayCommand(std::chrono::milliseconds delay);

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_TEST_HANDLERS_H_
