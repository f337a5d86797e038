/// @file
/// @brief ptk::async_recv: receive from any ptk channel with an asio completion token
///        (use_awaitable, a callback, use_future...).
///
/// The only IPC header that includes asio. The wait itself is ptk's (the reactor for
/// a pipe, the futex watcher for shared-memory channels); the completion runs on the
/// handler's associated executor, and the pending receive counts as outstanding work
/// so `io_context::run()` does not return under it. Cancelling through the handler's
/// cancellation slot completes it with channel_status::cancelled.
#pragma once

#include <ptk/config.hpp>
#include <ptk/ipc.hpp>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>

#include <memory>
#include <mutex>
#include <optional>
#include <utility>

namespace ptk {

namespace detail {

template <class Channel, class Handler>
class asio_recv_op : public std::enable_shared_from_this<asio_recv_op<Channel, Handler>> {
 public:
  using result = recv_result<typename Channel::value_type>;
  using executor = asio::associated_executor_t<Handler>;

  asio_recv_op(Channel& ch, Handler&& h)
      : ch_(&ch),
        handler_(std::move(h)),
        work_(asio::make_work_guard(asio::get_associated_executor(*handler_))) {}

  void start() {
    auto slot = asio::get_associated_cancellation_slot(*handler_);
    if (slot.is_connected()) {
      std::weak_ptr<asio_recv_op> weak = this->shared_from_this();
      slot.assign([weak](asio::cancellation_type) {
        if (auto self = weak.lock()) self->cancel();
      });
    }
    step();
  }

 private:
  // Tries to receive; completes, or arms a watch whose firing posts step() again.
  void step() {
    std::unique_lock lock(mutex_);
    if (done_) return;
    if (cancelled_) return complete(lock, channel_status::cancelled);
    auto r = ch_->try_recv();
    if (r.status() != channel_status::empty) return complete(lock, std::move(r));
    recv_wait w;
    if (!channel_access::arm(*ch_, w)) {  // something arrived while arming: go again
      lock.unlock();
      asio::post(work_.get_executor(), [self = this->shared_from_this()] { self->step(); });
      return;
    }
    wait_ = w;
    watching_ = true;
    id_ = start_watch(w, [self = this->shared_from_this()](bool) {
      // This runs on ptk's watcher thread. The step posted below may complete the
      // operation and let run() return while post() is still signalling the
      // io_context from here: holding work of our own until post() has returned
      // keeps the io_context alive (run() cannot return under it) until then.
      const auto hold = asio::make_work_guard(self->work_.get_executor());
      asio::post(hold.get_executor(), [self] {
        {
          const std::lock_guard relock(self->mutex_);
          self->watching_ = false;
          channel_access::disarm(*self->ch_);
        }
        self->step();
      });
    });
  }

  void cancel() {
    std::unique_lock lock(mutex_);
    cancelled_ = true;
    if (watching_) {
      const auto id = id_;
      const auto w = wait_;
      lock.unlock();
      cancel_watch(w, id);  // the watch fires (false), which posts step(), which completes
    }
  }

  void complete(std::unique_lock<std::mutex>& lock, result r) {
    done_ = true;
    auto h = std::move(*handler_);
    handler_.reset();
    asio::get_associated_cancellation_slot(h).clear();
    auto ex = work_.get_executor();
    lock.unlock();
    asio::post(ex, [h = std::move(h), r = std::move(r)]() mutable { std::move(h)(std::move(r)); });
    work_.reset();  // only now: dropping the last work first would stop an idle io_context
  }

  Channel* ch_;
  std::optional<Handler> handler_;
  asio::executor_work_guard<executor> work_;
  std::mutex mutex_;
  recv_wait wait_;
  std::uint64_t id_ = 0;
  bool watching_ = false;
  bool cancelled_ = false;
  bool done_ = false;
};

}  // namespace detail

/// @brief Receives the next message of `ch` asynchronously, completing `token` with a
///        ptk::recv_result (a message, or closed / peer_lost / cancelled).
///
/// Works with ptk::pipe, ptk::shm_ring and ptk::queue. The channel must outlive the
/// operation; at most one receive may be pending per channel handle.
/// @code
/// asio::awaitable<void> consume(ptk::queue<job>& q) {
///   for (;;) {
///     auto j = co_await ptk::async_recv(q, asio::use_awaitable);
///     if (!j) co_return;                     // closed, peer lost or cancelled
///     co_await handle(*j);
///   }
/// }
/// @endcode
/// @tparam Channel a ptk channel type.
/// @tparam CompletionToken an asio completion token for `void(recv_result<T>)`.
/// @param ch the channel.
/// @param token how to be told.
/// @return what the token makes of the operation.
template <class Channel, class CompletionToken>
auto async_recv(Channel& ch, CompletionToken&& token) {
  using result = recv_result<typename Channel::value_type>;
  return asio::async_initiate<CompletionToken, void(result)>(
      [](auto handler, Channel* c) {
        using handler_type = decltype(handler);
        std::make_shared<detail::asio_recv_op<Channel, handler_type>>(*c, std::move(handler))
            ->start();
      },
      token, &ch);
}

}  // namespace ptk
