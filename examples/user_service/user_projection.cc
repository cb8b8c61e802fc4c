#include "user_projection.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace users {

void UserProjection::Follow(cqrs::EventLog& log) {
  log.AddListener([this](std::span<const cqrs::EventLog::Record> appended) {
    cqrs::v1::EventEnvelope event;
    for (const cqrs::EventLog::Record& record : appended) {
      if (event.ParseFromString(record->envelope())) Apply(event);
    }
  });
}

void UserProjection::Apply(const cqrs::v1::EventEnvelope& event) {
  v1::UserCreated created;
  v1::UserRenamed renamed;
  v1::UserDeleted deleted;
  std::lock_guard lock(mutex_);
  if (event.epoch() != epoch_) {
    users_.clear();
    offset_ = 0;
    epoch_ = event.epoch();
  }
  if (event.offset() != 0 && event.offset() <= offset_) return;
  offset_ = std::max(offset_, event.offset());
  const google::protobuf::Any& payload = event.payload();
  if (payload.Is<v1::UserCreated>() && payload.UnpackTo(&created)) {
    Entry entry{.created_offset = event.offset(), .view = {}};
    entry.view.set_user_id(created.user_id());
    entry.view.set_name(created.name());
    *entry.view.mutable_created_at() = event.timestamp();
    *entry.view.mutable_updated_at() = event.timestamp();
    entry.view.set_offset(event.offset());
    users_.insert_or_assign(created.user_id(), std::move(entry));
  } else if (payload.Is<v1::UserRenamed>() && payload.UnpackTo(&renamed)) {
    if (auto it = users_.find(renamed.user_id()); it != users_.end()) {
      it->second.view.set_name(renamed.new_name());
      *it->second.view.mutable_updated_at() = event.timestamp();
      it->second.view.set_offset(event.offset());
    }
  } else if (payload.Is<v1::UserDeleted>() && payload.UnpackTo(&deleted)) {
    users_.erase(deleted.user_id());
  }
}

v1::UserList UserProjection::List() const {
  std::vector<const Entry*> entries;
  v1::UserList list;
  std::lock_guard lock(mutex_);
  entries.reserve(users_.size());
  for (const auto& [id, entry] : users_) entries.push_back(&entry);
  std::sort(entries.begin(), entries.end(),
            [](const Entry* a, const Entry* b) { return a->created_offset < b->created_offset; });
  list.mutable_users()->Reserve(static_cast<int>(entries.size()));
  for (const Entry* entry : entries) *list.add_users() = entry->view;
  list.set_offset(offset_);
  list.set_epoch(epoch_);
  return list;
}

std::optional<v1::UserView> UserProjection::Find(const std::string& user_id) const {
  std::lock_guard lock(mutex_);
  const auto it = users_.find(user_id);
  if (it == users_.end()) return std::nullopt;
  return it->second.view;
}

std::uint64_t UserProjection::offset() const {
  std::lock_guard lock(mutex_);
  return offset_;
}

}  // namespace users
