#include "cqrs/core/any_util.h"

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace cqrs {

const std::string& TypeUrlOf(const google::protobuf::Descriptor* descriptor) {
  // Per thread: no lock on the hot path. Descriptors live as long as the process.
  thread_local absl::flat_hash_map<const google::protobuf::Descriptor*, std::string> urls;
  auto [it, inserted] = urls.try_emplace(descriptor);
  if (inserted) it->second = absl::StrCat("type.googleapis.com/", descriptor->full_name());
  return it->second;
}

void PackAny(const google::protobuf::Message& message, google::protobuf::Any& any) {
  any.set_type_url(TypeUrlOf(message.GetDescriptor()));
  message.SerializeToString(any.mutable_value());
}

}  // namespace cqrs
