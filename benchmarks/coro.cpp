// ptk coroutines against asio's awaitable / co_spawn, and against plain posts to a
// ptk::thread_pool, each scenario side by side in one run. See the ratio table at the
// end of the output (ptk/peer < 1 means ptk is faster).
//
//   BM_task_await        create + co_await + complete a trivial task, one thread
//   BM_chain_1000        one co_await of a chain of 1000 nested co_awaits
//   BM_when_all_10k      10,000 tasks that each hop onto a pool, joined by when_all,
//                        against posting 10,000 plain functions to the same pool
//   BM_pingpong_1000     1000 round trips between two single-worker pools: one
//                        coroutine hops A -> B -> A, against a function on A posting
//                        to B posting back to A; and the same hops between two
//                        one-thread io_contexts, for a ptk task and an asio awaitable
//   BM_sleeping_1M       heap bytes per suspended sleeping task, 1,000,000 of them
//                        ("metric" counter, so the table compares bytes, not time)
#include <ptk/coro.hpp>
#include <ptk/coro_asio.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <malloc.h>

#include <asio/bind_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/post.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <memory>
#include <thread>
#include <vector>

#include "compare.hpp"

namespace {

using namespace std::chrono_literals;
using ptk::detail::futex_word;

unsigned all_workers() { return std::max(1U, std::thread::hardware_concurrency()); }

// --- create + co_await + complete a trivial task ----------------------------------

[[gnu::noinline]] ptk::task<int> trivial_ptk(int x) { co_return x + 1; }

ptk::task<void> loop_ptk(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    i = co_await trivial_ptk(i);
    benchmark::DoNotOptimize(i);
  }
}

void BM_task_await_ptk(benchmark::State& state) { ptk::sync_wait(loop_ptk(state)); }

[[gnu::noinline]] asio::awaitable<int> trivial_asio(int x) { co_return x + 1; }

asio::awaitable<void> loop_asio(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    i = co_await trivial_asio(i);
    benchmark::DoNotOptimize(i);
  }
}

void BM_task_await_asio(benchmark::State& state) {
  asio::io_context io;
  asio::co_spawn(io, loop_asio(state), asio::detached);
  io.run();
}

// --- a chain of 1000 nested co_awaits ---------------------------------------------

constexpr int chain_depth = 1000;

ptk::task<int> chain_ptk(int depth) {
  if (depth == 0) co_return 0;
  co_return 1 + co_await chain_ptk(depth - 1);
}

ptk::task<void> chain_loop_ptk(benchmark::State& state) {
  for (auto _ : state) {
    const int n = co_await chain_ptk(chain_depth);
    if (n != chain_depth) state.SkipWithError("wrong depth");
  }
}

void BM_chain_1000_ptk(benchmark::State& state) { ptk::sync_wait(chain_loop_ptk(state)); }

asio::awaitable<int> chain_asio(int depth) {
  if (depth == 0) co_return 0;
  co_return 1 + co_await chain_asio(depth - 1);
}

asio::awaitable<void> chain_loop_asio(benchmark::State& state) {
  for (auto _ : state) {
    const int n = co_await chain_asio(chain_depth);
    if (n != chain_depth) state.SkipWithError("wrong depth");
  }
}

void BM_chain_1000_asio(benchmark::State& state) {
  asio::io_context io;
  asio::co_spawn(io, chain_loop_asio(state), asio::detached);
  io.run();
}

// --- when_all of 10,000 tasks on a pool, against 10,000 posts ----------------------

constexpr int fan_out = 10'000;

ptk::task<void> hop(ptk::thread_pool& pool, std::atomic<int>& ran) {
  co_await pool.schedule();
  ran.fetch_add(1, std::memory_order_relaxed);
}

void BM_when_all_10k_ptk(benchmark::State& state) {
  ptk::thread_pool pool{all_workers()};
  std::atomic<int> ran{0};
  std::vector<ptk::task<void>> tasks;
  for (auto _ : state) {
    tasks.clear();
    tasks.reserve(fan_out);
    for (int i = 0; i < fan_out; ++i) tasks.push_back(hop(pool, ran));
    ptk::sync_wait(ptk::when_all(std::move(tasks)));
  }
  if (ran.load() != fan_out * static_cast<int>(state.iterations())) state.SkipWithError("lost");
}

