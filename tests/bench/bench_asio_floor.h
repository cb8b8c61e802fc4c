// File: bench/bench_asio_floor.h
//
// W1's second floor: the same ping-pong as the blocking floor, with nothing but Asio on either
// side (no protobuf, no routing, no handler). It shows what an Asio event loop costs by itself,
// per side, in the same run and on the same CPUs as the framework:
//
//   cqrs_bench --asio_echo --request_bytes=207 --response_bytes=227   (a server mode, like --echo)
//   auto client = AsioPingPong::Connect(port, 207, 227).value();
//   client->Run(20'000, result);   // one round trip at a time, each one's time in result.rtt_ns

#ifndef CQRS_TESTS_BENCH_BENCH_ASIO_FLOOR_H_
#define CQRS_TESTS_BENCH_BENCH_ASIO_FLOOR_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "absl/status/statusor.h"
#include "bench_link.h"

namespace cqrs::bench {

// --asio_echo: answers every complete request of `request_bytes` with one frame of
// `response_bytes` (a valid header, a body of zeros), as --echo does, from an Asio coroutine per
// connection on one io_context thread: async_read_some, then a direct non-blocking write (an
// asynchronous one only when the socket is full). Reports "port=N\n" on `port_fd`; ends on
// SIGTERM.
int AsioEchoMain(std::size_t request_bytes, std::size_t response_bytes, int port_fd);

// A ping-pong client with nothing but Asio: per round trip, one direct non-blocking write of a
// request (zeros behind a valid header), then async_read_some until the response is complete.
class AsioPingPong {
 public:
  static absl::StatusOr<std::unique_ptr<AsioPingPong>> Connect(std::uint16_t port,
                                                               std::size_t request_bytes,
                                                               std::size_t response_bytes);
  // `count` round trips, one at a time; records each one's time (when `record`) and stops at the
  // first transport error (result.error).
  void Run(std::uint64_t count, LoadResult& result, bool record = true);

 private:
  AsioPingPong(std::size_t request_bytes, std::size_t response_bytes);

  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::socket socket_{io_};
  std::string request_;
  std::size_t response_bytes_;
  std::vector<char> buffer_;
};

}  // namespace cqrs::bench

#endif  // CQRS_TESTS_BENCH_BENCH_ASIO_FLOOR_H_
