// File: cqrs/net/gateway_protocol.h
//
// The event gateway's message layer, without sockets: which subprotocol a WebSocket client gets,
// and cqrs.v1.ClientMessage / cqrs.v1.ServerMessage (proto/cqrs/v1/gateway.proto) to and from
// the bytes of one WebSocket message. `cqrs.v1.json` carries protobuf's canonical JSON mapping in
// text frames, `cqrs.v1.proto` serialized messages in binary frames.
//
//   auto chosen = ChooseSubprotocol(request[http::field::sec_websocket_protocol]);
//   if (!chosen.ok()) return Reject(http::status::bad_request, chosen.status().message());
//   if (!chosen->header.empty()) response.set(http::field::sec_websocket_protocol, chosen->header);
//   ...
//   v1::ClientMessage message;
//   if (absl::Status status = DecodeClientMessage(chosen->format, decoder.message(), message);
//       !status.ok()) {
//     return SendError(v1::GatewayError::MALFORMED_MESSAGE, status.message());
//   }

#ifndef CQRS_NET_GATEWAY_PROTOCOL_H_
#define CQRS_NET_GATEWAY_PROTOCOL_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cqrs/net/websocket_codec.h"
#include "cqrs/v1/gateway.pb.h"

namespace cqrs::net {

enum class WireFormat : std::uint8_t { kJson, kProto };

inline constexpr absl::string_view kJsonSubprotocol = "cqrs.v1.json";
inline constexpr absl::string_view kProtoSubprotocol = "cqrs.v1.proto";

// kJsonSubprotocol or kProtoSubprotocol.
absl::string_view SubprotocolName(WireFormat format) noexcept;
// The opcode of every message in `format`: kText for JSON, kBinary for proto.
ws::Opcode MessageOpcode(WireFormat format) noexcept;

// The outcome of subprotocol negotiation.
struct Subprotocol {
  WireFormat format = WireFormat::kJson;
  // The value to send back in the 101 response's Sec-WebSocket-Protocol header; empty: send no
  // such header (the client offered none, and gets JSON). Points to static storage.
  absl::string_view header;
};

// Picks the subprotocol from a Sec-WebSocket-Protocol request header value: a comma-separated
// list in the client's order of preference, optional whitespace around the names (repeated
// header fields joined with ","). The first of ours wins; names compare case-sensitively. An
// absent or blank header gives JSON with nothing to echo. kInvalidArgument when the header names
// only other protocols; its message lists the supported ones.
absl::StatusOr<Subprotocol> ChooseSubprotocol(absl::string_view header);

// Decodes one client message (the payload of one WebSocket message) into `out`, replacing its
// content. JSON: canonical proto3 JSON (lowerCamelCase or proto field names, 64-bit integers as
// strings or numbers), unknown fields rejected. Proto: the binary wire format. kInvalidArgument
// naming the problem when the bytes do not parse, or when the message sets none of its `kind`
// (subscribe, unsubscribe, ping). Safe on any input.
absl::Status DecodeClientMessage(WireFormat format, absl::string_view bytes,
                                 v1::ClientMessage& out);

// Encodes a server message as the payload of one WebSocket message: compact JSON with
// lowerCamelCase names and default values omitted, or the binary wire format. JSON fails with
// kInvalidArgument when the message holds a google.protobuf.Any (an event payload) whose type
// is not linked into the program, since the JSON mapping must expand it; proto fails only for
// messages over 2 GiB.
absl::StatusOr<std::string> EncodeServerMessage(WireFormat format,
                                                const v1::ServerMessage& message);

}  // namespace cqrs::net

#endif  // CQRS_NET_GATEWAY_PROTOCOL_H_
