/// @file
/// @brief ptk::async_scope: start coroutines eagerly and join them all later, with
///        no fire-and-forget leaks.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace ptk {

class async_scope;

namespace detail {

/// A spawned coroutine: it awaits the user's awaitable, reports an exception to its
/// scope and, at its end, destroys its own frame and counts itself out.
class scope_task {
 public:
  struct promise_type : promise_base {
    async_scope* scope = nullptr;

    scope_task get_return_object() noexcept {
      return scope_task{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    auto final_suspend() const noexcept;
    void return_void() const noexcept {}
    void unhandled_exception() noexcept;
  };

  explicit scope_task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, nullptr); }
  scope_task(scope_task&& other) noexcept : h_(other.release()) {}
  scope_task& operator=(scope_task&&) = delete;
  ~scope_task() {
    if (h_) h_.destroy();
  }

 private:
  std::coroutine_handle<promise_type> h_;
};

template <class A>
scope_task make_scope_task(A a) {
  co_await std::move(a);
}

}  // namespace detail

/// @brief Starts coroutines eagerly, tracks them, and joins them all.
///
/// `spawn(t)` starts `t` at once on the calling thread (it runs until its first
/// suspension) and keeps count of it. `co_await scope.join()` completes when every
/// spawned coroutine has finished, and then rethrows the first exception one of them
/// threw (later ones are dropped). Spawned coroutines inherit the scope's stop token:
/// request_stop() asks them all to finish early (a sleeping one is woken with
/// ptk::operation_cancelled).
///
/// Destroying a scope while spawned coroutines are still running is a bug (they
/// would outlive what they use): the destructor prints a message and calls
/// std::terminate. Always join first. Spawning while a join is completing (from a
/// thread that is neither the joiner nor a spawned coroutine) is a race.
///
/// @code
/// ptk::task<void> serve(ptk::thread_pool& pool, std::vector<request> requests) {
///   ptk::async_scope scope;
///   for (request& r : requests) scope.spawn(handle(pool, std::move(r)));
///   co_await scope.join();  // all handled (or the first failure rethrown)
/// }
/// @endcode
class async_scope {
 public:
  /// An empty scope.
  async_scope() = default;
  async_scope(const async_scope&) = delete;             ///< Spawned coroutines hold its address.
  async_scope& operator=(const async_scope&) = delete;  ///< Not assignable.
  /// Terminates the program (with a message) if spawned coroutines are still running.
  ~async_scope() {
    if (count_.load(std::memory_order_acquire) != 1) {
      std::fputs(
          "ptk::async_scope: destroyed with spawned coroutines still running "
          "(co_await scope.join() first)\n",
          stderr);
      std::terminate();
    }
  }

  /// Starts `a` now and tracks it; its result, if any, is discarded.
  /// @tparam A the awaitable's type (a ptk::task or any other awaitable).
  /// @param a the awaitable, moved into the scope.
  template <awaitable A>
  void spawn(A&& a) {
    detail::scope_task t = detail::make_scope_task(std::decay_t<A>(std::forward<A>(a)));
    count_.fetch_add(1, std::memory_order_relaxed);
    const auto h = t.release();
    h.promise().scope = this;
    h.promise().stop_ = &token_;
    h.resume();
  }

  /// @brief What `co_await scope.join()` waits on.
  class join_awaitable {
   public:
    /// @return whether nothing is running (then nothing suspends).
    [[nodiscard]] bool await_ready() const noexcept {
      return scope_.count_.load(std::memory_order_acquire) == 1;
    }
    /// Waits for the last spawned coroutine, which resumes this one.
    /// @param h the joining coroutine.
    /// @return whether it stays suspended.
    bool await_suspend(std::coroutine_handle<> h) noexcept {
      scope_.joiner_ = h;
      suspended_ = true;
      return scope_.count_.fetch_sub(1, std::memory_order_acq_rel) != 1;
    }
    /// Rethrows the first exception of a spawned coroutine (once).
    void await_resume() {
      if (suspended_) scope_.count_.store(1, std::memory_order_relaxed);  // open again
      if (scope_.failed_.exchange(false, std::memory_order_acquire)) {
        std::exception_ptr e = std::exchange(scope_.error_, nullptr);
        scope_.claimed_.store(false, std::memory_order_relaxed);
        std::rethrow_exception(std::move(e));
      }
    }

   private:
    friend class async_scope;
    explicit join_awaitable(async_scope& s) noexcept : scope_(s) {}
    async_scope& scope_;
    bool suspended_ = false;
  };

  /// @code
  /// co_await scope.join();
  /// @endcode
  /// @return an awaitable completing when every spawned coroutine has finished; it
  ///         rethrows the first exception one of them threw.
  [[nodiscard]] join_awaitable join() noexcept { return join_awaitable{*this}; }

  /// Asks every spawned coroutine to stop, through the token they inherit.
  void request_stop() noexcept { source_.request_stop(); }

  /// @return the token spawned coroutines inherit.
  [[nodiscard]] std::stop_token get_stop_token() const noexcept { return token_; }

  /// @return how many spawned coroutines are still running (already stale when read).
  [[nodiscard]] std::size_t active() const noexcept {
    const std::size_t n = count_.load(std::memory_order_acquire);
    return n == 0 ? 0 : n - 1;
  }

 private:
  friend class detail::scope_task;

  void record(std::exception_ptr e) noexcept {
    bool expected = false;
    if (claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      error_ = std::move(e);
      failed_.store(true, std::memory_order_release);
    }
  }

  // Running coroutines plus one for the scope itself, which join gives up while it
  // waits: whoever brings the count to zero resumes the joiner.
  std::atomic<std::size_t> count_{1};
  std::coroutine_handle<> joiner_;
  std::stop_source source_;
  std::stop_token token_ = source_.get_token();
  std::atomic<bool> claimed_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

namespace detail {

inline auto scope_task::promise_type::final_suspend() const noexcept {
  struct finish {
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
      async_scope* s = h.promise().scope;
      h.destroy();  // before counting out: a joined scope has no frame left behind
      if (s->count_.fetch_sub(1, std::memory_order_acq_rel) == 1) return s->joiner_;
      return std::noop_coroutine();
    }
    void await_resume() const noexcept {}
  };
  return finish{};
}

inline void scope_task::promise_type::unhandled_exception() noexcept {
  scope->record(std::current_exception());
}

}  // namespace detail

}  // namespace ptk
