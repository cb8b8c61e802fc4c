#include "gateway_subscriber.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/strings/str_cat.h"
#include "cqrs/core/log.h"

namespace cqrs::net::internal {
namespace {

using Clock = std::chrono::steady_clock;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
// One write carries at most about this much; the rest follows when it completes.
constexpr std::size_t kWriteBudget = std::size_t{256} << 10;
// Events read from the log per replay step.
constexpr std::size_t kReplayPage = 512;
// Completed writes in a row before a session yields to its event loop.
constexpr int kWritesPerTurn = 8;
// A subscriber behind by more than this many times max_queue_bytes of events, matching or not,
// is closed as slow (the batches it has not taken stay in memory until it does).
constexpr std::size_t kPinnedFactor = 16;

}  // namespace

SubscriberSession::SubscriberSession(Shard& shard, asio::ip::tcp::socket socket, WireFormat format)
    : shard_(shard),
      socket_(std::move(socket)),
      format_(format),
      decoder_(ws::DecoderOptions{.max_message_bytes = shard.shared().options.max_message_bytes}) {
  last_read_ = last_write_progress_ = last_drained_ = Clock::now();
  shard_.Add(this);
  shard_.shared().subscribers.fetch_add(1, std::memory_order_relaxed);
}

SubscriberSession::~SubscriberSession() {
  SetFollowing(false);
  shard_.Remove(this);
  shard_.shared().subscribers.fetch_sub(1, std::memory_order_relaxed);
  shard_.shared().ConnectionClosed();
}

void SubscriberSession::SetFollowing(bool following) {
  if (following == following_) return;
  following_ = following;
  shard_.Following(following ? 1 : -1);
  // Pairs with the fence in Shard::Wake: either the publisher sees this session follow, or
  // this session's next Pump sees the batch.
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

void SubscriberSession::Start(std::string pending) {
  boost::system::error_code ec;
  socket_.non_blocking(true, ec);
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  pending_ = std::move(pending);
  auto self = shared_from_this();
  asio::co_spawn(
      socket_.get_executor(), [self] { return self->ReadLoop(); },
      [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          Log(LogLevel::kError, absl::StrCat("event gateway subscriber failed: ", x.what()));
        }
      });
}

Awaitable<void> SubscriberSession::ReadLoop() {
  auto self = shared_from_this();
  if (!pending_.empty()) {
    std::string pending = std::move(pending_);
    if (!Consume(std::span<char>(pending.data(), pending.size()))) co_return;
  }
  while (!closed_) {
    if (decoder_.idle()) decoder_.ShrinkToFit();
    // Wait for readability first, so an idle connection holds no read buffer: the bytes land
    // in the loop's scratch buffer and are decoded before the next wait.
    auto [wait_ec] = co_await socket_.async_wait(asio::ip::tcp::socket::wait_read, kUse);
    if (closed_) break;
    if (wait_ec) {
      Drop();
      break;
    }
    const std::span<char> scratch = shard_.scratch();
    boost::system::error_code ec;
    const std::size_t n = socket_.read_some(asio::buffer(scratch.data(), scratch.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) continue;
    if (ec) {
      // EOF or reset: the peer is gone (after our close frame, that is the normal end).
      Drop();
      break;
    }
    last_read_ = Clock::now();
    ping_sent_ = false;
    if (!Consume(scratch.first(n))) break;
  }
}

bool SubscriberSession::Consume(std::span<char> input) {
  while (!closed_) {
    switch (decoder_.Next(input)) {
      case ws::Decoder::Event::kNeedMore:
        return true;
      case ws::Decoder::Event::kMessage:
        if (!closing_) OnMessage(decoder_.message(), decoder_.message_opcode());
        break;
      case ws::Decoder::Event::kPing:
        if (!closing_) {
          control_ += ws::MakeControlFrame(ws::Opcode::kPong, decoder_.message());
          Pump();
        }
        break;
      case ws::Decoder::Event::kPong:
        break;
      case ws::Decoder::Event::kClose:
        if (close_sent_ || closing_) {
          // The answer to our close: the handshake is complete.
          if (close_sent_) Drop();
          return false;
        }
        Close(decoder_.close_code() == 1005 ? ws::kCloseNormal : decoder_.close_code(), "");
        return false;
      case ws::Decoder::Event::kError:
        Log(LogLevel::kWarning,
            absl::StrCat("event gateway: closing a subscriber: ", decoder_.error()));
        Close(decoder_.error_code(), decoder_.error());
        return false;
    }
  }
  return false;
}

void SubscriberSession::OnMessage(absl::string_view bytes, ws::Opcode opcode) {
  if (opcode != MessageOpcode(format_)) {
    Malformed(format_ == WireFormat::kJson
                  ? "binary message on a cqrs.v1.json connection: send JSON in text messages"
                  : "text message on a cqrs.v1.proto connection: send serialized "
                    "cqrs.v1.ClientMessage in binary messages");
    return;
  }
  v1::ClientMessage message;
  if (absl::Status status = DecodeClientMessage(format_, bytes, message); !status.ok()) {
    Malformed(std::string(status.message()));
    return;
  }
  switch (message.kind_case()) {
    case v1::ClientMessage::kSubscribe:
      OnSubscribe(message.subscribe());
      break;
    case v1::ClientMessage::kUnsubscribe:
      OnUnsubscribe(message.unsubscribe());
      break;
    case v1::ClientMessage::kPing: {
      v1::ServerMessage pong;
      pong.mutable_pong()->set_nonce(message.ping().nonce());
      SendControl(pong);
      break;
    }
    case v1::ClientMessage::KIND_NOT_SET:
      Malformed("the message sets none of subscribe, unsubscribe, ping");
      break;
  }
}

void SubscriberSession::Malformed(std::string message) {
  const std::uint32_t limit = shard_.shared().options.max_malformed_messages;
  if (++malformed_ > limit) {
    Log(LogLevel::kWarning, absl::StrCat("event gateway: closing a subscriber after ", limit,
                                         " malformed messages (max_malformed_messages)"));
    Close(ws::kClosePolicyViolation,
          absl::StrCat("more than max_malformed_messages=", limit, " malformed messages"));
    return;
  }
  SendError(v1::GatewayError::MALFORMED_MESSAGE, std::move(message), "");
}

void SubscriberSession::OnSubscribe(const v1::Subscribe& subscribe) {
  const auto& options = shard_.shared().options;
  const std::string& id = subscribe.subscription_id();
  const auto invalid = [&](std::string message) {
    SendError(v1::GatewayError::INVALID_SUBSCRIPTION, std::move(message), id);
  };
  if (std::any_of(subscriptions_.begin(), subscriptions_.end(),
                  [&](const Subscription& s) { return s.id == id; })) {
    return invalid(absl::StrCat("subscription id '", id, "' is already in use on this connection"));
  }
  if (subscriptions_.size() >= options.max_subscriptions) {
    return invalid(absl::StrCat("too many subscriptions on this connection (max_subscriptions=",
                                options.max_subscriptions, ")"));
  }
  if (subscribe.channels().empty()) return invalid("a subscription needs at least one channel");
  if (static_cast<std::size_t>(subscribe.channels_size()) > options.max_channels) {
    return invalid(absl::StrCat(
        "too many channels in one subscription (max_channels=", options.max_channels, ")"));
  }
  Subscription subscription{.id = id, .patterns = {}, .deliver_after = 0};
  for (const std::string& channel : subscribe.channels()) {
    absl::StatusOr<ChannelPattern> pattern = ChannelPattern::Parse(channel);
    if (!pattern.ok()) {
      return invalid(absl::StrCat("channel '", channel, "': ", pattern.status().message()));
    }
    subscription.patterns.push_back(*std::move(pattern));
  }

  FanoutHub& hub = shard_.shared().hub;
  const EventLog& log = hub.log();
  if (taken_ == nullptr) {
    taken_ = hub.Tail();
    SetFollowing(true);
  }
  // Events after `live` come from the hub; a resume replays (from_offset, live] from the log.
  const std::uint64_t live = taken_->last_offset();
  const std::uint64_t epoch = log.epoch();
  const std::uint64_t earliest = log.earliest();
  subscription.deliver_after = live;
  if (subscribe.has_from_offset()) {
    const std::uint64_t from = subscribe.from_offset();
    const auto unavailable = [&](std::string message) {
      v1::ServerMessage reply;
      v1::GatewayError& error = *reply.mutable_error();
      error.set_code(v1::GatewayError::OFFSET_UNAVAILABLE);
      error.set_message(std::move(message));
      error.set_subscription_id(id);
      error.set_earliest_offset(earliest);
      error.set_epoch(epoch);
      SendControl(reply);
    };
    if (subscribe.epoch() != 0 && subscribe.epoch() != epoch) {
      return unavailable(absl::StrCat("offset ", from, " belongs to epoch ", subscribe.epoch(),
                                      ", but the log is now in epoch ", epoch,
                                      " (its history was lost); the earliest offset is ",
                                      earliest));
    }
    if (from + 1 < earliest) {
      return unavailable(absl::StrCat("events after offset ", from,
                                      " are no longer retained: the earliest is ", earliest,
                                      " in epoch ", epoch));
    }
    const std::uint64_t head = log.head();
    if (from > head) {
      return unavailable(
          absl::StrCat("offset ", from, " is beyond the newest event ", head, " of epoch ", epoch));
    }
    if (from < live) {
      replays_.push_back(Replay{
          .subscription_id = id, .patterns = subscription.patterns, .after = from, .until = live});
    } else {
      subscription.deliver_after = from;  // The client already has (live, from].
    }
  }
  v1::ServerMessage reply;
  v1::Subscribed& subscribed = *reply.mutable_subscribed();
  subscribed.set_subscription_id(id);
  subscribed.set_head_offset(live);
  subscribed.set_earliest_offset(earliest);
  subscribed.set_epoch(epoch);
  subscriptions_.push_back(std::move(subscription));
  SendControl(reply);
}

void SubscriberSession::OnUnsubscribe(const v1::Unsubscribe& unsubscribe) {
  const std::string& id = unsubscribe.subscription_id();
  const auto it = std::find_if(subscriptions_.begin(), subscriptions_.end(),
                               [&](const Subscription& s) { return s.id == id; });
  if (it == subscriptions_.end()) {
    SendError(v1::GatewayError::UNKNOWN_SUBSCRIPTION,
              absl::StrCat("no subscription '", id, "' on this connection"), id);
    return;
  }
  subscriptions_.erase(it);
  std::erase_if(replays_, [&](const Replay& r) { return r.subscription_id == id; });
  if (subscriptions_.empty()) {
    // Nothing to follow: stop pinning hub batches.
    taken_.reset();
    SetFollowing(false);
    scanned_.reset();
    lag_bytes_ = 0;
  }
  v1::ServerMessage reply;
  reply.mutable_unsubscribed()->set_subscription_id(id);
  SendControl(reply);
}

void SubscriberSession::SendError(v1::GatewayError::Code code, std::string message,
                                  absl::string_view subscription_id) {
  v1::ServerMessage reply;
  v1::GatewayError& error = *reply.mutable_error();
  error.set_code(code);
  error.set_message(std::move(message));
  error.set_subscription_id(std::string(subscription_id));
  SendControl(reply);
}

void SubscriberSession::SendControl(const v1::ServerMessage& message) {
  AppendMessage(control_, message);
  Pump();
}

void SubscriberSession::AppendMessage(std::string& out, const v1::ServerMessage& message) const {
  // Control messages hold no Any, so encoding cannot fail.
  const std::string bytes = EncodeServerMessage(format_, message).value_or(std::string());
  const ws::FrameHeader header = ws::MakeFrameHeader(MessageOpcode(format_), bytes.size());
  out.append(header.view().data(), header.view().size());
  out += bytes;
}

bool SubscriberSession::Matches(const EventRecord& record) const {
  for (const Subscription& subscription : subscriptions_) {
    if (record.offset() <= subscription.deliver_after) continue;
    for (const ChannelPattern& pattern : subscription.patterns) {
      if (pattern.Matches(record.channel())) return true;
    }
  }
  return false;
}

std::size_t SubscriberSession::WireBytes(const EventRecord& record) const {
  const std::size_t payload = format_ == WireFormat::kJson
                                  ? record.server_message_json().size()
                                  : record.proto_prefix().size() + record.envelope().size();
  return payload + (payload < 126 ? 2 : payload < 65536 ? 4 : 10);
}

void SubscriberSession::AppendEvent(const EventRecord& record) {
  if (format_ == WireFormat::kJson) {
    const std::string& json = record.server_message_json();
    const ws::FrameHeader header = ws::MakeFrameHeader(ws::Opcode::kText, json.size());
    out_.append(header.view().data(), header.view().size());
    out_ += json;
  } else {
    const absl::string_view prefix = record.proto_prefix();
    const ws::FrameHeader header =
        ws::MakeFrameHeader(ws::Opcode::kBinary, prefix.size() + record.envelope().size());
    out_.append(header.view().data(), header.view().size());
    out_.append(prefix.data(), prefix.size());
    out_ += record.envelope();
  }
  ++out_events_;
}

void SubscriberSession::Pump() {
  if (closed_) return;
  if (!closing_ && control_.size() > shard_.shared().options.max_queue_bytes) {
    // Replies (pongs, errors) pile up too when the client sends without reading.
    return SlowConsumer();
  }
  if (writing_) {
    MeasureLag();
    return;
  }
  if (!replays_.empty()) MeasureLag();  // Live events wait behind the replay.
  if (Fill()) StartWrite();
}

bool SubscriberSession::Fill() {
  out_.clear();
  out_done_ = 0;
  out_events_ = 0;
  out_.swap(control_);  // Replies first: they precede the events they announce.
  if (!closing_) {
    FillReplay();
    // Live events, once every replay is done (a replay ends where live delivery starts).
    if (replays_.empty() && taken_ != nullptr) {
      for (FanoutHub::BatchPtr next = taken_->next(); next != nullptr; next = taken_->next()) {
        if (out_.size() >= kWriteBudget) break;
        for (const EventLog::Record& record : next->records()) {
          if (Matches(*record)) AppendEvent(*record);
        }
        taken_ = std::move(next);
      }
      scanned_.reset();
      lag_bytes_ = 0;
    }
  }
  return !out_.empty();
}

void SubscriberSession::FillReplay() {
  const EventLog& log = shard_.shared().hub.log();
  while (!replays_.empty() && out_.size() < kWriteBudget) {
    Replay& replay = replays_.front();
    if (replay.after >= replay.until) {
      replays_.erase(replays_.begin());
      continue;
    }
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(kReplayPage, replay.until - replay.after));
    absl::StatusOr<std::vector<EventLog::Record>> page = log.Read(replay.after, want);
    if (!page.ok() || page->empty()) {
      // Evicted while replaying (or the log shrank): the subscription cannot be completed.
      v1::ServerMessage reply;
      v1::GatewayError& error = *reply.mutable_error();
      error.set_code(v1::GatewayError::OFFSET_UNAVAILABLE);
      error.set_message(absl::StrCat("replay stopped: ",
                                     page.ok() ? "the log has no events after the requested offset"
                                               : std::string(page.status().message()),
                                     "; the subscription was removed"));
      error.set_subscription_id(replay.subscription_id);
      error.set_earliest_offset(log.earliest());
      error.set_epoch(log.epoch());
      AppendMessage(out_, reply);
      const std::string id = replay.subscription_id;
      replays_.erase(replays_.begin());
      std::erase_if(subscriptions_, [&](const Subscription& s) { return s.id == id; });
      continue;
    }
    for (const EventLog::Record& record : *page) {
      if (record->offset() > replay.until) break;
      for (const ChannelPattern& pattern : replay.patterns) {
        if (pattern.Matches(record->channel())) {
          AppendEvent(*record);
          break;
        }
      }
      replay.after = record->offset();
    }
    if (replay.after >= replay.until) replays_.erase(replays_.begin());
  }
}

void SubscriberSession::StartWrite() {
  writing_ = true;
  last_write_progress_ = Clock::now();
  ContinueWrite();
}

void SubscriberSession::ContinueWrite() {
  // Write directly while the socket takes it; wait for writability only when it is full. A
  // reader that keeps up gets write after write here: after a few, yield to the loop (the other
  // sessions, the sweep) instead of looping on.
  for (int writes = 0;; ++writes) {
    while (out_done_ < out_.size()) {
      boost::system::error_code ec;
      const std::size_t n =
          socket_.write_some(asio::buffer(out_.data() + out_done_, out_.size() - out_done_), ec);
      if (ec == asio::error::would_block || ec == asio::error::try_again) {
        auto self = shared_from_this();
        socket_.async_wait(asio::ip::tcp::socket::wait_write,
                           [self](boost::system::error_code wait_ec) {
                             if (self->closed_) return;
                             if (wait_ec) return self->Drop();
                             self->ContinueWrite();
                           });
        return;
      }
      if (ec) return Drop();
      out_done_ += n;
      last_write_progress_ = Clock::now();
    }
    if (!OnWritten()) return;  // Nothing more to write (or closed).
    writing_ = true;           // The next buffer is filled: it is this session's write now.
    last_write_progress_ = Clock::now();
    if (writes >= kWritesPerTurn) {
      auto self = shared_from_this();
      asio::post(socket_.get_executor(), [self] {
        if (!self->closed_) self->ContinueWrite();
      });
      return;
    }
  }
}

bool SubscriberSession::OnWritten() {
  writing_ = false;
  last_drained_ = Clock::now();
  shard_.shared().events_delivered.fetch_add(out_events_, std::memory_order_relaxed);
  out_events_ = 0;
  if (closing_ && !close_sent_ && control_.empty()) {
    // The close frame was the last thing written: no more data from us.
    close_sent_ = true;
    boost::system::error_code ec;
    socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    close_deadline_ = Clock::now() + shard_.shared().options.shutdown_grace;
  }
  if (out_.capacity() > kWriteBudget * 2) std::string().swap(out_);
  bool more = false;
  if (!close_sent_) {
    more = Fill();
    if (!more && out_.capacity() > 4096) std::string().swap(out_);  // Idle: give memory back.
  }
  shard_.Advanced(this);
  return more;
}

std::uint64_t SubscriberSession::FlowPosition(Clock::time_point now) const {
  if (closing_ || taken_ == nullptr) return FanoutHub::kCaughtUp;
  // A replay is bounded by MeasureLag, not waited for.
  if (!replays_.empty()) return FanoutHub::kCaughtUp;
  // Keeping up means emptying the write buffer regularly; a reader that trickles (some
  // progress, never drained) for slow_consumer_grace is not waited for.
  if (writing_ && now - last_drained_ >= shard_.shared().options.slow_consumer_grace) {
    return FanoutHub::kCaughtUp;
  }
  return taken_->end_bytes();
}

void SubscriberSession::MeasureLag() {
  if (closing_ || taken_ == nullptr) return;
  const std::size_t limit = shard_.shared().options.max_queue_bytes;
  if (scanned_ == nullptr) scanned_ = taken_;
  for (FanoutHub::BatchPtr next = scanned_->next(); next != nullptr; next = scanned_->next()) {
    for (const EventLog::Record& record : next->records()) {
      if (Matches(*record)) lag_bytes_ += WireBytes(*record);
    }
    scanned_ = std::move(next);
    if (lag_bytes_ + (out_.size() - out_done_) > limit) return SlowConsumer();
    // Batches that match nothing are pinned too while this subscriber is behind: bound them.
    if (scanned_->end_bytes() - taken_->end_bytes() > kPinnedFactor * limit) {
      return SlowConsumer();
    }
  }
}

void SubscriberSession::SlowConsumer() {
  const auto& options = shard_.shared().options;
  shard_.shared().slow_consumers_closed.fetch_add(1, std::memory_order_relaxed);
  Log(LogLevel::kWarning, absl::StrCat("event gateway: closing a slow subscriber: more than ",
                                       options.max_queue_bytes, " bytes queued (max_queue_bytes)"));
  Close(ws::kCloseTryAgainLater,
        absl::StrCat("slow consumer: more than max_queue_bytes=", options.max_queue_bytes,
                     " bytes of events queued; reconnect and resume from your last offset"));
}

void SubscriberSession::Close(std::uint16_t code, absl::string_view reason) {
  if (closed_ || closing_) return;
  closing_ = true;
  // Stop pinning hub batches and replay pages: this subscriber takes nothing more.
  taken_.reset();
  SetFollowing(false);
  scanned_.reset();
  replays_.clear();
  subscriptions_.clear();
  control_ += ws::MakeCloseFrame(code, reason);
  close_deadline_ = Clock::now() + shard_.shared().options.write_timeout;
  Pump();
}

void SubscriberSession::Drop() {
  if (closed_) return;
  closed_ = true;
  closing_ = true;
  taken_.reset();
  SetFollowing(false);
  scanned_.reset();
  replays_.clear();
  boost::system::error_code ec;
  socket_.close(ec);  // Completes the pending wait and write with operation_aborted.
}

void SubscriberSession::Tick(Clock::time_point now) {
  if (closed_) return;
  const auto& options = shard_.shared().options;
  if (now >= close_deadline_) return Drop();
  if (writing_ && now - last_write_progress_ >= options.write_timeout) {
    Log(LogLevel::kWarning, absl::StrCat("event gateway: dropping a subscriber: no write progress "
                                         "for write_timeout=",
                                         options.write_timeout.count(), " ms"));
    return Drop();
  }
  if (closing_) return;
  const auto silent = now - last_read_;
  if (silent >= options.idle_timeout) {
    return Close(ws::kCloseGoingAway,
                 absl::StrCat("idle for idle_timeout=", options.idle_timeout.count(), " ms"));
  }
  if (!ping_sent_ && silent >= options.idle_timeout / 2) {
    ping_sent_ = true;
    control_ += ws::MakeControlFrame(ws::Opcode::kPing, "");
    Pump();
  }
}

}  // namespace cqrs::net::internal
