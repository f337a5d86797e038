// ptk::process_pool next to Python's concurrent.futures.ProcessPoolExecutor (the pool
// the original REST demo used) and, for CPU-bound work, next to ptk::thread_pool.
//
// Every scenario reports nanoseconds per unit (a task, or a whole start-up) in the
// "metric" counter, so compare.hpp pairs the ptk row with each peer row:
//   BM_pool_latency_trivial        one task in flight, submit to result, 1 worker
//   BM_pool_throughput_trivial_2w  100,000 trivial tasks in flight, 2 workers
//                                  (Python runs 20,000: at ~10k tasks/s it would
//                                  take 10 s more for the same per-task figure)
//   BM_pool_fib25_x16_2w           16 x fib(25) on 2 workers: an interpreter
//                                  comparison as much as a pool comparison
//   BM_pool_fib30_x8               8 x fib(30) on all cores, processes vs threads
//   BM_pool_startup_4w             construction until 4 workers serve; Python with
//                                  its default "fork" start method and with "spawn"
//                                  (a fresh interpreter, like ptk's re-executed binary)
//
// The Python rows come from benchmarks/baselines/process_pool.py, run once as a
// child process by the first benchmark that needs it (/usr/bin/python3; missing
// Python loses those rows, nothing else).
#include <ptk/process/run.hpp>
#include <ptk/process_pool.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "compare.hpp"

namespace {

using steady = std::chrono::steady_clock;

int trivial(int x) { return x; }
PTK_REMOTE(trivial);

long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
PTK_REMOTE(fib);

// Python's figures, by scenario name, in ns per unit; empty if Python is missing.
const std::map<std::string, double>& python_rows() {
  static const std::map<std::string, double> rows = [] {
    std::map<std::string, double> out;
    try {
      auto r = ptk::run({"/usr/bin/python3", PTK_BENCH_POOL_SCRIPT});
      std::istringstream in(r.out);
      std::string name;
      double ns = 0;
      while (in >> name >> ns) out[name] = ns;
    } catch (const std::exception&) {
    }
    return out;
  }();
  return rows;
}

void add_python(benchmark::State& state, const std::string& scenario,
                const std::string& peer = "python_pool") {
  const auto& rows = python_rows();
  if (auto it = rows.find(scenario); it != rows.end()) state.counters["peer:" + peer] = it->second;
}

double ns_per(steady::duration d, double units) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) /
         units;
}

void BM_latency(benchmark::State& state) {
  ptk::process_pool pool{{.workers = 1}};
  pool.wait_ready_for(std::chrono::seconds(30));
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(pool.submit(trivial, ++i).get());
  add_python(state, "BM_pool_latency_trivial");
}

void BM_throughput(benchmark::State& state) {
  constexpr int tasks = 100'000;
  ptk::process_pool pool{{.workers = 2, .prefetch = 64}};
  pool.wait_ready_for(std::chrono::seconds(30));
  steady::duration total{};
  std::vector<ptk::future<int>> fs;
  fs.reserve(tasks);
  for (auto _ : state) {
    const auto t0 = steady::now();
    for (int i = 0; i < tasks; ++i) fs.push_back(pool.submit(trivial, i));
    for (auto& f : fs) benchmark::DoNotOptimize(f.get());
    total += steady::now() - t0;
    fs.clear();
  }
  const double per_task = ns_per(total, static_cast<double>(state.iterations()) * tasks);
  state.counters["metric"] = per_task;
  state.counters["tasks/s"] = 1e9 / per_task;
  add_python(state, "BM_pool_throughput_trivial_2w");
}

void BM_throughput_default_prefetch(benchmark::State& state) {
  constexpr int tasks = 100'000;
  ptk::process_pool pool{{.workers = 2}};
  pool.wait_ready_for(std::chrono::seconds(30));
  steady::duration total{};
  std::vector<ptk::future<int>> fs;
  fs.reserve(tasks);
  for (auto _ : state) {
    const auto t0 = steady::now();
    for (int i = 0; i < tasks; ++i) fs.push_back(pool.submit(trivial, i));
    for (auto& f : fs) benchmark::DoNotOptimize(f.get());
    total += steady::now() - t0;
    fs.clear();
  }
  const double per_task = ns_per(total, static_cast<double>(state.iterations()) * tasks);
  state.counters["metric"] = per_task;
  state.counters["tasks/s"] = 1e9 / per_task;
  add_python(state, "BM_pool_throughput_trivial_2w");
}

