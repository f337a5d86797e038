/// @file
/// @brief ptk::thread_pool: a work-stealing pool of worker threads, and
///        ptk::task_group for fork-join work on it.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/mpmc_queue.hpp>
#include <ptk/detail/pool_context.hpp>
#include <ptk/detail/task_fn.hpp>
#include <ptk/detail/task_lane.hpp>
#include <ptk/detail/ws_deque.hpp>
#include <ptk/thread/future.hpp>

#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <vector>

namespace ptk {

/// @brief How urgently a task should run.
enum class priority {
  normal,  ///< the default
  high,    ///< runs before every queued normal task
};

/// @brief What a pool does with queued tasks when it shuts down.
enum class shutdown_policy {
  drain,    ///< run every queued task (and what they spawn) to completion first
  discard,  ///< drop tasks not yet started; their futures report broken_promise
};

/// @brief A snapshot of a pool's activity, for metrics.
struct thread_pool_stats {
  std::size_t workers = 0;      ///< worker threads
  std::size_t queued = 0;       ///< tasks waiting to run (approximate while busy)
  std::size_t running = 0;      ///< tasks running now
  std::uint64_t executed = 0;   ///< tasks run to completion (including ones that threw)
  std::uint64_t stolen = 0;     ///< tasks a worker took from another worker's deque
  std::uint64_t discarded = 0;  ///< tasks dropped by shutdown_policy::discard
};

/// @brief How to build a thread_pool.
struct thread_pool_options {
  /// Worker threads; 0 means `std::thread::hardware_concurrency()`.
  unsigned workers = 0;
  /// Workers are named "<name>-<index>" (cut to 15 characters, the Linux limit),
  /// as shown by `ps -L`, `top -H` and `/proc/self/task/TID/comm`.
  std::string name = "ptk-pool";
  /// Called on the worker with the exception a `post`ed task threw. Empty (the
  /// default): print the exception to stderr and call `std::terminate`, as an
  /// exception escaping a `std::thread` would.
  std::function<void(std::exception_ptr)> on_error;
  /// What the destructor does with tasks still queued.
  shutdown_policy on_destroy = shutdown_policy::drain;
  /// How many times an idle worker looks for work before it sleeps in the kernel.
  unsigned spin_rounds = 256;
};

class thread_pool;

namespace detail {
inline thread_local const thread_pool* current_pool = nullptr;

/// A callable a pool can run as `f()`.
template <class F>
concept postable = std::invocable < std::decay_t<F>
& > ;

/// A callable a pool can run as `f(args...)` or `f(stop_token, args...)`.
template <class F, class... Args>
concept submittable = std::invocable < std::decay_t<F>
&, std::decay_t<Args>... > ||
       std::invocable<std::decay_t<F>&, std::stop_token, std::decay_t<Args>...>;
inline thread_local unsigned current_worker_index = 0;
}  // namespace detail

/// @brief A work-stealing pool of worker threads.
///
/// Each worker has its own deque: tasks posted from inside a task go there (LIFO
/// for the owner, stolen FIFO by idle workers). Normal-priority tasks posted from
/// other threads go into the posting thread's own lane, where a post is plain
/// stores with no locked instruction (up to 64 lanes per pool; a lane is passed on
/// when its thread exits, and threads beyond 64 share a lock-free queue). A worker
/// takes a fair share of a lane at once and runs it in order, while idle workers
/// steal from that batch task by task, so a task that blocks never holds the rest
/// of its batch back. High-priority tasks go through a separate queue that every
/// worker looks at first. Idle workers spin briefly, then sleep on a futex: an idle
/// pool uses no CPU, and posting to a busy pool makes no system call.
///
/// A pool with one worker starts the tasks one thread posts in the order they were
/// posted (with several workers, tasks run at once and in no promised order). The
/// exceptions are rare: a thread that posts to more than four pools in turn, or
/// finds all 64 lanes taken, may have its later posts overtake its earlier ones.
///
/// Waiting on a ptk::future, a ptk::task_group or a parallel loop from inside a task
/// runs other tasks meanwhile, so nested waits do not deadlock the pool.
///
/// A worker runs the tasks it spawned itself before it takes more from the shared
/// queue (that is what keeps fork-join work cache-hot); other workers steal the
/// surplus. `co_await pool.schedule()` always goes through the shared queue, so a
/// coroutine that reschedules itself in a loop yields to the tasks already queued;
/// a worker serves the shared queue and the lanes in turn, so such a loop cannot
/// starve what other threads post meanwhile either.
///
/// @code
/// ptk::thread_pool pool;                              // one worker per CPU
/// pool.post([] { std::puts("fire and forget"); });
/// ptk::future<int> f = pool.submit([](int a, int b) { return a + b; }, 2, 3);
/// std::printf("%d\n", f.get());                       // 5
/// pool.wait_idle();
/// @endcode
///
/// Destruction requests stop (tasks that take a `std::stop_token` see it), then
/// applies `thread_pool_options::on_destroy` (drain by default) and joins every
/// worker.
class thread_pool {
 public:
  /// A pool with one worker per hardware thread.
  thread_pool() : thread_pool(thread_pool_options{}) {}
  /// A pool with `workers` workers.
  /// @param workers how many worker threads (0: one per hardware thread).
  explicit thread_pool(unsigned workers) : thread_pool(options_with_workers(workers)) {}
  /// A pool configured by `options`.
  /// @param options worker count, names, error handler, shutdown policy, tuning.
  explicit thread_pool(thread_pool_options options);
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  /// Requests stop, applies the shutdown policy and joins the workers.
  ~thread_pool();

