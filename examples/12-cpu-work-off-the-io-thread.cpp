// 12 — moving CPU-bound work from an I/O coroutine to a thread pool, and back.
//
// An io_context thread serves many connections at once only if nothing on it
// computes for long: while one handler crunches numbers, every other handler on that
// thread waits. Python's asyncio has the same rule and the same fix,
// `await loop.run_in_executor(pool, crunch)`. In ptk a coroutine moves itself:
// `co_await pool.schedule()` continues on a pool worker, `co_await
// ptk::schedule_on(io)` comes back to the io thread with the result.
//
// To make the difference visible, a heartbeat task on the io thread ticks every
// 10 ms (an asio::steady_timer through ptk::sleep_for). The same computation runs
// twice: on the io thread, where the heartbeat stalls, then on the pool, where it
// keeps ticking. (The tick counts depend on the machine; the stall does not.)
#include <ptk/coro.hpp>
#include <ptk/coro_asio.hpp>

#include <asio/io_context.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <thread>

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

// CPU-bound work the optimiser cannot remove: xorshift steps for about `d`.
std::uint64_t crunch(std::chrono::milliseconds d) {
  std::uint64_t x = 88172645463325252ULL;
  const steady::time_point until = steady::now() + d;
  while (steady::now() < until) {
    for (int i = 0; i < 10000; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
  }
  return x;
}

struct heartbeat {
  std::atomic<int> ticks{0};
  std::atomic<bool> stop{false};
};

ptk::task<void> beat(asio::io_context& io, heartbeat& h) {
  while (!h.stop.load()) {
    co_await ptk::sleep_for(io, 10ms);
    h.ticks.fetch_add(1);
  }
}

const char* where(asio::io_context& io, ptk::thread_pool& pool) {
  if (io.get_executor().running_in_this_thread()) return "io thread";
  if (pool.running_in_this_thread()) return "pool worker";
  return "elsewhere";
}

// A request handler: parse on the io thread, compute, reply on the io thread.
ptk::task<void> handle(asio::io_context& io, ptk::thread_pool& pool, heartbeat& h, bool offload) {
  co_await ptk::schedule_on(io);
  std::printf("  request parsed on the %s\n", where(io, pool));
  const int before = h.ticks.load();
  if (offload) co_await pool.schedule();  // the one line that frees the io thread
  const std::uint64_t r = crunch(200ms);
  std::printf("  200 ms of computing on the %s (result %llx)\n", where(io, pool),
              static_cast<unsigned long long>(r & 0xffff));
  if (offload) co_await ptk::schedule_on(io);  // back to reply
  const int during = h.ticks.load() - before;
  std::printf("  reply sent from the %s; heartbeat ticked %d times meanwhile (%s)\n",
              where(io, pool), during, during < 5 ? "stalled" : "kept going");
}

}  // namespace

int main() {
  asio::io_context io;
  ptk::thread_pool pool{2};
  heartbeat h;
  bool failed = false;
  // Everything below runs as asio operations on io; io.run() returns when all ended.
  ptk::async_run(io, beat(io, h), [&](std::exception_ptr e) { failed |= e != nullptr; });
  ptk::async_run(
      io,
      [](asio::io_context& ctx, ptk::thread_pool& p, heartbeat& hb) -> ptk::task<void> {
        std::puts("computing on the io thread:");
        co_await handle(ctx, p, hb, false);
        std::puts("computing on the pool:");
        co_await handle(ctx, p, hb, true);
        hb.stop = true;
      }(io, pool, h),
      [&](std::exception_ptr e) { failed |= e != nullptr; });
  io.run();
  std::printf("heartbeat ticks in all: %d\n", h.ticks.load());
  return failed ? 1 : 0;
}
