#include "cqrs/net/event_subscriber.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <tuple>

#include <google/protobuf/util/json_util.h>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/websocket/error.hpp>
#include <boost/beast/websocket/rfc6455.hpp>
#include <boost/beast/websocket/stream.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url_view.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "cqrs/core/channel_pattern.h"
#include "cqrs/core/log.h"
#include "cqrs/core/status_macros.h"

namespace cqrs::net {
namespace {

namespace beast = ::boost::beast;
namespace websocket = ::boost::beast::websocket;
namespace http = ::boost::beast::http;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using WaitHandler = asio::any_completion_handler<void(absl::Status)>;
using WebSocket = websocket::stream<beast::tcp_stream>;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
constexpr char kProtoSubprotocol[] = "cqrs.v1.proto";
constexpr char kJsonSubprotocol[] = "cqrs.v1.json";
// OFFSET_UNAVAILABLE answers followed on one connection before it is dropped (each one moves the
// position forward; more means a gateway that keeps contradicting itself).
constexpr int kMaxResubscribes = 8;

// Where a ws:// URL points.
struct Target {
  std::string host;         // For the resolver: no brackets around an IPv6 address.
  std::string port;         // Decimal.
  std::string host_header;  // As in the URL, with the port when it has one.
  std::string resource;     // Path and query; "/events" when the path is empty.
};

absl::StatusOr<Target> ParseUrl(absl::string_view text) {
  auto parsed = boost::urls::parse_uri(boost::urls::string_view(text.data(), text.size()));
  if (!parsed) {
    return absl::InvalidArgumentError(
        absl::StrCat("url '", text, "' is not a valid URI: ", parsed.error().message()));
  }
  const boost::urls::url_view url = *parsed;
  if (url.scheme_id() == boost::urls::scheme::wss) {
    return absl::InvalidArgumentError(
        absl::StrCat("url '", text, "': wss:// (TLS) is not supported yet; use ws://"));
  }
  if (url.scheme_id() != boost::urls::scheme::ws) {
    return absl::InvalidArgumentError(absl::StrCat("url '", text, "' must start with ws://"));
  }
  if (url.host_address().empty()) {
    return absl::InvalidArgumentError(absl::StrCat("url '", text, "' names no host"));
  }
  if (url.has_userinfo()) {
    return absl::InvalidArgumentError(
        absl::StrCat("url '", text, "': credentials in the URL are not supported"));
  }
  if (url.has_fragment()) {
    return absl::InvalidArgumentError(
        absl::StrCat("url '", text, "': a WebSocket URL has no fragment (#...)"));
  }
  if (url.has_port() && url.port_number() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("url '", text, "': the port must be 1 to 65535"));
  }
  Target target;
  target.host = url.host_address();
  target.port = url.has_port() ? std::string(url.port()) : "80";
  target.host_header = std::string(url.encoded_host_and_port());
  target.resource = url.encoded_path().empty() ? "/events" : std::string(url.encoded_path());
  if (url.has_query()) absl::StrAppend(&target.resource, "?", std::string(url.encoded_query()));
  return target;
}

// The type name in a type URL ("type.googleapis.com/users.v1.UserCreated").
absl::string_view TypeName(absl::string_view type_url) {
  const std::size_t slash = type_url.rfind('/');
  return slash == absl::string_view::npos ? type_url : type_url.substr(slash + 1);
}

std::string CurrentException() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

}  // namespace

struct EventSubscriber::Impl : std::enable_shared_from_this<Impl> {
  struct TypeEntry {
    // The payload is parsed into this once per event, however many handlers there are.
    std::unique_ptr<google::protobuf::Message> scratch;
    std::vector<TypedHandler> handlers;
  };
  struct Waiter {
    explicit Waiter(const asio::any_io_executor& ex) : timer(ex) {}
    std::uint64_t offset = 0;
    std::uint64_t epoch = 0;  // 0: the first epoch that becomes known.
    // Optional, to be emplaced: Asio 1.26's any_completion_handler move assignment recurses.
    std::optional<WaitHandler> handler;
    asio::steady_timer timer;
  };
  // How one connection (or attempt) ended.
  struct Outcome {
    absl::Status status;
    bool fatal = false;       // Run() returns `status`.
    bool subscribed = false;  // Got as far as Subscribed.
    Clock::time_point subscribed_at;
  };
  enum class Phase { kIdle, kConnecting, kStreaming };