  /// Runs `f()` on a worker; nothing to wait for. If `f` throws, the exception goes
  /// to thread_pool_options::on_error.
  /// @param f a callable taking no arguments.
  template <class F>
  requires detail::postable<F>
  void post(F&& f) { post(priority::normal, std::forward<F>(f)); }

  /// Runs `f()` on a worker with priority `p`.
  /// @param p the task's priority.
  /// @param f a callable taking no arguments.
  template <class F>
  requires detail::postable<F>
  void post(priority p, F&& f) { enqueue(p, posted<std::decay_t<F>>{std::forward<F>(f)}); }

  /// Runs `f(args...)` on a worker and returns a future of its result; an exception
  /// `f` throws is rethrown by `future::get()`. If `f` accepts a `std::stop_token`
  /// as its first parameter, it gets one, which the future's `request_stop()` and
  /// the pool's shutdown both trigger.
  /// @param f the callable.
  /// @param args its arguments, copied or moved into the task.
  /// @return the future of `f`'s result.
  template <class F, class... Args>
  requires detail::submittable<F, Args...>
  auto submit(F&& f, Args&&... args) {
    return submit(priority::normal, std::forward<F>(f), std::forward<Args>(args)...);
  }

  /// As `submit(f, args...)`, with priority `p`.
  /// @param p the task's priority.
  /// @param f the callable.
  /// @param args its arguments.
  /// @return the future of `f`'s result.
  template <class F, class... Args>
  requires detail::submittable<F, Args...>
  auto submit(priority p, F&& f, Args&&... args) {
    using Fn = std::decay_t<F>;
    using R = typename result_of_call<Fn, std::decay_t<Args>...>::type;
    using state = detail::submit_state<R, Fn, std::decay_t<Args>...>;
    auto* s = new state(stop_.get_token(), std::forward<F>(f), std::forward<Args>(args)...);
    future<R> fut = detail::make_future<R>(s);
    enqueue(p, detail::submit_task<state>(s));
    return fut;
  }

  /// Blocks until every queued and running task (and every task they spawn) is done.
  /// Throws std::logic_error if called from one of this pool's own workers.
  void wait_idle() { wait_idle_until(std::nullopt); }

  /// As wait_idle(), giving up when stop is requested on `stop`.
  /// @param stop a token whose stop request ends the wait.
  /// @return true if the pool became idle, false if the wait was stopped first.
  bool wait_idle(std::stop_token stop) { return wait_idle_until(std::nullopt, std::move(stop)); }

  /// As wait_idle(), giving up after `timeout`.
  /// @param timeout how long to wait at most.
  /// @return whether the pool became idle in time.
  template <class Rep, class Period>
  bool wait_idle_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_idle_until(std::chrono::steady_clock::now() +
                           std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
  }

  /// @brief What `co_await pool.schedule()` waits on: resumes the coroutine on a worker.
  class schedule_awaitable {
   public:
    /// @return false: always suspends (even on a worker, so a long coroutine yields).
    bool await_ready() const noexcept { return false; }
    /// Queues the coroutine's resumption on the pool.
    /// @param h the suspended coroutine.
    void await_suspend(std::coroutine_handle<> h) {
      // Through the shared queue, even from a worker: a coroutine that schedules
      // itself again yields to the tasks already queued instead of running at once.
      pool_.enqueue_shared(p_, resume_task{h});
    }
    /// Nothing to return: the coroutine now runs on a worker.
    void await_resume() const noexcept {}

   private:
    friend class thread_pool;
    schedule_awaitable(thread_pool& pool, priority p) noexcept : pool_(pool), p_(p) {}
    struct resume_task {
      std::coroutine_handle<> h;
      void operator()() const { h.resume(); }
    };
    thread_pool& pool_;
    priority p_;
  };

