#include "command_session.h"

#include <algorithm>
#include <array>
#include <exception>
#include <map>
#include <optional>
#include <utility>

#include <google/protobuf/arena.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "command_parse.h"
#include "cqrs/core/log.h"
#include "cqrs/core/time_util.h"
#include "server_shared.h"
#include "socket_util.h"

namespace cqrs::net::internal {
namespace {

constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 64 * 1024;
// How often a session held back by downstream_saturated checks again.
constexpr std::chrono::microseconds kSaturationPoll{200};
constexpr std::uint32_t kProtocolVersion = 1;

std::string DescribeException(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "a non-std exception";
  }
}

const char* KindName(const v1::Frame& frame) {
  const auto* field = v1::Frame::descriptor()->FindFieldByNumber(frame.kind_case());
  return field == nullptr ? "unknown" : field->name().c_str();
}

}  // namespace

// One frame's memory, kept from one command to the next so that a typical command allocates
// little: a command is decoded into `reused`, which keeps its strings and submessages (decoding
// allocates nothing once they have grown); any other frame, and a command the reusing decoder
// leaves to protobuf, goes to `frame`. `scratch` keeps the payload message, the staged events
// and the reply; the arena (first block inline) takes what does not fit there and whatever a
// handler allocates on it, and is reset only when it was used.
struct CommandSession::Slot {
  // What `reused` and `frame` may keep allocated between frames (up to max_in_flight slots per
  // connection keep theirs): beyond it, they start afresh.
  static constexpr std::size_t kReuseBytes = CommandScratch::kMaxBytes;

  Slot() : arena(Options(block, sizeof block)) {}
  void Reset() {
    admission = {};
    if (scratch.TakeArenaTouched()) arena.Reset();
    // The reusing decoder may have filled `reused` before leaving a frame to protobuf, so its
    // capacity is checked whatever the frame was.
    if (frame_bytes > kReuseBytes || RetainedBytes(reused) > kReuseBytes) {
      v1::CommandEnvelope().Swap(&reused);
    }
    if (frame_bytes > kReuseBytes) frame.Clear();
    command = nullptr;
    frame_bytes = 0;
  }
  static google::protobuf::ArenaOptions Options(char* initial, std::size_t size) {
    google::protobuf::ArenaOptions options;
    options.initial_block = initial;
    options.initial_block_size = size;
    return options;
  }

  alignas(16) char block[8192];
  google::protobuf::Arena arena;
  v1::Frame frame;
  v1::CommandEnvelope reused;
  CommandScratch scratch;
  // The command being run: `reused` or frame.command(). Set from decoding until Reset.
  const v1::CommandEnvelope* command = nullptr;
  std::size_t frame_bytes = 0;  // Of the frame last decoded into this slot.
  CommandProcessor::Admission admission;
  // Cancels the running command when its deadline passes (see Watchdog).
  asio::cancellation_signal cancel;
  // Set while the command is suspended and in running_ (and command_deadlines_).
  bool watched = false;
  std::optional<std::multimap<Clock::time_point, Slot*>::iterator> deadline;
};

CommandSession::CommandSession(asio::ip::tcp::socket socket, ServerShared& shared, std::string id)
    : socket_(std::move(socket)),
      shared_(shared),
      id_(std::move(id)),
      decoder_({.max_frame_bytes = shared.options.max_frame_bytes}),
      out_({.max_frame_bytes = shared.options.max_frame_bytes}),
      writing_({.max_frame_bytes = shared.options.max_frame_bytes}),
      resume_reading_(socket_.get_executor()),
      watchdog_(socket_.get_executor()) {}

CommandSession::~CommandSession() {
  if (!registered_) return;
  if (!closed_) shared_.Remove();
  shared_.Destroyed();
}

