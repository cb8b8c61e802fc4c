#include "cqrs/net/http_commands.h"

#include <memory>
#include <random>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "cqrs/core/any_util.h"
#include "cqrs/core/command_status.h"
#include "cqrs/core/time_util.h"

namespace cqrs::net {
namespace {

using google::protobuf::util::JsonStringToMessage;
using google::protobuf::util::MessageToJsonString;
constexpr absl::string_view kCommandsPrefix = "/commands/";

std::string RandomUuid() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  const std::uint64_t hi = random();
  const std::uint64_t lo = random();
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0x0fff,
                         ((lo >> 48) & 0x3fff) | 0x8000, lo & 0xffffffffffff);
}

HttpResponse JsonError(unsigned status, std::string message) {
  google::protobuf::Value text;
  text.set_string_value(std::move(message));
  std::string quoted;
  (void)MessageToJsonString(text, &quoted);
  return HttpResponse{.status = status,
                      .content_type = "application/json",
                      .body = absl::StrCat("{\"error\":", quoted, "}\n"),
                      .headers = {}};
}

Awaitable<HttpResponse> HandleCommand(CommandServer* commands, const HttpRequest& request) {
  const absl::string_view type_name =
      absl::string_view(request.path).substr(kCommandsPrefix.size());
  const google::protobuf::Descriptor* descriptor =
      google::protobuf::DescriptorPool::generated_pool()->FindMessageTypeByName(
          std::string(type_name));
  const google::protobuf::Message* prototype =
      descriptor == nullptr
          ? nullptr
          : google::protobuf::MessageFactory::generated_factory()->GetPrototype(descriptor);
  if (prototype == nullptr) {
    co_return JsonError(404, absl::StrCat("unknown command type '", type_name,
                                          "': not a message type linked into this server"));
  }
  std::unique_ptr<google::protobuf::Message> command(prototype->New());
  const std::string body = request.body.empty() ? std::string("{}") : request.body;
  if (auto parsed = JsonStringToMessage(body, command.get()); !parsed.ok()) {
    co_return JsonError(400, absl::StrCat("the body is not a valid ", type_name,
                                          " in protobuf JSON: ", parsed.message().as_string()));
  }
  const v1::CommandResponseEnvelope response =
      co_await ExecuteFromHttp(*commands, request, *command);
  co_return ToHttpResponse(response);
}

}  // namespace

unsigned HttpStatusOf(v1::CommandResponseEnvelope::Status status) noexcept {
  switch (status) {
    case v1::CommandResponseEnvelope::OK:
      return 200;
    case v1::CommandResponseEnvelope::REJECTED:
      return 422;
    case v1::CommandResponseEnvelope::NOT_FOUND:
      return 404;
    case v1::CommandResponseEnvelope::INVALID:
      return 400;
    case v1::CommandResponseEnvelope::UNAUTHENTICATED:
      return 401;
    case v1::CommandResponseEnvelope::DEADLINE_EXCEEDED:
      return 504;
    case v1::CommandResponseEnvelope::UNAVAILABLE:
      return 503;
    default:
      return 500;
  }
}

HttpResponse ToHttpResponse(const v1::CommandResponseEnvelope& response) {
  HttpResponse http{.status = HttpStatusOf(response.status()),
                    .content_type = "application/json",
                    .body = {},
                    .headers = {}};
  if (!MessageToJsonString(response, &http.body).ok()) {
    // The reply's payload type is not linked here: answer without it rather than fail.
    v1::CommandResponseEnvelope without = response;
    without.clear_payload();
    http.body.clear();
    (void)MessageToJsonString(without, &http.body);
  }
  http.body += '\n';
  return http;
}

Awaitable<v1::CommandResponseEnvelope> ExecuteFromHttp(CommandServer& commands,
                                                       const HttpRequest& request,
                                                       const google::protobuf::Message& command) {
  v1::CommandEnvelope envelope;
  const absl::string_view id = request.Header("x-command-id");
  envelope.set_id(id.empty() ? RandomUuid() : std::string(id));
  envelope.set_subject(std::string(request.Header("x-subject")));
  envelope.set_type(command.GetDescriptor()->full_name());
  SetTimestamp(Now(), *envelope.mutable_timestamp());
  envelope.mutable_metadata()->insert({"transport", "http"});
  PackAny(command, *envelope.mutable_payload());
  std::string principal;
  if (const auto& authenticate = commands.options().authenticate) {
    absl::string_view token = request.Header("authorization");
    absl::ConsumePrefix(&token, "Bearer ");
    absl::StatusOr<std::string> who = authenticate(token);
    if (!who.ok()) {
      v1::CommandResponseEnvelope refused;
      refused.set_command_id(envelope.id());
      SetStatus(absl::UnauthenticatedError(who.status().message()), refused);
      co_return refused;
    }
    principal = *std::move(who);
  }
  co_return co_await commands.Execute(envelope, principal);
}

void AddHttpCommandRoutes(EventGateway& gateway, CommandServer& commands) {
  CommandServer* server = &commands;
  gateway.Route("POST", std::string(kCommandsPrefix),
                [server](const HttpRequest& request) { return HandleCommand(server, request); });
}

}  // namespace cqrs::net