// The same work as plain functions: post them all, wait until the last one ran.
void BM_when_all_10k_pool_post(benchmark::State& state) {
  ptk::thread_pool pool{all_workers()};
  std::atomic<int> ran{0};
  for (auto _ : state) {
    futex_word left{fan_out};
    for (int i = 0; i < fan_out; ++i) {
      pool.post([&] {
        ran.fetch_add(1, std::memory_order_relaxed);
        if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) ptk::detail::futex_wake_all(left);
      });
    }
    for (std::uint32_t v; (v = left.load(std::memory_order_acquire)) != 0;) {
      ptk::detail::futex_wait(left, v);
    }
  }
  if (ran.load() != fan_out * static_cast<int>(state.iterations())) state.SkipWithError("lost");
}

// asio's way: co_spawn 10,000 awaitables on an asio::thread_pool.
void BM_when_all_10k_asio_co_spawn(benchmark::State& state) {
  asio::thread_pool pool{all_workers()};
  std::atomic<int> ran{0};
  for (auto _ : state) {
    std::latch done{fan_out};
    for (int i = 0; i < fan_out; ++i) {
      asio::co_spawn(
          pool,
          [&]() -> asio::awaitable<void> {
            ran.fetch_add(1, std::memory_order_relaxed);
            co_return;
          },
          [&](std::exception_ptr) { done.count_down(); });
    }
    done.wait();
  }
  pool.join();
  if (ran.load() != fan_out * static_cast<int>(state.iterations())) state.SkipWithError("lost");
}

// --- ping-pong between two executors ---------------------------------------------

constexpr int round_trips = 1000;

ptk::task<void> pingpong_ptk(ptk::thread_pool& a, ptk::thread_pool& b) {
  co_await a.schedule();
  for (int i = 0; i < round_trips; ++i) {
    co_await b.schedule();
    co_await a.schedule();
  }
}

void BM_pingpong_1000_ptk(benchmark::State& state) {
  ptk::thread_pool a{1};
  ptk::thread_pool b{1};
  for (auto _ : state) ptk::sync_wait(pingpong_ptk(a, b));
}

ptk::task<void> pingpong_ptk_asio(asio::io_context& a, asio::io_context& b) {
  co_await ptk::schedule_on(a);
  for (int i = 0; i < round_trips; ++i) {
    co_await ptk::schedule_on(b);
    co_await ptk::schedule_on(a);
  }
}

// The same ptk coroutine hopping between two io_contexts (ptk::schedule_on).
void BM_pingpong_1000_ptk_io_context(benchmark::State& state) {
  asio::io_context a;
  asio::io_context b;
  auto work_a = asio::make_work_guard(a);
  auto work_b = asio::make_work_guard(b);
  std::thread ta([&] { a.run(); });
  std::thread tb([&] { b.run(); });
  for (auto _ : state) ptk::sync_wait(pingpong_ptk_asio(a, b));
  work_a.reset();
  work_b.reset();
  ta.join();
  tb.join();
}

// The same hand-offs as plain functions: A posts to B, which posts back to A.
struct post_pingpong {
  ptk::thread_pool& a;
  ptk::thread_pool& b;
  futex_word& done;
  int left;
  void on_a() {
    if (left-- == 0) {
      done.store(1, std::memory_order_release);
      ptk::detail::futex_wake_all(done);
      return;
    }
    b.post([this] { a.post([this] { on_a(); }); });
  }
};

void BM_pingpong_1000_pool_post(benchmark::State& state) {
  ptk::thread_pool a{1};
  ptk::thread_pool b{1};
  for (auto _ : state) {
    futex_word done{0};
    post_pingpong p{a, b, done, round_trips};
    a.post([&p] { p.on_a(); });
    while (done.load(std::memory_order_acquire) == 0) ptk::detail::futex_wait(done, 0);
  }
}

// asio: a coroutine on io_context A hops to io_context B and back.
void BM_pingpong_1000_asio(benchmark::State& state) {
  asio::io_context a;
  asio::io_context b;
  auto work_a = asio::make_work_guard(a);
  auto work_b = asio::make_work_guard(b);
  std::thread ta([&] { a.run(); });
  std::thread tb([&] { b.run(); });
  for (auto _ : state) {
    std::latch done{1};
    asio::co_spawn(
        a,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < round_trips; ++i) {
            co_await asio::post(asio::bind_executor(b, asio::use_awaitable));
            co_await asio::post(asio::bind_executor(a, asio::use_awaitable));
          }
        },
        [&](std::exception_ptr) { done.count_down(); });
    done.wait();
  }
  work_a.reset();
  work_b.reset();
  ta.join();
  tb.join();
}

