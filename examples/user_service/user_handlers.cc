#include "user_handlers.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cqrs/core/command_status.h"

namespace users {
namespace {

using cqrs::Awaitable;
using cqrs::CommandContext;

std::string NewUserId() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  const std::uint64_t hi = random();
  const std::uint64_t lo = random();
  // A version-4 UUID.
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0x0fff,
                         ((lo >> 48) & 0x3fff) | 0x8000, lo & 0xffffffffffff);
}

}  // namespace

bool UserDirectory::Add(const std::string& id) {
  absl::MutexLock lock(&mutex_);
  return ids_.insert(id).second;
}

bool UserDirectory::Contains(const std::string& id) const {
  absl::MutexLock lock(&mutex_);
  return ids_.contains(id);
}

std::size_t UserDirectory::size() const {
  absl::MutexLock lock(&mutex_);
  return ids_.size();
}

absl::Status RegisterHandlers(cqrs::CommandRouter& router, UserDirectory& directory) {
  return router.Handle<v1::CreateUser>(
      [&directory](const v1::CreateUser& command,
                   CommandContext& ctx) -> Awaitable<absl::StatusOr<v1::CreateUserReply>> {
        if (command.name().empty()) {
          co_return cqrs::Rejected("USER_NAME_EMPTY", "the user name must not be empty");
        }
        if (command.name().size() > kMaxNameLength) {
          co_return cqrs::Rejected(
              "USER_NAME_TOO_LONG",
              absl::StrCat("the user name must have at most ", kMaxNameLength, " characters"),
              absl::StrCat("CreateUser.name has ", command.name().size(), " bytes"));
        }
        std::string id = command.user_id().empty() ? NewUserId() : command.user_id();
        if (!directory.Add(id)) {
          co_return cqrs::Rejected("USER_EXISTS", absl::StrCat("user ", id, " already exists"));
        }
        v1::UserCreated created;
        created.set_user_id(id);
        created.set_name(command.name());
        ctx.Emit(created, cqrs::StreamOf("User", id), {.channel = kUsersChannel});
        v1::CreateUserReply reply;
        reply.set_user_id(std::move(id));
        co_return reply;
      });
}

}  // namespace users
