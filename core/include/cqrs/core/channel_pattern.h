// File: cqrs/core/channel_pattern.h
//
// Subscription patterns over event channels, matched without allocation:
//   "users"    exactly the channel "users"
//   "users.*"  every channel that starts with "users." ("users.created", "users.eu.created")
//   "*"        every channel
//
//   CQRS_ASSIGN_OR_RETURN(ChannelPattern pattern, ChannelPattern::Parse("users.*"));
//   if (pattern.Matches(event.channel())) ...

#ifndef CQRS_CORE_CHANNEL_PATTERN_H_
#define CQRS_CORE_CHANNEL_PATTERN_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace cqrs {

class ChannelPattern {
 public:
  // kInvalidArgument for an empty pattern, white space or control characters, or a '*' that is
  // not the whole pattern or its whole last segment.
  static absl::StatusOr<ChannelPattern> Parse(absl::string_view pattern);

  bool Matches(absl::string_view channel) const noexcept;
  const std::string& text() const { return text_; }

 private:
  enum class Kind { kExact, kPrefix, kAll };
  ChannelPattern(Kind kind, std::string text) : kind_(kind), text_(std::move(text)) {}

  Kind kind_;
  std::string text_;  // The pattern as given; for kPrefix it ends in ".*".
};

}  // namespace cqrs

#endif  // CQRS_CORE_CHANNEL_PATTERN_H_
