#include "cqrs/net/event_gateway.h"

#include <algorithm>
#include <mutex>
#include <optional>
#include <thread>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "cqrs/core/log.h"
#include "gateway_internal.h"
#include "gateway_subscriber.h"
#include "socket_util.h"

namespace cqrs::net {

using internal::GatewayShared;
using internal::Shard;
using internal::SubscriberSession;
using tcp = asio::ip::tcp;

namespace {

constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kScratchBytes = std::size_t{64} << 10;
// Connections over max_connections being answered 503 at once; more are closed unanswered.
constexpr std::uint32_t kMaxRefusing = 64;

std::chrono::milliseconds SweepPeriod(const EventGatewayOptions& options) {
  const auto shortest = std::min({options.idle_timeout / 4, options.write_timeout / 4,
                                  options.shutdown_grace / 4, options.slow_consumer_grace / 2});
  return std::clamp(std::chrono::duration_cast<std::chrono::milliseconds>(shortest),
                    std::chrono::milliseconds(5), std::chrono::milliseconds(1'000));
}

}  // namespace

namespace internal {

Shard::Shard(GatewayShared& shared) : shared_(shared), scratch_(kScratchBytes) {}

Shard::~Shard() = default;

void Shard::Wake() {
  // A loop without live subscriptions has nothing to do with new events: do not wake it. (The
  // fence pairs with SubscriberSession::SetFollowing's.)
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (following_.load(std::memory_order_relaxed) <= 0) return;
  if (wake_pending_.exchange(true, std::memory_order_acq_rel)) return;
  asio::post(io_, [this] {
    // An exchange, not a store: it reads the publisher's exchange, so every batch published
    // before a wake-up that was skipped because this one was pending is visible below.
    wake_pending_.exchange(false, std::memory_order_acq_rel);
    // Pump may close a session, never destroy one synchronously: the list stays valid.
    for (std::size_t i = 0; i < sessions_.size(); ++i) sessions_[i]->Pump();
    UpdatePosition();
  });
}

void Shard::UpdatePosition() {
  if (consumer_ < 0) return;
  const auto now = std::chrono::steady_clock::now();
  std::uint64_t slowest = FanoutHub::kCaughtUp;
  slowest_ = nullptr;
  for (const SubscriberSession* session : sessions_) {
    const std::uint64_t position = session->FlowPosition(now);
    if (position < slowest) {
      slowest = position;
      slowest_ = session;
    }
  }
  shared_.hub.SetConsumerPosition(consumer_, slowest);
}

void Shard::StartSweep() {
  sweep_timer_.expires_after(SweepPeriod(shared_.options));
  sweep_timer_.async_wait([this](boost::system::error_code ec) {
    if (ec) return;
    Sweep();
    StartSweep();
  });
}

void Shard::Sweep() {
  now_ = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < sessions_.size(); ++i) sessions_[i]->Tick(now_);
  UpdatePosition();
}

void Shard::CloseAll(bool graceful) {
  for (std::size_t i = 0; i < sessions_.size(); ++i) {
    if (graceful) {
      sessions_[i]->Close(ws::kCloseGoingAway, "server shutting down");
    } else {
      sessions_[i]->Drop();
    }
  }
  // HTTP requests in progress are not waited for: a request that is being read or written is
  // cut (its client retries elsewhere).
  for (tcp::socket* socket : http_) {
    boost::system::error_code ec;
    socket->close(ec);
  }
  if (!graceful) sweep_timer_.cancel();
}

void Shard::Add(SubscriberSession* session) {
  session->shard_index = sessions_.size();
  sessions_.push_back(session);
}

void Shard::Remove(SubscriberSession* session) {
  const std::size_t index = session->shard_index;
  if (index >= sessions_.size() || sessions_[index] != session) return;
  sessions_[index] = sessions_.back();
  sessions_[index]->shard_index = index;
  sessions_.pop_back();
  if (session == slowest_) UpdatePosition();
}

}  // namespace internal

class EventGateway::Impl {
 public:
  Impl(FanoutHub& hub, EventGatewayOptions options) : shared_(hub, std::move(options)) {}
  ~Impl() { Shutdown(); }

  void Route(std::string method, std::string path, Handler handler) {
    shared_.routes.push_back(
        internal::GatewayRoute{std::move(method), std::move(path), std::move(handler)});
  }

  absl::Status Start() {
    std::lock_guard lock(mutex_);
    if (started_) return absl::FailedPreconditionError("the event gateway was already started");
    const auto& options = shared_.options;
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(options.address, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", options.address, "' is not an IP address: ", ec.message()));
    }
    const unsigned threads =
        options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < threads; ++i) {
      shards_.push_back(std::make_unique<Shard>(shared_));
      guards_.emplace_back(shards_.back()->io().get_executor());
    }
    acceptor_.emplace(shards_[0]->io());
    ec = internal::Listen(*acceptor_, tcp::endpoint(address, options.port));
    if (ec) {
      acceptor_.reset();
      guards_.clear();
      shards_.clear();
      return absl::UnavailableError(absl::StrCat("event gateway cannot listen on ", options.address,
                                                 ":", options.port, ": ", ec.message()));
    }
    port_ = acceptor_->local_endpoint().port();
    started_ = true;
    waker_ = shared_.hub.AddWaker([this] {
      for (auto& shard : shards_) shard->Wake();
    });
    for (auto& shard : shards_) {
      Shard* raw = shard.get();
      raw->SetConsumer(shared_.hub.AddConsumer());
      consumers_.push_back(raw->consumer());
      asio::post(raw->io(), [raw] { raw->StartSweep(); });
    }
    asio::co_spawn(shards_[0]->io(), Accept(), asio::detached);
    for (auto& shard : shards_) {
      threads_.emplace_back([raw = shard.get()] { raw->io().run(); });
    }
    return absl::OkStatus();
  }

