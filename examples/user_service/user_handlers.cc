#include "user_handlers.h"

#include <cassert>
#include <cstdint>
#include <cstring>
#include <new>
#include <random>
#include <utility>

#include "absl/hash/hash.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cqrs/core/command_status.h"

namespace users {
namespace {

using cqrs::Awaitable;
using cqrs::CommandContext;

// Code points in valid UTF-8 (protobuf has checked it): every byte that does not continue one.
std::size_t CodePoints(absl::string_view text) {
  std::size_t n = 0;
  for (const char c : text) n += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
  return n;
}

// INVALID USER_ID_MISMATCH when the command names a user and its subject names another.
absl::Status CheckSubject(absl::string_view command_type, const std::string& user_id,
                          const CommandContext& ctx) {
  if (user_id.empty() || ctx.subject().empty() || user_id == ctx.subject()) {
    return absl::OkStatus();
  }
  return cqrs::WithErrorCode(
      absl::InvalidArgumentError(absl::StrCat("the command is about user ", user_id,
                                              " but its subject is ", ctx.subject())),
      "USER_ID_MISMATCH",
      absl::StrCat(command_type,
                   ".user_id and the envelope's subject must agree when both are "
                   "set"));
}

// The user a command is about: its `user_id`, else the command's subject.
absl::StatusOr<std::string> TargetUser(absl::string_view command_type, const std::string& user_id,
                                       const CommandContext& ctx) {
  if (absl::Status agree = CheckSubject(command_type, user_id, ctx); !agree.ok()) return agree;
  if (!user_id.empty()) return user_id;
  if (!ctx.subject().empty()) return ctx.subject();
  return cqrs::WithErrorCode(absl::InvalidArgumentError("the command does not name a user"),
                             "USER_ID_REQUIRED",
                             absl::StrCat("set ", command_type, ".user_id or the subject"));
}

absl::Status NotFound(const std::string& id) {
  return cqrs::Rejected("USER_NOT_FOUND", absl::StrCat("there is no user ", id));
}

}  // namespace

std::string NewUserId() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  const std::uint64_t hi = random();
  const std::uint64_t lo = random();
  // A version-4 UUID.
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0x0fff,
                         ((lo >> 48) & 0x3fff) | 0x8000, lo & 0xffffffffffff);
}

absl::Status ValidateName(absl::string_view name) {
  if (absl::StripAsciiWhitespace(name).empty()) {
    return cqrs::Rejected("USER_NAME_EMPTY", "the user name must not be empty",
                          name.empty() ? "" : "the name holds only white space");
  }
  if (const std::size_t length = CodePoints(name); length > kMaxNameLength) {
    return cqrs::Rejected(
        "USER_NAME_TOO_LONG",
        absl::StrCat("the user name must have at most ", kMaxNameLength, " characters"),
        absl::StrCat("the name has ", length, " characters (", name.size(), " bytes)"));
  }
  return absl::OkStatus();
}

// Header, then the id's bytes, then the name's.
struct UserDirectory::User {
  std::uint32_t id_size;
  std::uint32_t name_size;

  absl::string_view id() const { return {bytes(), id_size}; }
  absl::string_view name() const { return {bytes() + id_size, name_size}; }
  const char* bytes() const { return reinterpret_cast<const char*>(this + 1); }

  static UserPtr Make(absl::string_view id, absl::string_view name) {
    // Ids and names arrive in frames (at most 2 GiB); a larger one would be a caller's bug.
    assert(id.size() <= UINT32_MAX && name.size() <= UINT32_MAX);
    void* memory = ::operator new(sizeof(User) + id.size() + name.size());
    auto* user = new (memory)
        User{static_cast<std::uint32_t>(id.size()), static_cast<std::uint32_t>(name.size())};
    char* out = reinterpret_cast<char*>(user + 1);
    if (!id.empty()) std::memcpy(out, id.data(), id.size());
    if (!name.empty()) std::memcpy(out + id.size(), name.data(), name.size());
    return UserPtr(user);
  }
};

void UserDirectory::UserDeleter::operator()(User* user) const {
  user->~User();
  ::operator delete(user);
}

bool UserDirectory::SlotEq::operator()(const Slot& a, const Slot& b) const {
  return a.hash == b.hash && a.user->id() == b.user->id();
}
bool UserDirectory::SlotEq::operator()(const Slot& a, const Lookup& b) const {
  return a.hash == b.hash && a.user->id() == b.id;
}

UserDirectory::UserDirectory() = default;
UserDirectory::~UserDirectory() = default;

UserDirectory::Lookup UserDirectory::LookupOf(absl::string_view id) {
  return {absl::HashOf(id), id};
}

UserDirectory::Shard& UserDirectory::ShardOf(const Lookup& key) const {
  // The top bits: the tables use the low ones (the bottom 7 are the tag a probe compares
  // first; a shard picked by them would leave every id of a shard with nearly the same tag, and
  // most probes would compare ids).
  return shards_[key.hash >> (sizeof(std::size_t) * 8 - kShardBits)];
}