Awaitable<void> CommandSession::Run() {
  auto self = shared_from_this();
  boost::system::error_code ec;
  const auto remote = socket_.remote_endpoint(ec);
  peer_ = ec ? std::string("?") : absl::StrCat(remote.address().to_string(), ":", remote.port());
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);  // WriteSome sends directly and waits only when it must.

  const auto& options = shared_.options;
  SetReadDeadline(Clock::now() + options.hello_timeout, "hello_timeout");
  // The watchdog holds the session while it is open (parked runners rely on it): if it ever
  // fails, the session closes.
  asio::co_spawn(socket_.get_executor(), Watchdog(), [self](std::exception_ptr e) {
    if (!e) return;
    Log(LogLevel::kError, absl::StrCat("session ", self->id_,
                                       ": watchdog failed: ", DescribeException(e), "; closing"));
    self->ForceClose();
  });

  while (!closed_ && !close_after_flush_) {
    // Decode what is buffered first: frames left over when the in-flight limit stopped us.
    bool any_frame = false;
    // Responses of handlers that finish during the batch leave together, in one write.
    batching_ = true;
    const bool go_on = DecodeBuffered(any_frame);
    const bool at_limit = in_flight_ >= options.max_in_flight;  // Frames may be left buffered.
    batching_ = false;
    Flush();
    if (!go_on) break;
    if (any_frame) frame_started_ = Clock::time_point::max();
    // The flush wrote responses at once and freed room: decode what is still buffered.
    if (at_limit && in_flight_ < options.max_in_flight) continue;
    if (in_flight_ >= options.max_in_flight) {
      // Backpressure: neither decode nor read until responses have been written.
      reading_paused_ = true;
      SetReadDeadline(Clock::time_point::max(), "");
      resume_reading_.expires_at(Clock::time_point::max());
      co_await resume_reading_.async_wait(kUse);
      reading_paused_ = false;
      continue;
    }
    if (options.downstream_saturated && options.downstream_saturated()) {
      // Downstream cannot keep up (e.g. event subscribers): hold commands back at the socket.
      SetReadDeadline(Clock::time_point::max(), "");
      resume_reading_.expires_after(kSaturationPoll);
      co_await resume_reading_.async_wait(kUse);
      // The wait was ours, not the peer's: a frame in progress gets its full frame_timeout.
      frame_started_ = Clock::time_point::max();
      continue;
    }
    UpdateReadDeadline();
    const auto space = decoder_.Prepare(kReadChunk);
    auto [read_error, n] =
        co_await socket_.async_read_some(asio::buffer(space.data(), space.size()), kUse);
    if (read_error) break;
    decoder_.Commit(n);
  }
  reader_done_ = true;
  if (next_.resume) parked_.emplace_back(next_.slot, std::move(next_.resume));
  next_.slot = nullptr;
  next_.owned.reset();
  if (closed_) EndParkedRunners();  // Otherwise ForceClose does, later.
  // The peer closed its side or we stopped reading: let in-flight commands answer, then close.
  if (in_flight_ == 0 && !closed_) CloseAfterFlush();
  if (closed_ || !close_after_flush_) co_return;
  // Closing: drain (and drop) what the peer still sends until it closes too, so that our close
  // does not reset the connection before the peer has read our last frames. The watchdog ends
  // the wait at the linger deadline.
  std::array<std::byte, 4096> scratch;
  for (;;) {
    auto [error, n] = co_await socket_.async_read_some(asio::buffer(scratch), kUse);
    if (error) break;
  }
  peer_closed_ = true;
  if (!write_pending_ && out_.empty()) ForceClose();
}

bool CommandSession::DecodeBuffered(bool& any_frame) {
  const auto max_in_flight = shared_.options.max_in_flight;
  while (!close_after_flush_ && !closed_ && in_flight_ < max_in_flight) {
    if (next_.slot == nullptr) TakeSlot();
    Slot& slot = *next_.slot;
    const std::size_t buffered = decoder_.buffered();
    bool is_command = false;
    const DecodeResult result = decoder_.Next(slot.frame, slot.reused, is_command);
    if (result == DecodeResult::kNeedMore) return true;
    slot.frame_bytes = buffered - decoder_.buffered();
    if (result == DecodeResult::kFrame) {
      any_frame = true;
      if (is_command) {
        slot.command = &slot.reused;
      } else if (slot.frame.has_command()) {
        slot.command = &slot.frame.command();
      }
      if (!OnFrame()) return false;
      if (next_.slot != nullptr) next_.slot->Reset();  // Not a command: the slot stays ours.
      continue;
    }
    next_.slot->Reset();
    const std::string message(decoder_.error().message());
    if (result == DecodeResult::kTooLarge) {
      SendError(v1::Error::FRAME_TOO_LARGE, message, /*fatal=*/true);
      return false;
    }
    // The stream is still in sync; only before Hello is a bad frame fatal.
    SendError(v1::Error::MALFORMED_FRAME, message, /*fatal=*/!hello_done_);
    if (!hello_done_) return false;
  }
  return !close_after_flush_ && !closed_;
}

