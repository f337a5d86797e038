/// @file
/// @brief `co_await ch.async_recv()`: receive from any ptk channel inside a coroutine
///        with no thread blocked per channel.
///
/// A pipe's read descriptor is watched by ptk's reactor (epoll); shared-memory channels are
/// watched by ptk's futex watcher, one thread waiting on up to 127 channels at once
/// with futex_waitv. The coroutine resumes on that shared thread: keep the code after
/// the `co_await` short, or `co_await pool.schedule()` first. Included by every
/// channel header; asio users see ptk/ipc_asio.hpp.
///
/// The watcher and reactor threads belong to the process that started them: a child
/// made with a bare fork() (which copies only the calling thread) must not use
/// asynchronous receives; children started with ptk::spawn are new programs and can.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/detail/futex_watcher.hpp>
#include <ptk/detail/reactor.hpp>
#include <ptk/ipc/channel.hpp>

#include <sys/epoll.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <stop_token>

namespace ptk::detail {

struct channel_access {
  template <class Channel>
  static bool arm(Channel& ch, recv_wait& w) {
    return ch.arm_recv(w);
  }
  template <class Channel>
  static void disarm(Channel& ch) noexcept {
    ch.disarm_recv();
  }
};

/// Starts watching what `w` names; `on_ready(bool fired)` runs once on a ptk thread.
/// Returns the id to cancel it with cancel_watch().
template <class F>
std::uint64_t start_watch(const recv_wait& w, F on_ready) {
  if (w.fd >= 0) return reactor::instance().watch(w.fd, EPOLLIN | EPOLLRDHUP, std::move(on_ready));
  return futex_watcher::instance().watch(*w.word, w.expected, std::move(on_ready));
}
inline void cancel_watch(const recv_wait& w, std::uint64_t id) {
  if (w.fd >= 0) {
    reactor::instance().cancel(id);
  } else {
    futex_watcher::instance().cancel(id);
  }
}

/// Registers the waiting coroutine with the reactor or the futex watcher and
/// resumes it when the channel may have something (or its stop token fires).
template <class Channel>
class recv_readiness {
 public:
  explicit recv_readiness(Channel& ch) noexcept : ch_(&ch) {}
  /// Moves an awaitable that has not been awaited yet.
  recv_readiness(recv_readiness&& o) noexcept : ch_(o.ch_) {}
  recv_readiness(const recv_readiness&) = delete;
  recv_readiness& operator=(const recv_readiness&) = delete;
  ~recv_readiness() = default;

  bool await_ready() const noexcept { return false; }

  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    const std::stop_token& token = *stop_token_of(h);
    if (token.stop_requested()) return false;
    recv_wait w;
    if (!channel_access::arm(*ch_, w)) return false;  // something arrived while arming
    armed_ = true;
    handle_ = h;
    auto on_ready = [this](bool) {
      if (state_.exchange(completed, std::memory_order_acq_rel) == registered) handle_.resume();
    };
    wait_ = w;
    id_ = start_watch(w, on_ready);
    on_stop_.emplace(token, canceller{id_, wait_});
    return state_.exchange(registered, std::memory_order_acq_rel) != completed;
  }

  void await_resume() noexcept {
    on_stop_.reset();
    if (armed_) channel_access::disarm(*ch_);
  }

 private:
  struct canceller {
    std::uint64_t id;
    recv_wait wait;
    void operator()() const noexcept {
      try {
        cancel_watch(wait, id);
      } catch (...) {  // allocation failure: the wait ends at the next tick
      }
    }
  };
  enum : std::uint8_t { idle, registered, completed };

  Channel* ch_;
  std::coroutine_handle<> handle_;
  std::uint64_t id_ = 0;
  recv_wait wait_;
  bool armed_ = false;
  std::atomic<std::uint8_t> state_{idle};
  std::optional<std::stop_callback<canceller>> on_stop_;
};

template <class Channel>
task<recv_result<typename Channel::value_type>> async_recv_loop(Channel& ch) {
  for (;;) {
    auto r = ch.try_recv();
    if (r.status() != channel_status::empty) co_return r;
    const std::stop_token stop = co_await ptk::get_stop_token();
    if (stop.stop_requested()) co_return channel_status::cancelled;
    co_await recv_readiness<Channel>(ch);
  }
}

}  // namespace ptk::detail
