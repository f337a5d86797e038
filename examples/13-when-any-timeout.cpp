// 13 — a timeout with when_any: whichever finishes first wins, the other is stopped.
//
// Python writes `await asyncio.wait_for(fetch(), timeout=0.1)`. In ptk a timeout is
// just a race: `co_await ptk::when_any(fetch(), ptk::sleep_for(timers, 100ms))`. The
// result is a std::variant whose index() says who won. The loser is not abandoned:
// when_any asks it to stop through its std::stop_token (a sleeping task is woken with
// ptk::operation_cancelled) and waits until it has finished, so nothing outlives the
// race.
#include <ptk/coro.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <variant>

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

// A fake query to a server that needs `latency` to answer.
ptk::task<std::string> query(ptk::timer_queue& timers, std::chrono::milliseconds latency) {
  try {
    co_await ptk::sleep_for(timers, latency);
  } catch (const ptk::operation_cancelled&) {
    std::printf("    query (%lld ms): stopped by when_any, cleaning up\n",
                static_cast<long long>(latency.count()));
    throw;
  }
  co_return "answer after " + std::to_string(latency.count()) + " ms";
}

// The query, or nothing if it takes longer than `timeout`.
ptk::task<void> with_timeout(ptk::timer_queue& timers, std::chrono::milliseconds latency,
                             std::chrono::milliseconds timeout) {
  std::printf("query needing %lld ms, timeout %lld ms\n", static_cast<long long>(latency.count()),
              static_cast<long long>(timeout.count()));
  const steady::time_point t0 = steady::now();
  auto r = co_await ptk::when_any(query(timers, latency), ptk::sleep_for(timers, timeout));
  const double took = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
  if (r.index() == 0) {
    std::printf("    got \"%s\" in %.1f ms\n", std::get<0>(r).c_str(), took);
  } else {
    std::printf("    timed out after %.1f ms\n", took);
  }
}

}  // namespace

int main() {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  ptk::sync_wait(with_timeout(timers, 20ms, 100ms));    // the query wins
  ptk::sync_wait(with_timeout(timers, 5000ms, 100ms));  // the timeout wins, the query stops
  std::printf("timers still pending: %zu (every loser finished before when_any returned)\n",
              timers.pending());
  return timers.pending() == 0 ? 0 : 1;
}
