#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/coro/when_all.hpp>
#include <ptk/coro/when_any.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

ptk::task<int> ready_one() { co_return 1; }

ptk::task<int> on_pool(ptk::thread_pool& pool, int v) {
  co_await pool.schedule();
  co_return v;
}

// Arrives, then waits (bounded) until `expected` children have arrived: only children
// that really run at the same time can all pass.
ptk::task<bool> meet(ptk::thread_pool& pool, std::atomic<int>& arrived, int expected) {
  co_await pool.schedule();
  arrived.fetch_add(1);
  co_return ptk::test::eventually([&] { return arrived.load() == expected; });
}

// Holds a pool worker until its stop token is stopped (bounded), then records whether
// it saw the stop. (It blocks the worker rather than re-posting itself: a worker runs
// its own deque before the shared queue, so a task re-posting itself from a worker
// would keep a task posted from outside waiting.)
ptk::task<int> until_stopped(ptk::thread_pool& pool, std::atomic<bool>& saw_stop,
                             std::atomic<bool>& finished) {
  co_await pool.schedule();
  const std::stop_token stop = co_await ptk::get_stop_token();
  saw_stop = ptk::test::eventually([&] { return stop.stop_requested(); });
  finished = true;
  co_return -1;
}

}  // namespace

TEST_CASE("when_all gives every result in order, void as std::monostate") {
  ptk::thread_pool pool{2};
  auto nothing = []() -> ptk::task<void> { co_return; };
  auto text = []() -> ptk::task<std::string> { co_return "two"; };
  auto moved = []() -> ptk::task<std::unique_ptr<int>> { co_return std::make_unique<int>(3); };
  auto [a, b, c, d] = ptk::sync_wait(ptk::when_all(on_pool(pool, 1), text(), nothing(), moved()));
  CHECK(a == 1);
  CHECK(b == "two");
  CHECK(std::is_same_v<decltype(c), std::monostate>);
  REQUIRE(d != nullptr);
  CHECK(*d == 3);
}

TEST_CASE("when_all is lazy: no child starts before it is awaited") {
  bool started = false;
  auto child = [](bool& s) -> ptk::task<void> {
    s = true;
    co_return;
  };
  auto all = ptk::when_all(child(started));
  CHECK_FALSE(started);
  ptk::sync_wait(all);
  CHECK(started);
}

