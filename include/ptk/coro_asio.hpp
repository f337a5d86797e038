/// @file
/// @brief ptk coroutines and asio together: a ptk::task awaiting an asio::awaitable
///        (ptk::await_asio), an asio coroutine awaiting a ptk::task (ptk::async_run),
///        timers on asio executors (ptk::sleep_for / ptk::sleep_until) and moving a
///        ptk coroutine onto an asio executor (ptk::schedule_on).
///
/// The only coroutine header that includes (standalone) asio; `<ptk/coro.hpp>` and
/// `<ptk/ptk.hpp>` do not include it. "An asio executor" below means an executor
/// type (`io_context::executor_type`, `asio::any_io_executor`, a strand...); every
/// function taking one also takes an execution context (`asio::io_context&`, an
/// `asio::thread_pool&`) and uses its executor.
///
/// Moving between a ptk::thread_pool and an io_context is one `co_await` each way:
///
/// @code
/// ptk::task<std::size_t> handle(ptk::thread_pool& pool, asio::io_context& io) {
///   co_await ptk::schedule_on(io);                    // now on an io_context thread
///   co_await ptk::sleep_for(io, 10ms);                // asio::steady_timer
///   co_await pool.schedule();                         // now on a pool worker
///   std::size_t n = crunch();                         // CPU-bound work off the io thread
///   co_await ptk::schedule_on(io);                    // back to the io thread
///   co_return n;
/// }
/// @endcode
///
/// With Clang and asio 1.22-1.24 (Debian 12), asio enables asio::awaitable only when
/// ASIO_HAS_CO_AWAIT=1 is defined; without it ptk::await_asio is left out and the rest
/// works (ptk::async_run then works with callbacks and asio::use_future).
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/thread/sync.hpp>

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/dispatch.hpp>
#include <asio/error.hpp>
#include <asio/execution/executor.hpp>
#include <asio/execution_context.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/is_executor.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#if defined(ASIO_HAS_CO_AWAIT)
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/co_spawn.hpp>
#include <asio/strand.hpp>
#endif

#include <atomic>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <memory>
#include <optional>
#include <stop_token>
#include <system_error>
#include <type_traits>
#include <utility>

namespace ptk {

/// @brief An asio executor: `io_context::executor_type`, `asio::any_io_executor`, a
///        strand, `asio::thread_pool::executor_type`...
///
/// @code
/// static_assert(ptk::asio_executor<asio::io_context::executor_type>);
/// @endcode
/// @tparam E the type to check.
template <class E>
concept asio_executor = asio::execution::is_executor<E>::value || asio::is_executor<E>::value;

/// @brief An asio execution context with an executor: `asio::io_context`,
///        `asio::thread_pool`...
///
/// @code
/// static_assert(ptk::asio_execution_context<asio::io_context>);
/// @endcode
/// @tparam C the type to check.
template <class C>
concept asio_execution_context = std::is_convertible_v<C&, asio::execution_context&> &&
    requires(C& c) {
  { c.get_executor() } -> asio_executor;
};

// --- schedule_on -------------------------------------------------------------------

/// @brief What ptk::schedule_on returns: `co_await` it to continue on an asio executor.
///
/// It always suspends and posts the coroutine's resumption to the executor (asio::post),
/// so it also yields when the coroutine already runs there. The executor must keep
/// running until the coroutine has resumed: a coroutine queued on an io_context that
/// is stopped or destroyed first is never resumed.
///
/// Lifetimes: the coroutine may resume, and even finish, on the io_context before the
/// thread that posted it has returned from asio::post. As with any cross-thread
/// asio::post, destroy the threads that post (for example, a ptk::thread_pool, whose
/// destructor joins its workers) before the io_context: declare the io_context first.
///
/// @code
/// co_await ptk::schedule_on(io.get_executor());
/// @endcode
/// @tparam Executor the asio executor type.
template <asio_executor Executor>
class asio_schedule_awaitable {
 public:
  /// An awaitable resuming on `ex`.
  /// @param ex the executor.
  explicit asio_schedule_awaitable(Executor ex) noexcept(
      std::is_nothrow_move_constructible_v<Executor>)
      : ex_(std::move(ex)) {}
  /// @return false: always suspends.
  [[nodiscard]] bool await_ready() const noexcept { return false; }
  /// Posts the resumption of `h` to the executor.
  /// @param h the suspended coroutine.
  void await_suspend(std::coroutine_handle<> h) const {
    asio::post(ex_, [h] { h.resume(); });
  }
  /// Nothing to return: the coroutine now runs on the executor.
  void await_resume() const noexcept {}

