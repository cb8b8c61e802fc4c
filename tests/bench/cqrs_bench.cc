// cqrs_bench: the whole-system workloads of /work/shared/WORKLOADS.md over loopback, against a
// real server process (this program re-executed with --serve), each next to its floor measured
// in the same run (this program re-executed with --echo: a blocking-socket echo server answering
// fixed-size frames).
//
//   cmake --preset release && cmake --build --preset release --target cqrs_bench
//   build/release/tests/bench/cqrs_bench --workload W1      # W1..W5, or all (the default)
//
// W3 (100 subscribers; paced, then max), W4 (10,000 idle subscribers: server KiB each) and W5 (W2
// with 10 stalled subscribers, against a twin server without them) use raw epoll WebSocket
// clients (bench_ws.h); W3 joins each event to its command by the event's causation id.
//
// Output: one line per workload run, `Wn key=value ...` (plain numbers); diagnostics on stderr.
// Exit code 0 when everything ran, 1 when a run failed, 2 for a usage error.
//
// Method: the clients of one workload are interleaved in slices (floor, blocking client,
// CommandClient, again ...) so that the machine's background noise hits them alike. The server
// is the user service as deployed: command server, in-memory event log, fan-out hub and event
// gateway (W3-W5 subscribe to it over WebSocket, see bench_ws.h).

#include <signal.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "bench_asio_floor.h"
#include "bench_link.h"
#include "bench_process.h"
#include "bench_ws.h"
#include "cqrs/core/asio.h"
#include "cqrs/net/command_client.h"
#include "users/v1/users.pb.h"

ABSL_FLAG(std::string, workload, "all", "Which workload to run: W1, W2, W3, W4, W5 or all.");
ABSL_FLAG(int, duration, 5,
          "W2: measured seconds per client (the floor, the blocking client and the "
          "CommandClient each get this long, interleaved in 1-second slices).");
ABSL_FLAG(int, round_trips, 20'000,
          "W1: measured round trips per client and CPU placement (also --round-trips).");