void BM_fib25(benchmark::State& state) {
  constexpr int tasks = 16;
  ptk::process_pool pool{{.workers = 2}};
  pool.wait_ready_for(std::chrono::seconds(30));
  steady::duration total{};
  for (auto _ : state) {
    const auto t0 = steady::now();
    std::vector<ptk::future<long>> fs;
    for (int i = 0; i < tasks; ++i) fs.push_back(pool.submit(fib, 25));
    for (auto& f : fs) benchmark::DoNotOptimize(f.get());
    total += steady::now() - t0;
  }
  state.counters["metric"] = ns_per(total, static_cast<double>(state.iterations()) * tasks);
  add_python(state, "BM_pool_fib25_x16_2w");
}

// 8 x fib(30) on all cores, in processes and, in the same loop, on threads: both see
// the same machine load.
void BM_fib30(benchmark::State& state) {
  constexpr int tasks = 8;
  const unsigned cores = std::max(1U, std::thread::hardware_concurrency());
  ptk::process_pool pool{{.workers = cores, .prefetch = 1}};
  ptk::thread_pool threads(cores);
  pool.wait_ready_for(std::chrono::seconds(30));
  steady::duration in_processes{};
  steady::duration in_threads{};
  for (auto _ : state) {
    auto t0 = steady::now();
    {
      std::vector<ptk::future<long>> fs;
      for (int i = 0; i < tasks; ++i) fs.push_back(pool.submit(fib, 30));
      for (auto& f : fs) benchmark::DoNotOptimize(f.get());
    }
    in_processes += steady::now() - t0;
    t0 = steady::now();
    {
      std::vector<ptk::future<long>> fs;
      for (int i = 0; i < tasks; ++i) fs.push_back(threads.submit([] { return fib(30); }));
      for (auto& f : fs) benchmark::DoNotOptimize(f.get());
    }
    in_threads += steady::now() - t0;
  }
  const double n = static_cast<double>(state.iterations());
  state.counters["metric"] = ns_per(in_processes, n);
  state.counters["peer:thread_pool"] = ns_per(in_threads, n);
}

void BM_startup(benchmark::State& state) {
  steady::duration total{};
  for (auto _ : state) {
    const auto t0 = steady::now();
    ptk::process_pool pool{{.workers = 4}};
    if (!pool.wait_ready_for(std::chrono::seconds(30)))
      state.SkipWithError("workers did not start");
    total += steady::now() - t0;
  }
  state.counters["metric"] = ns_per(total, static_cast<double>(state.iterations()));
  add_python(state, "BM_pool_startup_4w_fork", "python_fork");
  add_python(state, "BM_pool_startup_4w_spawn", "python_spawn");
}

// One worker, from spawn to serving: what a replacement after a crash costs.
void BM_startup_one(benchmark::State& state) {
  steady::duration total{};
  for (auto _ : state) {
    const auto t0 = steady::now();
    ptk::process_pool pool{{.workers = 1}};
    if (!pool.wait_ready_for(std::chrono::seconds(30))) state.SkipWithError("worker did not start");
    total += steady::now() - t0;
  }
  state.counters["metric"] = ns_per(total, static_cast<double>(state.iterations()));
}

}  // namespace

BENCHMARK(BM_latency)
    ->Name("BM_pool_latency_trivial/ptk_process_pool")
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_throughput)
    ->Name("BM_pool_throughput_trivial_2w/ptk_process_pool_prefetch64")
    ->UseRealTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_throughput_default_prefetch)
    ->Name("BM_pool_throughput_trivial_2w/ptk_process_pool")
    ->UseRealTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_fib25)
    ->Name("BM_pool_fib25_x16_2w/ptk_process_pool")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_fib30)
    ->Name("BM_pool_fib30_x8/ptk_process_pool")
    ->UseRealTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_startup)
    ->Name("BM_pool_startup_4w/ptk_process_pool")
    ->UseRealTime()
    ->Iterations(10)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_startup_one)
    ->Name("BM_pool_startup_1w/ptk_process_pool")
    ->UseRealTime()
    ->Iterations(20)
    ->Unit(benchmark::kMillisecond);

// Workers are this program re-executed: they serve from the first line of main.
int main(int argc, char** argv) {
  ptk::process_pool::serve_if_worker();
  return ptk::bench::run_main(argc, argv);
}
