// cqrs: the command-line tool of cqrs-cpp. Sends one command over the TCP protocol and prints
// the response, or prints the events of a gateway's channels as JSON lines.
//
//   cqrs send 127.0.0.1:7000 users.v1.CreateUser '{"name": "Bob"}'
//   cqrs send 127.0.0.1:7000 shop.v1.PlaceOrder '{"sku": "42"}' --descriptor_set=shop.desc
//   cqrs tail ws://127.0.0.1:8080/events --channel=users --from=0
//   cqrs help [send|tail]
//
// Exit codes (kExit* below): 0 OK; 1 the server answered with another status; 2 usage errors
// (flags, arguments, unknown types, JSON); 3 transport errors (no connection, no response).

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "cqrs/core/asio.h"
#include "cqrs/core/command_status.h"
#include "cqrs/core/log.h"
#include "cqrs/net/command_client.h"
#include "cqrs/net/event_subscriber.h"
#include "schemas.h"
#include "tool_flags.h"
#include "users/v1/users.pb.h"

ABSL_FLAG(std::string, descriptor_set, "",
          "a FileDescriptorSet whose message types are known in addition to the linked ones "
          "(make one with `protoc --include_imports --descriptor_set_out=FILE your.proto`)");
ABSL_FLAG(std::string, log_level, "warning",
          "library log level on stderr: debug, info, warning, error");

// send
ABSL_FLAG(std::string, id, "",
          "command id (default: a random UUID); re-sending an id returns the first response");
ABSL_FLAG(std::string, subject, "",
          "the command's subject (aggregate id): commands with one subject run in order");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(10),
          "how long to wait for the connection and the response (then exit code 3)");
ABSL_FLAG(std::string, auth_token, "", "token sent in Hello, for servers that authenticate");

// tail
ABSL_FLAG(std::vector<std::string>, channel, {"*"},
          "channel names or patterns (users, users.*, *); repeat the flag or separate by commas");
ABSL_FLAG(std::optional<std::uint64_t>, from, std::nullopt,
          "replay the retained events after this offset first (default: live events only)");
ABSL_FLAG(std::uint64_t, epoch, 0, "the epoch --from belongs to (0: the gateway's current one)");
ABSL_FLAG(std::string, format, "proto",
          "WebSocket subprotocol: proto (cqrs.v1.proto) or json (cqrs.v1.json; events whose "
          "payload type is not known are skipped)");
ABSL_FLAG(absl::Duration, reconnect_delay, absl::Seconds(1),
          "first delay before reconnecting after the connection failed (then x1.6, up to 10s)");

namespace {

namespace asio = ::cqrs::asio;
namespace net = ::cqrs::net;
using tcp = asio::ip::tcp;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);

constexpr int kExitOk = 0;
constexpr int kExitStatus = 1;
constexpr int kExitUsage = 2;
constexpr int kExitTransport = 3;

const cli::FlagSet kFlags{.files = {"cqrs_cli/main.cc"}, .repeatable = {"channel"}};
const std::vector<std::string> kSendFlags = {"timeout",        "id",         "subject",
                                             "descriptor_set", "auth_token", "log_level"};
const std::vector<std::string> kTailFlags = {
    "channel", "from", "epoch", "format", "descriptor_set", "reconnect_delay", "log_level"};

constexpr char kExitCodes[] =
    "Exit codes:\n"
    "  0  OK: the command succeeded (send), or stopped by SIGINT/SIGTERM (tail)\n"
    "  1  the server answered with another status: REJECTED, NOT_FOUND, INVALID, UNAUTHENTICATED,\n"
    "     DEADLINE_EXCEEDED, UNAVAILABLE, INTERNAL (the response is printed all the same)\n"
    "  2  usage error: arguments, flags, an unknown message type, JSON that does not parse as the\n"
    "     type, an unreadable --descriptor_set\n"
    "  3  transport error: cannot connect, no response within --timeout, the connection failed\n";

constexpr char kUsage[] =
    "cqrs: the cqrs-cpp command-line tool.\n"
    "\n"
    "Usage:\n"
    "  cqrs send HOST:PORT TYPE [JSON] [flags]   send one command, print its response as JSON\n"
    "  cqrs tail [URL] [flags]                   print events as JSON lines until interrupted\n"
    "  cqrs help [send|tail]                     this text, or a command's usage and flags\n"
    "\n"
    "Examples:\n"
    "  cqrs send 127.0.0.1:7000 users.v1.CreateUser '{\"name\": \"Bob\"}'\n"
    "  cqrs tail ws://127.0.0.1:8080/events --channel=users\n"
    "\n";

