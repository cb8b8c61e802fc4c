#include "cqrs/net/command_client.h"

#include <algorithm>
#include <optional>
#include <random>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "command_encode.h"
#include "cqrs/core/log.h"
#include "cqrs/core/time_util.h"
#include "socket_util.h"

namespace cqrs::net {
namespace {

using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using Result = absl::StatusOr<v1::CommandResponseEnvelope>;
using Handler = asio::any_completion_handler<void(Result)>;
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t kReadChunk = 64 * 1024;

std::string RandomUuid(std::mt19937_64& random) {
  const std::uint64_t hi = random();
  const std::uint64_t lo = random();
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", hi >> 32, (hi >> 16) & 0xffff, hi & 0x0fff,
                         ((lo >> 48) & 0x3fff) | 0x8000, lo & 0xffffffffffff);
}

}  // namespace

// A command from Send to its answer: made once by Send, then owned by the pending table, which
// is keyed by a view of `id` (no copy of the id per command).
struct CommandClient::Pending {
  std::string id;
  std::string bytes;  // The serialized CommandEnvelope.
  std::uint64_t seq = 0;
  Clock::time_point deadline;
  // Optional, to be emplaced: Asio 1.26's any_completion_handler move assignment recurses.
  std::optional<Handler> handler;
  bool sent = false;  // On the current connection.
  bool ever_sent = false;
};

struct CommandClient::Impl : std::enable_shared_from_this<Impl> {
  // Pending commands by deadline (then by age). An entry is here exactly while its command is
  // pending, so holding its key (not the pointer) is how a cancellation handler tells whether
  // its command is still pending.
  struct Due {
    Clock::time_point when;
    std::uint64_t seq;
    Pending* pending;
    bool operator<(const Due& other) const {
      return when != other.when ? when < other.when : seq < other.seq;
    }
  };
  using PendingTable = absl::flat_hash_map<absl::string_view, std::unique_ptr<Pending>>;

  Impl(asio::any_io_executor executor, CommandClientOptions opts)
      : ex(std::move(executor)),
        options(std::move(opts)),
        socket(ex),
        out({.max_frame_bytes = options.max_frame_bytes}),
        writing({.max_frame_bytes = options.max_frame_bytes}),
        deadline_timer(ex),
        backoff_timer(ex),
        random(std::random_device{}()) {
    deadline_timer.expires_at(Clock::time_point::max());
  }

  std::string Endpoint() const { return absl::StrCat(options.host, ":", options.port); }

  // --- completion -----------------------------------------------------------------------------

  // Completes a Send. `now`: resume the sender right here (the reader delivering a response
  // does so: one trip through the event loop less per command); otherwise the completion is
  // posted, e.g. when failing many commands while iterating `pending`.
  void Complete(PendingTable::iterator it, Result result, bool now = false) {
    Pending& p = *it->second;
    std::optional<Handler> handler = std::move(p.handler);
    deadlines.erase(Due{p.deadline, p.seq, &p});
    pending.erase(it);
    if (!handler || !*handler) return;
    asio::get_associated_cancellation_slot(*handler).clear();
    if (now) {
      std::move (*handler)(std::move(result));
      return;
    }
    asio::post(ex, [handler = std::move(*handler), result = std::move(result)]() mutable {
      std::move(handler)(std::move(result));
    });
  }

  void FailAll(const absl::Status& status) {
    while (!pending.empty()) Complete(pending.begin(), status);
  }

  void OnResponse(v1::CommandResponseEnvelope& response) {
    const auto it = pending.find(response.command_id());
    if (it == pending.end()) return;  // Cancelled or timed out meanwhile.
    if (draining && response.status() == v1::CommandResponseEnvelope::UNAVAILABLE) {
      // Refused by a server that is going away: not run; re-send after reconnecting.
      it->second->sent = false;
      return;
    }
    Complete(it, std::move(response), /*now=*/true);
  }

  // --- sending --------------------------------------------------------------------------------