ABSL_FLAG(int, warmup, 1'000, "Warm-up round trips per client before measuring.");
ABSL_FLAG(int, w2_server_threads, 0,
          "W2: the server's command-server threads (0: one per core, as a default server). For "
          "analysis: what sharing the command path between threads costs.");
ABSL_FLAG(bool, w2_command_client, true,
          "W2: also measure the CommandClient (the cc_* keys); false for shorter runs and for "
          "profiling the server under the blocking client alone.");
ABSL_FLAG(int, subscriber_threads, 1,
          "W3: threads reading the subscribers' connections (epoll, big reads).");
ABSL_FLAG(int, w3_subscribers, 100, "W3: WebSocket subscribers.");
ABSL_FLAG(int, w3_rate, 2'000, "W3 mode=paced: commands per second.");
ABSL_FLAG(int, w4_subscribers, 10'000, "W4: idle WebSocket subscribers.");
ABSL_FLAG(int, gateway_threads, -1,
          "Event gateway threads of the server (W1 and W2 too); -1: as many as the command "
          "server's (--threads for --serve).");
ABSL_FLAG(bool, counting_sink, false,
          "Diagnostic: the server's commands append to a sink that only assigns offsets (no event "
          "log, nothing for the gateway), as before the event path existed; for W1/W2 "
          "comparisons.");
ABSL_FLAG(bool, serve, false,
          "Internal: run the user service (command server, in-memory event log, fan-out hub, "
          "event gateway) on 127.0.0.1, kernel-chosen ports; print port=N gateway=M to --port_fd "
          "(default stdout); stop on SIGTERM.");
ABSL_FLAG(bool, echo, false,
          "Internal: run the floor's blocking echo server (needs --request_bytes and "
          "--response_bytes).");
ABSL_FLAG(int, threads, 0, "Internal (--serve): server event-loop threads; 0: one per core.");
ABSL_FLAG(bool, asio_echo, false,
          "Internal: run W1's Asio floor server (--echo's answers from an Asio event loop; needs "
          "--request_bytes and --response_bytes).");
ABSL_FLAG(int, port_fd, -1, "Internal (--serve, --echo): where to report the port.");
ABSL_FLAG(int, request_bytes, 0, "Internal (--echo): size of one request frame.");
ABSL_FLAG(int, response_bytes, 0, "Internal (--echo): size of one response frame.");

namespace cqrs::bench {
namespace {

constexpr std::size_t kW2Connections = 4;
constexpr std::size_t kW2InFlight = 64;
constexpr int kW1Slices = 4;
constexpr std::uint16_t kCommandClientMethod = 2;
// Long enough that the template's deadline never passes during a run.
constexpr std::chrono::seconds kCommandDeadline{3600};
// Time bound of a run that is meant to end by its count (warm-ups, W1 slices).
constexpr std::chrono::seconds kCountedRunLimit{120};

Clock::time_point CountedRunDeadline() { return Clock::now() + kCountedRunLimit; }

// --- the CommandClient driver --------------------------------------------------------------

// What the coroutines of one CommandClient slice share (single-threaded io_context).
struct CcSlice {
  asio::io_context* io = nullptr;
  std::uint32_t run = 0;
  Clock::time_point deadline;
  bool record = true;
  LoadResult result;
  std::vector<std::uint64_t> next_sequence;  // Per stream; persists across slices.
  int running = 0;
};

// Sends CreateUser commands one after the other until `max_commands` or the slice's deadline.
// Parameters are trivially destructible (GCC 12 coroutine parameter bug).
Awaitable<void> CommandLoop(CcSlice* slice, net::CommandClient* client, std::uint16_t stream,
                            std::uint64_t max_commands) {
  users::v1::CreateUser create;
  create.set_name(kUserName);
  for (std::uint64_t i = 0; i < max_commands; ++i) {
    if (Clock::now() >= slice->deadline || !slice->result.error.empty()) break;
    std::string id =
        CommandId(slice->run, stream, kCommandClientMethod, slice->next_sequence[stream]++);
    create.set_user_id(id);
    net::SendOptions options;
    options.id = std::move(id);
    const auto sent = Clock::now();
    absl::StatusOr<v1::CommandResponseEnvelope> response =
        co_await client->Send(create, std::move(options));
    const auto now = Clock::now();
    if (!response.ok()) {
      if (slice->result.error.empty()) slice->result.error = response.status().ToString();
      break;
    }
    LoadResult& result = slice->result;
    ++result.answered;
    if (now <= slice->deadline) ++result.in_time;
    if (response->status() != v1::CommandResponseEnvelope::OK ||
        response->event_offsets_size() != 1) {
      ++result.failed;
    }
    if (slice->record) {
      result.rtt_ns.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent).count()));
    }
  }
}

// Runs `per_client` CommandLoops on each client until they end; bounded by `limit` (then the
// clients are closed, which fails their pending Sends).
void RunCommandClients(CcSlice& slice,
                       const std::vector<std::shared_ptr<net::CommandClient>>& clients,
                       std::size_t per_client, std::uint64_t max_commands, Clock::duration limit) {
  asio::io_context& io = *slice.io;
  const std::size_t streams = clients.size() * per_client;
  if (streams == 0 || max_commands == 0) return;
  if (slice.next_sequence.size() < streams) slice.next_sequence.resize(streams, 0);
  slice.running = static_cast<int>(streams);
  CcSlice* const raw = &slice;
  for (std::size_t c = 0; c < clients.size(); ++c) {
    for (std::size_t j = 0; j < per_client; ++j) {
      const auto stream = static_cast<std::uint16_t>(c * per_client + j);
      asio::co_spawn(io, CommandLoop(raw, clients[c].get(), stream, max_commands),
                     [raw](std::exception_ptr e) {
                       if (e && raw->result.error.empty()) {
                         raw->result.error = "a command loop threw";
                       }
                       if (--raw->running == 0) raw->io->stop();
                     });
    }
  }
  asio::steady_timer guard(io);
  guard.expires_after(limit);
  guard.async_wait([&clients, raw](const boost::system::error_code& ec) {
    if (ec) return;
    if (raw->result.error.empty()) raw->result.error = "the CommandClient slice timed out";
    for (const auto& client : clients) client->Close();
  });
  const auto start = Clock::now();
  io.restart();
  io.run();
  slice.result.busy += Clock::now() - start;
  guard.cancel();
  // Let the guard's handler see the cancellation before `guard` goes away.
  io.restart();
  io.poll();
}

std::vector<std::shared_ptr<net::CommandClient>> MakeClients(asio::io_context& io,
                                                             std::uint16_t port, std::size_t n) {
  std::vector<std::shared_ptr<net::CommandClient>> clients;
  for (std::size_t i = 0; i < n; ++i) {
    net::CommandClientOptions options;
    options.port = port;
    options.client_name = kClientName;
    options.default_timeout = std::chrono::seconds(10);
    clients.push_back(net::CommandClient::Create(io.get_executor(), std::move(options)));
  }
  return clients;
}

void CloseClients(asio::io_context& io, std::vector<std::shared_ptr<net::CommandClient>>& clients) {
  for (auto& client : clients) client->Close();
  io.restart();
  io.run_for(std::chrono::seconds(2));
  clients.clear();
  io.restart();
  io.run_for(std::chrono::milliseconds(200));
}

// --- helpers -----------------------------------------------------------------------------------

std::string Us(double micros) { return absl::StrFormat("%.1f", micros); }
std::string Ratio(double value) { return absl::StrFormat("%.2f", value); }
std::string Rate(double per_second) { return absl::StrFormat("%.0f", per_second); }

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Runs `work` and adds the CPU time `child` used meanwhile to `cpu_ns`.
template <typename Work>
void WithCpu(const BenchChild& child, std::uint64_t& cpu_ns, Work&& work) {
  const std::uint64_t before = child.CpuNanos();
  work();
  cpu_ns += child.CpuNanos() - before;
}

// CPU microseconds per answered command.
std::string CpuPerCommand(std::uint64_t cpu_ns, const LoadResult& result) {
  return absl::StrFormat("%.2f", result.answered == 0 ? 0.0 : cpu_ns / 1000.0 / result.answered);
}

absl::Status Failed(const LoadResult& result, absl::string_view what) {
  if (!result.error.empty()) {
    return absl::UnavailableError(absl::StrCat(what, ": ", result.error));
  }
  if (result.failed > 0) {
    return absl::InternalError(
        absl::StrCat(what, ": ", result.failed, " commands were not answered OK with one event"));
  }
  return absl::OkStatus();
}

// Prepares `cc` for the CommandClient slices and runs their warm-up: `per_stream` commands on
// each of `streams` streams per client, not recorded; counts OK answers into `ok_answers`.
// Closes the clients when the warm-up fails.
absl::Status WarmUpCommandClients(CcSlice& cc, asio::io_context& io,
                                  std::vector<std::shared_ptr<net::CommandClient>>& clients,
                                  std::uint32_t run, std::size_t streams, std::uint64_t per_stream,
                                  std::uint64_t& ok_answers) {
  cc.io = &io;
  cc.run = run;
  cc.deadline = Clock::time_point::max();
  cc.record = false;
  RunCommandClients(cc, clients, streams, per_stream, std::chrono::seconds(60));
  if (auto status = Failed(cc.result, "CommandClient warm-up"); !status.ok()) {
    CloseClients(io, clients);
    return status;
  }
  ok_answers += cc.result.answered;
  cc.result = LoadResult();
  cc.record = true;
  return absl::OkStatus();
}

std::uint32_t RandomRun() {
  std::random_device device;
  return device();
}

// The server's report: "commands=N events=N users=N".
std::uint64_t ReportValue(const std::string& report, absl::string_view key) {
  for (absl::string_view part : absl::StrSplit(report, absl::ByAnyChar(" \n"))) {
    if (absl::ConsumePrefix(&part, key) && absl::ConsumePrefix(&part, "=")) {
      std::uint64_t value = 0;
      if (absl::SimpleAtoi(part, &value)) return value;
    }
  }
  return 0;
}

struct ServerReport {
  std::uint64_t commands = 0;
  std::uint64_t events = 0;
  std::uint64_t events_delivered = 0;
  std::uint64_t slow_consumers_closed = 0;
  std::uint64_t subscribers = 0;  // Open when the server was told to stop.
  std::string text;
};

// The server's arguments: --serve with `threads` command-server loops (0: one per core) and the
// gateway's from --gateway_threads.
std::vector<std::string> ServerArgs(int threads) {
  std::vector<std::string> args = {"--serve", absl::StrCat("--threads=", threads)};
  if (const int gateway = absl::GetFlag(FLAGS_gateway_threads); gateway >= 0) {
    args.push_back(absl::StrCat("--gateway_threads=", gateway));
  }
  if (absl::GetFlag(FLAGS_counting_sink)) args.push_back("--counting_sink");
  return args;
}

// The server's gateway threads for ServerArgs(threads).
unsigned GatewayThreads(int threads) {
  const int gateway = absl::GetFlag(FLAGS_gateway_threads);
  const int n = gateway >= 0 ? gateway : threads;
  return n > 0 ? static_cast<unsigned>(n) : std::max(1u, std::thread::hardware_concurrency());
}

// Stops the server and checks that every command answered OK appended exactly one event.
absl::StatusOr<ServerReport> StopServer(BenchChild& server, std::uint64_t ok_answers) {
  absl::StatusOr<std::string> report = server.Stop();
  if (!report.ok()) return report.status();
  ServerReport result;
  result.commands = ReportValue(*report, "commands");
  result.events = ReportValue(*report, "events");
  result.events_delivered = ReportValue(*report, "events_delivered");
  result.slow_consumers_closed = ReportValue(*report, "slow_consumers_closed");
  result.subscribers = ReportValue(*report, "subscribers");
  result.text = std::string(absl::StripTrailingAsciiWhitespace(*report));
  if (result.events != ok_answers) {
    return absl::InternalError(absl::StrCat("the server appended ", result.events, " events for ",
                                            ok_answers, " commands answered OK (", *report, ")"));
  }
  return result;
}

// --- W1 ----------------------------------------------------------------------------------------

absl::Status RunW1(bool split, int round_trips, int warmup) {
  const int server_cpu = 0;
  const int client_cpu = split ? 1 : 0;
  auto server = BenchChild::Spawn(ServerArgs(1), server_cpu);
  if (!server.ok()) return server.status();
  if (auto status = PinCallingThread(client_cpu); !status.ok()) return status;
  const std::uint32_t run = RandomRun();
  const CommandTemplate command = CommandTemplate::Make(kCommandDeadline);

  auto blocking = BlockingLink::Connect(server->port(), Peer::kServer, command, run, 1);
  if (!blocking.ok()) return blocking.status();
  LoadResult warm;
  (*blocking)->Run(1, static_cast<std::uint64_t>(std::max(warmup, 1)), CountedRunDeadline(), warm,
                   false);
  if (auto status = Failed(warm, "blocking client warm-up"); !status.ok()) return status;
  std::uint64_t ok_answers = warm.answered;

  const std::size_t request_bytes = (*blocking)->request_bytes();
  const std::size_t response_bytes = (*blocking)->last_response_bytes();
  auto echo = BenchChild::Spawn({"--echo", absl::StrCat("--request_bytes=", request_bytes),
                                 absl::StrCat("--response_bytes=", response_bytes)},
                                server_cpu);
  if (!echo.ok()) return echo.status();
  auto floor = BlockingLink::Connect(echo->port(), Peer::kFloor, command, run, 2);
  if (!floor.ok()) return floor.status();
  LoadResult floor_warm;
  (*floor)->Run(1, static_cast<std::uint64_t>(warmup), CountedRunDeadline(), floor_warm, false);
  if (auto status = Failed(floor_warm, "floor warm-up"); !status.ok()) return status;

  // The Asio floor: the same ping-pong with an Asio event loop on the server side, the client
  // side, and both (bench_asio_floor.h).
  auto asio_echo =
      BenchChild::Spawn({"--asio_echo", absl::StrCat("--request_bytes=", request_bytes),
                         absl::StrCat("--response_bytes=", response_bytes)},
                        server_cpu);
  if (!asio_echo.ok()) return asio_echo.status();
  auto to_asio_server = BlockingLink::Connect(asio_echo->port(), Peer::kFloor, command, run, 3);
  if (!to_asio_server.ok()) return to_asio_server.status();
  auto asio_to_floor = AsioPingPong::Connect(echo->port(), request_bytes, response_bytes);
  if (!asio_to_floor.ok()) return asio_to_floor.status();
  auto asio_to_asio = AsioPingPong::Connect(asio_echo->port(), request_bytes, response_bytes);
  if (!asio_to_asio.ok()) return asio_to_asio.status();
  {
    const auto warm_count = static_cast<std::uint64_t>(std::max(warmup, 1));
    LoadResult warm_asio;
    (*to_asio_server)->Run(1, warm_count, CountedRunDeadline(), warm_asio, false);
    (*asio_to_floor)->Run(warm_count, warm_asio, false);
    (*asio_to_asio)->Run(warm_count, warm_asio, false);
    if (auto status = Failed(warm_asio, "Asio floor warm-up"); !status.ok()) return status;
  }

  asio::io_context io(1);
  auto clients = MakeClients(io, server->port(), 1);
  CcSlice cc;
  if (auto status = WarmUpCommandClients(
          cc, io, clients, run, 1, static_cast<std::uint64_t>(std::max(warmup, 1)), ok_answers);
      !status.ok()) {
    return status;
  }

  LoadResult floor_result;
  LoadResult blocking_result;
  LoadResult asio_server_result;  // Blocking client, Asio server.
  LoadResult asio_client_result;  // Asio client, blocking server.
  LoadResult asio_both_result;    // Asio on both sides.
  std::uint64_t floor_cpu_ns = 0;
  std::uint64_t blocking_cpu_ns = 0;
  std::uint64_t cc_cpu_ns = 0;
  for (int slice = 0; slice < kW1Slices; ++slice) {
    const auto n = static_cast<std::uint64_t>(round_trips / kW1Slices +
                                              (slice < round_trips % kW1Slices ? 1 : 0));
    if (n == 0) continue;
    WithCpu(*echo, floor_cpu_ns, [&] { (*floor)->Run(1, n, CountedRunDeadline(), floor_result); });
    WithCpu(*server, blocking_cpu_ns,
            [&] { (*blocking)->Run(1, n, CountedRunDeadline(), blocking_result); });
    WithCpu(*server, cc_cpu_ns,
            [&] { RunCommandClients(cc, clients, 1, n, std::chrono::seconds(120)); });
    (*to_asio_server)->Run(1, n, CountedRunDeadline(), asio_server_result);
    (*asio_to_floor)->Run(n, asio_client_result);
    (*asio_to_asio)->Run(n, asio_both_result);
    if (!floor_result.error.empty() || !blocking_result.error.empty() || !cc.result.error.empty()) {
      break;
    }
  }
  CloseClients(io, clients);
  ok_answers += blocking_result.answered - blocking_result.failed;
  ok_answers += cc.result.answered - cc.result.failed;
  floor->reset();
  blocking->reset();
  to_asio_server->reset();
  asio_to_floor->reset();
  asio_to_asio->reset();
  (void)echo->Stop();
  (void)asio_echo->Stop();
  if (auto status = PinCallingThread(std::nullopt); !status.ok()) return status;
  for (auto* r : {&floor_result, &blocking_result, &cc.result}) {
    const char* what = r == &floor_result      ? "floor"
                       : r == &blocking_result ? "blocking client"
                                               : "CommandClient";
    if (auto status = Failed(*r, what); !status.ok()) return status;
  }
  for (auto* r : {&asio_server_result, &asio_client_result, &asio_both_result}) {
    if (auto status = Failed(*r, "Asio floor"); !status.ok()) return status;
  }
  auto events = StopServer(*server, ok_answers);
  if (!events.ok()) return events.status();

  const double p50 = PercentileMicros(cc.result.rtt_ns, 50);
  const double p99 = PercentileMicros(cc.result.rtt_ns, 99);
  const double p999 = PercentileMicros(cc.result.rtt_ns, 99.9);
  const double f50 = PercentileMicros(floor_result.rtt_ns, 50);
  const double f99 = PercentileMicros(floor_result.rtt_ns, 99);
  const double f999 = PercentileMicros(floor_result.rtt_ns, 99.9);
  const double b50 = PercentileMicros(blocking_result.rtt_ns, 50);
  const double b99 = PercentileMicros(blocking_result.rtt_ns, 99);
  const double b999 = PercentileMicros(blocking_result.rtt_ns, 99.9);
  const double a50 = PercentileMicros(asio_both_result.rtt_ns, 50);
  absl::PrintF(
      "W1 pin=%s rtt_p50_us=%s rtt_p99_us=%s rtt_p999_us=%s rps=%s floor_p50_us=%s "
      "floor_p99_us=%s p50_vs_floor=%s p99_vs_floor=%s floor_p999_us=%s floor_rps=%s "
      "blocking_p50_us=%s blocking_p99_us=%s blocking_p999_us=%s blocking_rps=%s "
      "blocking_p50_vs_floor=%s blocking_p99_vs_floor=%s round_trips=%d request_bytes=%zu "
      "response_bytes=%zu server_events=%llu server_cpu_us_per_cmd=%s "
      "blocking_server_cpu_us_per_cmd=%s floor_server_cpu_us_per_cmd=%s counting_sink=%d "
      "asio_server_p50_us=%s asio_client_p50_us=%s asio_floor_p50_us=%s asio_floor_p99_us=%s "
      "asio_floor_vs_floor=%s p50_vs_asio_floor=%s\n",
      split ? "split" : "same", Us(p50), Us(p99), Us(p999),
      Rate(cc.result.answered / Seconds(cc.result.busy)), Us(f50), Us(f99), Ratio(p50 / f50),
      Ratio(p99 / f99), Us(f999), Rate(floor_result.answered / Seconds(floor_result.busy)), Us(b50),
      Us(b99), Us(b999), Rate(blocking_result.answered / Seconds(blocking_result.busy)),
      Ratio(b50 / f50), Ratio(b99 / f99), round_trips, request_bytes, response_bytes,
      static_cast<unsigned long long>(events->events), CpuPerCommand(cc_cpu_ns, cc.result),
      CpuPerCommand(blocking_cpu_ns, blocking_result), CpuPerCommand(floor_cpu_ns, floor_result),
      absl::GetFlag(FLAGS_counting_sink) ? 1 : 0,
      Us(PercentileMicros(asio_server_result.rtt_ns, 50)),
      Us(PercentileMicros(asio_client_result.rtt_ns, 50)), Us(a50),
      Us(PercentileMicros(asio_both_result.rtt_ns, 99)), Ratio(a50 / f50), Ratio(p50 / a50));
  std::fflush(stdout);
  return absl::OkStatus();
}

// --- W2 ----------------------------------------------------------------------------------------

// Runs every link in its own thread, `window` in flight, until `deadline`.
LoadResult RunLinks(std::vector<std::unique_ptr<BlockingLink>>& links, std::size_t window,
                    std::uint64_t max_commands, Clock::time_point deadline, bool record) {
  std::vector<LoadResult> results(links.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < links.size(); ++i) {
    if (record) results[i].rtt_ns.reserve(1 << 20);
    threads.emplace_back(
        [&, i] { links[i]->Run(window, max_commands, deadline, results[i], record); });
  }
  for (auto& thread : threads) thread.join();
  LoadResult merged;
  for (auto& result : results) merged.Merge(std::move(result));
  return merged;
}

// kW2Connections blocking links to `port`, numbered from 1.
absl::StatusOr<std::vector<std::unique_ptr<BlockingLink>>> ConnectLinks(
    std::uint16_t port, Peer peer, const CommandTemplate& command, std::uint32_t run) {
  std::vector<std::unique_ptr<BlockingLink>> links;
  for (std::size_t i = 0; i < kW2Connections; ++i) {
    auto link = BlockingLink::Connect(port, peer, command, run, static_cast<std::uint16_t>(i + 1));
    if (!link.ok()) return link.status();
    links.push_back(*std::move(link));
  }
  return links;
}

absl::Status RunW2(int duration_s, int warmup, bool with_command_client) {
  const int server_threads = std::max(0, absl::GetFlag(FLAGS_w2_server_threads));
  auto server = BenchChild::Spawn(ServerArgs(server_threads), std::nullopt);
  if (!server.ok()) return server.status();
  if (auto status = PinCallingThread(std::nullopt); !status.ok()) return status;
  const std::uint32_t run = RandomRun();
  const CommandTemplate command = CommandTemplate::Make(kCommandDeadline);
  const auto warm_commands = static_cast<std::uint64_t>(std::max(warmup, 1));

  auto connected = ConnectLinks(server->port(), Peer::kServer, command, run);
  if (!connected.ok()) return connected.status();
  std::vector<std::unique_ptr<BlockingLink>> blocking = *std::move(connected);
  LoadResult warm = RunLinks(blocking, kW2InFlight, warm_commands, CountedRunDeadline(), false);
  if (auto status = Failed(warm, "blocking client warm-up"); !status.ok()) return status;
  std::uint64_t ok_answers = warm.answered;

  const std::size_t request_bytes = blocking[0]->request_bytes();
  const std::size_t response_bytes = blocking[0]->last_response_bytes();
  auto echo = BenchChild::Spawn({"--echo", absl::StrCat("--request_bytes=", request_bytes),
                                 absl::StrCat("--response_bytes=", response_bytes)},
                                std::nullopt);
  if (!echo.ok()) return echo.status();
  auto floor_connected = ConnectLinks(echo->port(), Peer::kFloor, command, run);
  if (!floor_connected.ok()) return floor_connected.status();
  std::vector<std::unique_ptr<BlockingLink>> floor = *std::move(floor_connected);
  LoadResult floor_warm = RunLinks(floor, kW2InFlight, warm_commands, CountedRunDeadline(), false);
  if (auto status = Failed(floor_warm, "floor warm-up"); !status.ok()) return status;

  asio::io_context io(1);
  auto clients = MakeClients(io, server->port(), with_command_client ? kW2Connections : 0);
  CcSlice cc;
  if (auto status =
          WarmUpCommandClients(cc, io, clients, run, kW2InFlight,
                               std::max<std::uint64_t>(1, warm_commands / kW2InFlight), ok_answers);
      !status.ok()) {
    return status;
  }

  // 1-second slices, interleaved.
  const int slices = duration_s;
  const auto slice_length = std::chrono::seconds(1);
  LoadResult floor_result;
  LoadResult blocking_result;
  std::uint64_t floor_cpu_ns = 0;
  std::uint64_t blocking_cpu_ns = 0;
  std::uint64_t cc_cpu_ns = 0;
  for (int slice = 0; slice < slices; ++slice) {
    WithCpu(*echo, floor_cpu_ns, [&] {
      floor_result.Merge(
          RunLinks(floor, kW2InFlight, kUnlimited, Clock::now() + slice_length, true));
    });
    WithCpu(*server, blocking_cpu_ns, [&] {
      blocking_result.Merge(
          RunLinks(blocking, kW2InFlight, kUnlimited, Clock::now() + slice_length, true));
    });
    if (with_command_client) {
      WithCpu(*server, cc_cpu_ns, [&] {
        cc.deadline = Clock::now() + slice_length;
        RunCommandClients(cc, clients, kW2InFlight, kUnlimited, std::chrono::seconds(30));
      });
    }
    if (!floor_result.error.empty() || !blocking_result.error.empty() || !cc.result.error.empty()) {
      break;
    }
  }
  CloseClients(io, clients);
  ok_answers += blocking_result.answered - blocking_result.failed;
  ok_answers += cc.result.answered - cc.result.failed;
  floor.clear();
  blocking.clear();
  (void)echo->Stop();
  for (auto* r : {&floor_result, &blocking_result, &cc.result}) {
    const char* what = r == &floor_result      ? "floor"
                       : r == &blocking_result ? "blocking client"
                                               : "CommandClient";
    if (auto status = Failed(*r, what); !status.ok()) return status;
  }
  auto events = StopServer(*server, ok_answers);
  if (!events.ok()) return events.status();

  const double measured = Seconds(slice_length) * slices;
  const double rps = blocking_result.in_time / measured;
  const double floor_rps = floor_result.in_time / measured;
  std::string line = absl::StrCat(
      "W2 rps=", Rate(rps), " rtt_p50_us=", Us(PercentileMicros(blocking_result.rtt_ns, 50)),
      " rtt_p99_us=", Us(PercentileMicros(blocking_result.rtt_ns, 99)),
      " floor_rps=", Rate(floor_rps), " rps_vs_floor=", Ratio(rps / floor_rps),
      " rtt_p999_us=", Us(PercentileMicros(blocking_result.rtt_ns, 99.9)),
      " floor_rtt_p50_us=", Us(PercentileMicros(floor_result.rtt_ns, 50)),
      " floor_rtt_p99_us=", Us(PercentileMicros(floor_result.rtt_ns, 99)));
  if (with_command_client) {
    const double cc_rps = cc.result.in_time / measured;
    absl::StrAppend(&line, " cc_rps=", Rate(cc_rps),
                    " cc_rtt_p50_us=", Us(PercentileMicros(cc.result.rtt_ns, 50)),
                    " cc_rtt_p99_us=", Us(PercentileMicros(cc.result.rtt_ns, 99)),
                    " cc_rps_vs_floor=", Ratio(cc_rps / floor_rps));
  }
  absl::StrAppend(&line, " connections=", kW2Connections, " in_flight=", kW2InFlight,
                  " server_threads=",
                  server_threads > 0 ? static_cast<unsigned>(server_threads)
                                     : std::max(1u, std::thread::hardware_concurrency()),
                  " gateway_threads=", GatewayThreads(server_threads),
                  " counting_sink=", absl::GetFlag(FLAGS_counting_sink) ? 1 : 0,
                  " seconds=", slices, " request_bytes=", request_bytes,
                  " response_bytes=", response_bytes, " server_events=", events->events,
                  " server_cpu_us_per_cmd=", CpuPerCommand(blocking_cpu_ns, blocking_result));
  if (with_command_client) {
    absl::StrAppend(&line, " cc_server_cpu_us_per_cmd=", CpuPerCommand(cc_cpu_ns, cc.result));
  }
  absl::StrAppend(&line, " floor_server_cpu_us_per_cmd=", CpuPerCommand(floor_cpu_ns, floor_result),
                  "\n");
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  return absl::OkStatus();
}

// --- W3 ----------------------------------------------------------------------------------------

// Latencies in nanoseconds, log-linear: exact below 512 ns, then 256 buckets per power of two
// (under 0.4 % apart). Fixed size, no allocation per value.
class Histogram {
 public:
  Histogram() : counts_(kBuckets, 0) {}

  void Add(std::uint64_t ns) {
    ++counts_[Bucket(ns)];
    ++total_;
  }
  void Merge(const Histogram& other) {
    for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  std::uint64_t total() const { return total_; }
  // Percentile `p` (0..100), in microseconds: the middle of its bucket.
  double PercentileMicros(double p) const {
    if (total_ == 0) return 0;
    const auto rank = std::clamp<std::uint64_t>(
        static_cast<std::uint64_t>(std::ceil(p / 100.0 * static_cast<double>(total_))), 1, total_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank) return (Lower(i) + Lower(i + 1)) / 2.0 / 1000.0;
    }
    return 0;
  }

 private:
  static constexpr std::size_t kExact = 512;
  static constexpr std::size_t kPerOctave = 256;
  static constexpr std::size_t kBuckets = kExact + (64 - 9) * kPerOctave;

  static std::size_t Bucket(std::uint64_t ns) {
    if (ns < kExact) return static_cast<std::size_t>(ns);
    const int octave = std::bit_width(ns) - 1;  // >= 9
    return kExact + static_cast<std::size_t>(octave - 9) * kPerOctave +
           static_cast<std::size_t>((ns >> (octave - 8)) & (kPerOctave - 1));
  }
  static double Lower(std::size_t bucket) {
    if (bucket < kExact) return static_cast<double>(bucket);
    const std::size_t octave = (bucket - kExact) / kPerOctave + 9;
    const std::size_t sub = (bucket - kExact) % kPerOctave;
    return std::ldexp(static_cast<double>(kPerOctave + sub), static_cast<int>(octave) - 8);
  }

  std::vector<std::uint64_t> counts_;
  std::uint64_t total_ = 0;
};

constexpr int kW3Phases = 3;  // 0: warm-up (not reported), 1: paced, 2: max.

// What the subscribers received in one phase, on one reading thread (or merged).
struct W3Phase {
  Histogram latency;  // From the command's send to the event's read, per delivery.
  std::uint64_t deliveries = 0;
  std::uint64_t duplicated = 0;
  std::uint64_t unmatched = 0;  // No offset, or no send time for its causation id.
  std::uint64_t closed = 0;     // Subscribers the gateway closed.
  std::int64_t last_ns = 0;

  void Merge(const W3Phase& other) {
    latency.Merge(other.latency);
    closed += other.closed;
    deliveries += other.deliveries;
    duplicated += other.duplicated;
    unmatched += other.unmatched;
    last_ns = std::max(last_ns, other.last_ns);
  }
};

// Per delivery: a bit per (subscriber, offset) for duplicates and losses, and the latency from
// the send time of the command named by the event's causation id. Each subscriber's state is
// written only by its reading thread; the main thread reads `highest` and `closed` while they
// run and everything else after WsSubscribers::Stop.
class W3Tracker : public EventObserver {
 public:
  W3Tracker(std::size_t subscribers, unsigned threads, const SendTimes& times)
      : subscribers_(subscribers), threads_(threads), times_(times) {}

  void OnEvent(unsigned thread, std::size_t subscriber, std::uint64_t offset,
               std::string_view causation_id, std::int64_t now_ns) override {
    PerThread& t = threads_[thread];
    W3Phase& phase = t.phases[phase_.load(std::memory_order_relaxed)];
    Subscriber& s = subscribers_[subscriber];
    if (offset == 0) {
      ++phase.unmatched;
      return;
    }
    const std::size_t word = offset / 64;
    if (word >= s.bits.size()) s.bits.resize(std::max<std::size_t>(word + 1, s.bits.size() * 2));
    const std::uint64_t bit = std::uint64_t{1} << (offset % 64);
    if ((s.bits[word] & bit) != 0) {
      ++phase.duplicated;
      return;
    }
    s.bits[word] |= bit;
    if (offset > s.highest.load(std::memory_order_relaxed)) {
      s.highest.store(offset, std::memory_order_relaxed);
    }
    ++phase.deliveries;
    phase.last_ns = now_ns;
    std::uint16_t stream = 0;
    std::uint64_t sequence = 0;
    const std::int64_t sent = StreamOf(causation_id, &stream) && SequenceOf(causation_id, &sequence)
                                  ? times_.Get(stream, sequence)
                                  : 0;
    if (sent == 0 || sent > now_ns) {
      ++phase.unmatched;
      return;
    }
    phase.latency.Add(static_cast<std::uint64_t>(now_ns - sent));
  }

  void OnClosed(unsigned thread, std::size_t subscriber) override {
    ++threads_[thread].phases[phase_.load(std::memory_order_relaxed)].closed;
    subscribers_[subscriber].closed.store(true, std::memory_order_relaxed);
  }

  // Only between phases (nothing in flight).
  void SetPhase(int phase) { phase_.store(phase, std::memory_order_relaxed); }

  // Waits until every open subscriber has received offset `target`, at most `limit`. Returns
  // whether they all did.
  bool WaitFor(std::uint64_t target, Clock::duration limit) const {
    const auto until = Clock::now() + limit;
    for (;;) {
      const bool done = std::all_of(subscribers_.begin(), subscribers_.end(), [&](const auto& s) {
        return s.closed.load(std::memory_order_relaxed) ||
               s.highest.load(std::memory_order_relaxed) >= target;
      });
      if (done) return true;
      if (Clock::now() >= until) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  // After the readers stopped.
  W3Phase Phase(int phase) const {
    W3Phase merged;
    for (const PerThread& t : threads_) merged.Merge(t.phases[phase]);
    return merged;
  }
  // Deliveries missing: (subscriber, offset) pairs with the offset in `acked` never received.
  std::uint64_t Lost(const std::vector<std::uint64_t>& acked) const {
    std::uint64_t lost = 0;
    for (const Subscriber& s : subscribers_) {
      for (std::uint64_t offset : acked) {
        const std::size_t word = offset / 64;
        if (word >= s.bits.size() || (s.bits[word] & (std::uint64_t{1} << (offset % 64))) == 0) {
          ++lost;
        }
      }
    }
    return lost;
  }

 private:
  struct alignas(64) Subscriber {
    std::vector<std::uint64_t> bits;  // Offsets received.
    std::atomic<std::uint64_t> highest{0};
    std::atomic<bool> closed{false};
  };
  struct alignas(64) PerThread {
    std::array<W3Phase, kW3Phases> phases;
  };

  std::vector<Subscriber> subscribers_;
  std::vector<PerThread> threads_;
  const SendTimes& times_;
  std::atomic<int> phase_{0};
};

constexpr std::size_t kW3MaxConnections = 4;
// Streams: 1..4 the max-mode links (warm-up too), 5 the paced link.
constexpr std::uint16_t kW3PacedStream = 5;
constexpr std::size_t kW3Streams = 6;
// Commands per stream the send-time table holds (and a link may send): 8 MiB per stream.
constexpr std::size_t kW3PerStream = std::size_t{1} << 20;

std::string W3Line(const char* mode, const W3Phase& phase, std::uint64_t lost,
                   std::int64_t start_ns, std::size_t subscribers) {
  const double seconds =
      phase.last_ns > start_ns ? static_cast<double>(phase.last_ns - start_ns) / 1e9 : 0;
  return absl::StrCat(
      "W3 mode=", mode, " subscribers=", subscribers,
      " deliveries_per_s=", Rate(seconds > 0 ? static_cast<double>(phase.deliveries) / seconds : 0),
      " e2e_p50_us=", Us(phase.latency.PercentileMicros(50)),
      " e2e_p99_us=", Us(phase.latency.PercentileMicros(99)), " lost=", lost,
      " duplicated=", phase.duplicated, " e2e_p999_us=", Us(phase.latency.PercentileMicros(99.9)),
      " e2e_max_us=", Us(phase.latency.PercentileMicros(100)), " deliveries=", phase.deliveries,
      " unmatched=", phase.unmatched, " closed=", phase.closed);
}

// CPU time this process's threads have used so far, in ns.
std::uint64_t ClientCpuNanos() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<std::uint64_t>(t.tv_sec) * 1'000'000'000 +
         static_cast<std::uint64_t>(t.tv_nsec);
}

// Server and client CPU over a phase: cores busy on average, and per delivery.
std::string CpuKeys(std::uint64_t server_ns, std::uint64_t client_ns, double seconds,
                    std::uint64_t deliveries) {
  const double d = static_cast<double>(std::max<std::uint64_t>(deliveries, 1));
  return absl::StrFormat(
      " server_cpus=%.2f client_cpus=%.2f server_cpu_us_per_delivery=%.2f "
      "client_cpu_us_per_delivery=%.2f",
      server_ns / 1e9 / seconds, client_ns / 1e9 / seconds, server_ns / 1e3 / d,
      client_ns / 1e3 / d);
}

absl::Status RunW3(int duration_s, int warmup) {
  const auto subscriber_count = static_cast<std::size_t>(absl::GetFlag(FLAGS_w3_subscribers));
  const int rate = absl::GetFlag(FLAGS_w3_rate);
  const auto reader_threads =
      static_cast<unsigned>(std::max(1, absl::GetFlag(FLAGS_subscriber_threads)));
  if (static_cast<std::uint64_t>(rate) * static_cast<std::uint64_t>(duration_s) >= kW3PerStream) {
    return absl::InvalidArgumentError(
        absl::StrCat("W3: --w3_rate x --duration must stay below ", kW3PerStream, " commands"));
  }
  auto server = BenchChild::Spawn(ServerArgs(0), std::nullopt);
  if (!server.ok()) return server.status();
  const std::uint32_t run = RandomRun();
  const CommandTemplate command = CommandTemplate::Make(kCommandDeadline);
  SendTimes times(kW3Streams, kW3PerStream);

  // Outlives `subscribers`, whose reading threads report to it until they are stopped.
  W3Tracker tracker(subscriber_count, reader_threads, times);
  WsSubscribers subscribers;
  const auto connect_start = Clock::now();
  if (auto status = subscribers.Connect({.port = server->gateway_port(), .count = subscriber_count},
                                        Clock::now() + std::chrono::seconds(30));
      !status.ok()) {
    return status;
  }
  const double connect_s = Seconds(Clock::now() - connect_start);
  subscribers.Start(reader_threads, &tracker);

  std::vector<std::unique_ptr<BlockingLink>> links;
  for (std::size_t i = 0; i < kW3MaxConnections; ++i) {
    auto link = BlockingLink::Connect(server->port(), Peer::kServer, command, run,
                                      static_cast<std::uint16_t>(i + 1));
    if (!link.ok()) return link.status();
    (*link)->TrackEvents(&times);
    links.push_back(*std::move(link));
  }
  auto paced = BlockingLink::Connect(server->port(), Peer::kServer, command, run, kW3PacedStream);
  if (!paced.ok()) return paced.status();
  (*paced)->TrackEvents(&times);

  const auto highest = [](const std::vector<std::uint64_t>& offsets) {
    return offsets.empty() ? std::uint64_t{0} : *std::max_element(offsets.begin(), offsets.end());
  };
  // Phase 0: warm-up, everything flows once; not reported.
  LoadResult warm = RunLinks(links, kW2InFlight, static_cast<std::uint64_t>(std::max(warmup, 1)),
                             CountedRunDeadline(), false);
  if (auto status = Failed(warm, "W3 warm-up"); !status.ok()) return status;
  std::uint64_t ok_answers = warm.answered;
  if (!tracker.WaitFor(highest(warm.event_offsets), std::chrono::seconds(10))) {
    return absl::DeadlineExceededError(
        "W3 warm-up: the subscribers did not receive every event within 10 s");
  }

  // Phase 1: paced, open loop.
  tracker.SetPhase(1);
  LoadResult paced_result;
  const std::uint64_t paced_server_cpu = server->CpuNanos();
  const std::uint64_t paced_client_cpu = ClientCpuNanos();
  const std::int64_t paced_start = NowNs();
  (*paced)->RunPaced(rate,
                     static_cast<std::uint64_t>(rate) * static_cast<std::uint64_t>(duration_s),
                     paced_result);
  if (auto status = Failed(paced_result, "W3 mode=paced"); !status.ok()) return status;
  ok_answers += paced_result.answered;
  const auto paced_sent_ns = NowNs();
  const bool paced_drained =
      tracker.WaitFor(highest(paced_result.event_offsets), std::chrono::seconds(10));
  const double paced_drain_ms = static_cast<double>(NowNs() - paced_sent_ns) / 1e6;
  const double paced_seconds = static_cast<double>(NowNs() - paced_start) / 1e9;
  const std::uint64_t paced_server_ns = server->CpuNanos() - paced_server_cpu;
  const std::uint64_t paced_client_ns = ClientCpuNanos() - paced_client_cpu;

  // Phase 2: as fast as the server takes them, pipelined.
  tracker.SetPhase(2);
  const std::uint64_t max_server_cpu = server->CpuNanos();
  const std::uint64_t max_client_cpu = ClientCpuNanos();
  const std::int64_t max_start = NowNs();
  std::uint64_t cap = kW3PerStream;
  for (const auto& link : links) cap = std::min(cap, kW3PerStream - link->sent());
  LoadResult max_result =
      RunLinks(links, kW2InFlight, cap, Clock::now() + std::chrono::seconds(duration_s), false);
  const double max_cmd_s = static_cast<double>(NowNs() - max_start) / 1e9;
  if (auto status = Failed(max_result, "W3 mode=max"); !status.ok()) return status;
  ok_answers += max_result.answered;
  const auto max_sent_ns = NowNs();
  const bool max_drained =
      tracker.WaitFor(highest(max_result.event_offsets), std::chrono::seconds(60));
  const double max_drain_ms = static_cast<double>(NowNs() - max_sent_ns) / 1e6;
  const double max_seconds = static_cast<double>(NowNs() - max_start) / 1e9;
  const std::uint64_t max_server_ns = server->CpuNanos() - max_server_cpu;
  const std::uint64_t max_client_ns = ClientCpuNanos() - max_client_cpu;

  subscribers.Stop();
  const std::size_t closed = subscribers.closed();
  const std::string first_close = subscribers.first_close();
  const unsigned gateway_threads = GatewayThreads(0);
  links.clear();
  paced->reset();
  const W3Phase paced_phase = tracker.Phase(1);
  const W3Phase max_phase = tracker.Phase(2);
  const std::uint64_t paced_lost = tracker.Lost(paced_result.event_offsets);
  const std::uint64_t max_lost = tracker.Lost(max_result.event_offsets);
  const std::uint64_t rss_kib = server->StatusKiB("VmHWM");
  subscribers.Close();
  auto report = StopServer(*server, ok_answers);
  if (!report.ok()) return report.status();

  const std::string common =
      absl::StrCat(" subscriber_threads=", reader_threads, " gateway_threads=", gateway_threads,
                   " connect_s=", absl::StrFormat("%.3f", connect_s),
                   " server_events_delivered=", report->events_delivered,
                   " server_slow_consumers_closed=", report->slow_consumers_closed,
                   " server_peak_rss_mib=", absl::StrFormat("%.1f", rss_kib / 1024.0));
  std::string lines = absl::StrCat(
      W3Line("paced", paced_phase, paced_lost, paced_start, subscriber_count), " rate=", rate,
      " commands=", paced_result.answered, " drained=", paced_drained ? 1 : 0,
      " drain_ms=", absl::StrFormat("%.1f", paced_drain_ms),
      // Subscribers closed during the warm-up miss the paced events too: their loss shows in
      // the paced line's lost= while its closed= is 0.
      " warmup_closed=", tracker.Phase(0).closed,
      CpuKeys(paced_server_ns, paced_client_ns, paced_seconds, paced_phase.deliveries), common,
      "\n");
  // The required key order puts rate= right after mode=paced.
  absl::StrReplaceAll(
      {{"mode=paced subscribers=", absl::StrCat("mode=paced rate=", rate, " subscribers=")}},
      &lines);
  absl::StrAppend(
      &lines, W3Line("max", max_phase, max_lost, max_start, subscriber_count),
      " commands=", max_result.answered,
      " cmd_rps=", Rate(static_cast<double>(max_result.answered) / max_cmd_s),
      " drained=", max_drained ? 1 : 0, " drain_ms=", absl::StrFormat("%.1f", max_drain_ms),
      CpuKeys(max_server_ns, max_client_ns, max_seconds, max_phase.deliveries), common, "\n");
  std::fputs(lines.c_str(), stdout);
  std::fflush(stdout);
  if (closed > 0) {
    std::fprintf(stderr, "cqrs_bench: W3: the gateway closed %zu subscribers; the first: %s\n",
                 closed, first_close.c_str());
  }
  return absl::OkStatus();
}

// --- W4 ----------------------------------------------------------------------------------------

absl::Status RunW4() {
  const auto count = static_cast<std::size_t>(absl::GetFlag(FLAGS_w4_subscribers));
  const std::uint64_t files = RaiseFileLimit();
  if (files < count + 64) {
    return absl::FailedPreconditionError(absl::StrCat(
        "W4 needs ", count + 64, " open files; the limit is ", files, " (ulimit -Hn)"));
  }
  auto server = BenchChild::Spawn(ServerArgs(0), std::nullopt);
  if (!server.ok()) return server.status();
  // Ephemeral ports: one source address offers EphemeralPorts() towards the gateway's port;
  // spread over more when that is less than twice what is needed.
  const std::size_t ports = EphemeralPorts();
  const int sources = static_cast<int>(std::min<std::size_t>(250, (2 * count) / ports + 1));
  const std::uint64_t rss_before = server->StatusKiB("VmRSS");
  WsSubscribers subscribers;
  const auto start = Clock::now();
  if (auto status = subscribers.Connect({.port = server->gateway_port(),
                                         .count = count,
                                         .max_handshakes = 200,
                                         .source_addresses = sources},
                                        Clock::now() + std::chrono::seconds(120));
      !status.ok()) {
    return status;
  }
  const double connect_s = Seconds(Clock::now() - start);
  const std::uint64_t rss_after = server->StatusKiB("VmRSS");
  const std::uint64_t peak = server->StatusKiB("VmHWM");
  // The server first: its report counts the subscribers still open.
  auto report = StopServer(*server, 0);
  subscribers.Close();
  if (!report.ok()) return report.status();
  if (report->subscribers != count) {
    return absl::InternalError(absl::StrCat("the gateway had ", report->subscribers,
                                            " subscribers open, not ", count, " (", report->text,
                                            ")"));
  }
  const double per = (static_cast<double>(rss_after) - static_cast<double>(rss_before)) /
                     static_cast<double>(count);
  std::string line =
      absl::StrCat("W4 subscribers=", count, " kib_per_subscriber=", absl::StrFormat("%.2f", per),
                   " connect_s=", absl::StrFormat("%.3f", connect_s),
                   " connects_per_s=", Rate(static_cast<double>(count) / connect_s),
                   " rss_before_kib=", rss_before, " rss_after_kib=", rss_after,
                   " peak_rss_kib=", peak, " source_addresses=", sources, "\n");
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  return absl::OkStatus();
}

// --- W5 ----------------------------------------------------------------------------------------

constexpr std::size_t kW5Stalled = 10;
// The stalled subscribers' receive buffer (the kernel doubles it, and enforces a minimum).
constexpr int kW5ReceiveBuffer = 4096;

absl::Status RunW5(int duration_s, int warmup) {
  // Two servers of the same kind, the second with the stalled subscribers; their 1-second slices
  // interleave so that the machine's noise hits both alike.
  auto plain = BenchChild::Spawn(ServerArgs(0), std::nullopt);
  if (!plain.ok()) return plain.status();
  auto stalled = BenchChild::Spawn(ServerArgs(0), std::nullopt);
  if (!stalled.ok()) return stalled.status();
  const std::uint32_t run = RandomRun();
  const CommandTemplate command = CommandTemplate::Make(kCommandDeadline);
  const auto warm_commands = static_cast<std::uint64_t>(std::max(warmup, 1));

  auto plain_links = ConnectLinks(plain->port(), Peer::kServer, command, run);
  if (!plain_links.ok()) return plain_links.status();
  auto stalled_links = ConnectLinks(stalled->port(), Peer::kServer, command, run);
  if (!stalled_links.ok()) return stalled_links.status();
  std::uint64_t plain_ok = 0;
  std::uint64_t stalled_ok = 0;
  for (auto [links, ok] : {std::pair{&*plain_links, &plain_ok}, {&*stalled_links, &stalled_ok}}) {
    LoadResult warm = RunLinks(*links, kW2InFlight, warm_commands, CountedRunDeadline(), false);
    if (auto status = Failed(warm, "W5 warm-up"); !status.ok()) return status;
    *ok += warm.answered;
  }

  // Subscribe, read `subscribed`, then never read again.
  WsSubscribers subscribers;
  if (auto status = subscribers.Connect({.port = stalled->gateway_port(),
                                         .count = kW5Stalled,
                                         .receive_buffer = kW5ReceiveBuffer},
                                        Clock::now() + std::chrono::seconds(30));
      !status.ok()) {
    return status;
  }

  LoadResult plain_result;
  LoadResult stalled_result;
  const auto slice = std::chrono::seconds(1);
  // Which server goes first alternates, so that neither always follows the other's slice.
  for (int i = 0; i < duration_s; ++i) {
    for (int turn = 0; turn < 2; ++turn) {
      if ((turn == 0) == (i % 2 == 0)) {
        plain_result.Merge(
            RunLinks(*plain_links, kW2InFlight, kUnlimited, Clock::now() + slice, true));
      } else {
        stalled_result.Merge(
            RunLinks(*stalled_links, kW2InFlight, kUnlimited, Clock::now() + slice, true));
      }
    }
    if (!plain_result.error.empty() || !stalled_result.error.empty()) break;
  }
  plain_links->clear();
  stalled_links->clear();
  if (auto status = Failed(plain_result, "W5 without subscribers"); !status.ok()) return status;
  if (auto status = Failed(stalled_result, "W5 with stalled subscribers"); !status.ok()) {
    return status;
  }
  plain_ok += plain_result.answered;
  stalled_ok += stalled_result.answered;
  const std::uint64_t plain_peak = plain->StatusKiB("VmHWM");
  const std::uint64_t stalled_peak = stalled->StatusKiB("VmHWM");
  subscribers.Close();
  auto plain_report = StopServer(*plain, plain_ok);
  if (!plain_report.ok()) return plain_report.status();
  auto stalled_report = StopServer(*stalled, stalled_ok);
  if (!stalled_report.ok()) return stalled_report.status();

  const double measured = Seconds(slice) * duration_s;
  const double rps = static_cast<double>(stalled_result.in_time) / measured;
  const double w2_rps = static_cast<double>(plain_result.in_time) / measured;
  std::string line = absl::StrCat(
      "W5 stalled=", kW5Stalled, " rps=", Rate(rps), " rps_vs_w2=", Ratio(rps / w2_rps),
      " peak_rss_mib=", absl::StrFormat("%.1f", stalled_peak / 1024.0), " w2_rps=", Rate(w2_rps),
      " w2_peak_rss_mib=", absl::StrFormat("%.1f", plain_peak / 1024.0),
      " rtt_p50_us=", Us(PercentileMicros(stalled_result.rtt_ns, 50)),
      " rtt_p99_us=", Us(PercentileMicros(stalled_result.rtt_ns, 99)),
      " w2_rtt_p50_us=", Us(PercentileMicros(plain_result.rtt_ns, 50)),
      " w2_rtt_p99_us=", Us(PercentileMicros(plain_result.rtt_ns, 99)),
      " slow_consumers_closed=", stalled_report->slow_consumers_closed,
      " stalled_open_at_end=", stalled_report->subscribers, " seconds=", duration_s, "\n");
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
  return absl::OkStatus();
}

// Accepts --round-trips for --round_trips (flag names with dashes).
void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (std::strncmp(arg, "--", 2) != 0 || arg[2] == '\0') continue;
    for (char* c = arg + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

int Main(int argc, char** argv) {
  NormalizeFlagNames(argc, argv);
  absl::SetProgramUsageMessage(
      "Whole-system benchmark of cqrs-cpp over loopback (WORKLOADS.md).\n"
      "  cqrs_bench [--workload=W1|W2|W3|W4|W5|all] [--duration=5] [--round_trips=20000] "
      "[--warmup=1000]");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "cqrs_bench: unexpected argument '%s' (see --help)\n", positional[1]);
    return 2;
  }
  std::signal(SIGPIPE, SIG_IGN);
  RaiseFileLimit();
  if (absl::GetFlag(FLAGS_serve)) {
    const int fd = absl::GetFlag(FLAGS_port_fd);
    const int threads = std::max(0, absl::GetFlag(FLAGS_threads));
    const int gateway_threads = absl::GetFlag(FLAGS_gateway_threads);
    return ServeMain(static_cast<unsigned>(threads),
                     static_cast<unsigned>(gateway_threads < 0 ? threads : gateway_threads),
                     absl::GetFlag(FLAGS_counting_sink), fd < 0 ? 1 : fd);
  }
  if (absl::GetFlag(FLAGS_asio_echo)) {
    const int fd = absl::GetFlag(FLAGS_port_fd);
    return AsioEchoMain(static_cast<std::size_t>(std::max(0, absl::GetFlag(FLAGS_request_bytes))),
                        static_cast<std::size_t>(std::max(0, absl::GetFlag(FLAGS_response_bytes))),
                        fd < 0 ? 1 : fd);
  }
  if (absl::GetFlag(FLAGS_echo)) {
    const int fd = absl::GetFlag(FLAGS_port_fd);
    return EchoMain(static_cast<std::size_t>(std::max(0, absl::GetFlag(FLAGS_request_bytes))),
                    static_cast<std::size_t>(std::max(0, absl::GetFlag(FLAGS_response_bytes))),
                    fd < 0 ? 1 : fd);
  }

  const int duration = absl::GetFlag(FLAGS_duration);
  const int round_trips = absl::GetFlag(FLAGS_round_trips);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  if (duration < 1 || duration > 600) {
    std::fprintf(stderr, "cqrs_bench: --duration=%d must be 1..600 seconds\n", duration);
    return 2;
  }
  if (round_trips < 1 || round_trips > 10'000'000) {
    std::fprintf(stderr, "cqrs_bench: --round_trips=%d must be 1..10000000\n", round_trips);
    return 2;
  }
  if (warmup < 0 || warmup > 1'000'000) {
    std::fprintf(stderr, "cqrs_bench: --warmup=%d must be 0..1000000\n", warmup);
    return 2;
  }
  const int w3_subscribers = absl::GetFlag(FLAGS_w3_subscribers);
  const int w3_rate = absl::GetFlag(FLAGS_w3_rate);
  const int w4_subscribers = absl::GetFlag(FLAGS_w4_subscribers);
  if (w3_subscribers < 1 || w3_subscribers > 10'000 || w3_rate < 1 || w3_rate > 1'000'000 ||
      w4_subscribers < 1 || w4_subscribers > 100'000) {
    std::fprintf(stderr,
                 "cqrs_bench: --w3_subscribers must be 1..10000, --w3_rate 1..1000000, "
                 "--w4_subscribers 1..100000\n");
    return 2;
  }
  const std::string workload = absl::GetFlag(FLAGS_workload);
  if (absl::GetFlag(FLAGS_counting_sink) && workload != "W1" && workload != "W2") {
    std::fprintf(stderr, "cqrs_bench: --counting_sink is for W1 and W2 (W3-W5 need events)\n");
    return 2;
  }
  const bool all = workload == "all";
  const bool run_w1 = all || workload == "W1";
  const bool run_w2 = all || workload == "W2";
  const bool run_w3 = all || workload == "W3";
  const bool run_w4 = all || workload == "W4";
  const bool run_w5 = all || workload == "W5";
  if (!(run_w1 || run_w2 || run_w3 || run_w4 || run_w5)) {
    std::fprintf(stderr, "cqrs_bench: unknown --workload=%s (W1, W2, W3, W4, W5 or all)\n",
                 workload.c_str());
    return 2;
  }

  int exit_code = 0;
  const auto report = [&exit_code](absl::string_view what, const absl::Status& status) {
    if (status.ok()) return;
    std::fprintf(stderr, "cqrs_bench: %.*s failed: %s\n", static_cast<int>(what.size()),
                 what.data(), status.ToString().c_str());
    exit_code = 1;
  };
  if (run_w1) {
    report("W1 pin=split", RunW1(/*split=*/true, round_trips, warmup));
    report("W1 pin=same", RunW1(/*split=*/false, round_trips, warmup));
  }
  if (run_w2) report("W2", RunW2(duration, warmup, absl::GetFlag(FLAGS_w2_command_client)));
  if (run_w3) report("W3", RunW3(duration, warmup));
  if (run_w4) report("W4", RunW4());
  if (run_w5) report("W5", RunW5(duration, warmup));
  return exit_code;
}

}  // namespace
}  // namespace cqrs::bench

int main(int argc, char** argv) { return cqrs::bench::Main(argc, argv); }
