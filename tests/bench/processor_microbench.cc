// The transport-free command path on one thread: frame decode, CommandProcessor (idempotency,
// sequencing, router, the user service's CreateUser handler, event staging and append) and
// response encoding — what the server does per command minus the socket (decoding as a session
// does: one decoder, the command parsed into a message reused from command to command). Reports ns
// and heap allocations (operator new calls) per command, so that allocation work can be tracked.
//   build/release/tests/bench/cqrs_processor_microbench
// Instructions per command, repeatable on a noisy machine (divide by 100000 per benchmark):
//   valgrind --tool=callgrind --toggle-collect='*RunCommands*'
//       build/release/tests/bench/cqrs_processor_microbench --benchmark_filter=WithLog

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

// A fixed number of iterations, so that instruction counts (callgrind) compare run to run.
constexpr std::size_t kCommands = 100'000;

// kCommands CreateUser frames with distinct ids, encoded before the timed loop.
std::vector<std::string> EncodeCommands() {
  std::vector<std::string> encoded;
  encoded.reserve(kCommands);
  for (std::size_t n = 0; n < kCommands; ++n) {
    users::v1::CreateUser create;
    create.set_name("name-0123456789a");  // 16 characters, as in WORKLOADS.md.
    const std::string id = absl::StrFormat("%08x-0000-4000-8000-%012x", n, n);  // 36 chars.
    create.set_user_id(id);
    const cqrs::v1::Frame command = cqrs::testing::CommandFrame(id, "", create);
    encoded.push_back(cqrs::testing::Encode({&command, 1}));
  }
  return encoded;
}

// The timed loop, as a server session's runner: one long-lived coroutine on a running
// io_context takes the commands one after another (decoder, reused command message, command
// scratch, and an arena with an inline first block, reset after a command that used it).
cqrs::Awaitable<void> CommandLoop(benchmark::State& state, cqrs::CommandProcessor& processor,
                                  const std::vector<std::string>& encoded,
                                  std::uint64_t& allocations) {
  cqrs::net::FrameDecoder decoder;
  cqrs::net::FrameEncoder out;
  cqrs::v1::Frame frame;
  cqrs::v1::CommandEnvelope reused;
  cqrs::CommandScratch scratch;
  alignas(16) static char block[8192];
  google::protobuf::ArenaOptions options;
  options.initial_block = block;
  options.initial_block_size = sizeof block;
  google::protobuf::Arena arena(options);
  std::size_t next = 0;
  for (auto _ : state) {
    const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
    decoder.Feed(cqrs::testing::AsBytes(encoded[next++]));
    bool is_command = false;
    if (decoder.Next(frame, reused, is_command) != cqrs::net::DecodeResult::kFrame) {
      state.SkipWithError("decode");
      break;
    }
    const cqrs::v1::CommandEnvelope& command = is_command ? reused : frame.command();
    auto admission = processor.Admit(command);
    auto response = co_await processor.Run(admission, command, &arena, "", &scratch);
    out.Clear();
    (void)out.AppendSerialized(cqrs::v1::Frame::kResponse, *response);
    response.reset();
    admission = {};
    if (scratch.TakeArenaTouched()) arena.Reset();
    allocations += g_allocations.load(std::memory_order_relaxed) - before;
  }
}

// CommandLoop's completion (a named type, not a lambda: the name RunCommands must appear in no
// other function's name, or callgrind's toggle would switch collection off inside it).
struct KeepFailure {
  std::exception_ptr* failure;
  void operator()(std::exception_ptr e) const { *failure = e; }
};

// Runs CommandLoop to its end. `callgrind --toggle-collect='*RunCommands*'` counts exactly it.
[[gnu::noinline]] void RunCommands(benchmark::State& state, cqrs::CommandProcessor& processor,
                                   const std::vector<std::string>& encoded,
                                   std::uint64_t& allocations) {
  boost::asio::io_context io(1);
  std::exception_ptr failure;
  boost::asio::co_spawn(io, CommandLoop(state, processor, encoded, allocations),
                        KeepFailure{&failure});
  io.run();
  if (failure) state.SkipWithError("the command loop threw");
}

// `with_log`: the real configuration (InMemoryEventLog + FanoutHub, as net::Server) instead of
// a sink that only counts. The retention windows are small enough that most of the run is in
// the steady state of a busy server (every append and every command id evicts an old one).
void ProcessCreateUser(benchmark::State& state, bool with_log) {
  const std::vector<std::string> encoded = EncodeCommands();
  cqrs::CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (!users::RegisterHandlers(router, directory).ok()) state.SkipWithError("register");
  CountingSink sink;
  cqrs::InMemoryEventLog log({.max_events = 20'000});
  cqrs::FanoutHub hub(log);
  if (with_log) {
    router.set_event_sink(&log);
  } else {
    router.set_event_sink(&sink);
  }
  cqrs::CommandProcessor processor(router, {.idempotency = {.max_bytes = std::size_t{4} << 20}});
  std::uint64_t allocations = 0;
  RunCommands(state, processor, encoded, allocations);
  state.counters["allocs_per_command"] = benchmark::Counter(
      static_cast<double>(allocations) / static_cast<double>(state.iterations()));
}
void BM_ProcessCreateUser(benchmark::State& state) { ProcessCreateUser(state, false); }
void BM_ProcessCreateUserWithLog(benchmark::State& state) { ProcessCreateUser(state, true); }
BENCHMARK(BM_ProcessCreateUserWithLog)->Iterations(kCommands);
BENCHMARK(BM_ProcessCreateUser)->Iterations(kCommands);

}  // namespace

void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

BENCHMARK_MAIN();
