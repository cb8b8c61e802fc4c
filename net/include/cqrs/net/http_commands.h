// File: cqrs/net/http_commands.h
//
// Commands over HTTP, on the event gateway's port, run through a CommandServer's own pipeline
// (idempotency, per-subject order, handlers, event append): for browsers and curl.
//
//   POST /commands/users.v1.CreateUser        body: {"name": "Bob"}   (protobuf JSON)
//   X-Command-Id: 5f0c...   (optional: the idempotency key; default a random UUID)
//   X-Subject: bob          (optional: the aggregate key that orders commands)
//   Authorization: Bearer <token>   (checked by CommandServerOptions::authenticate, when set)
//   -> 200 {"commandId": "...", "status": "OK", "payload": {...}, "eventOffsets": ["7"]}
//
//   net::AddHttpCommandRoutes(server.gateway(), server.commands());   // before Start
//
// The response body is the cqrs.v1.CommandResponseEnvelope in protobuf JSON; the HTTP status
// follows the command status (HttpStatusOf). Command types are looked up in the program's
// generated descriptor pool: every command type linked into the program is accepted.

#ifndef CQRS_NET_HTTP_COMMANDS_H_
#define CQRS_NET_HTTP_COMMANDS_H_

#include <string>

#include <google/protobuf/message.h>

#include "cqrs/core/asio.h"
#include "cqrs/net/command_server.h"
#include "cqrs/net/event_gateway.h"
#include "cqrs/v1/command.pb.h"

namespace cqrs::net {

// OK 200, REJECTED 422, NOT_FOUND 404, INVALID 400, UNAUTHENTICATED 401, DEADLINE_EXCEEDED 504,
// UNAVAILABLE 503, INTERNAL (and anything else) 500.
unsigned HttpStatusOf(v1::CommandResponseEnvelope::Status status) noexcept;

// The response as an HTTP answer: status from HttpStatusOf, body the envelope's JSON.
HttpResponse ToHttpResponse(const v1::CommandResponseEnvelope& response);

// Runs `command` (a typed command message) through `commands` as an HTTP handler would:
// builds the envelope (id from X-Command-Id or a random UUID, subject from X-Subject,
// principal from the Authorization header), awaits the response. `request` and `command` must
// outlive the awaitable. For custom routes such as the demo's POST /users.
Awaitable<v1::CommandResponseEnvelope> ExecuteFromHttp(CommandServer& commands,
                                                       const HttpRequest& request,
                                                       const google::protobuf::Message& command);

// Registers POST /commands/<full.type.Name> on `gateway` (before it starts). `commands` must
// outlive the gateway's serving.
void AddHttpCommandRoutes(EventGateway& gateway, CommandServer& commands);

}  // namespace cqrs::net

#endif  // CQRS_NET_HTTP_COMMANDS_H_
