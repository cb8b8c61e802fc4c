// Private: hand-written parsers for the two messages every command puts on the wire. A server
// parses each cqrs.v1.CommandEnvelope into a message reused from command to command (a steady
// stream of commands costs no allocation to decode); a client parses each
// cqrs.v1.CommandResponseEnvelope in one pass, without protobuf's generic machinery. Both take
// only a well-formed subset and leave everything else to protobuf's own parse.

#ifndef CQRS_NET_SRC_COMMAND_PARSE_H_
#define CQRS_NET_SRC_COMMAND_PARSE_H_

#include <cstddef>
#include <span>

#include "cqrs/v1/command.pb.h"

namespace cqrs::net::internal {

// Parses `bytes` into `command` (a heap message, not on an arena), overwriting the strings and
// submessages it already holds instead of freeing and allocating them again, as protobuf's own
// parse does (Clear deletes proto3 submessages). True when `command` now equals what
// `command.ParseFromArray(bytes)` gives. False when the input is outside the well-formed subset
// this parser takes (unknown fields, metadata, a repeated submessage, an unexpected wire type,
// invalid UTF-8, a varint over 10 bytes, a length over 2^28, ...): the caller then parses with
// protobuf, which decides whether the input is valid; `command` is left in an unspecified but
// valid state (holding what was copied before the parser gave up).
bool ParseCommandReusing(std::span<const std::byte> bytes, v1::CommandEnvelope& command) noexcept;

// Parses `bytes` into `response`, which must be empty (new or cleared). True when `response`
// now equals what `response.ParseFromArray(bytes)` gives. False when the input is outside the
// subset this parser takes (an error, unknown fields, a submessage twice, an unexpected wire
// type, invalid UTF-8, ...): the caller then clears `response` and parses with protobuf.
bool ParseResponse(std::span<const std::byte> bytes,
                   v1::CommandResponseEnvelope& response) noexcept;

// The bytes `command`'s strings keep allocated (their capacity), for a caller that bounds what
// a reused message may keep.
std::size_t RetainedBytes(const v1::CommandEnvelope& command) noexcept;

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_COMMAND_PARSE_H_