  // Starts writing what is queued unless a write is in progress (then its completion does) or
  // writes are held (whoever holds them flushes when it lets go). The socket is non-blocking:
  // the bytes are sent right here while it takes them, and only a full socket buffer waits
  // (asynchronously) for room.
  void Flush() {
    if (write_pending || held > 0 || !connected || out.empty()) return;
    std::swap(out, writing);
    write_pending = true;
    written = 0;
    WriteSome(connection);
  }

  void WriteSome(std::uint64_t generation) {
    boost::system::error_code error;
    switch (internal::WriteDirectly(socket, writing.data(), &written, &error)) {
      case internal::DirectWrite::kDone:
      case internal::DirectWrite::kFailed:
        OnWriteEnd(generation, error);
        return;
      case internal::DirectWrite::kWouldBlock:
        break;
    }
    socket.async_wait(tcp::socket::wait_write,
                      [self = shared_from_this(), generation](const boost::system::error_code& ec) {
                        if (ec || generation != self->connection) {
                          self->OnWriteEnd(generation, ec ? ec : asio::error::operation_aborted);
                        } else {
                          self->WriteSome(generation);
                        }
                      });
  }

  void OnWriteEnd(std::uint64_t generation, const boost::system::error_code& ec) {
    writing.Clear();
    if (ec && generation == connection) {
      write_pending = false;
      boost::system::error_code ignored;
      socket.close(ignored);  // The reader sees it and reconnects.
      return;
    }
    if (ec) {
      write_pending = false;
      Flush();  // A newer connection's.
      return;
    }
    // Sent, without a trip through the event loop (a posted flush would cost every command
    // another epoll_wait): what was queued meanwhile goes now.
    write_pending = false;
    Flush();
  }

  // Queues a command. Commands leave in as few writes as possible without waiting for anyone:
  // those that senders send while the reader delivers a batch of responses leave together after
  // the batch (no trip through the event loop: the common case of senders resumed by their
  // responses); any other command leaves at once, and those queued after it during the same
  // turn of the event loop leave together when the turn ends.
  void Transmit(Pending& p) {
    if (!out.AppendSerialized(v1::Frame::kCommand, p.bytes).ok()) return;  // Checked in Send.
    if (p.ever_sent) ++resent;
    p.sent = p.ever_sent = true;
    if (held > 0) return;
    Flush();
    ++held;
    asio::post(ex, [self = shared_from_this()] {
      --self->held;
      self->Flush();
    });
  }

  void TransmitUnsent() {
    std::vector<Pending*> unsent;
    for (auto& [id, p] : pending) {
      if (!p->sent) unsent.push_back(p.get());
    }
    std::sort(unsent.begin(), unsent.end(),
              [](const Pending* a, const Pending* b) { return a->seq < b->seq; });
    ++held;  // All of them in one write.
    for (Pending* p : unsent) Transmit(*p);
    --held;
    Flush();
  }

  void ArmDeadline(Clock::time_point deadline) {
    if (deadline < deadline_timer.expiry()) deadline_timer.cancel();
  }

  // --- coroutines -----------------------------------------------------------------------------

  // Coroutines keep the client alive with a local reference taken before their first suspension
  // (not a by-value parameter: GCC 12 can destroy those twice).
  Awaitable<void> Maintain() {
    auto self = shared_from_this();
    auto delay = std::chrono::duration<double, std::milli>(self->options.backoff.initial);
    while (!self->closed) {
      absl::Status status = co_await self->Connect();
      if (status.ok()) {
        const auto connected_at = Clock::now();
        co_await self->Serve();
        if (self->closed) break;
        // A connection that lived a while resets the backoff and reconnects at once; one that
        // the server dropped right away counts as a failed attempt (no tight reconnect loop).
        if (Clock::now() - connected_at >= self->options.backoff.initial) {
          delay = self->options.backoff.initial;
          continue;
        }
        status = absl::UnavailableError(
            absl::StrCat(self->Endpoint(), " closed the connection right after the handshake"));
      }
      if (self->closed) break;
      Log(LogLevel::kInfo, absl::StrCat("command client: ", status.message()));
      std::uniform_real_distribution<double> spread(-self->options.backoff.jitter,
                                                    self->options.backoff.jitter);
      self->backoff_timer.expires_after(
          std::chrono::duration_cast<Clock::duration>(delay * (1.0 + spread(self->random))));
      co_await self->backoff_timer.async_wait(kUse);
      delay = std::min(delay * self->options.backoff.multiplier,
                       std::chrono::duration<double, std::milli>(self->options.backoff.max));
    }
  }