  Impl(asio::any_io_executor executor, EventSubscriberOptions opts, Target where)
      : ex(std::move(executor)),
        options(std::move(opts)),
        target(std::move(where)),
        subprotocol(options.format == EventFormat::kProto ? kProtoSubprotocol : kJsonSubprotocol),
        backoff_timer(ex),
        close_done(ex),
        random(std::random_device{}()) {
    if (options.from_offset) {
      has_position = true;
      position = *options.from_offset;
      current_epoch = options.epoch;
    }
  }

  std::string Where() const { return options.url; }

  // --- registration ---------------------------------------------------------------------------

  bool CanRegister(absl::string_view what) const {
    if (!running && !finished) return true;
    Log(LogLevel::kError, absl::StrCat("event subscriber: ", what,
                                       " after Run() was called is ignored; register before"));
    return false;
  }

  // --- Reached waiters ------------------------------------------------------------------------

  bool Satisfied(std::uint64_t offset, std::uint64_t epoch) const {
    return offset == 0 ||
           (has_position && (epoch == 0 || epoch == current_epoch) && position >= offset);
  }

  void AddWaiter(std::uint64_t offset, std::uint64_t epoch, std::chrono::milliseconds timeout,
                 WaitHandler handler) {
    const std::uint64_t id = next_waiter++;
    Waiter& w =
        waiters
            .emplace(std::piecewise_construct, std::forward_as_tuple(id), std::forward_as_tuple(ex))
            .first->second;
    w.offset = offset;
    w.epoch = epoch == 0 ? current_epoch : epoch;
    w.handler.emplace(std::move(handler));
    order.emplace(w.epoch, w.offset, id);
    auto slot = asio::get_associated_cancellation_slot(*w.handler);
    if (slot.is_connected()) {
      slot.assign([weak = weak_from_this(), id](asio::cancellation_type) {
        if (auto impl = weak.lock())
          impl->Complete(id, absl::CancelledError("Reached was cancelled"));
      });
    }
    if (timeout < std::chrono::hours(24 * 365)) {
      w.timer.expires_after(timeout);
      w.timer.async_wait([weak = weak_from_this(), id](const boost::system::error_code& ec) {
        if (ec) return;
        if (auto impl = weak.lock()) impl->TimedOut(id);
      });
    }
  }

  void TimedOut(std::uint64_t id) {
    const auto it = waiters.find(id);
    if (it == waiters.end()) return;
    std::string where = has_position ? absl::StrCat("the subscriber is at offset ", position,
                                                    " of epoch ", current_epoch)
                                     : std::string("the subscriber has no position yet");
    Complete(id, absl::DeadlineExceededError(absl::StrCat("offset ", it->second.offset,
                                                          " of epoch ", it->second.epoch,
                                                          " was not delivered in time; ", where)));
  }

  void Complete(std::uint64_t id, absl::Status status) {
    const auto it = waiters.find(id);
    if (it == waiters.end()) return;
    std::optional<WaitHandler> handler = std::move(it->second.handler);
    order.erase({it->second.epoch, it->second.offset, id});
    waiters.erase(it);  // Cancels its timer.
    if (!handler || !*handler) return;
    asio::get_associated_cancellation_slot(*handler).clear();
    asio::post(ex, [handler = std::move(*handler), status = std::move(status)]() mutable {
      std::move(handler)(std::move(status));
    });
  }

  // Completes the waiters of `epoch` with an offset up to `offset` (all when `offset` is max).
  template <typename MakeStatus>
  void CompleteUpTo(std::uint64_t epoch, std::uint64_t offset, MakeStatus make_status) {
    std::vector<std::pair<std::uint64_t, std::uint64_t>> done;  // (id, offset)
    for (auto it = order.lower_bound({epoch, 0, 0});
         it != order.end() && std::get<0>(*it) == epoch && std::get<1>(*it) <= offset; ++it) {
      done.emplace_back(std::get<2>(*it), std::get<1>(*it));
    }
    for (const auto& [id, waited] : done) Complete(id, make_status(waited));
  }

  void Wake() {
    if (!has_position || order.empty()) return;
    CompleteUpTo(current_epoch, position, [](std::uint64_t) { return absl::OkStatus(); });
  }

  void CompleteAll(const absl::Status& status) {
    while (!waiters.empty()) Complete(waiters.begin()->first, status);
  }