 private:
  Executor ex_;
};

/// @brief Moves the calling ptk coroutine onto an asio executor.
///
/// The counterpart of `co_await pool.schedule()`: together they move a coroutine
/// between an io_context and a ptk::thread_pool.
///
/// @code
/// ptk::task<void> step(asio::any_io_executor io, ptk::thread_pool& pool) {
///   co_await pool.schedule();       // on a worker
///   co_await ptk::schedule_on(io);  // on an io_context thread
/// }
/// @endcode
/// @tparam Executor an asio executor type.
/// @param ex the executor to continue on.
/// @return an awaitable; `co_await` it.
template <asio_executor Executor>
[[nodiscard]] asio_schedule_awaitable<Executor> schedule_on(const Executor& ex) {
  return asio_schedule_awaitable<Executor>{ex};
}

/// @brief Moves the calling ptk coroutine onto an asio execution context's executor.
///
/// @code
/// asio::io_context& io = app_io();  // run by some thread (io.run())
/// co_await ptk::schedule_on(io);     // from here on, in io.run()
/// @endcode
/// @tparam Context an asio execution context type (asio::io_context, asio::thread_pool).
/// @param ctx the context; it must outlive the wait.
/// @return an awaitable; `co_await` it.
template <asio_execution_context Context>
[[nodiscard]] auto schedule_on(Context& ctx) {
  return schedule_on(ctx.get_executor());
}

// --- sleep_for / sleep_until on an asio executor -----------------------------------

/// @brief What ptk::sleep_for and ptk::sleep_until on an asio executor return:
///        `co_await` it to sleep on an `asio::steady_timer`.
///
/// The coroutine resumes on the timer's executor. When the stop token of the
/// awaiting ptk coroutine is stopped first, the timer is cancelled (through the
/// executor, where asio wants it) and `co_await` throws ptk::operation_cancelled. A
/// deadline already passed completes without suspending. An awaitable may be moved
/// until it is awaited, not after.
///
/// @code
/// co_await ptk::sleep_for(io.get_executor(), std::chrono::milliseconds(10));
/// @endcode
/// @tparam Executor the asio executor type.
template <asio_executor Executor>
class asio_sleep_awaitable {
 public:
  /// A sleep on `ex` until `deadline`.
  /// @param ex the executor whose reactor runs the timer and which resumes the sleeper.
  /// @param deadline when to wake up.
  asio_sleep_awaitable(const Executor& ex, std::chrono::steady_clock::time_point deadline)
      : timer_(ex, deadline), deadline_(deadline) {}
  /// Moves a sleep that has not been awaited yet.
  /// @param other the sleep to move from; it must not have been awaited.
  asio_sleep_awaitable(asio_sleep_awaitable&& other) noexcept
      : timer_(std::move(other.timer_)), deadline_(other.deadline_) {}
  asio_sleep_awaitable& operator=(asio_sleep_awaitable&&) = delete;  ///< Not assignable.
  /// Unregisters the stop callback (it waits for one that is running).
  ~asio_sleep_awaitable() = default;