  /// Moves the calling coroutine onto one of the pool's workers.
  ///
  /// @code
  /// ptk::task<int> work(ptk::thread_pool& pool) {
  ///   co_await pool.schedule();  // from here on, on a worker
  ///   co_return 42;
  /// }
  /// @endcode
  /// @param p the priority of the resumption.
  /// @return an awaitable that resumes the coroutine on a worker.
  [[nodiscard]] schedule_awaitable schedule(priority p = priority::normal) noexcept {
    return {*this, p};
  }

  /// @return a snapshot of the pool's counters.
  [[nodiscard]] thread_pool_stats stats() const;

  /// @return the number of worker threads.
  [[nodiscard]] unsigned size() const noexcept { return static_cast<unsigned>(workers_.size()); }

  /// @return the token that shutdown (and request_stop()) triggers.
  [[nodiscard]] std::stop_token get_stop_token() const noexcept { return stop_.get_token(); }

  /// Signals stop to every task holding the pool's (or a submit's) stop token.
  /// The pool keeps running tasks; this only asks long tasks to finish early.
  void request_stop() noexcept { stop_.request_stop(); }

  /// Stops the pool: requests stop, then drains or discards queued tasks, then joins
  /// the workers. Posting from outside the pool afterwards throws. Idempotent;
  /// called by the destructor.
  /// @param policy what to do with tasks that have not started.
  void shutdown(shutdown_policy policy);

  /// @return whether the calling thread is one of this pool's workers.
  [[nodiscard]] bool running_in_this_thread() const noexcept {
    return detail::current_pool == this;
  }

 private:
  static thread_pool_options options_with_workers(unsigned n) {
    thread_pool_options o;
    o.workers = n;
    return o;
  }

  template <class F, class... Args>
  struct result_of_call {
    using type = std::invoke_result_t<F&, Args...>;
  };
  template <class F, class... Args>
  requires(!std::is_invocable_v<F&, Args...> &&
           std::is_invocable_v<F&, std::stop_token, Args...>) struct result_of_call<F, Args...> {
    using type = std::invoke_result_t<F&, std::stop_token, Args...>;
  };

  // A posted callable: routes a thrown exception to the error handler of the pool
  // running it (only a pool's own workers run its tasks), so it carries no pool
  // pointer and a small lambda stays a small record in a lane.
  template <class F>
  struct posted {
    F f;
    void operator()() {
      try {
        f();
      } catch (...) {
        detail::current_pool->report_error(std::current_exception());
      }
    }
  };

  struct alignas(64) worker {
    detail::ws_deque<detail::task_node> deque;
    // Written by the owner on every task: a line of their own, away from the deque's
    // array pointer that thieves read.
    alignas(64) std::atomic<std::uint64_t> pushed{0};  // tasks pushed by this worker to its deque
    std::atomic<std::uint64_t> done{0};                // tasks run (or discarded) by this worker
    std::atomic<std::uint64_t> stolen{0};
    std::atomic<std::uint64_t> discarded{0};
    std::atomic<bool> busy{false};
    std::uint64_t rng = 0;
    unsigned lane_cursor = 0;  // where this worker starts its look at the lanes
    bool lanes_first = false;  // the lanes' turn before the shared queue's (see run_one)
    unsigned batch_depth = 0;  // batch tasks running on this worker's stack
    detail::task_batch batch;  // tasks taken from a lane, run in place
    std::thread thread;
  };

  friend class task_group;

  // Queues a callable: in place into a deque node on a worker, else as a task_fn in
  // a submission queue.
  template <class F>
  void enqueue(priority p, F&& f);
  template <class F>
  void enqueue_shared(priority p, F&& f);
  bool take_batch(worker& w, detail::task_fn& first);
  bool run_from_lanes(worker& w);
  bool run_batch(worker& w);
  void run_in_batch(worker& w, detail::task_fn& t);
  bool steal_from_batches(worker& self, unsigned self_index);
  void notify_after_push() noexcept;
  void wake_if_sleeping() noexcept;
  bool wake_one() noexcept;
  void wake_all() noexcept;
  void notify_idle_waiters() noexcept;
  bool wait_idle_until(std::optional<std::chrono::steady_clock::time_point> deadline,
                       std::stop_token stop = {});
  [[nodiscard]] bool quiescent() const noexcept;
  [[nodiscard]] bool work_visible() const noexcept;
  [[nodiscard]] bool deque_work_visible() const noexcept;
  // What waits on a worker use to run this pool's tasks (see wait_on_word).
  class helper final : public detail::helping_executor {
   public:
    explicit helper(thread_pool& pool) noexcept : pool_(pool) {}
    bool try_run_one() override {
      return pool_.run_one(*pool_.workers_[detail::current_worker_index]);
    }

   private:
    thread_pool& pool_;
  };

