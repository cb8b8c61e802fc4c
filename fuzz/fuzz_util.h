// Helpers shared by the fuzz targets.

#ifndef CQRS_FUZZ_FUZZ_UTIL_H_
#define CQRS_FUZZ_FUZZ_UTIL_H_

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <string>

namespace cqrs::fuzz {

// `message` serialized deterministically (map entries in key order), for comparing results.
template <typename Message>
std::string Deterministic(const Message& message) {
  std::string bytes;
  google::protobuf::io::StringOutputStream stream(&bytes);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  message.SerializeToCodedStream(&coded);
  coded.Trim();
  return bytes;
}

}  // namespace cqrs::fuzz

#endif  // CQRS_FUZZ_FUZZ_UTIL_H_
