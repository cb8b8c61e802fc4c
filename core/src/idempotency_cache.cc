#include "cqrs/core/idempotency_cache.h"

#include <chrono>
#include <deque>
#include <mutex>
#include <utility>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "absl/container/flat_hash_map.h"
#include "absl/hash/hash.h"

namespace cqrs {
namespace {

constexpr std::size_t kShards = 16;
// Map slot, FIFO slot, entry and control blocks: a fair estimate per remembered id.
constexpr std::size_t kEntryOverhead = 160;
using Clock = std::chrono::steady_clock;

}  // namespace

struct IdempotencyCache::Entry {
  bool done = false;
  Response response;
  std::vector<std::pair<asio::any_completion_handler<void(Response)>, asio::any_io_executor>>
      waiters;
};

struct IdempotencyCache::Shard {
  struct Remembered {
    Clock::time_point expires;
    std::string id;
    std::size_t cost;
  };
  mutable std::mutex mutex;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries;
  std::deque<Remembered> fifo;  // Finished entries, oldest first.
  std::size_t bytes = 0;

  void Forget(const Remembered& r) {
    entries.erase(r.id);
    bytes -= r.cost;
  }
  void Expire(Clock::time_point now) {
    while (!fifo.empty() && fifo.front().expires <= now) {
      Forget(fifo.front());
      fifo.pop_front();
    }
  }
};

IdempotencyCache::IdempotencyCache(IdempotencyOptions options) : options_(options) {
  for (std::size_t i = 0; i < kShards; ++i) shards_.push_back(std::make_unique<Shard>());
}

IdempotencyCache::~IdempotencyCache() = default;

IdempotencyCache::Claim IdempotencyCache::Begin(absl::string_view id) {
  Claim claim;
  claim.shard_ = absl::HashOf(id) % kShards;
  claim.id_ = std::string(id);
  Shard& shard = *shards_[claim.shard_];
  std::lock_guard lock(shard.mutex);
  shard.Expire(Clock::now());
  auto [it, inserted] = shard.entries.try_emplace(claim.id_);
  if (inserted) {
    it->second = std::make_shared<Entry>();
    claim.state_ = kNew;
  } else if (it->second->done) {
    claim.state_ = kDone;
    claim.response_ = it->second->response;
  } else {
    claim.state_ = kRunning;
  }
  claim.entry_ = it->second;
  return claim;
}

void IdempotencyCache::Finish(Claim& claim, Response response, bool remember) {
  decltype(Entry::waiters) waiters;
  {
    Shard& shard = *shards_[claim.shard_];
    std::lock_guard lock(shard.mutex);
    Entry& entry = *claim.entry_;
    entry.done = true;
    entry.response = response;
    waiters.swap(entry.waiters);
    if (remember) {
      const std::size_t cost = claim.id_.size() * 2 + response->size() + kEntryOverhead;
      shard.fifo.push_back(
          {Clock::now() + absl::ToChronoNanoseconds(options_.window), claim.id_, cost});
      shard.bytes += cost;
      const std::size_t budget = options_.max_bytes / kShards;
      while (shard.bytes > budget && !shard.fifo.empty()) {
        shard.Forget(shard.fifo.front());
        shard.fifo.pop_front();
      }
    } else {
      shard.entries.erase(claim.id_);
    }
  }
  for (auto& [handler, executor] : waiters) {
    asio::post(executor, [handler = std::move(handler), response]() mutable {
      std::move(handler)(response);
    });
  }
}

Awaitable<IdempotencyCache::Response> IdempotencyCache::WaitFor(Claim claim) {
  auto executor = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Response)>(
      // Captures only references: GCC 12 may destroy temporaries of a co_await expression twice.
      [this, &claim, &executor](auto handler) {
        Shard& shard = *shards_[claim.shard_];
        std::unique_lock lock(shard.mutex);
        if (claim.entry_->done) {
          Response response = claim.entry_->response;
          lock.unlock();
          asio::post(executor, [handler = std::move(handler), response]() mutable {
            std::move(handler)(response);
          });
          return;
        }
        claim.entry_->waiters.emplace_back(std::move(handler), executor);
      },
      asio::use_awaitable);
}

std::size_t IdempotencyCache::size() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    n += shard->entries.size();
  }
  return n;
}

std::size_t IdempotencyCache::bytes() const {
  std::size_t n = 0;
  for (const auto& shard : shards_) {
    std::lock_guard lock(shard->mutex);
    n += shard->bytes;
  }
  return n;
}

}  // namespace cqrs
