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

namespace cqrs {
namespace {

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

// One lock for the whole cache: the budget and the oldest-first order are global. The critical
// sections are a hash lookup or insert and a FIFO push.
struct IdempotencyCache::Table {
  struct Remembered {
    Clock::time_point expires;
    std::string id;
    std::size_t cost;
  };
  mutable std::mutex mutex;
  absl::flat_hash_map<std::string, std::shared_ptr<Entry>> entries;
  std::deque<Remembered> fifo;  // Finished entries, oldest first.
  std::size_t bytes = 0;

  void ForgetOldest() {
    entries.erase(fifo.front().id);
    bytes -= fifo.front().cost;
    fifo.pop_front();
  }
  void Expire(Clock::time_point now) {
    while (!fifo.empty() && fifo.front().expires <= now) ForgetOldest();
  }
};

IdempotencyCache::IdempotencyCache(IdempotencyOptions options)
    : options_(options), state_(std::make_unique<Table>()) {}

IdempotencyCache::~IdempotencyCache() = default;

IdempotencyCache::Claim IdempotencyCache::Begin(absl::string_view id) {
  Claim claim;
  claim.id_ = std::string(id);
  std::lock_guard lock(state_->mutex);
  state_->Expire(Clock::now());
  auto [it, inserted] = state_->entries.try_emplace(claim.id_);
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
    Table& state = *state_;
    std::lock_guard lock(state.mutex);
    Entry& entry = *claim.entry_;
    entry.done = true;
    entry.response = response;
    waiters.swap(entry.waiters);
    const std::size_t cost = claim.id_.size() * 2 + response->size() + kEntryOverhead;
    if (remember && cost <= options_.max_bytes) {
      state.fifo.push_back(
          {Clock::now() + absl::ToChronoNanoseconds(options_.window), claim.id_, cost});
      state.bytes += cost;
      while (state.bytes > options_.max_bytes) state.ForgetOldest();
    } else {
      state.entries.erase(claim.id_);
    }
  }
  claim.state_ = kDone;
  claim.response_ = response;
  for (auto& [handler, executor] : waiters) {
    asio::post(executor, [handler = std::move(handler), response]() mutable {
      std::move(handler)(response);
    });
  }
}

Awaitable<IdempotencyCache::Response> IdempotencyCache::WaitFor(const Claim& claim) {
  auto executor = co_await asio::this_coro::executor;
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Response)>(
      // Captures only references: GCC 12 may destroy temporaries of a co_await expression twice.
      [this, &claim, &executor](auto handler) {
        std::unique_lock lock(state_->mutex);
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
  std::lock_guard lock(state_->mutex);
  return state_->entries.size();
}

std::size_t IdempotencyCache::bytes() const {
  std::lock_guard lock(state_->mutex);
  return state_->bytes;
}

}  // namespace cqrs
