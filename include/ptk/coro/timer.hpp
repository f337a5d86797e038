/// @file
/// @brief ptk::timer_queue and ptk::sleep_for / ptk::sleep_until: coroutine timers
///        without asio.
///
/// A ptk::timer_queue owns one timer thread that sleeps on a futex until the earliest
/// deadline (no CPU at all while idle) and hands expired sleepers to an executor,
/// by default a ptk::thread_pool. A sleep costs no allocation: its timer node lives
/// in the awaiting coroutine's frame, and the queue keeps a binary heap of pointers
/// to the nodes (8 bytes per sleeper), ordered by deadline.
///
/// Why an object the user creates rather than a hidden per-pool registry: its lifetime
/// is explicit. Declared after the pool, it is destroyed before it, and its
/// destructor cancels every pending sleep and waits for the sleepers to leave, so
/// no timer ever fires into a destroyed pool.
///
/// @code
/// ptk::thread_pool pool;
/// ptk::timer_queue timers{pool};  // after the pool: destroyed first
/// ptk::task<void> tick(ptk::timer_queue& t) {
///   for (int i = 0; i < 3; ++i) {
///     co_await ptk::sleep_for(t, std::chrono::milliseconds(100));  // resumes on a worker
///     std::puts("tick");
///   }
/// }
/// ptk::sync_wait(tick(timers));
/// @endcode
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/pool_context.hpp>
#include <ptk/thread/sync.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <limits>
#include <mutex>
#include <optional>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

namespace ptk {

class timer_queue;

/// @brief What ptk::sleep_for and ptk::sleep_until return: `co_await` it to sleep.
///
/// It is the timer node itself, kept in the awaiting coroutine's frame while it
/// sleeps. When the stop token of the awaiting ptk coroutine is stopped, the sleep
/// ends at once: the timer is removed and `co_await` throws ptk::operation_cancelled.
/// A deadline already passed completes without suspending.
class sleep_awaitable {
 public:
  /// A sleep on `queue` until `deadline`.
  /// @param queue the timer queue that wakes the sleeper.
  /// @param deadline when to wake up.
  sleep_awaitable(timer_queue& queue, std::chrono::steady_clock::time_point deadline) noexcept
      : queue_(&queue), deadline_(deadline) {}
  /// Moves a sleep that has not been awaited yet.
  /// @param other the sleep to move from; it must not have been awaited.
  sleep_awaitable(sleep_awaitable&& other) noexcept
      : queue_(other.queue_), deadline_(other.deadline_) {}
  sleep_awaitable& operator=(sleep_awaitable&&) = delete;  ///< Not assignable.
  /// Leaves the queue (the queue's destructor waits for every sleeper to leave).
  ~sleep_awaitable();

  /// @return whether the deadline has already passed (then nothing suspends).
  [[nodiscard]] bool await_ready() const noexcept {
    return deadline_ <= std::chrono::steady_clock::now();
  }
  /// Queues the timer, unless stop was already requested.
  /// @tparam P the awaiting coroutine's promise type.
  /// @param h the sleeping coroutine.
  /// @return whether the coroutine stays suspended.
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return suspend(h, *detail::stop_token_of(h));
  }
  /// Throws ptk::operation_cancelled if the sleep was cut short by a stop request
  /// (or by the destruction of its timer_queue).
  void await_resume() const {
    if (cancelled_) throw operation_cancelled();
  }

 private:
  friend class timer_queue;
  struct canceller {
    sleep_awaitable* self;
    void operator()() const noexcept;
  };
  enum : std::uint8_t { idle, registered, completed };
  static constexpr std::size_t not_queued = std::numeric_limits<std::size_t>::max();

  bool suspend(std::coroutine_handle<> h, const std::stop_token& token);

  timer_queue* queue_;
  std::chrono::steady_clock::time_point deadline_;
  std::coroutine_handle<> handle_;
  std::size_t index_ = not_queued;  // position in the queue's heap, under its mutex
  // Who resumes: the completer (timer thread or stop callback) if registration has
  // finished, else await_suspend itself by not suspending.
  std::atomic<std::uint8_t> state_{idle};
  bool cancelled_ = false;
  bool entered_ = false;  // counted in the queue's live sleepers
  std::optional<std::stop_callback<canceller>> on_stop_;
};