  bool run_one(worker& w);
  void run(worker& w, detail::task_fn& t);
  bool take_shared(std::size_t level, detail::task_fn& out);
  detail::task_node* steal(worker& self, unsigned self_index, unsigned& victim);
  void worker_main(unsigned index);
  bool idle(worker& w);
  void report_error(std::exception_ptr e) const noexcept;
  static constexpr std::size_t batch_max = 16;  // tasks moved from a shared queue at once
  static void bump(std::atomic<std::uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_release);
  }

  thread_pool_options options_;
  std::vector<std::unique_ptr<worker>> workers_;
  // Submission queues from outside the pool: [0] high and [1] normal priority.
  detail::mpmc_queue<detail::task_fn> queues_[2];
  // Normal-priority posts from outside threads: one lane per posting thread (while
  // there are lanes to give), so a post makes no locked instruction.
  detail::lane_set lanes_;
  // Parking: sleepers_ workers are asleep (or about to be) on epoch_; searching_
  // workers are awake and looking, so a new task needs no wake-up call.
  // Each on its own cache line: posters read sleepers_ on every post, while
  // searching_ and epoch_ change whenever a worker runs dry.
  alignas(64) detail::futex_word epoch_{0};
  alignas(64) std::atomic<std::uint32_t> sleepers_{0};
  alignas(64) std::atomic<std::uint32_t> searching_{0};
  // A wake-up is on its way: set by the poster that calls futex_wake, cleared by
  // the first worker to wake (or to find it set when about to sleep), or by the
  // poster itself when the call woke nobody.
  std::atomic<bool> waking_{false};
  // wait_idle() callers sleep on idle_epoch_.
  alignas(64) detail::futex_word idle_epoch_{0};
  std::atomic<std::uint32_t> idle_waiters_{0};
  std::atomic<bool> accepting_{true};
  std::atomic<bool> discarding_{false};
  std::atomic<bool> exiting_{false};
  std::stop_source stop_;
  std::mutex shutdown_mutex_;
  bool shut_down_ = false;
};

// ---------------------------------------------------------------------------------

inline thread_pool::thread_pool(thread_pool_options options) : options_(std::move(options)) {
  // Lane posts pair a compiler barrier with the sleeping worker's membarrier.
  detail::asymmetric_fence::prepare();
  unsigned n = options_.workers;
  if (n == 0) n = std::max(1U, std::thread::hardware_concurrency());
  workers_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<worker>());
    workers_.back()->rng = 0x9E3779B97F4A7C15ULL * (i + 1);
  }
  try {
    for (unsigned i = 0; i < n; ++i) {
      workers_[i]->thread = std::thread([this, i] { worker_main(i); });
    }
  } catch (...) {
    shutdown(shutdown_policy::discard);
    throw;
  }
}

inline thread_pool::~thread_pool() { shutdown(options_.on_destroy); }

inline void thread_pool::shutdown(shutdown_policy policy) {
  const std::lock_guard lock(shutdown_mutex_);
  if (shut_down_) return;
  if (running_in_this_thread()) {
    // A worker cannot join itself; terminating is the only honest outcome.
    std::fputs("ptk::thread_pool: shutdown() or destruction from one of its own workers\n", stderr);
    std::terminate();
  }
  accepting_.store(false);
  // Discarding starts before the stop request, so a task that ends because it saw
  // the stop never lets a queued task start after it.
  if (policy == shutdown_policy::discard) {
    discarding_.store(true);
    wake_all();
  }
  stop_.request_stop();
  wait_idle_until(std::nullopt);
  exiting_.store(true);
  wake_all();
  for (auto& w : workers_) {
    if (w->thread.joinable()) w->thread.join();
  }
  shut_down_ = true;
}

template <class F>
void thread_pool::enqueue(priority p, F&& f) {
  if (running_in_this_thread() && p == priority::normal) {
    worker& w = *workers_[detail::current_worker_index];
    detail::task_node* n = detail::node_cache().make(std::forward<F>(f));
    bump(w.pushed);
    w.deque.push(n);
    // The only worker is the caller itself: nobody to wake, so skip the fence.
    if (workers_.size() == 1) return;
  } else {
    enqueue_shared(p, std::forward<F>(f));
    return;
  }
  notify_after_push();
}

template <class F>
void thread_pool::enqueue_shared(priority p, F&& f) {
  if (!accepting_.load(std::memory_order_relaxed) && !running_in_this_thread()) {
    throw std::runtime_error("ptk::thread_pool: task posted after shutdown");
  }
  if (p == priority::normal && !running_in_this_thread()) {
    if (detail::task_lane* lane = lanes_.mine()) {
      lane->push(std::forward<F>(f));
      // Pairs with the membarrier of a worker about to sleep (see idle()): either
      // its last look sees this task, or this check sees it asleep.
      detail::asymmetric_fence::light_side();
      wake_if_sleeping();
      return;
    }
  }
  // The queue's claim is a seq_cst RMW, which orders it before the reads in
  // wake_if_sleeping() as the fence does for the deque.
  queues_[p == priority::high ? 0 : 1].push(std::forward<F>(f));
  wake_if_sleeping();
}

