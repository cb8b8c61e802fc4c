// File: cqrs/net/event_gateway.h
//
// The event gateway: HTTP and WebSocket on one port. `GET /events` upgrades to WebSocket and
// streams the events of an EventLog (through its FanoutHub) to subscribers; `GET /healthz`
// answers 200; routes added with Route() serve the rest; every other path is 404.
//
//   cqrs::InMemoryEventLog log;
//   cqrs::FanoutHub hub(log);
//   cqrs::net::EventGateway gateway(hub, {.port = 8080, .allowed_origins =
//   {"http://localhost:8080"}}); CQRS_RETURN_IF_ERROR(gateway.Start());
//   ... gateway.Shutdown();
//
// WebSocket protocol (proto/README.md, "Event gateway"): subprotocol `cqrs.v1.json` (text
// frames, protobuf's canonical JSON) or `cqrs.v1.proto` (binary frames); none means JSON. The
// client sends cqrs.v1.ClientMessage (subscribe / unsubscribe / ping), the gateway answers with
// cqrs.v1.ServerMessage (subscribed / unsubscribed / event / error / pong). A subscribe with
// `from_offset` replays the retained events after it and then goes live, with no gap and no
// duplicate. Every subscriber has a bounded outbound queue: one that falls `max_queue_bytes`
// behind is closed with 1013 (try again later) and resumes from its last offset.
//
// Threads: `threads` event loops; each connection lives on one. Events are serialized once per
// wire format and the same bytes go to every subscriber; all events pending for a subscriber
// leave in one gathered socket write.

#ifndef CQRS_NET_EVENT_GATEWAY_H_
#define CQRS_NET_EVENT_GATEWAY_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "cqrs/core/asio.h"
#include "cqrs/core/fanout_hub.h"

namespace cqrs::net {

struct EventGatewayOptions {
  // Address to listen on, and port (0: chosen by the kernel, see port()).
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;
  // Event-loop threads; 0 means one per core.
  unsigned threads = 0;
  // Open connections (HTTP and WebSocket); beyond it a request gets 503 and the connection closes.
  std::uint32_t max_connections = 10'000;
  // Largest WebSocket message a client may send (checked from the frame header, before any of
  // it is buffered): close 1009. Also the largest HTTP request body (413).
  std::size_t max_message_bytes = std::size_t{1} << 20;
  // Unsent event bytes per subscriber; beyond it the subscriber is closed with 1013.
  std::size_t max_queue_bytes = std::size_t{1} << 20;
  // Flow control (net::Server pauses the command path while subscribers that keep up are
  // behind): a subscriber whose socket has accepted nothing for this long stops counting and
  // is left to fall behind, up to max_queue_bytes.
  std::chrono::milliseconds slow_consumer_grace{100};
  // Malformed client messages each get an error and the connection stays open, up to this
  // many per connection; the next one closes it (1008), so a broken client cannot flood the
  // gateway (or its log) forever.
  std::uint32_t max_malformed_messages = 16;
  // Subscriptions per connection, and channel patterns per subscription.
  std::uint32_t max_subscriptions = 64;
  std::uint32_t max_channels = 64;
  // The HTTP request (the upgrade included) must arrive completely within this.
  std::chrono::milliseconds handshake_timeout{10'000};
  // A WebSocket connection the client has not sent anything on for idle_timeout / 2 gets a
  // ping; one silent for idle_timeout (pongs count) is closed (1001). HTTP keep-alive
  // connections are closed after idle_timeout.
  std::chrono::milliseconds idle_timeout{60'000};
  // A socket write that makes no progress for this long closes the connection.
  std::chrono::milliseconds write_timeout{10'000};
  // Browsers' origins allowed to connect ("http://localhost:8080"). A request that carries an
  // Origin header not in this list gets 403; requests without one (native clients) are allowed.
  // Empty: every request with an Origin header is rejected.
  std::vector<std::string> allowed_origins;
  // On Shutdown: subscribers get a close (1001 going away); connections still open after this
  // are dropped.
  std::chrono::milliseconds shutdown_grace{1'000};
};

struct EventGatewayStats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_refused = 0;  // Over max_connections.
  std::uint64_t connections_open = 0;
  std::uint64_t subscribers_open = 0;  // Open WebSocket connections.
  std::uint64_t events_delivered = 0;  // Event messages written, over all subscribers.
  std::uint64_t slow_consumers_closed = 0;
  std::uint64_t http_requests = 0;
};

// A plain HTTP request as a Route handler sees it.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // Path and query, as sent.
  std::string path;    // Target without the query.
  std::string content_type;
  std::string body;
  // Every header field, names in lower case, in the order received.
  std::vector<std::pair<std::string, std::string>> headers;

  // The first value of header `name` (any case); empty when absent.
  absl::string_view Header(absl::string_view name) const;
};

struct HttpResponse {
  unsigned status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

class EventGateway {
 public:
  // Runs on a gateway thread; may co_await (e.g. send a command). Exceptions become 500.
  using Handler = std::function<Awaitable<HttpResponse>(const HttpRequest&)>;

  // `hub` (and its log) must outlive the gateway.
  explicit EventGateway(FanoutHub& hub, EventGatewayOptions options = {});
  // Shuts down if still running.
  ~EventGateway();
  EventGateway(const EventGateway&) = delete;
  EventGateway& operator=(const EventGateway&) = delete;

  // Serves `method` requests whose path equals `path`, or starts with it when it ends in '/'
  // ("/commands/"). Longest match wins. Call before Start(). /events and /healthz are built in.
  void Route(std::string method, std::string path, Handler handler);

  // Binds, listens, starts the threads. kUnavailable when the address cannot be bound,
  // kFailedPrecondition when already started.
  absl::Status Start();
  std::uint16_t port() const;
  // Stops accepting, closes every WebSocket with 1001, waits up to shutdown_grace, then drops
  // what is left and stops the threads. Blocks until done; idempotent; not from a gateway thread.
  void Shutdown();

  EventGatewayStats stats() const;
  const EventGatewayOptions& options() const;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace cqrs::net

#endif  // CQRS_NET_EVENT_GATEWAY_H_
