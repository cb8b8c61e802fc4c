// File: user_handlers.h (examples/user_service)
//
// The user service's write side: its command handlers, registered on a router, and the
// directory of existing users they validate against.
//
//   cqrs::CommandRouter router({.service_id = "user-service"});
//   users::UserDirectory directory;
//   CQRS_RETURN_IF_ERROR(users::RegisterHandlers(router, directory));
//
// CreateUser  -> UserCreated, reply CreateUserReply{user_id} (user_id: the command's, or a new
//                UUID). REJECTED USER_NAME_EMPTY / USER_NAME_TOO_LONG / USER_EXISTS.
// RenameUser  -> UserRenamed (old and new name). REJECTED USER_NAME_EMPTY / USER_NAME_TOO_LONG /
//                USER_NOT_FOUND.
// DeleteUser  -> UserDeleted (with the last name). REJECTED USER_NOT_FOUND.
// Every event goes to the `users` channel on stream ("User", user_id). RenameUser and DeleteUser
// take the user id from the command or, when it is empty, from the command's subject (INVALID
// USER_ID_REQUIRED when neither is set); a command whose user id and subject are both set and
// differ is INVALID USER_ID_MISMATCH. Send a user's commands with subject = user id: the
// framework runs them in arrival order.

#ifndef CQRS_EXAMPLES_USER_SERVICE_USER_HANDLERS_H_
#define CQRS_EXAMPLES_USER_SERVICE_USER_HANDLERS_H_

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "cqrs/core/adaptive_mutex.h"
#include "cqrs/core/command_router.h"
#include "users/v1/users.pb.h"

namespace users {

// Names are 1..kMaxNameLength Unicode code points.
inline constexpr std::size_t kMaxNameLength = 64;
inline constexpr char kUsersChannel[] = "users";
inline constexpr char kUserEntity[] = "User";

// A new random user id (a version-4 UUID).
std::string NewUserId();

// OK, or REJECTED USER_NAME_EMPTY (empty or only white space) / USER_NAME_TOO_LONG.
absl::Status ValidateName(absl::string_view name);

// The write side's knowledge of the existing users (id -> name), for validation. Each call is
// atomic; thread-safe. Ids are spread over independently locked shards, so that handlers on
// different threads rarely wait for each other. A user costs one allocation (id and name
// together) and a 16-byte table slot: a service with millions of users keeps its tables small
// enough to stay mostly in the caches, and growing a table moves slots without reading a user.
class UserDirectory {
 public:
  UserDirectory();
  ~UserDirectory();
  UserDirectory(const UserDirectory&) = delete;
  UserDirectory& operator=(const UserDirectory&) = delete;

  // False (and no change) when `id` already exists.
  bool Add(absl::string_view id, absl::string_view name);
  // The previous name; nullopt (and no change) when there is no user `id`.
  std::optional<std::string> Rename(absl::string_view id, absl::string_view name);
  // The removed user's name; nullopt when there is no user `id`.
  std::optional<std::string> Remove(absl::string_view id);

  bool Contains(absl::string_view id) const;
  std::optional<std::string> NameOf(absl::string_view id) const;
  std::size_t size() const;

 private:
  // One user: id and name in one allocation (see User::Make).
  struct User;
  struct UserDeleter {
    void operator()(User* user) const;
  };
  using UserPtr = std::unique_ptr<User, UserDeleter>;
  // A table slot: the id's hash, computed once per call (the shard and the table both use it,
  // growing the table reads no user, and a probe reads a user only when the hashes are equal),
  // and the user. Replacing the user (Rename) keeps its id, so the slot's key does not change.
  struct Slot {
    std::size_t hash;
    mutable UserPtr user;
  };
  struct Lookup {
    std::size_t hash;
    absl::string_view id;
  };
  struct SlotHash {
    using is_transparent = void;
    std::size_t operator()(const Slot& slot) const { return slot.hash; }
    std::size_t operator()(const Lookup& key) const { return key.hash; }
  };
  struct SlotEq {
    using is_transparent = void;
    bool operator()(const Slot& a, const Slot& b) const;
    bool operator()(const Slot& a, const Lookup& b) const;
  };
  // Each shard starts its own cache line: neighbours are locked by different threads.
  struct alignas(64) Shard {
    mutable cqrs::AdaptiveMutex mutex;
    absl::flat_hash_set<Slot, SlotHash, SlotEq> users ABSL_GUARDED_BY(mutex);
  };
  static constexpr std::size_t kShardBits = 4;
  static constexpr std::size_t kShards = std::size_t{1} << kShardBits;
  static Lookup LookupOf(absl::string_view id);
  Shard& ShardOf(const Lookup& key) const;

  // Each Shard guards itself; a vector, not new[]: GCC 12 misaligns new[] of over-aligned types.
  mutable std::vector<Shard> shards_ = std::vector<Shard>(kShards);
};

// Registers the CreateUser, RenameUser and DeleteUser handlers. `directory` must outlive the
// router's use.
absl::Status RegisterHandlers(cqrs::CommandRouter& router, UserDirectory& directory);

}  // namespace users

#endif  // CQRS_EXAMPLES_USER_SERVICE_USER_HANDLERS_H_