/// @brief A timer thread and a deadline-ordered heap of sleeping coroutines.
///
/// Expired sleepers are resumed on the executor given at construction: posted to a
/// ptk::thread_pool, or (default constructor) resumed on the timer thread itself. A
/// sleep cancelled by a stop request is resumed the same way, posted to the pool, or
/// inline in the thread that requested the stop.
///
/// The destructor stops the timer thread, cancels every pending sleep (each sleeper
/// resumes with ptk::operation_cancelled) and waits until they have all left the
/// queue; the pool must still be running then, so create the queue after the pool.
/// Do not destroy a queue from its own timer thread (that is, from a sleeper resumed
/// by a default-constructed queue).
///
/// @code
/// ptk::thread_pool pool{4};
/// ptk::timer_queue timers{pool};
/// auto slow = [&]() -> ptk::task<int> { co_await ptk::sleep_for(timers, 1s); co_return 1; };
/// auto r = ptk::sync_wait(ptk::when_any(slow(), ptk::sleep_for(timers, 10ms)));
/// // r.index() == 1: the timeout won, and slow() was cancelled out of its sleep.
/// @endcode
class timer_queue {
 public:
  /// A queue whose sleepers resume on its timer thread.
  timer_queue() : timer_queue(nullptr) {}
  /// A queue whose sleepers resume on `pool`'s workers.
  /// @param pool the pool; it must outlive the queue.
  explicit timer_queue(thread_pool& pool) : timer_queue(&pool) {}
  timer_queue(const timer_queue&) = delete;             ///< Sleepers hold its address.
  timer_queue& operator=(const timer_queue&) = delete;  ///< Not assignable.
  /// Cancels the pending sleeps, waits until every sleeper has left, joins the thread.
  ~timer_queue();

  /// @return how many sleeps are queued right now.
  [[nodiscard]] std::size_t pending() const {
    const std::lock_guard lock(mutex_);
    return heap_.size();
  }

 private:
  friend class sleep_awaitable;
  using clock = std::chrono::steady_clock;
  static constexpr std::uint32_t live_sleeper = 1U << 31;

  explicit timer_queue(thread_pool* pool);
  bool insert(sleep_awaitable* n);
  void cancel(sleep_awaitable* n) noexcept;
  void complete(sleep_awaitable* n, bool cancelled) noexcept;
  void leave() noexcept;
  void run();
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;
  void remove_at(std::size_t i) noexcept;
  void place(std::size_t i, sleep_awaitable* n) noexcept {
    heap_[i] = n;
    n->index_ = i;
  }

  thread_pool* pool_;
  mutable std::mutex mutex_;
  std::vector<sleep_awaitable*> heap_;  // min-heap by deadline, under mutex_
  // The deadline the timer thread sleeps until (clock::time_point::min() while it is
  // awake), under mutex_: an insert wakes it only for an earlier deadline.
  clock::time_point sleeping_until_ = clock::time_point::min();
  bool closed_ = false;  // under mutex_
  detail::futex_word wake_{0};
  detail::futex_word live_{0};  // sleepers not yet gone, plus live_sleeper when waited on
  std::thread thread_;
};

/// @brief Sleeps for `duration` on `queue`.
///
/// @code
/// co_await ptk::sleep_for(timers, std::chrono::milliseconds(10));
/// @endcode
/// @param queue the timer queue (and so the executor) that wakes the coroutine.
/// @param duration how long to sleep; zero or negative does not suspend.
/// @return an awaitable; `co_await` it. It throws ptk::operation_cancelled if the
///         coroutine's stop token is stopped first.
template <class Rep, class Period>
[[nodiscard]] sleep_awaitable sleep_for(timer_queue& queue,
                                        std::chrono::duration<Rep, Period> duration) {
  return {queue, detail::deadline_after(duration)};
}

/// @brief Sleeps until `deadline` on `queue`.
///
/// @code
/// co_await ptk::sleep_until(timers, std::chrono::steady_clock::now() + 1s);
/// @endcode
/// @param queue the timer queue (and so the executor) that wakes the coroutine.
/// @param deadline when to wake up; a time of another clock than steady_clock is
///        turned into a steady_clock deadline once, at this call.
/// @return an awaitable; `co_await` it. It throws ptk::operation_cancelled if the
///         coroutine's stop token is stopped first.
template <class Clock, class Duration>
[[nodiscard]] sleep_awaitable sleep_until(
    timer_queue& queue, const std::chrono::time_point<Clock, Duration>& deadline) {
  return {queue, detail::deadline_at(deadline)};
}

// ---------------------------------------------------------------------------------

inline sleep_awaitable::~sleep_awaitable() {
  // The stop callback refers to the queue: it must be gone (its destructor waits for
  // a running callback) before the queue may be destroyed.
  on_stop_.reset();
  if (entered_) queue_->leave();
}

inline bool sleep_awaitable::suspend(std::coroutine_handle<> h, const std::stop_token& token) {
  if (token.stop_requested()) {
    cancelled_ = true;
    return false;
  }
  handle_ = h;
  if (!queue_->insert(this)) {  // the queue is being destroyed
    cancelled_ = true;
    return false;
  }
  entered_ = true;
  // May run the canceller right here if a stop was requested since the check above.
  if (token.stop_possible()) on_stop_.emplace(token, canceller{this});
  // If the timer fired (or the stop came) during registration, the completer left the
  // resumption to us: do not suspend.
  return state_.exchange(registered, std::memory_order_acq_rel) != completed;
}

inline void sleep_awaitable::canceller::operator()() const noexcept { self->queue_->cancel(self); }

inline timer_queue::timer_queue(thread_pool* pool) : pool_(pool) {
  thread_ = std::thread([this] {
    ::pthread_setname_np(::pthread_self(), "ptk-timer");
    run();
  });
}