  // Waiters of "the first known epoch" wait for `epoch` from now on.
  void BindEpoch(std::uint64_t epoch) {
    if (epoch == 0) return;
    std::vector<std::uint64_t> unbound;
    for (auto it = order.lower_bound({0, 0, 0}); it != order.end() && std::get<0>(*it) == 0; ++it) {
      unbound.push_back(std::get<2>(*it));
    }
    for (const std::uint64_t id : unbound) {
      Waiter& w = waiters.at(id);
      order.erase({0, w.offset, id});
      w.epoch = epoch;
      order.emplace(epoch, w.offset, id);
    }
  }

  // --- position -------------------------------------------------------------------------------

  // Jumps over undelivered events to just before `earliest` of `epoch`.
  void SkipTo(std::uint64_t epoch, std::uint64_t earliest) {
    const std::uint64_t after = earliest == 0 ? 0 : earliest - 1;
    const bool epoch_changed = current_epoch != 0 && epoch != current_epoch;
    if (epoch_changed || (has_position && after < position)) {
      const std::uint64_t old_epoch = current_epoch;
      if (epoch_changed) abandoned_epochs.insert(old_epoch);
      CompleteUpTo(old_epoch, std::numeric_limits<std::uint64_t>::max(), [&](std::uint64_t offset) {
        return absl::AbortedError(absl::StrCat(
            "offset ", offset, " of epoch ", old_epoch, " will not be delivered: the event log ",
            epoch_changed ? absl::StrCat("moved to epoch ", epoch) : std::string("was rewound"),
            " (its history was lost)"));
      });
    }
    BindEpoch(epoch);
    CompleteUpTo(epoch, after, [&](std::uint64_t offset) {
      return absl::DataLossError(absl::StrCat("offset ", offset, " of epoch ", epoch,
                                              " is no longer retained by ", Where(),
                                              " (earliest: ", earliest, "); it was skipped"));
    });
    current_epoch = epoch;
    position = after;
    has_position = true;
  }

  // --- delivery -------------------------------------------------------------------------------

  void Deliver(const v1::EventEnvelope& event) {
    if (has_position && event.offset() <= position &&
        (event.epoch() == 0 || current_epoch == 0 || event.epoch() == current_epoch)) {
      ++stats.duplicates;
      return;
    }
    if (current_epoch == 0 && event.epoch() != 0) {
      BindEpoch(event.epoch());
      current_epoch = event.epoch();
    }
    const auto entry = typed.find(TypeName(event.payload().type_url()));
    if (entry != typed.end()) {
      google::protobuf::Message& payload = *entry->second.scratch;
      if (!payload.ParseFromString(event.payload().value())) {
        ++stats.handler_errors;
        Log(LogLevel::kWarning, absl::StrCat("event subscriber: the payload of event ",
                                             event.offset(), " (", event.payload().type_url(),
                                             ") does not parse; its typed handlers "
                                             "were skipped"));
      } else {
        for (TypedHandler& handler : entry->second.handlers) {
          try {
            handler(payload, event);
          } catch (...) {
            HandlerFailed(event, CurrentException());
          }
        }
      }
    }
    for (auto& handler : any_handlers) {
      try {
        handler(event);
      } catch (...) {
        HandlerFailed(event, CurrentException());
      }
    }
    position = event.offset();
    has_position = true;
    ++stats.events;
    Wake();
  }

  void HandlerFailed(const v1::EventEnvelope& event, const std::string& what) {
    ++stats.handler_errors;
    Log(LogLevel::kError,
        absl::StrCat("event subscriber: a handler of event ", event.offset(), " (",
                     TypeName(event.payload().type_url()), ") threw: ", what));
  }

  template <typename Callback, typename Arg>
  void Notify(Callback& callback, const Arg& arg, absl::string_view name) {
    if (!callback) return;
    try {
      callback(arg);
    } catch (...) {
      Log(LogLevel::kError,
          absl::StrCat("event subscriber: the ", name, " callback threw: ", CurrentException()));
    }
  }

  // --- messages -------------------------------------------------------------------------------

  absl::Status Encode(const v1::ClientMessage& message, std::string& out) const {
    if (options.format == EventFormat::kProto) {
      out = message.SerializeAsString();
      return absl::OkStatus();
    }
    out.clear();
    const auto status = google::protobuf::util::MessageToJsonString(message, &out);
    if (!status.ok()) return absl::InternalError(status.ToString());
    return absl::OkStatus();
  }

