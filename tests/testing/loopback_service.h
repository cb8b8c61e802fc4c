// File: testing/loopback_service.h
//
// A CommandServer on 127.0.0.1 (port 0 unless the options name one) with the user-service
// handlers, the TestHandlers and a RecordingSink. Header-only: it needs the user-service example
// library (cqrs_example_users), which only the integration tests link.
//
//   testing::LoopbackService service;
//   ASSERT_TRUE(service.Start({.threads = 2}).ok());
//   ... connect to service.port() ...
//   service.handlers.gate.Open();
//
// The destructor opens the gate and shuts the server down before the handlers, the sink and the
// router it references go away.

#ifndef CQRS_TESTS_TESTING_LOOPBACK_SERVICE_H_
#define CQRS_TESTS_TESTING_LOOPBACK_SERVICE_H_

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "cqrs/core/command_router.h"
#include "cqrs/net/command_server.h"
#include "testing/recording_sink.h"
#include "testing/test_handlers.h"
#include "user_handlers.h"

namespace cqrs::testing {

class LoopbackService {
 public:
  LoopbackService() : router({.service_id = "test-service"}) {
    registered_ = users::RegisterHandlers(router, directory);
    if (registered_.ok()) registered_ = handlers.Register(router);
    router.set_event_sink(&sink);
  }
  ~LoopbackService() {
    handlers.gate.Open();
    if (server_ != nullptr) server_->Shutdown();
  }
  LoopbackService(const LoopbackService&) = delete;
  LoopbackService& operator=(const LoopbackService&) = delete;

  // Starts the server; `threads` 0 becomes 2 (the test machine's budget).
  absl::Status Start(net::CommandServerOptions options = {}) {
    if (!registered_.ok()) return registered_;
    if (options.threads == 0) options.threads = 2;
    server_ = std::make_unique<net::CommandServer>(router, std::move(options));
    return server_->Start();
  }
  net::CommandServer& server() { return *server_; }
  std::uint16_t port() const { return server_->port(); }

  CommandRouter router;
  users::UserDirectory directory;
  RecordingSink sink;
  TestHandlers handlers;

 private:
  absl::Status registered_;
  std::unique_ptr<net::CommandServer> server_;  // Last: destroyed first.
};

}  // namespace cqrs::testing

#endif  // CQRS_TESTS_TESTING_LOOPBACK_SERVICE_H_
