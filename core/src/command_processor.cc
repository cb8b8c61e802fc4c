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

CommandProcessor::Admission::Admission(Admission&& other) noexcept
    : processor_(std::exchange(other.processor_, nullptr)),
      claim_(std::move(other.claim_)),
      turn_(std::move(other.turn_)) {}

CommandProcessor::Admission& CommandProcessor::Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    Abandon();
    processor_ = std::exchange(other.processor_, nullptr);
    claim_ = std::move(other.claim_);
    turn_ = std::move(other.turn_);
  }
  return *this;
}

CommandProcessor::Admission::~Admission() { Abandon(); }

void CommandProcessor::Admission::Abandon() {
  if (processor_ == nullptr || claim_.state() != IdempotencyCache::kNew) return;
  v1::CommandEnvelope command;
  command.set_id(std::string(claim_.id()));
  processor_->cache_.Finish(
      claim_,
      processor_->Refuse(command, absl::UnavailableError("the command was abandoned before it "
                                                         "ran (its connection closed); retry it")),
      /*remember=*/false);
  processor_ = nullptr;
}

CommandProcessor::Admission CommandProcessor::Admit(const v1::CommandEnvelope& command) {
  Admission admission;
  if (command.id().empty()) return admission;
  admission.claim_ = cache_.Begin(command.id());
  if (admission.claim_.state() == IdempotencyCache::kNew) {
    admission.processor_ = this;
    admission.turn_ = sequencer_.Enter(command.subject());
  }
  return admission;
}

Awaitable<CommandProcessor::Response> CommandProcessor::Run(Admission& admission,
                                                            const v1::CommandEnvelope& command,
                                                            google::protobuf::Arena* arena,
                                                            const std::string& principal,
                                                            CommandScratch* scratch) {
  const bool tracked = !command.id().empty();
  if (tracked) {
    switch (admission.claim_.state()) {
      case IdempotencyCache::kDone:
        co_return admission.claim_.response();
      case IdempotencyCache::kRunning:
        co_return co_await cache_.WaitFor(admission.claim_);
      case IdempotencyCache::kNew:
        break;
    }
  }
  // Usually the subject is free (or there is none): then no coroutine is started for the wait.
  if (admission.turn_.must_wait()) co_await sequencer_.Wait(admission.turn_);
  std::string serialized;
  CommandStatus status;
  {
    CommandContext ctx(command, arena, &router_.service());
    ctx.set_principal(principal);
    ctx.set_scratch(scratch);
    status = co_await router_.DispatchSerialized(ctx, serialized);
  }
  admission.turn_.Release();
  if (!tracked) co_return std::make_shared<const std::string>(std::move(serialized));
  Response bytes = cache_.Finish(admission.claim_, std::move(serialized), Remember(status));
  admission.processor_ = nullptr;
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
