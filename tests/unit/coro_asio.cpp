// ptk coroutines on asio: await_asio, async_run, sleep_for/sleep_until on asio
// executors and schedule_on, with real io_context threads.
#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/coro/timer.hpp>
#include <ptk/coro/when_all.hpp>
#include <ptk/coro/when_any.hpp>
#include <ptk/coro_asio.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <asio/bind_cancellation_slot.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/use_future.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// An io_context run by `threads` threads until destroyed (a work guard keeps run()
// from returning while nothing is queued).
class io_threads {
 public:
  explicit io_threads(int threads = 1) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  io_threads(const io_threads&) = delete;
  io_threads& operator=(const io_threads&) = delete;
  ~io_threads() {
    work_.reset();
    for (auto& t : threads_) t.join();
  }
  asio::io_context& io() noexcept { return io_; }
  asio::io_context::executor_type executor() noexcept { return io_.get_executor(); }
  bool on_io_thread() noexcept { return io_.get_executor().running_in_this_thread(); }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::vector<std::thread> threads_;
};

asio::awaitable<int> asio_twice(int x) {
  asio::steady_timer t(co_await asio::this_coro::executor, 1ms);
  co_await t.async_wait(asio::use_awaitable);
  co_return 2 * x;
}

asio::awaitable<void> asio_throws() {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  throw std::runtime_error("from asio");
}

asio::awaitable<void> asio_sleep_long(std::atomic<bool>& started) {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  started = true;
  co_await t.async_wait(asio::use_awaitable);
}

ptk::task<int> ptk_on_pool(ptk::thread_pool& pool, int x) {
  co_await pool.schedule();
  co_return x + 1;
}

ptk::task<int> seven() { co_return 7; }

ptk::task<int> ptk_throws_on_pool(ptk::thread_pool& pool) {
  co_await pool.schedule();
  throw std::logic_error("from ptk");
}

}  // namespace

TEST_CASE("a ptk task awaits an asio awaitable and resumes on its executor") {
  io_threads io;
  auto body = [](io_threads& t) -> ptk::task<std::pair<int, bool>> {
    const int v = co_await ptk::await_asio(t.executor(), asio_twice(21));
    co_return std::pair{v, t.on_io_thread()};
  };
  const auto [v, on_io] = ptk::sync_wait(body(io));
  CHECK(v == 42);
  CHECK(on_io);
}

TEST_CASE("await_asio gives a result that has no default constructor") {
  io_threads io;
  struct no_default {
    explicit no_default(int x) : v(x) {}
    int v;
  };
  auto make = []() -> asio::awaitable<no_default> { co_return no_default{5}; };
  auto body = [&]() -> ptk::task<int> {
    const no_default r = co_await ptk::await_asio(io.executor(), make());
    co_return r.v;
  };
  CHECK(ptk::sync_wait(body()) == 5);
}

TEST_CASE("an exception thrown in an asio awaitable propagates into the ptk task") {
  io_threads io;
  auto body = [](asio::io_context& ctx) -> ptk::task<void> {
    co_await ptk::await_asio(ctx, asio_throws());
  };
  CHECK_THROWS_WITH(ptk::sync_wait(body(io.io())), "from asio");
}

TEST_CASE("a stop request cancels the asio awaitable a ptk task awaits") {
  io_threads io(2);
  std::atomic<bool> started{false};
  std::stop_source stop;
  auto body = [](io_threads& t, std::atomic<bool>& s) -> ptk::task<void> {
    co_await ptk::await_asio(t.executor(), asio_sleep_long(s));
  };
  std::thread requester([&] {
    REQUIRE(ptk::test::eventually([&] { return started.load(); }));
    stop.request_stop();
  });
  const auto start = steady::now();
  CHECK_THROWS_AS(ptk::sync_wait(body(io, started), stop.get_token()), ptk::operation_cancelled);
  requester.join();
  CHECK(steady::now() - start < 30s);
}

TEST_CASE("await_asio with stop already requested does not start the asio awaitable") {
  io_threads io;
  std::atomic<bool> started{false};
  std::stop_source stop;
  stop.request_stop();
  CHECK_THROWS_AS(
      ptk::sync_wait(ptk::await_asio(io.executor(), asio_sleep_long(started)), stop.get_token()),
      ptk::operation_cancelled);
  CHECK_FALSE(started.load());
}