void CommandSession::TakeSlot() {
  if (!parked_.empty()) {
    next_.slot = parked_.back().first;
    next_.resume.swap(parked_.back().second);
    parked_.pop_back();
    return;
  }
  next_.owned = std::make_unique<Slot>();
  next_.slot = next_.owned.get();
}

void CommandSession::StartCommand() {
  Slot* slot = std::exchange(next_.slot, nullptr);
  // The command runs here, until it completes or first suspends; Execute clears starting_ when
  // it completes.
  starting_ = slot;
  if (next_.resume) {
    Resume resume;
    resume.swap(next_.resume);
    std::move(resume)(true);
  } else {
    // The runner's completion owns the slot: its cancellation signal must outlive the coroutine.
    asio::co_spawn(socket_.get_executor(), Runner(slot),
                   asio::bind_cancellation_slot(
                       slot->cancel.slot(), [owned = std::move(next_.owned)](std::exception_ptr e) {
                         if (e) Log(LogLevel::kError, "a command runner failed unexpectedly");
                       }));
  }
  // Only a command that suspended is watched (deadline, ForceClose): most complete at once.
  if (std::exchange(starting_, nullptr) == slot) Watch(slot);
}

void CommandSession::Watch(Slot* slot) {
  running_.insert(slot);
  slot->watched = true;
  const v1::CommandEnvelope& command = *slot->command;
  if (!command.has_deadline()) return;
  // The watchdog cancels the command if it is still running at its deadline. Deadlines more
  // than a day away are not watched (and cannot overflow the clock).
  const absl::Duration left = FromTimestamp(command.deadline()) - Now();
  if (left < absl::Hours(24)) {
    const auto at = Clock::now() + ToChrono(left);
    slot->deadline = command_deadlines_.emplace(at, slot);
    if (at < watchdog_.expiry()) watchdog_.cancel();
  }
}

void CommandSession::Unwatch(Slot* slot) {
  if (slot->deadline) {
    command_deadlines_.erase(*slot->deadline);
    slot->deadline.reset();
  }
  running_.erase(slot);
  slot->watched = false;
}

void CommandSession::EndParkedRunners() {
  for (auto& [slot, resume] : parked_) {
    asio::post(socket_.get_executor(),
               [resume = std::move(resume)]() mutable { std::move(resume)(false); });
  }
  parked_.clear();
}

bool CommandSession::OnFrame() {
  if (const v1::CommandEnvelope* command = next_.slot->command; command != nullptr && hello_done_) {
    shared_.commands.Add();
    ++in_flight_;
    if (going_away_) {
      SendResponse(*shared_.processor.Refuse(
          *command, absl::UnavailableError("the server is shutting down; retry the "
                                           "command on a new connection")));
      return true;
    }
    next_.slot->admission = shared_.processor.Admit(*command);
    StartCommand();  // `command` belongs to the runner from here on.
    return true;
  }
  const v1::Frame& frame = next_.slot->frame;
  if (!hello_done_) {
    if (next_.slot->command != nullptr) {
      SendError(v1::Error::PROTOCOL_VIOLATION, "expected Hello as the first frame, got command",
                /*fatal=*/true);
      return false;
    }
    if (frame.has_hello()) return OnHello(frame.hello());
    SendError(v1::Error::PROTOCOL_VIOLATION,
              absl::StrCat("expected Hello as the first frame, got ", KindName(frame)),
              /*fatal=*/true);
    return false;
  }
  switch (frame.kind_case()) {
    case v1::Frame::kCommand:  // Handled above.
      return true;
    case v1::Frame::kPing: {
      v1::Frame pong;
      pong.mutable_pong()->set_nonce(frame.ping().nonce());
      SendFrame(pong);
      return true;
    }
    case v1::Frame::kPong:
      return true;
    case v1::Frame::kHello:
      SendError(v1::Error::PROTOCOL_VIOLATION, "a second Hello on the same connection",
                /*fatal=*/true);
      return false;
    case v1::Frame::kError:
      Log(LogLevel::kInfo,
          absl::StrCat("session ", id_, " (", peer_, "): peer reported ",
                       v1::Error::Code_Name(frame.error().code()), ": ", frame.error().message()));
      return true;
    default:
      SendError(v1::Error::PROTOCOL_VIOLATION,
                absl::StrCat(KindName(frame), " frames are sent by servers, not clients"),
                /*fatal=*/false);
      return true;
  }
}