  // Parses what the stream just read, by its frame type.
  bool Decode(const beast::flat_buffer& buffer, v1::ServerMessage& message) {
    const auto data = buffer.cdata();
    const char* bytes = static_cast<const char*>(data.data());
    if (ws->got_binary()) {
      if (message.ParseFromArray(bytes, static_cast<int>(data.size()))) return true;
      Log(LogLevel::kWarning,
          absl::StrCat("event subscriber: a binary message from ", Where(), " does not parse"));
      return false;
    }
    google::protobuf::util::JsonParseOptions parse_options;
    parse_options.ignore_unknown_fields = true;
    message.Clear();
    const auto status = google::protobuf::util::JsonStringToMessage(
        google::protobuf::StringPiece(bytes, data.size()), &message, parse_options);
    if (status.ok()) return true;
    Log(LogLevel::kWarning,
        absl::StrCat("event subscriber: a JSON message from ", Where(),
                     " does not parse (is its payload type linked into this program?): ",
                     status.ToString()));
    return false;
  }

  v1::ClientMessage MakeSubscribe() const {
    v1::ClientMessage message;
    v1::Subscribe& subscribe = *message.mutable_subscribe();
    subscribe.set_subscription_id(options.subscription_id);
    for (const std::string& channel : options.channels) subscribe.add_channels(channel);
    if (has_position) {
      subscribe.set_from_offset(position);
      subscribe.set_epoch(current_epoch);
    }
    return message;
  }

  // --- connection -----------------------------------------------------------------------------

  // Coroutines keep the subscriber alive with a local reference taken before their first
  // suspension (not a by-value parameter: GCC 12 can destroy those twice).
  Awaitable<absl::Status> Loop() {
    auto self = shared_from_this();
    const asio::cancellation_state cancellation = co_await asio::this_coro::cancellation_state;
    auto delay = std::chrono::duration<double, std::milli>(options.reconnect.initial);
    while (!stopped) {
      Outcome outcome = co_await Session();
      phase = Phase::kIdle;
      if (stopped) break;
      if (cancellation.cancelled() != asio::cancellation_type::none) break;
      if (outcome.fatal) {
        Notify(on_disconnected, outcome.status, "OnDisconnected");
        co_return outcome.status;
      }
      Log(LogLevel::kInfo, absl::StrCat("event subscriber: ", outcome.status.message()));
      Notify(on_disconnected, outcome.status, "OnDisconnected");
      if (stopped) break;
      // A subscription that lived a while reconnects at once (e.g. after a slow-consumer close);
      // one dropped right away counts as a failed attempt, so no tight reconnect loop.
      if (outcome.subscribed && Clock::now() - outcome.subscribed_at >= options.reconnect.initial) {
        delay = options.reconnect.initial;
        continue;
      }
      std::uniform_real_distribution<double> spread(-options.reconnect.jitter,
                                                    options.reconnect.jitter);
      backoff_timer.expires_after(
          std::chrono::duration_cast<Clock::duration>(delay * (1.0 + spread(random))));
      co_await backoff_timer.async_wait(kUse);
      if (cancellation.cancelled() != asio::cancellation_type::none) break;
      delay = std::min(delay * options.reconnect.multiplier,
                       std::chrono::duration<double, std::milli>(options.reconnect.max));
    }
    if (!stopped) {  // Cancelled.
      Stop();
      co_return absl::CancelledError("Run() was cancelled");
    }
    co_return absl::OkStatus();
  }

  // One connection: establish, subscribe, stream until it ends.
  Awaitable<Outcome> Session() {
    Outcome outcome;
    phase = Phase::kConnecting;
    // One deadline for resolve + connect + handshake + Subscribed: on expiry the socket closes
    // and the step in progress fails. Flags shared with the timer's handler, which may run after
    // this coroutine has moved on.
    asio::steady_timer deadline(ex);
    auto fired = std::make_shared<bool>(false);
    auto armed = std::make_shared<bool>(true);
    deadline.expires_after(options.connect_timeout);
    deadline.async_wait([this, fired, armed](const boost::system::error_code& ec) {
      if (ec || !*armed) return;
      *fired = true;
      if (resolver) resolver->cancel();
      if (ws) beast::get_lowest_layer(*ws).close();
    });
    outcome = co_await Establish();
    *armed = false;
    deadline.cancel();
    if (*fired) {
      outcome.fatal = false;
      outcome.status = absl::UnavailableError(absl::StrCat("connecting to ", Where(), " took over ",
                                                           options.connect_timeout.count(), "ms"));
    }
    if (outcome.status.ok() && !stopped) {
      outcome.subscribed = true;
      outcome.subscribed_at = Clock::now();
      outcome.status = co_await Stream();
      outcome.fatal = outcome.status.code() == absl::StatusCode::kResourceExhausted;
    }
    connected = false;
    while (close_pending) co_await close_done.async_wait(kUse);
    // Nothing is pending on the stream any more; destroying it also ends its idle timer.
    ws.reset();
    co_return outcome;
  }

