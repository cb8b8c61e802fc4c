#include "cqrs/net/command_server.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>

#include "absl/strings/str_cat.h"
#include "command_session.h"
#include "cqrs/core/log.h"
#include "server_shared.h"
#include "socket_util.h"

namespace cqrs::net {

using internal::CommandSession;
using internal::ServerShared;
using tcp = asio::ip::tcp;

namespace {
constexpr auto kUse = asio::as_tuple(asio::use_awaitable);
}  // namespace

class CommandServer::Impl {
 public:
  Impl(const CommandRouter& router, CommandServerOptions options)
      : shared_(router, std::move(options)) {}

  ~Impl() { Stop(/*graceful=*/false); }

  absl::Status Start() {
    std::lock_guard lock(mutex_);
    if (started_) return absl::FailedPreconditionError("the command server was already started");
    const auto& options = shared_.options;
    const unsigned threads =
        options.threads != 0 ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    for (unsigned i = 0; i < threads; ++i) {
      contexts_.push_back(std::make_unique<asio::io_context>(1));
      guards_.emplace_back(contexts_.back()->get_executor());
    }
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(options.address, ec);
    if (ec) {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", options.address, "' is not an IP address: ", ec.message()));
    }
    acceptor_.emplace(*contexts_[0]);
    ec = internal::Listen(*acceptor_, tcp::endpoint(address, options.port));
    if (ec) {
      return absl::UnavailableError(absl::StrCat("cannot listen on ", options.address, ":",
                                                 options.port, ": ", ec.message()));
    }
    port_ = acceptor_->local_endpoint().port();
    asio::co_spawn(*contexts_[0], Accept(), asio::detached);
    running_threads_ = contexts_.size();
    for (auto& context : contexts_) {
      threads_.emplace_back([this, &context] {
        context->run();
        std::lock_guard lock(threads_mutex_);
        --running_threads_;
        threads_done_cv_.notify_all();
      });
    }
    started_ = true;
    Log(LogLevel::kInfo, absl::StrCat("command server listening on ", options.address, ":",
                                      port_.load(), " with ", threads, " threads"));
    return absl::OkStatus();
  }

  void Shutdown() {
    {
      std::unique_lock lock(mutex_);
      if (!started_) return;
      if (stopping_) {
        stopped_cv_.wait(lock, [this] { return stopped_; });
        return;
      }
      stopping_ = true;
    }
    {
      // Under the lock that Add takes: no session joins after the snapshot below.
      std::lock_guard lock(shared_.mutex);
      shared_.shutting_down = true;
    }
    asio::post(*contexts_[0], [this] {
      boost::system::error_code ec;
      acceptor_->close(ec);
      if (signals_) signals_->cancel(ec);
    });
    const auto drain = shared_.options.shutdown_drain;
    for (auto& session : LiveSessions()) {
      asio::post(session->executor(), [session, drain] { session->GoAway(drain); });
    }
    const auto wait_for = [this](auto done, std::chrono::steady_clock::duration limit) {
      std::unique_lock lock(shared_.mutex);
      return shared_.changed.wait_for(lock, limit, [&] { return done(); });
    };
    if (!wait_for([this] { return shared_.open == 0; }, drain)) {
      Log(LogLevel::kWarning, "shutdown drain expired; closing the remaining connections");
      for (auto& session : LiveSessions()) {
        asio::post(session->executor(), [session] { session->ForceClose(); });
      }
    }
    // Closed sessions end once their cancelled commands have unwound.
    const bool all_ended = wait_for([this] { return shared_.alive == 0; }, kStopGrace);
    if (!all_ended) Log(LogLevel::kWarning, "sessions still running at shutdown; stopping anyway");
    Stop(/*graceful=*/all_ended);
  }

  void Wait() {
    std::unique_lock lock(mutex_);
    stopped_cv_.wait(lock, [this] { return stopped_ || !started_; });
  }

