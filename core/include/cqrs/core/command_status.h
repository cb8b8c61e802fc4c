// File: cqrs/core/command_status.h
//
// The mapping between absl::Status (what library and handler code returns) and the wire's
// CommandResponseEnvelope::Status (what a client receives).
//
//   v1::CommandResponseEnvelope response;
//   SetStatus(absl::FailedPreconditionError("user exists"), response);  // REJECTED + error
//   absl::Status status = StatusOf(response);                           // back again

#ifndef CQRS_CORE_COMMAND_STATUS_H_
#define CQRS_CORE_COMMAND_STATUS_H_

#include <string_view>

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "cqrs/v1/command.pb.h"

namespace cqrs {

using CommandStatus = v1::CommandResponseEnvelope::Status;

// kOk -> OK; kNotFound -> NOT_FOUND; kInvalidArgument/kOutOfRange -> INVALID;
// kUnauthenticated/kPermissionDenied -> UNAUTHENTICATED; kDeadlineExceeded -> DEADLINE_EXCEEDED;
// kUnavailable/kCancelled/kResourceExhausted -> UNAVAILABLE; kInternal/kUnknown/kDataLoss/
// kUnimplemented -> INTERNAL; kFailedPrecondition/kAlreadyExists/kAborted -> REJECTED.
CommandStatus ToCommandStatus(absl::StatusCode code) noexcept;
// The inverse, choosing the canonical code for each status (REJECTED -> kFailedPrecondition).
absl::StatusCode ToStatusCode(CommandStatus status) noexcept;
// "OK", "REJECTED", ...
std::string_view CommandStatusName(CommandStatus status) noexcept;

// A domain refusal: REJECTED on the wire, with `error_code` (stable, machine-readable, e.g.
// "USER_NAME_EMPTY"), `message` (for users) and `developer_message` (detail for developers).
//   co_return cqrs::Rejected("USER_EXISTS", "user 'bob' already exists");
absl::Status Rejected(absl::string_view error_code, absl::string_view message,
                      absl::string_view developer_message = {});
// Attaches an error code / developer message to any status (kept as status payloads).
absl::Status WithErrorCode(absl::Status status, absl::string_view error_code,
                           absl::string_view developer_message = {});

// Sets response.status from `status` and, unless it is OK, response.error (message, and the
// error code and developer message attached by Rejected / WithErrorCode).
void SetStatus(const absl::Status& status, v1::CommandResponseEnvelope& response);
// The response's status as an absl::Status, with the error's message.
absl::Status StatusOf(const v1::CommandResponseEnvelope& response);

}  // namespace cqrs

#endif  // CQRS_CORE_COMMAND_STATUS_H_