  Awaitable<Outcome> Establish() {
    Outcome outcome;
    resolver.emplace(ex);
    auto [resolve_error, endpoints] =
        co_await resolver->async_resolve(target.host, target.port, kUse);
    resolver.reset();
    if (resolve_error) {
      outcome.status = absl::UnavailableError(
          absl::StrCat("cannot resolve ", target.host, ": ", resolve_error.message()));
      co_return outcome;
    }
    if (stopped) co_return outcome;
    ws.emplace(ex);
    auto [connect_error, endpoint] =
        co_await beast::get_lowest_layer(*ws).async_connect(endpoints, kUse);
    if (connect_error) {
      outcome.status = absl::UnavailableError(
          absl::StrCat("cannot connect to ", Where(), ": ", connect_error.message()));
      co_return outcome;
    }
    boost::system::error_code ignored;
    beast::get_lowest_layer(*ws).socket().set_option(tcp::no_delay(true), ignored);
    // The WebSocket layer has timeouts of its own (handshakes, idle pings): none on the socket.
    beast::get_lowest_layer(*ws).expires_never();
    websocket::stream_base::timeout timeouts{};
    timeouts.handshake_timeout = options.connect_timeout;
    timeouts.idle_timeout = options.idle_timeout.count() > 0 ? Clock::duration(options.idle_timeout)
                                                             : websocket::stream_base::none();
    timeouts.keep_alive_pings = true;
    ws->set_option(timeouts);
    ws->set_option(websocket::stream_base::decorator(
        [protocol = std::string(subprotocol)](websocket::request_type& request) {
          request.set(http::field::sec_websocket_protocol, protocol);
          request.set(http::field::user_agent, "cqrs-event-subscriber");
        }));
    ws->read_message_max(options.max_message_bytes);
    ws->binary(options.format == EventFormat::kProto);
    websocket::response_type response;
    auto [handshake_error] =
        co_await ws->async_handshake(response, target.host_header, target.resource, kUse);
    if (handshake_error) {
      const unsigned code = response.result_int();
      if (handshake_error == websocket::error::upgrade_declined && code >= 400 && code < 500 &&
          code != 408 && code != 429) {
        outcome.fatal = true;
        outcome.status = absl::FailedPreconditionError(
            absl::StrCat(Where(), " refused the WebSocket upgrade with HTTP ", code, " ",
                         std::string(response.reason())));
      } else {
        outcome.status = absl::UnavailableError(absl::StrCat(
            "WebSocket handshake with ", Where(), " failed: ", handshake_error.message(),
            code != 0 ? absl::StrCat(" (HTTP ", code, ")") : std::string()));
      }
      co_return outcome;
    }
    const auto chosen = response[http::field::sec_websocket_protocol];
    if (absl::string_view(chosen.data(), chosen.size()) != subprotocol) {
      outcome.fatal = true;
      outcome.status = absl::FailedPreconditionError(
          absl::StrCat(Where(), " did not accept the subprotocol ", subprotocol, " (it answered '",
                       absl::string_view(chosen.data(), chosen.size()), "')"));
      co_return outcome;
    }
    outcome.status = co_await Subscribe(outcome.fatal);
    co_return outcome;
  }

