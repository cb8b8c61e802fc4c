#include "cqrs/net/gateway_protocol.h"

#include <google/protobuf/util/json_util.h>

#include <climits>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"

namespace cqrs::net {
namespace {

namespace pb_util = ::google::protobuf::util;

// The longest piece of a client's header quoted back in an error.
constexpr std::size_t kMaxQuoted = 200;

absl::string_view AsStringView(google::protobuf::StringPiece piece) {
  return {piece.data(), piece.size()};
}

// "subscribe, unsubscribe, ping": the fields of ClientMessage's `kind`.
const std::string& KindFieldNames() {
  static const std::string* const names = [] {
    const google::protobuf::OneofDescriptor* kind =
        v1::ClientMessage::descriptor()->FindOneofByName("kind");
    std::vector<std::string> fields;
    for (int i = 0; i < kind->field_count(); ++i) fields.push_back(kind->field(i)->name());
    return new std::string(absl::StrJoin(fields, ", "));
  }();
  return *names;
}

}  // namespace

absl::string_view SubprotocolName(WireFormat format) noexcept {
  return format == WireFormat::kProto ? kProtoSubprotocol : kJsonSubprotocol;
}

ws::Opcode MessageOpcode(WireFormat format) noexcept {
  return format == WireFormat::kProto ? ws::Opcode::kBinary : ws::Opcode::kText;
}

absl::StatusOr<Subprotocol> ChooseSubprotocol(absl::string_view header) {
  bool offered = false;
  for (absl::string_view name : absl::StrSplit(header, ',')) {
    name = absl::StripAsciiWhitespace(name);
    if (name.empty()) continue;
    offered = true;
    if (name == kJsonSubprotocol) return Subprotocol{WireFormat::kJson, kJsonSubprotocol};
    if (name == kProtoSubprotocol) return Subprotocol{WireFormat::kProto, kProtoSubprotocol};
  }
  if (!offered) return Subprotocol{WireFormat::kJson, {}};
  return absl::InvalidArgumentError(absl::StrCat(
      "Sec-WebSocket-Protocol \"", header.substr(0, kMaxQuoted),
      header.size() > kMaxQuoted ? "...\"" : "\"",
      " names no supported subprotocol; supported: ", kJsonSubprotocol, ", ", kProtoSubprotocol));
}

absl::Status DecodeClientMessage(WireFormat format, absl::string_view bytes,
                                 v1::ClientMessage& out) {
  out.Clear();
  if (format == WireFormat::kJson) {
    const pb_util::Status status = pb_util::JsonStringToMessage(
        google::protobuf::StringPiece(bytes.data(), bytes.size()), &out);
    if (!status.ok()) {
      out.Clear();
      return absl::InvalidArgumentError(
          absl::StrCat("invalid cqrs.v1.ClientMessage JSON: ", AsStringView(status.message())));
    }
  } else {
    if (bytes.size() > INT_MAX ||
        !out.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      out.Clear();
      return absl::InvalidArgumentError(
          absl::StrCat("invalid cqrs.v1.ClientMessage: ", bytes.size(),
                       " bytes are not a valid protobuf encoding of it (or hold a string that "
                       "is not UTF-8)"));
    }
  }
  if (out.kind_case() == v1::ClientMessage::KIND_NOT_SET) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid cqrs.v1.ClientMessage: the message sets none of ", KindFieldNames()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> EncodeServerMessage(WireFormat format,
                                                const v1::ServerMessage& message) {
  std::string bytes;
  if (format == WireFormat::kJson) {
    const pb_util::Status status = pb_util::MessageToJsonString(message, &bytes);
    if (!status.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "cannot encode cqrs.v1.ServerMessage as JSON: ", AsStringView(status.message())));
    }
    return bytes;
  }
  if (!message.SerializeToString(&bytes)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot serialize cqrs.v1.ServerMessage of ",
                                                   message.ByteSizeLong(), " bytes"));
  }
  return bytes;
}

}  // namespace cqrs::net
