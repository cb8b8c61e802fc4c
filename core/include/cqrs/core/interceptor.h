// File: cqrs/core/interceptor.h
//
// Interceptors wrap every handler, in the order they were added to the router: validation, auth,
// logging, timing. Each calls `next()` to continue the chain (ending in the handler) or returns a
// status without calling it to short-circuit.
//
//   router.Use([](const google::protobuf::Message& command, CommandContext& ctx,
//                 Next next) -> Awaitable<absl::Status> {
//     if (ctx.principal().empty()) co_return absl::UnauthenticatedError("log in first");
//     co_return co_await next();
//   });

#ifndef CQRS_CORE_INTERCEPTOR_H_
#define CQRS_CORE_INTERCEPTOR_H_

#include <cstddef>

#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "cqrs/core/asio.h"

namespace cqrs {

class CommandContext;
struct Invocation;

// The rest of the chain. Call at most once; the returned status is the handler's (or a later
// interceptor's). Valid only during the interceptor call it was passed to.
class Next {
 public:
  Awaitable<absl::Status> operator()() const;

 private:
  friend class CommandRouter;
  Next(Invocation* invocation, std::size_t index) : invocation_(invocation), index_(index) {}
  Invocation* invocation_;
  std::size_t index_;
};

class Interceptor {
 public:
  virtual ~Interceptor() = default;
  // `command` is the parsed command message. Must not throw (a throw becomes INTERNAL).
  virtual Awaitable<absl::Status> Intercept(const google::protobuf::Message& command,
                                            CommandContext& ctx, Next next) = 0;
};

}  // namespace cqrs

#endif  // CQRS_CORE_INTERCEPTOR_H_