  /// @return whether the deadline has already passed (then nothing suspends).
  [[nodiscard]] bool await_ready() const noexcept {
    return deadline_ <= std::chrono::steady_clock::now();
  }
  /// Starts the timer, unless stop was already requested.
  /// @tparam P the awaiting coroutine's promise type.
  /// @param h the sleeping coroutine.
  /// @return whether the coroutine stays suspended.
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    const std::stop_token& token = *detail::stop_token_of(h);
    if (token.stop_requested()) {
      cancelled_ = true;
      return false;
    }
    handle_ = h;
    // Two holds on the coroutine: the timer's handler and this registration. Whoever
    // drops the last one resumes it; a stop callback adds a hold (only while one is
    // left) for the cancel it posts, so the awaitable outlives that cancel too.
    holds_.store(2, std::memory_order_relaxed);
    timer_.async_wait(fired{this});
    if (token.stop_possible()) on_stop_.emplace(token, canceller{this});
    if (holds_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The timer fired during registration: resume on the executor all the same.
      asio::post(timer_.get_executor(), [h] { h.resume(); });
    }
    return true;
  }
  /// Throws ptk::operation_cancelled if the sleep was cut short by a stop request,
  /// std::system_error if the timer failed.
  void await_resume() {
    on_stop_.reset();
    if (cancelled_ || error_ == asio::error::operation_aborted) throw operation_cancelled();
    if (error_) throw std::system_error(error_, "ptk::sleep_for on an asio executor");
  }

 private:
  void release() noexcept {
    if (holds_.fetch_sub(1, std::memory_order_acq_rel) == 1) handle_.resume();
  }
  struct fired {
    asio_sleep_awaitable* self;
    void operator()(const std::error_code& ec) const noexcept {
      self->error_ = ec;
      self->release();
    }
  };
  struct canceller {
    asio_sleep_awaitable* self;
    void operator()() const noexcept {
      std::uint32_t n = self->holds_.load(std::memory_order_relaxed);
      do {
        if (n == 0) return;  // already resumed (or resuming): nothing to cancel
      } while (!self->holds_.compare_exchange_weak(n, n + 1, std::memory_order_acq_rel));
      asio_sleep_awaitable* s = self;
      try {
        asio::post(s->timer_.get_executor(), [s] {
          s->timer_.cancel();
          s->release();
        });
      } catch (...) {
        s->release();  // could not post: the sleep runs to its deadline
      }
    }
  };

  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, Executor>
      timer_;
  std::chrono::steady_clock::time_point deadline_;
  std::coroutine_handle<> handle_;
  std::atomic<std::uint32_t> holds_{0};
  std::error_code error_;
  bool cancelled_ = false;
  std::optional<std::stop_callback<canceller>> on_stop_;
};

/// @brief Sleeps for `duration` on an asio executor (an `asio::steady_timer`).
///
/// The same name as the ptk::timer_queue overload; this one needs no timer thread
/// of its own, the executor's reactor does the waiting.
///
/// @code
/// ptk::task<void> blink(asio::any_io_executor io) {
///   for (int i = 0; i < 3; ++i) {
///     co_await ptk::sleep_for(io, std::chrono::milliseconds(100));  // resumes on io
///     std::puts("blink");
///   }
/// }
/// @endcode
/// @tparam Executor an asio executor type.
/// @param ex the executor that runs the timer and resumes the coroutine.
/// @param duration how long to sleep; zero or negative does not suspend.
/// @return an awaitable; `co_await` it. It throws ptk::operation_cancelled if the
///         coroutine's stop token is stopped first.
template <asio_executor Executor, class Rep, class Period>
[[nodiscard]] asio_sleep_awaitable<Executor> sleep_for(
    const Executor& ex, std::chrono::duration<Rep, Period> duration) {
  return {ex, detail::deadline_after(duration)};
}

/// @brief Sleeps for `duration` on an asio execution context's executor.
///
/// @code
/// asio::io_context& io = app_io();  // run by some thread (io.run())
/// co_await ptk::sleep_for(io, std::chrono::milliseconds(10));
/// @endcode
/// @tparam Context an asio execution context type (asio::io_context, asio::thread_pool).
/// @param ctx the context; it must outlive the sleep.
/// @param duration how long to sleep; zero or negative does not suspend.
/// @return an awaitable; `co_await` it.
template <asio_execution_context Context, class Rep, class Period>
[[nodiscard]] auto sleep_for(Context& ctx, std::chrono::duration<Rep, Period> duration) {
  return sleep_for(ctx.get_executor(), duration);
}

