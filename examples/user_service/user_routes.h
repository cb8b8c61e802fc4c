// File: user_routes.h (examples/user_service)
//
// The user service's own HTTP API on the event gateway's port, next to the generic
// POST /commands/<type> (cqrs/net/http_commands.h):
//
//   POST /users   {"name": "Bob"}     (CreateUser in protobuf JSON; "userId" optional)
//     -> 201 {"userId": "…", "commandId": "…", "eventOffsets": ["7"]}
//     -> 4xx/5xx (net::HttpStatusOf of the command status; 400 for a body that is not JSON):
//        {"status": "REJECTED", "commandId": "…",
//         "error": {"code": "USER_NAME_EMPTY", "message": "…", "developerMessage": "…"}}
//   GET /users         -> 200 users.v1.UserList in protobuf JSON (the read model)
//   GET /users/<id>    -> 200 users.v1.UserView, or 404 {"status": "NOT_FOUND", "error": …}
//
// POST /users runs CreateUser through the command server's pipeline (idempotency by
// X-Command-Id, authentication, per-subject order) with the new user's id as the subject.
//
//   users::AddUserRoutes(server.gateway(), server.commands(), projection);   // before Start

#ifndef CQRS_EXAMPLES_USER_SERVICE_USER_ROUTES_H_
#define CQRS_EXAMPLES_USER_SERVICE_USER_ROUTES_H_

#include "cqrs/net/command_server.h"
#include "cqrs/net/event_gateway.h"
#include "user_projection.h"

namespace users {

// `commands` and `projection` must outlive the gateway's serving.
void AddUserRoutes(cqrs::net::EventGateway& gateway, cqrs::net::CommandServer& commands,
                   const UserProjection& projection);

}  // namespace users

#endif  // CQRS_EXAMPLES_USER_SERVICE_USER_ROUTES_H_