  // Sends Subscribe until the gateway answers Subscribed (following OFFSET_UNAVAILABLE under
  // kFromEarliest). Sets `fatal` when Run() should end with the returned error.
  Awaitable<absl::Status> Subscribe(bool& fatal) {
    v1::ServerMessage message;
    std::string bytes;
    for (int attempt = 0; attempt <= kMaxResubscribes; ++attempt) {
      const v1::ClientMessage subscribe = MakeSubscribe();
      CQRS_CO_RETURN_IF_ERROR(Encode(subscribe, bytes));
      auto [write_error, written] = co_await ws->async_write(asio::buffer(bytes), kUse);
      if (write_error) {
        co_return absl::UnavailableError(
            absl::StrCat("sending Subscribe to ", Where(), ": ", write_error.message()));
      }
      for (;;) {
        auto [read_error, n] = co_await ws->async_read(buffer, kUse);
        if (read_error) co_return ReadFailed(read_error, fatal);
        const bool decoded = Decode(buffer, message);
        buffer.consume(buffer.size());
        if (!decoded) continue;
        if (message.has_subscribed()) {
          if (absl::Status status = Subscribed(message.subscribed()); !status.ok()) {
            fatal = true;
            co_return status;
          }
          co_return absl::OkStatus();
        }
        if (message.has_event()) {
          Deliver(message.event());
          continue;
        }
        if (!message.has_error()) continue;
        const v1::GatewayError& error = message.error();
        if (error.code() != v1::GatewayError::OFFSET_UNAVAILABLE) {
          fatal = true;
          co_return absl::InvalidArgumentError(absl::StrCat(
              Where(), " rejected the subscription: ", v1::GatewayError::Code_Name(error.code()),
              ": ", error.message()));
        }
        if (options.on_offset_unavailable == OffsetUnavailablePolicy::kFail) {
          fatal = true;
          co_return absl::OutOfRangeError(
              absl::StrCat(Where(), " cannot resume after offset ", position, " of epoch ",
                           current_epoch, ": ", error.message(), " (earliest retained offset ",
                           error.earliest_offset(), ", epoch ", error.epoch(), ")"));
        }
        EventGap gap{.epoch = current_epoch,
                     .after_offset = position,
                     .new_epoch = error.epoch() != 0 ? error.epoch() : current_epoch,
                     .earliest_offset = std::max<std::uint64_t>(error.earliest_offset(), 1),
                     .message = error.message()};
        Log(LogLevel::kWarning,
            absl::StrCat("event subscriber: skipping from offset ", gap.after_offset, " of epoch ",
                         gap.epoch, " to offset ", gap.earliest_offset, " of epoch ", gap.new_epoch,
                         ": ", gap.message));
        SkipTo(gap.new_epoch, gap.earliest_offset);
        ++stats.gaps;
        Notify(on_gap, gap, "OnGap");
        break;  // Subscribe again, from the new position.
      }
      if (stopped) co_return absl::CancelledError("stopped");
    }
    co_return absl::UnavailableError(absl::StrCat(Where(), " answered OFFSET_UNAVAILABLE ",
                                                  kMaxResubscribes + 1, " times in a row"));
  }

  absl::Status Subscribed(const v1::Subscribed& subscribed) {
    if (has_position && current_epoch != 0 && subscribed.epoch() != current_epoch) {
      return absl::InternalError(absl::StrCat(
          Where(), " subscribed under epoch ", subscribed.epoch(), " when asked to resume epoch ",
          current_epoch, " (it should have answered OFFSET_UNAVAILABLE)"));
    }
    if (!has_position) {
      has_position = true;
      position = subscribed.head_offset();
    }
    BindEpoch(subscribed.epoch());
    current_epoch = subscribed.epoch();
    last_subscribed = subscribed;
    ++stats.subscriptions;
    return absl::OkStatus();
  }

  // Reads and delivers until the connection ends; then returns why.
  Awaitable<absl::Status> Stream() {
    phase = Phase::kStreaming;
    connected = true;
    Log(LogLevel::kInfo, absl::StrCat("event subscriber: subscribed to ", Where(), " at offset ",
                                      position, " of epoch ", current_epoch));
    Wake();
    Notify(on_connected, last_subscribed, "OnConnected");
    v1::ServerMessage message;
    bool fatal = false;
    for (;;) {
      auto [read_error, n] = co_await ws->async_read(buffer, kUse);
      if (read_error) co_return ReadFailed(read_error, fatal);
      if (stopped) {  // Closing: drain until the gateway's close frame.
        buffer.consume(buffer.size());
        continue;
      }
      const bool decoded = Decode(buffer, message);
      buffer.consume(buffer.size());
      if (!decoded) continue;
      switch (message.kind_case()) {
        case v1::ServerMessage::kEvent:
          Deliver(message.event());
          break;
        case v1::ServerMessage::kError:
          Log(LogLevel::kWarning, absl::StrCat("event subscriber: ", Where(), " reported ",
                                               v1::GatewayError::Code_Name(message.error().code()),
                                               ": ", message.error().message()));
          break;
        default:
          break;
      }
    }
  }