/// @brief Sleeps until `deadline` on an asio executor.
///
/// @code
/// co_await ptk::sleep_until(io.get_executor(), std::chrono::steady_clock::now() + 1s);
/// @endcode
/// @tparam Executor an asio executor type.
/// @param ex the executor that runs the timer and resumes the coroutine.
/// @param deadline when to wake up; a time of another clock than steady_clock is
///        turned into a steady_clock deadline once, at this call.
/// @return an awaitable; `co_await` it.
template <asio_executor Executor, class Clock, class Duration>
[[nodiscard]] asio_sleep_awaitable<Executor> sleep_until(
    const Executor& ex, const std::chrono::time_point<Clock, Duration>& deadline) {
  return {ex, detail::deadline_at(deadline)};
}

/// @brief Sleeps until `deadline` on an asio execution context's executor.
///
/// @code
/// co_await ptk::sleep_until(io, std::chrono::steady_clock::now() + 1s);
/// @endcode
/// @tparam Context an asio execution context type.
/// @param ctx the context; it must outlive the sleep.
/// @param deadline when to wake up.
/// @return an awaitable; `co_await` it.
template <asio_execution_context Context, class Clock, class Duration>
[[nodiscard]] auto sleep_until(Context& ctx,
                               const std::chrono::time_point<Clock, Duration>& deadline) {
  return sleep_until(ctx.get_executor(), deadline);
}

}  // namespace ptk

// --- async_run: a ptk::task as an asio asynchronous operation ----------------------

namespace ptk::detail {

/// The completion signature ptk::async_run gives a task's result to.
template <class T>
struct asio_run_signature {
  using type = void(std::exception_ptr, T);
};
template <>
struct asio_run_signature<void> {
  using type = void(std::exception_ptr);
};

/// Drives a ptk::task for asio: runs it, then hands its result to an asio handler
/// on the handler's associated executor. Two holds keep the frame: the initiating
/// function's and the task's end; whoever drops the last one completes, and knows
/// from which side it is whether the completion happened inside the initiating
/// function (then it must be posted, never run inline).
template <class T, class Handler, class IoExecutor>
class asio_run_driver {
 public:
  using handler_executor = asio::associated_executor_t<Handler, IoExecutor>;

  struct promise_type : promise_base, result_holder<T> {
    promise_type(task<T>&, Handler& h, const IoExecutor& io)
        : handler(std::move(h)), work(asio::make_work_guard(handler, io)) {}

    Handler handler;
    asio::executor_work_guard<handler_executor> work;
    std::stop_source source{std::nostopstate};
    std::stop_token token;
    std::atomic<int> holds{2};

    asio_run_driver get_return_object() noexcept {
      return asio_run_driver{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    auto final_suspend() const noexcept {
      struct finish {
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<promise_type> h) const noexcept {
          if (h.promise().holds.fetch_sub(1, std::memory_order_acq_rel) == 1) complete(h, false);
        }
        void await_resume() const noexcept {}
      };
      return finish{};
    }
  };

