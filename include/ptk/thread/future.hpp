/// @file
/// @brief ptk::future: the result of ptk::thread_pool::submit.
///
/// Unlike `std::future`, waiting on a ptk::future from inside a pool task does not
/// block the worker: it runs other queued tasks until the result is ready, so a task
/// may wait for tasks of its own pool without deadlocking it.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/pool_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <optional>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>

namespace ptk {

template <class T>
class future;

namespace detail {

inline constexpr std::uint32_t future_ready = 1;
inline constexpr std::uint32_t future_sleeper = 2;
inline constexpr std::uint32_t future_nudge = 4;  // flipped to wake a waiter that must re-check

template <class T>
struct result_slot {
  std::optional<T> value;
  T take() { return std::move(*value); }
};
template <>
struct result_slot<void> {
  void take() noexcept {}
};

/// Shared between a ptk::future and the task that fulfils it. Two references: the
/// future's and the task's; whichever drops last frees it.
template <class T>
class future_state {
 public:
  future_state(const future_state&) = delete;
  future_state& operator=(const future_state&) = delete;

  [[nodiscard]] bool ready() const noexcept {
    return (word_.load(std::memory_order_acquire) & future_ready) != 0;
  }

  bool wait_until(std::optional<std::chrono::steady_clock::time_point> deadline) {
    return wait_on_word(
        word_, future_sleeper, [](std::uint32_t v) { return (v & future_ready) != 0; }, deadline);
  }

  // Waits until ready or until stop is requested; true if ready.
  bool wait_or_stop(std::stop_token stop) {
    std::atomic<bool> stopped{false};
    // The callback flips a bit of the word the waiter sleeps on, so a stop request
    // that lands just before the waiter sleeps still ends the sleep.
    const std::stop_callback on_stop(std::move(stop), [this, &stopped] {
      stopped.store(true);
      word_.fetch_xor(future_nudge, std::memory_order_acq_rel);
      futex_wake_all(word_);
    });
    wait_on_word(word_, future_sleeper,
                 [&](std::uint32_t v) { return (v & future_ready) != 0 || stopped.load(); });
    return ready();
  }

  /// Moves the exception out (null if the task succeeded). Moving it, rather than
  /// copying, makes the reader the only owner: the exception object then dies on the
  /// reader's thread, whatever the order in which the two sides release the state.
  std::exception_ptr take_error() noexcept { return std::move(error_); }
  T take_value() { return result_.take(); }

  bool request_stop() noexcept { return stop_.request_stop(); }
  [[nodiscard]] bool stop_possible() const noexcept { return stop_.stop_possible(); }

  void release() noexcept {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy_(this);
  }

 protected:
  using destroy_fn = void (*)(future_state*) noexcept;
  explicit future_state(destroy_fn destroy) noexcept : destroy_(destroy) {}
  ~future_state() = default;

  template <class F>
  void fulfil(F&& compute) noexcept {
    try {
      if constexpr (std::is_void_v<T>) {
        std::forward<F>(compute)();
      } else {
        result_.value.emplace(std::forward<F>(compute)());
      }
    } catch (...) {
      error_ = std::current_exception();
    }
    publish();
  }

  void fail(std::exception_ptr e) noexcept {
    error_ = std::move(e);
    publish();
  }

  std::stop_source stop_{std::nostopstate};

 private:
  void publish() noexcept {
    const std::uint32_t old = word_.fetch_or(future_ready, std::memory_order_acq_rel);
    if ((old & future_sleeper) != 0) futex_wake_all(word_);
  }

  futex_word word_{0};
  std::atomic<std::uint32_t> refs_{2};
  destroy_fn destroy_;
  std::exception_ptr error_;
  result_slot<T> result_;
};

/// Forwards a pool's stop request to one task's own stop source.
struct stop_forwarder {
  std::stop_source* target;
  void operator()() const noexcept { target->request_stop(); }
};

/// The state of one submitted call: the callable, its arguments and its result, in
/// one allocation.
template <class R, class F, class... Args>
class submit_state final : public future_state<R> {
 public:
  static constexpr bool takes_stop_token =
      !std::is_invocable_v<F&, Args...> && std::is_invocable_v<F&, std::stop_token, Args...>;

  submit_state(std::stop_token pool_token, F f, Args... args)
      : future_state<R>(&submit_state::destroy), f_(std::move(f)), args_(std::move(args)...) {
    if constexpr (takes_stop_token) {
      this->stop_ = std::stop_source();
      link_.emplace(std::move(pool_token), stop_forwarder{&this->stop_});
    }
  }

  void run() noexcept {
    this->fulfil([this]() -> R {
      return std::apply(
          [this](Args&... a) -> R {
            if constexpr (takes_stop_token) {
              return std::invoke(f_, this->stop_.get_token(), std::move(a)...);
            } else {
              return std::invoke(f_, std::move(a)...);
            }
          },
          args_);
    });
  }

  void abandon() noexcept {
    this->fail(std::make_exception_ptr(std::future_error(std::future_errc::broken_promise)));
  }

 private:
  static void destroy(future_state<R>* s) noexcept { delete static_cast<submit_state*>(s); }