TEST_CASE("when_all over a vector gives the results in the vector's order") {
  ptk::thread_pool pool{2};
  std::vector<ptk::task<int>> tasks;
  for (int i = 0; i < 100; ++i) tasks.push_back(on_pool(pool, i * i));
  const std::vector<int> r = ptk::sync_wait(ptk::when_all(std::move(tasks)));
  REQUIRE(r.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(r[static_cast<std::size_t>(i)] == i * i);
  CHECK(ptk::sync_wait(ptk::when_all(std::vector<ptk::task<int>>{})).empty());
}

TEST_CASE("when_all runs its children at the same time on a pool") {
  ptk::thread_pool pool{2};
  std::atomic<int> arrived{0};
  auto [a, b] = ptk::sync_wait(ptk::when_all(meet(pool, arrived, 2), meet(pool, arrived, 2)));
  CHECK(a);
  CHECK(b);
}

TEST_CASE("when_all waits for every child, then rethrows the first exception") {
  ptk::thread_pool pool{2};
  std::atomic<bool> slow_done{false};
  auto fails_first = [](ptk::thread_pool& p) -> ptk::task<int> {
    co_await p.schedule();
    throw std::runtime_error("first");
  };
  auto fails_later = [](ptk::thread_pool& p, std::atomic<bool>& done) -> ptk::task<void> {
    co_await p.schedule();
    done = true;
    throw std::logic_error("second");
  };
  auto slow = [](ptk::thread_pool& p, std::atomic<bool>& done) -> ptk::task<int> {
    co_await p.schedule();
    done = true;
    co_return 1;
  };
  std::atomic<bool> later_done{false};
  auto all = [&]() -> ptk::task<void> {
    co_await ptk::when_all(fails_first(pool), slow(pool, slow_done));
  };
  CHECK_THROWS_WITH(ptk::sync_wait(all()), "first");
  CHECK(slow_done.load());
  CHECK_THROWS_WITH(ptk::sync_wait(ptk::when_all(fails_later(pool, later_done))), "second");
  CHECK(later_done.load());
}

TEST_CASE("when_all of 10000 tasks on a pool completes with every result") {
  ptk::thread_pool pool{2};
  std::vector<ptk::task<int>> tasks;
  for (int i = 0; i < 10000; ++i) tasks.push_back(on_pool(pool, 1));
  long sum = 0;
  for (int v : ptk::sync_wait(ptk::when_all(std::move(tasks)))) sum += v;
  CHECK(sum == 10000);
}

TEST_CASE("when_any gives the first to finish, then stops and awaits the rest") {
  ptk::thread_pool pool{2};
  std::atomic<bool> saw_stop{false};
  std::atomic<bool> finished{false};
  auto quick = []() -> ptk::task<std::string> { co_return "quick"; };
  auto r = ptk::sync_wait(ptk::when_any(until_stopped(pool, saw_stop, finished), quick()));
  CHECK(r.index() == 1);
  CHECK(std::get<1>(r) == "quick");
  // The loser has finished before when_any returned.
  CHECK(saw_stop.load());
  CHECK(finished.load());
}

TEST_CASE("when_any over a vector reports the winner's index and value") {
  ptk::thread_pool pool{4};  // a worker for each child
  std::atomic<bool> saw[3] = {false, false, false};
  std::atomic<bool> done[3] = {false, false, false};
  std::vector<ptk::task<int>> tasks;
  tasks.push_back(until_stopped(pool, saw[0], done[0]));
  tasks.push_back(until_stopped(pool, saw[1], done[1]));
  tasks.push_back(on_pool(pool, 7));
  tasks.push_back(until_stopped(pool, saw[2], done[2]));
  const ptk::when_any_result<int> r = ptk::sync_wait(ptk::when_any(std::move(tasks)));
  CHECK(r.index == 2);
  CHECK(r.value == 7);
  for (auto& d : done) CHECK(d.load());
  for (auto& s : saw) CHECK(s.load());
  CHECK_THROWS_AS(ptk::sync_wait(ptk::when_any(std::vector<ptk::task<int>>{})),
                  std::invalid_argument);
}

TEST_CASE("when_any rethrows the exception of a winner that failed") {
  ptk::thread_pool pool{2};
  std::atomic<bool> saw_stop{false};
  std::atomic<bool> finished{false};
  auto fails = []() -> ptk::task<int> {
    throw std::runtime_error("lost early");
    co_return 0;
  };
  CHECK_THROWS_WITH(ptk::sync_wait(ptk::when_any(until_stopped(pool, saw_stop, finished), fails())),
                    "lost early");
  CHECK(saw_stop.load());
  CHECK(finished.load());
}

TEST_CASE("a stop request on the awaiter of when_any reaches its children") {
  ptk::thread_pool pool{2};
  std::stop_source outer;
  std::atomic<bool> saw[2] = {false, false};
  std::atomic<bool> done[2] = {false, false};
  outer.request_stop();
  auto r = ptk::sync_wait(
      ptk::when_any(until_stopped(pool, saw[0], done[0]), until_stopped(pool, saw[1], done[1])),
      outer.get_token());
  CHECK(std::visit([](int v) { return v; }, r) == -1);
  CHECK(saw[0].load());
  CHECK(saw[1].load());
}

TEST_CASE("when_all over a vector of tasks waits for all, then rethrows the first failure") {
  ptk::thread_pool pool{2};
  std::atomic<int> finished{0};
  auto child = [](ptk::thread_pool& p, std::atomic<int>& n, int i) -> ptk::task<int> {
    co_await p.schedule();
    n.fetch_add(1);
    if (i == 3) throw std::runtime_error("child 3");
    co_return i;
  };
  std::vector<ptk::task<int>> tasks;
  for (int i = 0; i < 8; ++i) tasks.push_back(child(pool, finished, i));
  CHECK_THROWS_WITH(ptk::sync_wait(ptk::when_all(std::move(tasks))), "child 3");
  CHECK(finished.load() == 8);
}

TEST_CASE(
    "when_all over a vector of void tasks gives monostates, children inherit the stop token") {
  std::stop_source stop;
  auto child = []() -> ptk::task<void> {
    const std::stop_token t = co_await ptk::get_stop_token();
    if (!t.stop_possible()) throw std::logic_error("no stop token");
  };
  std::vector<ptk::task<void>> tasks;
  for (int i = 0; i < 3; ++i) tasks.push_back(child());
  CHECK(ptk::sync_wait(ptk::when_all(std::move(tasks)), stop.get_token()).size() == 3);
}

TEST_CASE("when_all over a vector holding an empty task throws logic_error") {
  std::vector<ptk::task<int>> tasks;
  tasks.push_back(ready_one());
  tasks.emplace_back();
  CHECK_THROWS_AS(ptk::sync_wait(ptk::when_all(std::move(tasks))), std::logic_error);
}
