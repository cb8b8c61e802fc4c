// File: cqrs/net/stop_signals.h
//
// SIGINT/SIGTERM for a server's main thread: blocked from construction on (in the calling
// thread and every thread it starts afterwards, so no server thread is killed by them), then
// taken synchronously with Wait(). Create it before starting any server.
//
//   cqrs::net::StopSignals stop;          // before server.Start(): its threads inherit the mask
//   CQRS_RETURN_IF_ERROR(server.Start());
//   int signal = stop.Wait();             // blocks until SIGINT or SIGTERM
//   server.Shutdown();
//
// The destructor restores the calling thread's previous mask.

#ifndef CQRS_NET_STOP_SIGNALS_H_
#define CQRS_NET_STOP_SIGNALS_H_

#include <signal.h>

namespace cqrs::net {

class StopSignals {
 public:
  StopSignals();
  ~StopSignals();
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // Blocks until SIGINT or SIGTERM is pending, and returns which one.
  int Wait();

 private:
  sigset_t signals_;
  sigset_t previous_;
};

}  // namespace cqrs::net

#endif  // CQRS_NET_STOP_SIGNALS_H_
