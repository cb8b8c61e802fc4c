// File: cqrs/core/subject_sequencer.h
//
// Runs commands that share a subject one after another, in arrival order, while commands with
// different subjects run concurrently. Works across threads and connections.
//
//   SubjectSequencer::Turn turn = sequencer.Enter(command.subject());  // in arrival order
//   co_await sequencer.Wait(turn);                                     // our turn now
//   ... run the command ...
//   turn.Release();                                                    // next one goes
//
// Thread-safe. An empty subject never waits.

#ifndef CQRS_CORE_SUBJECT_SEQUENCER_H_
#define CQRS_CORE_SUBJECT_SEQUENCER_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include <array>
#include <mutex>
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "cqrs/core/asio.h"

namespace cqrs {

class SubjectSequencer {
  struct Waiter;
  struct Shard;

 public:
  // A place in one subject's line. Move-only; releasing (explicitly or by destruction) lets the
  // next command of the subject run, or leaves the line if the turn never came.
  class Turn {
   public:
    Turn() = default;
    Turn(Turn&& other) noexcept;
    Turn& operator=(Turn&& other) noexcept;
    ~Turn() { Release(); }
    void Release();
    // False when the turn was granted at Enter (nothing to Wait for).
    bool must_wait() const { return waiter_ != nullptr; }

   private:
    friend class SubjectSequencer;
    SubjectSequencer* owner_ = nullptr;
    Shard* shard_ = nullptr;
    std::string subject_;
    std::shared_ptr<Waiter> waiter_;  // Null when the turn was granted at Enter.
  };

  SubjectSequencer();
  ~SubjectSequencer();

  // Takes the next place in `subject`'s line. Call in arrival order.
  Turn Enter(absl::string_view subject);
  // Completes (on the caller's executor) once `turn` is at the front of its line. Not
  // cancellable; `turn` must stay alive until it completes.
  Awaitable<void> Wait(Turn& turn);

  // Subjects with a command running or waiting.
  std::size_t active_subjects() const;

 private:
  void Leave(Turn& turn);
  Shard& ShardOf(absl::string_view subject) const;

  // Subjects are spread over independently locked shards, so commands of different subjects
  // rarely contend.
  static constexpr std::size_t kShardBits = 4;
  static constexpr std::size_t kShards = std::size_t{1} << kShardBits;
  // Each Shard guards itself; a vector, not new[]: GCC 12 misaligns new[] of over-aligned types.
  mutable std::vector<Shard> shards_;
};

}  // namespace cqrs

#endif  // CQRS_CORE_SUBJECT_SEQUENCER_H_
