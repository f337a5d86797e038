// 11 — asyncio-style gather: several sleeping tasks overlap.
//
// Python's `await asyncio.gather(a(), b(), c())` runs coroutines concurrently and
// waits for all of them. In ptk the same is `co_await ptk::when_all(a(), b(), c())`.
// Each task here sleeps (a stand-in for waiting on a network or a disk) on a
// ptk::timer_queue; a sleeping task holds no thread, so the sleeps overlap and the
// whole gather takes about as long as the longest sleep, not the sum of them.
// Awaited one after another, the same tasks take the sum.
#include <ptk/coro.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <tuple>

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;
const steady::time_point start = steady::now();

double ms_since_start() {
  return std::chrono::duration<double, std::milli>(steady::now() - start).count();
}

double ms(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// A fake download: waits `delay`, then gives the size of what it "fetched".
ptk::task<int> fetch(ptk::timer_queue& timers, std::string name, std::chrono::milliseconds delay) {
  std::printf("%7.1f ms  %-6s starts, will wait %lld ms\n", ms_since_start(), name.c_str(),
              static_cast<long long>(delay.count()));
  co_await ptk::sleep_for(timers, delay);  // no thread is blocked while it waits
  std::printf("%7.1f ms  %-6s done\n", ms_since_start(), name.c_str());
  co_return static_cast<int>(name.size() * 100);
}

ptk::task<int> gather(ptk::timer_queue& timers) {
  // All three start at once; the tuple holds their results in argument order.
  auto [a, b, c] = co_await ptk::when_all(
      fetch(timers, "users", 300ms), fetch(timers, "orders", 200ms), fetch(timers, "stock", 100ms));
  co_return a + b + c;
}

ptk::task<int> one_after_another(ptk::timer_queue& timers) {
  int total = co_await fetch(timers, "users", 300ms);
  total += co_await fetch(timers, "orders", 200ms);
  total += co_await fetch(timers, "stock", 100ms);
  co_return total;
}

}  // namespace

int main() {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};  // after the pool: destroyed first

  std::puts("gather (ptk::when_all): the three waits overlap");
  const steady::time_point t0 = steady::now();
  const int gathered = ptk::sync_wait(gather(timers));
  const double overlapped = ms(steady::now() - t0);

  std::puts("\none after another (co_await each in turn)");
  const steady::time_point t1 = steady::now();
  const int sequential = ptk::sync_wait(one_after_another(timers));
  const double summed = ms(steady::now() - t1);

  std::printf("\nsum of the waits: 600 ms\n");
  std::printf("gather took        %6.1f ms  (about the longest wait, 300 ms)\n", overlapped);
  std::printf("one by one took    %6.1f ms  (about the sum)\n", summed);
  std::printf("same results: %s (%d bytes)\n", gathered == sequential ? "yes" : "no", gathered);
  return gathered == sequential ? 0 : 1;
}
