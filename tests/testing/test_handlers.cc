#include "testing/test_handlers.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace cqrs::testing {

using google::protobuf::BoolValue;
using google::protobuf::Duration;
using google::protobuf::Empty;
using google::protobuf::Int32Value;
using google::protobuf::StringValue;

namespace {

StringValue Text(std::string value) {
  StringValue text;
  text.set_value(std::move(value));
  return text;
}

}  // namespace

StringValue EchoCommand(std::string value) { return Text(std::move(value)); }

Duration DelayCommand(std::chrono::milliseconds delay) {
  Duration duration;
  duration.set_seconds(delay.count() / 1000);
  duration.set_nanos(static_cast<std::int32_t>(delay.count() % 1000 * 1'000'000));
  return duration;
}

absl::Status TestHandlers::Register(CommandRouter& router) {
  // Thin non-coroutine lambdas: the coroutines are members taking references.
  if (auto status = router.Handle<StringValue>(
          [this](const StringValue& command, CommandContext& ctx) { return Echo(command, ctx); });
      !status.ok()) {
    return status;
  }
  if (auto status =
          router.Handle<Empty>([this](const Empty&, CommandContext& ctx) { return Gated(ctx); });
      !status.ok()) {
    return status;
  }
  if (auto status = router.Handle<Int32Value>(
          [this](const Int32Value&, CommandContext& ctx) { return Stubborn(ctx); });
      !status.ok()) {
    return status;
  }
  if (auto status = router.Handle<Duration>(
          [this](const Duration& command, CommandContext& ctx) { return Delay(command, ctx); });
      !status.ok()) {
    return status;
  }
  if (auto status = router.Handle<BoolValue>(
          [](const BoolValue&, CommandContext&) -> Awaitable<absl::Status> {
            throw std::runtime_error("the fail handler always throws");
            co_return absl::OkStatus();
          });
      !status.ok()) {
    return status;
  }
  return router.Handle<v1::StreamInfo>(
      [](const v1::StreamInfo&, CommandContext& ctx) -> Awaitable<absl::StatusOr<StringValue>> {
        co_return Text(ctx.principal());
      });
}

std::vector<std::string> TestHandlers::echo_log() const {
  std::lock_guard lock(mutex_);
  return echo_log_;
}

void TestHandlers::Log(std::string entry) {
  std::lock_guard lock(mutex_);
  echo_log_.push_back(std::move(entry));
}

Awaitable<absl::StatusOr<StringValue>> TestHandlers::Echo(const StringValue& command,
                                                          CommandContext& ctx) {
  Log(absl::StrCat(ctx.subject(), ":", command.value()));
  auto executor = co_await asio::this_coro::executor;
  co_await asio::post(executor, asio::use_awaitable);
  Log(absl::StrCat(ctx.subject(), ":/", command.value()));
  co_return command;
}

Awaitable<absl::StatusOr<StringValue>> TestHandlers::Gated(CommandContext& ctx) {
  const int running = ++gated_running_;
  int seen = max_gated_running_.load();
  while (running > seen && !max_gated_running_.compare_exchange_weak(seen, running)) {
  }
  try {
    co_await gate.Wait();
  } catch (...) {
    --gated_running_;
    throw;
  }
  --gated_running_;
  co_return Text(ctx.id());
}

Awaitable<absl::StatusOr<StringValue>> TestHandlers::Stubborn(CommandContext& ctx) {
  co_await asio::this_coro::reset_cancellation_state(asio::disable_cancellation());
  co_return co_await Gated(ctx);
}

Awaitable<absl::StatusOr<StringValue>> TestHandlers::Delay(const Duration& command,
                                                           CommandContext& ctx) {
  delay_started.Increment();
  asio::steady_timer timer(co_await asio::this_coro::executor);
  timer.expires_after(std::chrono::seconds(command.seconds()) +
                      std::chrono::nanoseconds(command.nanos()));
  co_await timer.async_wait(asio::use_awaitable);
  co_return Text(ctx.id());
}

}  // namespace cqrs::testing
