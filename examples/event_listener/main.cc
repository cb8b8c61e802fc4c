// cqrs_event_listener: a native event listener, the seed's "Event Listener A" and "B". Subscribes
// to channels of an event gateway over WebSocket and prints one line per event; after a lost
// connection it reconnects and resumes after the last event it printed.
//
//   cqrs_event_listener --name=A                       # `users` on ws://127.0.0.1:8080/events
//   cqrs_event_listener --name=B --url=ws://10.0.0.5:8080/events --channel=users,orders.*
//
// Output, on stdout, one flushed line each:
//   [A] subscribed to users at offset 0 (epoch 7301)
//   [A] #1 users.v1.UserCreated  User 'Bob' created (id 5f0c9c1e-...)
//   [A] #2 users.v1.UserRenamed  User 'Bob' renamed to 'Robert' (id 5f0c9c1e-...)
//   [A] #3 users.v1.UserDeleted  User 'Robert' deleted (id 5f0c9c1e-...)
//   [A] #4 google.protobuf.Struct  {"note":"any other type: its payload as compact JSON"}
//   [A] connection lost: ...; reconnecting
//   [A] reconnected: subscribed to users at offset 4 (epoch 7301)
//   [A] epoch changed from 7301 to 9120 (the server lost its history) ...
//   [A] stopped at offset 4 (epoch 7301)
// SIGINT or SIGTERM stop it (exit 0); a subscription the gateway refuses ends it (exit 1); bad
// flags exit 2.

#include <csignal>
#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cqrs/core/log.h"
#include "cqrs/net/event_subscriber.h"
#include "schemas.h"
#include "tool_flags.h"
#include "users/v1/users.pb.h"

ABSL_FLAG(std::string, name, "A", "the listener's name, printed in brackets on every line");
ABSL_FLAG(std::string, url, "ws://127.0.0.1:8080/events", "the event gateway's WebSocket URL");
ABSL_FLAG(std::vector<std::string>, channel, {"users"},
          "channel names or patterns (users, users.*, *); repeat the flag or separate by commas");
ABSL_FLAG(std::string, format, "proto",
          "WebSocket subprotocol: proto (cqrs.v1.proto) or json (cqrs.v1.json; events whose "
          "payload type is not linked into the listener are skipped)");
ABSL_FLAG(absl::Duration, reconnect_delay, absl::Seconds(1),
          "first delay before reconnecting after the connection failed (then x1.6 per failure)");
ABSL_FLAG(absl::Duration, reconnect_max, absl::Seconds(10), "longest delay between reconnects");
ABSL_FLAG(std::string, log_level, "warning",
          "library log level on stderr: debug, info, warning, error");

namespace {

namespace asio = ::cqrs::asio;
namespace net = ::cqrs::net;
using ::cqrs::v1::EventEnvelope;

constexpr int kExitUsage = 2;
const cli::FlagSet kFlags{.files = {"event_listener/main.cc"}, .repeatable = {"channel"}};

constexpr char kUsage[] =
    "cqrs_event_listener: prints the events of an event gateway's channels, one line each, and\n"
    "resumes after its last event when the connection comes back.\n"
    "\n"
    "  cqrs_event_listener --name=A [--url=ws://127.0.0.1:8080/events] [--channel=users]\n"
    "\n"
    "Flags:\n";

absl::StatusOr<cqrs::LogLevel> LogLevelOf(const std::string& name) {
  if (name == "debug") return cqrs::LogLevel::kDebug;
  if (name == "info") return cqrs::LogLevel::kInfo;
  if (name == "warning") return cqrs::LogLevel::kWarning;
  if (name == "error") return cqrs::LogLevel::kError;
  return absl::InvalidArgumentError(
      absl::StrCat("--log_level must be debug, info, warning or error, not '", name, "'"));
}

absl::string_view TypeName(absl::string_view type_url) {
  const std::size_t slash = type_url.rfind('/');
  return slash == absl::string_view::npos ? type_url : type_url.substr(slash + 1);
}

// Prints what a subscriber sees. Lives as long as the subscriber's Run().
class Listener {
 public:
  Listener(std::string name, std::string channels)
      : name_(std::move(name)),
        channels_(std::move(channels)),
        schemas_({users::v1::UserCreated::descriptor()->file()}) {}