constexpr char kSendUsage[] =
    "cqrs send HOST:PORT TYPE [JSON] [flags]\n"
    "\n"
    "Builds a command of message type TYPE (full name, e.g. users.v1.CreateUser) from JSON\n"
    "(protobuf's canonical JSON mapping; default {}), sends it to the command server at\n"
    "HOST:PORT over the cqrs TCP protocol, and prints the response (a\n"
    "cqrs.v1.CommandResponseEnvelope in protobuf JSON, on one line) with its payload expanded\n"
    "when its type is known. Known types: those linked into cqrs (the user service's\n"
    "users.v1.*) and those of --descriptor_set.\n"
    "\n"
    "Examples:\n"
    "  cqrs send 127.0.0.1:7000 users.v1.CreateUser '{\"name\": \"Bob\"}'\n"
    "  cqrs send 127.0.0.1:7000 users.v1.RenameUser '{\"name\": \"Robert\"}' --subject=USER_ID\n"
    "  cqrs send [::1]:7000 shop.v1.PlaceOrder '{\"sku\": \"42\"}' --descriptor_set=shop.desc\n"
    "\n"
    "Flags:\n";

constexpr char kTailUsage[] =
    "cqrs tail [URL] [flags]\n"
    "\n"
    "Subscribes to channels of the event gateway at URL (default ws://127.0.0.1:8080/events) and\n"
    "prints every event as one line of JSON (a cqrs.v1.EventEnvelope in protobuf JSON, its\n"
    "payload expanded when its type is known), flushed, until SIGINT or SIGTERM. After a lost\n"
    "connection it reconnects and resumes after the last event printed; when the gateway no\n"
    "longer holds those events (e.g. a restarted server with a new epoch) it says so on stderr\n"
    "and goes on from the earliest event held. Status lines go to stderr, starting with\n"
    "\"cqrs tail: subscribed to CHANNELS at offset N (epoch E)\".\n"
    "\n"
    "Examples:\n"
    "  cqrs tail ws://127.0.0.1:8080/events --channel=users\n"
    "  cqrs tail ws://127.0.0.1:8080/events --channel=users --from=0   # what is held, then live\n"
    "\n"
    "Flags:\n";

void Fail(absl::string_view message) {
  std::fprintf(stderr, "cqrs: %.*s\n", static_cast<int>(message.size()), message.data());
}