  /// Starts the task on the calling thread.
  static void start(std::coroutine_handle<promise_type> h) {
    promise_type& p = h.promise();
    auto slot = asio::get_associated_cancellation_slot(p.handler);
    if (slot.is_connected()) {
      p.source = std::stop_source{};
      p.token = p.source.get_token();
      p.stop_ = &p.token;
      slot.assign([source = p.source](asio::cancellation_type type) mutable {
        if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                     asio::cancellation_type::total)) != asio::cancellation_type::none) {
          source.request_stop();
        }
      });
    }
    h.resume();
    // The frame is still here: the task's end has not dropped the last hold yet.
    if (p.holds.fetch_sub(1, std::memory_order_acq_rel) == 1) complete(h, true);
  }

  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, nullptr); }
  asio_run_driver(asio_run_driver&& other) noexcept : h_(other.release()) {}
  asio_run_driver& operator=(asio_run_driver&&) = delete;
  ~asio_run_driver() {
    if (h_) h_.destroy();
  }

 private:
  explicit asio_run_driver(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}

  // Moves the handler and the result out, frees the frame, then delivers.
  static void complete(std::coroutine_handle<promise_type> h, bool inside_initiation) noexcept {
    promise_type& p = h.promise();
    std::exception_ptr error = std::exchange(p.error_, nullptr);
    Handler handler = std::move(p.handler);
    auto work = std::move(p.work);
    auto slot = asio::get_associated_cancellation_slot(handler);
    const bool clear_slot = slot.is_connected();
    try {
      if constexpr (std::is_void_v<T>) {
        h.destroy();
        deliver(inside_initiation, work,
                [handler = std::move(handler), error, clear_slot]() mutable {
                  if (clear_slot) asio::get_associated_cancellation_slot(handler).clear();
                  std::move(handler)(error);
                });
      } else {
        std::optional<T> value;
        if (!error) {
          try {
            value.emplace(p.take());
          } catch (...) {
            error = std::current_exception();
          }
        }
        h.destroy();
        deliver(
            inside_initiation, work,
            [handler = std::move(handler), error, clear_slot, value = std::move(value)]() mutable {
              if (clear_slot) asio::get_associated_cancellation_slot(handler).clear();
              std::move(handler)(error, value ? std::move(*value) : T{});
            });
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ptk::async_run: cannot deliver a result to asio: %s\n", e.what());
      std::terminate();
    }
  }

  template <class Work, class F>
  static void deliver(bool inside_initiation, Work& work, F&& f) {
    auto ex = work.get_executor();
    if (inside_initiation) {
      asio::post(ex, std::forward<F>(f));
    } else {
      asio::dispatch(ex, std::forward<F>(f));
    }
    work.reset();
  }

  std::coroutine_handle<promise_type> h_;
};

template <class T, class Handler, class IoExecutor>
asio_run_driver<T, Handler, IoExecutor> make_asio_run_driver(task<T> t, Handler,
                                                             const IoExecutor&) {
  if constexpr (std::is_void_v<T>) {
    co_await std::move(t);
  } else {
    co_return co_await std::move(t);
  }
}

template <class IoExecutor>
struct initiate_asio_run {
  using executor_type = IoExecutor;
  IoExecutor ex;

  [[nodiscard]] executor_type get_executor() const noexcept { return ex; }

  template <class Handler, class T>
  void operator()(Handler&& handler, task<T> t) const {
    using driver = asio_run_driver<T, std::decay_t<Handler>, IoExecutor>;
    std::decay_t<Handler> h(std::forward<Handler>(handler));
    driver d = make_asio_run_driver(std::move(t), std::move(h), ex);
    driver::start(d.release());
  }
};

}  // namespace ptk::detail