inline void thread_pool::notify_after_push() noexcept {
  // Pairs with the fence a worker passes between announcing itself a sleeper and its
  // last look at the queues: either it sees our task, or we see it asleep.
  detail::seq_cst_fence();
  wake_if_sleeping();
}

inline void thread_pool::wake_if_sleeping() noexcept {
  // A searching worker will find the task; wake a sleeper only if nobody searches,
  // and only if no wake-up is already on its way: until the woken worker runs,
  // posts would otherwise make one futex call each.
  if (sleepers_.load(std::memory_order_seq_cst) != 0 &&
      searching_.load(std::memory_order_seq_cst) == 0 && !waking_.load(std::memory_order_seq_cst)) {
    bool expected = false;
    if (!waking_.compare_exchange_strong(expected, true, std::memory_order_seq_cst)) return;
    // Woken nobody: the sleeper counted was on its way out (or is about to see the
    // new epoch and come back by itself). Nobody would clear the flag then, and it
    // would keep later posts from waking a worker that does fall asleep.
    if (!wake_one()) waking_.store(false, std::memory_order_seq_cst);
  }
}

inline bool thread_pool::wake_one() noexcept {
  epoch_.fetch_add(1, std::memory_order_release);
  return detail::futex_wake(epoch_, 1) != 0;
}

inline void thread_pool::wake_all() noexcept {
  epoch_.fetch_add(1, std::memory_order_release);
  detail::futex_wake_all(epoch_);
}

inline void thread_pool::notify_idle_waiters() noexcept {
  detail::seq_cst_fence();
  if (idle_waiters_.load(std::memory_order_relaxed) != 0) {
    idle_epoch_.fetch_add(1, std::memory_order_release);
    detail::futex_wake_all(idle_epoch_);
  }
}

inline bool thread_pool::quiescent() const noexcept {
  // Every task is counted as pushed before it is queued and as done after it ran,
  // so done <= pushed at every instant. Reading pushed, then done, then pushed
  // again and finding all three equal proves an instant with nothing in flight.
  const auto pushed = [this] {
    std::uint64_t n = queues_[0].pushed() + queues_[1].pushed();
    for (unsigned i = 0, lanes = lanes_.size(); i < lanes; ++i) n += lanes_[i].pushed();
    for (const auto& w : workers_) n += w->pushed.load(std::memory_order_acquire);
    return n;
  };
  const std::uint64_t before = pushed();
  std::uint64_t done = 0;
  for (const auto& w : workers_) done += w->done.load(std::memory_order_acquire);
  return before == done && pushed() == done;
}

inline bool thread_pool::wait_idle_until(
    std::optional<std::chrono::steady_clock::time_point> deadline, std::stop_token stop) {
  if (running_in_this_thread()) {
    throw std::logic_error("ptk::thread_pool::wait_idle called from one of its own workers");
  }
  std::atomic<bool> stopped{false};
  // A stop request changes the word the waiter sleeps on, so it cannot be missed.
  const std::stop_callback on_stop(std::move(stop), [&] {
    stopped.store(true);
    idle_epoch_.fetch_add(1, std::memory_order_release);
    detail::futex_wake_all(idle_epoch_);
  });
  for (;;) {
    if (quiescent()) return true;
    if (stopped.load()) return false;
    idle_waiters_.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t e = idle_epoch_.load(std::memory_order_seq_cst);
    if (quiescent()) {
      idle_waiters_.fetch_sub(1, std::memory_order_relaxed);
      return true;
    }
    detail::futex_status st = deadline ? detail::futex_wait_until(idle_epoch_, e, *deadline)
                                       : detail::futex_wait(idle_epoch_, e);
    idle_waiters_.fetch_sub(1, std::memory_order_relaxed);
    if (st == detail::futex_status::timed_out) return quiescent();
  }
}

inline bool thread_pool::work_visible() const noexcept {
  if (queues_[0].size_approx() != 0 || queues_[1].size_approx() != 0) return true;
  for (unsigned i = 0, lanes = lanes_.size(); i < lanes; ++i) {
    if (!lanes_[i].empty()) return true;
  }
  return deque_work_visible();
}

inline bool thread_pool::deque_work_visible() const noexcept {
  for (const auto& w : workers_) {
    if (!w->deque.empty_approx() || w->batch.unclaimed() != 0) return true;
  }
  return false;
}

inline bool thread_pool::take_shared(std::size_t level, detail::task_fn& out) {
  return queues_[level].try_pop(out);
}