TEST_CASE("an asio coroutine awaits a ptk task that runs on a thread_pool") {
  asio::io_context io;  // declared first: outlives the pool threads that post to it
  ptk::thread_pool pool{2};
  std::optional<int> got;
  bool resumed_on_io = false;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        got = co_await ptk::async_run(ptk_on_pool(pool, 41), asio::use_awaitable);
        resumed_on_io = io.get_executor().running_in_this_thread();
      },
      asio::detached);
  io.run();  // returns only after the task finished: the operation holds work
  CHECK(got == 42);
  CHECK(resumed_on_io);
}

TEST_CASE("a ptk task's exception is rethrown in the awaiting asio coroutine") {
  asio::io_context io;
  ptk::thread_pool pool{1};
  std::string what;
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        try {
          co_await ptk::async_run(io, ptk_throws_on_pool(pool), asio::use_awaitable);
        } catch (const std::logic_error& e) {
          what = e.what();
        }
      },
      asio::detached);
  io.run();
  CHECK(what == "from ptk");
}

TEST_CASE("async_run with a callback completes on the executor, never inline") {
  asio::io_context io;
  std::exception_ptr error;
  int value = 0;
  bool called = false;
  ptk::async_run(io.get_executor(), seven(), [&](std::exception_ptr e, int v) {
    called = true;
    error = e;
    value = v;
  });
  CHECK_FALSE(called);  // the task finished inside async_run: the handler is posted
  io.run();
  CHECK(called);
  CHECK_FALSE(error);
  CHECK(value == 7);
}

TEST_CASE("async_run with use_future gives a value and an exception") {
  io_threads io;
  ptk::thread_pool pool{2};
  std::future<int> ok = ptk::async_run(io.io(), ptk_on_pool(pool, 1), asio::use_future);
  std::future<int> bad = ptk::async_run(io.io(), ptk_throws_on_pool(pool), asio::use_future);
  CHECK(ok.get() == 2);
  CHECK_THROWS_AS(bad.get(), std::logic_error);
}

TEST_CASE("an asio cancellation requests stop on the ptk task's stop token") {
  asio::io_context io;
  ptk::thread_pool pool{2};
  ptk::timer_queue timers{pool};
  asio::cancellation_signal cancel;
  std::atomic<bool> sleeping{false};
  bool cancelled = false;
  auto sleeper = [](ptk::timer_queue& t, std::atomic<bool>& s) -> ptk::task<void> {
    s = true;
    co_await ptk::sleep_for(t, 1h);
  };
  ptk::async_run(io, sleeper(timers, sleeping),
                 asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr e) {
                   try {
                     if (e) std::rethrow_exception(e);
                   } catch (const ptk::operation_cancelled&) {
                     cancelled = true;
                   }
                 }));
  CHECK(sleeping.load());  // the task started inside async_run
  REQUIRE(ptk::test::eventually([&] { return timers.pending() == 1; }));
  cancel.emit(asio::cancellation_type::terminal);  // from the io_context's (only) thread
  io.run();
  CHECK(cancelled);
  CHECK(timers.pending() == 0);
}

TEST_CASE("sleep_for on an asio executor waits at least the duration and resumes there") {
  io_threads io;
  auto body = [](io_threads& t, std::chrono::milliseconds d) -> ptk::task<bool> {
    const auto start = steady::now();
    co_await ptk::sleep_for(t.executor(), d);
    CHECK(steady::now() - start >= d);
    co_return t.on_io_thread();
  };
  for (const auto d : {1ms, 5ms, 20ms}) CHECK(ptk::sync_wait(body(io, d)));
}

TEST_CASE("sleep_until on an io_context wakes no earlier than the deadline") {
  io_threads io;
  auto body = [](asio::io_context& ctx) -> ptk::task<void> {
    const auto deadline = steady::now() + 10ms;
    co_await ptk::sleep_until(ctx, deadline);
    CHECK(steady::now() >= deadline);
  };
  ptk::sync_wait(body(io.io()));
}

TEST_CASE("an asio sleep whose deadline has passed completes without suspending") {
  asio::io_context io;  // never run: a suspension would hang
  auto body = [](asio::io_context& ctx) -> ptk::task<std::thread::id> {
    co_await ptk::sleep_for(ctx, 0ms);
    co_await ptk::sleep_until(ctx, steady::now() - 1s);
    co_return std::this_thread::get_id();
  };
  CHECK(ptk::sync_wait(body(io)) == std::this_thread::get_id());
}

