// Private: one WebSocket subscriber of an EventGateway, after the upgrade.

#ifndef CQRS_NET_SRC_GATEWAY_SUBSCRIBER_H_
#define CQRS_NET_SRC_GATEWAY_SUBSCRIBER_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/ip/tcp.hpp>

#include "cqrs/core/asio.h"
#include "cqrs/core/channel_pattern.h"
#include "cqrs/core/fanout_hub.h"
#include "cqrs/net/gateway_protocol.h"
#include "cqrs/net/websocket_codec.h"
#include "cqrs/v1/gateway.pb.h"
#include "gateway_internal.h"

namespace cqrs::net::internal {

// Lives on its shard's loop; no locks. The reader coroutine and the writes in flight own it.
//
// Delivery: `taken_` is the last hub batch whose events have been moved into the outbound buffer
// (or skipped as not matching). Pump() moves on from there whenever no write is in flight; while
// one is, it only measures how far the subscriber is behind (matching bytes after `taken_`), and
// closes it with 1013 past max_queue_bytes.
class SubscriberSession : public std::enable_shared_from_this<SubscriberSession> {
 public:
  SubscriberSession(Shard& shard, asio::ip::tcp::socket socket, WireFormat format);
  ~SubscriberSession();

  // Starts reading; `pending` holds bytes that arrived right after the upgrade request.
  void Start(std::string pending);
  // Moves new events out (or measures the lag while a write is in flight).
  void Pump();
  // Called by the shard's sweep.
  void Tick(std::chrono::steady_clock::time_point now);
  // For flow control: the hub position (end_bytes) this subscriber has taken events up to, or
  // FanoutHub::kCaughtUp when it does not hold the command path back (nothing subscribed,
  // closing, or its socket has accepted nothing for slow_consumer_grace: a slow consumer is
  // left to fall behind until max_queue_bytes closes it).
  std::uint64_t FlowPosition(std::chrono::steady_clock::time_point now) const;
  // Close handshake with `code` (after what is already queued), or drop at once.
  void Close(std::uint16_t code, absl::string_view reason);
  void Drop();

  // Intrusive position in the shard's list.
  std::size_t shard_index = 0;

 private:
  struct Subscription {
    std::string id;
    std::vector<ChannelPattern> patterns;
    // Live events are delivered for this subscription only after this offset (events up to it
    // were replayed, or the client said it has them).
    std::uint64_t deliver_after = 0;
  };
  struct Replay {
    std::string subscription_id;
    std::vector<ChannelPattern> patterns;
    std::uint64_t after = 0;  // Next page starts after this offset.
    std::uint64_t until = 0;  // Last offset to replay (the live position when subscribing).
  };

  Awaitable<void> ReadLoop();
  // Handles the decoder's events for `input`; false once the connection is closing.
  bool Consume(std::span<char> input);
  void OnMessage(absl::string_view bytes, ws::Opcode opcode);
  void OnSubscribe(const v1::Subscribe& subscribe);
  void OnUnsubscribe(const v1::Unsubscribe& unsubscribe);
  void SendError(v1::GatewayError::Code code, std::string message,
                 absl::string_view subscription_id);
  void Malformed(std::string message);
  void SendControl(const v1::ServerMessage& message);
  void AppendMessage(std::string& out, const v1::ServerMessage& message) const;

  bool Matches(const EventRecord& record) const;
  std::size_t WireBytes(const EventRecord& record) const;
  void AppendEvent(const EventRecord& record);
  // Fills out_ from replay pages and the hub; returns whether there is anything to write.
  bool Fill();
  void FillReplay();
  void StartWrite();
  void ContinueWrite();
  // After a complete write: bookkeeping, then refills; true when there is a next write.
  bool OnWritten();
  void MeasureLag();
  // Whether new events concern this session (subscribed and not closing): the shard wakes
  // only for those.
  void SetFollowing(bool following);
  void SlowConsumer();
  void Finish();

  Shard& shard_;
  asio::ip::tcp::socket socket_;
  const WireFormat format_;
  ws::Decoder decoder_;
  std::vector<Subscription> subscriptions_;
  std::vector<Replay> replays_;
  FanoutHub::BatchPtr taken_;    // Null until the first subscribe.
  FanoutHub::BatchPtr scanned_;  // Lag measurement position (after taken_), while writing.
  std::size_t lag_bytes_ = 0;

  std::string pending_;  // Bytes that arrived with the upgrade request.
  std::string control_;  // Complete control/reply frames waiting for the next write.
  std::string out_;      // The write in flight.
  std::size_t out_done_ = 0;
  std::uint64_t out_events_ = 0;
  bool writing_ = false;
  bool closing_ = false;     // Close frame queued: nothing more is taken.
  bool close_sent_ = false;  // Close frame written: the socket is shut down for sending.
  bool closed_ = false;
  bool ping_sent_ = false;
  std::uint32_t malformed_ = 0;
  std::chrono::steady_clock::time_point last_read_;
  std::chrono::steady_clock::time_point last_write_progress_;
  std::chrono::steady_clock::time_point last_drained_;  // Last time a write completed.
  bool following_ = false;                              // Counted in the shard's Following().
  std::chrono::steady_clock::time_point close_deadline_ =
      std::chrono::steady_clock::time_point::max();
};

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_GATEWAY_SUBSCRIBER_H_
