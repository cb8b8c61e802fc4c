// A user-service command server for tests driven by other languages (tests/net/python):
// listens on 127.0.0.1 with a kernel-chosen port, prints "PORT <n>" on stdout, serves until
// SIGTERM/SIGINT, then shuts down gracefully (GoAway, drain) and exits 0.
//
//   cqrs_test_user_server [--drain-ms N]

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "cqrs/net/command_server.h"
#include "testing/recording_sink.h"
#include "user_handlers.h"

int main(int argc, char** argv) {
  cqrs::net::CommandServerOptions options;
  options.threads = 2;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], "--drain-ms") == 0) {
      options.shutdown_drain = std::chrono::milliseconds(std::atoi(argv[i + 1]));
    }
  }
  // Block the signals before the server's threads start, then take them here with sigwait.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  cqrs::CommandRouter router({.service_id = "user-service"});
  users::UserDirectory directory;
  if (auto status = users::RegisterHandlers(router, directory); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  cqrs::testing::RecordingSink sink;
  router.set_event_sink(&sink);
  cqrs::net::CommandServer server(router, options);
  if (auto status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    return 1;
  }
  std::printf("PORT %u\n", server.port());
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server.Shutdown();
  std::printf("STOPPED commands=%llu events=%zu\n",
              static_cast<unsigned long long>(server.stats().commands), sink.size());
  return 0;
}
