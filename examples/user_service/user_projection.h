// File: user_projection.h (examples/user_service)
//
// The user service's read side: the current users, built from the UserCreated, UserRenamed and
// UserDeleted events alone (never from the write side's directory), as a listener of the log.
//
//   cqrs::InMemoryEventLog log;
//   users::UserProjection projection;
//   projection.Follow(log);                      // before the first append
//   ...
//   users::v1::UserList list = projection.List();
//
// Other events are ignored. Thread-safe: the log calls Apply on appending threads, one append
// at a time in offset order; List and Find may run on any thread meanwhile.

#ifndef CQRS_EXAMPLES_USER_SERVICE_USER_PROJECTION_H_
#define CQRS_EXAMPLES_USER_SERVICE_USER_PROJECTION_H_

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "cqrs/core/event_log.h"
#include "cqrs/v1/event.pb.h"
#include "users/v1/users.pb.h"

namespace users {

class UserProjection {
 public:
  // Applies every event appended to `log` from now on (call it before appends start). The
  // projection must outlive the log's appends.
  void Follow(cqrs::EventLog& log);

  // Applies one event. Events at or below the last applied offset of the same epoch are
  // ignored (so a replay after Follow cannot apply twice); an event of another epoch starts the
  // projection over (the log's history was lost).
  void Apply(const cqrs::v1::EventEnvelope& event);

  // The users, oldest first, with the position of the last applied event.
  v1::UserList List() const;
  std::optional<v1::UserView> Find(const std::string& user_id) const;
  std::uint64_t offset() const;

 private:
  struct Entry {
    std::uint64_t created_offset = 0;  // Sort key of List().
    v1::UserView view;
  };

  mutable std::mutex mutex_;
  absl::flat_hash_map<std::string, Entry> users_ ABSL_GUARDED_BY(mutex_);
  std::uint64_t offset_ ABSL_GUARDED_BY(mutex_) = 0;
  std::uint64_t epoch_ ABSL_GUARDED_BY(mutex_) = 0;
};

}  // namespace users

#endif  // CQRS_EXAMPLES_USER_SERVICE_USER_PROJECTION_H_
