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

#include "absl/container/flat_hash_set.h"
#include "absl/container/inlined_vector.h"
#include "absl/hash/hash.h"
#include "cqrs/core/adaptive_mutex.h"

namespace cqrs {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

struct IdempotencyCache::Entry : std::enable_shared_from_this<IdempotencyCache::Entry> {
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
  std::shared_ptr<Entry> self;  // Set while running (see Table).
};

IdempotencyCache::Response IdempotencyCache::ResponseOf(const std::shared_ptr<Entry>& entry) {
  if (entry->shared) return entry->shared;
  // Bytes stored in the entry leave through an aliasing pointer that keeps the entry alive: no
  // allocation per answer.
  return Response(entry, &entry->bytes);
}

namespace {

// The id table holds bare entry pointers (8 bytes a slot, so that the table of a busy server
// stays small enough for the caches) and is searched two ways, neither of which hashes again:
// by id with the hash computed once per command (which also picks the shard), and by the
// entry itself when it is forgotten (pointer identity: the cold entry is not read).
struct ById {
  absl::string_view id;
  std::size_t hash;
};
struct ByEntry {
  const void* entry;
  std::size_t hash;
};

}  // namespace

struct IdempotencyCache::EntryHash {
  using is_transparent = void;
  std::size_t operator()(const Entry* entry) const { return entry->hash; }
  std::size_t operator()(const ById& key) const { return key.hash; }
  std::size_t operator()(const ByEntry& key) const { return key.hash; }
};

struct IdempotencyCache::EntryEq {
  using is_transparent = void;
  bool operator()(const Entry* a, const Entry* b) const { return a == b; }
  bool operator()(const Entry* a, const ById& b) const {
    return a->hash == b.hash && a->id() == b.id;
  }
  bool operator()(const ById& a, const Entry* b) const { return (*this)(b, a); }
  bool operator()(const Entry* a, const ByEntry& b) const { return a == b.entry; }
  bool operator()(const ByEntry& a, const Entry* b) const { return a.entry == b; }
};

// Ids are spread over independently locked shards (by hash), each with its own share of the
// byte budget and its own oldest-first order: commands on different threads rarely contend, and
// eviction is oldest-first per shard (ids hash uniformly, so nearly oldest-first overall). A
// small budget gets a single shard, where the order is exact. The critical sections are one
// hash lookup or insert and a FIFO push; forgotten entries are released after the lock.
// Ownership: a running entry owns itself (`self`, so that the table never points at freed
// memory even if a claim is dropped unfinished); a finished one is owned by its FIFO record.
// Each shard starts its own cache line: neighbours in the array are locked and written by
// different threads.
struct alignas(64) IdempotencyCache::Table {
  struct Remembered {
    Clock::time_point expires;
    std::shared_ptr<Entry> entry;
    std::size_t cost;
    std::size_t hash;  // The entry's: forgetting it reads neither the entry nor its id.
  };
  // What a remembered id costs besides its response bytes (and an id too long to live in its
  // entry): the entry with its shared_ptr control block, its FIFO record and its table slot.
  static constexpr std::size_t kOverhead = sizeof(Entry) + 16 + sizeof(Remembered) + 16;
  using Forgotten = absl::InlinedVector<std::shared_ptr<Entry>, 4>;
  mutable AdaptiveMutex mutex;
  absl::flat_hash_set<Entry*, EntryHash, EntryEq> entries;
  std::deque<Remembered> fifo;  // Finished entries, oldest first.
  std::size_t bytes = 0;
  std::size_t max_bytes = 0;

  // What forgetting touches (the entry's table slot, the entry, its response bytes) went cold
  // long ago, and the FIFO says which entries go next: they are fetched a few forgets ahead, so
  // that their cache misses overlap with other work instead of stalling one after another.
  // Two stages: the entry and its slot first, the response (whose address is in the entry)
  // once the entry has arrived.
  static constexpr std::size_t kPrefetchAhead = 4;
  void ForgetOldest(Forgotten& forgotten) {
    if (fifo.size() > 2 * kPrefetchAhead) {
      const Remembered& far = fifo[2 * kPrefetchAhead];
      // The entry and, before it, its shared_ptr control block.
      const char* block = reinterpret_cast<const char*>(far.entry.get()) - 16;
      for (std::size_t line = 0; line < sizeof(Entry) + 16; line += 64) {
        __builtin_prefetch(block + line);
      }
      entries.prefetch(ByEntry{far.entry.get(), far.hash});
      __builtin_prefetch(fifo[kPrefetchAhead].entry->bytes.data());
    }
    Remembered& oldest = fifo.front();
    entries.erase(ByEntry{oldest.entry.get(), oldest.hash});
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
      shards_(shard_count_) {
  for (std::size_t i = 0; i < shard_count_; ++i) {
    shards_[i].max_bytes = options.max_bytes / shard_count_;
  }
}

IdempotencyCache::~IdempotencyCache() {
  // Entries whose claim was never finished still own themselves: release them (a claim that is
  // still held keeps its entry alive).
  for (std::size_t i = 0; i < shard_count_; ++i) {
    std::vector<std::shared_ptr<Entry>> running;
    for (Entry* entry : shards_[i].entries) {
      if (entry->self != nullptr) running.push_back(std::move(entry->self));
    }
    shards_[i].entries.clear();
  }
}

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
  bool inserted = false;
  const auto it = state.entries.lazy_emplace(ById{id, hash}, [&](const auto& construct) {
    auto entry = std::make_shared<Entry>(id, hash);
    entry->self = entry;
    construct(entry.get());
    claim.entry_ = std::move(entry);
    inserted = true;
  });
  if (inserted) {
    claim.state_ = kNew;
  } else {
    Entry* entry = *it;
    claim.state_ = entry->done ? kDone : kRunning;
    // Owned by itself while running, by its FIFO record once finished.
    claim.entry_ = entry->shared_from_this();
    if (entry->done) claim.response_ = ResponseOf(claim.entry_);
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
    const std::size_t cost = response->size() + Table::kOverhead + entry.long_id.size();
    std::shared_ptr<Entry> owner = std::move(entry.self);
    if (remember && cost <= state.max_bytes) {
      state.fifo.push_back({expires, std::move(owner), cost, entry.hash});
      state.bytes += cost;
      while (state.bytes > state.max_bytes) state.ForgetOldest(forgotten);
    } else {
      state.entries.erase(ByEntry{&entry, entry.hash});
      forgotten.push_back(std::move(owner));
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
