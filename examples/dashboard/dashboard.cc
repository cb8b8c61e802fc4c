#include "dashboard.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace dashboard {
namespace {

using cqrs::Awaitable;
using cqrs::net::HttpRequest;
using cqrs::net::HttpResponse;

// The page talks only to its own origin (HTTP and WebSocket).
constexpr char kContentSecurityPolicy[] =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

Awaitable<HttpResponse> Serve(const HttpRequest& request) {
  const Asset* asset = FindAsset(request.path);
  if (asset == nullptr) {
    co_return HttpResponse{.status = 404, .body = absl::StrCat("no such path: ", request.path)};
  }
  HttpResponse response{.status = 200,
                        .content_type = std::string(asset->content_type),
                        .body = std::string(asset->body),
                        .headers = {}};
  // Embedded files change only with the binary; revalidating keeps a rebuilt page fresh.
  response.headers.emplace_back("Cache-Control", "no-cache");
  response.headers.emplace_back("X-Content-Type-Options", "nosniff");
  if (asset->path == "/index.html") {
    response.headers.emplace_back("Content-Security-Policy", kContentSecurityPolicy);
  }
  co_return response;
}

}  // namespace

const Asset* FindAsset(std::string_view path) {
  if (path == "/") path = "/index.html";
  for (const Asset& asset : Assets()) {
    if (asset.path == path) return &asset;
  }
  return nullptr;
}

void AddRoutes(cqrs::net::EventGateway& gateway) {
  // "/" is a prefix route: it gets every GET no longer route takes.
  gateway.Route("GET", "/", [](const HttpRequest& request) { return Serve(request); });
}

}  // namespace dashboard