// --- memory of 1,000,000 suspended sleeping tasks --------------------------------
// Heap bytes in use (glibc's main arena plus mmapped blocks) after a million tasks
// have started and suspended in a one-hour sleep, minus before, divided by a million.
// Every allocation happens on the measuring thread, so the main arena sees it all.

constexpr int sleepers = 1'000'000;

std::size_t heap_in_use() {
  const struct mallinfo2 m = ::mallinfo2();
  return m.uordblks + m.hblkhd;
}

void report_bytes(benchmark::State& state, std::size_t before, std::size_t after) {
  const double per_task = static_cast<double>(after - before) / sleepers;
  state.counters["bytes_per_task"] = per_task;
  state.counters["metric"] = per_task;
}

// Woken by the scope's stop request at the end; the cancellation is expected.
ptk::task<void> sleeper_ptk(ptk::timer_queue& timers) {
  try {
    co_await ptk::sleep_for(timers, 1h);
  } catch (const ptk::operation_cancelled&) {
  }
}

void BM_sleeping_1M_ptk(benchmark::State& state) {
  for (auto _ : state) {
    ptk::timer_queue timers;  // no pool: a cancelled sleeper resumes in request_stop()
    const std::size_t before = heap_in_use();
    ptk::async_scope scope;
    for (int i = 0; i < sleepers; ++i) scope.spawn(sleeper_ptk(timers));
    const std::size_t after = heap_in_use();
    if (timers.pending() != sleepers) state.SkipWithError("not all asleep");
    report_bytes(state, before, after);
    scope.request_stop();
    ptk::sync_wait(scope.join());
  }
}

ptk::task<void> sleeper_ptk_asio(asio::io_context& io) {
  try {
    co_await ptk::sleep_for(io, 1h);
  } catch (const ptk::operation_cancelled&) {
  }
}

// A ptk task sleeping on an asio::steady_timer (ptk/coro_asio.hpp).
void BM_sleeping_1M_ptk_asio_timer(benchmark::State& state) {
  for (auto _ : state) {
    asio::io_context io;
    const std::size_t before = heap_in_use();
    ptk::async_scope scope;
    for (int i = 0; i < sleepers; ++i) scope.spawn(sleeper_ptk_asio(io));
    const std::size_t after = heap_in_use();
    report_bytes(state, before, after);
    scope.request_stop();  // posts the timer cancellations to io
    while (scope.active() != 0) io.poll();
    ptk::sync_wait(scope.join());
  }
}

asio::awaitable<void> sleeper_asio() {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  co_await t.async_wait(asio::use_awaitable);
}

void BM_sleeping_1M_asio(benchmark::State& state) {
  for (auto _ : state) {
    auto io = std::make_unique<asio::io_context>();
    const std::size_t before = heap_in_use();
    for (int i = 0; i < sleepers; ++i) asio::co_spawn(*io, sleeper_asio(), asio::detached);
    io->poll();  // every coroutine runs to its timer wait
    const std::size_t after = heap_in_use();
    report_bytes(state, before, after);
    io.reset();  // destroys the suspended coroutines
  }
}

}  // namespace

BENCHMARK(BM_task_await_ptk)->Name("BM_task_await/ptk");
BENCHMARK(BM_task_await_asio)->Name("BM_task_await/asio");
BENCHMARK(BM_chain_1000_ptk)->Name("BM_chain_1000/ptk")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_chain_1000_asio)->Name("BM_chain_1000/asio")->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_when_all_10k_ptk)
    ->Name("BM_when_all_10k/ptk")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_when_all_10k_pool_post)
    ->Name("BM_when_all_10k/pool_post")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_when_all_10k_asio_co_spawn)
    ->Name("BM_when_all_10k/asio_co_spawn")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_pingpong_1000_ptk)
    ->Name("BM_pingpong_1000/ptk")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_pingpong_1000_ptk_io_context)
    ->Name("BM_pingpong_1000/ptk_io_context")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_pingpong_1000_pool_post)
    ->Name("BM_pingpong_1000/pool_post")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_pingpong_1000_asio)
    ->Name("BM_pingpong_1000/asio")
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();
BENCHMARK(BM_sleeping_1M_ptk)
    ->Name("BM_sleeping_1M/ptk")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK(BM_sleeping_1M_ptk_asio_timer)
    ->Name("BM_sleeping_1M/ptk_asio_timer")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();
BENCHMARK(BM_sleeping_1M_asio)
    ->Name("BM_sleeping_1M/asio")
    ->Unit(benchmark::kMillisecond)
    ->Iterations(1)
    ->UseRealTime();

PTK_BENCHMARK_MAIN()
