// File: schemas.h (examples/cqrs_cli)
//
// The protobuf types an example tool knows: those linked into the program, plus those of a
// FileDescriptorSet loaded at run time (as made by `protoc --include_imports
// --descriptor_set_out=FILE your.proto`), which take precedence for the files it holds.
// Messages of any known type are built from and rendered as protobuf's canonical JSON.
//
//   cli::Schemas schemas({users::v1::CreateUser::descriptor()->file()});
//   CQRS_RETURN_IF_ERROR(schemas.LoadDescriptorSet("orders.desc"));
//   CQRS_ASSIGN_OR_RETURN(std::unique_ptr<google::protobuf::Message> command,
//                         schemas.FromJson("users.v1.CreateUser", R"({"name": "Bob"})"));
//   std::string line = schemas.ToJson(response);  // CommandResponseEnvelope, payload expanded
//
// Not thread-safe; messages made by FromJson must not outlive the Schemas.

#ifndef CQRS_EXAMPLES_CQRS_CLI_SCHEMAS_H_
#define CQRS_EXAMPLES_CQRS_CLI_SCHEMAS_H_

#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/any.pb.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cli {

class Schemas {
 public:
  // `linked`: the schema files linked into the program whose types a user may name (listed in
  // errors and suggestions). Every linked type can be used, listed or not.
  explicit Schemas(std::vector<const google::protobuf::FileDescriptor*> linked);
  ~Schemas();
  Schemas(const Schemas&) = delete;
  Schemas& operator=(const Schemas&) = delete;

  // Adds the types of a serialized FileDescriptorSet. kNotFound / kInvalidArgument naming the
  // file and what is wrong (unreadable, not a descriptor set, a missing import).
  absl::Status LoadDescriptorSet(const std::string& path);

  // The message type named by a full name ("users.v1.CreateUser") or a type URL; nullptr when
  // unknown.
  const google::protobuf::Descriptor* Find(absl::string_view name) const;

  // A message of type `type` from JSON. kNotFound for an unknown type (saying how to make it
  // known, and suggesting types with the same short name); kInvalidArgument with protobuf's
  // message for JSON that does not parse as the type.
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> FromJson(absl::string_view type,
                                                                      absl::string_view json) const;

  // Compact canonical JSON of `message`, whose Any fields are expanded when their type is known.
  // A top-level `payload` Any of an unknown type renders as {"@type": URL, "value": base64}.
  std::string ToJson(const google::protobuf::Message& message) const;

  // Compact JSON of the message packed in `any` (its fields, without "@type"); kNotFound when
  // its type is unknown, kInvalidArgument when its bytes do not parse as that type.
  absl::StatusOr<std::string> PayloadJson(const google::protobuf::Any& any) const;

  // Full names of the message types of the linked files and the loaded descriptor sets.
  std::vector<std::string> ListedTypes() const;

 private:
  class Errors;
  absl::StatusOr<std::string> Render(const google::protobuf::Message& message) const;

  std::vector<const google::protobuf::FileDescriptor*> linked_;
  std::vector<std::string> loaded_files_;
  std::vector<std::string> loaded_sets_;
  google::protobuf::SimpleDescriptorDatabase loaded_;
  google::protobuf::DescriptorPoolDatabase generated_;
  google::protobuf::MergedDescriptorDatabase merged_;
  std::unique_ptr<Errors> errors_;
  std::unique_ptr<google::protobuf::DescriptorPool> pool_;
  mutable google::protobuf::DynamicMessageFactory factory_;
};

}  // namespace cli

#endif  // CQRS_EXAMPLES_CQRS_CLI_SCHEMAS_H_
