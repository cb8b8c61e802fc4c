#include "schemas.h"

#include <fstream>
#include <sstream>
#include <utility>

#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace cli {
namespace {

namespace pb = ::google::protobuf;

absl::string_view TypeName(absl::string_view name_or_url) {
  const std::size_t slash = name_or_url.rfind('/');
  return slash == absl::string_view::npos ? name_or_url : name_or_url.substr(slash + 1);
}

absl::string_view ShortName(absl::string_view full_name) {
  const std::size_t dot = full_name.rfind('.');
  return dot == absl::string_view::npos ? full_name : full_name.substr(dot + 1);
}

// A JSON string literal (escaped by protobuf's own printer).
std::string JsonString(const std::string& text) {
  pb::Value value;
  value.set_string_value(text);
  std::string json;
  if (!pb::util::MessageToJsonString(value, &json).ok()) return "\"\"";
  return json;
}

}  // namespace

// Collects what the pool reports while building files lazily.
class Schemas::Errors : public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name,
                const pb::Message* descriptor, ErrorLocation location,
                const std::string& message) override {
    messages_.push_back(absl::StrCat(filename, ": ", element_name.empty() ? "" : element_name,
                                     element_name.empty() ? "" : ": ", message));
  }
  std::string Take() {
    std::string all = absl::StrJoin(messages_, "; ");
    messages_.clear();
    return all;
  }

 private:
  std::vector<std::string> messages_;
};

Schemas::Schemas(std::vector<const pb::FileDescriptor*> linked)
    : linked_(std::move(linked)),
      generated_(*pb::DescriptorPool::generated_pool()),
      merged_(&loaded_, &generated_),
      errors_(std::make_unique<Errors>()),
      pool_(std::make_unique<pb::DescriptorPool>(&merged_, errors_.get())) {}

Schemas::~Schemas() = default;

absl::Status Schemas::LoadDescriptorSet(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open the descriptor set ", path));
  std::stringstream bytes;
  bytes << in.rdbuf();
  pb::FileDescriptorSet set;
  if (!set.ParseFromString(bytes.str()) || set.file_size() == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     " is not a FileDescriptorSet (make one with `protoc --include_imports "
                     "--descriptor_set_out=FILE your.proto`)"));
  }
  for (const pb::FileDescriptorProto& file : set.file()) {
    if (!loaded_.Add(file)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", file.name(), " conflicts with a file of the same name already loaded"));
    }
  }
  for (const pb::FileDescriptorProto& file : set.file()) {
    if (pool_->FindFileByName(file.name()) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": cannot build ", file.name(), ": ", errors_->Take(),
                       " (was the set made with --include_imports?)"));
    }
    loaded_files_.push_back(file.name());
  }
  loaded_sets_.push_back(path);
  return absl::OkStatus();
}

const pb::Descriptor* Schemas::Find(absl::string_view name) const {
  const absl::string_view type = TypeName(name);
  if (type.empty()) return nullptr;
  const pb::Descriptor* descriptor = pool_->FindMessageTypeByName(std::string(type));
  errors_->Take();  // A failed lookup is reported by the caller.
  return descriptor;
}

std::vector<std::string> Schemas::ListedTypes() const {
  std::vector<std::string> types;
  auto add = [&types](const pb::FileDescriptor* file) {
    for (int i = 0; file != nullptr && i < file->message_type_count(); ++i) {
      types.push_back(file->message_type(i)->full_name());
    }
  };
  for (const pb::FileDescriptor* file : linked_) add(file);
  for (const std::string& name : loaded_files_) {
    // Well-known types that came with --include_imports are not worth listing.
    if (!absl::StartsWith(name, "google/protobuf/")) add(pool_->FindFileByName(name));
  }
  return types;
}