namespace ptk {

/// @brief A task result ptk::async_run can deliver: `void`, or an object type with a
///        default constructor (asio's completion signature passes one with an error).
///
/// @code
/// static_assert(ptk::async_run_result<int>);
/// @endcode
/// @tparam T the type to check.
template <class T>
concept async_run_result = std::is_void_v<T> ||
    (std::is_object_v<T>&& std::default_initializable<T>);

/// @brief Runs a ptk::task as an asio asynchronous operation, completing through
///        any asio completion token.
///
/// The task starts at once on the calling thread (it runs until its first
/// suspension) and may move anywhere (a ptk::thread_pool, another io_context). When
/// it ends, its result goes to the completion handler, on the handler's associated
/// executor (with `asio::use_awaitable`: the awaiting asio coroutine's), or on `ex`
/// for a handler without one; never inline inside this call. The completion
/// signature is `void(std::exception_ptr, T)` (`void(std::exception_ptr)` for
/// `task<void>`), as for asio::co_spawn: with `asio::use_awaitable` and
/// `asio::use_future` the task's exception is rethrown, a callback receives it. The
/// handler's executor has outstanding work until then, so `io.run()` does not
/// return while the task runs elsewhere.
///
/// Cancellation: if the completion handler has an asio cancellation slot (a
/// parallel_group, `asio::bind_cancellation_slot`, a co_spawn'ed coroutine's
/// cancellation), a terminal, partial or total cancellation requests stop on the
/// task's std::stop_token: a ptk::sleep_for inside it throws ptk::operation_cancelled,
/// which the handler receives.
///
/// @code
/// ptk::task<int> crunch(ptk::thread_pool& pool) { co_await pool.schedule(); co_return 42; }
/// asio::awaitable<void> session(ptk::thread_pool& pool) {
///   auto ex = co_await asio::this_coro::executor;
///   int v = co_await ptk::async_run(ex, crunch(pool), asio::use_awaitable);  // 42
/// }
/// @endcode
/// @tparam Executor an asio executor type.
/// @tparam T the task's result type (void or an object type with a default constructor).
/// @tparam CompletionToken an asio completion token type.
/// @param ex the executor that completes the operation when the handler has none.
/// @param t the task, moved into the operation.
/// @param token an asio completion token (a handler, use_awaitable, use_future, deferred...).
/// @return whatever the completion token makes of the operation.
template <asio_executor Executor, async_run_result T, class CompletionToken>
auto async_run(const Executor& ex, task<T> t, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, typename detail::asio_run_signature<T>::type>(
      detail::initiate_asio_run<Executor>{ex}, token, std::move(t));
}

/// @brief As async_run(ex, t, token), on an execution context's executor.
///
/// @code
/// asio::io_context io;
/// std::future<int> f = ptk::async_run(io, compute(), asio::use_future);
/// int v = f.get();  // use_future completes on asio's system executor: io need not run
/// @endcode
/// @tparam Context an asio execution context type (asio::io_context, asio::thread_pool).
/// @tparam T the task's result type.
/// @tparam CompletionToken an asio completion token type.
/// @param ctx the context whose executor completes the operation when the handler has none.
/// @param t the task, moved into the operation.
/// @param token an asio completion token.
/// @return whatever the completion token makes of the operation.
template <asio_execution_context Context, async_run_result T, class CompletionToken>
auto async_run(Context& ctx, task<T> t, CompletionToken&& token) {
  return async_run(ctx.get_executor(), std::move(t), std::forward<CompletionToken>(token));
}

/// @brief As async_run(ex, t, token), completing on the executor the completion token is
///        associated with (with `asio::use_awaitable`: the awaiting coroutine's).
///
/// A plain callback has no associated executor: it then runs on asio's
/// system_executor (the thread where the task ended, or asio's system thread pool if
/// the task ended inside this call).
///
/// @code
/// asio::awaitable<int> session() {
///   co_return co_await ptk::async_run(compute(), asio::use_awaitable);
/// }
/// @endcode
/// @tparam T the task's result type.
/// @tparam CompletionToken an asio completion token type.
/// @param t the task, moved into the operation.
/// @param token an asio completion token.
/// @return whatever the completion token makes of the operation.
template <async_run_result T, class CompletionToken>
auto async_run(task<T> t, CompletionToken&& token) {
  return async_run(asio::system_executor{}, std::move(t), std::forward<CompletionToken>(token));
}

}  // namespace ptk

// --- await_asio: a ptk coroutine awaiting an asio::awaitable ----------------------

#if defined(ASIO_HAS_CO_AWAIT)

namespace ptk::detail {

/// What a cancellable await_asio shares with the posts it makes to its strand.
/// Touched only on the strand.
struct asio_await_cancel {
  asio::cancellation_signal signal;
  bool launched = false;
  bool done = false;
  bool stopped = false;
};

/// asio::co_spawn needs a default-constructible result: an awaitable of another type
/// runs inside this one, which constructs the result right where the awaiter keeps it.
template <class T, class E>
asio::awaitable<void, E> asio_store_result(asio::awaitable<T, E> a, std::optional<T>* out) {
  out->emplace(co_await std::move(a));
}

}  // namespace ptk::detail