TEST_CASE("a stop request cancels an asio sleep promptly with operation_cancelled") {
  io_threads io(2);
  std::stop_source stop;
  std::atomic<bool> about_to_sleep{false};
  auto sleeper = [](io_threads& t, std::atomic<bool>& flag) -> ptk::task<void> {
    co_await ptk::schedule_on(t.executor());
    flag = true;
    co_await ptk::sleep_for(t.executor(), 1h);
  };
  std::thread requester([&] {
    REQUIRE(ptk::test::eventually([&] { return about_to_sleep.load(); }));
    stop.request_stop();  // before or after the timer started: either way it ends
  });
  const auto start = steady::now();
  CHECK_THROWS_AS(ptk::sync_wait(sleeper(io, about_to_sleep), stop.get_token()),
                  ptk::operation_cancelled);
  requester.join();
  CHECK(steady::now() - start < 30s);
}

TEST_CASE("when_any of a slow task and an asio sleep is a timeout that cancels the task") {
  io_threads io;
  auto slow = [](io_threads& t) -> ptk::task<int> {
    co_await ptk::sleep_for(t.executor(), 1h);
    co_return 1;
  };
  const auto start = steady::now();
  auto r = ptk::sync_wait(ptk::when_any(slow(io), ptk::sleep_for(io.executor(), 5ms)));
  CHECK(r.index() == 1);
  CHECK(steady::now() - start < 30s);
}

TEST_CASE("schedule_on and pool.schedule move a task between an io_context and a pool") {
  // The io_context first: a pool worker may still be inside asio::post when the task
  // it posted has already finished, so the pool must be gone before the io_context.
  io_threads io;
  ptk::thread_pool pool{2};
  auto body = [](ptk::thread_pool& p, io_threads& t) -> ptk::task<std::vector<bool>> {
    std::vector<bool> seen;
    for (int i = 0; i < 3; ++i) {
      co_await ptk::schedule_on(t.io());
      seen.push_back(t.on_io_thread() && !p.running_in_this_thread());
      co_await p.schedule();
      seen.push_back(p.running_in_this_thread() && !t.on_io_thread());
    }
    co_return seen;
  };
  CHECK(ptk::sync_wait(body(pool, io)) == std::vector<bool>(6, true));
}

TEST_CASE("thousands of asio sleeps and hops on a two-thread io_context all complete") {
  io_threads io(2);
  ptk::thread_pool pool{2};
  std::stop_source never;
  std::atomic<int> done{0};
  auto one = [](ptk::thread_pool& p, io_threads& t, std::atomic<int>& n, int i) -> ptk::task<int> {
    co_await ptk::sleep_for(t.executor(), std::chrono::microseconds(i % 20 * 50));
    co_await p.schedule();
    co_await ptk::schedule_on(t.executor());
    n.fetch_add(1, std::memory_order_relaxed);
    co_return i;
  };
  std::vector<ptk::task<int>> all;
  for (int i = 0; i < 2000; ++i) all.push_back(one(pool, io, done, i));
  // A stop token that can be stopped: every sleep registers a stop callback too.
  const std::vector<int> r = ptk::sync_wait(ptk::when_all(std::move(all)), never.get_token());
  CHECK(done.load() == 2000);
  CHECK(r[1999] == 1999);
}

TEST_CASE("io_context threads and asio sleeps leave no descriptor or thread behind") {
  // ThreadSanitizer starts its own background thread at the first thread creation:
  // create (and join) one first, so the baseline already has it.
  std::thread([] {}).join();
  const int fds = ptk::test::open_fd_count();
  const auto threads = ptk::test::threads_of_this_process().size();
  {
    io_threads io(2);
    auto body = [](io_threads& t) -> ptk::task<int> {
      co_await ptk::sleep_for(t.executor(), 1ms);
      co_return co_await ptk::await_asio(t.executor(), asio_twice(2));
    };
    CHECK(ptk::sync_wait(body(io)) == 4);
  }
  CHECK(ptk::test::open_fd_count() == fds);
  CHECK(ptk::test::threads_of_this_process().size() == threads);
}
