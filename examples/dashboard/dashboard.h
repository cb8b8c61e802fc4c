// File: dashboard.h (examples/dashboard)
//
// The browser dashboard (index.html, app.js, style.css, favicon.svg in this folder), compiled
// into the program at build time and served by an event gateway:
//
//   cqrs::net::Server server(router, options);
//   dashboard::AddRoutes(server.gateway());      // GET /, /app.js, /style.css, /favicon.svg
//
// The page connects to ws://<its host>/events (subprotocol cqrs.v1.json) and sends commands to
// POST /users and POST /commands/<type> on the same origin: list that origin in the gateway's
// allowed_origins.

#ifndef CQRS_EXAMPLES_DASHBOARD_DASHBOARD_H_
#define CQRS_EXAMPLES_DASHBOARD_DASHBOARD_H_

#include <span>
#include <string_view>

#include "cqrs/net/event_gateway.h"

namespace dashboard {

struct Asset {
  std::string_view path;  // "/app.js"; the page itself is "/index.html".
  std::string_view content_type;
  std::string_view body;
};

// Every embedded file (generated at build time by embed_assets.cmake).
std::span<const Asset> Assets();

// The asset served at `path` ("/" is "/index.html"); nullptr when there is none.
const Asset* FindAsset(std::string_view path);

// Serves the assets with GET (any other GET path that no other route takes: 404). Call before
// the gateway starts.
void AddRoutes(cqrs::net::EventGateway& gateway);

}  // namespace dashboard

#endif  // CQRS_EXAMPLES_DASHBOARD_DASHBOARD_H_