namespace ptk {

/// @brief What ptk::await_asio returns: `co_await` it to run an asio::awaitable and get
///        its result.
///
/// @code
/// int v = co_await ptk::await_asio(io.get_executor(), asio_compute());
/// @endcode
/// @tparam T the asio awaitable's result type.
/// @tparam AwaitableExecutor the asio awaitable's executor type.
/// @tparam Executor the executor it runs on.
template <class T, class AwaitableExecutor, asio_executor Executor>
class asio_await_awaitable {
 public:
  /// An awaitable running `aw` on `ex`.
  /// @param ex the executor.
  /// @param aw the asio coroutine, not started yet.
  asio_await_awaitable(Executor ex, asio::awaitable<T, AwaitableExecutor> aw)
      : ex_(std::move(ex)), aw_(std::move(aw)) {}
  /// Moves an awaitable that has not been awaited yet.
  /// @param other the awaitable to move from; it must not have been awaited.
  asio_await_awaitable(asio_await_awaitable&& other) noexcept
      : ex_(std::move(other.ex_)), aw_(std::move(other.aw_)) {}
  asio_await_awaitable& operator=(asio_await_awaitable&&) = delete;  ///< Not assignable.
  /// Unregisters the stop callback (it waits for one that is running).
  ~asio_await_awaitable() = default;

  /// @return false: the asio coroutine has to run first.
  [[nodiscard]] bool await_ready() const noexcept { return false; }

  /// Spawns the asio coroutine (asio::co_spawn); its end resumes this coroutine.
  /// @tparam P the awaiting coroutine's promise type.
  /// @param h the awaiting coroutine.
  /// @return whether the coroutine stays suspended.
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    const std::stop_token& token = *detail::stop_token_of(h);
    if (token.stop_requested()) {
      error_ = std::make_exception_ptr(operation_cancelled());
      return false;
    }
    handle_ = h;
    if (!token.stop_possible()) {
      spawn(ex_, completion{this});
      return true;
    }
    // Cancellable: the asio coroutine runs on a strand, and the cancellation signal
    // is emitted on that strand, as asio requires; the launch goes through the
    // strand as well, so a stop that comes first is seen by it.
    cancel_ = std::make_shared<detail::asio_await_cancel>();
    auto strand = asio::make_strand(ex_);
    on_stop_.emplace(token, stopper{cancel_, strand});
    asio::post(strand, [this, strand] {
      detail::asio_await_cancel& c = *cancel_;
      c.launched = true;
      if (c.stopped) {
        c.done = true;
        error_ = std::make_exception_ptr(operation_cancelled());
        handle_.resume();
        return;
      }
      spawn(strand, asio::bind_cancellation_slot(c.signal.slot(), completion{this}));
    });
    return true;
  }

  /// @return the asio coroutine's result; rethrows its exception
  ///         (ptk::operation_cancelled if it ended because of a stop request).
  T await_resume() {
    on_stop_.reset();
    if (error_) {
      if (cancel_ && cancel_->stopped) {
        try {
          std::rethrow_exception(error_);
        } catch (const std::system_error& e) {
          if (e.code() == asio::error::operation_aborted) throw operation_cancelled();
          throw;
        }
      }
      std::rethrow_exception(std::exchange(error_, nullptr));
    }
    if constexpr (!std::is_void_v<T>) return std::move(*value_);
  }

