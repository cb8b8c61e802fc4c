// The transport-free command path on one thread: frame decode, CommandProcessor (idempotency,
// sequencing, router, the user service's CreateUser handler, event staging and append) and
// response encoding — what the server does per command minus the socket (decoding as a session
// does: one decoder, the command parsed into a message reused from command to command). Reports ns
// and heap allocations (operator new calls) per command, so that allocation work can be tracked.
//   build/release/tests/bench/cqrs_processor_microbench

#include <benchmark/benchmark.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <google/protobuf/arena.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include "absl/strings/str_format.h"
#include "cqrs/core/command_processor.h"
#include "cqrs/core/event_log.h"
#include "cqrs/core/fanout_hub.h"
#include "cqrs/net/frame_codec.h"
#include "testing/frames.h"
#include "user_handlers.h"

namespace {

std::atomic<std::uint64_t> g_allocations{0};

class CountingSink : public cqrs::EventSink {
 public:
  absl::StatusOr<cqrs::AppendReceipt> Append(std::span<cqrs::StagedEvent* const> events) override {
    cqrs::AppendReceipt receipt{.first_offset = next_, .count = events.size(), .epoch = 1};
    next_ += events.size();
    return receipt;
  }

 private:
  std::uint64_t next_ = 1;
};

// `with_log`: the real configuration (InMemoryEventLog + FanoutHub, as net::Server) instead of
// a sink that only counts.
void ProcessCreateUser(benchmark::State& state, bool with_log) {
  cqrs::CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (!users::RegisterHandlers(router, directory).ok()) state.SkipWithError("register");
  CountingSink sink;
  cqrs::InMemoryEventLog log;
  cqrs::FanoutHub hub(log);
  if (with_log) {
    router.set_event_sink(&log);
  } else {
    router.set_event_sink(&sink);
  }
  cqrs::CommandProcessor processor(router);
  boost::asio::io_context io(1);

  std::uint64_t n = 0;
  std::uint64_t allocations = 0;
  cqrs::net::FrameEncoder out;
  cqrs::net::FrameDecoder decoder;
  cqrs::v1::CommandEnvelope reused;
  cqrs::PayloadCache payloads;
  // Commands are encoded in chunks outside the timed region (pausing the timer per command would
  // cost more than a tenth of what is measured).
  constexpr std::size_t kChunk = 4096;
  std::vector<std::string> encoded;
  std::size_t next = 0;
  for (auto _ : state) {
    if (next == encoded.size()) {
      state.PauseTiming();
      encoded.clear();
      next = 0;
      for (std::size_t i = 0; i < kChunk; ++i, ++n) {
        users::v1::CreateUser create;
        create.set_name("name-0123456789a");  // 16 characters, as in WORKLOADS.md.
        const std::string id = absl::StrFormat("%08x-0000-4000-8000-%012x", n, n);  // 36 chars.
        create.set_user_id(id);
        const cqrs::v1::Frame command = cqrs::testing::CommandFrame(id, "", create);
        encoded.push_back(cqrs::testing::Encode({&command, 1}));
      }
      state.ResumeTiming();
    }
    const std::string& bytes = encoded[next++];

    const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
    // As a server session: one decoder per connection, the command decoded into a message
    // reused from command to command, an arena per command for the rest.
    decoder.Feed(cqrs::testing::AsBytes(bytes));
    google::protobuf::Arena arena;
    auto* frame = google::protobuf::Arena::CreateMessage<cqrs::v1::Frame>(&arena);
    bool is_command = false;
    if (decoder.Next(*frame, reused, is_command) != cqrs::net::DecodeResult::kFrame) {
      state.SkipWithError("decode");
    }
    const cqrs::v1::CommandEnvelope& command = is_command ? reused : frame->command();
    auto admission = processor.Admit(command);
    boost::asio::co_spawn(
        io,
        [&]() -> cqrs::Awaitable<void> {
          auto response = co_await processor.Run(admission, command, &arena, "", &payloads);
          out.Clear();
          (void)out.AppendSerialized(cqrs::v1::Frame::kResponse, *response);
        },
        boost::asio::detached);
    io.restart();
    io.run();
    allocations += g_allocations.load(std::memory_order_relaxed) - before;
  }
  state.counters["allocs_per_command"] = benchmark::Counter(
      static_cast<double>(allocations) / static_cast<double>(state.iterations()));
}
void BM_ProcessCreateUser(benchmark::State& state) { ProcessCreateUser(state, false); }
void BM_ProcessCreateUserWithLog(benchmark::State& state) { ProcessCreateUser(state, true); }
BENCHMARK(BM_ProcessCreateUserWithLog);
BENCHMARK(BM_ProcessCreateUser);

}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

BENCHMARK_MAIN();