  absl::Status ReadFailed(const boost::system::error_code& ec, bool& fatal) {
    if (ec == websocket::error::closed) {
      const websocket::close_reason reason = ws->reason();
      const std::string what =
          absl::StrCat(Where(), " closed the connection: ", static_cast<int>(reason.code), " ",
                       std::string(reason.reason.data(), reason.reason.size()));
      if (reason.code == websocket::close_code::try_again_later) {
        Log(LogLevel::kWarning,
            absl::StrCat("event subscriber: ", what,
                         " (this subscriber fell behind); resuming after offset ", position));
      }
      return absl::UnavailableError(what);
    }
    if (ec == websocket::error::message_too_big) {
      fatal = true;
      return absl::ResourceExhaustedError(absl::StrCat(
          "a message from ", Where(), " exceeds max_message_bytes=", options.max_message_bytes,
          " (after offset ", position, ")"));
    }
    return absl::UnavailableError(
        absl::StrCat("the connection to ", Where(), " failed: ", ec.message()));
  }

  void Stop() {
    if (stopped) return;
    stopped = true;
    backoff_timer.cancel();
    if (resolver) resolver->cancel();
    if (ws && phase == Phase::kStreaming) {
      // The reader goes on until the gateway's close frame (or the handshake timeout).
      close_pending = true;
      close_done.expires_at(Clock::time_point::max());
      ws->async_close(websocket::close_code::normal,
                      [self = shared_from_this()](const boost::system::error_code& ec) {
                        if (ec) beast::get_lowest_layer(*self->ws).close();
                        self->close_pending = false;
                        self->close_done.cancel();
                      });
    } else if (ws) {
      beast::get_lowest_layer(*ws).close();
    }
    CompleteAll(absl::CancelledError("the event subscriber was stopped"));
  }

  void Finish(const absl::Status& status) {
    running = false;
    finished = true;
    final_status = status.ok() ? absl::CancelledError("the event subscriber was stopped") : status;
    CompleteAll(final_status);
  }

  asio::any_io_executor ex;
  const EventSubscriberOptions options;
  const Target target;
  const absl::string_view subprotocol;
  absl::flat_hash_map<std::string, TypeEntry> typed;
  std::vector<std::function<void(const v1::EventEnvelope&)>> any_handlers;
  std::function<void(const v1::Subscribed&)> on_connected;
  std::function<void(const absl::Status&)> on_disconnected;
  std::function<void(const EventGap&)> on_gap;

  std::optional<tcp::resolver> resolver;
  std::optional<WebSocket> ws;
  beast::flat_buffer buffer;
  asio::steady_timer backoff_timer;
  asio::steady_timer close_done;
  std::mt19937_64 random;
  v1::Subscribed last_subscribed;

  // Position: every event up to `position` of `current_epoch` was delivered (or precedes the
  // subscription's start).
  bool has_position = false;
  std::uint64_t position = 0;
  std::uint64_t current_epoch = 0;
  // Epochs left behind: their offsets will never be delivered.
  absl::flat_hash_set<std::uint64_t> abandoned_epochs;

  std::map<std::uint64_t, Waiter> waiters;
  std::set<std::tuple<std::uint64_t, std::uint64_t, std::uint64_t>> order;  // epoch, offset, id
  std::uint64_t next_waiter = 0;

  Phase phase = Phase::kIdle;
  bool connected = false;
  bool running = false;
  bool finished = false;
  bool stopped = false;
  bool close_pending = false;
  absl::Status final_status;
  EventSubscriberStats stats;
};

absl::StatusOr<std::shared_ptr<EventSubscriber>> EventSubscriber::Create(
    asio::any_io_executor executor, EventSubscriberOptions options) {
  absl::StatusOr<Target> target = ParseUrl(options.url);
  if (!target.ok()) return target.status();
  if (options.channels.empty()) {
    return absl::InvalidArgumentError("channels: subscribe to at least one channel or pattern");
  }
  for (const std::string& channel : options.channels) {
    if (auto pattern = ChannelPattern::Parse(channel); !pattern.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("channels: '", channel, "': ", pattern.status().message()));
    }
  }
  if (options.subscription_id.empty()) {
    return absl::InvalidArgumentError("subscription_id must not be empty");
  }
  if (options.max_message_bytes == 0) {
    return absl::InvalidArgumentError("max_message_bytes must be positive");
  }
  if (options.connect_timeout.count() <= 0) {
    return absl::InvalidArgumentError("connect_timeout must be positive");
  }
  auto impl = std::make_shared<Impl>(std::move(executor), std::move(options), *std::move(target));
  return std::shared_ptr<EventSubscriber>(new EventSubscriber(std::move(impl)));
}