  F f_;
  std::tuple<Args...> args_;
  std::optional<std::stop_callback<stop_forwarder>> link_;
};

/// The queued half of a submit: runs the call once, or, if the task is destroyed
/// without running (the pool discarded it), fails the future with broken_promise.
template <class State>
class submit_task {
 public:
  explicit submit_task(State* s) noexcept : s_(s) {}
  submit_task(submit_task&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  submit_task& operator=(submit_task&&) = delete;
  submit_task(const submit_task&) = delete;
  submit_task& operator=(const submit_task&) = delete;
  ~submit_task() {
    if (s_ != nullptr) {
      s_->abandon();
      s_->release();
    }
  }
  void operator()() noexcept {
    State* s = std::exchange(s_, nullptr);
    s->run();
    s->release();
  }

 private:
  State* s_;
};

template <class T>
future<T> make_future(future_state<T>* s) noexcept;

}  // namespace detail

/// @brief The eventual result of a task submitted to a ptk::thread_pool.
///
/// Move-only; `get()` is called once. Waiting has the four forms shared by every
/// ptk wait: `wait()`, `is_ready()`, `wait_for(d)` / `wait_until(t)`. On a pool
/// worker, every wait runs other queued tasks while the result is not ready.
/// Destroying a future that was never waited on does not block.
///
/// @code
/// ptk::thread_pool pool;
/// ptk::future<int> f = pool.submit([](int x) { return x * 2; }, 21);
/// int v = f.get();  // 42; an exception thrown by the task is rethrown here
/// @endcode
/// @tparam T the task's result type (`void` allowed).
template <class T>
class future {
 public:
  static_assert(!std::is_reference_v<T>, "ptk::future holds values; return a pointer instead");

  /// An empty future: `valid()` is false.
  future() noexcept = default;
  /// Takes over `other`'s result; `other` becomes empty.
  /// @param other the future to move from.
  future(future&& other) noexcept : s_(std::exchange(other.s_, nullptr)) {}
  /// Drops the current result (if any) and takes over `other`'s.
  /// @param other the future to move from.
  /// @return `*this`.
  future& operator=(future&& other) noexcept {
    if (this != &other) {
      reset();
      s_ = std::exchange(other.s_, nullptr);
    }
    return *this;
  }
  future(const future&) = delete;
  future& operator=(const future&) = delete;
  /// Releases the result without waiting for it.
  ~future() { reset(); }

  /// @return whether this future refers to a result (false after `get()` or a move).
  [[nodiscard]] bool valid() const noexcept { return s_ != nullptr; }

  /// @return whether the result (or exception) is available now; never blocks.
  [[nodiscard]] bool is_ready() const {
    check_valid();
    return s_->ready();
  }

  /// Blocks until the result is available (helping the pool on a worker).
  void wait() const {
    check_valid();
    s_->wait_until(std::nullopt);
  }

  /// Blocks until the result is available or stop is requested on `stop`.
  /// @param stop a token whose stop request ends the wait (not the task: see
  ///        request_stop()).
  /// @return whether the result is available.
  bool wait(std::stop_token stop) const {
    check_valid();
    return s_->wait_or_stop(std::move(stop));
  }

  /// Blocks until the result is available or `timeout` has passed.
  /// @param timeout how long to wait at most.
  /// @return whether the result is available.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    return wait_until(std::chrono::steady_clock::now() +
                      std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
  }

  /// Blocks until the result is available or `deadline` has passed.
  /// @param deadline when to give up.
  /// @return whether the result is available.
  bool wait_until(std::chrono::steady_clock::time_point deadline) const {
    check_valid();
    return s_->wait_until(deadline);
  }

  /// Waits for the result and returns it, or rethrows the task's exception. A task
  /// the pool discarded without running reports `std::future_error` with
  /// `std::future_errc::broken_promise`. The future is empty afterwards.
  /// @return the task's result.
  T get() {
    check_valid();
    s_->wait_until(std::nullopt);
    struct release_on_exit {
      future& f;
      ~release_on_exit() { f.reset(); }
    } guard{*this};
    if (std::exception_ptr e = s_->take_error()) std::rethrow_exception(std::move(e));
    return s_->take_value();
  }

  /// Asks the task to stop, through the `std::stop_token` it was given.
  /// @return true if this call made the stop request (false if the task takes no
  ///         stop token, or stop was already requested).
  bool request_stop() noexcept { return s_ != nullptr && s_->request_stop(); }

 private:
  friend future detail::make_future<T>(detail::future_state<T>*) noexcept;
  explicit future(detail::future_state<T>* s) noexcept : s_(s) {}

  void check_valid() const {
    if (s_ == nullptr) throw std::future_error(std::future_errc::no_state);
  }
  void reset() noexcept {
    if (s_ != nullptr) std::exchange(s_, nullptr)->release();
  }

  detail::future_state<T>* s_ = nullptr;
};

namespace detail {
template <class T>
future<T> make_future(future_state<T>* s) noexcept {
  return future<T>(s);
}
}  // namespace detail

}  // namespace ptk
