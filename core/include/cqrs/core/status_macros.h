// File: cqrs/core/status_macros.h
//
// Early-return helpers for absl::Status / absl::StatusOr (Debian's Abseil 20220623 has none).
//
//   absl::Status Load() {
//     CQRS_RETURN_IF_ERROR(Open());
//     CQRS_ASSIGN_OR_RETURN(auto config, ParseConfig());
//     ...
//   }
//
// Inside coroutines use CQRS_CO_RETURN_IF_ERROR / CQRS_CO_ASSIGN_OR_RETURN.

#ifndef CQRS_CORE_STATUS_MACROS_H_
#define CQRS_CORE_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define CQRS_INTERNAL_CONCAT_(a, b) a##b
#define CQRS_INTERNAL_CONCAT(a, b) CQRS_INTERNAL_CONCAT_(a, b)

#define CQRS_INTERNAL_RETURN_IF_ERROR(ret, expr)                                    \
  do {                                                                              \
    if (::absl::Status cqrs_status_ = (expr); !cqrs_status_.ok()) ret cqrs_status_; \
  } while (false)

#define CQRS_INTERNAL_ASSIGN_OR_RETURN(ret, tmp, lhs, expr) \
  auto tmp = (expr);                                        \
  if (!tmp.ok()) ret std::move(tmp).status();               \
  lhs = *std::move(tmp)

#define CQRS_RETURN_IF_ERROR(expr) CQRS_INTERNAL_RETURN_IF_ERROR(return, expr)
#define CQRS_CO_RETURN_IF_ERROR(expr) CQRS_INTERNAL_RETURN_IF_ERROR(co_return, expr)

#define CQRS_ASSIGN_OR_RETURN(lhs, expr) \
  CQRS_INTERNAL_ASSIGN_OR_RETURN(return, CQRS_INTERNAL_CONCAT(cqrs_or_, __LINE__), lhs, expr)
#define CQRS_CO_ASSIGN_OR_RETURN(lhs, expr) \
  CQRS_INTERNAL_ASSIGN_OR_RETURN(co_return, CQRS_INTERNAL_CONCAT(cqrs_or_, __LINE__), lhs, expr)

#endif  // CQRS_CORE_STATUS_MACROS_H_