bool CommandSession::OnHello(const v1::Hello& hello) {
  const auto& options = shared_.options;
  if (hello.protocol_version() != kProtocolVersion) {
    SendError(v1::Error::UNSUPPORTED_VERSION,
              absl::StrCat("protocol_version ", hello.protocol_version(),
                           " is not supported; this server speaks ", kProtocolVersion),
              /*fatal=*/true);
    return false;
  }
  if (options.authenticate) {
    auto principal = options.authenticate(hello.auth_token());
    if (!principal.ok()) {
      SendError(v1::Error::UNAUTHENTICATED,
                absl::StrCat("authentication failed: ", principal.status().message()),
                /*fatal=*/true);
      return false;
    }
    principal_ = *std::move(principal);
  }
  hello_done_ = true;
  v1::Frame ack;
  auto* a = ack.mutable_hello_ack();
  a->set_protocol_version(kProtocolVersion);
  a->set_server_name(options.server_name);
  a->set_max_frame_bytes(options.max_frame_bytes);
  a->set_max_in_flight(options.max_in_flight);
  a->set_session_id(id_);
  SendFrame(ack);
  return true;
}

Awaitable<void> CommandSession::Runner(Slot* slot) {
  for (;;) {
    // Each command starts with a fresh cancellation state: a cancellation (the deadline, or
    // ForceClose) reaches the operation the handler awaits; everything else goes on and answers
    // (DEADLINE_EXCEEDED, INTERNAL) instead of throwing. Reset every time: a handler may change
    // both for the whole coroutine (e.g. disable cancellation), and a deadline leaves it
    // cancelled.
    co_await asio::this_coro::reset_cancellation_state();
    co_await asio::this_coro::throw_if_cancelled(false);
    {
      auto self = shared_from_this();
      try {
        co_await Execute(slot);
      } catch (...) {
        // Only running out of memory gets here (Execute answers every failure of the command).
        // The command cannot be answered; the session stays consistent.
        Log(LogLevel::kError, absl::StrCat("session ", id_, ": a command failed unexpectedly: ",
                                           DescribeException(std::current_exception())));
        Finished(slot);
        OnResponsesWritten(1);
      }
      slot->Reset();
      if (closed_ || parked_.size() >= kMaxParked) co_return;
    }
    // The session is not closed, so the watchdog holds it: dropping `self` did not free it.
    const bool go_on = co_await asio::async_initiate<const asio::use_awaitable_t<>, void(bool)>(
        [this, slot](auto resume) { parked_.emplace_back(slot, Resume(std::move(resume))); },
        asio::use_awaitable);
    // Ended by a closed session: it may be gone; touch nothing.
    if (!go_on) co_return;
  }
}

void CommandSession::Finished(Slot* slot) {
  if (starting_ == slot) starting_ = nullptr;  // Completed without suspending: never watched.
  if (slot->watched) Unwatch(slot);
}

Awaitable<void> CommandSession::Execute(Slot* slot) {
  const v1::CommandEnvelope& command = *slot->command;
  CommandProcessor::Response response;
  try {
    response = co_await shared_.processor.Run(slot->admission, command, &slot->arena, principal_,
                                              &slot->scratch);
    // The response must fit in a frame; the tag and length take at most 11 bytes.
    if (response->size() + 11 > shared_.options.max_frame_bytes) {
      response = shared_.processor.Refuse(
          command, absl::InternalError(absl::StrCat(
                       "the response of ", response->size(),
                       " bytes exceeds max_frame_bytes=", shared_.options.max_frame_bytes)));
    }
  } catch (...) {
    response = shared_.processor.Refuse(command, absl::InternalError("the server failed"));
  }
  Finished(slot);
  SendResponse(*response);
}

