// co_await process::async_wait(): exits reported through the reactor, with real
// children, on ptk coroutines.
#include <ptk/coro.hpp>
#include <ptk/process.hpp>

#include <signal.h>

#include <chrono>
#include <stop_token>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {
ptk::task<ptk::exit_status> wait_exit(ptk::process& p) { co_return co_await p.async_wait(); }

ptk::task<int> sum_of_codes(std::vector<ptk::process>& ps) {
  int sum = 0;
  for (auto& p : ps) sum += (co_await p.async_wait()).code();
  co_return sum;
}
}  // namespace

TEST_CASE("co_await async_wait reports a child's exit without blocking a thread") {
  auto p = ptk::spawn(ptk::command{"sh"}.args({"-c", "sleep 0.1; exit 4"}));
  const ptk::exit_status s = ptk::sync_wait(wait_exit(p));
  CHECK(s.code() == 4);
  CHECK(p.status().has_value());  // reaped
}

TEST_CASE("async_wait on a child that already exited completes at once") {
  auto p = ptk::spawn(ptk::command{"true"});
  REQUIRE(ptk::test::eventually([&] { return p.try_wait().has_value(); }));
  CHECK(ptk::sync_wait(wait_exit(p)).success());
}

TEST_CASE("one coroutine awaits several children in turn") {
  std::vector<ptk::process> ps;
  for (int code = 1; code <= 5; ++code) {
    ps.push_back(ptk::spawn(ptk::command{"sh"}.args({"-c", "exit " + std::to_string(code)})));
  }
  CHECK(ptk::sync_wait(sum_of_codes(ps)) == 15);
}

TEST_CASE("many children awaited at once by concurrent coroutines") {
  std::vector<ptk::process> ps;
  std::vector<ptk::task<ptk::exit_status>> waits;
  for (int i = 0; i < 20; ++i) ps.push_back(ptk::spawn(ptk::command{"sleep"}.arg("0.05")));
  for (auto& p : ps) waits.push_back(wait_exit(p));
  const auto statuses = ptk::sync_wait(ptk::when_all(std::move(waits)));
  int ok = 0;
  for (const auto& s : statuses) ok += s.success() ? 1 : 0;
  CHECK(ok == 20);
}

TEST_CASE("a stop request cancels async_wait and leaves the child running") {
  auto p = ptk::spawn(ptk::command{"sleep"}.arg("30"));
  std::stop_source stop;
  // Whether the stop lands before the wait is registered or while it sleeps in the
  // reactor, the wait must end with operation_cancelled.
  std::thread stopper([&] { stop.request_stop(); });
  CHECK_THROWS_AS(ptk::sync_wait(wait_exit(p), stop.get_token()), ptk::operation_cancelled);
  stopper.join();
  CHECK_FALSE(p.try_wait().has_value());
  CHECK(p.terminate().signal() == SIGTERM);
}
