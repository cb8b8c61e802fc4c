// File: cqrs/core/log.h
//
// The library's log lines go through one replaceable sink (default: stderr, warnings and up).
//
//   cqrs::SetLogSink([](cqrs::LogLevel level, absl::string_view line) { spdlog::info(line); });
//   cqrs::SetLogLevel(cqrs::LogLevel::kInfo);
//   cqrs::Log(cqrs::LogLevel::kWarning, absl::StrCat("closing ", peer, ": ", reason));

#ifndef CQRS_CORE_LOG_H_
#define CQRS_CORE_LOG_H_

#include <functional>

#include "absl/strings/string_view.h"

namespace cqrs {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

using LogSink = std::function<void(LogLevel, absl::string_view)>;

// Replaces the sink (nullptr restores the default). Thread-safe; the sink is called from any
// thread and must be thread-safe itself.
void SetLogSink(LogSink sink);
// Lines below `level` are dropped before formatting reaches the sink.
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void Log(LogLevel level, absl::string_view line);

}  // namespace cqrs

#endif  // CQRS_CORE_LOG_H_
