// Private: one TCP connection of a CommandServer.

#ifndef CQRS_NET_SRC_COMMAND_SESSION_H_
#define CQRS_NET_SRC_COMMAND_SESSION_H_

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include "absl/container/flat_hash_set.h"
#include "cqrs/core/command_processor.h"
#include "cqrs/net/command_server.h"
#include "cqrs/net/frame_codec.h"

namespace cqrs::net::internal {

struct ServerShared;

class CommandSession : public std::enable_shared_from_this<CommandSession> {
 public:
  using Clock = std::chrono::steady_clock;

  CommandSession(asio::ip::tcp::socket socket, ServerShared& shared, std::string id);
  ~CommandSession();

  // Runs the session to its end (reader; spawns writer and watchdog). Call on its executor.
  Awaitable<void> Run();
  // Starts the graceful end: GoAway, UNAVAILABLE for new commands, close once drained.
  // Call on the session's executor.
  void GoAway(std::chrono::milliseconds drain);
  // Closes the socket at once. Call on the session's executor.
  void ForceClose();
  // Called once ServerShared::Add accepted the session: it then counts in `open` and `alive`.
  void MarkRegistered(bool registered) { registered_ = registered; }
  asio::any_io_executor executor() { return socket_.get_executor(); }

 private:
  struct Slot;
  // Resumes a parked runner: true runs the command decoded into its slot, false ends it.
  using Resume = asio::any_completion_handler<void(bool)>;
  // A slot the reader decodes into: a parked runner's (`resume` set) or a new one (`owned`).
  // Boost 1.81's any_completion_handler move assignment is broken (it wraps the handler in
  // another one): Resumes are only ever move-constructed or swapped.
  struct NextSlot {
    Slot* slot = nullptr;
    Resume resume;
    std::unique_ptr<Slot> owned;
  };

  // Each coroutine takes a local reference to the session before its first suspension (not a
  // by-value parameter: GCC 12 can destroy those twice).
  Awaitable<void> Watchdog();
  // Commands run on long-lived runner coroutines, one command at a time each: a runner runs the
  // command in its slot, then parks until the reader hands it the next one by resuming it in
  // place. No coroutine is spawned per command, and a command that completes without
  // suspending costs the event loop nothing (co_spawn would post its completion). A runner
  // holds the session only while it runs a command (see parked_).
  Awaitable<void> Runner(Slot* slot);
  Awaitable<void> Execute(Slot* slot);

  // Decodes and handles buffered frames until none is complete or max_in_flight is reached;
  // false when the session must stop reading.
  bool DecodeBuffered(bool& any_frame);
  // Handles the frame decoded into next_; false when the session must stop reading.
  bool OnFrame();
  // Fills next_ with a parked runner's slot, or a new one.
  void TakeSlot();
  // Hands next_'s command to its runner (resumed in place) or to a new runner.
  void StartCommand();
  // A suspended command is cancelled by ForceClose and by the watchdog at its deadline.
  void Watch(Slot* slot);
  void Unwatch(Slot* slot);
  // The command in `slot` has completed: it is no longer starting_ nor watched.
  void Finished(Slot* slot);
  // Ends parked runners (posted: the caller may be deep inside a write or a command).
  void EndParkedRunners();
  // `responses` command responses have left: they no longer count as in flight.
  void OnResponsesWritten(std::uint32_t responses);
  bool OnHello(const v1::Hello& hello);
  void SendFrame(const v1::Frame& frame);
  void SendResponse(const std::string& response);
  // Sends Error{code, message, fatal}; a fatal error stops reading and closes after the flush.
  void SendError(v1::Error::Code code, std::string message, bool fatal);
  void CloseAfterFlush();
  // Starts writing what is queued unless a write is in progress; closes the connection once
  // everything is written after CloseAfterFlush.
  void Flush();
  // Sends the rest of writing_, directly while the socket takes it.
  void WriteSome();
  // writing_ has left completely / the connection failed.
  void OnWritten();
  void OnWriteFailed();
  void SetReadDeadline(Clock::time_point deadline, const char* reason);
  void UpdateReadDeadline();

  asio::ip::tcp::socket socket_;
  ServerShared& shared_;
  std::string id_;
  std::string peer_;
  FrameDecoder decoder_;
  FrameEncoder out_;
  FrameEncoder writing_;
  asio::steady_timer resume_reading_;
  asio::steady_timer watchdog_;
  Clock::time_point read_deadline_ = Clock::time_point::max();
  Clock::time_point write_deadline_ = Clock::time_point::max();
  Clock::time_point frame_started_ = Clock::time_point::max();
  const char* read_deadline_reason_ = "hello_timeout";
  // Commands received and not yet answered on the wire (running, or response queued).
  std::uint32_t in_flight_ = 0;
  std::uint32_t unwritten_responses_ = 0;  // Responses in out_.
  std::uint32_t responses_in_write_ = 0;   // Responses in writing_.
  std::size_t written_ = 0;                // Bytes of writing_ already sent.
  // Commands that suspended and have not completed (for ForceClose to cancel them).
  absl::flat_hash_set<Slot*> running_;
  Slot* starting_ = nullptr;  // The command StartCommand is running, until it completes.
  // Runners waiting for a command, at most kMaxParked (the rest end after their command).
  // A parked runner holds no reference to the session (that would be a cycle through its
  // Resume); the watchdog holds the session until it is closed, and closing ends them.
  static constexpr std::size_t kMaxParked = 64;
  std::vector<std::pair<Slot*, Resume>> parked_;
  NextSlot next_;
  // Deadlines of running commands that have one, earliest first (see Watchdog).
  std::multimap<Clock::time_point, Slot*> command_deadlines_;
  bool hello_done_ = false;
  bool reading_paused_ = false;
  bool write_pending_ = false;
  bool batching_ = false;  // Inside a read batch: responses wait for its end (see Flush).
  bool going_away_ = false;
  bool reader_done_ = false;
  bool close_after_flush_ = false;
  bool closed_ = false;
  bool peer_closed_ = false;  // The peer's EOF arrived while closing.
  // How long a closing connection waits for the peer to close after our last byte.
  static constexpr std::chrono::seconds kLinger{1};
  bool registered_ = false;
  std::string principal_;
};

}  // namespace cqrs::net::internal

#endif  // CQRS_NET_SRC_COMMAND_SESSION_H_
