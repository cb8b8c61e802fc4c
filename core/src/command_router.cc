#include "cqrs/core/command_router.h"

#include <cassert>
#include <chrono>
#include <exception>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cqrs/core/any_util.h"
#include "cqrs/core/time_util.h"
#include "cqrs/core/wire_writer.h"

namespace cqrs {

// One command's trip through the interceptor chain.
struct Invocation {
  const CommandRouter::Entry* entry;
  const std::vector<std::shared_ptr<Interceptor>>* interceptors;
  const google::protobuf::Message* command;
  CommandContext* ctx;
  CommandRouter::Reply* reply;
};

Awaitable<absl::Status> Next::operator()() const {
  Invocation& call = *invocation_;
  if (index_ < call.interceptors->size()) {
    return (*call.interceptors)[index_]->Intercept(*call.command, *call.ctx,
                                                   Next(invocation_, index_ + 1));
  }
  return call.entry->invoke(*call.command, *call.ctx, *call.reply);
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

void CommandRouter::KeepReply(const google::protobuf::Message& reply, CommandContext& ctx,
                              Reply& out) {
  const std::size_t size = reply.ByteSizeLong();
  char* bytes = ctx.scratch() != nullptr ? ctx.scratch()->ReplyBytes(size) : nullptr;
  if (bytes == nullptr) bytes = google::protobuf::Arena::CreateArray<char>(ctx.arena(), size);
  reply.SerializeWithCachedSizesToArray(reinterpret_cast<std::uint8_t*>(bytes));
  out.type = reply.GetDescriptor();
  out.bytes = absl::string_view(bytes, size);
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
  const std::string& bytes = command.payload().value();
  google::protobuf::Message* parsed = nullptr;
  if (CommandScratch* scratch = ctx.scratch(); scratch != nullptr) {
    parsed = scratch->PayloadFor(*entry->prototype, bytes.size());
  }
  if (parsed == nullptr) parsed = entry->prototype->New(ctx.arena());
  if (!parsed->ParseFromString(bytes)) {
    return WithErrorCode(
        absl::InvalidArgumentError(absl::StrCat("payload does not parse as ", type)),
        "INVALID_PAYLOAD",
        absl::StrCat(command.payload().value().size(), " payload bytes are not a valid ", type));
  }
  return parsed;
}

CommandRouter::Header CommandRouter::NextHeader() const {
  return Header{.number = response_ids_.Next(), .time = Now()};
}

void CommandRouter::FillHeader(const v1::CommandEnvelope& command,
                               v1::CommandResponseEnvelope& response) const {
  FillHeader(command, NextHeader(), response);
}

void CommandRouter::FillHeader(const v1::CommandEnvelope& command, const Header& header,
                               v1::CommandResponseEnvelope& response) const {
  response.set_command_id(command.id());
  response.set_transaction_id(command.transaction_id());
  response.set_service_id(service_.service_id);
  absl::StrAppend(response.mutable_id(), response_id_prefix_, "-", header.number);
  SetTimestamp(header.time, *response.mutable_timestamp());
}

absl::Status CommandRouter::HandlerFailed(std::exception_ptr error, absl::string_view type) {
  try {
    std::rethrow_exception(std::move(error));
  } catch (const std::exception& e) {
    return WithErrorCode(absl::InternalError("the handler failed"), "HANDLER_EXCEPTION",
                         absl::StrCat("handler for ", type, " threw: ", e.what()));
  } catch (...) {
    return WithErrorCode(absl::InternalError("the handler failed"), "HANDLER_EXCEPTION",
                         absl::StrCat("handler for ", type, " threw a non-std exception"));
  }
}

absl::Status CommandRouter::Settle(CommandContext& ctx, absl::Status status, Reply& reply,
                                   AppendReceipt& receipt) const {
  // No timer races the handler (that would cost every command a timer, two spawned
  // coroutines and a thrown operation_aborted): a handler that finishes after the deadline is
  // answered DEADLINE_EXCEEDED and its events are dropped; one still suspended at the deadline
  // is cancelled by whoever awaits the dispatch (the server does, through the cancellation slot).
  if (const auto deadline = ctx.deadline(); deadline && Now() >= *deadline) {
    status =
        WithErrorCode(absl::DeadlineExceededError("the command's deadline passed while it ran"),
                      "DEADLINE_EXCEEDED");
  }
  if (status.ok() && !ctx.staged_events().empty()) {
    if (sink_ == nullptr) {
      status = WithErrorCode(
          absl::InternalError("events were emitted but the server has no event sink"),
          "NO_EVENT_SINK",
          absl::StrCat(ctx.staged_events().size(), " staged events were not appended"));
    } else if (auto appended = sink_->Append(ctx.staged_events()); !appended.ok()) {
      status = WithErrorCode(absl::Status(appended.status().code(),
                                          absl::StrCat("appending the command's events failed: ",
                                                       appended.status().message())),
                             "EVENT_APPEND_FAILED");
    } else {
      receipt = *appended;
    }
  }
  if (!status.ok()) {
    ctx.DiscardStagedEvents();
    reply = {};
    receipt = {};
  }
  return status;
}

void CommandRouter::Render(const v1::CommandEnvelope& command, const Header& header,
                           const absl::Status& status, const Reply& reply,
                           const AppendReceipt& receipt,
                           v1::CommandResponseEnvelope& response) const {
  FillHeader(command, header, response);
  if (reply.type != nullptr) {
    response.set_type(reply.type->full_name());
    google::protobuf::Any& payload = *response.mutable_payload();
    payload.set_type_url(TypeUrlOf(reply.type));
    payload.set_value(std::string(reply.bytes));
  }
  for (std::uint64_t i = 0; i < receipt.count; ++i) {
    response.add_event_offsets(receipt.first_offset + i);
  }
  if (receipt.count != 0) response.set_event_epoch(receipt.epoch);
  SetStatus(status, response);
}

Awaitable<absl::Status> CommandRouter::Execute(CommandContext& ctx, Reply& reply,
                                               AppendReceipt& receipt) const {
  const Entry* entry = nullptr;
  absl::string_view type;
  auto parsed = Prepare(ctx, entry, type);
  if (!parsed.ok()) {
    ctx.DiscardStagedEvents();
    co_return std::move(parsed).status();
  }
  Invocation call{entry, &interceptors_, *parsed, &ctx, &reply};
  absl::Status status;
  try {
    status = co_await Next(&call, 0)();
  } catch (...) {
    status = HandlerFailed(std::current_exception(), type);
  }
  co_return Settle(ctx, std::move(status), reply, receipt);
}

Awaitable<void> CommandRouter::Dispatch(CommandContext& ctx,
                                        v1::CommandResponseEnvelope& response) const {
  const Header header = NextHeader();  // The response's time is when the command started.
  Reply reply;
  AppendReceipt receipt;
  const absl::Status status = co_await Execute(ctx, reply, receipt);
  Render(ctx.envelope(), header, status, reply, receipt, response);
}

Awaitable<CommandStatus> CommandRouter::DispatchSerialized(CommandContext& ctx,
                                                           std::string& out) const {
  const Header header = NextHeader();  // The response's time is when the command started.
  Reply reply;
  AppendReceipt receipt;
  absl::Status status;
  // Execute's steps, in this coroutine's own frame: the command server's path saves a coroutine
  // frame and a resumption per command. (Dispatch goes through Execute and renders a message:
  // the tests hold the two paths against each other.)
  const Entry* entry = nullptr;
  absl::string_view command_type;
  if (auto parsed = Prepare(ctx, entry, command_type); !parsed.ok()) {
    status = std::move(parsed).status();
    ctx.DiscardStagedEvents();
  } else {
    Invocation call{entry, &interceptors_, *parsed, &ctx, &reply};
    try {
      status = co_await Next(&call, 0)();
    } catch (...) {
      status = HandlerFailed(std::current_exception(), command_type);
    }
    status = Settle(ctx, std::move(status), reply, receipt);
  }
  const v1::CommandEnvelope& command = ctx.envelope();
  if (!status.ok()) {
    // Failures are the rare path: the message, with its error, serialized as usual.
    v1::CommandResponseEnvelope response;
    Render(command, header, status, reply, receipt, response);
    response.SerializeToString(&out);
    co_return response.status();
  }

  // OK: the bytes Render + SerializeToString would give, written field by field in field-number
  // order, without a message whose string fields would each be a heap string.
  using Fields = v1::CommandResponseEnvelope;
  const TimestampParts now = ToTimestampParts(header.time);
  const absl::AlphaNum number(header.number);
  const std::size_t id_size = response_id_prefix_.size() + 1 + number.size();  // "<prefix>-<n>"
  absl::string_view type;
  absl::string_view type_url;
  std::size_t any_size = 0;
  if (reply.type != nullptr) {
    type = reply.type->full_name();
    type_url = TypeUrlOf(reply.type);
    any_size = wire::StringField(1, type_url) + wire::StringField(2, reply.bytes);
  }
  std::size_t offsets_size = 0;  // Packed: the varints, after one tag and length.
  for (std::uint64_t i = 0; i < receipt.count; ++i) {
    offsets_size += wire::VarintSize(receipt.first_offset + i);
  }
  const std::size_t size =
      wire::StringField(Fields::kTransactionIdFieldNumber, command.transaction_id()) +
      wire::StringField(Fields::kCommandIdFieldNumber, command.id()) +
      wire::TimestampField(Fields::kTimestampFieldNumber, now.seconds, now.nanos) +
      wire::StringField(Fields::kServiceIdFieldNumber, service_.service_id) +
      wire::StringField(Fields::kTypeFieldNumber, type) +
      (reply.type == nullptr ? 0 : wire::LengthField(Fields::kPayloadFieldNumber, any_size)) +
      wire::LengthField(Fields::kIdFieldNumber, id_size) +
      wire::VarintField(Fields::kStatusFieldNumber, Fields::OK) +
      (receipt.count == 0 ? 0 : wire::LengthField(Fields::kEventOffsetsFieldNumber, offsets_size)) +
      (receipt.count == 0 ? 0 : wire::VarintField(Fields::kEventEpochFieldNumber, receipt.epoch));
  out.resize(size);

  wire::Writer w(out.data());
  w.String(Fields::kTransactionIdFieldNumber, command.transaction_id());
  w.String(Fields::kCommandIdFieldNumber, command.id());
  w.Timestamp(Fields::kTimestampFieldNumber, now.seconds, now.nanos);
  w.String(Fields::kServiceIdFieldNumber, service_.service_id);
  w.String(Fields::kTypeFieldNumber, type);
  if (reply.type != nullptr) {
    w.Length(Fields::kPayloadFieldNumber, any_size);
    w.String(1, type_url);
    w.String(2, reply.bytes);
  }
  w.Length(Fields::kIdFieldNumber, id_size);
  w.Raw(response_id_prefix_);
  w.Raw("-");
  w.Raw(number.Piece());
  w.Varint(Fields::kStatusFieldNumber, Fields::OK);
  if (receipt.count != 0) {
    w.Length(Fields::kEventOffsetsFieldNumber, offsets_size);
    for (std::uint64_t i = 0; i < receipt.count; ++i) w.RawVarint(receipt.first_offset + i);
    w.Varint(Fields::kEventEpochFieldNumber, receipt.epoch);
  }
  assert(w.position() == out.data() + out.size());
  co_return Fields::OK;
}

}  // namespace cqrs