bool UserDirectory::Add(absl::string_view id, absl::string_view name) {
  const Lookup key = LookupOf(id);
  Shard& shard = ShardOf(key);
  UserPtr user = User::Make(id, name);  // Before the lock: the critical section stays short.
  std::lock_guard lock(shard.mutex);
  bool added = false;
  shard.users.lazy_emplace(key, [&](const auto& construct) {
    construct(Slot{key.hash, std::move(user)});
    added = true;
  });
  return added;
}

std::optional<std::string> UserDirectory::Rename(absl::string_view id, absl::string_view name) {
  const Lookup key = LookupOf(id);
  Shard& shard = ShardOf(key);
  UserPtr renamed = User::Make(id, name);
  std::lock_guard lock(shard.mutex);
  const auto it = shard.users.find(key);
  if (it == shard.users.end()) return std::nullopt;
  std::string previous(it->user->name());
  it->user = std::move(renamed);
  return previous;
}

std::optional<std::string> UserDirectory::Remove(absl::string_view id) {
  const Lookup key = LookupOf(id);
  Shard& shard = ShardOf(key);
  std::lock_guard lock(shard.mutex);
  const auto it = shard.users.find(key);
  if (it == shard.users.end()) return std::nullopt;
  std::string name(it->user->name());
  shard.users.erase(it);
  return name;
}

bool UserDirectory::Contains(absl::string_view id) const {
  const Lookup key = LookupOf(id);
  Shard& shard = ShardOf(key);
  std::lock_guard lock(shard.mutex);
  return shard.users.contains(key);
}

std::optional<std::string> UserDirectory::NameOf(absl::string_view id) const {
  const Lookup key = LookupOf(id);
  Shard& shard = ShardOf(key);
  std::lock_guard lock(shard.mutex);
  const auto it = shard.users.find(key);
  if (it == shard.users.end()) return std::nullopt;
  return std::string(it->user->name());
}

std::size_t UserDirectory::size() const {
  std::size_t size = 0;
  for (std::size_t i = 0; i < kShards; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    size += shards_[i].users.size();
  }
  return size;
}

absl::Status RegisterHandlers(cqrs::CommandRouter& router, UserDirectory& directory) {
  absl::Status status = router.Handle<v1::CreateUser>(
      [&directory](const v1::CreateUser& command,
                   CommandContext& ctx) -> Awaitable<absl::StatusOr<v1::CreateUserReply>> {
        if (absl::Status valid = ValidateName(command.name()); !valid.ok()) co_return valid;
        if (absl::Status agree = CheckSubject("CreateUser", command.user_id(), ctx); !agree.ok()) {
          co_return agree;
        }
        std::string id = command.user_id().empty() ? NewUserId() : command.user_id();
        if (!directory.Add(id, command.name())) {
          co_return cqrs::Rejected("USER_EXISTS", absl::StrCat("user ", id, " already exists"));
        }
        v1::UserCreated created;
        created.set_user_id(id);
        created.set_name(command.name());
        ctx.Emit(created, cqrs::StreamOf(kUserEntity, id), {.channel = kUsersChannel});
        v1::CreateUserReply reply;
        reply.set_user_id(std::move(id));
        co_return reply;
      });
  if (!status.ok()) return status;

  status = router.Handle<v1::RenameUser>(
      [&directory](const v1::RenameUser& command, CommandContext& ctx) -> Awaitable<absl::Status> {
        absl::StatusOr<std::string> id = TargetUser("RenameUser", command.user_id(), ctx);
        if (!id.ok()) co_return id.status();
        if (absl::Status valid = ValidateName(command.name()); !valid.ok()) co_return valid;
        std::optional<std::string> old_name = directory.Rename(*id, command.name());
        if (!old_name.has_value()) co_return NotFound(*id);
        v1::UserRenamed renamed;
        renamed.set_user_id(*id);
        renamed.set_old_name(*std::move(old_name));
        renamed.set_new_name(command.name());
        ctx.Emit(renamed, cqrs::StreamOf(kUserEntity, *id), {.channel = kUsersChannel});
        co_return absl::OkStatus();
      });
  if (!status.ok()) return status;

  return router.Handle<v1::DeleteUser>(
      [&directory](const v1::DeleteUser& command, CommandContext& ctx) -> Awaitable<absl::Status> {
        absl::StatusOr<std::string> id = TargetUser("DeleteUser", command.user_id(), ctx);
        if (!id.ok()) co_return id.status();
        std::optional<std::string> name = directory.Remove(*id);
        if (!name.has_value()) co_return NotFound(*id);
        v1::UserDeleted deleted;
        deleted.set_user_id(*id);
        deleted.set_name(*std::move(name));
        ctx.Emit(deleted, cqrs::StreamOf(kUserEntity, *id), {.channel = kUsersChannel});
        co_return absl::OkStatus();
      });
}

}  // namespace users
