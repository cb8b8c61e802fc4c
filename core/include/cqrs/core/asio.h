// File: cqrs/core/asio.h
//
// The Asio names the public API uses: `cqrs::asio` is Boost.Asio, and `Awaitable<T>` is the
// coroutine type every asynchronous cqrs function returns.
//
//   cqrs::Awaitable<absl::Status> Handle(...);

#ifndef CQRS_CORE_ASIO_H_
#define CQRS_CORE_ASIO_H_

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

namespace cqrs {

namespace asio = ::boost::asio;

template <typename T>
using Awaitable = asio::awaitable<T>;

}  // namespace cqrs

#endif  // CQRS_CORE_ASIO_H_
