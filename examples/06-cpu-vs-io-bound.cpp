// 06 — CPU-bound versus I/O-bound work, and what a global lock does to each.
//
// Threads speed up CPU-bound work only up to the number of cores, and only if the
// threads can compute at the same time. CPython's global interpreter lock (GIL) lets
// one thread at a time run Python code, so CPU-bound Python threads get no speed-up
// at all; this program imitates it with one global std::mutex held around every unit
// of work. I/O-bound work is different: a thread waiting for a disk or a network
// needs no core and holds no lock (CPython releases the GIL around blocking calls),
// so many threads overlap their waits even on 2 cores, and even under the lock.
//
// The I/O is simulated with std::this_thread::sleep_for: sleeping is the work here,
// not a way to synchronise anything. The table's numbers are measured on this run:
// they change from machine to machine and from run to run.
#include <ptk/thread.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

double ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

// CPU time used so far by the whole process, all threads together.
std::chrono::nanoseconds process_cpu_time() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// CPU-bound work the optimiser cannot remove: xorshift steps.
std::uint64_t churn(std::uint64_t x, std::uint64_t steps) {
  for (std::uint64_t i = 0; i < steps; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

// How many churn steps take about `target` on this machine and this build, so that
// the program takes about as long with or without optimisation or sanitizers.
std::uint64_t steps_taking(std::chrono::microseconds target) {
  constexpr std::uint64_t probe = 200'000;
  const auto t0 = steady::now();
  volatile std::uint64_t sink = churn(1, probe);
  (void)sink;
  const auto took = std::max(steady::now() - t0, steady::duration(1));
  return std::max<std::uint64_t>(
      1, probe * static_cast<std::uint64_t>(std::chrono::nanoseconds(target).count()) /
             static_cast<std::uint64_t>(std::chrono::nanoseconds(took).count()));
}

// The global lock, as CPython's GIL: whoever runs "interpreted" code holds it.
std::mutex gil;

struct measurement {
  double wall_ms;
  double cpu_ms;
  std::uint64_t checksum;
};

// Runs `units` calls of unit(i) on a pool of `threads` workers and measures them.
template <class Unit>
measurement run(unsigned threads, int units, const Unit& unit) {
  ptk::thread_pool pool{{.workers = threads, .name = "bound"}};
  const auto cpu0 = process_cpu_time();
  const auto t0 = steady::now();
  std::vector<ptk::future<std::uint64_t>> results;
  results.reserve(static_cast<std::size_t>(units));
  for (int i = 0; i < units; ++i)
    results.push_back(pool.submit(unit, static_cast<std::uint64_t>(i)));
  std::uint64_t checksum = 0;
  for (auto& r : results) checksum ^= r.get();  // XOR: the order of completion does not matter
  return {ms(steady::now() - t0), ms(process_cpu_time() - cpu0), checksum};
}

void print_row(const char* scenario, unsigned threads, const measurement& m, double baseline_ms) {
  std::printf("%-40s %7u %10.1f %8.1f %8.2fx\n", scenario, threads, m.wall_ms, m.cpu_ms,
              baseline_ms / m.wall_ms);
}

}  // namespace

int main() {
  const unsigned cores = std::max(1U, std::thread::hardware_concurrency());
  constexpr unsigned io_threads = 8;
  constexpr int cpu_units = 32;
  constexpr int io_units = 32;
  constexpr auto io_wait = std::chrono::milliseconds(10);

  const std::uint64_t cpu_steps = steps_taking(std::chrono::microseconds(6000));
  const std::uint64_t parse_steps = steps_taking(std::chrono::microseconds(100));

  // One unit of CPU-bound work: about 6 ms of computing.
  const auto cpu_unit = [cpu_steps](std::uint64_t i) { return churn(i + 1, cpu_steps); };
  // The same, but only while holding the global lock.
  const auto cpu_unit_locked = [cpu_steps](std::uint64_t i) {
    const std::lock_guard lock(gil);
    return churn(i + 1, cpu_steps);
  };
  // One unit of I/O-bound work: prepare a request (0.1 ms of CPU), wait 10 ms for the
  // answer, parse it (0.1 ms of CPU).
  const auto io_unit = [parse_steps, io_wait](std::uint64_t i) {
    const std::uint64_t request = churn(i + 1, parse_steps);
    std::this_thread::sleep_for(io_wait);
    return churn(request, parse_steps);
  };
  // As CPython does it: the lock is held to compute and released to wait.
  const auto io_unit_locked = [parse_steps, io_wait](std::uint64_t i) {
    std::uint64_t request = 0;
    {
      const std::lock_guard lock(gil);
      request = churn(i + 1, parse_steps);
    }
    std::this_thread::sleep_for(io_wait);
    const std::lock_guard lock(gil);
    return churn(request, parse_steps);
  };
  // The mistake to avoid: holding the lock across the wait.
  const auto io_unit_lock_held = [parse_steps, io_wait](std::uint64_t i) {
    const std::lock_guard lock(gil);
    const std::uint64_t request = churn(i + 1, parse_steps);
    std::this_thread::sleep_for(io_wait);
    return churn(request, parse_steps);
  };

  std::printf(
      "%u cores; %d CPU-bound units of ~6 ms; %d I/O-bound units of 10 ms waiting + "
      "0.2 ms computing\n\n",
      cores, cpu_units, io_units);
  std::printf("%-40s %7s %10s %8s %9s\n", "scenario", "threads", "elapsed ms", "cpu ms",
              "speed-up");

  const measurement cpu_1 = run(1, cpu_units, cpu_unit);
  print_row("CPU-bound", 1, cpu_1, cpu_1.wall_ms);
  const measurement cpu_n = run(cores, cpu_units, cpu_unit);
  print_row("CPU-bound", cores, cpu_n, cpu_1.wall_ms);
  const measurement cpu_gil = run(cores, cpu_units, cpu_unit_locked);
  print_row("CPU-bound, global lock (GIL)", cores, cpu_gil, cpu_1.wall_ms);

  const measurement io_1 = run(1, io_units, io_unit);
  print_row("I/O-bound", 1, io_1, io_1.wall_ms);
  const measurement io_n = run(io_threads, io_units, io_unit);
  print_row("I/O-bound", io_threads, io_n, io_1.wall_ms);
  const measurement io_gil = run(io_threads, io_units, io_unit_locked);
  print_row("I/O-bound, global lock released to wait", io_threads, io_gil, io_1.wall_ms);
  const measurement io_held = run(io_threads, io_units, io_unit_lock_held);
  print_row("I/O-bound, global lock held across wait", io_threads, io_held, io_1.wall_ms);

  const bool same_cpu = cpu_1.checksum == cpu_n.checksum && cpu_1.checksum == cpu_gil.checksum;
  const bool same_io = io_1.checksum == io_n.checksum && io_1.checksum == io_gil.checksum &&
                       io_1.checksum == io_held.checksum;
  std::printf("\nevery run computed the same results: %s\n", same_cpu && same_io ? "yes" : "no");
  std::printf(
      "cpu ms / elapsed ms = how many cores were kept busy: %.2f for CPU-bound work on %u "
      "threads,\n%.2f under the global lock, %.2f for I/O-bound work on %u threads.\n",
      cpu_n.cpu_ms / cpu_n.wall_ms, cores, cpu_gil.cpu_ms / cpu_gil.wall_ms,
      io_n.cpu_ms / io_n.wall_ms, io_threads);
  return 0;
}
