// Private: socket helpers shared by the command server, the client and the event gateway.

#ifndef CQRS_NET_SRC_SOCKET_UTIL_H_
#define CQRS_NET_SRC_SOCKET_UTIL_H_

#include <cstddef>
#include <span>

#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "cqrs/core/asio.h"

namespace cqrs::net::internal {

enum class DirectWrite {
  kDone,        // Every byte has left.
  kWouldBlock,  // The socket's buffer is full: wait until it is writable, then call again.
  kFailed,      // The connection is gone; `error` says why.
};

// Sends `bytes` from `*written` on (a non-blocking socket) while the socket takes them and
// advances `*written`. Nearly every write of a request/response protocol completes here, with no
// operation, completion handler or timer.
inline DirectWrite WriteDirectly(asio::ip::tcp::socket& socket, std::span<const std::byte> bytes,
                                 std::size_t* written, boost::system::error_code* error) {
  while (*written < bytes.size()) {
    const auto rest = bytes.subspan(*written);
    boost::system::error_code ec;
    const std::size_t n = socket.write_some(asio::buffer(rest.data(), rest.size()), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      return DirectWrite::kWouldBlock;
    }
    if (ec) {
      *error = ec;
      return DirectWrite::kFailed;
    }
    *written += n;
  }
  return DirectWrite::kDone;
}

// Opens, binds (with SO_REUSEADDR) and listens on `endpoint`; the first error, if any.
inline boost::system::error_code Listen(asio::ip::tcp::acceptor& acceptor,
                                        const asio::ip::tcp::endpoint& endpoint) {
  boost::system::error_code ec;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  return ec;
}

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_SOCKET_UTIL_H_
