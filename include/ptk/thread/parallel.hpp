/// @file
/// @brief Parallel loops on a ptk::thread_pool: parallel_for and parallel_reduce.
///
/// The index range is cut into chunks of `grain` indices (by default about eight
/// chunks per worker). Chunks are spawned by recursive halving, so idle workers
/// steal large halves first; the calling thread works on the range too and, on a
/// pool worker, runs other tasks while it waits. Loops nest without deadlock.
#pragma once

#include <ptk/config.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

namespace ptk {

namespace detail {

// Shared by every chunk of one loop; lives on the caller's stack, which outlives
// the chunks because the caller waits for all of them.
template <class Leaf>
class chunked_loop {
 public:
  chunked_loop(thread_pool& pool, std::size_t first, std::size_t last, std::size_t grain,
               Leaf& leaf)
      : pool_(pool), first_(first), n_(last - first), leaf_(leaf) {
    if (grain == 0) grain = std::max<std::size_t>(1, n_ / (8 * std::size_t{pool.size()}));
    chunks_ = (n_ + grain - 1) / grain;
  }

  [[nodiscard]] std::size_t chunks() const noexcept { return chunks_; }

  // Runs chunks [0, chunks) with the caller's help, then rethrows the first
  // exception a chunk threw.
  void run() {
    if (chunks_ == 0) return;
    group_.run_range(*this, 0, chunks_);
    group_.wait();
  }

  void run_chunk(std::size_t c) {
    if (group_.failed()) return;  // a chunk threw: skip the rest
    // The first n % chunks chunks get one index more than the others: sizes differ
    // by at most one and boundaries depend only on n and chunks (deterministic).
    const std::size_t base = n_ / chunks_;
    const std::size_t extra = n_ % chunks_;
    const std::size_t lo = first_ + c * base + std::min(c, extra);
    const std::size_t hi = lo + base + (c < extra ? 1 : 0);
    leaf_(c, lo, hi);
  }

 private:
  class group {
   public:
    void run_range(chunked_loop& loop, std::size_t lo, std::size_t hi) {
      // Keep the left half, give away the right half, until one chunk is left.
      while (hi - lo > 1) {
        const std::size_t mid = lo + (hi - lo) / 2;
        pending_.fetch_add(1, std::memory_order_relaxed);
        loop.pool_.post([&loop, mid, hi] {
          loop.group_.run_range(loop, mid, hi);
          loop.group_.finish_one();
        });
        hi = mid;
      }
      try {
        loop.run_chunk(lo);
      } catch (...) {
        record(std::current_exception());
      }
    }
    void wait() {
      wait_on_word(pending_, sleeper, [](std::uint32_t v) { return (v & ~sleeper) == 0; });
      if (failed_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
    }
    [[nodiscard]] bool failed() const noexcept { return failed_.load(std::memory_order_relaxed); }

   private:
    static constexpr std::uint32_t sleeper = 1U << 31;
    void finish_one() noexcept {
      const std::uint32_t old = pending_.fetch_sub(1, std::memory_order_acq_rel);
      if ((old & ~sleeper) == 1 && (old & sleeper) != 0) futex_wake_all(pending_);
    }
    void record(std::exception_ptr e) noexcept {
      bool expected = false;
      if (claimed_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
        error_ = std::move(e);
        failed_.store(true, std::memory_order_release);
      }
    }
    futex_word pending_{0};
    std::atomic<bool> claimed_{false};
    std::atomic<bool> failed_{false};
    std::exception_ptr error_;
  };

  thread_pool& pool_;
  std::size_t first_;
  std::size_t n_;
  std::size_t chunks_ = 0;
  Leaf& leaf_;
  group group_;
};

}  // namespace detail

/// @brief Calls `body(i)` for every `i` in [first, last), in parallel on `pool`.
///
/// Blocks until every call has returned; the calling thread runs part of the range
/// itself. If a call throws, the remaining chunks are skipped and the first
/// exception is rethrown here.
///
/// @code
/// std::vector<double> v(1'000'000);
/// ptk::parallel_for(pool, 0, v.size(), [&](std::size_t i) { v[i] = std::sqrt(double(i)); });
/// @endcode
/// @param pool the pool to run on.
/// @param first the first index.
/// @param last one past the last index (nothing runs if last <= first).
/// @param body called once per index, concurrently from several threads.
/// @param grain indices per chunk; 0 picks about eight chunks per worker.
template <class F>
requires std::invocable<F&, std::size_t>
void parallel_for(thread_pool& pool, std::size_t first, std::size_t last, F&& body,
                  std::size_t grain = 0) {
  if (last <= first) return;
  auto leaf = [&body](std::size_t, std::size_t lo, std::size_t hi) {
    for (std::size_t i = lo; i < hi; ++i) std::invoke(body, i);
  };
  detail::chunked_loop<decltype(leaf)> loop(pool, first, last, grain, leaf);
  loop.run();
}

/// @brief Maps every index of [first, last) and combines the results, in parallel.
///
/// Each chunk folds `reduce(acc, map(i))` over its indices starting from `identity`;
/// the chunk results are then combined left to right in index order, so for a fixed
/// pool size and grain the result is deterministic (floating-point sums included).
///
/// @code
/// double sum = ptk::parallel_reduce(pool, 0, v.size(), 0.0,
///                                   [&](std::size_t i) { return v[i]; }, std::plus<>{});
/// @endcode
/// @param pool the pool to run on.
/// @param first the first index.
/// @param last one past the last index.
/// @param identity the starting value of every chunk: an identity of `reduce` (0 for +).
/// @param map turns an index into a value.
/// @param reduce combines two values; must be associative.
/// @param grain indices per chunk; 0 picks about eight chunks per worker.
/// @return `identity` combined with every mapped value.
template <class T, class Map, class Reduce>
requires std::invocable<Map&, std::size_t> &&
    std::is_convertible_v<std::invoke_result_t<Reduce&, T, std::invoke_result_t<Map&, std::size_t>>,
                          T>
        T parallel_reduce(thread_pool& pool, std::size_t first, std::size_t last, T identity,
                          Map&& map, Reduce&& reduce, std::size_t grain = 0) {
  if (last <= first) return identity;
  std::vector<std::optional<T>> partial;
  auto leaf = [&](std::size_t chunk, std::size_t lo, std::size_t hi) {
    T acc = identity;
    for (std::size_t i = lo; i < hi; ++i)
      acc = std::invoke(reduce, std::move(acc), std::invoke(map, i));
    partial[chunk].emplace(std::move(acc));
  };
  detail::chunked_loop<decltype(leaf)> loop(pool, first, last, grain, leaf);
  partial.resize(loop.chunks());
  loop.run();
  T result = std::move(identity);
  for (auto& p : partial) result = std::invoke(reduce, std::move(result), std::move(*p));
  return result;
}

}  // namespace ptk