  void Attach(net::EventSubscriber& subscriber) {
    subscriber_ = &subscriber;
    // The user events this listener knows by type; every other event goes to OnAny.
    On<users::v1::UserCreated>([](const users::v1::UserCreated& created) {
      return absl::StrCat("User '", created.name(), "' created (id ", created.user_id(), ")");
    });
    On<users::v1::UserRenamed>([](const users::v1::UserRenamed& renamed) {
      return absl::StrCat("User '", renamed.old_name(), "' renamed to '", renamed.new_name(),
                          "' (id ", renamed.user_id(), ")");
    });
    On<users::v1::UserDeleted>([](const users::v1::UserDeleted& deleted) {
      return absl::StrCat("User '", deleted.name(), "' deleted (id ", deleted.user_id(), ")");
    });
    subscriber.OnAny([this](const EventEnvelope& event) {
      const absl::string_view type = TypeName(event.payload().type_url());
      if (typed_.contains(type)) return;
      absl::StatusOr<std::string> json = schemas_.PayloadJson(event.payload());
      PrintEvent(event, json.ok() ? *json
                                  : absl::StrCat("(", event.payload().value().size(), " bytes; ",
                                                 json.status().message(), ")"));
    });
    subscriber.OnConnected([this](const cqrs::v1::Subscribed&) {
      Print(absl::StrCat(subscriptions_++ == 0 ? "" : "reconnected: ", "subscribed to ", channels_,
                         " at offset ", subscriber_->last_offset(), " (epoch ",
                         subscriber_->epoch(), ")"));
      connected_ = true;
    });
    subscriber.OnDisconnected([this](const absl::Status& status) {
      if (status.code() != absl::StatusCode::kUnavailable) {
        Print(absl::StrCat("giving up: ", status.message()));
      } else if (connected_) {
        Print(absl::StrCat("connection lost: ", status.message(), "; reconnecting"));
      } else {
        Print(absl::StrCat("not connected: ", status.message(), "; retrying"));
      }
      connected_ = false;
    });
    subscriber.OnGap([this](const net::EventGap& gap) {
      if (gap.new_epoch != gap.epoch) {
        Print(absl::StrCat("epoch changed from ", gap.epoch, " to ", gap.new_epoch,
                           " (the server lost its history): events after offset ", gap.after_offset,
                           " of epoch ", gap.epoch, " are gone; going on from offset ",
                           gap.earliest_offset));
      } else {
        Print(absl::StrCat("gap: events ", gap.after_offset + 1, " to ", gap.earliest_offset - 1,
                           " are no longer held by the gateway; going on from offset ",
                           gap.earliest_offset));
      }
    });
  }

  void Print(absl::string_view text) {
    const std::string line = absl::StrCat("[", name_, "] ", text, "\n");
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  }

 private:
  // Registers a typed handler whose `describe` turns the event into its line's text.
  template <typename Event, typename Describe>
  void On(Describe describe) {
    typed_.insert(Event::descriptor()->full_name());
    subscriber_->On<Event>([this, describe](const Event& payload, const EventEnvelope& event) {
      PrintEvent(event, describe(payload));
    });
  }

  void PrintEvent(const EventEnvelope& event, absl::string_view text) {
    Print(absl::StrCat("#", event.offset(), " ", TypeName(event.payload().type_url()), "  ", text));
  }

  const std::string name_;
  const std::string channels_;
  cli::Schemas schemas_;
  absl::flat_hash_set<std::string> typed_;
  net::EventSubscriber* subscriber_ = nullptr;
  int subscriptions_ = 0;
  bool connected_ = false;
};

void Fail(absl::string_view message) {
  std::fprintf(stderr, "cqrs_event_listener: %.*s\n", static_cast<int>(message.size()),
               message.data());
}

}  // namespace

int main(int argc, char** argv) {
  absl::StatusOr<cli::Args> args = cli::ParseArgs(argc, argv, kFlags);
  if (!args.ok()) {
    Fail(args.status().message());
    return kExitUsage;
  }
  if (args->help) {
    std::fputs(absl::StrCat(kUsage, cli::FlagsHelp(kFlags, {})).c_str(), stdout);
    return 0;
  }
  if (!args->positional.empty()) {
    Fail(absl::StrCat("unexpected argument '", args->positional[0], "' (see --help)"));
    return kExitUsage;
  }
  absl::StatusOr<cqrs::LogLevel> log_level = LogLevelOf(absl::GetFlag(FLAGS_log_level));
  if (!log_level.ok()) {
    Fail(log_level.status().message());
    return kExitUsage;
  }
  cqrs::SetLogLevel(*log_level);

  net::EventSubscriberOptions options;
  options.url = absl::GetFlag(FLAGS_url);
  options.channels = absl::GetFlag(FLAGS_channel);
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format == "json") {
    options.format = net::EventFormat::kJson;
  } else if (format != "proto") {
    Fail(absl::StrCat("--format must be proto or json, not '", format, "'"));
    return kExitUsage;
  }
  const absl::Duration delay = absl::GetFlag(FLAGS_reconnect_delay);
  const absl::Duration max_delay = absl::GetFlag(FLAGS_reconnect_max);
  if (delay <= absl::ZeroDuration() || max_delay < delay) {
    Fail("--reconnect_delay must be positive and at most --reconnect_max");
    return kExitUsage;
  }
  options.reconnect.initial = absl::ToChronoMilliseconds(delay);
  options.reconnect.max = absl::ToChronoMilliseconds(max_delay);
  options.subscription_id = absl::StrCat("listener-", absl::GetFlag(FLAGS_name));
  // A restarted server (new epoch) or a log that dropped what we missed: say so and go on.
  options.on_offset_unavailable = net::OffsetUnavailablePolicy::kFromEarliest;
  Listener listener(absl::GetFlag(FLAGS_name), absl::StrJoin(options.channels, ","));

  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<net::EventSubscriber>> created =
      net::EventSubscriber::Create(io.get_executor(), std::move(options));
  if (!created.ok()) {
    Fail(created.status().message());
    return kExitUsage;
  }
  std::shared_ptr<net::EventSubscriber> subscriber = *std::move(created);
  listener.Attach(*subscriber);

  // The first signal stops the subscriber (closing handshake included); a second one quits.
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int) {
    if (ec) return;
    subscriber->Stop();
    signals.async_wait([&io](const boost::system::error_code& again, int) {
      if (!again) io.stop();
    });
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
    Fail(result.message());
    return 1;
  }
  listener.Print(absl::StrCat("stopped at offset ", subscriber->last_offset(), " (epoch ",
                              subscriber->epoch(), ")"));
  return 0;
}
