#include "bench_process.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "cqrs/core/command_router.h"
#include "cqrs/core/event_log.h"
#include "cqrs/core/event_sink.h"
#include "cqrs/core/fanout_hub.h"
#include "cqrs/net/command_server.h"
#include "cqrs/net/event_gateway.h"
#include "cqrs/net/frame_codec.h"
#include "cqrs/net/server.h"
#include "cqrs/net/stop_signals.h"
#include "user_handlers.h"

namespace cqrs::bench {
namespace {

using Clock = std::chrono::steady_clock;

// The fd number the child finds its report pipe on.
constexpr int kChildReportFd = 3;

std::string Errno(const char* what) { return absl::StrCat(what, ": ", std::strerror(errno)); }

const cpu_set_t& OriginalMask() {
  static const cpu_set_t mask = [] {
    cpu_set_t m;
    CPU_ZERO(&m);
    if (sched_getaffinity(0, sizeof m, &m) != 0) {
      for (int i = 0; i < CPU_SETSIZE; ++i) CPU_SET(i, &m);
    }
    return m;
  }();
  return mask;
}

// Reads from `fd` into `out` until `until` or EOF (true) or the deadline (false).
bool ReadUntilEof(int fd, std::string& out, Clock::time_point until) {
  char buffer[4096];
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    const int ready = poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return false;
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return true;
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

// This program's path, read once before any fork. Resolved rather than "/proc/self/exe" so that
// a client profiled under valgrind (which answers readlink of it with the profiled program)
// starts its servers natively.
const std::string& SelfPath() {
  static const std::string path = [] {
    std::error_code error;
    std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
    return error ? std::string("/proc/self/exe") : self.string();
  }();
  return path;
}

bool WriteAll(int fd, const char* data, std::size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// --counting_sink: assigns offsets and counts; keeps nothing and publishes nothing (the server
// before the event log and the gateway, for comparison).
class CountingSink : public EventSink {
 public:
  absl::StatusOr<AppendReceipt> Append(std::span<StagedEvent* const> events) override {
    const std::uint64_t first = next_.fetch_add(events.size(), std::memory_order_relaxed) + 1;
    return AppendReceipt{.first_offset = first, .count = events.size(), .epoch = 1};
  }
  std::uint64_t appended() const { return next_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> next_{0};
};

void EchoConnection(int fd, std::size_t request_bytes, std::string responses,
                    std::size_t response_bytes) {
  constexpr std::size_t kReadBytes = 256 * 1024;
  std::unique_ptr<char[]> buffer(new char[kReadBytes]);
  std::size_t partial = 0;  // Bytes of a request not yet complete.
  for (;;) {
    const ssize_t n = read(fd, buffer.get(), kReadBytes);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    partial += static_cast<std::size_t>(n);
    std::size_t answers = partial / request_bytes;
    partial %= request_bytes;
    while (answers > 0) {
      const std::size_t batch = std::min(answers, responses.size() / response_bytes);
      if (!WriteAll(fd, responses.data(), batch * response_bytes)) {
        close(fd);
        return;
      }
      answers -= batch;
    }
  }
  close(fd);
}

}  // namespace

absl::Status PinCallingThread(std::optional<int> cpu) {
  const cpu_set_t& original = OriginalMask();
  cpu_set_t mask = original;
  if (cpu) {
    if (*cpu < 0 || *cpu >= CPU_SETSIZE || !CPU_ISSET(*cpu, &original)) {
      return absl::InvalidArgumentError(absl::StrCat("CPU ", *cpu, " is not available"));
    }
    CPU_ZERO(&mask);
    CPU_SET(*cpu, &mask);
  }
  if (sched_setaffinity(0, sizeof mask, &mask) != 0) {
    return absl::InternalError(Errno("sched_setaffinity"));
  }
  return absl::OkStatus();
}

absl::StatusOr<BenchChild> BenchChild::Spawn(std::vector<std::string> args,
                                             std::optional<int> cpu) {
  cpu_set_t mask = OriginalMask();
  if (cpu) {
    if (*cpu < 0 || *cpu >= CPU_SETSIZE || !CPU_ISSET(*cpu, &mask)) {
      return absl::InvalidArgumentError(absl::StrCat("CPU ", *cpu, " is not available"));
    }
    CPU_ZERO(&mask);
    CPU_SET(*cpu, &mask);
  }
  args.insert(args.begin(), SelfPath());
  args.push_back(absl::StrCat("--port_fd=", kChildReportFd));
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe(fds) != 0) return absl::InternalError(Errno("pipe"));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(Errno("fork"));
  }
  if (pid == 0) {
    // The child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    if (sched_setaffinity(0, sizeof mask, &mask) != 0) _exit(126);
    if (fds[1] != kChildReportFd) {
      if (dup2(fds[1], kChildReportFd) < 0) _exit(126);
    }
    // Nothing else of the parent's (sockets, the read end) leaks into the server.
    close_range(kChildReportFd + 1, ~0U, 0);
    if (fds[0] < kChildReportFd) close(fds[0]);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);
  BenchChild child(pid, fds[0], 0);
  // The port line.
  const auto until = Clock::now() + std::chrono::seconds(10);
  std::string got;
  while (got.find('\n') == std::string::npos) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    pollfd p{.fd = fds[0], .events = POLLIN, .revents = 0};
    const int ready = left > 0 ? poll(&p, 1, static_cast<int>(left)) : 0;
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return absl::UnavailableError("the server process did not report its port");
    char buffer[256];
    const ssize_t n = read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError("the server process ended before listening");
    got.append(buffer, static_cast<std::size_t>(n));
  }
  const std::size_t eol = got.find('\n');
  const std::string line = got.substr(0, eol);
  for (absl::string_view part : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    std::uint16_t* target = absl::ConsumePrefix(&part, "port=")      ? &child.port_
                            : absl::ConsumePrefix(&part, "gateway=") ? &child.gateway_port_
                                                                     : nullptr;
    std::uint32_t port = 0;
    if (target == nullptr || !absl::SimpleAtoi(part, &port) || port == 0 || port > 65535) {
      return absl::UnavailableError(absl::StrCat("the server process reported '", line, "'"));
    }
    *target = static_cast<std::uint16_t>(port);
  }
  if (child.port_ == 0) {
    return absl::UnavailableError(absl::StrCat("the server process reported '", line, "'"));
  }
  child.report_ = got.substr(eol + 1);
  return child;
}

BenchChild::BenchChild(BenchChild&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      report_fd_(std::exchange(other.report_fd_, -1)),
      port_(other.port_),
      gateway_port_(other.gateway_port_),
      report_(std::move(other.report_)) {}

BenchChild::~BenchChild() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  if (report_fd_ >= 0) close(report_fd_);
}

std::uint64_t BenchChild::CpuNanos() const {
  std::uint64_t total = 0;
  std::error_code ec;
  for (const auto& task :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid_, "/task"), ec)) {
    std::ifstream schedstat(task.path() / "schedstat");
    std::uint64_t on_cpu = 0;
    if (schedstat >> on_cpu) total += on_cpu;
  }
  return total;
}