  Awaitable<absl::Status> Connect() {
    tcp::resolver resolver(ex);
    auto [resolve_error, endpoints] =
        co_await resolver.async_resolve(options.host, std::to_string(options.port), kUse);
    if (resolve_error) {
      co_return absl::UnavailableError(
          absl::StrCat("cannot resolve ", options.host, ": ", resolve_error.message()));
    }
    socket = tcp::socket(ex);
    // One deadline for connect + Hello: on expiry the socket closes and the step in progress
    // fails.
    asio::steady_timer timeout(ex);
    // Shared with the timer's handler, which may run after this coroutine has moved on.
    auto fired = std::make_shared<bool>(false);
    auto armed = std::make_shared<bool>(true);
    timeout.expires_after(options.connect_timeout);
    timeout.async_wait([this, fired, armed](const boost::system::error_code& ec) {
      if (ec || !*armed) return;
      *fired = true;
      boost::system::error_code ignored;
      socket.close(ignored);
    });
    const absl::Status status = co_await Handshake(endpoints);
    *armed = false;
    timeout.cancel();
    if (*fired) {
      co_return absl::UnavailableError(absl::StrCat("connecting to ", Endpoint(), " took over ",
                                                    options.connect_timeout.count(), "ms"));
    }
    co_return status;
  }

  Awaitable<absl::Status> Handshake(const tcp::resolver::results_type& endpoints) {
    auto [connect_error, endpoint] = co_await asio::async_connect(socket, endpoints, kUse);
    if (connect_error) {
      co_return absl::UnavailableError(
          absl::StrCat("cannot connect to ", Endpoint(), ": ", connect_error.message()));
    }
    boost::system::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    socket.non_blocking(true, ignored);  // For Flush's direct writes.
    v1::Frame hello;
    hello.mutable_hello()->set_protocol_version(1);
    hello.mutable_hello()->set_client_name(options.client_name);
    hello.mutable_hello()->set_auth_token(options.auth_token);
    FrameEncoder encoder;
    if (auto status = encoder.Append(hello); !status.ok()) co_return status;
    auto [write_error, written] = co_await asio::async_write(
        socket, asio::buffer(encoder.data().data(), encoder.size()), kUse);
    if (write_error) {
      co_return absl::UnavailableError(
          absl::StrCat("sending Hello to ", Endpoint(), ": ", write_error.message()));
    }
    decoder = FrameDecoder({.max_frame_bytes = options.max_frame_bytes});
    v1::Frame frame;
    for (;;) {
      const DecodeResult result = decoder.Next(frame);
      if (result == DecodeResult::kFrame) break;
      if (result != DecodeResult::kNeedMore) {
        co_return absl::UnavailableError(
            absl::StrCat("bad frame from ", Endpoint(), ": ", decoder.error().message()));
      }
      const auto space = decoder.Prepare(kReadChunk);
      auto [read_error, n] =
          co_await socket.async_read_some(asio::buffer(space.data(), space.size()), kUse);
      if (read_error) {
        co_return absl::UnavailableError(
            absl::StrCat("reading HelloAck from ", Endpoint(), ": ", read_error.message()));
      }
      decoder.Commit(n);
    }
    if (frame.has_error()) {
      co_return absl::UnavailableError(absl::StrCat(
          Endpoint(), " refused the connection: ", v1::Error::Code_Name(frame.error().code()), ": ",
          frame.error().message()));
    }
    if (!frame.has_hello_ack()) {
      co_return absl::UnavailableError(
          absl::StrCat(Endpoint(), " did not answer Hello with HelloAck"));
    }
    co_return absl::OkStatus();
  }

