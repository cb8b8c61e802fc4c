// File: cqrs/core/idempotency_cache.h
//
// Remembers the response to each command id for a window, so that a re-sent command is answered
// without running again, and a duplicate that arrives while the first is running waits for it.
//
//   auto claim = cache.Begin(command.id());
//   switch (claim.state()) {
//     case IdempotencyCache::kNew:     response = run(); cache.Finish(claim, response, true);
//     break; case IdempotencyCache::kDone:    response = claim.response(); break; case
//     IdempotencyCache::kRunning: response = co_await cache.WaitFor(claim); break;
//   }
//
// Memory is bounded by `max_bytes` (ids + serialized responses + bookkeeping): when full, the
// oldest finished entries are forgotten first, even inside the window. Thread-safe; ids are
// spread over up to 16 independently locked shards (one per MiB of budget), each holding its
// share of the budget, so "oldest first" holds per shard and nearly so overall.

#ifndef CQRS_CORE_IDEMPOTENCY_CACHE_H_
#define CQRS_CORE_IDEMPOTENCY_CACHE_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "cqrs/core/asio.h"

namespace cqrs {

struct IdempotencyOptions {
  // How long a finished command's response is remembered.
  absl::Duration window = absl::Minutes(2);
  // Upper bound of the cache's memory.
  std::size_t max_bytes = std::size_t{64} << 20;
};

class IdempotencyCache {
  struct Entry;
  struct EntryHash;
  struct EntryEq;
  struct Table;

 public:
  // A serialized cqrs.v1.CommandResponseEnvelope, shared by every answer to the same id.
  using Response = std::shared_ptr<const std::string>;
  enum State { kNew, kDone, kRunning };

  class Claim {
   public:
    State state() const { return state_; }
    // For kDone.
    const Response& response() const { return response_; }
    absl::string_view id() const;

   private:
    friend class IdempotencyCache;
    friend class CommandProcessor;
    State state_ = kNew;
    Response response_;
    std::shared_ptr<Entry> entry_;
  };

  explicit IdempotencyCache(IdempotencyOptions options = {});
  ~IdempotencyCache();

  // Looks `id` up and, when it is new, marks it running: the caller must then Finish the claim
  // (CommandProcessor's Admission does so even when the command never runs).
  Claim Begin(absl::string_view id);
  // Publishes the response of a kNew claim to its waiters, and remembers it for the window when
  // `remember` (pass false for outcomes a retry should not see again, e.g. UNAVAILABLE).
  void Finish(Claim& claim, Response response, bool remember);
  // The same for a response serialized by the caller: the bytes move into the cache and the
  // returned Response shares them (no further allocation).
  Response Finish(Claim& claim, std::string response, bool remember);
  // For a kRunning claim: the first run's response, on the caller's executor. Not cancellable.
  // `claim` must outlive the awaitable.
  Awaitable<Response> WaitFor(const Claim& claim);

  std::size_t size() const;
  std::size_t bytes() const;
  const IdempotencyOptions& options() const { return options_; }

 private:
  static Response ResponseOf(const std::shared_ptr<Entry>& entry);
  void Publish(Claim& claim, bool remember);
  Table& ShardOf(std::size_t hash) const;

  static constexpr std::size_t kMaxShards = 16;
  static constexpr std::size_t kMinShardBytes = std::size_t{1} << 20;
  IdempotencyOptions options_;
  const std::size_t shard_count_;
  // Each Table guards itself; a vector, not new[]: GCC 12 misaligns new[] of over-aligned types.
  mutable std::vector<Table> shards_;
};

}  // namespace cqrs

#endif  // CQRS_CORE_IDEMPOTENCY_CACHE_H_
