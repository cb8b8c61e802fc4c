// Private: what the connections of an EventGateway share, and one event loop ("shard") of it.

#ifndef CQRS_NET_SRC_GATEWAY_INTERNAL_H_
#define CQRS_NET_SRC_GATEWAY_INTERNAL_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "cqrs/core/fanout_hub.h"
#include "cqrs/net/event_gateway.h"

namespace cqrs::net::internal {

class SubscriberSession;

struct GatewayRoute {
  std::string method;
  std::string path;  // Exact, or a prefix when it ends in '/'.
  EventGateway::Handler handler;
};

struct GatewayShared {
  GatewayShared(FanoutHub& h, EventGatewayOptions opts) : hub(h), options(std::move(opts)) {}

  FanoutHub& hub;
  const EventGatewayOptions options;
  std::vector<GatewayRoute> routes;  // Fixed before Start.

  std::atomic<std::uint64_t> connections_accepted{0};
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::uint64_t> events_delivered{0};
  std::atomic<std::uint64_t> slow_consumers_closed{0};
  std::atomic<std::uint64_t> http_requests{0};
  std::atomic<bool> stopping{false};

  // Open connections (HTTP or WebSocket), and subscribers among them. `changed` is signalled
  // whenever `open` drops, for Shutdown.
  std::mutex mutex;
  std::condition_variable changed;
  std::atomic<std::uint32_t> open{0};
  std::atomic<std::uint32_t> subscribers{0};
  // Connections over the limit that are being answered 503 (not counted in `open`).
  std::atomic<std::uint32_t> refusing{0};

  void ConnectionClosed() {
    std::lock_guard lock(mutex);
    open.fetch_sub(1, std::memory_order_relaxed);
    changed.notify_all();
  }
};

// One event loop and the subscribers living on it. Everything except Wake() runs on the loop.
class Shard {
 public:
  explicit Shard(GatewayShared& shared);
  ~Shard();

  GatewayShared& shared() { return shared_; }
  asio::io_context& io() { return io_; }
  // Scratch read buffer: every read on this loop lands here and is decoded before the next read.
  std::span<char> scratch() { return {scratch_.data(), scratch_.size()}; }
  std::chrono::steady_clock::time_point now() const { return now_; }

  // From any thread (the hub's waker): schedules one Pump of every subscriber on this loop;
  // wake-ups arriving before it runs are coalesced into it.
  void Wake();
  // Starts the periodic sweep (pings, idle and write timeouts).
  void StartSweep();
  // Flow control: this loop reports to the hub as `consumer` how far its subscribers that keep
  // up have taken events (the slowest of them).
  void SetConsumer(int consumer) { consumer_ = consumer; }
  int consumer() const { return consumer_; }
  void UpdatePosition();
  // Called by a session whose taken position moved: recomputes when it held the minimum.
  void Advanced(const SubscriberSession* session) {
    if (session == slowest_) UpdatePosition();
  }
  // Closes every subscriber with 1001 (`graceful`) or drops every connection.
  void CloseAll(bool graceful);

  // Sessions that want new events (subscribed, not closing); Wake() skips a loop with none.
  void Following(int delta) { following_.fetch_add(delta, std::memory_order_relaxed); }

  void Add(SubscriberSession* session);
  void Remove(SubscriberSession* session);
  // HTTP connections, so that a forced shutdown can drop them.
  void AddHttp(asio::ip::tcp::socket* socket) { http_.push_back(socket); }
  void RemoveHttp(asio::ip::tcp::socket* socket) { std::erase(http_, socket); }

 private:
  void Sweep();

  GatewayShared& shared_;
  std::vector<char> scratch_;
  std::vector<SubscriberSession*> sessions_;
  std::vector<asio::ip::tcp::socket*> http_;
  std::atomic<bool> wake_pending_{false};
  std::atomic<std::int32_t> following_{0};
  int consumer_ = -1;
  const SubscriberSession* slowest_ = nullptr;
  std::chrono::steady_clock::time_point now_ = std::chrono::steady_clock::now();
  // Destroyed first: pending handlers (which may own sessions) go before the lists they use.
  asio::io_context io_{1};
  asio::steady_timer sweep_timer_{io_};
};

// Serves one accepted connection as HTTP; hands it to a SubscriberSession on upgrade. With
// `refuse`, reads one request (briefly) and answers 503.
void StartHttpConnection(Shard& shard, asio::ip::tcp::socket socket, bool refuse);

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_GATEWAY_INTERNAL_H_
