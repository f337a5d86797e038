// 05 — parallel loops: parallel_for, parallel_reduce and fork-join with task_group.
//
// Three ways to spread one computation over a pool's workers:
//   * ptk::parallel_for(pool, first, last, body): body(i) for every index, in chunks;
//   * ptk::parallel_reduce(pool, first, last, identity, map, reduce): a map and an
//     associative combine, with chunk results combined in index order, so that the
//     result (a floating-point sum included) is the same on every run;
//   * ptk::task_group: run() some tasks, wait() for them; groups nest, which is how
//     recursive divide-and-conquer (fork-join) is written.
// Each is timed against the plain sequential loop; the speed-up printed is whatever
// this machine gave on this run.
#include <ptk/thread.hpp>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

double ms(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// Times `f()` and returns its result; the elapsed milliseconds go to `elapsed_ms`.
template <class F>
auto timed(double& elapsed_ms, F&& f) {
  const auto t0 = steady::now();
  auto result = f();
  elapsed_ms = ms(steady::now() - t0);
  return result;
}

void print_timing(const char* what, double sequential_ms, double parallel_ms) {
  std::printf("  %-16s sequential %7.1f ms, parallel %7.1f ms, speed-up %.2fx\n", what,
              sequential_ms, parallel_ms, sequential_ms / parallel_ms);
}

// Some floating-point work per element, heavy enough to be worth a thread.
double value_at(std::size_t i) {
  const double x = static_cast<double>(i) * 1e-3;
  return std::sin(x) * std::sqrt(x) + std::cos(x / 3.0);
}

long fib_sequential(int n) { return n < 2 ? n : fib_sequential(n - 1) + fib_sequential(n - 2); }

// Fork-join: fork fib(n-1) as a task, compute fib(n-2) here, join. Below the cutoff
// a task would cost more than the work it carries, so the recursion goes sequential.
long fib_parallel(ptk::thread_pool& pool, int n) {
  constexpr int cutoff = 20;
  if (n < cutoff) return fib_sequential(n);
  long a = 0;
  ptk::task_group group{pool};
  group.run([&] { a = fib_parallel(pool, n - 1); });
  const long b = fib_parallel(pool, n - 2);
  group.wait();  // on a worker, runs queued tasks while it waits
  return a + b;
}

}  // namespace

int main() {
  ptk::thread_pool pool;  // one worker per hardware thread
  std::printf("a pool of %u workers (the calling thread works on each loop too)\n\n", pool.size());

  constexpr std::size_t n = 3'000'000;

  // 1. parallel_for: fill a vector. Each index is written by exactly one call, so the
  //    body needs no synchronisation.
  std::printf("1. parallel_for over %zu indices\n", n);
  std::vector<double> sequential(n);
  std::vector<double> parallel(n);
  double seq_ms = 0;
  double par_ms = 0;
  (void)timed(seq_ms, [&] {
    for (std::size_t i = 0; i < n; ++i) sequential[i] = value_at(i);
    return 0;
  });
  (void)timed(par_ms, [&] {
    ptk::parallel_for(pool, 0, n, [&](std::size_t i) { parallel[i] = value_at(i); });
    return 0;
  });
  print_timing("fill:", seq_ms, par_ms);
  std::printf("  results identical to the sequential loop: %s\n",
              sequential == parallel ? "yes" : "no");

  // 2. parallel_reduce: sum. Floating-point addition is not associative, so a
  //    parallel sum generally differs from the sequential one in the last bits; but
  //    ptk combines chunk results in index order, so for a given pool size and grain
  //    it is the same on every run, however the chunks were scheduled.
  std::printf("\n2. parallel_reduce: deterministic floating-point sums\n");
  // Summing values already in memory does one addition per 8 bytes read: memory
  // bandwidth, not CPU, is the limit, and more threads barely help.
  const auto stored = [&parallel](std::size_t i) { return parallel[i]; };
  const double stored_seq = timed(seq_ms, [&] {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += sequential[i];
    return s;
  });
  const double stored_par =
      timed(par_ms, [&] { return ptk::parallel_reduce(pool, 0, n, 0.0, stored, std::plus<>{}); });
  print_timing("stored values:", seq_ms, par_ms);
  std::printf("  (sums %.17g and %.17g)\n", stored_seq, stored_par);
  // Computing each value inside the reduction makes it CPU-bound: it scales.
  const double seq_sum = timed(seq_ms, [&] {
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += value_at(i);
    return s;
  });
  const double par_sum =
      timed(par_ms, [&] { return ptk::parallel_reduce(pool, 0, n, 0.0, value_at, std::plus<>{}); });
  print_timing("computed values:", seq_ms, par_ms);
  const double again = ptk::parallel_reduce(pool, 0, n, 0.0, value_at, std::plus<>{});
  const double other_grain = ptk::parallel_reduce(pool, 0, n, 0.0, value_at, std::plus<>{}, 1000);
  std::printf("  sequential            %.17g\n", seq_sum);
  std::printf("  parallel              %.17g\n", par_sum);
  std::printf(
      "  parallel, again       %.17g (bit-identical: %s)\n", again,
      std::bit_cast<std::uint64_t>(par_sum) == std::bit_cast<std::uint64_t>(again) ? "yes" : "no");
  std::printf("  parallel, grain 1000  %.17g (other chunks, other rounding: %+.3g)\n", other_grain,
              other_grain - par_sum);

  // A reduction that is not a sum: the largest value and where it is. Any associative
  // combine works; the identity is its neutral element.
  struct best {
    double value;
    std::size_t index;
  };
  const best top = ptk::parallel_reduce(
      pool, 0, n, best{-1e300, 0},
      [&](std::size_t i) {
        return best{parallel[i], i};
      },
      [](best a, best b) { return b.value > a.value ? b : a; });
  std::printf("  max: %.6f at index %zu\n", top.value, top.index);

  // 3. task_group: recursive fork-join. The root runs on the pool, so that every
  //    wait inside the recursion is a worker's wait, which runs queued tasks.
  std::printf("\n3. task_group: fork-join fib(36)\n");
  const std::uint64_t stolen_before = pool.stats().stolen;
  const long fs = timed(seq_ms, [] { return fib_sequential(36); });
  const long fp = timed(
      par_ms, [&pool] { return pool.submit([&pool] { return fib_parallel(pool, 36); }).get(); });
  print_timing("fib(36):", seq_ms, par_ms);
  std::printf("  sequential %ld, parallel %ld; tasks stolen between workers meanwhile: %llu\n", fs,
              fp, static_cast<unsigned long long>(pool.stats().stolen - stolen_before));

  // 4. An exception thrown by the body stops the loop (chunks not yet started are
  //    skipped) and is rethrown to the caller.
  std::printf("\n4. an exception inside a loop\n");
  try {
    ptk::parallel_for(pool, 0, n, [](std::size_t i) {
      if (i == 1234) throw std::out_of_range("index " + std::to_string(i) + " is cursed");
    });
  } catch (const std::out_of_range& e) {
    std::printf("  parallel_for rethrew std::out_of_range: \"%s\"\n", e.what());
  }
  return 0;
}