  absl::Status Run() {
    if (auto status = Start(); !status.ok()) return status;
    signals_.emplace(*contexts_[0], SIGINT, SIGTERM);
    signals_->async_wait([this](const boost::system::error_code& ec, int signal) {
      if (ec) return;  // Cancelled by Shutdown.
      Log(LogLevel::kInfo, absl::StrCat("signal ", signal, ": shutting down"));
      std::lock_guard lock(mutex_);
      signalled_ = true;
      stopped_cv_.notify_all();
    });
    {
      std::unique_lock lock(mutex_);
      stopped_cv_.wait(lock, [this] { return signalled_ || stopping_; });
    }
    Shutdown();
    return absl::OkStatus();
  }

  std::uint16_t port() const { return port_.load(); }
  const CommandServerOptions& options() const { return shared_.options; }

  Awaitable<v1::CommandResponseEnvelope> Execute(const v1::CommandEnvelope& command,
                                                 const std::string& principal) {
    bool serving = false;
    {
      std::lock_guard lock(mutex_);
      serving = started_ && !stopping_;
    }
    {
      std::lock_guard lock(shared_.mutex);
      serving = serving && !shared_.shutting_down;
    }
    CommandProcessor::Response bytes;
    if (!serving) {
      bytes = shared_.processor.Refuse(
          command, absl::UnavailableError("the command server is not serving (shutting down)"));
    } else {
      shared_.commands.Add();
      CommandProcessor::Admission admission = shared_.processor.Admit(command);
      google::protobuf::Arena arena;
      bytes = co_await shared_.processor.Run(admission, command, &arena, principal);
    }
    v1::CommandResponseEnvelope response;
    response.ParseFromString(*bytes);
    co_return response;
  }

  CommandServerStats stats() {
    CommandServerStats s;
    s.connections_accepted = shared_.connections_accepted.load();
    s.connections_refused = shared_.connections_refused.load();
    s.commands = shared_.commands.Sum();
    s.protocol_errors = shared_.protocol_errors.load();
    std::lock_guard lock(shared_.mutex);
    s.connections_open = shared_.open;
    return s;
  }

 private:
  std::vector<std::shared_ptr<CommandSession>> LiveSessions() {
    std::vector<std::shared_ptr<CommandSession>> live;
    std::lock_guard lock(shared_.mutex);
    for (const auto& weak : shared_.sessions) {
      if (auto session = weak.lock()) live.push_back(std::move(session));
    }
    return live;
  }

  Awaitable<void> Accept() {
    std::uint64_t next = 0;
    asio::steady_timer pause(*contexts_[0]);
    while (acceptor_->is_open()) {
      asio::io_context& context = *contexts_[next % contexts_.size()];
      auto [ec, socket] = co_await acceptor_->async_accept(context, kUse);
      if (!acceptor_->is_open() || ec == asio::error::operation_aborted) break;
      if (ec) {
        // Typically out of file descriptors: back off instead of spinning.
        Log(LogLevel::kWarning, absl::StrCat("accept failed: ", ec.message()));
        pause.expires_after(std::chrono::milliseconds(100));
        co_await pause.async_wait(kUse);
        continue;
      }
      ++next;
      shared_.connections_accepted.fetch_add(1, std::memory_order_relaxed);
      bool full;
      {
        std::lock_guard lock(shared_.mutex);
        full = shared_.open >= shared_.options.max_connections;
      }
      if (full) {
        shared_.connections_refused.fetch_add(1, std::memory_order_relaxed);
        auto refused = std::make_shared<tcp::socket>(std::move(socket));
        asio::post(context, [refused, this] { Refuse(refused, shared_.options); });
        continue;
      }
      auto session =
          std::make_shared<CommandSession>(std::move(socket), shared_, absl::StrCat("s", next));
      // Registered before Add publishes it to Shutdown's snapshot (another thread).
      session->MarkRegistered(true);
      if (!shared_.Add(session)) {
        session->MarkRegistered(false);
        session->ForceClose();  // Shutting down: it would miss the GoAway.
        continue;
      }
      asio::co_spawn(
          context, [session] { return session->Run(); },
          [](std::exception_ptr e) {
            if (!e) return;
            try {
              std::rethrow_exception(e);
            } catch (const std::exception& x) {
              Log(LogLevel::kError, absl::StrCat("session failed: ", x.what()));
            }
          });
    }
  }

