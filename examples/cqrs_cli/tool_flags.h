// File: tool_flags.h (examples/cqrs_cli)
//
// Command-line parsing for the example tools (cqrs, cqrs_event_listener) over absl::flags'
// registry: flags are ordinary ABSL_FLAGs read with absl::GetFlag, but a parse error is a value
// (each tool chooses its exit code), list flags may be repeated (`--channel=a --channel b` is
// `--channel=a,b`), and the help text is generated from the flags' own documentation.
//
//   ABSL_FLAG(std::vector<std::string>, channel, {"users"}, "channel names or patterns");
//   const cli::FlagSet flags{.files = {"event_listener/main.cc"}, .repeatable = {"channel"}};
//   absl::StatusOr<cli::Args> args = cli::ParseArgs(argc, argv, flags);
//   if (!args.ok()) { ...print args.status().message(); return 2; }
//   if (args->help) { std::fputs(cli::FlagsHelp(flags, {}).c_str(), stdout); return 0; }
//
// Accepted forms: --name=value, --name value, -name=value, --bool, --nobool, `--` (everything
// after it is positional). --help, -help and -h set Args::help.

#ifndef CQRS_EXAMPLES_CQRS_CLI_TOOL_FLAGS_H_
#define CQRS_EXAMPLES_CQRS_CLI_TOOL_FLAGS_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace cli {

struct FlagSet {
  // Only flags defined in source files whose path ends with one of these are accepted.
  std::vector<std::string> files;
  // List flags (std::vector<std::string>) whose repetitions accumulate instead of replacing.
  std::vector<std::string> repeatable;
};

struct Args {
  std::vector<std::string> positional;     // In order; argv[0] excluded.
  absl::flat_hash_set<std::string> given;  // Names of the flags set on the command line.
  bool help = false;
};

// Sets the flags of `argv` and returns the rest. kInvalidArgument naming the argument at fault:
// an unknown flag, a missing value, a value the flag's type does not parse.
absl::StatusOr<Args> ParseArgs(int argc, const char* const* argv, const FlagSet& flags);

// "  --name=<default>\n      <help>\n" for each of `names`, in that order (every flag of the
// set, sorted by name, when `names` is empty).
std::string FlagsHelp(const FlagSet& flags, absl::Span<const std::string> names);

}  // namespace cli

#endif  // CQRS_EXAMPLES_CQRS_CLI_TOOL_FLAGS_H_
