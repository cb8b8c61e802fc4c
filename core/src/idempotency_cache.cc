#include "cqrs/core/idempotency_cache.h"

#include <chrono>
#include <deque>
#include <utility>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"
#include "cqrs/core/adaptive_mutex.h"

namespace cqrs {
namespace {

// Map slot, FIFO slot, entry and control blocks: a fair estimate per remembered id.
constexpr std::size_t kEntryOverhead = 160;
using Clock = std::chrono::steady_clock;

}  // namespace

struct IdempotencyCache::Entry {
  Entry(absl::string_view command_id, std::size_t id_hash)
      : hash(id_hash), size(command_id.size()) {
    if (size <= sizeof inline_id) {
      command_id.copy(inline_id, size);
    } else {
      long_id.assign(command_id.data(), size);
    }
  }
  // The map's key views it. Ids up to 48 bytes (a UUID has 36) live in the entry itself.
  absl::string_view id() const {
    return size <= sizeof inline_id ? absl::string_view(inline_id, size) : long_id;
  }

  const std::size_t hash;  // Of the id: computed once, for the shard and the map.
  const std::size_t size;
  char inline_id[48];
  std::string long_id;
  bool done = false;
  std::string bytes;  // The response, when it was handed over as bytes.
  Response shared;    // The response, when it was handed over shared.
  std::vector<std::pair<asio::any_completion_handler<void(Response)>, asio::any_io_executor>>
      waiters;
};

IdempotencyCache::Response IdempotencyCache::ResponseOf(const std::shared_ptr<Entry>& entry) {
  if (entry->shared) return entry->shared;
  // Bytes stored in the entry leave through an aliasing pointer that keeps the entry alive: no
  // allocation per answer.
  return Response(entry, &entry->bytes);
}

namespace {

// A map key that carries its hash: the id is hashed once per command (it picks the shard too),
// and probes compare the stored hash before touching the id's bytes.
struct Key {
  absl::string_view id;
  std::size_t hash;
};
struct KeyHash {
  std::size_t operator()(const Key& key) const { return key.hash; }
};
struct KeyEq {
  bool operator()(const Key& a, const Key& b) const {
    // Same bytes (an entry's own key, when it is forgotten): equal without reading them.
    if (a.hash != b.hash || a.id.size() != b.id.size()) return false;
    return a.id.data() == b.id.data() || a.id == b.id;
  }
};

}  // namespace

// Ids are spread over independently locked shards (by hash), each with its own share of the
// byte budget and its own oldest-first order: commands on different threads rarely contend, and
// eviction is oldest-first per shard (ids hash uniformly, so nearly oldest-first overall). A
// small budget gets a single shard, where the order is exact. The critical sections are one
// hash lookup or insert and a FIFO push; forgotten entries are released after the lock.
struct IdempotencyCache::Table {
  struct Remembered {
    Clock::time_point expires;
    std::shared_ptr<Entry> entry;
    std::size_t cost;
    Key key;  // The entry's map key: forgetting it reads neither the entry nor its id.
  };
  using Forgotten = absl::InlinedVector<std::shared_ptr<Entry>, 4>;
  mutable AdaptiveMutex mutex;
  absl::flat_hash_map<Key, std::shared_ptr<Entry>, KeyHash, KeyEq> entries;
  std::deque<Remembered> fifo;  // Finished entries, oldest first.
  std::size_t bytes = 0;
  std::size_t max_bytes = 0;