void CommandSession::OnResponsesWritten(std::uint32_t responses) {
  in_flight_ -= responses;
  if (reading_paused_ && in_flight_ < shared_.options.max_in_flight) resume_reading_.cancel();
  if (in_flight_ == 0) {
    if (going_away_ || reader_done_) {
      CloseAfterFlush();
    } else {
      UpdateReadDeadline();
    }
  }
}

void CommandSession::SendFrame(const v1::Frame& frame) {
  if (closed_) return;
  if (auto status = out_.Append(frame); !status.ok()) {
    Log(LogLevel::kError,
        absl::StrCat("session ", id_, ": cannot send ", KindName(frame), ": ", status.message()));
    return;
  }
  if (!batching_) Flush();
}

void CommandSession::SendResponse(const std::string& response) {
  if (closed_) return;
  if (auto status = out_.AppendSerialized(v1::Frame::kResponse, response); !status.ok()) {
    // Execute replaces responses too large for a frame, so this is a bug; do not stall.
    Log(LogLevel::kError,
        absl::StrCat("session ", id_, ": cannot send a response: ", status.message()));
    OnResponsesWritten(1);
    return;
  }
  ++unwritten_responses_;
  if (!batching_) Flush();
}

void CommandSession::SendError(v1::Error::Code code, std::string message, bool fatal) {
  shared_.protocol_errors.fetch_add(1, std::memory_order_relaxed);
  Log(fatal ? LogLevel::kWarning : LogLevel::kInfo,
      absl::StrCat("session ", id_, " (", peer_, "): ", v1::Error::Code_Name(code), ": ", message,
                   fatal ? "; closing" : ""));
  v1::Frame frame;
  auto* error = frame.mutable_error();
  error->set_code(code);
  error->set_message(std::move(message));
  error->set_fatal(fatal);
  SendFrame(frame);
  if (fatal) CloseAfterFlush();
}

void CommandSession::GoAway(std::chrono::milliseconds drain) {
  if (closed_ || going_away_) return;
  going_away_ = true;
  v1::Frame frame;
  frame.mutable_go_away()->set_reason("the server is shutting down");
  frame.mutable_go_away()->set_drain_ms(static_cast<std::uint32_t>(drain.count()));
  SendFrame(frame);
  if (in_flight_ == 0) CloseAfterFlush();
}

void CommandSession::CloseAfterFlush() {
  if (close_after_flush_ || closed_) return;
  close_after_flush_ = true;
  // The peer gets until the last write plus the linger time to read and close its side.
  read_deadline_ = Clock::now() + shared_.options.write_timeout + kLinger;
  if (read_deadline_ < watchdog_.expiry()) watchdog_.cancel();
  resume_reading_.cancel();
  Flush();
}

void CommandSession::ForceClose() {
  if (closed_) return;
  closed_ = true;
  if (registered_) shared_.Remove();
  boost::system::error_code ec;
  socket_.close(ec);
  resume_reading_.cancel();
  watchdog_.cancel();
  // Commands still running stop at their next suspension; their responses have nowhere to go.
  const std::vector<Slot*> running(running_.begin(), running_.end());
  for (Slot* slot : running) slot->cancel.emit(asio::cancellation_type::terminal);
  EndParkedRunners();
}

void CommandSession::Flush() {
  if (write_pending_ || closed_) return;
  if (out_.empty()) {
    if (close_after_flush_) {
      // Everything is written: FIN now; close once the peer has closed too (or at the linger
      // deadline), so that unread input does not turn our close into a reset.
      boost::system::error_code ec;
      socket_.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
      if (peer_closed_) ForceClose();
    }
    return;
  }
  std::swap(out_, writing_);
  responses_in_write_ = std::exchange(unwritten_responses_, 0);
  write_pending_ = true;
  written_ = 0;
  WriteSome();
}

void CommandSession::WriteSome() {
  // Send right away (the socket is non-blocking): nearly every write completes here, with no
  // watchdog timer update. Only when the peer's window is full does the session wait for the
  // socket to take more.
  boost::system::error_code error;
  switch (WriteDirectly(socket_, writing_.data(), &written_, &error)) {
    case DirectWrite::kDone:
      OnWritten();
      return;
    case DirectWrite::kFailed:
      OnWriteFailed();
      return;
    case DirectWrite::kWouldBlock:
      break;
  }
  // write_timeout bounds each wait without progress, not the whole batch.
  write_deadline_ = Clock::now() + shared_.options.write_timeout;
  if (write_deadline_ < watchdog_.expiry()) watchdog_.cancel();
  socket_.async_wait(asio::socket_base::wait_write,
                     [self = shared_from_this()](const boost::system::error_code& ec) {
                       self->write_deadline_ = Clock::time_point::max();
                       if (ec) {
                         self->OnWriteFailed();
                       } else {
                         self->WriteSome();
                       }
                     });
}