inline detail::task_node* thread_pool::steal(worker& self, unsigned self_index, unsigned& victim) {
  const auto n = static_cast<unsigned>(workers_.size());
  if (n < 2) return nullptr;
  // xorshift: a cheap random starting victim spreads thieves out.
  self.rng ^= self.rng << 13;
  self.rng ^= self.rng >> 7;
  self.rng ^= self.rng << 17;
  const auto start = static_cast<unsigned>(self.rng % n);
  for (unsigned k = 0; k < n; ++k) {
    const unsigned v = (start + k) % n;
    if (v == self_index) continue;
    if (detail::task_node* t = workers_[v]->deque.steal()) {
      bump(self.stolen);
      victim = v;
      return t;
    }
  }
  return nullptr;
}

inline void thread_pool::run(worker& w, detail::task_fn& t) {
  if (discarding_.load(std::memory_order_relaxed)) {
    t.reset();
    bump(w.discarded);
  } else {
    w.busy.store(true, std::memory_order_relaxed);
    t();  // posted tasks route their own exceptions; submitted ones store them
    w.busy.store(false, std::memory_order_relaxed);
  }
  bump(w.done);
}

inline bool thread_pool::run_one(worker& w) {
  const unsigned index = detail::current_worker_index;
  detail::task_fn t;
  // The empty checks are plain loads: they spare the fences of pop/try_pop when a
  // queue is empty, which is the common case for the high-priority queue.
  if (!queues_[0].empty_hint() && take_shared(0, t)) {
    run(w, t);
    return true;
  }
  if (detail::task_node* n = w.deque.empty_approx() ? nullptr : w.deque.pop()) {
    run(w, n->fn);
    detail::node_cache().recycle(n);
    return true;
  }
  if (run_batch(w)) return true;  // lane tasks this worker took before
  // The shared queue and the lanes take turns, so work that keeps requeueing itself
  // on one (a coroutine awaiting schedule() on a worker goes to the shared queue)
  // cannot starve what outside threads posted to the other.
  if (w.lanes_first && run_from_lanes(w)) {
    w.lanes_first = false;
    return true;
  }
  if (take_batch(w, t)) {
    w.lanes_first = true;
    run(w, t);
    return true;
  }
  if (run_from_lanes(w)) {
    w.lanes_first = false;
    return true;
  }
  unsigned victim = 0;
  if (detail::task_node* n = steal(w, index, victim)) {
    // The victim has more: wake a sleeper to share it.
    if (!workers_[victim]->deque.empty_approx()) notify_after_push();
    run(w, n->fn);
    detail::node_cache().recycle(n);
    return true;
  }
  return steal_from_batches(w, index);
}

// From the shared queue, takes a fair share in one claim: the first into `first`,
// the rest into this worker's deque, where idle workers can still steal them. Fewer
// claims on the shared queue means less cache-line traffic with its producers.
inline bool thread_pool::take_batch(worker& w, detail::task_fn& first) {
  if (queues_[1].empty_hint()) return false;
  std::size_t taken = 0;
  detail::task_node* extra[batch_max];
  taken = queues_[1].try_pop_many(
      [&](detail::task_fn&& f) {
        if (taken == 0) {
          first = std::move(f);
        } else {
          extra[taken - 1] = detail::node_cache().make(std::move(f));
        }
        ++taken;
      },
      batch_max, workers_.size());
  if (taken == 0) return false;
  // Pushed newest first, so the owner's LIFO pops keep the submission order.
  // (They are already counted as pushed by the queue.)
  for (std::size_t i = taken; i > 1; --i) w.deque.push(extra[i - 2]);
  // More work queued and nobody looking for it: bring in another worker.
  if (taken > 1 || queues_[1].size_approx() != 0) notify_after_push();
  return true;
}

// Runs tasks from the posting threads' lanes: takes a fair share of one lane in one
// claim (starting at a different lane each time, so one busy poster does not starve
// the others) into this worker's batch, and runs the batch in order, in place. Idle
// workers steal from the batch meanwhile (see steal_from_batches). A wait inside a
// batch task runs this function again: it then continues the same batch, or takes
// single tasks, but never refills slots that the outer call is still running.
inline bool thread_pool::run_from_lanes(worker& w) {
  const unsigned lanes = lanes_.size();
  if (lanes == 0) return false;
  const bool refill = w.batch_depth == 0 && w.batch.reusable();
  for (unsigned k = 0; k < lanes; ++k) {
    detail::task_lane& lane = lanes_[(w.lane_cursor + k) % lanes];
    if (lane.empty_hint()) continue;
    if (!refill) {
      detail::task_fn t;
      if (lane.try_take(&t, 1, 1) == 0) continue;
      if (!lane.empty_hint()) notify_after_push();
      run(w, t);
      return true;
    }
    const std::size_t taken =
        lane.try_take(w.batch.slots(), detail::task_batch::capacity, workers_.size());
    if (taken == 0) continue;
    w.lane_cursor += k + 1;
    detail::task_fn& first = w.batch.publish(taken);
    // Others may take what is left in the lane, or steal from the batch: bring in
    // a worker if none is looking.
    if (taken > 1 || !lane.empty_hint()) notify_after_push();
    run_in_batch(w, first);
    run_batch(w);
    return true;
  }
  return false;
}

