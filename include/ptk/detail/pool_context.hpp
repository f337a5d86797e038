// Internal: what every waiting construct of the thread module shares.
//
// * `helping_executor` / `current_executor`: a pool worker that blocks (on a future,
//   a task_group, a parallel loop) runs other queued tasks instead of sleeping, so
//   nested waits cannot deadlock the pool.
// * `wait_on_word`: the one wait loop (run work if a worker, spin briefly, then sleep
//   on a futex) used by futures, task groups and parallel loops.
// * `task_node` and its per-thread cache: the allocation behind a spawned task.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/task_fn.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

namespace ptk::detail {

/// Implemented by thread pools; `current_executor` points at it on their workers.
class helping_executor {
 public:
  /// Finds one queued task and runs it on the calling worker; false if none.
  virtual bool try_run_one() = 0;

 protected:
  helping_executor() = default;
  helping_executor(const helping_executor&) = default;
  helping_executor& operator=(const helping_executor&) = default;
  ~helping_executor() = default;
};

/// The executor whose worker the calling thread is, or nullptr.
inline thread_local helping_executor* current_executor = nullptr;

/// How many times a waiter checks before it goes to sleep (a few microseconds).
inline constexpr unsigned wait_spin_limit = 128;

/// How long a *worker* sleeps between looks at its pool's queues while it waits for
/// something else: a worker parked on a future must still notice new work, and a
/// futex sleeps on one word only.
inline constexpr std::chrono::microseconds helper_poll_interval{500};

/// Waits until `done(word value)` holds. `word` is a futex word that the completing
/// side changes and, when the value it replaced had `sleeper_bit` set, wakes with
/// futex_wake_all. On a pool worker, other queued tasks run meanwhile.
/// Returns false only if `deadline` passed first.
template <class Done>
bool wait_on_word(futex_word& word, std::uint32_t sleeper_bit, Done done,
                  std::optional<std::chrono::steady_clock::time_point> deadline = std::nullopt) {
  helping_executor* const helper = current_executor;
  unsigned spins = 0;
  for (;;) {
    std::uint32_t v = word.load(std::memory_order_acquire);
    if (done(v)) return true;
    if (helper != nullptr && helper->try_run_one()) {
      spins = 0;
      continue;
    }
    if (spins < wait_spin_limit) {
      ++spins;
      cpu_relax();
      continue;
    }
    const auto now = std::chrono::steady_clock::now();
    if (deadline && now >= *deadline) return false;
    v = word.fetch_or(sleeper_bit, std::memory_order_acq_rel) | sleeper_bit;
    if (done(v)) return true;
    if (helper != nullptr) {
      auto until = now + helper_poll_interval;
      if (deadline && *deadline < until) until = *deadline;
      futex_wait_until(word, v, until);
      spins = wait_spin_limit - 8;  // look for work, then sleep again soon
    } else if (deadline) {
      futex_wait_until(word, v, *deadline);
    } else {
      futex_wait(word, v);
    }
  }
}

/// A spawned task waiting in a work-stealing deque.
struct task_node {
  task_fn fn;
  task_node* next_free = nullptr;
};

/// Recycles task nodes per thread: spawning a task costs a pointer pop, not a
/// malloc. A node freed by a thief lands in the thief's cache.
class task_node_cache {
 public:
  task_node_cache() = default;
  task_node_cache(const task_node_cache&) = delete;
  task_node_cache& operator=(const task_node_cache&) = delete;
  ~task_node_cache() {
    while (free_ != nullptr) delete std::exchange(free_, free_->next_free);
  }

  /// A node holding `f` (a task_fn, or any callable, constructed in place).
  template <class F>
  task_node* make(F&& f) {
    task_node* n = free_;
    if (n != nullptr) {
      free_ = n->next_free;
      --count_;
    } else {
      n = new task_node;
    }
    if constexpr (std::is_same_v<std::remove_cvref_t<F>, task_fn>) {
      n->fn = std::forward<F>(f);
    } else {
      n->fn.emplace(std::forward<F>(f));
    }
    return n;
  }

  void recycle(task_node* n) noexcept {
    n->fn.reset();
    if (count_ >= max_cached) {
      delete n;
      return;
    }
    n->next_free = free_;
    free_ = n;
    ++count_;
  }

 private:
  static constexpr std::size_t max_cached = 4096;
  task_node* free_ = nullptr;
  std::size_t count_ = 0;
};

inline task_node_cache& node_cache() {
  thread_local task_node_cache cache;
  return cache;
}

}  // namespace ptk::detail
