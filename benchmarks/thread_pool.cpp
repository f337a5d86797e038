// ptk::thread_pool against oneTBB, asio::thread_pool and a mutex + condition
// variable pool, each scenario side by side in one run. See the ratio table at the
// end of the output (ptk/peer < 1 means ptk is faster).
#include <ptk/detail/futex.hpp>
#include <ptk/thread.hpp>

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#if PTK_BENCH_HAVE_ASIO
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#endif
#if PTK_BENCH_HAVE_TBB
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_reduce.h>
#include <oneapi/tbb/task_arena.h>
#include <oneapi/tbb/task_group.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

#include "compare.hpp"
#include "mutex_pool.hpp"

namespace {

using ptk::detail::futex_word;

unsigned all_workers() { return std::max(1U, std::thread::hardware_concurrency()); }

// --- recursive fib(30), one task per call above the leaves ---------------------------

long fib_ptk(ptk::thread_pool& pool, int n) {
  if (n < 2) return n;
  long a = 0;
  ptk::task_group g{pool};
  g.run([&] { a = fib_ptk(pool, n - 1); });
  const long b = fib_ptk(pool, n - 2);
  g.wait();
  return a + b;
}

#if PTK_BENCH_HAVE_TBB
long fib_tbb(int n) {
  if (n < 2) return n;
  long a = 0;
  tbb::task_group g;
  g.run([&] { a = fib_tbb(n - 1); });
  const long b = fib_tbb(n - 2);
  g.wait();
  return a + b;
}

#endif

constexpr int fib_n = 30;
constexpr long fib_expected = 832040;

void BM_fib30_ptk(benchmark::State& state) {
  ptk::thread_pool pool{all_workers()};
  for (auto _ : state) {
    const long r = pool.submit([&] { return fib_ptk(pool, fib_n); }).get();
    if (r != fib_expected) state.SkipWithError("wrong result");
  }
}

#if PTK_BENCH_HAVE_TBB
void BM_fib30_tbb(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(all_workers()));
  for (auto _ : state) {
    long r = 0;
    arena.execute([&] { r = fib_tbb(fib_n); });
    if (r != fib_expected) state.SkipWithError("wrong result");
  }
}

#endif

// --- spawn overhead on one worker: a binary tree of tasks, fib(25) -----------------
// With one worker nothing is stolen, so the time per spawned task is the pool's own
// cost: creating, queueing, running and joining one task.

constexpr int spawn_fib_n = 25;
constexpr long spawned_tasks = 121392;  // calls of fib(25) with n >= 2: one spawn each