// Runs this worker's unclaimed batch tasks, oldest first; returns whether it ran any.
// Stops before each task for a high-priority one, which run_one then takes first.
inline bool thread_pool::run_batch(worker& w) {
  bool ran = false;
  while (queues_[0].empty_hint()) {
    detail::task_fn* t = w.batch.claim();
    if (t == nullptr) break;
    run_in_batch(w, *t);
    ran = true;
  }
  return ran;
}

inline void thread_pool::run_in_batch(worker& w, detail::task_fn& t) {
  struct depth_guard {
    unsigned& depth;
    explicit depth_guard(unsigned& d) noexcept : depth(d) { ++depth; }
    ~depth_guard() { --depth; }
    depth_guard(const depth_guard&) = delete;
    depth_guard& operator=(const depth_guard&) = delete;
  } guard{w.batch_depth};
  run(w, t);
}

// Claims one unstarted task from another worker's batch.
inline bool thread_pool::steal_from_batches(worker& self, unsigned self_index) {
  const auto n = static_cast<unsigned>(workers_.size());
  for (unsigned k = 1; k < n; ++k) {
    worker& victim = *workers_[(self_index + k) % n];
    if (victim.batch.unclaimed() == 0) continue;
    detail::task_fn t;
    if (victim.batch.steal(t)) {
      bump(self.stolen);
      if (victim.batch.unclaimed() != 0) notify_after_push();
      run(self, t);
      return true;
    }
  }
  return false;
}

// Spins for a while looking for work, then sleeps on epoch_. Returns false when the
// worker should exit.
inline bool thread_pool::idle(worker& /*w*/) {
  // At most half the workers (at least one) spin looking for work; the others go
  // straight to sleep. Spinners read the queues' hot cache lines and take CPU time
  // from the threads producing work; one spinner is enough to pick up new work at
  // once, and it wakes more workers as soon as it finds more than it can take.
  const std::uint32_t already = searching_.fetch_add(1, std::memory_order_seq_cst);
  const std::size_t max_spinners = std::max<std::size_t>(1, workers_.size() / 2);
  const unsigned rounds = already < max_spinners ? options_.spin_rounds : 0;
  notify_idle_waiters();
  for (unsigned round = 0; round < rounds; ++round) {
    // The other workers' deques are looked at every round: fork-join work must be
    // stolen promptly. The submission queues only every 16th round (a few
    // microseconds): their tail index is the line every outside post writes, and
    // each read of it costs the poster a cache miss on its next post. A spinner
    // that read it every round slowed a stream of outside posts down by a third.
    if (round % 16 == 0 ? work_visible() : deque_work_visible()) {
      searching_.fetch_sub(1, std::memory_order_seq_cst);
      return true;
    }
    if (exiting_.load(std::memory_order_acquire)) {
      searching_.fetch_sub(1, std::memory_order_seq_cst);
      return false;
    }
    for (int i = 0; i < 32; ++i) detail::cpu_relax();
    if (round % 16 == 15) ::sched_yield();
  }
  // Announce the sleep before leaving the searching state, so a poster never sees
  // neither; then look once more after the fence (pairs with notify_after_push).
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  const std::uint32_t e = epoch_.load(std::memory_order_seq_cst);
  // Heavy: a lane post pairs only a compiler barrier with this (a membarrier, the
  // price of one sleep, where a fence on every post would cost each post).
  detail::asymmetric_fence::heavy_side();
  if (!work_visible() && !exiting_.load(std::memory_order_acquire) &&
      !waking_.load(std::memory_order_seq_cst)) {
    detail::futex_wait(epoch_, e);
  }
  // Whether this worker was the one woken or not, it looks for work now: the
  // wake-up in flight (if any) has done its job, so later posts may wake another
  // sleeper. Cleared before the look (both seq_cst): a poster that found the flag
  // set after pushing has its task seen by this look.
  waking_.store(false, std::memory_order_seq_cst);
  sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  return !exiting_.load(std::memory_order_acquire) || work_visible();
}

inline void thread_pool::worker_main(unsigned index) {
  std::string name = options_.name + "-" + std::to_string(index);
  if (name.size() > 15) name.resize(15);
  ::pthread_setname_np(::pthread_self(), name.c_str());
  detail::current_pool = this;
  detail::current_worker_index = index;
  helper h{*this};
  detail::current_executor = &h;
  worker& w = *workers_[index];
  for (;;) {
    if (run_one(w)) continue;
    if (!idle(w)) break;
  }
  detail::current_executor = nullptr;
  detail::current_pool = nullptr;
}

