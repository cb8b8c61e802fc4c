#include "cqrs/core/command_processor.h"

#include <utility>

#include "cqrs/core/command_context.h"
#include "cqrs/core/command_status.h"

namespace cqrs {
namespace {

// Outcomes where the command did not take effect and a retry with the same id must run it.
bool Remember(CommandStatus status) {
  return status != v1::CommandResponseEnvelope::UNAVAILABLE &&
         status != v1::CommandResponseEnvelope::DEADLINE_EXCEEDED;
}

std::shared_ptr<const std::string> Serialize(const v1::CommandResponseEnvelope& response) {
  auto bytes = std::make_shared<std::string>();
  response.SerializeToString(bytes.get());
  return bytes;
}

}  // namespace

CommandProcessor::CommandProcessor(const CommandRouter& router, CommandProcessorOptions options)
    : router_(router), cache_(options.idempotency) {}

CommandProcessor::Admission CommandProcessor::Admit(const v1::CommandEnvelope& command) {
  Admission admission;
  if (command.id().empty()) return admission;
  admission.tracked_ = true;
  admission.claim_ = cache_.Begin(command.id());
  if (admission.claim_.state() == IdempotencyCache::kNew) {
    admission.turn_ = sequencer_.Enter(command.subject());
  }
  return admission;
}

Awaitable<CommandProcessor::Response> CommandProcessor::Run(Admission admission,
                                                            const v1::CommandEnvelope& command,
                                                            google::protobuf::Arena* arena,
                                                            std::string principal) {
  if (admission.tracked_) {
    switch (admission.claim_.state()) {
      case IdempotencyCache::kDone:
        co_return admission.claim_.response();
      case IdempotencyCache::kRunning:
        co_return co_await cache_.WaitFor(std::move(admission.claim_));
      case IdempotencyCache::kNew:
        break;
    }
  }
  co_await sequencer_.Wait(admission.turn_);
  auto* response = google::protobuf::Arena::CreateMessage<v1::CommandResponseEnvelope>(arena);
  {
    CommandContext ctx(command, arena, &router_.service());
    ctx.set_principal(std::move(principal));
    co_await router_.Dispatch(ctx, *response);
  }
  admission.turn_.Release();
  Response bytes = Serialize(*response);
  if (admission.tracked_) cache_.Finish(admission.claim_, bytes, Remember(response->status()));
  co_return bytes;
}

CommandProcessor::Response CommandProcessor::Refuse(const v1::CommandEnvelope& command,
                                                    const absl::Status& status) const {
  v1::CommandResponseEnvelope response;
  router_.FillHeader(command, response);
  SetStatus(status, response);
  return Serialize(response);
}

}  // namespace cqrs