EventSubscriber::EventSubscriber(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

EventSubscriber::~EventSubscriber() {
  asio::post(impl_->ex, [impl = impl_] { impl->Stop(); });
}

void EventSubscriber::Register(const google::protobuf::Descriptor* type,
                               const google::protobuf::Message* prototype, TypedHandler handler) {
  if (!impl_->CanRegister(absl::StrCat("On<", type->full_name(), ">"))) return;
  Impl::TypeEntry& entry = impl_->typed[type->full_name()];
  if (entry.scratch == nullptr) entry.scratch.reset(prototype->New());
  entry.handlers.push_back(std::move(handler));
}

void EventSubscriber::OnAny(std::function<void(const v1::EventEnvelope&)> handler) {
  if (!impl_->CanRegister("OnAny")) return;
  impl_->any_handlers.push_back(std::move(handler));
}

void EventSubscriber::OnConnected(std::function<void(const v1::Subscribed&)> handler) {
  if (impl_->CanRegister("OnConnected")) impl_->on_connected = std::move(handler);
}

void EventSubscriber::OnDisconnected(std::function<void(const absl::Status&)> handler) {
  if (impl_->CanRegister("OnDisconnected")) impl_->on_disconnected = std::move(handler);
}

void EventSubscriber::OnGap(std::function<void(const EventGap&)> handler) {
  if (impl_->CanRegister("OnGap")) impl_->on_gap = std::move(handler);
}

Awaitable<absl::Status> EventSubscriber::Run() { return RunOn(impl_.get()); }

Awaitable<absl::Status> EventSubscriber::RunOn(Impl* raw) {
  std::shared_ptr<Impl> impl = raw->shared_from_this();
  if (impl->running || impl->finished) {
    co_return absl::FailedPreconditionError("Run() was already called on this event subscriber");
  }
  impl->running = true;
  // Per-operation cancellation of Run() acts as Stop(): operations in progress end with
  // operation_aborted (not an exception), and Loop() notices. The setting belongs to the whole
  // coroutine thread, so the caller's is restored afterwards.
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  absl::Status status = co_await impl->Loop();
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  impl->Finish(status);
  co_return status;
}

void EventSubscriber::Stop() { impl_->Stop(); }

Awaitable<absl::Status> EventSubscriber::Reached(std::uint64_t offset,
                                                 std::chrono::milliseconds timeout) {
  return WaitFor(impl_.get(), offset, 0, timeout);
}

Awaitable<absl::Status> EventSubscriber::Reached(std::uint64_t offset, std::uint64_t epoch,
                                                 std::chrono::milliseconds timeout) {
  return WaitFor(impl_.get(), offset, epoch, timeout);
}

Awaitable<absl::Status> EventSubscriber::WaitFor(Impl* raw, std::uint64_t offset,
                                                 std::uint64_t epoch,
                                                 std::chrono::milliseconds timeout) {
  std::shared_ptr<Impl> impl = raw->shared_from_this();
  if (impl->Satisfied(offset, epoch)) co_return absl::OkStatus();
  if (epoch != 0 && impl->abandoned_epochs.contains(epoch)) {
    co_return absl::AbortedError(absl::StrCat("offset ", offset, " of epoch ", epoch,
                                              " will not be delivered: the event log moved to "
                                              "epoch ",
                                              impl->current_epoch, " (its history was lost)"));
  }
  if (impl->stopped) co_return absl::CancelledError("the event subscriber was stopped");
  if (impl->finished) co_return impl->final_status;
  // The initiation captures only a raw pointer and trivial values: GCC 12 may destroy
  // temporaries of a co_await expression twice.
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(absl::Status)>(
      [raw, offset, epoch, timeout](auto handler) {
        raw->AddWaiter(offset, epoch, timeout, WaitHandler(std::move(handler)));
      },
      asio::use_awaitable);
}

std::uint64_t EventSubscriber::last_offset() const { return impl_->position; }
std::uint64_t EventSubscriber::epoch() const { return impl_->current_epoch; }
bool EventSubscriber::connected() const { return impl_->connected; }
EventSubscriberStats EventSubscriber::stats() const { return impl_->stats; }
const EventSubscriberOptions& EventSubscriber::options() const { return impl_->options; }
asio::any_io_executor EventSubscriber::get_executor() const { return impl_->ex; }

}  // namespace cqrs::net
