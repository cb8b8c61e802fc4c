#include "cqrs/core/command_status.h"

#include <string>

namespace cqrs {

using Envelope = v1::CommandResponseEnvelope;

CommandStatus ToCommandStatus(absl::StatusCode code) noexcept {
  switch (code) {
    case absl::StatusCode::kOk:
      return Envelope::OK;
    case absl::StatusCode::kNotFound:
      return Envelope::NOT_FOUND;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return Envelope::INVALID;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return Envelope::UNAUTHENTICATED;
    case absl::StatusCode::kDeadlineExceeded:
      return Envelope::DEADLINE_EXCEEDED;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kCancelled:
    case absl::StatusCode::kResourceExhausted:
      return Envelope::UNAVAILABLE;
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
      return Envelope::REJECTED;
    default:
      return Envelope::INTERNAL;
  }
}

absl::StatusCode ToStatusCode(CommandStatus status) noexcept {
  switch (status) {
    case Envelope::OK:
      return absl::StatusCode::kOk;
    case Envelope::REJECTED:
      return absl::StatusCode::kFailedPrecondition;
    case Envelope::NOT_FOUND:
      return absl::StatusCode::kNotFound;
    case Envelope::INVALID:
      return absl::StatusCode::kInvalidArgument;
    case Envelope::UNAUTHENTICATED:
      return absl::StatusCode::kUnauthenticated;
    case Envelope::DEADLINE_EXCEEDED:
      return absl::StatusCode::kDeadlineExceeded;
    case Envelope::UNAVAILABLE:
      return absl::StatusCode::kUnavailable;
    default:
      return absl::StatusCode::kInternal;
  }
}

std::string_view CommandStatusName(CommandStatus status) noexcept {
  if (!Envelope::Status_IsValid(status)) return "UNKNOWN";
  return Envelope::Status_Name(status);
}

void SetStatus(const absl::Status& status, Envelope& response) {
  response.set_status(ToCommandStatus(status.code()));
  if (status.ok()) return;
  response.mutable_error()->set_message(std::string(status.message()));
}

absl::Status StatusOf(const Envelope& response) {
  if (response.status() == Envelope::OK) return absl::OkStatus();
  std::string message = response.error().message();
  if (message.empty()) message = std::string(CommandStatusName(response.status()));
  if (!response.error().error_code().empty()) {
    message = response.error().error_code() + ": " + message;
  }
  return absl::Status(ToStatusCode(response.status()), message);
}

}  // namespace cqrs