void PrintLine(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void Help(absl::string_view topic) {
  std::string text;
  if (topic == "send") {
    text = absl::StrCat(kSendUsage, cli::FlagsHelp(kFlags, kSendFlags), "\n", kExitCodes);
  } else if (topic == "tail") {
    text = absl::StrCat(kTailUsage, cli::FlagsHelp(kFlags, kTailFlags), "\n", kExitCodes);
  } else {
    text = absl::StrCat(kUsage, "Flags of send:\n", cli::FlagsHelp(kFlags, kSendFlags),
                        "\nFlags of tail:\n", cli::FlagsHelp(kFlags, kTailFlags), "\n", kExitCodes);
  }
  std::fputs(text.c_str(), stdout);
}

absl::StatusOr<cqrs::LogLevel> LogLevelOf(const std::string& name) {
  if (name == "debug") return cqrs::LogLevel::kDebug;
  if (name == "info") return cqrs::LogLevel::kInfo;
  if (name == "warning") return cqrs::LogLevel::kWarning;
  if (name == "error") return cqrs::LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_level must be debug, info, warning or error, not '", name, "'"));
}

// Flags that belong to another command are mistakes, not silently ignored.
absl::Status CheckFlags(const cli::Args& args, absl::string_view command,
                        const std::vector<std::string>& allowed) {
  for (const std::string& name : args.given) {
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " does not apply to ", command,
                                                     " (see cqrs help ", command, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status LoadSchemas(cli::Schemas& schemas) {
  const std::string path = absl::GetFlag(FLAGS_descriptor_set);
  if (path.empty()) return absl::OkStatus();
  absl::Status status = schemas.LoadDescriptorSet(path);
  if (!status.ok())
    return absl::InvalidArgumentError(absl::StrCat("--descriptor_set: ", status.message()));
  return status;
}

// --- send ---------------------------------------------------------------------------------------

struct Target {
  std::string host;
  std::uint16_t port = 0;
  std::string text;  // As given, for messages.
};

// "127.0.0.1:7000", "localhost:7000", "[::1]:7000".
absl::StatusOr<Target> ParseTarget(const std::string& text) {
  const auto error = absl::InvalidArgumentError(absl::StrCat(
      "expected the command server as HOST:PORT (e.g. 127.0.0.1:7000), not '", text, "'"));
  auto authority = boost::urls::parse_authority(text);
  if (!authority || authority->has_userinfo() || !authority->has_port()) return error;
  std::uint32_t port = 0;
  const auto port_text = authority->port();
  if (!absl::SimpleAtoi(absl::string_view(port_text.data(), port_text.size()), &port) ||
      port == 0 || port > 65535) {
    return error;
  }
  Target target{
      .host = authority->host_address(), .port = static_cast<std::uint16_t>(port), .text = text};
  if (target.host.empty()) return error;
  return target;
}

// A version-4 UUID: the command id when --id is not given (printed on a timeout, so that the
// command can be re-sent under the same id).
std::string RandomId() {
  std::mt19937_64 random{std::random_device{}()};
  const std::uint64_t hi = random();
  const std::uint64_t lo = random();
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0x0fff,
                         ((lo >> 48) & 0x3fff) | 0x8000, lo & 0xffffffffffff);
}

// One send: inputs, and what came out. Coroutines take it by pointer (GCC 12).
struct SendJob {
  Target target;
  const google::protobuf::Message* command = nullptr;
  net::SendOptions send;
  std::chrono::milliseconds timeout{10'000};
  std::string auth_token;
  absl::StatusOr<cqrs::v1::CommandResponseEnvelope> response = absl::UnknownError("not sent");
};

// The latest connection failure the command client logged (it retries quietly).
struct ClientLog {
  std::mutex mutex;
  std::string last_failure;
  cqrs::LogLevel print_level = cqrs::LogLevel::kWarning;
};

ClientLog& GetClientLog() {
  static ClientLog* log = new ClientLog;
  return *log;
}

std::string LastFailure() {
  ClientLog& log = GetClientLog();
  std::lock_guard lock(log.mutex);
  return log.last_failure;
}

void CaptureClientLog(cqrs::LogLevel print_level) {
  GetClientLog().print_level = print_level;
  cqrs::SetLogLevel(std::min(print_level, cqrs::LogLevel::kInfo));
  cqrs::SetLogSink([](cqrs::LogLevel level, absl::string_view line) {
    ClientLog& log = GetClientLog();
    constexpr absl::string_view kPrefix = "command client: ";
    if (absl::StartsWith(line, kPrefix)) {
      std::lock_guard lock(log.mutex);
      log.last_failure = std::string(line.substr(kPrefix.size()));
    }
    if (level >= log.print_level) {
      std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    }
  });
}

// Connects once, so that a server that is not there fails at once and by name (the command
// client itself would retry quietly until the timeout).
cqrs::Awaitable<absl::Status> Probe(SendJob* job) {
  const auto executor = co_await asio::this_coro::executor;
  tcp::resolver resolver(executor);
  const std::string port = std::to_string(job->target.port);
  auto [resolve_error, endpoints] = co_await resolver.async_resolve(job->target.host, port, kUse);
  if (resolve_error) {
    co_return absl::UnavailableError(
        absl::StrCat("cannot resolve ", job->target.host, ": ", resolve_error.message()));
  }
  auto socket = std::make_shared<tcp::socket>(executor);
  auto fired = std::make_shared<bool>(false);
  asio::steady_timer timer(executor);
  timer.expires_after(job->timeout);
  timer.async_wait([socket, fired](const boost::system::error_code& ec) {
    if (ec) return;
    *fired = true;
    boost::system::error_code ignored;
    socket->close(ignored);
  });
  auto [connect_error, endpoint] = co_await asio::async_connect(*socket, endpoints, kUse);
  timer.cancel();
  boost::system::error_code ignored;
  socket->close(ignored);
  if (*fired) {
    co_return absl::DeadlineExceededError(absl::StrCat(
        "connecting to ", job->target.text,
        " took longer than --timeout=", absl::FormatDuration(absl::FromChrono(job->timeout))));
  }
  if (connect_error) {
    co_return absl::UnavailableError(
        absl::StrCat("cannot connect to ", job->target.text, ": ", connect_error.message()));
  }
  co_return absl::OkStatus();
}

cqrs::Awaitable<void> RunSend(SendJob* job) {
  const auto executor = co_await asio::this_coro::executor;
  absl::Status reachable = co_await Probe(job);
  if (!reachable.ok()) {
    job->response = std::move(reachable);
    co_return;
  }
  net::CommandClientOptions options;
  options.host = job->target.host;
  options.port = job->target.port;
  options.client_name = "cqrs-cli";
  options.auth_token = job->auth_token;
  options.default_timeout = job->timeout;
  options.connect_timeout = std::min(job->timeout, std::chrono::milliseconds(5'000));
  options.backoff.initial = std::chrono::milliseconds(200);
  options.backoff.max = std::chrono::milliseconds(2'000);
  std::shared_ptr<net::CommandClient> client =
      net::CommandClient::Create(executor, std::move(options));
  net::SendOptions send = job->send;
  cqrs::Awaitable<absl::StatusOr<cqrs::v1::CommandResponseEnvelope>> sending =
      client->Send(*job->command, std::move(send));
  job->response = co_await std::move(sending);
  client->Close();
}

std::string TransportError(const absl::Status& status, const SendJob& job) {
  const std::string timeout = absl::FormatDuration(absl::FromChrono(job.timeout));
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
      if (absl::StrContains(status.message(), "--timeout")) return std::string(status.message());
      return absl::StrCat("no response from ", job.target.text, " within --timeout=", timeout,
                          " (the command may or may not have run; re-send it with --id=",
                          job.send.id, " to learn the outcome)");
    case absl::StatusCode::kUnavailable: {
      if (absl::StartsWith(status.message(), "cannot ")) return std::string(status.message());
      const std::string last = LastFailure();
      return absl::StrCat("no connection to the command server at ", job.target.text,
                          " within --timeout=", timeout, last.empty() ? "" : ": ", last);
    }
    default:
      return absl::StrCat("sending to ", job.target.text, " failed: ", status.ToString());
  }
}

int Send(const cli::Args& args) {
  if (absl::Status status = CheckFlags(args, "send", kSendFlags); !status.ok()) {
    Fail(status.message());
    return kExitUsage;
  }
  const std::vector<std::string>& positional = args.positional;
  if (positional.size() < 3 || positional.size() > 4) {
    Fail(absl::StrCat("send takes HOST:PORT TYPE [JSON], got ", positional.size() - 1,
                      " argument(s) (see cqrs help send)"));
    return kExitUsage;
  }
  absl::StatusOr<Target> target = ParseTarget(positional[1]);
  if (!target.ok()) {
    Fail(target.status().message());
    return kExitUsage;
  }
  const absl::Duration timeout = absl::GetFlag(FLAGS_timeout);
  if (timeout <= absl::ZeroDuration()) {
    Fail(absl::StrCat("--timeout must be positive, not ", absl::FormatDuration(timeout)));
    return kExitUsage;
  }
  cli::Schemas schemas({users::v1::CreateUser::descriptor()->file()});
  if (absl::Status status = LoadSchemas(schemas); !status.ok()) {
    Fail(status.message());
    return kExitUsage;
  }
  const std::string json = positional.size() == 4 ? positional[3] : "{}";
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> command =
      schemas.FromJson(positional[2], json);
  if (!command.ok()) {
    Fail(command.status().message());
    return kExitUsage;
  }

  SendJob job;
  job.target = *std::move(target);
  job.command = command->get();
  job.timeout = absl::ToChronoMilliseconds(timeout);
  job.auth_token = absl::GetFlag(FLAGS_auth_token);
  job.send.id = absl::GetFlag(FLAGS_id);
  if (job.send.id.empty()) job.send.id = RandomId();
  job.send.subject = absl::GetFlag(FLAGS_subject);
  job.send.timeout = job.timeout;

  asio::io_context io(1);
  asio::co_spawn(io, RunSend(&job), [](std::exception_ptr error) {
    if (error) std::rethrow_exception(error);
  });
  io.run();

  if (!job.response.ok()) {
    if (job.response.status().code() == absl::StatusCode::kInvalidArgument) {
      Fail(job.response.status().message());
      return kExitUsage;
    }
    Fail(TransportError(job.response.status(), job));
    return kExitTransport;
  }
  PrintLine(schemas.ToJson(*job.response));
  return job.response->status() == cqrs::v1::CommandResponseEnvelope::OK ? kExitOk : kExitStatus;
}

// --- tail ---------------------------------------------------------------------------------------

void Note(absl::string_view message) {
  std::fprintf(stderr, "cqrs tail: %.*s\n", static_cast<int>(message.size()), message.data());
  std::fflush(stderr);
}

int Tail(const cli::Args& args) {
  if (absl::Status status = CheckFlags(args, "tail", kTailFlags); !status.ok()) {
    Fail(status.message());
    return kExitUsage;
  }
  if (args.positional.size() > 2) {
    Fail(absl::StrCat("tail takes at most one URL, got ", args.positional.size() - 1,
                      " arguments (see cqrs help tail)"));
    return kExitUsage;
  }
  cli::Schemas schemas({users::v1::CreateUser::descriptor()->file()});
  if (absl::Status status = LoadSchemas(schemas); !status.ok()) {
    Fail(status.message());
    return kExitUsage;
  }
  net::EventSubscriberOptions options;
  if (args.positional.size() == 2) options.url = args.positional[1];
  options.channels = absl::GetFlag(FLAGS_channel);
  options.from_offset = absl::GetFlag(FLAGS_from);
  options.epoch = absl::GetFlag(FLAGS_epoch);
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "json") {
    options.format = net::EventFormat::kJson;
  } else if (format != "proto") {
    Fail(absl::StrCat("--format must be proto or json, not '", format, "'"));
    return kExitUsage;
  }
  const absl::Duration delay = absl::GetFlag(FLAGS_reconnect_delay);
  if (delay <= absl::ZeroDuration()) {
    Fail(absl::StrCat("--reconnect_delay must be positive, not ", absl::FormatDuration(delay)));
    return kExitUsage;
  }
  options.reconnect.initial = absl::ToChronoMilliseconds(delay);
  options.reconnect.max = std::max(options.reconnect.initial, std::chrono::milliseconds(10'000));
  options.subscription_id = "cqrs-tail";
  options.on_offset_unavailable = net::OffsetUnavailablePolicy::kFromEarliest;
  const std::string channels = absl::StrJoin(options.channels, ",");

  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<net::EventSubscriber>> created =
      net::EventSubscriber::Create(io.get_executor(), std::move(options));
  if (!created.ok()) {
    Fail(created.status().message());
    return kExitUsage;
  }
  net::EventSubscriber* subscriber = created->get();
  subscriber->OnAny(
      [&schemas](const cqrs::v1::EventEnvelope& event) { PrintLine(schemas.ToJson(event)); });
  subscriber->OnConnected([subscriber, &channels](const cqrs::v1::Subscribed&) {
    Note(absl::StrCat("subscribed to ", channels, " at offset ", subscriber->last_offset(),
                      " (epoch ", subscriber->epoch(), ")"));
  });
  subscriber->OnDisconnected([](const absl::Status& status) {
    if (status.code() == absl::StatusCode::kUnavailable) {
      Note(absl::StrCat(status.message(), "; reconnecting"));
    }
  });
  subscriber->OnGap([](const net::EventGap& gap) {
    if (gap.new_epoch != gap.epoch) {
      Note(absl::StrCat("the epoch changed from ", gap.epoch, " to ", gap.new_epoch,
                        " (the server lost its history): events after offset ", gap.after_offset,
                        " are gone; going on from offset ", gap.earliest_offset, " of epoch ",
                        gap.new_epoch));
    } else {
      Note(absl::StrCat("events ", gap.after_offset + 1, " to ", gap.earliest_offset - 1,
                        " of epoch ", gap.epoch, " are no longer held; going on from offset ",
                        gap.earliest_offset));
    }
  });

  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([subscriber](const boost::system::error_code& ec, int) {
    if (!ec) subscriber->Stop();
  });
  absl::Status result = absl::UnknownError("not run");
  asio::co_spawn(io, subscriber->Run(),
                 [&result, &signals](std::exception_ptr error, absl::Status status) {
                   if (error) std::rethrow_exception(error);
                   result = std::move(status);
                   signals.cancel();
                 });
  io.run();
  if (!result.ok()) {
    Fail(absl::StrCat("tail: ", result.message()));
    return kExitTransport;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<cli::Args> args = cli::ParseArgs(argc, argv, kFlags);
  if (!args.ok()) {
    Fail(args.status().message());
    return kExitUsage;
  }
  const std::vector<std::string>& positional = args->positional;
  const std::string command = positional.empty() ? "" : positional[0];
  if (command == "help" || args->help) {
    Help(command == "help" ? (positional.size() > 1 ? positional[1] : "") : command);
    return kExitOk;
  }
  absl::StatusOr<cqrs::LogLevel> log_level = LogLevelOf(absl::GetFlag(FLAGS_log_level));
  if (!log_level.ok()) {
    Fail(log_level.status().message());
    return kExitUsage;
  }
  if (command == "send") {
    CaptureClientLog(*log_level);
    return Send(*args);
  }
  cqrs::SetLogLevel(*log_level);
  if (command == "tail") return Tail(*args);
  Fail(command.empty() ? "no command given (see cqrs --help)"
                       : absl::StrCat("unknown command '", command, "' (see cqrs --help)"));
  return kExitUsage;
}
