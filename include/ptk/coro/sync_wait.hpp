/// @file
/// @brief ptk::sync_wait: run a ptk::task (or any awaitable) to completion from
///        ordinary, non-coroutine code.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/pool_context.hpp>

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <stop_token>
#include <utility>

namespace ptk::detail {

inline constexpr std::uint32_t sync_done = 1;
inline constexpr std::uint32_t sync_sleeper = 2;

/// The coroutine sync_wait drives: it awaits the awaitable and, at its end, flags the
/// waiting thread's futex word without resuming anything.
template <class R>
class sync_driver {
 public:
  struct promise_type : promise_base, result_holder<R> {
    std::stop_token token;
    futex_word* done = nullptr;

    sync_driver get_return_object() noexcept {
      return sync_driver{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    auto final_suspend() const noexcept {
      struct signal {
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
          futex_word* w = h.promise().done;
          // After the fetch_or the waiter may return and its word go away: only the
          // address is used afterwards, which the kernel treats as a plain key.
          if ((w->fetch_or(sync_done, std::memory_order_acq_rel) & sync_sleeper) != 0) {
            futex_wake_all(*w);
          }
        }
        void await_resume() const noexcept {}
      };
      return signal{};
    }
  };

  sync_driver(sync_driver&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  sync_driver& operator=(sync_driver&&) = delete;
  ~sync_driver() {
    if (h_) h_.destroy();
  }

  R run(std::stop_token token) {
    futex_word word{0};
    promise_type& p = h_.promise();
    p.token = std::move(token);
    p.stop_ = &p.token;
    p.done = &word;
    h_.resume();
    // On a pool worker this runs other queued tasks meanwhile, so a task that hops
    // onto the same pool still gets a worker.
    wait_on_word(word, sync_sleeper, [](std::uint32_t v) { return (v & sync_done) != 0; });
    if (p.error_) std::rethrow_exception(std::exchange(p.error_, nullptr));
    return p.take();
  }

 private:
  explicit sync_driver(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

// The awaitable is taken by reference: it lives in the caller's full-expression,
// which lasts until sync_wait returns, i.e. after the driver finished with it.
template <class R, class A>
sync_driver<R> make_sync_driver(A&& a) {
  if constexpr (std::is_void_v<R>) {
    co_await std::forward<A>(a);
  } else {
    co_return co_await std::forward<A>(a);
  }
}

}  // namespace ptk::detail

namespace ptk {

/// @brief Runs `a` to completion and returns its result, blocking the calling thread.
///
/// The coroutine starts on the calling thread and may move elsewhere (for example
/// with `co_await pool.schedule()`); the caller sleeps on a futex (after a short
/// spin) until it completes, wherever that is. On a ptk::thread_pool worker the wait
/// runs other queued tasks of the pool meanwhile. An exception escaping the
/// coroutine is rethrown here.
///
/// @code
/// ptk::task<int> work(ptk::thread_pool& pool) { co_await pool.schedule(); co_return 7; }
/// ptk::thread_pool pool;
/// int v = ptk::sync_wait(work(pool));  // 7, computed on a worker
/// @endcode
/// @tparam A the awaitable's type.
/// @param a a ptk::task or any other awaitable.
/// @return what `co_await a` gives.
template <awaitable A>
detail::await_result_t<A> sync_wait(A&& a) {
  using R = detail::await_result_t<A>;
  return detail::make_sync_driver<R>(std::forward<A>(a)).run(std::stop_token{});
}

/// @brief As `sync_wait(a)`, giving the coroutine `token` as its stop token.
///
/// @code
/// std::stop_source stop;
/// std::jthread canceller([&] { /* ... */ stop.request_stop(); });
/// ptk::sync_wait(ptk::sleep_for(timers, 1h), stop.get_token());  // throws operation_cancelled
/// @endcode
/// @tparam A the awaitable's type.
/// @param a a ptk::task or any other awaitable.
/// @param token what `co_await ptk::get_stop_token()` gives inside `a` (and what the
///        tasks it awaits inherit).
/// @return what `co_await a` gives.
template <awaitable A>
detail::await_result_t<A> sync_wait(A&& a, std::stop_token token) {
  using R = detail::await_result_t<A>;
  return detail::make_sync_driver<R>(std::forward<A>(a)).run(std::move(token));
}

}  // namespace ptk
