// 21 — ptk::process_pool: CPU-bound work in worker processes, next to threads.
//
// Python runs CPU-bound work in processes because its threads share one interpreter
// lock. C++ threads have no such lock, so why processes? Isolation: a task in a
// worker process cannot corrupt the caller's memory, and a task that crashes, hangs
// or leaks costs one worker, never the program (tutorial 22 shows that). This
// program runs the same CPU-bound function on a ptk::thread_pool and on a
// ptk::process_pool and prints both times: for tasks of a few milliseconds and up,
// the processes cost about the same as threads.
//
// How it works:
//   * PTK_REMOTE(fib) registers fib by name, before main runs;
//   * a worker is this very program, executed once more (/proc/self/exe), never a
//     fork of this possibly multithreaded process. It serves tasks from the call to
//     ptk::process_pool::serve_if_worker(), first thing in main, so nothing below
//     that line runs in the workers;
//   * submit() encodes the arguments with ptk::codec, a worker runs fib and sends
//     the result back to the future.
#include <ptk/process_pool.hpp>
#include <ptk/thread.hpp>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

double ms(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
PTK_REMOTE(fib);

// Which process ran the task: shows that the work really left this process.
int worker_pid() { return static_cast<int>(::getpid()); }
PTK_REMOTE(worker_pid);

}  // namespace

int main() {
  ptk::process_pool::serve_if_worker();  // in a worker: serve tasks here, never return

  const unsigned cores = std::max(1U, std::thread::hardware_concurrency());
  constexpr int n = 32;
  constexpr int tasks = 8;
  std::printf("fib(%d) x %d on %u cores; this process is pid %d\n\n", n, tasks, cores,
              static_cast<int>(::getpid()));

  // Threads.
  long thread_sum = 0;
  steady::duration thread_time{};
  {
    ptk::thread_pool threads(cores);
    const auto t0 = steady::now();
    std::vector<ptk::future<long>> fs;
    for (int i = 0; i < tasks; ++i) fs.push_back(threads.submit([] { return fib(n); }));
    for (auto& f : fs) thread_sum += f.get();
    thread_time = steady::now() - t0;
  }

  // Processes.
  ptk::process_pool pool{{.workers = cores}};
  const auto s0 = steady::now();
  pool.wait_ready_for(std::chrono::seconds(30));
  const auto startup = steady::now() - s0;
  std::printf("process pool: %zu workers started and serving in %.1f ms; pids:", pool.size(),
              ms(startup));
  std::vector<ptk::future<int>> pids;
  for (std::size_t i = 0; i < pool.size() * 2; ++i) pids.push_back(pool.submit(worker_pid));
  for (auto& p : pids) std::printf(" %d", p.get());
  std::printf("\n\n");

  const auto t0 = steady::now();
  std::vector<ptk::future<long>> fs;
  for (int i = 0; i < tasks; ++i) fs.push_back(pool.submit(fib, n));
  long process_sum = 0;
  for (auto& f : fs) process_sum += f.get();
  const auto process_time = steady::now() - t0;

  std::printf("%-14s %10s %12s\n", "runs on", "time (ms)", "sum");
  std::printf("%-14s %10.1f %12ld\n", "thread_pool", ms(thread_time), thread_sum);
  std::printf("%-14s %10.1f %12ld\n", "process_pool", ms(process_time), process_sum);
  std::printf("\nsame results: %s; processes/threads time ratio: %.2f\n",
              thread_sum == process_sum ? "yes" : "NO", ms(process_time) / ms(thread_time));
  const auto s = pool.stats();
  std::printf("pool stats: %llu tasks done, %llu failed, %zu workers alive\n",
              static_cast<unsigned long long>(s.tasks_done),
              static_cast<unsigned long long>(s.tasks_failed), s.workers_alive);
  return thread_sum == process_sum ? 0 : 1;
}
