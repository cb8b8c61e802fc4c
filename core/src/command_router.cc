#include "cqrs/core/command_router.h"

#include <chrono>
#include <exception>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cqrs/core/any_util.h"
#include "cqrs/core/time_util.h"

namespace cqrs {

// One command's trip through the interceptor chain.
struct Invocation {
  const CommandRouter::Entry* entry;
  const std::vector<std::shared_ptr<Interceptor>>* interceptors;
  const google::protobuf::Message* command;
  CommandContext* ctx;
  v1::CommandResponseEnvelope* response;
};

Awaitable<absl::Status> Next::operator()() const {
  Invocation& call = *invocation_;
  if (index_ < call.interceptors->size()) {
    return (*call.interceptors)[index_]->Intercept(*call.command, *call.ctx,
                                                   Next(invocation_, index_ + 1));
  }
  return call.entry->invoke(*call.command, *call.ctx, *call.response);
}

namespace {

absl::string_view TypeNameOf(absl::string_view type_url) {
  const auto slash = type_url.rfind('/');
  return slash == absl::string_view::npos ? type_url : type_url.substr(slash + 1);
}

std::string RandomPrefix() {
  std::random_device device;
  std::uint64_t bits = (static_cast<std::uint64_t>(device()) << 32) | device();
  return absl::StrFormat("%016x", bits);
}

}  // namespace

CommandRouter::CommandRouter(ServiceInfo service)
    : service_(std::move(service)), response_id_prefix_(RandomPrefix()) {}

CommandRouter::~CommandRouter() = default;

absl::Status CommandRouter::Register(const std::string& type,
                                     const google::protobuf::Message* prototype, Invoker invoke) {
  const auto [it, inserted] = handlers_.try_emplace(type, Entry{prototype, std::move(invoke)});
  if (!inserted) {
    return absl::AlreadyExistsError(
        absl::StrCat("a handler for command type '", type, "' is already registered"));
  }
  return absl::OkStatus();
}

void CommandRouter::Use(std::shared_ptr<Interceptor> interceptor) {
  interceptors_.push_back(std::move(interceptor));
}

bool CommandRouter::Has(absl::string_view full_type_name) const {
  return handlers_.contains(full_type_name);
}

void CommandRouter::PackReply(const google::protobuf::Message& reply,
                              v1::CommandResponseEnvelope& response) {
  PackAny(reply, *response.mutable_payload());
  response.set_type(reply.GetDescriptor()->full_name());
}

absl::StatusOr<google::protobuf::Message*> CommandRouter::Prepare(CommandContext& ctx,
                                                                  const Entry*& entry,
                                                                  absl::string_view& type) const {
  const v1::CommandEnvelope& command = ctx.envelope();
  if (command.id().empty()) {
    return WithErrorCode(absl::InvalidArgumentError("command has no id"), "INVALID_COMMAND",
                         "CommandEnvelope.id is required: a unique id per command");
  }
  if (!command.has_payload()) {
    return WithErrorCode(absl::InvalidArgumentError("command has no payload"), "INVALID_COMMAND",
                         "CommandEnvelope.payload is required: the command packed in an Any");
  }
  type = TypeNameOf(command.payload().type_url());
  const auto it = handlers_.find(type);
  if (it == handlers_.end()) {
    return WithErrorCode(
        absl::NotFoundError(absl::StrCat("no handler for command type '", type, "'")), "NO_HANDLER",
        absl::StrCat("payload type_url '", command.payload().type_url(), "'"));
  }
  entry = &it->second;
  const std::optional<absl::Time> deadline = ctx.deadline();
  if (deadline && *deadline <= Now()) {
    return WithErrorCode(absl::DeadlineExceededError("the command's deadline passed before it ran"),
                         "DEADLINE_EXCEEDED");
  }
  google::protobuf::Message* parsed = entry->prototype->New(ctx.arena());
  if (!parsed->ParseFromString(command.payload().value())) {
    return WithErrorCode(
        absl::InvalidArgumentError(absl::StrCat("payload does not parse as ", type)),
        "INVALID_PAYLOAD",
        absl::StrCat(command.payload().value().size(), " payload bytes are not a valid ", type));
  }
  return parsed;
}

void CommandRouter::FillHeader(const v1::CommandEnvelope& command,
                               v1::CommandResponseEnvelope& response) const {
  response.set_command_id(command.id());
  response.set_transaction_id(command.transaction_id());
  response.set_service_id(service_.service_id);
  absl::StrAppend(response.mutable_id(), response_id_prefix_, "-", response_ids_.Next());
  SetTimestamp(Now(), *response.mutable_timestamp());
}

Awaitable<void> CommandRouter::Dispatch(CommandContext& ctx,
                                        v1::CommandResponseEnvelope& response) const {
  FillHeader(ctx.envelope(), response);

  const Entry* entry = nullptr;
  absl::string_view type;
  absl::Status status;
  if (auto parsed = Prepare(ctx, entry, type); !parsed.ok()) {
    status = std::move(parsed).status();
  } else {
    Invocation call{entry, &interceptors_, *parsed, &ctx, &response};
    try {
      status = co_await Next(&call, 0)();
    } catch (const std::exception& e) {
      status = WithErrorCode(absl::InternalError("the handler failed"), "HANDLER_EXCEPTION",
                             absl::StrCat("handler for ", type, " threw: ", e.what()));
    } catch (...) {
      status = WithErrorCode(absl::InternalError("the handler failed"), "HANDLER_EXCEPTION",
                             absl::StrCat("handler for ", type, " threw a non-std exception"));
    }
    // No timer races the handler (that would cost every command a timer, two spawned
    // coroutines and a thrown operation_aborted): a handler that finishes after the deadline is
    // answered DEADLINE_EXCEEDED and its events are dropped; one still suspended at the deadline
    // is cancelled by whoever awaits Dispatch (the server does, through the cancellation slot).
    if (const auto deadline = ctx.deadline(); deadline && Now() >= *deadline) {
      status =
          WithErrorCode(absl::DeadlineExceededError("the command's deadline passed while it ran"),
                        "DEADLINE_EXCEEDED");
    }
  }
  if (status.ok() && !ctx.staged_events().empty()) {
    if (sink_ == nullptr) {
      status = WithErrorCode(
          absl::InternalError("events were emitted but the server has no event sink"),
          "NO_EVENT_SINK",
          absl::StrCat(ctx.staged_events().size(), " staged events were not appended"));
    } else if (auto receipt = sink_->Append(ctx.staged_events()); !receipt.ok()) {
      status = WithErrorCode(absl::Status(receipt.status().code(),
                                          absl::StrCat("appending the command's events failed: ",
                                                       receipt.status().message())),
                             "EVENT_APPEND_FAILED");
    } else {
      for (std::uint64_t i = 0; i < receipt->count; ++i) {
        response.add_event_offsets(receipt->first_offset + i);
      }
      response.set_event_epoch(receipt->epoch);
    }
  }
  if (!status.ok()) {
    ctx.DiscardStagedEvents();
    response.clear_payload();
    response.clear_type();
  }
  SetStatus(status, response);
}

}  // namespace cqrs
