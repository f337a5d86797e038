#include <ptk/coro/async_scope.hpp>
#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/coro/timer.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

ptk::task<void> count_on_pool(ptk::thread_pool& pool, std::atomic<int>& n) {
  co_await pool.schedule();
  n.fetch_add(1);
}

}  // namespace

TEST_CASE("async_scope starts a spawned task at once, on the calling thread") {
  ptk::async_scope scope;
  bool ran = false;
  auto body = [](bool& r) -> ptk::task<void> {
    r = true;
    co_return;
  };
  scope.spawn(body(ran));
  CHECK(ran);
  CHECK(scope.active() == 0);
  ptk::sync_wait(scope.join());
}

TEST_CASE("join waits for every spawned task") {
  ptk::thread_pool pool{2};
  std::atomic<int> n{0};
  auto run = [&]() -> ptk::task<void> {
    ptk::async_scope scope;
    for (int i = 0; i < 1000; ++i) scope.spawn(count_on_pool(pool, n));
    co_await scope.join();
    CHECK(scope.active() == 0);
  };
  ptk::sync_wait(run());
  CHECK(n.load() == 1000);
}

TEST_CASE("join on a scope with nothing spawned completes at once") {
  ptk::async_scope scope;
  ptk::sync_wait(scope.join());
  ptk::sync_wait(scope.join());
}

TEST_CASE("join rethrows the first exception of a spawned task, once") {
  ptk::thread_pool pool{2};
  std::atomic<int> n{0};
  ptk::async_scope scope;
  auto fails = [](ptk::thread_pool& p) -> ptk::task<int> {
    co_await p.schedule();
    throw std::runtime_error("spawned failure");
  };
  scope.spawn(fails(pool));
  for (int i = 0; i < 10; ++i) scope.spawn(count_on_pool(pool, n));
  CHECK_THROWS_WITH(ptk::sync_wait(scope.join()), "spawned failure");
  CHECK(n.load() == 10);         // the others finished before join completed
  ptk::sync_wait(scope.join());  // the exception is reported once
}

TEST_CASE("request_stop reaches spawned tasks through their stop token") {
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  std::atomic<int> cancelled{0};
  ptk::async_scope scope;
  auto sleeper = [](ptk::timer_queue& t, std::atomic<int>& c) -> ptk::task<void> {
    try {
      co_await ptk::sleep_for(t, 1h);
    } catch (const ptk::operation_cancelled&) {
      c.fetch_add(1);
    }
  };
  for (int i = 0; i < 5; ++i) scope.spawn(sleeper(timers, cancelled));
  REQUIRE(ptk::test::eventually([&] { return timers.pending() == 5; }));
  scope.request_stop();
  ptk::sync_wait(scope.join());
  CHECK(cancelled.load() == 5);
}

TEST_CASE("destroying an async_scope with running tasks terminates with a message") {
  const auto r = ptk::test::in_forked_child([] {
    ptk::async_scope scope;
    scope.spawn(std::suspend_always{});  // never resumed
  });
  CHECK(WIFSIGNALED(r.status));
  CHECK(WTERMSIG(r.status) == SIGABRT);
  CHECK(r.stderr_text.find("ptk::async_scope: destroyed with spawned coroutines still running") !=
        std::string::npos);
}
