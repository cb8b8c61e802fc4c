// The user service's directory (examples/user_service): many ids, the same answers as a
// plain map would give.
#include <gtest/gtest.h>

#include <string>

#include "absl/strings/str_format.h"
#include "user_handlers.h"

namespace users {
namespace {

std::string Id(int i) { return absl::StrFormat("1234abcd-%04x-4000-8000-%012x", i % 7, i); }

TEST(UserDirectoryTest, ManyUsersAddRenameRemoveLikeAMap) {
  constexpr int kUsers = 50'000;  // Enough for every shard's table to grow many times.
  UserDirectory directory;
  for (int i = 0; i < kUsers; ++i) {
    ASSERT_TRUE(directory.Add(Id(i), absl::StrFormat("name %d", i))) << i;
  }
  EXPECT_EQ(directory.size(), static_cast<std::size_t>(kUsers));
  for (int i = 0; i < kUsers; i += 97) {
    EXPECT_FALSE(directory.Add(Id(i), "again")) << "a second Add of " << Id(i);
    EXPECT_EQ(directory.NameOf(Id(i)), absl::StrFormat("name %d", i));
  }
  EXPECT_EQ(directory.Rename(Id(5), "renamed"), "name 5");
  EXPECT_EQ(directory.NameOf(Id(5)), "renamed");
  EXPECT_EQ(directory.Rename(Id(5), std::string(200, 'l')), "renamed");  // Longer, then shorter.
  EXPECT_EQ(directory.Rename(Id(5), ""), std::string(200, 'l'));
  EXPECT_EQ(directory.NameOf(Id(5)), "");
  EXPECT_TRUE(directory.Contains(Id(5)));
  EXPECT_EQ(directory.Remove(Id(6)), "name 6");
  EXPECT_FALSE(directory.Contains(Id(6)));
  EXPECT_EQ(directory.Remove(Id(6)), std::nullopt);
  EXPECT_EQ(directory.Rename(Id(6), "x"), std::nullopt);
  EXPECT_FALSE(directory.Contains(Id(kUsers)));
  EXPECT_TRUE(directory.Add(Id(6), "back"));
  EXPECT_EQ(directory.size(), static_cast<std::size_t>(kUsers));
  // Ids of any length, the empty one included.
  for (const std::string& id : {std::string(), std::string(1, 'x'), std::string(300, 'y')}) {
    EXPECT_TRUE(directory.Add(id, "odd"));
    EXPECT_TRUE(directory.Contains(id));
    EXPECT_FALSE(directory.Add(id, "odd"));
  }
}

}  // namespace
}  // namespace users