std::uint64_t BenchChild::StatusKiB(const char* key) const {
  std::ifstream status(absl::StrCat("/proc/", pid_, "/status"));
  const std::string prefix = absl::StrCat(key, ":");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind(prefix, 0) != 0) continue;
    std::uint64_t kib = 0;
    absl::string_view rest(line);
    rest.remove_prefix(prefix.size());
    rest = absl::StripAsciiWhitespace(rest);
    absl::ConsumeSuffix(&rest, "kB");
    return absl::SimpleAtoi(absl::StripAsciiWhitespace(rest), &kib) ? kib : 0;
  }
  return 0;
}

absl::StatusOr<std::string> BenchChild::Stop() {
  if (pid_ <= 0) return absl::FailedPreconditionError("the child was already stopped");
  kill(pid_, SIGTERM);
  const auto until = Clock::now() + std::chrono::seconds(15);
  ReadUntilEof(report_fd_, report_, until);
  close(report_fd_);
  report_fd_ = -1;
  int status = 0;
  pid_t done = 0;
  while ((done = waitpid(pid_, &status, WNOHANG)) == 0 && Clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  std::string killed;
  if (done == 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
    killed = "did not stop within 15 s after SIGTERM (killed)";
  }
  pid_ = -1;
  if (!killed.empty()) return absl::DeadlineExceededError(killed);
  if (WIFSIGNALED(status)) {
    return absl::InternalError(absl::StrCat("the child died of signal ", WTERMSIG(status)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
    return absl::InternalError(absl::StrCat("the child exited with ", WEXITSTATUS(status)));
  }
  return report_;
}

std::uint64_t RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur;
}

int ServeMain(unsigned threads, unsigned gateway_threads, bool counting_sink, int port_fd) {
  net::StopSignals stop;  // Before the servers start.
  const std::uint64_t max_files = RaiseFileLimit();
  CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (auto status = users::RegisterHandlers(router, directory); !status.ok()) {
    std::fprintf(stderr, "cqrs_bench --serve: %s\n", status.ToString().c_str());
    return 1;
  }
  // The real configuration: net::Server (command server, in-memory event log, fan-out hub,
  // gateway, and the flow control between them).
  net::ServerOptions server_options;
  server_options.commands.address = "127.0.0.1";
  server_options.commands.port = 0;
  server_options.commands.threads = threads;
  server_options.commands.server_name = "cqrs_bench";
  server_options.gateway.address = "127.0.0.1";
  server_options.gateway.port = 0;
  server_options.gateway.threads = gateway_threads;
  // W4 holds 10,000 subscribers: leave room above them (the default is exactly 10,000), within
  // the descriptors this process may open.
  server_options.gateway.max_connections = static_cast<std::uint32_t>(
      std::clamp<std::uint64_t>(max_files > 256 ? max_files - 256 : 1, 1, 16'000));
  server_options.http_commands = false;
  net::Server whole(router, std::move(server_options));
  EventLog& log = whole.log();
  CountingSink counting;
  if (counting_sink) router.set_event_sink(&counting);  // Diagnostic: no log, no fan-out.
  net::CommandServer& server = whole.commands();
  net::EventGateway& gateway = whole.gateway();
  if (const absl::Status status = whole.Start(); !status.ok()) {
    std::fprintf(stderr, "cqrs_bench --serve: %s\n", status.ToString().c_str());
    return 1;
  }
  const std::string port = absl::StrCat("port=", server.port(), " gateway=", gateway.port(), "\n");
  if (!WriteAll(port_fd, port.data(), port.size())) return 1;
  stop.Wait();
  // The gateway's figures before Shutdown closes its subscribers.
  const net::EventGatewayStats before = gateway.stats();
  whole.Shutdown();
  const auto stats = server.stats();
  const net::EventGatewayStats gateway_stats = gateway.stats();
  const std::string report = absl::StrCat(
      "commands=", stats.commands, " events=", counting_sink ? counting.appended() : log.head(),
      " users=", directory.size(), " log_head=", log.head(),
      " log_retained=", log.head() + 1 - log.earliest(),
      " events_delivered=", gateway_stats.events_delivered,
      " slow_consumers_closed=", gateway_stats.slow_consumers_closed,
      " subscribers=", before.subscribers_open,
      " gateway_connections_accepted=", gateway_stats.connections_accepted,
      " gateway_connections_refused=", gateway_stats.connections_refused, "\n");
  WriteAll(port_fd, report.data(), report.size());
  close(port_fd);
  return 0;
}

int EchoMain(std::size_t request_bytes, std::size_t response_bytes, int port_fd) {
  if (request_bytes == 0 || response_bytes <= net::kFrameHeaderBytes) {
    std::fprintf(stderr, "cqrs_bench --echo: --request_bytes and --response_bytes are required\n");
    return 2;
  }
  net::StopSignals stop;  // Before the servers start.
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 ||
      listen(listener, 64) != 0 ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    std::fprintf(stderr, "cqrs_bench --echo: %s\n", Errno("listen").c_str());
    return 1;
  }
  // A response: a valid frame header and a body of zeros, repeated for batched answers.
  std::string response(response_bytes, '\0');
  net::WriteFrameHeader(static_cast<std::uint32_t>(response_bytes - net::kFrameHeaderBytes),
                        reinterpret_cast<std::byte*>(response.data()));
  std::string responses;
  for (int i = 0; i < 256; ++i) responses += response;

  std::thread acceptor([listener, request_bytes, response_bytes, responses] {
    for (;;) {
      const int fd = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return;
      }
      const int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      timeval timeout{.tv_sec = 60, .tv_usec = 0};
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
      std::thread(EchoConnection, fd, request_bytes, responses, response_bytes).detach();
    }
  });
  acceptor.detach();
  const std::string port = absl::StrCat("port=", ntohs(address.sin_port), "\n");
  if (!WriteAll(port_fd, port.data(), port.size())) return 1;
  stop.Wait();
  // Connection threads may be blocked in read: leave without unwinding them.
  close(port_fd);
  _exit(0);
}

}  // namespace cqrs::bench
