#include "cqrs/core/channel_pattern.h"

#include <gtest/gtest.h>

namespace cqrs {
namespace {

bool Match(absl::string_view pattern, absl::string_view channel) {
  auto parsed = ChannelPattern::Parse(pattern);
  EXPECT_TRUE(parsed.ok()) << parsed.status();
  return parsed.ok() && parsed->Matches(channel);
}

TEST(ChannelPattern, ExactMatchesOnlyItself) {
  EXPECT_TRUE(Match("users", "users"));
  EXPECT_FALSE(Match("users", "users.created"));
  EXPECT_FALSE(Match("users", "user"));
  EXPECT_FALSE(Match("users", ""));
}

TEST(ChannelPattern, PrefixMatchesEverySubChannel) {
  EXPECT_TRUE(Match("users.*", "users.created"));
  EXPECT_TRUE(Match("users.*", "users.eu.created"));
  EXPECT_FALSE(Match("users.*", "users"));
  EXPECT_FALSE(Match("users.*", "users."));
  EXPECT_FALSE(Match("users.*", "usersx.created"));
  EXPECT_FALSE(Match("users.*", "orders.created"));
  EXPECT_TRUE(Match("a.b.*", "a.b.c"));
  EXPECT_FALSE(Match("a.b.*", "a.bc"));
}

TEST(ChannelPattern, StarMatchesEverything) {
  EXPECT_TRUE(Match("*", "users"));
  EXPECT_TRUE(Match("*", "users.created"));
  EXPECT_TRUE(Match("*", ""));
}

TEST(ChannelPattern, RejectsMalformedPatternsWithAReason) {
  for (absl::string_view bad : {"", "us*rs", "*.users", "users*", ".*", "users.**", "a b",
                                "users.*.created", "tab\tchannel"}) {
    const auto parsed = ChannelPattern::Parse(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << "'" << bad << "'";
  }
  EXPECT_NE(ChannelPattern::Parse("us*rs").status().message().find("users.*"),
            absl::string_view::npos);
}

TEST(ChannelPattern, KeepsItsText) {
  EXPECT_EQ(ChannelPattern::Parse("users.*")->text(), "users.*");
}

}  // namespace
}  // namespace cqrs