  void ForgetOldest(Forgotten& forgotten) {
    Remembered& oldest = fifo.front();
    entries.erase(oldest.key);
    bytes -= oldest.cost;
    forgotten.push_back(std::move(oldest.entry));
    fifo.pop_front();
  }
  void Expire(Clock::time_point now, Forgotten& forgotten) {
    while (!fifo.empty() && fifo.front().expires <= now) ForgetOldest(forgotten);
  }
};

absl::string_view IdempotencyCache::Claim::id() const { return entry_->id(); }

IdempotencyCache::IdempotencyCache(IdempotencyOptions options)
    : options_(options),
      shard_count_(std::clamp<std::size_t>(options.max_bytes / kMinShardBytes, 1, kMaxShards)),
      shards_(new Table[shard_count_]) {
  for (std::size_t i = 0; i < shard_count_; ++i) {
    shards_[i].max_bytes = options.max_bytes / shard_count_;
  }
}

IdempotencyCache::~IdempotencyCache() = default;

IdempotencyCache::Table& IdempotencyCache::ShardOf(std::size_t hash) const {
  // The map uses the hash's low bits for its probe groups; the high bits pick the shard.
  return shards_[shard_count_ == 1 ? 0 : (hash >> 32) % shard_count_];
}

IdempotencyCache::Claim IdempotencyCache::Begin(absl::string_view id) {
  Claim claim;
  const auto now = Clock::now();
  const std::size_t hash = absl::HashOf(id);
  Table& state = ShardOf(hash);
  Table::Forgotten forgotten;  // Released after the lock.
  std::lock_guard lock(state.mutex);
  state.Expire(now, forgotten);
  const auto [it, inserted] = state.entries.try_emplace(Key{id, hash}, nullptr);
  if (inserted) {
    auto entry = std::make_shared<Entry>(id, hash);
    // The key must view the entry's copy of the id, which outlives the command's.
    const_cast<Key&>(it->first).id = entry->id();
    it->second = entry;
    claim.state_ = kNew;
    claim.entry_ = std::move(entry);
  } else {
    claim.entry_ = it->second;
    claim.state_ = claim.entry_->done ? kDone : kRunning;
    if (claim.entry_->done) claim.response_ = ResponseOf(claim.entry_);
  }
  return claim;
}

void IdempotencyCache::Finish(Claim& claim, Response response, bool remember) {
  claim.entry_->shared = std::move(response);
  Publish(claim, remember);
}

IdempotencyCache::Response IdempotencyCache::Finish(Claim& claim, std::string response,
                                                    bool remember) {
  claim.entry_->bytes = std::move(response);
  Publish(claim, remember);
  return claim.response_;
}

void IdempotencyCache::Publish(Claim& claim, bool remember) {
  decltype(Entry::waiters) waiters;
  const auto expires = Clock::now() + absl::ToChronoNanoseconds(options_.window);
  const Response response = ResponseOf(claim.entry_);
  Table::Forgotten forgotten;  // Released after the lock.
  {
    Entry& entry = *claim.entry_;
    Table& state = ShardOf(entry.hash);
    std::lock_guard lock(state.mutex);
    entry.done = true;
    waiters.swap(entry.waiters);
    const std::size_t cost = entry.size + response->size() + kEntryOverhead;
    if (remember && cost <= state.max_bytes) {
      state.fifo.push_back({expires, claim.entry_, cost, Key{entry.id(), entry.hash}});
      state.bytes += cost;
      while (state.bytes > state.max_bytes) state.ForgetOldest(forgotten);
    } else {
      state.entries.erase(Key{entry.id(), entry.hash});
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
        Response response;
        {
          std::lock_guard lock(ShardOf(claim.entry_->hash).mutex);
          if (!claim.entry_->done) {
            claim.entry_->waiters.emplace_back(std::move(handler), executor);
            return;
          }
          response = ResponseOf(claim.entry_);
        }
        asio::post(executor, [handler = std::move(handler), response]() mutable {
          std::move(handler)(response);
        });
      },
      asio::use_awaitable);
}

std::size_t IdempotencyCache::size() const {
  std::size_t size = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    size += shards_[i].entries.size();
  }
  return size;
}

std::size_t IdempotencyCache::bytes() const {
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < shard_count_; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    bytes += shards_[i].bytes;
  }
  return bytes;
}

}  // namespace cqrs
