#include "cqrs/core/command_status.h"

#include <string>

namespace cqrs {
namespace {

constexpr absl::string_view kErrorCodePayload = "cqrs.v1.CommandError.error_code";
constexpr absl::string_view kDeveloperMessagePayload = "cqrs.v1.CommandError.developer_message";

}  // namespace

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

absl::Status WithErrorCode(absl::Status status, absl::string_view error_code,
                           absl::string_view developer_message) {
  if (status.ok()) return status;
  if (!error_code.empty()) status.SetPayload(kErrorCodePayload, absl::Cord(error_code));
  if (!developer_message.empty()) {
    status.SetPayload(kDeveloperMessagePayload, absl::Cord(developer_message));
  }
  return status;
}

absl::Status Rejected(absl::string_view error_code, absl::string_view message,
                      absl::string_view developer_message) {
  return WithErrorCode(absl::FailedPreconditionError(message), error_code, developer_message);
}

void SetStatus(const absl::Status& status, Envelope& response) {
  response.set_status(ToCommandStatus(status.code()));
  if (status.ok()) return;
  auto* error = response.mutable_error();
  error->set_message(std::string(status.message()));
  if (auto code = status.GetPayload(kErrorCodePayload)) {
    error->set_error_code(std::string(*code));
  } else {
    error->set_error_code(std::string(CommandStatusName(response.status())));
  }
  if (auto detail = status.GetPayload(kDeveloperMessagePayload)) {
    error->set_developer_message(std::string(*detail));
  }
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
