#include "cqrs/core/channel_pattern.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace cqrs {

absl::StatusOr<ChannelPattern> ChannelPattern::Parse(absl::string_view pattern) {
  if (pattern.empty()) return absl::InvalidArgumentError("a channel pattern must not be empty");
  for (char c : pattern) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat(
          "channel pattern '", pattern, "' contains white space or a control character"));
    }
  }
  if (pattern == "*") return ChannelPattern(Kind::kAll, "*");
  const auto star = pattern.find('*');
  if (star == absl::string_view::npos) return ChannelPattern(Kind::kExact, std::string(pattern));
  if (star + 1 != pattern.size() || star < 2 || pattern[star - 1] != '.') {
    return absl::InvalidArgumentError(
        absl::StrCat("channel pattern '", pattern,
                     "': '*' may only be the whole pattern or its last segment, as in 'users.*'"));
  }
  return ChannelPattern(Kind::kPrefix, std::string(pattern));
}

bool ChannelPattern::Matches(absl::string_view channel) const noexcept {
  switch (kind_) {
    case Kind::kAll:
      return true;
    case Kind::kExact:
      return channel == text_;
    case Kind::kPrefix: {
      // "users.*" matches "users.<anything non-empty>".
      const absl::string_view prefix = absl::string_view(text_).substr(0, text_.size() - 1);
      return channel.size() > prefix.size() && absl::StartsWith(channel, prefix);
    }
  }
  return false;
}

}  // namespace cqrs