void CommandSession::OnWriteFailed() {
  write_pending_ = false;
  write_deadline_ = Clock::time_point::max();
  ForceClose();
}

void CommandSession::OnWritten() {
  write_pending_ = false;
  write_deadline_ = Clock::time_point::max();
  writing_.Clear();
  // A command stops counting against max_in_flight once its response has been written.
  if (const std::uint32_t written = std::exchange(responses_in_write_, 0); written != 0) {
    OnResponsesWritten(written);
  }
  Flush();
}

Awaitable<void> CommandSession::Watchdog() {
  auto self = shared_from_this();
  while (!closed_) {
    auto next = std::min(read_deadline_, write_deadline_);
    if (!command_deadlines_.empty()) next = std::min(next, command_deadlines_.begin()->first);
    watchdog_.expires_at(next);
    co_await watchdog_.async_wait(kUse);
    if (closed_) break;
    const auto now = Clock::now();
    while (!command_deadlines_.empty() && command_deadlines_.begin()->first <= now) {
      Slot* expired = command_deadlines_.begin()->second;
      command_deadlines_.erase(command_deadlines_.begin());
      expired->deadline.reset();
      // The operation the handler awaits completes as cancelled; the router then answers
      // DEADLINE_EXCEEDED.
      expired->cancel.emit(asio::cancellation_type::terminal);
    }
    if (write_deadline_ <= now) {
      Log(LogLevel::kWarning,
          absl::StrCat("session ", id_, " (", peer_, "): no write progress within write_timeout=",
                       shared_.options.write_timeout.count(), "ms; closing"));
      // Reset rather than close: unsent responses would otherwise keep the socket (and its
      // buffer) alive in the kernel for as long as the peer keeps not reading.
      boost::system::error_code ignored;
      socket_.set_option(asio::socket_base::linger(true, 0), ignored);
      ForceClose();
      break;
    }
    if (read_deadline_ <= now && close_after_flush_) {
      ForceClose();  // Linger over.
      break;
    }
    if (read_deadline_ <= now && !close_after_flush_) {
      const char* reason = read_deadline_reason_;
      read_deadline_ = Clock::time_point::max();
      const auto& o = shared_.options;
      const auto limit = std::string_view(reason) == "hello_timeout"   ? o.hello_timeout
                         : std::string_view(reason) == "frame_timeout" ? o.frame_timeout
                                                                       : o.idle_timeout;
      SendError(v1::Error::TIMEOUT,
                absl::StrCat(std::string_view(reason) == "hello_timeout"   ? "no Hello"
                             : std::string_view(reason) == "frame_timeout" ? "incomplete frame"
                                                                           : "no frame",
                             " within ", reason, "=", limit.count(), "ms"),
                /*fatal=*/true);
    }
  }
}

void CommandSession::SetReadDeadline(Clock::time_point deadline, const char* reason) {
  read_deadline_ = deadline;
  read_deadline_reason_ = reason;
  if (deadline < watchdog_.expiry()) watchdog_.cancel();
}

void CommandSession::UpdateReadDeadline() {
  if (!hello_done_ || close_after_flush_ || closed_) return;
  if (reading_paused_) {
    SetReadDeadline(Clock::time_point::max(), "");
    return;
  }
  const auto now = Clock::now();
  if (decoder_.buffered() > 0) {
    if (frame_started_ == Clock::time_point::max()) frame_started_ = now;
    SetReadDeadline(frame_started_ + shared_.options.frame_timeout, "frame_timeout");
    return;
  }
  frame_started_ = Clock::time_point::max();
  if (in_flight_ > 0) {
    SetReadDeadline(Clock::time_point::max(), "");
  } else {
    SetReadDeadline(now + shared_.options.idle_timeout, "idle_timeout");
  }
}

}  // namespace cqrs::net::internal
