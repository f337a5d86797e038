#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/coro/timer.hpp>
#include <ptk/coro/when_all.hpp>
#include <ptk/coro/when_any.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

ptk::task<steady::time_point> sleep_then_now(ptk::timer_queue& timers,
                                             std::chrono::milliseconds d) {
  co_await ptk::sleep_for(timers, d);
  co_return steady::now();
}

// The kernel thread ids of this process's threads named exactly `name`.
std::vector<pid_t> threads_named(const std::string& name) {
  std::vector<pid_t> out;
  for (const auto& [tid, n] : ptk::test::threads_of_this_process()) {
    if (n == name) out.push_back(tid);
  }
  return out;
}

}  // namespace

TEST_CASE("sleep_for wakes no earlier than the deadline") {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  for (const auto d : {1ms, 5ms, 20ms}) {
    const steady::time_point start = steady::now();
    const steady::time_point woke = ptk::sync_wait(sleep_then_now(timers, d));
    CHECK(woke - start >= d);
  }
}

TEST_CASE("sleep_until wakes no earlier than the deadline, on a pool worker") {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  auto body = [](ptk::timer_queue& t, ptk::thread_pool& p) -> ptk::task<bool> {
    const steady::time_point deadline = steady::now() + 10ms;
    co_await ptk::sleep_until(t, deadline);
    CHECK(steady::now() >= deadline);
    co_return p.running_in_this_thread();
  };
  CHECK(ptk::sync_wait(body(timers, pool)));
}

TEST_CASE("a sleep whose deadline has passed completes without suspending") {
  ptk::timer_queue timers;
  auto body = [](ptk::timer_queue& t) -> ptk::task<std::thread::id> {
    co_await ptk::sleep_for(t, 0ms);
    co_await ptk::sleep_until(t, steady::now() - 1s);
    co_return std::this_thread::get_id();
  };
  CHECK(ptk::sync_wait(body(timers)) == std::this_thread::get_id());
  CHECK(timers.pending() == 0);
}

TEST_CASE("a stop request cancels a long sleep promptly with operation_cancelled") {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  std::stop_source stop;
  std::atomic<bool> cancelled{false};
  auto sleeper = [&]() -> ptk::task<void> {
    try {
      co_await ptk::sleep_for(timers, 1h);
    } catch (const ptk::operation_cancelled&) {
      cancelled = true;
    }
  };
  const steady::time_point start = steady::now();
  std::thread requester([&] {
    REQUIRE(ptk::test::eventually([&] { return timers.pending() == 1; }));
    stop.request_stop();
  });
  ptk::sync_wait(sleeper(), stop.get_token());
  requester.join();
  CHECK(cancelled.load());
  CHECK(steady::now() - start < 30s);
  CHECK(timers.pending() == 0);
}

TEST_CASE("a sleep awaited with stop already requested throws at once") {
  ptk::timer_queue timers;
  std::stop_source stop;
  stop.request_stop();
  CHECK_THROWS_AS(ptk::sync_wait(ptk::sleep_for(timers, 1h), stop.get_token()),
                  ptk::operation_cancelled);
  CHECK(timers.pending() == 0);
}

TEST_CASE("10000 concurrent sleepers all complete") {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  std::atomic<int> woke{0};
  auto sleeper = [](ptk::timer_queue& t, std::atomic<int>& n, int i) -> ptk::task<void> {
    co_await ptk::sleep_for(t, std::chrono::microseconds(i % 50 * 100));
    n.fetch_add(1, std::memory_order_relaxed);
  };
  std::vector<ptk::task<void>> all;
  for (int i = 0; i < 10000; ++i) all.push_back(sleeper(timers, woke, i));
  ptk::sync_wait(ptk::when_all(std::move(all)));
  CHECK(woke.load() == 10000);
  CHECK(timers.pending() == 0);
}

TEST_CASE("when_any of a slow task and a short sleep is a timeout that cancels the task") {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  std::atomic<bool> slow_cancelled{false};
  auto slow = [&]() -> ptk::task<int> {
    try {
      co_await ptk::sleep_for(timers, 1h);
    } catch (const ptk::operation_cancelled&) {
      slow_cancelled = true;
      throw;
    }
    co_return 1;
  };
  auto r = ptk::sync_wait(ptk::when_any(slow(), ptk::sleep_for(timers, 5ms)));
  CHECK(r.index() == 1);
  CHECK(slow_cancelled.load());
  CHECK(timers.pending() == 0);
}

TEST_CASE("destroying a timer_queue cancels the pending sleeps and waits for the sleepers") {
  ptk::thread_pool pool{2};
  std::atomic<int> cancelled{0};
  auto sleeper = [](ptk::timer_queue& t, std::atomic<int>& n) -> ptk::task<void> {
    try {
      co_await ptk::sleep_for(t, 1h);
    } catch (const ptk::operation_cancelled&) {
      n.fetch_add(1);
    }
  };
  std::vector<ptk::task<void>> sleepers;
  auto queue = std::make_unique<ptk::timer_queue>(pool);
  for (int i = 0; i < 3; ++i) sleepers.push_back(sleeper(*queue, cancelled));
  auto all = ptk::when_all(std::move(sleepers));
  std::thread waiter([&] { ptk::sync_wait(all); });
  REQUIRE(ptk::test::eventually([&] { return queue->pending() == 3; }));
  queue.reset();  // returns once every sleeper has left the queue
  waiter.join();
  CHECK(cancelled.load() == 3);
}

TEST_CASE("an idle timer_queue's thread sleeps in the kernel and leaks no descriptor") {
  const int fds = ptk::test::open_fd_count();
  {
    ptk::timer_queue timers;
    CHECK(ptk::sync_wait(sleep_then_now(timers, 1ms)) > steady::time_point{});
    const std::vector<pid_t> tids = threads_named("ptk-timer");
    REQUIRE(tids.size() == 1);
    CHECK(ptk::test::eventually([&] { return ptk::test::thread_state(tids[0]) == 'S'; }));
  }
  CHECK(threads_named("ptk-timer").empty());
  CHECK(ptk::test::open_fd_count() == fds);
}
