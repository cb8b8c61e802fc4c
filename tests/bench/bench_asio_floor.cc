#include "bench_asio_floor.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>
#include <utility>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "cqrs/core/asio.h"
#include "cqrs/net/frame_codec.h"
#include "cqrs/net/stop_signals.h"

namespace cqrs::bench {
namespace {

using tcp = asio::ip::tcp;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);

// `bytes` zeros behind a valid frame header.
std::string Frame(std::size_t bytes) {
  std::string frame(bytes, '\0');
  net::WriteFrameHeader(static_cast<std::uint32_t>(bytes - net::kFrameHeaderBytes),
                        reinterpret_cast<std::byte*>(frame.data()));
  return frame;
}

// Writes `data` directly while the socket takes it, asynchronously only when it is full.
Awaitable<bool> WriteAll(tcp::socket& socket, const char* data, std::size_t size) {
  while (size > 0) {
    boost::system::error_code ec;
    const std::size_t n = socket.write_some(asio::buffer(data, size), ec);
    if (ec == asio::error::would_block) {
      auto [error, written] = co_await asio::async_write(socket, asio::buffer(data, size), kUse);
      co_return !error;
    }
    if (ec) co_return false;
    data += n;
    size -= n;
  }
  co_return true;
}

// One connection (owned through the raw pointer: GCC 12 can destroy by-value coroutine
// parameters twice).
Awaitable<void> Echo(tcp::socket* raw, std::size_t request_bytes, const std::string* responses,
                     std::size_t response_bytes) {
  std::unique_ptr<tcp::socket> socket(raw);
  boost::system::error_code ignored;
  socket->set_option(tcp::no_delay(true), ignored);
  socket->non_blocking(true, ignored);
  std::vector<char> buffer(256 * 1024);
  std::size_t partial = 0;  // Bytes of a request not yet complete.
  for (;;) {
    auto [error, n] = co_await socket->async_read_some(asio::buffer(buffer), kUse);
    if (error) co_return;
    partial += n;
    std::size_t answers = partial / request_bytes;
    partial %= request_bytes;
    while (answers > 0) {
      const std::size_t batch = std::min(answers, responses->size() / response_bytes);
      if (!co_await WriteAll(*socket, responses->data(), batch * response_bytes)) co_return;
      answers -= batch;
    }
  }
}

Awaitable<void> Accept(tcp::acceptor* acceptor, std::size_t request_bytes,
                       const std::string* responses, std::size_t response_bytes) {
  for (;;) {
    auto [error, socket] = co_await acceptor->async_accept(kUse);
    if (error) co_return;
    asio::co_spawn(
        acceptor->get_executor(),
        Echo(new tcp::socket(std::move(socket)), request_bytes, responses, response_bytes),
        asio::detached);
  }
}

// The client's loop; the result goes to `result`.
Awaitable<void> PingPong(tcp::socket* socket, const std::string* request,
                         std::size_t response_bytes, std::vector<char>* buffer, std::uint64_t count,
                         LoadResult* result, bool record) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto sent = Clock::now();
    if (!co_await WriteAll(*socket, request->data(), request->size())) {
      result->error = "the Asio ping-pong could not write";
      break;
    }
    std::size_t received = 0;
    while (received < response_bytes) {
      auto [error, n] = co_await socket->async_read_some(asio::buffer(*buffer), kUse);
      if (error) {
        result->error = absl::StrCat("the Asio ping-pong could not read: ", error.message());
        co_return;
      }
      received += n;
    }
    const auto now = Clock::now();
    ++result->answered;
    ++result->in_time;
    if (record) {
      result->rtt_ns.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent).count()));
    }
  }
  result->busy += Clock::now() - start;
}

}  // namespace

int AsioEchoMain(std::size_t request_bytes, std::size_t response_bytes, int port_fd) {
  if (request_bytes == 0 || response_bytes <= net::kFrameHeaderBytes) {
    std::fprintf(stderr,
                 "cqrs_bench --asio_echo: --request_bytes and --response_bytes are required\n");
    return 2;
  }
  net::StopSignals stop;  // Before the loop's thread starts.
  asio::io_context io(1);
  boost::system::error_code ec;
  tcp::acceptor acceptor(io);
  acceptor.open(tcp::v4(), ec);
  if (!ec) acceptor.bind(tcp::endpoint(asio::ip::address_v4::loopback(), 0), ec);
  if (!ec) acceptor.listen(64, ec);
  if (ec) {
    std::fprintf(stderr, "cqrs_bench --asio_echo: listen: %s\n", ec.message().c_str());
    return 1;
  }
  std::string responses;  // A response, repeated for batched answers.
  const std::string response = Frame(response_bytes);
  for (int i = 0; i < 256; ++i) responses += response;
  asio::co_spawn(io, Accept(&acceptor, request_bytes, &responses, response_bytes), asio::detached);
  std::thread loop([&io] { io.run(); });
  const std::string port = absl::StrCat("port=", acceptor.local_endpoint().port(), "\n");
  const bool reported =
      write(port_fd, port.data(), port.size()) == static_cast<ssize_t>(port.size());
  if (reported) stop.Wait();
  io.stop();
  loop.join();
  close(port_fd);
  return reported ? 0 : 1;
}

AsioPingPong::AsioPingPong(std::size_t request_bytes, std::size_t response_bytes)
    : request_(Frame(request_bytes)), response_bytes_(response_bytes), buffer_(64 * 1024) {}

absl::StatusOr<std::unique_ptr<AsioPingPong>> AsioPingPong::Connect(std::uint16_t port,
                                                                    std::size_t request_bytes,
                                                                    std::size_t response_bytes) {
  if (request_bytes <= net::kFrameHeaderBytes || response_bytes == 0) {
    return absl::InvalidArgumentError("the Asio ping-pong needs request and response sizes");
  }
  std::unique_ptr<AsioPingPong> client(new AsioPingPong(request_bytes, response_bytes));
  boost::system::error_code ec;
  client->socket_.connect(tcp::endpoint(asio::ip::address_v4::loopback(), port), ec);
  if (!ec) client->socket_.set_option(tcp::no_delay(true), ec);
  if (!ec) client->socket_.non_blocking(true, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("the Asio ping-pong cannot connect to port ", port, ": ", ec.message()));
  }
  return client;
}

void AsioPingPong::Run(std::uint64_t count, LoadResult& result, bool record) {
  asio::co_spawn(io_,
                 PingPong(&socket_, &request_, response_bytes_, &buffer_, count, &result, record),
                 asio::detached);
  io_.restart();
  io_.run();
}

}  // namespace cqrs::bench
