// The HTTP side of the event gateway: one coroutine per connection reads requests (Beast),
// answers /healthz and the registered routes, and upgrades /events to a SubscriberSession.

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/websocket/detail/hybi13.hpp>
#include <boost/beast/websocket/rfc6455.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cqrs/core/log.h"
#include "cqrs/net/gateway_protocol.h"
#include "gateway_internal.h"
#include "gateway_subscriber.h"

namespace cqrs::net::internal {
namespace {

namespace beast = ::boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
constexpr std::uint32_t kMaxHeaderBytes = 16 << 10;

using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

HttpResponse Text(unsigned status, std::string body) {
  HttpResponse response;
  response.status = status;
  response.body = std::move(body);
  if (!response.body.empty() && response.body.back() != '\n') response.body += '\n';
  return response;
}

absl::string_view PathOf(absl::string_view target) {
  const std::size_t query = target.find('?');
  return query == absl::string_view::npos ? target : target.substr(0, query);
}

class HttpConnection : public std::enable_shared_from_this<HttpConnection> {
 public:
  HttpConnection(Shard& shard, tcp::socket socket, bool refuse)
      : shard_(shard), stream_(std::move(socket)), refuse_(refuse) {}
  ~HttpConnection() {
    // Also when Run ended by an exception: the shard must not keep a pointer to our socket.
    if (registered_) shard_.RemoveHttp(&stream_.socket());
    if (refuse_) {
      shard_.shared().refusing.fetch_sub(1, std::memory_order_relaxed);
    } else if (!upgraded_) {
      shard_.shared().ConnectionClosed();
    }
  }

  Awaitable<void> Run() {
    auto self = shared_from_this();
    const EventGatewayOptions& options = shard_.shared().options;
    boost::system::error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    shard_.AddHttp(&stream_.socket());
    registered_ = true;
    bool first = true;
    while (!shard_.shared().stopping.load(std::memory_order_relaxed)) {
      http::request_parser<http::string_body> parser;
      parser.header_limit(kMaxHeaderBytes);
      parser.body_limit(options.max_message_bytes);
      stream_.expires_after(refuse_ ? std::min<std::chrono::milliseconds>(options.handshake_timeout,
                                                                          std::chrono::seconds(1))
                            : first ? options.handshake_timeout
                                    : options.idle_timeout);
      auto [read_ec, n] = co_await http::async_read(stream_, buffer_, parser, kUse);
      if (read_ec) {
        if (read_ec == http::error::body_limit) {
          co_await Send(Text(413, absl::StrCat("request body over max_message_bytes=",
                                               options.max_message_bytes)),
                        false);
        } else if (read_ec == http::error::header_limit) {
          co_await Send(Text(431, absl::StrCat("request header over ", kMaxHeaderBytes, " bytes")),
                        false);
        } else if (read_ec.category() ==
                       http::make_error_code(http::error::bad_target).category() &&
                   read_ec != http::error::end_of_stream &&
                   read_ec != http::error::partial_message) {
          co_await Send(Text(400, absl::StrCat("malformed HTTP request: ", read_ec.message())),
                        false);
        }
        break;  // Timeout, EOF, reset: nothing to answer.
      }
      first = false;
      if (refuse_) {
        co_await Send(Text(503, absl::StrCat("too many connections (max_connections=",
                                             options.max_connections, "); try again later")),
                      false);
        break;
      }
      shard_.shared().http_requests.fetch_add(1, std::memory_order_relaxed);
      Request request = parser.release();
      const bool keep_alive = request.keep_alive();
      std::optional<HttpResponse> response;
      if (auto origin = request.find(http::field::origin); origin != request.end()) {
        const absl::string_view value(origin->value().data(), origin->value().size());
        const auto& allowed = options.allowed_origins;
        if (std::find(allowed.begin(), allowed.end(), value) == allowed.end()) {
          Log(LogLevel::kWarning,
              absl::StrCat("event gateway: 403 for origin '", value, "' (not in allowed_origins)"));
          response = Text(403, absl::StrCat("origin '", value,
                                            "' is not allowed (the gateway's allowed_origins)"));
        }
      }
      const absl::string_view target(request.target().data(), request.target().size());
      const absl::string_view path = PathOf(target);
      if (!response && path == "/events") {
        if (beast::websocket::is_upgrade(request)) {
          co_await Upgrade(request);
          if (upgraded_) co_return;  // The socket belongs to the subscriber session now.
          break;
        }
        response = Text(426,
                        "GET /events upgrades to WebSocket (subprotocols cqrs.v1.json, "
                        "cqrs.v1.proto); this request is not a WebSocket upgrade");
        response->headers.emplace_back("Upgrade", "websocket");
      }
      if (!response) response = co_await Dispatch(request, path);
      co_await Send(*std::move(response), keep_alive);
      if (!keep_alive) break;
    }
    boost::system::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    shard_.RemoveHttp(&stream_.socket());
    registered_ = false;
  }