absl::StatusOr<std::unique_ptr<pb::Message>> Schemas::FromJson(absl::string_view type,
                                                               absl::string_view json) const {
  const pb::Descriptor* descriptor = Find(type);
  if (descriptor == nullptr) {
    std::vector<std::string> known = ListedTypes();
    std::vector<std::string> similar;
    for (const std::string& candidate : known) {
      if (absl::EqualsIgnoreCase(ShortName(candidate), ShortName(TypeName(type)))) {
        similar.push_back(candidate);
      }
    }
    std::string where = loaded_sets_.empty()
                            ? std::string(" and no --descriptor_set was given")
                            : absl::StrCat(" nor in ", absl::StrJoin(loaded_sets_, ", "));
    return absl::NotFoundError(absl::StrCat(
        "unknown message type '", type, "': it is not linked into this program", where,
        ". Use the full name (package.Message)",
        similar.empty() ? std::string()
                        : absl::StrCat(" (did you mean ", absl::StrJoin(similar, " or "), "?)"),
        ", and make the type known: pass --descriptor_set=FILE with a descriptor set made by "
        "`protoc --include_imports --descriptor_set_out=FILE -I<dir> <schema>.proto`, or link the "
        "schema's C++ library into the program. Known types: ",
        known.empty() ? std::string("none") : absl::StrJoin(known, ", ")));
  }
  std::unique_ptr<pb::Message> message(factory_.GetPrototype(descriptor)->New());
  const auto status = pb::util::JsonStringToMessage(pb::StringPiece(json.data(), json.size()),
                                                    message.get(), pb::util::JsonParseOptions());
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the JSON is not a valid ", descriptor->full_name(), ": ", std::string(status.message())));
  }
  return message;
}

absl::StatusOr<std::string> Schemas::Render(const pb::Message& message) const {
  const pb::Descriptor* descriptor =
      pool_->FindMessageTypeByName(message.GetDescriptor()->full_name());
  errors_->Take();
  std::string json;
  if (descriptor == nullptr) {
    // Not in this pool (cannot happen for generated types): the message's own pool resolves.
    const auto status = pb::util::MessageToJsonString(message, &json);
    if (!status.ok()) return absl::InvalidArgumentError(std::string(status.message()));
    return json;
  }
  // The same bytes as a message of this pool, so that Any fields resolve against the linked
  // types and the loaded descriptor sets.
  std::unique_ptr<pb::Message> copy(factory_.GetPrototype(descriptor)->New());
  if (!copy->ParseFromString(message.SerializeAsString())) {
    return absl::InvalidArgumentError(
        absl::StrCat("a ", descriptor->full_name(), " does not parse as this pool's"));
  }
  const auto status = pb::util::MessageToJsonString(*copy, &json);
  errors_->Take();
  if (!status.ok()) return absl::InvalidArgumentError(std::string(status.message()));
  return json;
}

std::string Schemas::ToJson(const pb::Message& message) const {
  absl::StatusOr<std::string> json = Render(message);
  if (json.ok()) return *std::move(json);
  // Most likely a payload of an unknown type: render the rest, and the payload as its type URL
  // and base64 bytes (as the event gateway does), so nothing is lost.
  const pb::FieldDescriptor* field = message.GetDescriptor()->FindFieldByName("payload");
  if (field == nullptr || field->is_repeated() ||
      field->type() != pb::FieldDescriptor::TYPE_MESSAGE ||
      field->message_type()->full_name() != pb::Any::descriptor()->full_name()) {
    return absl::StrCat("{\"error\":", JsonString(std::string(json.status().message())), "}");
  }
  const pb::Reflection* reflection = message.GetReflection();
  const pb::Message& any = reflection->GetMessage(message, field);
  const pb::Descriptor* any_type = any.GetDescriptor();
  const std::string type_url =
      any.GetReflection()->GetString(any, any_type->FindFieldByName("type_url"));
  const std::string value = any.GetReflection()->GetString(any, any_type->FindFieldByName("value"));
  std::unique_ptr<pb::Message> rest(message.New());
  rest->CopyFrom(message);
  rest->GetReflection()->ClearField(rest.get(), field);
  absl::StatusOr<std::string> body = Render(*rest);
  if (!body.ok()) {
    return absl::StrCat("{\"error\":", JsonString(std::string(body.status().message())), "}");
  }
  body->pop_back();  // The closing brace.
  return absl::StrCat(*body, body->size() > 1 ? "," : "", "\"", field->json_name(),
                      "\":{\"@type\":", JsonString(type_url), ",\"value\":\"",
                      absl::Base64Escape(value), "\"}}");
}

absl::StatusOr<std::string> Schemas::PayloadJson(const pb::Any& any) const {
  const pb::Descriptor* descriptor = Find(any.type_url());
  if (descriptor == nullptr) {
    return absl::NotFoundError(absl::StrCat("unknown type ", TypeName(any.type_url())));
  }
  std::unique_ptr<pb::Message> message(factory_.GetPrototype(descriptor)->New());
  if (!message->ParseFromString(any.value())) {
    return absl::InvalidArgumentError(
        absl::StrCat("the payload does not parse as a ", descriptor->full_name()));
  }
  std::string json;
  const auto status = pb::util::MessageToJsonString(*message, &json);
  if (!status.ok()) return absl::InvalidArgumentError(std::string(status.message()));
  return json;
}

}  // namespace cli
