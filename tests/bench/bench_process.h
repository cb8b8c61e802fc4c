// File: bench/bench_process.h
//
// The processes of cqrs_bench: the benchmark re-executes itself as the servers it measures, so
// that client and server are separate processes with their own CPU placement.
//
//   BenchChild server = BenchChild::Spawn({"--serve", "--threads=1"}, /*cpu=*/0).value();
//   ... connect to 127.0.0.1:server.port(), subscribe at 127.0.0.1:server.gateway_port() ...
//   absl::StatusOr<std::string> stats = server.Stop();   // SIGTERM, then the child's last words
//
// Both child modes listen on 127.0.0.1 (kernel-chosen ports) and report "port=N\n" (--serve:
// "port=N gateway=M\n") on the file descriptor given as --port_fd; they end on SIGTERM (and on
// SIGKILL when the parent dies).

#ifndef CQRS_TESTS_BENCH_BENCH_PROCESS_H_
#define CQRS_TESTS_BENCH_BENCH_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace cqrs::bench {

// A child process running this program in one of its server modes.
class BenchChild {
 public:
  // Starts /proc/self/exe with `args` (plus --port_fd), pinned to `cpu` when given, and waits up
  // to 10 s for it to report its port. kUnavailable when it does not.
  static absl::StatusOr<BenchChild> Spawn(std::vector<std::string> args, std::optional<int> cpu);

  BenchChild(BenchChild&& other) noexcept;
  BenchChild& operator=(BenchChild&& other) = delete;
  // Kills the child (SIGKILL) if Stop() was not called.
  ~BenchChild();

  std::uint16_t port() const { return port_; }
  // The event gateway's port (--serve); 0 for a child that has none.
  std::uint16_t gateway_port() const { return gateway_port_; }
  pid_t pid() const { return pid_; }
  // A "<key>: N kB" line of /proc/<pid>/status (VmRSS, VmHWM), in KiB; 0 when unreadable.
  std::uint64_t StatusKiB(const char* key) const;
  // CPU time the child's threads have used so far (/proc/<pid>/task/*/schedstat), in ns.
  std::uint64_t CpuNanos() const;

  // SIGTERM, then waits (up to 15 s, then SIGKILL) for the child to end. Returns what the child
  // reported after its port line (the --serve mode's statistics), or an error naming how it
  // ended when that was not a clean exit.
  absl::StatusOr<std::string> Stop();

 private:
  BenchChild(pid_t pid, int report_fd, std::uint16_t port)
      : pid_(pid), report_fd_(report_fd), port_(port) {}

  pid_t pid_ = -1;
  int report_fd_ = -1;
  std::uint16_t port_ = 0;
  std::uint16_t gateway_port_ = 0;
  std::string report_;  // Bytes read from the report pipe after the port line.
};

// Pins the calling thread (and the threads it creates later) to `cpu`; nullopt: every CPU the
// process was started with.
absl::Status PinCallingThread(std::optional<int> cpu);

// Raises the soft limit on open files to the hard limit (W4 holds 10,000 connections). Returns
// the new soft limit.
std::uint64_t RaiseFileLimit();

// --serve: the user service as deployed: a CommandServer (`threads` loops) with the user
// service's handlers appending to an InMemoryEventLog, a FanoutHub on it and an EventGateway
// (`gateway_threads` loops) on a second port. Reports "commands=N events=N users=N log_head=N
// events_delivered=N slow_consumers_closed=N subscribers=N ..." after SIGTERM. Returns the process
// exit code. `counting_sink`: commands append to a sink that only assigns offsets instead (the
// gateway then gets no events), for comparison.
int ServeMain(unsigned threads, unsigned gateway_threads, bool counting_sink, int port_fd);

// --echo: the floor. Per connection, one blocking thread that reads requests of exactly
// `request_bytes` and, per read, answers every complete request with a `response_bytes` frame
// in one write. Returns the process exit code.
int EchoMain(std::size_t request_bytes, std::size_t response_bytes, int port_fd);

}  // namespace cqrs::bench

#endif  // CQRS_TESTS_BENCH_BENCH_PROCESS_H_