 private:
  Awaitable<HttpResponse> Dispatch(const Request& request, absl::string_view path) {
    const absl::string_view method(request.method_string().data(), request.method_string().size());
    if (path == "/healthz") {
      if (method != "GET" && method != "HEAD") co_return Text(405, "use GET /healthz");
      const EventLog& log = shard_.shared().hub.log();
      HttpResponse response;
      response.content_type = "application/json";
      response.body =
          absl::StrCat("{\"status\":\"ok\",\"epoch\":\"", log.epoch(), "\",\"head\":\"", log.head(),
                       "\",\"earliest\":\"", log.earliest(), "\",\"subscribers\":",
                       shard_.shared().subscribers.load(std::memory_order_relaxed), "}\n");
      co_return response;
    }
    const GatewayRoute* best = nullptr;
    bool path_known = false;
    for (const GatewayRoute& route : shard_.shared().routes) {
      const bool prefix = !route.path.empty() && route.path.back() == '/';
      const bool matches = prefix ? absl::StartsWith(path, route.path) : path == route.path;
      if (!matches) continue;
      path_known = true;
      if (route.method != method) continue;
      if (best == nullptr || route.path.size() > best->path.size()) best = &route;
    }
    if (best == nullptr) {
      if (path_known)
        co_return Text(405, absl::StrCat("method ", method, " not allowed on ", path));
      co_return Text(404, absl::StrCat("no such path: ", path));
    }
    HttpRequest plain;
    plain.method = std::string(method);
    plain.target = std::string(request.target().data(), request.target().size());
    plain.path = std::string(path);
    if (auto type = request.find(http::field::content_type); type != request.end()) {
      plain.content_type = std::string(type->value().data(), type->value().size());
    }
    plain.body = request.body();
    for (const auto& field : request) {
      plain.headers.emplace_back(absl::AsciiStrToLower(absl::string_view(
                                     field.name_string().data(), field.name_string().size())),
                                 std::string(field.value().data(), field.value().size()));
    }
    std::exception_ptr failure;
    HttpResponse response;
    try {
      response = co_await best->handler(plain);
    } catch (...) {
      failure = std::current_exception();
    }
    if (failure) {
      std::string what = "unknown exception";
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      Log(LogLevel::kError,
          absl::StrCat("event gateway: handler for ", method, " ", path, " threw: ", what));
      co_return Text(500, absl::StrCat("internal error in the handler for ", path));
    }
    co_return response;
  }

  Awaitable<void> Send(HttpResponse plain, bool keep_alive) {
    Response response;
    response.version(11);
    response.result(plain.status);
    response.set(http::field::server, "cqrs-gateway");
    response.set(http::field::content_type, plain.content_type);
    for (const auto& [name, value] : plain.headers) response.set(name, value);
    response.body() = std::move(plain.body);
    response.keep_alive(keep_alive);
    response.prepare_payload();
    stream_.expires_after(shard_.shared().options.write_timeout);
    auto [ec, n] = co_await http::async_write(stream_, response, kUse);
    (void)n;
    if (ec) stream_.socket().close(ec);
  }

  Awaitable<void> Upgrade(const Request& request) {
    const auto header = [&](http::field field) {
      auto it = request.find(field);
      return it == request.end() ? absl::string_view()
                                 : absl::string_view(it->value().data(), it->value().size());
    };
    if (header(http::field::sec_websocket_version) != "13") {
      HttpResponse response = Text(426, "unsupported Sec-WebSocket-Version: use 13");
      response.headers.emplace_back("Sec-WebSocket-Version", "13");
      co_await Send(std::move(response), false);
      co_return;
    }
    const absl::string_view key = header(http::field::sec_websocket_key);
    std::string decoded;
    if (!absl::Base64Unescape(key, &decoded) || decoded.size() != 16) {
      co_await Send(Text(400, "Sec-WebSocket-Key must be 16 bytes in base64"), false);
      co_return;
    }
    absl::StatusOr<Subprotocol> chosen =
        ChooseSubprotocol(header(http::field::sec_websocket_protocol));
    if (!chosen.ok()) {
      co_await Send(Text(400, std::string(chosen.status().message())), false);
      co_return;
    }
    if (shard_.shared().stopping.load()) {
      co_await Send(Text(503, "the gateway is shutting down"), false);
      co_return;
    }
    beast::websocket::detail::sec_ws_accept_type accept;
    beast::websocket::detail::make_sec_ws_accept(accept,
                                                 beast::string_view(key.data(), key.size()));
    std::string response = absl::StrCat(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: ",
        absl::string_view(accept.data(), accept.size()), "\r\n");
    const WireFormat format = chosen->format;
    if (!chosen->header.empty()) {
      absl::StrAppend(&response, "Sec-WebSocket-Protocol: ", chosen->header, "\r\n");
    }
    response += "\r\n";
    stream_.expires_after(shard_.shared().options.write_timeout);
    auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(response), kUse);
    (void)n;
    if (ec) co_return;
    std::string pending(static_cast<const char*>(buffer_.data().data()), buffer_.size());
    shard_.RemoveHttp(&stream_.socket());
    registered_ = false;
    stream_.expires_never();
    auto session = std::make_shared<SubscriberSession>(shard_, stream_.release_socket(), format);
    upgraded_ = true;  // The session counts the connection from now on.
    session->Start(std::move(pending));
  }

  Shard& shard_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;  // Bounded by the parser's header and body limits.
  const bool refuse_;
  bool registered_ = false;  // Our socket is in the shard's list of HTTP connections.
  bool upgraded_ = false;
};

}  // namespace

void StartHttpConnection(Shard& shard, tcp::socket socket, bool refuse) {
  auto connection = std::make_shared<HttpConnection>(shard, std::move(socket), refuse);
  asio::co_spawn(
      shard.io(), [connection] { return connection->Run(); },
      [](std::exception_ptr e) {
        if (!e) return;
        try {
          std::rethrow_exception(e);
        } catch (const std::exception& x) {
          Log(LogLevel::kError, absl::StrCat("event gateway: HTTP connection failed: ", x.what()));
        }
      });
}

}  // namespace cqrs::net::internal

namespace cqrs::net {

absl::string_view HttpRequest::Header(absl::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (absl::EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

}  // namespace cqrs::net
