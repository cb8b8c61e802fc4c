// File: cqrs/core/any_util.h
//
// Packs a message into a google.protobuf.Any like Any::PackFrom, without building the type URL
// for every call (PackFrom allocates a temporary "type.googleapis.com/<name>" each time).
//
//   cqrs::PackAny(created, *envelope.mutable_payload());

#ifndef CQRS_CORE_ANY_UTIL_H_
#define CQRS_CORE_ANY_UTIL_H_

#include <string>

#include <google/protobuf/any.pb.h>
#include <google/protobuf/message.h>

namespace cqrs {

// "type.googleapis.com/<full name>", computed once per type and thread.
const std::string& TypeUrlOf(const google::protobuf::Descriptor* descriptor);

// Same result as any.PackFrom(message).
void PackAny(const google::protobuf::Message& message, google::protobuf::Any& any);

}  // namespace cqrs

#endif  // CQRS_CORE_ANY_UTIL_H_
