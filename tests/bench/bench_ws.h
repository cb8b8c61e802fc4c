// File: bench/bench_ws.h
//
// The WebSocket subscribers of cqrs_bench (W3-W5): many connections to the event gateway's
// /events (subprotocol cqrs.v1.proto), each with one subscription, on raw non-blocking sockets
// and epoll, so that they cost the two shared CPUs little: big reads, ws::Decoder for the
// server's frames, and a field scan (no message parsing) for each event's offset and causation
// id.
//
//   WsSubscribers subscribers;
//   absl::Status connected = subscribers.Connect(
//       {.port = server.gateway_port(), .count = 100}, Clock::now() + std::chrono::seconds(30));
//   subscribers.Start(/*threads=*/1, &observer);   // observer.OnEvent for every event
//   ... send commands ...
//   subscribers.Stop();
//
// Not thread-safe: Connect, Start, Stop and Close from one thread. Between Start and Stop the
// reading threads own the connections.

#ifndef CQRS_TESTS_BENCH_BENCH_WS_H_
#define CQRS_TESTS_BENCH_BENCH_WS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "bench_link.h"

namespace cqrs::bench {

struct WsSubscriberOptions {
  std::uint16_t port = 0;  // The gateway's, on 127.0.0.1.
  std::size_t count = 0;
  std::string channel = "users";
  // Connections whose TCP connect or WebSocket handshake (upgrade, subscribe, subscribed) is
  // still in progress, at most.
  std::size_t max_handshakes = 200;
  // SO_RCVBUF set before connecting; 0 leaves the kernel's default (and its auto-tuning).
  int receive_buffer = 0;
  // More than 1: connection i is bound (before connect) to 127.0.0.(2 + i % source_addresses),
  // for when ephemeral ports of one source address run short.
  int source_addresses = 1;
};

// Sees every event the reading threads receive.
class EventObserver {
 public:
  virtual ~EventObserver() = default;
  // On reading thread `thread` (0..threads-1), which alone reads subscriber `subscriber`:
  // one event's offset and causation id (the command id; a view into the read buffer, valid
  // for the call), `now_ns` the steady-clock time of the read that brought it.
  virtual void OnEvent(unsigned thread, std::size_t subscriber, std::uint64_t offset,
                       std::string_view causation_id, std::int64_t now_ns) = 0;
  // On the reading thread of `subscriber`: the gateway closed it (it gets nothing more).
  virtual void OnClosed(unsigned thread, std::size_t subscriber) {}
};

class WsSubscribers {
 public:
  WsSubscribers();
  // Stops reading and closes every connection.
  ~WsSubscribers();
  WsSubscribers(const WsSubscribers&) = delete;
  WsSubscribers& operator=(const WsSubscribers&) = delete;

  // Opens options.count connections (max_handshakes at a time): upgrade with subprotocol
  // cqrs.v1.proto, subscribe to options.channel, wait for `subscribed`. Returns when all are
  // subscribed; kDeadlineExceeded when `deadline` passes first, kUnavailable when a connection
  // or handshake fails (the message names the subscriber and what it got).
  absl::Status Connect(const WsSubscriberOptions& options, Clock::time_point deadline);

  // Reads every connection on `threads` threads (subscriber i on thread i % threads) until
  // Stop, reporting events to `observer` (which must outlive Stop) and answering pings.
  void Start(unsigned threads, EventObserver* observer);
  // Ends the reading threads; the connections stay open.
  void Stop();
  // Closes every connection.
  void Close();

  std::size_t size() const { return connections_.size(); }
  // Connections the gateway closed (close frame, EOF or error) while they were read, and a
  // description of the first ("subscriber 7: close 1013 'slow consumer ...'").
  std::size_t closed() const { return closed_.load(std::memory_order_relaxed); }
  std::string first_close() const;

 private:
  struct Connection;
  void ReadLoop(unsigned thread, unsigned threads, EventObserver* observer);
  // Handles the frames in `input` of a live connection; false once it is closed.
  bool Consume(unsigned thread, std::size_t index, std::span<char> input, std::int64_t now_ns,
               EventObserver* observer);
  void MarkClosed(std::size_t index, std::string what, unsigned thread, EventObserver* observer);

  std::vector<std::unique_ptr<Connection>> connections_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> closed_{0};
  mutable std::mutex mutex_;
  std::string first_close_;  // Guarded by mutex_.
};

// Ephemeral ports one source address offers for connections to one destination
// (/proc/sys/net/ipv4/ip_local_port_range).
std::size_t EphemeralPorts();

}  // namespace cqrs::bench

#endif  // CQRS_TESTS_BENCH_BENCH_WS_H_
