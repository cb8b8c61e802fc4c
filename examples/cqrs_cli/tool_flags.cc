#include "tool_flags.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace cli {
namespace {

bool InSet(const FlagSet& flags, const absl::CommandLineFlag& flag) {
  const std::string file = flag.Filename();
  return std::any_of(flags.files.begin(), flags.files.end(),
                     [&file](const std::string& suffix) { return absl::EndsWith(file, suffix); });
}

absl::CommandLineFlag* Find(const FlagSet& flags, absl::string_view name) {
  absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  return flag != nullptr && !flag->IsRetired() && InSet(flags, *flag) ? flag : nullptr;
}

}  // namespace

absl::StatusOr<Args> ParseArgs(int argc, const char* const* argv, const FlagSet& flags) {
  Args args;
  absl::flat_hash_map<std::string, std::string> accumulated;
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) args.positional.emplace_back(argv[i]);
      break;
    }
    if (arg.size() < 2 || arg[0] != '-') {
      args.positional.emplace_back(arg);
      continue;
    }
    absl::string_view body = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
    absl::string_view name = body;
    absl::string_view value;
    bool has_value = false;
    if (const std::size_t eq = body.find('='); eq != absl::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    if (name == "help" || name == "h") {
      args.help = true;
      continue;
    }
    absl::CommandLineFlag* flag = Find(flags, name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated = Find(flags, name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>()) {
        flag = negated;
        name = name.substr(2);
        value = "false";
        has_value = true;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg, " (see --help)"));
    }
    if (!has_value) {
      if (flag->IsOfType<bool>()) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    std::string text(value);
    const std::string key(name);
    if (std::find(flags.repeatable.begin(), flags.repeatable.end(), key) !=
        flags.repeatable.end()) {
      std::string& all = accumulated[key];
      if (!all.empty() && !text.empty()) all += ',';
      all += text;
      text = all;
    }
    std::string error;
    if (!flag->ParseFrom(text, &error)) {
      return absl::InvalidArgumentError(absl::StrCat("--", name, "=", value, ": ", error));
    }
    args.given.insert(key);
  }
  return args;
}

std::string FlagsHelp(const FlagSet& flags, absl::Span<const std::string> names) {
  std::vector<const absl::CommandLineFlag*> listed;
  if (names.empty()) {
    for (const auto& [name, flag] : absl::GetAllFlags()) {
      if (InSet(flags, *flag)) listed.push_back(flag);
    }
    std::sort(listed.begin(), listed.end(),
              [](const absl::CommandLineFlag* a, const absl::CommandLineFlag* b) {
                return a->Name() < b->Name();
              });
  } else {
    for (const std::string& name : names) {
      if (const absl::CommandLineFlag* flag = Find(flags, name)) listed.push_back(flag);
    }
  }
  std::string help;
  for (const absl::CommandLineFlag* flag : listed) {
    const std::string default_value = flag->DefaultValue();
    absl::StrAppend(&help, "  --", flag->Name(), "=",
                    default_value.empty() ? "\"\"" : default_value, "\n      ", flag->Help(), "\n");
  }
  return help;
}

}  // namespace cli