inline timer_queue::~timer_queue() {
  {
    const std::lock_guard lock(mutex_);
    closed_ = true;
    wake_.fetch_add(1, std::memory_order_relaxed);
  }
  detail::futex_wake_all(wake_);
  thread_.join();
  std::vector<sleep_awaitable*> rest;
  {
    const std::lock_guard lock(mutex_);
    rest.swap(heap_);
    for (sleep_awaitable* n : rest) n->index_ = sleep_awaitable::not_queued;
  }
  for (sleep_awaitable* n : rest) complete(n, true);
  detail::wait_on_word(live_, live_sleeper,
                       [](std::uint32_t v) { return (v & ~live_sleeper) == 0; });
}

inline bool timer_queue::insert(sleep_awaitable* n) {
  bool wake = false;
  {
    const std::lock_guard lock(mutex_);
    if (closed_) return false;
    heap_.push_back(n);  // may throw bad_alloc: nothing is changed then
    live_.fetch_add(1, std::memory_order_relaxed);
    place(heap_.size() - 1, n);
    sift_up(n->index_);
    if (n->deadline_ < sleeping_until_) {
      sleeping_until_ = n->deadline_;  // later inserts with later deadlines need no wake
      wake_.fetch_add(1, std::memory_order_relaxed);
      wake = true;
    }
  }
  if (wake) detail::futex_wake(wake_, 1);
  return true;
}

inline void timer_queue::cancel(sleep_awaitable* n) noexcept {
  {
    const std::lock_guard lock(mutex_);
    if (n->index_ == sleep_awaitable::not_queued) return;  // fired or cancelled already
    remove_at(n->index_);
  }
  complete(n, true);
}

inline void timer_queue::complete(sleep_awaitable* n, bool cancelled) noexcept {
  if (cancelled) n->cancelled_ = true;
  const std::coroutine_handle<> h = n->handle_;
  // After this exchange the node may be gone (if await_suspend is still running, it
  // resumes the coroutine itself): read everything needed before it.
  if (n->state_.exchange(sleep_awaitable::completed, std::memory_order_acq_rel) !=
      sleep_awaitable::registered) {
    return;
  }
  if (pool_ == nullptr) {
    h.resume();
    return;
  }
  try {
    pool_->post([h] { h.resume(); });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ptk::timer_queue: cannot resume a sleeper on its pool: %s\n", e.what());
    std::terminate();
  }
}

inline void timer_queue::leave() noexcept {
  const std::uint32_t old = live_.fetch_sub(1, std::memory_order_acq_rel);
  // The destructor may return as soon as the count is zero; only the address is used
  // afterwards, which the kernel treats as a key.
  if ((old & ~live_sleeper) == 1 && (old & live_sleeper) != 0) detail::futex_wake_all(live_);
}

inline void timer_queue::run() {
  std::vector<sleep_awaitable*> due;
  std::unique_lock lock(mutex_);
  for (;;) {
    if (closed_) return;
    const clock::time_point now = clock::now();
    while (!heap_.empty() && heap_.front()->deadline_ <= now) {
      sleep_awaitable* n = heap_.front();
      remove_at(0);
      due.push_back(n);
    }
    if (!due.empty()) {
      lock.unlock();
      for (sleep_awaitable* n : due) complete(n, false);
      due.clear();
      lock.lock();
      continue;
    }
    if (heap_.capacity() > 4096 && heap_.size() < heap_.capacity() / 4) heap_.shrink_to_fit();
    const clock::time_point until =
        heap_.empty() ? clock::time_point::max() : heap_.front()->deadline_;
    sleeping_until_ = until;
    const std::uint32_t seen = wake_.load(std::memory_order_relaxed);
    lock.unlock();
    if (until == clock::time_point::max()) {
      detail::futex_wait(wake_, seen);
    } else {
      detail::futex_wait_until(wake_, seen, until);
    }
    lock.lock();
    sleeping_until_ = clock::time_point::min();
  }
}

inline void timer_queue::sift_up(std::size_t i) noexcept {
  sleep_awaitable* n = heap_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (!(n->deadline_ < heap_[parent]->deadline_)) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, n);
}

inline void timer_queue::sift_down(std::size_t i) noexcept {
  sleep_awaitable* n = heap_[i];
  const std::size_t size = heap_.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= size) break;
    if (child + 1 < size && heap_[child + 1]->deadline_ < heap_[child]->deadline_) ++child;
    if (!(heap_[child]->deadline_ < n->deadline_)) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, n);
}

inline void timer_queue::remove_at(std::size_t i) noexcept {
  sleep_awaitable* gone = heap_[i];
  sleep_awaitable* last = heap_.back();
  heap_.pop_back();
  gone->index_ = sleep_awaitable::not_queued;
  if (i == heap_.size()) return;  // it was the last one
  place(i, last);
  sift_down(i);
  sift_up(last->index_);
}

}  // namespace ptk