void BM_spawn_1worker_ptk(benchmark::State& state) {
  ptk::thread_pool pool{1};
  for (auto _ : state) {
    const long r = pool.submit([&] { return fib_ptk(pool, spawn_fib_n); }).get();
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations() * spawned_tasks);
  state.counters["ns_per_task"] =
      benchmark::Counter(static_cast<double>(state.iterations() * spawned_tasks),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

#if PTK_BENCH_HAVE_TBB
void BM_spawn_1worker_tbb(benchmark::State& state) {
  tbb::task_arena arena(1);
  for (auto _ : state) {
    long r = 0;
    arena.execute([&] { r = fib_tbb(spawn_fib_n); });
    benchmark::DoNotOptimize(r);
  }
  state.SetItemsProcessed(state.iterations() * spawned_tasks);
  state.counters["ns_per_task"] =
      benchmark::Counter(static_cast<double>(state.iterations() * spawned_tasks),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
#endif

// --- 1M empty tasks posted from an outside thread, until all have run -------------
// Each iteration builds the pool, posts, and drains it (join), the same for all.

constexpr int post_count = 1'000'000;

void BM_post_1M_external_ptk(benchmark::State& state) {
  for (auto _ : state) {
    ptk::thread_pool pool{all_workers()};
    for (int i = 0; i < post_count; ++i) pool.post([] {});
    pool.wait_idle();
  }
  state.SetItemsProcessed(state.iterations() * post_count);
}

#if PTK_BENCH_HAVE_ASIO
void BM_post_1M_external_asio(benchmark::State& state) {
  for (auto _ : state) {
    asio::thread_pool pool{all_workers()};
    for (int i = 0; i < post_count; ++i) asio::post(pool, [] {});
    pool.wait();
  }
  state.SetItemsProcessed(state.iterations() * post_count);
}

#endif

#if PTK_BENCH_HAVE_TBB
void BM_post_1M_external_tbb(benchmark::State& state) {
  tbb::task_arena arena(static_cast<int>(all_workers()));
  for (auto _ : state) {
    tbb::task_group g;
    for (int i = 0; i < post_count; ++i) arena.execute([&] { g.run([] {}); });
    arena.execute([&] { g.wait(); });
  }
  state.SetItemsProcessed(state.iterations() * post_count);
}

#endif

void BM_post_1M_external_mutex_pool(benchmark::State& state) {
  for (auto _ : state) {
    ptk::bench::mutex_pool pool{all_workers()};
    for (int i = 0; i < post_count; ++i) pool.post([] {});
  }
  state.SetItemsProcessed(state.iterations() * post_count);
}

// --- parallel_reduce: sum of 10M doubles ----------------------------------------

const std::vector<double>& ten_million() {
  static const std::vector<double> v = [] {
    std::vector<double> x(10'000'000);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<double>(i % 1000) * 0.5;
    return x;
  }();
  return v;
}

void BM_reduce_10M_ptk(benchmark::State& state) {
  const auto& v = ten_million();
  ptk::thread_pool pool{all_workers()};
  for (auto _ : state) {
    const double s = ptk::parallel_reduce(
        pool, 0, v.size(), 0.0, [&](std::size_t i) { return v[i]; }, std::plus<>{});
    benchmark::DoNotOptimize(s);
  }
}

#if PTK_BENCH_HAVE_TBB
// tbb::parallel_reduce over the ten million doubles, with `body` folding one range.
template <class Body>
void reduce_10M_tbb(benchmark::State& state, Body body) {
  const auto& v = ten_million();
  tbb::task_arena arena(static_cast<int>(all_workers()));
  for (auto _ : state) {
    double s = 0;
    arena.execute([&] {
      s = tbb::parallel_reduce(
          tbb::blocked_range<std::size_t>(0, v.size()), 0.0,
          [&](const tbb::blocked_range<std::size_t>& r, double acc) { return body(v, r, acc); },
          std::plus<>{});
    });
    benchmark::DoNotOptimize(s);
  }
}

void BM_reduce_10M_tbb(benchmark::State& state) {
  reduce_10M_tbb(state, [](const std::vector<double>& v, const tbb::blocked_range<std::size_t>& r,
                           double acc) {
    for (std::size_t i = r.begin(); i < r.end(); ++i) acc += v[i];
    return acc;
  });
}

// A reference, not the target's peer: the TBB body written by hand the way ptk's
// parallel_reduce folds a chunk (four quarters with their own accumulators), to show
// how much of ptk's lead is that fold rather than scheduling.
void BM_reduce_10M_tbb_4acc(benchmark::State& state) {
  reduce_10M_tbb(state, [](const std::vector<double>& v, const tbb::blocked_range<std::size_t>& r,
                           double acc) {
    const std::size_t q = r.size() / 4;
    const std::size_t lo = r.begin();
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    for (std::size_t k = 0; k < q; ++k) {
      a0 += v[lo + k];
      a1 += v[lo + q + k];
      a2 += v[lo + 2 * q + k];
      a3 += v[lo + 3 * q + k];
    }
    for (std::size_t i = lo + 4 * q; i < r.end(); ++i) a3 += v[i];
    return acc + (((a0 + a1) + a2) + a3);
  });
}

#endif

// --- wake-up latency: post to an idle (sleeping) pool until the task runs -------------
// One iteration: post a task that sets a flag and wakes the poster, who sleeps on a
// futex until then. Between iterations the timer is paused until every worker has
// gone back to sleep in the kernel, so each iteration measures a wake from idle.

char thread_state(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) return '?';
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (n <= 0) return '?';
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');
  return p != nullptr && p[1] == ' ' ? p[2] : '?';
}

// Measurement hygiene only: a thread that does not look asleep within a second is
// measured as it is (never a hang).
void wait_until_sleeping(const std::vector<pid_t>& tids) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  for (pid_t t : tids) {
    while (thread_state(t) != 'S' && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::yield();
    }
  }
}

void reply_and_wake(futex_word& done) {
  done.store(1, std::memory_order_release);
  ptk::detail::futex_wake(done);
}

// Waits for the task's reply. @return false when none came within 10 s: the pool lost
// the wake-up (or the task), which the caller reports instead of hanging.
bool wait_reply(futex_word& done) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (done.load(std::memory_order_acquire) == 0) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    ptk::detail::futex_wait_until(done, 0, give_up);
  }
  done.store(0, std::memory_order_relaxed);
  return true;
}