  // Sends Error{TOO_MANY_CONNECTIONS} and closes. Callbacks share the socket, so a late timer
  // never touches a freed one. Runs on the socket's executor.
  static void Refuse(const std::shared_ptr<tcp::socket>& socket,
                     const CommandServerOptions& options) {
    Log(LogLevel::kWarning, absl::StrCat("refusing a connection: max_connections=",
                                         options.max_connections, " reached"));
    v1::Frame frame;
    frame.mutable_error()->set_code(v1::Error::TOO_MANY_CONNECTIONS);
    frame.mutable_error()->set_message(absl::StrCat(
        "the server is at max_connections=", options.max_connections, "; retry later"));
    frame.mutable_error()->set_fatal(true);
    auto encoder = std::make_shared<FrameEncoder>();
    if (!encoder->Append(frame).ok()) return;
    auto timer =
        std::make_shared<asio::steady_timer>(socket->get_executor(), options.write_timeout);
    timer->async_wait([socket](const boost::system::error_code& ec) {
      boost::system::error_code ignored;
      if (!ec) socket->close(ignored);
    });
    asio::async_write(*socket, asio::buffer(encoder->data().data(), encoder->size()),
                      [socket, encoder, timer](const boost::system::error_code&, std::size_t) {
                        timer->cancel();
                        boost::system::error_code ignored;
                        socket->shutdown(tcp::socket::shutdown_both, ignored);
                        socket->close(ignored);
                      });
  }

  // Lets the event loops run out of work (graceful) or stops them, then joins the threads.
  void Stop(bool graceful) {
    std::lock_guard lock(mutex_);
    if (!started_ || stopped_) return;
    for (auto& guard : guards_) guard.reset();
    if (graceful) {
      std::unique_lock threads_lock(threads_mutex_);
      if (!threads_done_cv_.wait_for(threads_lock, kStopGrace,
                                     [this] { return running_threads_ == 0; })) {
        Log(LogLevel::kWarning, "event loops still busy at shutdown; stopping them");
        graceful = false;
      }
    }
    if (!graceful) {
      for (auto& context : contexts_) context->stop();
    }
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    stopped_ = true;
    stopped_cv_.notify_all();
  }

  static constexpr std::chrono::seconds kStopGrace{2};

  ServerShared shared_;
  std::mutex mutex_;
  std::condition_variable stopped_cv_;
  bool started_ = false;
  bool stopping_ = false;
  bool stopped_ = false;
  std::vector<std::unique_ptr<asio::io_context>> contexts_;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
  std::vector<std::thread> threads_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<asio::signal_set> signals_;
  bool signalled_ = false;
  std::atomic<std::uint16_t> port_{0};
  std::mutex threads_mutex_;
  std::condition_variable threads_done_cv_;
  std::size_t running_threads_ = 0;
};

CommandServer::CommandServer(const CommandRouter& router, CommandServerOptions options)
    : impl_(std::make_shared<Impl>(router, std::move(options))) {}

CommandServer::~CommandServer() { impl_->Shutdown(); }

absl::Status CommandServer::Start() { return impl_->Start(); }
std::uint16_t CommandServer::port() const { return impl_->port(); }
void CommandServer::Shutdown() { impl_->Shutdown(); }
void CommandServer::Wait() { impl_->Wait(); }
absl::Status CommandServer::Run() { return impl_->Run(); }
Awaitable<v1::CommandResponseEnvelope> CommandServer::Execute(const v1::CommandEnvelope& command,
                                                              const std::string& principal) {
  return impl_->Execute(command, principal);
}

CommandServerStats CommandServer::stats() const { return impl_->stats(); }
const CommandServerOptions& CommandServer::options() const { return impl_->options(); }

}  // namespace cqrs::net