inline void thread_pool::report_error(std::exception_ptr e) const noexcept {
  if (options_.on_error) {
    try {
      options_.on_error(e);
      return;
    } catch (...) {
      std::fputs("ptk::thread_pool: the on_error handler threw\n", stderr);
      std::terminate();
    }
  }
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "ptk::thread_pool: a posted task threw %s: %s\n", typeid(ex).name(),
                 ex.what());
  } catch (...) {
    std::fputs("ptk::thread_pool: a posted task threw a non-std::exception\n", stderr);
  }
  std::terminate();
}

inline thread_pool_stats thread_pool::stats() const {
  thread_pool_stats s;
  s.workers = workers_.size();
  s.queued = queues_[0].size_approx() + queues_[1].size_approx();
  for (unsigned i = 0, lanes = lanes_.size(); i < lanes; ++i) s.queued += lanes_[i].size_approx();
  for (const auto& w : workers_) {
    s.queued += w->deque.size_approx() + w->batch.unclaimed();
    s.running += w->busy.load(std::memory_order_relaxed) ? 1U : 0U;
    s.executed +=
        w->done.load(std::memory_order_relaxed) - w->discarded.load(std::memory_order_relaxed);
    s.stolen += w->stolen.load(std::memory_order_relaxed);
    s.discarded += w->discarded.load(std::memory_order_relaxed);
  }
  return s;
}

// ---------------------------------------------------------------------------------

/// @brief Fork-join on a thread_pool: run tasks, then wait for all of them.
///
/// `wait()` (and the destructor) runs queued tasks while waiting when called on a
/// worker, so task groups nest: a task may create its own group and wait on it.
/// The first exception a task throws is rethrown by `wait()`; later ones are dropped.
///
/// @code
/// int fib(ptk::thread_pool& pool, int n) {
///   if (n < 2) return n;
///   int a = 0;
///   ptk::task_group g{pool};
///   g.run([&] { a = fib(pool, n - 1); });
///   int b = fib(pool, n - 2);
///   g.wait();
///   return a + b;
/// }
/// @endcode
class task_group {
 public:
  /// A group whose tasks run on `pool`.
  /// @param pool the pool; it must outlive the group.
  explicit task_group(thread_pool& pool) noexcept : pool_(pool) {}
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  /// Waits for the group's tasks; an exception not collected by wait() is dropped.
  ~task_group() { wait_all(); }

  /// Runs `f()` on the pool as part of this group.
  /// @param f a callable taking no arguments.
  template <class F>
  requires detail::postable<F>
  void run(F&& f) {
    pending_.fetch_add(1, std::memory_order_relaxed);
    try {
      pool_.enqueue(priority::normal, member<std::decay_t<F>>{std::forward<F>(f), this});
    } catch (...) {
      finish_one();
      throw;
    }
  }

  /// Waits until every task run so far has finished; rethrows the first exception.
  void wait() {
    wait_all();
    if (failed_.load(std::memory_order_acquire)) {
      failed_.store(false, std::memory_order_relaxed);
      std::exception_ptr e = std::exchange(error_, nullptr);
      std::rethrow_exception(e);
    }
  }

 private:
  static constexpr std::uint32_t sleeper = 1U << 31;

  template <class F>
  struct member {
    F f;
    task_group* g;
    void operator()() {
      try {
        f();
      } catch (...) {
        g->record(std::current_exception());
      }
      g->finish_one();
    }
  };

  void record(std::exception_ptr e) noexcept {
    bool expected = false;
    if (claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      error_ = std::move(e);
      failed_.store(true, std::memory_order_release);
    }
  }

  void finish_one() noexcept {
    const std::uint32_t old = pending_.fetch_sub(1, std::memory_order_acq_rel);
    // The waiter may return (and free this group) as soon as the count reaches
    // zero; after that only the futex address is used, which is harmless.
    if ((old & ~sleeper) == 1 && (old & sleeper) != 0) detail::futex_wake_all(pending_);
  }

  void wait_all() {
    detail::wait_on_word(pending_, sleeper, [](std::uint32_t v) { return (v & ~sleeper) == 0; });
    // No task is left to race with: plain loads and stores suffice (and are much
    // cheaper than read-modify-writes on this hot path of fork-join code).
    if (pending_.load(std::memory_order_relaxed) != 0) pending_.store(0, std::memory_order_relaxed);
    if (claimed_.load(std::memory_order_relaxed)) claimed_.store(false, std::memory_order_relaxed);
  }

  thread_pool& pool_;
  detail::futex_word pending_{0};
  std::atomic<bool> claimed_{false};
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

}  // namespace ptk
