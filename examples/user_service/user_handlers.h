// File: user_handlers.h (examples/user_service)
//
// The user service's command handlers, registered on a router:
//
//   cqrs::CommandRouter router({.service_id = "user-service"});
//   users::UserDirectory directory;
//   CQRS_RETURN_IF_ERROR(users::RegisterHandlers(router, directory));
//
// CreateUser: validates the name (1..64 characters, else REJECTED USER_NAME_EMPTY /
// USER_NAME_TOO_LONG), refuses a duplicate id (REJECTED USER_EXISTS), emits UserCreated on the
// `users` channel and answers CreateUserReply with the id.

#ifndef CQRS_EXAMPLES_USER_SERVICE_USER_HANDLERS_H_
#define CQRS_EXAMPLES_USER_SERVICE_USER_HANDLERS_H_

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "cqrs/core/command_router.h"
#include "users/v1/users.pb.h"

namespace users {

inline constexpr std::size_t kMaxNameLength = 64;
inline constexpr char kUsersChannel[] = "users";

// The write side's knowledge of which user ids exist (for validation). Thread-safe.
class UserDirectory {
 public:
  // False when `id` already exists.
  bool Add(const std::string& id);
  bool Contains(const std::string& id) const;
  std::size_t size() const;

 private:
  mutable absl::Mutex mutex_;
  absl::flat_hash_set<std::string> ids_;
};

absl::Status RegisterHandlers(cqrs::CommandRouter& router, UserDirectory& directory);

}  // namespace users

#endif  // CQRS_EXAMPLES_USER_SERVICE_USER_HANDLERS_H_
