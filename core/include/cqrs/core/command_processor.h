// File: cqrs/core/command_processor.h
//
// The transport-free command pipeline a server runs for every received command:
// idempotency (a known id is answered from the cache) -> per-subject ordering -> the router
// (interceptors, handler, event append) -> one serialized response.
//
//   CommandProcessor processor(router);
//   auto admission = processor.Admit(envelope);            // synchronously, in arrival order
//   co_spawn(ex, [&]() -> Awaitable<void> {
//     auto bytes = co_await processor.Run(std::move(admission), envelope, arena, principal);
//     Send(*bytes);
//   }, detached);
//
// Thread-safe: one processor serves every connection of a server.

#ifndef CQRS_CORE_COMMAND_PROCESSOR_H_
#define CQRS_CORE_COMMAND_PROCESSOR_H_

#include <memory>
#include <string>

#include <google/protobuf/arena.h>

#include "absl/status/status.h"
#include "cqrs/core/asio.h"
#include "cqrs/core/command_context.h"
#include "cqrs/core/command_router.h"
#include "cqrs/core/idempotency_cache.h"
#include "cqrs/core/subject_sequencer.h"
#include "cqrs/v1/command.pb.h"

namespace cqrs {

struct CommandProcessorOptions {
  IdempotencyOptions idempotency;
};

class CommandProcessor {
 public:
  // A serialized cqrs.v1.CommandResponseEnvelope.
  using Response = IdempotencyCache::Response;

  // What Admit decided for one command; hand it to Run. An admission dropped without running
  // (e.g. its connection closed first) answers any duplicate waiting for it UNAVAILABLE and
  // forgets the id, so that a retry runs the command.
  class Admission {
   public:
    Admission() = default;
    Admission(Admission&& other) noexcept;
    Admission& operator=(Admission&& other) noexcept;
    ~Admission();

   private:
    friend class CommandProcessor;
    void Abandon();

    CommandProcessor* processor_ = nullptr;  // Set while an id claim awaits its response.
    IdempotencyCache::Claim claim_;
    SubjectSequencer::Turn turn_;
  };

  // `router` must outlive the processor.
  explicit CommandProcessor(const CommandRouter& router, CommandProcessorOptions options = {});

  // Registers `command` in arrival order: looks its id up and takes its place in its subject's
  // line. Cheap and synchronous; call it for each command in the order they arrived.
  Admission Admit(const v1::CommandEnvelope& command);

  // Runs an admitted command, or waits for the first run of the same id, and returns the
  // response. `admission`, `command`, `principal`, `arena` (memory for the run) and `scratch`
  // (optional: memory the caller reuses for its next commands, see CommandScratch) must outlive
  // the awaitable. Never throws; every command gets exactly one response.
  Awaitable<Response> Run(Admission& admission, const v1::CommandEnvelope& command,
                          google::protobuf::Arena* arena, const std::string& principal,
                          CommandScratch* scratch = nullptr);

  // A response for `command` that did not run (e.g. UNAVAILABLE while shutting down).
  Response Refuse(const v1::CommandEnvelope& command, const absl::Status& status) const;

  const CommandRouter& router() const { return router_; }
  IdempotencyCache& idempotency() { return cache_; }
  SubjectSequencer& sequencer() { return sequencer_; }

 private:
  const CommandRouter& router_;
  IdempotencyCache cache_;
  SubjectSequencer sequencer_;
};

}  // namespace cqrs

#endif  // CQRS_CORE_COMMAND_PROCESSOR_H_