  std::uint16_t port() const { return port_; }

  void Shutdown() {
    {
      std::lock_guard lock(mutex_);
      if (!started_ || stopped_) return;
      stopped_ = true;
    }
    shared_.stopping.store(true);
    shared_.hub.RemoveWaker(waker_);
    for (int consumer : consumers_) shared_.hub.RemoveConsumer(consumer);
    asio::post(shards_[0]->io(), [this] {
      boost::system::error_code ec;
      acceptor_->close(ec);
    });
    const auto grace = shared_.options.shutdown_grace;
    for (auto& shard : shards_) {
      Shard* raw = shard.get();
      asio::post(raw->io(), [raw] { raw->CloseAll(/*graceful=*/true); });
    }
    {
      std::unique_lock lock(shared_.mutex);
      shared_.changed.wait_for(lock, grace, [this] { return shared_.open.load() == 0; });
    }
    for (auto& shard : shards_) {
      Shard* raw = shard.get();
      asio::post(raw->io(), [raw] { raw->CloseAll(/*graceful=*/false); });
    }
    {
      std::unique_lock lock(shared_.mutex);
      shared_.changed.wait_for(lock, std::chrono::seconds(5),
                               [this] { return shared_.open.load() == 0; });
    }
    guards_.clear();
    for (auto& shard : shards_) shard->io().stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    acceptor_.reset();
    shards_.clear();
  }

  EventGatewayStats stats() const {
    EventGatewayStats stats;
    stats.connections_accepted = shared_.connections_accepted.load();
    stats.connections_refused = shared_.connections_refused.load();
    stats.connections_open = shared_.open.load();
    stats.subscribers_open = shared_.subscribers.load();
    stats.events_delivered = shared_.events_delivered.load();
    stats.slow_consumers_closed = shared_.slow_consumers_closed.load();
    stats.http_requests = shared_.http_requests.load();
    return stats;
  }

  const EventGatewayOptions& options() const { return shared_.options; }

 private:
  Awaitable<void> Accept() {
    std::size_t next = 0;
    while (true) {
      Shard& shard = *shards_[next++ % shards_.size()];
      auto [ec, socket] = co_await acceptor_->async_accept(shard.io(), kUse);
      if (ec) {
        if (ec == asio::error::operation_aborted || shared_.stopping.load()) co_return;
        // Out of descriptors and the like: log and keep accepting.
        Log(LogLevel::kWarning, absl::StrCat("event gateway: accept failed: ", ec.message()));
        continue;
      }
      if (shared_.stopping.load()) continue;
      shared_.connections_accepted.fetch_add(1, std::memory_order_relaxed);
      if (shared_.open.load(std::memory_order_relaxed) >= shared_.options.max_connections) {
        shared_.connections_refused.fetch_add(1, std::memory_order_relaxed);
        Log(LogLevel::kWarning,
            absl::StrCat("event gateway: refusing a connection: max_connections=",
                         shared_.options.max_connections, " reached"));
        // Answered 503 after its request has been read (closing with the request unread would
        // reset the connection before the client sees the answer); a flood is cut short.
        if (shared_.refusing.load(std::memory_order_relaxed) < kMaxRefusing) {
          shared_.refusing.fetch_add(1, std::memory_order_relaxed);
          internal::StartHttpConnection(shard, std::move(socket), /*refuse=*/true);
        }
        continue;
      }
      shared_.open.fetch_add(1, std::memory_order_relaxed);
      internal::StartHttpConnection(shard, std::move(socket), /*refuse=*/false);
    }
  }

  GatewayShared shared_;
  std::mutex mutex_;
  bool started_ = false;
  bool stopped_ = false;
  std::atomic<std::uint16_t> port_{0};
  std::uint64_t waker_ = 0;
  std::vector<int> consumers_;
  std::vector<std::unique_ptr<Shard>> shards_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::optional<tcp::acceptor> acceptor_;
  std::vector<std::thread> threads_;
};

EventGateway::EventGateway(FanoutHub& hub, EventGatewayOptions options)
    : impl_(std::make_shared<Impl>(hub, std::move(options))) {}

EventGateway::~EventGateway() { impl_->Shutdown(); }

void EventGateway::Route(std::string method, std::string path, Handler handler) {
  impl_->Route(std::move(method), std::move(path), std::move(handler));
}

absl::Status EventGateway::Start() { return impl_->Start(); }
std::uint16_t EventGateway::port() const { return impl_->port(); }
void EventGateway::Shutdown() { impl_->Shutdown(); }
EventGatewayStats EventGateway::stats() const { return impl_->stats(); }
const EventGatewayOptions& EventGateway::options() const { return impl_->options(); }

}  // namespace cqrs::net