 private:
  struct completion {
    asio_await_awaitable* self;
    void operator()(std::exception_ptr e) const {
      self->error_ = std::move(e);
      finish();
    }
    template <class U>
    void operator()(std::exception_ptr e, U&& v) const {
      self->error_ = std::move(e);
      if (!self->error_) self->value_.emplace(std::forward<U>(v));
      finish();
    }
    void finish() const {
      if (self->cancel_) self->cancel_->done = true;  // on the strand
      self->handle_.resume();
    }
  };
  template <class Ex, class Handler>
  void spawn(const Ex& ex, Handler&& handler) {
    if constexpr (std::is_void_v<T> || std::default_initializable<T>) {
      asio::co_spawn(ex, std::move(aw_), std::forward<Handler>(handler));
    } else {
      asio::co_spawn(ex, detail::asio_store_result(std::move(aw_), &value_),
                     std::forward<Handler>(handler));
    }
  }
  struct stopper {
    std::shared_ptr<detail::asio_await_cancel> cancel;
    asio::strand<Executor> strand;
    void operator()() const noexcept {
      try {
        asio::post(strand, [c = cancel] {
          if (c->done) return;
          c->stopped = true;
          if (c->launched) c->signal.emit(asio::cancellation_type::terminal);
        });
      } catch (...) {  // could not post: the asio coroutine runs to its end
      }
    }
  };

  Executor ex_;
  asio::awaitable<T, AwaitableExecutor> aw_;
  std::coroutine_handle<> handle_;
  std::exception_ptr error_;
  std::optional<std::conditional_t<std::is_void_v<T>, char, T>> value_;
  std::shared_ptr<detail::asio_await_cancel> cancel_;
  std::optional<std::stop_callback<stopper>> on_stop_;
};

/// @brief Runs an asio coroutine on an asio executor and gives its result to a ptk
///        coroutine.
///
/// `co_await ptk::await_asio(ex, aw)` spawns `aw` on `ex` (asio::co_spawn) and
/// resumes the ptk coroutine on `ex` when `aw` ends, with its value or its
/// exception. If the ptk coroutine's stop token is stopped, the asio coroutine's
/// current operation is cancelled (a terminal asio cancellation, emitted on a strand
/// of `ex`), and its `operation_aborted` error comes back as ptk::operation_cancelled.
/// Only a cancellable wait (a stop token that can be stopped) pays for the strand.
///
/// @code
/// asio::awaitable<std::size_t> read_some(asio::ip::tcp::socket& s, asio::mutable_buffer b) {
///   co_return co_await s.async_read_some(b, asio::use_awaitable);
/// }
/// ptk::task<void> reader(asio::ip::tcp::socket& s, ptk::thread_pool& pool) {
///   char buf[512];
///   std::size_t n = co_await ptk::await_asio(s.get_executor(), read_some(s, asio::buffer(buf)));
///   co_await pool.schedule();  // parse on a worker
/// }
/// @endcode
/// @tparam Executor an asio executor type.
/// @tparam T the asio awaitable's result type.
/// @tparam AwaitableExecutor the asio awaitable's executor type.
/// @param ex the executor to run `aw` on (convertible to its executor type).
/// @param aw the asio coroutine, not started yet.
/// @return an awaitable; `co_await` it.
template <asio_executor Executor, class T, class AwaitableExecutor>
requires std::is_convertible_v<Executor, AwaitableExecutor>
[[nodiscard]] asio_await_awaitable<T, AwaitableExecutor, Executor> await_asio(
    const Executor& ex, asio::awaitable<T, AwaitableExecutor> aw) {
  return {ex, std::move(aw)};
}

/// @brief Runs an asio coroutine on an execution context's executor and gives its result
///        to a ptk coroutine.
///
/// @code
/// asio::io_context& io = app_io();  // run by some thread (io.run())
/// int v = co_await ptk::await_asio(io, asio_compute());
/// @endcode
/// @tparam Context an asio execution context type.
/// @tparam T the asio awaitable's result type.
/// @tparam AwaitableExecutor the asio awaitable's executor type.
/// @param ctx the context whose executor runs `aw`.
/// @param aw the asio coroutine, not started yet.
/// @return an awaitable; `co_await` it.
template <asio_execution_context Context, class T, class AwaitableExecutor>
[[nodiscard]] auto await_asio(Context& ctx, asio::awaitable<T, AwaitableExecutor> aw) {
  return await_asio(ctx.get_executor(), std::move(aw));
}

}  // namespace ptk

#endif  // ASIO_HAS_CO_AWAIT
