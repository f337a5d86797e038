/// @file
/// @brief `co_await p.async_wait()`: wait for a child's exit in a coroutine, with no
///        thread blocked (ptk's reactor thread watches the child's pidfd).
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/detail/reactor.hpp>
#include <ptk/process/process.hpp>

#include <sys/epoll.h>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>

namespace ptk {

/// @brief What process::async_wait returns: `co_await` it for the exit status.
///
/// The coroutine resumes on ptk's reactor thread, which is shared by every waiter:
/// keep the code after the `co_await` short, or `co_await pool.schedule()` first.
/// When the awaiting ptk coroutine's stop token is stopped, the wait ends at once and
/// `co_await` throws ptk::operation_cancelled (the child keeps running).
/// A child that already exited completes without suspending. Needs a pidfd.
class exit_awaitable {
 public:
  exit_awaitable(const exit_awaitable&) = delete;
  exit_awaitable& operator=(const exit_awaitable&) = delete;
  /// Moves an awaitable that has not been awaited yet.
  /// @param other the awaitable to move from.
  exit_awaitable(exit_awaitable&& other) noexcept : process_(other.process_) {}
  exit_awaitable& operator=(exit_awaitable&&) = delete;  ///< Not assignable.
  ~exit_awaitable() = default;

  /// @return whether the child has already exited (it is then reaped at once).
  bool await_ready() {
    if (process_->status() || process_->try_wait()) return true;
    if (process_->pidfd() < 0) {
      throw std::logic_error("ptk::process::async_wait needs a pidfd (not available here)");
    }
    return false;
  }

  /// Hands the child's pidfd to the reactor; resumes `h` when the child exits.
  /// @tparam P the awaiting coroutine's promise type.
  /// @param h the waiting coroutine.
  /// @return whether the coroutine stays suspended.
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    const std::stop_token& token = *detail::stop_token_of(h);
    if (token.stop_requested()) {
      cancelled_ = true;
      return false;
    }
    handle_ = h;
    // The reactor finishes the watch (exit, or a cancellation the stop callback asks
    // for) on its thread. If that happens before this function is done registering,
    // the coroutine is not suspended at all: `state_` decides who resumes it.
    id_ = detail::reactor::instance().watch(process_->pidfd(), EPOLLIN, [this](bool ready) {
      cancelled_ = !ready;
      if (state_.exchange(completed, std::memory_order_acq_rel) == registered) handle_.resume();
    });
    on_stop_.emplace(token, canceller{id_});
    return state_.exchange(registered, std::memory_order_acq_rel) != completed;
  }

  /// @return the exit status (the child is reaped).
  /// @throws ptk::operation_cancelled if the wait was stopped first.
  exit_status await_resume() {
    on_stop_.reset();
    if (cancelled_) {
      if (auto s = process_->try_wait()) return *s;  // it exited as we cancelled
      throw operation_cancelled();
    }
    return process_->wait();
  }

 private:
  friend class process;
  explicit exit_awaitable(process& p) noexcept : process_(&p) {}

  struct canceller {
    std::uint64_t id;
    void operator()() const noexcept {
      try {
        detail::reactor::instance().cancel(id);
      } catch (...) {  // allocation failure: the wait then ends when the child does
      }
    }
  };

  process* process_;
  std::coroutine_handle<> handle_;
  std::uint64_t id_ = 0;
  enum : std::uint8_t { idle, registered, completed };
  std::atomic<std::uint8_t> state_{idle};
  bool cancelled_ = false;
  std::optional<std::stop_callback<canceller>> on_stop_;
};

inline exit_awaitable process::async_wait() {
  check_owned();
  return exit_awaitable(*this);
}

}  // namespace ptk
