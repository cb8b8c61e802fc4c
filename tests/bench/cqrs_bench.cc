// cqrs_bench: the whole-system workloads of /work/shared/WORKLOADS.md over loopback, against a
// real server process (this program re-executed with --serve), each next to its floor measured
// in the same run (this program re-executed with --echo: a blocking-socket echo server answering
// fixed-size frames).
//
//   cmake --preset release && cmake --build --preset release --target cqrs_bench
//   build/release/tests/bench/cqrs_bench --workload W1      # or W2, or all (the default)
//
// Output: one line per workload run, `Wn key=value ...` (plain numbers); diagnostics on stderr.
// Exit code 0 when everything ran, 1 when a run failed, 2 for a usage error or a workload that
// is not implemented yet (W3-W5 need the event gateway).
//
// Method: the clients of one workload are interleaved in slices (floor, blocking client,
// CommandClient, again ...) so that the machine's background noise hits them alike.

#include <signal.h>

#include <algorithm>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench_link.h"
#include "bench_process.h"
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
ABSL_FLAG(bool, w2_command_client, true,
          "W2: also measure the CommandClient (the cc_* keys); false for shorter runs and for "
          "profiling the server under the blocking client alone.");
ABSL_FLAG(bool, serve, false,
          "Internal: run the command server (user-service handlers, counting event sink) on "
          "127.0.0.1, port 0; print port=N to --port_fd (default stdout); stop on SIGTERM.");
ABSL_FLAG(bool, echo, false,
          "Internal: run the floor's blocking echo server (needs --request_bytes and "
          "--response_bytes).");
ABSL_FLAG(int, threads, 0, "Internal (--serve): server event-loop threads; 0: one per core.");
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
};

// Stops the server and checks that every command answered OK appended exactly one event.
absl::StatusOr<ServerReport> StopServer(BenchChild& server, std::uint64_t ok_answers) {
  absl::StatusOr<std::string> report = server.Stop();
  if (!report.ok()) return report.status();
  ServerReport result;
  result.commands = ReportValue(*report, "commands");
  result.events = ReportValue(*report, "events");
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
  auto server = BenchChild::Spawn({"--serve", "--threads=1"}, server_cpu);
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
    if (!floor_result.error.empty() || !blocking_result.error.empty() || !cc.result.error.empty()) {
      break;
    }
  }
  CloseClients(io, clients);
  ok_answers += blocking_result.answered - blocking_result.failed;
  ok_answers += cc.result.answered - cc.result.failed;
  floor->reset();
  blocking->reset();
  (void)echo->Stop();
  if (auto status = PinCallingThread(std::nullopt); !status.ok()) return status;
  for (auto* r : {&floor_result, &blocking_result, &cc.result}) {
    const char* what = r == &floor_result      ? "floor"
                       : r == &blocking_result ? "blocking client"
                                               : "CommandClient";
    if (auto status = Failed(*r, what); !status.ok()) return status;
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
  absl::PrintF(
      "W1 pin=%s rtt_p50_us=%s rtt_p99_us=%s rtt_p999_us=%s rps=%s floor_p50_us=%s "
      "floor_p99_us=%s p50_vs_floor=%s p99_vs_floor=%s floor_p999_us=%s floor_rps=%s "
      "blocking_p50_us=%s blocking_p99_us=%s blocking_p999_us=%s blocking_rps=%s "
      "blocking_p50_vs_floor=%s blocking_p99_vs_floor=%s round_trips=%d request_bytes=%zu "
      "response_bytes=%zu server_events=%llu server_cpu_us_per_cmd=%s "
      "blocking_server_cpu_us_per_cmd=%s floor_server_cpu_us_per_cmd=%s\n",
      split ? "split" : "same", Us(p50), Us(p99), Us(p999),
      Rate(cc.result.answered / Seconds(cc.result.busy)), Us(f50), Us(f99), Ratio(p50 / f50),
      Ratio(p99 / f99), Us(f999), Rate(floor_result.answered / Seconds(floor_result.busy)), Us(b50),
      Us(b99), Us(b999), Rate(blocking_result.answered / Seconds(blocking_result.busy)),
      Ratio(b50 / f50), Ratio(b99 / f99), round_trips, request_bytes, response_bytes,
      static_cast<unsigned long long>(events->events), CpuPerCommand(cc_cpu_ns, cc.result),
      CpuPerCommand(blocking_cpu_ns, blocking_result), CpuPerCommand(floor_cpu_ns, floor_result));
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
  auto server = BenchChild::Spawn({"--serve", "--threads=0"}, std::nullopt);
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
                  " server_threads=", std::max(1u, std::thread::hardware_concurrency()),
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

constexpr char kNeedsGateway[] = "not implemented yet: needs the event gateway";

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
  if (absl::GetFlag(FLAGS_serve)) {
    const int fd = absl::GetFlag(FLAGS_port_fd);
    return ServeMain(static_cast<unsigned>(std::max(0, absl::GetFlag(FLAGS_threads))),
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
  const std::string workload = absl::GetFlag(FLAGS_workload);
  bool run_w1 = false;
  bool run_w2 = false;
  if (workload == "W1") {
    run_w1 = true;
  } else if (workload == "W2") {
    run_w2 = true;
  } else if (workload == "W3" || workload == "W4" || workload == "W5") {
    std::fprintf(stderr, "cqrs_bench: %s is %s (WebSocket subscribers); it does not exist yet\n",
                 workload.c_str(), kNeedsGateway);
    return 2;
  } else if (workload == "all") {
    run_w1 = run_w2 = true;
  } else {
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
  if (workload == "all") {
    std::fprintf(stderr, "cqrs_bench: skipped W3, W4, W5: %s\n", kNeedsGateway);
  }
  return exit_code;
}

}  // namespace
}  // namespace cqrs::bench

int main(int argc, char** argv) { return cqrs::bench::Main(argc, argv); }