  // Runs one established connection until it ends.
  Awaitable<void> Serve() {
    auto self = shared_from_this();
    connected = true;
    draining = false;
    ++connects;
    ++connection;
    out.Clear();
    TransmitUnsent();
    v1::Frame frame;
    // Responses are parsed straight into this message (by the decoder's response parser) and
    // moved on to their senders: what is left behind is empty, ready for the next one.
    v1::CommandResponseEnvelope response;
    bool alive = true;
    while (alive && !closed) {
      // Senders resumed by these responses send their next commands at once; they leave in one
      // write after the batch.
      ++held;
      for (;;) {
        bool is_response = false;
        const DecodeResult result = decoder.Next(frame, response, is_response);
        if (result == DecodeResult::kNeedMore) break;
        if (result != DecodeResult::kFrame) {
          Log(LogLevel::kWarning, absl::StrCat("command client: bad frame from ", Endpoint(), ": ",
                                               decoder.error().message()));
          alive = false;
          break;
        }
        if (is_response) {
          OnResponse(response);
          continue;
        }
        alive = OnFrame(frame);
        if (!alive) break;
      }
      --held;
      if (!alive) break;
      Flush();
      const auto space = decoder.Prepare(kReadChunk);
      auto [ec, n] =
          co_await socket.async_read_some(asio::buffer(space.data(), space.size()), kUse);
      if (ec) break;
      decoder.Commit(n);
    }
    connected = false;
    boost::system::error_code ignored;
    socket.close(ignored);
    for (auto& [id, p] : pending) p->sent = false;
  }

  bool OnFrame(v1::Frame& frame) {
    switch (frame.kind_case()) {
      case v1::Frame::kResponse:
        OnResponse(*frame.mutable_response());
        return true;
      case v1::Frame::kGoAway:
        draining = true;
        Log(LogLevel::kInfo, absl::StrCat("command client: ", Endpoint(),
                                          " is going away: ", frame.go_away().reason()));
        return true;
      case v1::Frame::kPing: {
        v1::Frame pong;
        pong.mutable_pong()->set_nonce(frame.ping().nonce());
        if (out.Append(pong).ok()) Flush();
        return true;
      }
      case v1::Frame::kError:
        Log(frame.error().fatal() ? LogLevel::kWarning : LogLevel::kInfo,
            absl::StrCat("command client: ", Endpoint(), " reported ",
                         v1::Error::Code_Name(frame.error().code()), ": ",
                         frame.error().message()));
        return !frame.error().fatal();
      default:
        return true;
    }
  }

  Awaitable<void> Deadlines() {
    auto self = shared_from_this();
    while (!self->closed) {
      self->deadline_timer.expires_at(self->deadlines.empty() ? Clock::time_point::max()
                                                              : self->deadlines.begin()->when);
      co_await self->deadline_timer.async_wait(kUse);
      const auto now = Clock::now();
      while (!self->deadlines.empty() && self->deadlines.begin()->when <= now) {
        const auto it = self->pending.find(self->deadlines.begin()->pending->id);
        self->Complete(
            it, self->connected
                    ? absl::DeadlineExceededError("no response before the deadline")
                    : absl::UnavailableError(absl::StrCat("not connected to ", self->Endpoint(),
                                                          " before the deadline")));
      }
    }
  }

  void Close() {
    if (closed) return;
    closed = true;
    FailAll(absl::CancelledError("the command client was closed"));
    boost::system::error_code ignored;
    socket.close(ignored);
    deadline_timer.cancel();
    backoff_timer.cancel();
  }