// Where threads run decides what a wake-up costs (same CPU: a context switch;
// another, idle CPU: an inter-processor interrupt, on a VM a hypervisor exit), so
// every variant runs the measuring thread on CPU 0 and the woken thread on CPU 1.
void pin_self_to(unsigned cpu) {
  if (std::thread::hardware_concurrency() < 2) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  ::pthread_setaffinity_np(::pthread_self(), sizeof set, &set);
}

class main_on_cpu0 {
 public:
  main_on_cpu0() {
    ::pthread_getaffinity_np(::pthread_self(), sizeof saved_, &saved_);
    pin_self_to(0);
  }
  ~main_on_cpu0() { ::pthread_setaffinity_np(::pthread_self(), sizeof saved_, &saved_); }
  main_on_cpu0(const main_on_cpu0&) = delete;
  main_on_cpu0& operator=(const main_on_cpu0&) = delete;

 private:
  cpu_set_t saved_{};
};

template <class Post>
void measure_wakeup(benchmark::State& state, const std::vector<pid_t>& tids, Post post) {
  const main_on_cpu0 pinned;
  futex_word done{0};
  for (auto _ : state) {
    state.PauseTiming();
    wait_until_sleeping(tids);
    state.ResumeTiming();
    post([&done] { reply_and_wake(done); });
    if (!wait_reply(done)) {
      state.SkipWithError("the posted task did not run within 10 s (a lost wake-up)");
      break;
    }
  }
}

std::vector<pid_t> tids_of(auto& run_on_each, unsigned n) {
  std::vector<pid_t> tids(n, 0);
  std::atomic<unsigned> seen{0};
  // Shared with the tasks: the last one to arrive may still be inside
  // arrive_and_wait() when this function has seen the count reach zero and
  // returned (a latch on this stack hung a benchmark run that way).
  const auto all = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(n));
  for (unsigned i = 0; i < n; ++i) {
    run_on_each([&tids, &seen, all] {
      pin_self_to(1);
      tids[seen.fetch_add(1)] = static_cast<pid_t>(::gettid());
      all->arrive_and_wait();  // keeps each worker busy until all have reported
    });
  }
  all->wait();
  return tids;
}

void BM_wakeup_latency_ptk(benchmark::State& state) {
  ptk::thread_pool pool{1};
  auto post = [&](auto f) { pool.post(std::move(f)); };
  const auto tids = tids_of(post, 1);
  measure_wakeup(state, tids, post);
}

#if PTK_BENCH_HAVE_ASIO
void BM_wakeup_latency_asio(benchmark::State& state) {
  asio::thread_pool pool{1};
  auto post = [&](auto f) { asio::post(pool, std::move(f)); };
  const auto tids = tids_of(post, 1);
  measure_wakeup(state, tids, post);
}

#endif

void BM_wakeup_latency_mutex_pool(benchmark::State& state) {
  ptk::bench::mutex_pool pool{1};
  auto post = [&](auto f) { pool.post(std::move(f)); };
  const auto tids = tids_of(post, 1);
  measure_wakeup(state, tids, post);
}

// The floor: a raw futex wake of a sleeping thread that then wakes us back.
void BM_wakeup_latency_raw_futex(benchmark::State& state) {
  futex_word go{0};
  futex_word done{0};
  std::atomic<pid_t> tid{0};
  const main_on_cpu0 pinned;
  std::thread t([&] {
    pin_self_to(1);
    tid = static_cast<pid_t>(::gettid());
    for (;;) {
      while (go.load(std::memory_order_acquire) == 0) ptk::detail::futex_wait(go, 0);
      if (go.exchange(0) == 2) return;
      reply_and_wake(done);
    }
  });
  while (tid.load() == 0) std::this_thread::yield();
  const std::vector<pid_t> tids{tid.load()};
  for (auto _ : state) {
    state.PauseTiming();
    wait_until_sleeping(tids);
    state.ResumeTiming();
    go.store(1, std::memory_order_release);
    ptk::detail::futex_wake(go);
    if (!wait_reply(done)) {
      state.SkipWithError("the woken thread did not reply within 10 s");
      break;
    }
  }
  go.store(2);
  ptk::detail::futex_wake(go);
  t.join();
}

