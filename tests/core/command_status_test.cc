#include "cqrs/core/command_status.h"

#include <gtest/gtest.h>

namespace cqrs {
namespace {

using Envelope = v1::CommandResponseEnvelope;

TEST(CommandStatus, EveryWireStatusRoundTripsThroughAbsl) {
  for (int s = Envelope::Status_MIN; s <= Envelope::Status_MAX; ++s) {
    const auto status = static_cast<CommandStatus>(s);
    if (status == Envelope::STATUS_UNSPECIFIED) continue;
    EXPECT_EQ(ToCommandStatus(ToStatusCode(status)), status) << CommandStatusName(status);
  }
}

TEST(CommandStatus, DomainErrorsAreRejected) {
  EXPECT_EQ(ToCommandStatus(absl::StatusCode::kFailedPrecondition), Envelope::REJECTED);
  EXPECT_EQ(ToCommandStatus(absl::StatusCode::kAlreadyExists), Envelope::REJECTED);
  EXPECT_EQ(ToCommandStatus(absl::StatusCode::kUnknown), Envelope::INTERNAL);
}

TEST(CommandStatus, SetStatusAndStatusOf) {
  Envelope response;
  SetStatus(absl::NotFoundError("no handler for x.Y"), response);
  EXPECT_EQ(response.status(), Envelope::NOT_FOUND);
  EXPECT_EQ(response.error().message(), "no handler for x.Y");
  response.mutable_error()->set_error_code("NO_HANDLER");
  const absl::Status back = StatusOf(response);
  EXPECT_EQ(back.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(back.message(), "NO_HANDLER: no handler for x.Y");

  Envelope ok;
  SetStatus(absl::OkStatus(), ok);
  EXPECT_EQ(ok.status(), Envelope::OK);
  EXPECT_FALSE(ok.has_error());
  EXPECT_TRUE(StatusOf(ok).ok());
}

TEST(CommandStatus, NamesUnknownValues) {
  EXPECT_EQ(CommandStatusName(Envelope::DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
  EXPECT_EQ(CommandStatusName(static_cast<CommandStatus>(99)), "UNKNOWN");
}

}  // namespace
}  // namespace cqrs