  asio::any_io_executor ex;
  const CommandClientOptions options;
  tcp::socket socket;
  FrameDecoder decoder;
  FrameEncoder out;
  FrameEncoder writing;
  asio::steady_timer deadline_timer;
  asio::steady_timer backoff_timer;
  std::mt19937_64 random;
  PendingTable pending;
  absl::btree_set<Due> deadlines;
  std::uint64_t next_seq = 0;
  std::uint64_t connection = 0;
  std::uint64_t connects = 0;
  std::uint64_t resent = 0;
  bool connected = false;
  bool draining = false;
  bool closed = false;
  bool write_pending = false;
  // While positive, Flush waits: the reader is delivering a batch of responses, or commands are
  // being queued to leave together (see Transmit).
  int held = 0;
  std::size_t written = 0;  // Bytes of `writing` already sent.
};

std::shared_ptr<CommandClient> CommandClient::Create(asio::any_io_executor executor,
                                                     CommandClientOptions options) {
  auto impl = std::make_shared<Impl>(executor, std::move(options));
  asio::co_spawn(executor, impl->Maintain(), asio::detached);
  asio::co_spawn(executor, impl->Deadlines(), asio::detached);
  return std::shared_ptr<CommandClient>(new CommandClient(std::move(impl)));
}

CommandClient::CommandClient(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

CommandClient::~CommandClient() {
  asio::post(impl_->ex, [impl = impl_] { impl->Close(); });
}

void CommandClient::Close() { impl_->Close(); }
bool CommandClient::connected() const { return impl_->connected; }
asio::any_io_executor CommandClient::get_executor() const { return impl_->ex; }

CommandClientStats CommandClient::stats() const {
  return {.connects = impl_->connects, .resent = impl_->resent, .pending = impl_->pending.size()};
}

Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> CommandClient::Send(
    const google::protobuf::Message& command, SendOptions options) {
  if (!options.metadata.empty()) {
    // Rare: the map goes through the envelope message.
    v1::CommandEnvelope envelope;
    envelope.set_id(options.id.empty() ? RandomUuid(impl_->random) : std::move(options.id));
    envelope.set_subject(std::move(options.subject));
    envelope.set_type(command.GetDescriptor()->full_name());
    envelope.mutable_payload()->PackFrom(command);
    envelope.set_service_id(impl_->options.client_name);
    envelope.set_correlation_id(std::move(options.correlation_id));
    envelope.set_causation_id(std::move(options.causation_id));
    envelope.set_transaction_id(std::move(options.transaction_id));
    for (auto& [key, value] : options.metadata) {
      (*envelope.mutable_metadata())[std::move(key)] = std::move(value);
    }
    return SendEnvelope(std::move(envelope), options.timeout);
  }
  // The envelope is written straight to bytes: the same bytes as above, without the message.
  // Not a coroutine: the command is encoded now, so the caller's `command` need not outlive
  // the awaitable; the coroutine below takes only trivially destructible parameters (GCC 12
  // miscompiles the destruction of some by-value coroutine parameters).
  const std::chrono::milliseconds wait = options.timeout.value_or(impl_->options.default_timeout);
  auto outgoing = std::make_unique<Pending>();
  outgoing->id = options.id.empty() ? RandomUuid(impl_->random) : std::move(options.id);
  const absl::Time now = Now();
  internal::CommandFields fields{.id = outgoing->id,
                                 .timestamp = ToTimestampParts(now),
                                 .service_id = impl_->options.client_name,
                                 .transaction_id = options.transaction_id,
                                 .type = command.GetDescriptor()->full_name(),
                                 .subject = options.subject,
                                 .payload = &command,
                                 .correlation_id = options.correlation_id,
                                 .causation_id = options.causation_id};
  // Timeouts beyond a year are as good as none (and send no deadline).
  if (wait < std::chrono::hours(24 * 365)) {
    fields.deadline = ToTimestampParts(now + absl::FromChrono(wait));
  }
  outgoing->bytes = internal::EncodeCommand(fields);
  return Enqueue(impl_.get(), outgoing.release(), wait);
}

Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> CommandClient::SendEnvelope(
    v1::CommandEnvelope envelope, std::optional<std::chrono::milliseconds> timeout) {
  // Not a coroutine: the envelope moves to the heap and the coroutine below takes only
  // trivially destructible parameters (GCC 12 miscompiles the destruction of some by-value
  // coroutine parameters).
  return Transmit(impl_.get(), new v1::CommandEnvelope(std::move(envelope)),
                  timeout.value_or(impl_->options.default_timeout));
}

Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> CommandClient::Transmit(
    Impl* raw_impl, v1::CommandEnvelope* raw_envelope, std::chrono::milliseconds wait) {
  std::unique_ptr<v1::CommandEnvelope> owned(raw_envelope);
  v1::CommandEnvelope& envelope = *owned;
  if (raw_impl->closed) co_return absl::CancelledError("the command client was closed");
  if (envelope.id().empty()) co_return absl::InvalidArgumentError("the command has no id");
  if (!envelope.has_timestamp()) SetTimestamp(Now(), *envelope.mutable_timestamp());
  if (wait < std::chrono::hours(24 * 365)) {
    SetTimestamp(Now() + absl::FromChrono(wait), *envelope.mutable_deadline());
  }
  auto outgoing = std::make_unique<Pending>();
  outgoing->id = envelope.id();
  outgoing->bytes = envelope.SerializeAsString();
  co_return co_await Enqueue(raw_impl, outgoing.release(), wait);
}

Awaitable<absl::StatusOr<v1::CommandResponseEnvelope>> CommandClient::Enqueue(
    Impl* raw_impl, Pending* raw_pending, std::chrono::milliseconds wait) {
  std::unique_ptr<Pending> owned(raw_pending);
  std::shared_ptr<Impl> impl = raw_impl->shared_from_this();
  if (impl->closed) co_return absl::CancelledError("the command client was closed");
  if (impl->pending.contains(owned->id)) {
    co_return absl::InvalidArgumentError(
        absl::StrCat("a command with id ", owned->id, " is already pending"));
  }
  if (impl->pending.size() >= impl->options.max_pending) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat("max_pending=", impl->options.max_pending, " commands are already waiting"));
  }
  if (owned->bytes.size() + 16 > impl->options.max_frame_bytes) {
    co_return absl::InvalidArgumentError(
        absl::StrCat("the command of ", owned->bytes.size(),
                     " bytes exceeds max_frame_bytes=", impl->options.max_frame_bytes));
  }
  // The initiation captures only references and raw pointers: GCC 12 may destroy temporaries of
  // a co_await expression twice, which would corrupt a captured shared_ptr's count.
  Impl* const raw = impl.get();
  co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(Result)>(
      [raw, &owned, &wait](auto handler) {
        Impl* const impl = raw;
        Pending& p = *owned;
        // Timeouts beyond a year are as good as none (and cannot overflow the clock).
        p.deadline =
            wait < std::chrono::hours(24 * 365) ? Clock::now() + wait : Clock::time_point::max();
        p.seq = impl->next_seq++;
        p.handler.emplace(std::move(handler));
        const Impl::Due due{p.deadline, p.seq, &p};
        impl->pending.emplace(absl::string_view(p.id), std::move(owned));
        impl->deadlines.insert(due);
        // The handler's own slot (any_completion_handler forwards the caller's cancellation to
        // it), so that nothing is left installed on the caller's slot after completion. The
        // command is still pending exactly while its deadline entry is there.
        auto slot = asio::get_associated_cancellation_slot(*p.handler);
        if (slot.is_connected()) {
          slot.assign([weak = impl->weak_from_this(), due](asio::cancellation_type) {
            auto impl = weak.lock();
            if (!impl || !impl->deadlines.contains(due)) return;
            impl->Complete(impl->pending.find(due.pending->id),
                           absl::CancelledError("the Send was cancelled"));
          });
        }
        if (impl->connected && !impl->draining) impl->Transmit(p);
        impl->ArmDeadline(p.deadline);
      },
      asio::use_awaitable);
}

}  // namespace cqrs::net