// --- idle CPU: what a pool of all workers costs while it has nothing to do ----------
// One iteration: run one task (so every worker has started), then measure this
// process's CPU time over one second of idleness. metric = percent of one core.

long process_cpu_us() {
  rusage r{};
  ::getrusage(RUSAGE_SELF, &r);
  return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000L + r.ru_utime.tv_usec +
         r.ru_stime.tv_usec;
}

template <class Pool, class Post>
void measure_idle(benchmark::State& state, Pool& pool, Post post) {
  for (auto _ : state) {
    std::latch ran{1};
    post(pool, [&ran] { ran.count_down(); });
    ran.wait();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let spinning end
    const long before = process_cpu_us();
    std::this_thread::sleep_for(std::chrono::seconds(1));  // the measurement window
    const long used = process_cpu_us() - before;
    state.counters["cpu_pct"] = static_cast<double>(used) / 1e4;
    state.counters["metric"] = static_cast<double>(used) / 1e4;
  }
}

void BM_idle_cpu_ptk(benchmark::State& state) {
  ptk::thread_pool pool{all_workers()};
  measure_idle(state, pool, [](auto& p, auto f) { p.post(std::move(f)); });
}

#if PTK_BENCH_HAVE_ASIO
void BM_idle_cpu_asio(benchmark::State& state) {
  asio::thread_pool pool{all_workers()};
  measure_idle(state, pool, [](auto& p, auto f) { asio::post(p, std::move(f)); });
}
#endif

void BM_idle_cpu_mutex_pool(benchmark::State& state) {
  ptk::bench::mutex_pool pool{all_workers()};
  measure_idle(state, pool, [](auto& p, auto f) { p.post(std::move(f)); });
}

}  // namespace

BENCHMARK(BM_fib30_ptk)->Name("BM_fib30/ptk")->Unit(benchmark::kMillisecond)->UseRealTime();
#if PTK_BENCH_HAVE_TBB
BENCHMARK(BM_fib30_tbb)->Name("BM_fib30/tbb")->Unit(benchmark::kMillisecond)->UseRealTime();
#endif
BENCHMARK(BM_spawn_1worker_ptk)
    ->Name("BM_spawn_fib25_1worker/ptk")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#if PTK_BENCH_HAVE_TBB
BENCHMARK(BM_spawn_1worker_tbb)
    ->Name("BM_spawn_fib25_1worker/tbb")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#endif
BENCHMARK(BM_post_1M_external_ptk)
    ->Name("BM_post_1M_external/ptk")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#if PTK_BENCH_HAVE_ASIO
BENCHMARK(BM_post_1M_external_asio)
    ->Name("BM_post_1M_external/asio")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#endif
#if PTK_BENCH_HAVE_TBB
BENCHMARK(BM_post_1M_external_tbb)
    ->Name("BM_post_1M_external/tbb")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#endif
BENCHMARK(BM_post_1M_external_mutex_pool)
    ->Name("BM_post_1M_external/mutex_pool")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_reduce_10M_ptk)
    ->Name("BM_reduce_10M_doubles/ptk")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#if PTK_BENCH_HAVE_TBB
BENCHMARK(BM_reduce_10M_tbb)
    ->Name("BM_reduce_10M_doubles/tbb")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_reduce_10M_tbb_4acc)
    ->Name("BM_reduce_10M_doubles/tbb_4acc")
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
#endif
BENCHMARK(BM_wakeup_latency_ptk)
    ->Name("BM_wakeup_latency/ptk")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
#if PTK_BENCH_HAVE_ASIO
BENCHMARK(BM_wakeup_latency_asio)
    ->Name("BM_wakeup_latency/asio")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
#endif
BENCHMARK(BM_wakeup_latency_mutex_pool)
    ->Name("BM_wakeup_latency/mutex_pool")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_wakeup_latency_raw_futex)
    ->Name("BM_wakeup_latency/raw_futex")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

BENCHMARK(BM_idle_cpu_ptk)->Name("BM_idle_cpu_1s/ptk")->Iterations(1)->UseRealTime();
#if PTK_BENCH_HAVE_ASIO
BENCHMARK(BM_idle_cpu_asio)->Name("BM_idle_cpu_1s/asio")->Iterations(1)->UseRealTime();
#endif
BENCHMARK(BM_idle_cpu_mutex_pool)->Name("BM_idle_cpu_1s/mutex_pool")->Iterations(1)->UseRealTime();

PTK_BENCHMARK_MAIN()
