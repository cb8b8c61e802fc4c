#include "user_routes.h"

#include <optional>
#include <string>
#include <utility>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "cqrs/core/command_status.h"
#include "cqrs/net/http_commands.h"
#include "user_handlers.h"

namespace users {
namespace {

using cqrs::Awaitable;
using cqrs::net::HttpRequest;
using cqrs::net::HttpResponse;
using google::protobuf::util::JsonStringToMessage;
using google::protobuf::util::MessageToJsonString;

HttpResponse Json(unsigned status, std::string body) {
  HttpResponse response{
      .status = status, .content_type = "application/json", .body = std::move(body), .headers = {}};
  response.body += '\n';
  response.headers.emplace_back("Cache-Control", "no-store");
  return response;
}

HttpResponse Json(unsigned status, const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  std::string body;
  (void)MessageToJsonString(message, &body, options);
  return Json(status, std::move(body));
}

// `text` as a JSON string literal (quoted, escaped).
std::string Quoted(const std::string& text) {
  google::protobuf::Value value;
  value.set_string_value(text);
  std::string quoted;
  (void)MessageToJsonString(value, &quoted);
  return quoted;
}

// {"status": ..., "commandId": ..., "error": {"code": ..., "message": ..., "developerMessage"}}
HttpResponse Error(unsigned http_status, const cqrs::v1::CommandResponseEnvelope& response) {
  const cqrs::v1::CommandError& error = response.error();
  std::string body =
      absl::StrCat("{\"status\":", Quoted(std::string(cqrs::CommandStatusName(response.status()))));
  if (!response.command_id().empty()) {
    absl::StrAppend(&body, ",\"commandId\":", Quoted(response.command_id()));
  }
  absl::StrAppend(&body, ",\"error\":{\"code\":", Quoted(error.error_code()),
                  ",\"message\":", Quoted(error.message()));
  if (!error.developer_message().empty()) {
    absl::StrAppend(&body, ",\"developerMessage\":", Quoted(error.developer_message()));
  }
  body += "}}";
  return Json(http_status, std::move(body));
}

Awaitable<HttpResponse> PostUsers(cqrs::net::CommandServer* commands, const HttpRequest& request) {
  v1::CreateUser create;
  const std::string json = request.body.empty() ? std::string("{}") : request.body;
  if (auto parsed = JsonStringToMessage(json, &create); !parsed.ok()) {
    cqrs::v1::CommandResponseEnvelope invalid;
    invalid.set_status(cqrs::v1::CommandResponseEnvelope::INVALID);
    invalid.mutable_error()->set_error_code("BAD_REQUEST_BODY");
    invalid.mutable_error()->set_message(R"(the body must be JSON like {"name": "Bob"})");
    invalid.mutable_error()->set_developer_message(parsed.message().as_string());
    co_return Error(400, invalid);
  }
  if (create.user_id().empty()) create.set_user_id(NewUserId());
  // The new user's id orders its commands (X-Subject), ahead of any the client sent.
  HttpRequest with_subject = request;
  with_subject.headers.emplace(with_subject.headers.begin(), "x-subject", create.user_id());
  const cqrs::v1::CommandResponseEnvelope response =
      co_await cqrs::net::ExecuteFromHttp(*commands, with_subject, create);
  if (response.status() != cqrs::v1::CommandResponseEnvelope::OK) {
    co_return Error(cqrs::net::HttpStatusOf(response.status()), response);
  }
  // {"userId": ..., "commandId": ..., "eventOffsets": ["7"]}
  std::string body =
      absl::StrCat("{\"userId\":", Quoted(create.user_id()),
                   ",\"commandId\":", Quoted(response.command_id()), ",\"eventOffsets\":[");
  for (int i = 0; i < response.event_offsets_size(); ++i) {
    absl::StrAppend(&body, i == 0 ? "\"" : ",\"", response.event_offsets(i), "\"");
  }
  body += "]}";
  HttpResponse http = Json(201, std::move(body));
  http.headers.emplace_back("Location", absl::StrCat("/users/", create.user_id()));
  co_return http;
}

Awaitable<HttpResponse> GetUsers(const UserProjection* projection) {
  co_return Json(200, projection->List());
}

Awaitable<HttpResponse> GetUser(const UserProjection* projection, const HttpRequest& request) {
  const std::string id = request.path.substr(request.path.find('/', 1) + 1);
  if (std::optional<v1::UserView> user = projection->Find(id); user.has_value()) {
    co_return Json(200, *user);
  }
  cqrs::v1::CommandResponseEnvelope missing;
  missing.set_status(cqrs::v1::CommandResponseEnvelope::NOT_FOUND);
  missing.mutable_error()->set_error_code("USER_NOT_FOUND");
  missing.mutable_error()->set_message(absl::StrCat("there is no user ", id));
  co_return Error(404, missing);
}

}  // namespace

void AddUserRoutes(cqrs::net::EventGateway& gateway, cqrs::net::CommandServer& commands,
                   const UserProjection& projection) {
  cqrs::net::CommandServer* server = &commands;
  const UserProjection* read_model = &projection;
  gateway.Route("POST", "/users",
                [server](const HttpRequest& request) { return PostUsers(server, request); });
  gateway.Route("GET", "/users", [read_model](const HttpRequest&) { return GetUsers(read_model); });
  gateway.Route("GET", "/users/",
                [read_model](const HttpRequest& request) { return GetUser(read_model, request); });
}

}  // namespace users
