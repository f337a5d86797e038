#include <ptk/detail/unique_fd.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <latch>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

using ptk::test::threads_of_this_process;

std::vector<pid_t> worker_tids(const std::string& prefix) {
  return ptk::test::threads_named(prefix);
}

// A gate a task can block on without helping the pool (std::latch does not run
// pool tasks), so tests control exactly when a worker is busy.
struct gate {
  std::latch open_latch{1};
  std::latch held{1};
  void open() { open_latch.count_down(); }
  void wait() { open_latch.wait(); }
  // Posts a task that counts `held` down once a worker runs it and holds that worker
  // until open().
  void post_hold(ptk::thread_pool& pool) {
    pool.post([this] {
      held.count_down();
      wait();
    });
  }
  // post_hold(), and returns once a worker runs the task.
  void hold(ptk::thread_pool& pool) {
    post_hold(pool);
    held.wait();
  }
};

}  // namespace

TEST_CASE("thread_pool runs every posted task and wait_idle waits for them") {
  ptk::thread_pool pool{2};
  std::atomic<int> count{0};
  for (int i = 0; i < 10000; ++i) pool.post([&] { count.fetch_add(1, std::memory_order_relaxed); });
  pool.wait_idle();
  CHECK(count.load() == 10000);
  const auto s = pool.stats();
  CHECK(s.workers == 2);
  CHECK(s.executed == 10000);
  CHECK(s.queued == 0);
  CHECK(s.running == 0);
}

TEST_CASE("thread_pool defaults to one worker per hardware thread") {
  ptk::thread_pool pool;
  CHECK(pool.size() == std::max(1U, std::thread::hardware_concurrency()));
}

TEST_CASE("submit passes arguments, including move-only ones, and returns the result") {
  ptk::thread_pool pool{2};
  auto sum = pool.submit([](int a, int b) { return a + b; }, 2, 40);
  auto moved =
      pool.submit([](std::unique_ptr<int> p) { return *p * 2; }, std::make_unique<int>(21));
  auto text = pool.submit([] { return std::string(100, 'x'); });
  ptk::future<void> nothing = pool.submit([] {});
  CHECK(sum.get() == 42);
  CHECK(moved.get() == 42);
  CHECK(text.get() == std::string(100, 'x'));
  nothing.get();
  CHECK_FALSE(sum.valid());
}

TEST_CASE("an exception thrown by a submitted task reaches the future with its type") {
  ptk::thread_pool pool{1};
  auto f = pool.submit([]() -> int { throw std::out_of_range("index 7"); });
  CHECK_THROWS_AS(f.get(), std::out_of_range);
  auto g = pool.submit([] { throw std::runtime_error("boom"); });
  CHECK_THROWS_WITH(g.get(), "boom");
}

TEST_CASE("an exception thrown by a posted task goes to the on_error handler") {
  std::mutex m;
  std::vector<std::string> seen;
  ptk::thread_pool pool{{.workers = 2, .on_error = [&](std::exception_ptr e) {
                           try {
                             std::rethrow_exception(e);
                           } catch (const std::exception& ex) {
                             const std::lock_guard lock(m);
                             seen.emplace_back(ex.what());
                           }
                         }}};
  pool.post([] { throw std::runtime_error("posted failure"); });
  pool.post([] {});
  pool.wait_idle();
  REQUIRE(seen.size() == 1);
  CHECK(seen[0] == "posted failure");
}

TEST_CASE("by default a posted task that throws terminates with a clear message") {
  const auto r = ptk::test::in_forked_child([] {
    ptk::thread_pool pool{1};
    pool.post([] { throw std::runtime_error("unhandled in a posted task"); });
    pool.wait_idle();  // not returning: the pool terminates the process
  });
  CHECK(WIFSIGNALED(r.status));
  CHECK(WTERMSIG(r.status) == SIGABRT);
  CHECK(r.stderr_text.find("ptk::thread_pool: a posted task threw") != std::string::npos);
  CHECK(r.stderr_text.find("unhandled in a posted task") != std::string::npos);
}

TEST_CASE("tasks waiting on futures of their own pool, more than workers, all finish") {
  ptk::thread_pool pool{2};
  std::vector<ptk::future<int>> outer;
  for (int i = 0; i < 16; ++i) {
    outer.push_back(pool.submit([&pool, i] {
      auto inner = pool.submit([i] { return i * 10; });
      return inner.get() + 1;  // a nested wait: the worker runs other tasks meanwhile
    }));
  }
  for (int i = 0; i < 16; ++i) CHECK(outer[static_cast<std::size_t>(i)].get() == i * 10 + 1);
}

TEST_CASE("recursive fork-join through futures does not deadlock a small pool") {
  ptk::thread_pool pool{2};
  std::function<int(int)> fib = [&](int n) -> int {
    if (n < 2) return n;
    auto a = pool.submit(fib, n - 1);
    const int b = fib(n - 2);
    return a.get() + b;
  };
  CHECK(pool.submit(fib, 18).get() == 2584);
}

TEST_CASE("tasks spawned inside a task go to its worker's deque and idle workers steal them") {
  ptk::thread_pool pool{2};
  constexpr int spawned = 100;
  std::latch all_ran{spawned};
  pool.post([&] {
    for (int i = 0; i < spawned; ++i) pool.post([&] { all_ran.count_down(); });
    // Block without helping: only the other worker, by stealing, can run them.
    all_ran.wait();
  });
  pool.wait_idle();
  CHECK(pool.stats().stolen >= spawned);
  CHECK(pool.stats().executed == spawned + 1);
}

TEST_CASE("task_group joins its tasks and computes fork-join results") {
  ptk::thread_pool pool{2};
  std::function<long(int)> fib = [&](int n) -> long {
    if (n < 2) return n;
    long a = 0;
    ptk::task_group g{pool};
    g.run([&] { a = fib(n - 1); });
    const long b = fib(n - 2);
    g.wait();
    return a + b;
  };
  CHECK(pool.submit(fib, 22).get() == 17711);
  CHECK(fib(15) == 610);  // from outside the pool too
}

TEST_CASE("task_group::wait rethrows the first exception of its tasks") {
  ptk::thread_pool pool{2};
  ptk::task_group g{pool};
  std::atomic<int> ran{0};
  for (int i = 0; i < 10; ++i) {
    g.run([&, i] {
      ran.fetch_add(1);
      if (i == 3) throw std::invalid_argument("task 3");
    });
  }
  CHECK_THROWS_AS(g.wait(), std::invalid_argument);
  CHECK(ran.load() == 10);
  g.run([] {});
  CHECK_NOTHROW(g.wait());  // the group is reusable and the error was consumed
}

TEST_CASE("an idle pool sleeps in the kernel and uses under 1% of a core") {
  const unsigned n = std::max(2U, std::thread::hardware_concurrency());
  ptk::thread_pool pool{{.workers = n, .name = "idlecheck"}};
  pool.submit([] {}).get();
  std::vector<pid_t> tids;
  REQUIRE(ptk::test::eventually([&] {
    tids = worker_tids("idlecheck-");
    return tids.size() == n;
  }));
  // Every worker must be asleep before the measurement window starts.
  REQUIRE(ptk::test::eventually([&] {
    for (pid_t t : tids) {
      if (ptk::test::thread_state(t) != 'S') return false;
    }
    return true;
  }));
  rusage before{};
  rusage after{};
  ::getrusage(RUSAGE_SELF, &before);
  std::this_thread::sleep_for(1s);  // the measurement window, not a synchronisation
  ::getrusage(RUSAGE_SELF, &after);
  const auto usec = [](const rusage& r) {
    return (r.ru_utime.tv_sec + r.ru_stime.tv_sec) * 1'000'000L + r.ru_utime.tv_usec +
           r.ru_stime.tv_usec;
  };
  const long used = usec(after) - usec(before);
  INFO("CPU used by an idle pool of " << n << " workers in 1 s: " << used << " us");
  CHECK(used < 10'000);
}

TEST_CASE("a sleeping pool wakes up for a new task") {
  ptk::thread_pool pool{{.workers = 2, .name = "wakecheck"}};
  std::vector<pid_t> tids;
  REQUIRE(ptk::test::eventually([&] {
    tids = worker_tids("wakecheck-");
    return tids.size() == 2 && ptk::test::thread_state(tids[0]) == 'S' &&
           ptk::test::thread_state(tids[1]) == 'S';
  }));
  CHECK(pool.submit([] { return 7; }).get() == 7);
}

TEST_CASE("workers are named after the pool, visible in /proc") {
  ptk::thread_pool pool{{.workers = 2, .name = "namedpool"}};
  std::set<std::string> names;
  REQUIRE(ptk::test::eventually([&] {
    names.clear();
    for (const auto& [tid, name] : threads_of_this_process()) names.insert(name);
    return names.count("namedpool-0") == 1 && names.count("namedpool-1") == 1;
  }));
}

TEST_CASE("high-priority tasks run before queued normal ones") {
  ptk::thread_pool pool{1};
  gate g;
  pool.post([&] { g.wait(); });  // occupy the only worker
  std::mutex m;
  std::vector<int> order;
  for (int i = 0; i < 50; ++i) {
    pool.post([&, i] {
      const std::lock_guard lock(m);
      order.push_back(i);
    });
  }
  pool.post(ptk::priority::high, [&] {
    const std::lock_guard lock(m);
    order.push_back(-1);
  });
  auto high = pool.submit(ptk::priority::high, [] { return 1; });
  g.open();
  pool.wait_idle();
  CHECK(high.get() == 1);
  REQUIRE(order.size() == 51);
  CHECK(order.front() == -1);
}

TEST_CASE("a task that takes a stop_token is stopped through its future") {
  ptk::thread_pool pool{2};
  std::atomic<bool> started{false};
  auto f = pool.submit([&](std::stop_token st) {
    started = true;
    long spins = 0;
    while (!st.stop_requested()) ++spins;
    return spins >= 0;
  });
  REQUIRE(ptk::test::eventually([&] { return started.load(); }));
  CHECK(f.request_stop());
  CHECK(f.get());
}

TEST_CASE("destroying the pool requests stop of long tasks and joins every worker") {
  std::atomic<bool> started{false};
  ptk::future<int> f;
  {
    ptk::thread_pool pool{{.workers = 2, .name = "stopcheck"}};
    REQUIRE(ptk::test::eventually([] { return worker_tids("stopcheck-").size() == 2; }));
    f = pool.submit(
        [&](std::stop_token st, int code) {
          started = true;
          while (!st.stop_requested()) std::this_thread::yield();
          return code;
        },
        5);
    REQUIRE(ptk::test::eventually([&] { return started.load(); }));
  }
  CHECK(f.get() == 5);
  CHECK(worker_tids("stopcheck-").empty());  // joined: no worker outlives its pool
}

TEST_CASE("the destructor drains queued tasks by default") {
  std::atomic<int> ran{0};
  {
    ptk::thread_pool pool{1};
    gate g;
    pool.post([&] { g.wait(); });
    for (int i = 0; i < 100; ++i) pool.post([&] { ran.fetch_add(1); });
    g.open();
  }
  CHECK(ran.load() == 100);
}

TEST_CASE("shutdown with discard drops queued tasks and breaks their futures") {
  ptk::thread_pool pool{1};
  // The blocker holds the only worker until shutdown has begun.
  std::atomic<bool> started{false};
  pool.post([&started, st = pool.get_stop_token()] {
    started = true;
    while (!st.stop_requested()) std::this_thread::yield();
  });
  REQUIRE(ptk::test::eventually([&] { return started.load(); }));
  std::vector<ptk::future<int>> queued;
  for (int i = 0; i < 10; ++i) queued.push_back(pool.submit([i] { return i; }));
  pool.shutdown(ptk::shutdown_policy::discard);
  for (auto& f : queued) {
    try {
      (void)f.get();
      FAIL("a discarded task ran");
    } catch (const std::future_error& e) {
      CHECK(e.code() == std::future_errc::broken_promise);
    }
  }
  CHECK(pool.stats().discarded == 10);
  CHECK_THROWS_AS(pool.post([] {}), std::runtime_error);
}

TEST_CASE("wait_idle from one of the pool's own workers is a logic error") {
  ptk::thread_pool pool{1};
  auto f = pool.submit([&] { pool.wait_idle(); });
  CHECK_THROWS_AS(f.get(), std::logic_error);
}

TEST_CASE("future::wait_for times out on an unfinished task and succeeds once it is done") {
  ptk::thread_pool pool{1};
  gate g;
  auto f = pool.submit([&] {
    g.wait();
    return 3;
  });
  CHECK_FALSE(f.wait_for(20ms));
  CHECK_FALSE(f.is_ready());
  g.open();
  CHECK(f.wait_for(60s));
  CHECK(f.is_ready());
  CHECK(f.get() == 3);
  CHECK_THROWS_AS(f.get(), std::future_error);  // no state after get()
}

TEST_CASE("a burst of submissions to a blocked pool is queued whole and then all run") {
  ptk::thread_pool pool{1};
  gate g;
  std::atomic<bool> blocked{false};
  pool.post([&] {
    blocked = true;
    g.wait();
  });
  REQUIRE(ptk::test::eventually([&] { return blocked.load(); }));
  std::atomic<int> ran{0};
  for (int i = 0; i < 100000; ++i) pool.post([&] { ran.fetch_add(1); });
  CHECK(pool.stats().queued == 100000);
  CHECK(pool.stats().running == 1);
  g.open();
  pool.wait_idle();
  CHECK(ran.load() == 100000);
  CHECK(pool.stats().queued == 0);
}

TEST_CASE("many threads posting at once lose and duplicate nothing") {
  ptk::thread_pool pool{2};
  constexpr int posters = 4;
  constexpr int per_poster = 20000;
  std::vector<std::atomic<int>> hits(posters * per_poster);
  std::vector<std::thread> threads;
  for (int p = 0; p < posters; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_poster; ++i) {
        pool.post(
            [&hits, k = p * per_poster + i] { hits[static_cast<std::size_t>(k)].fetch_add(1); });
      }
    });
  }
  for (auto& t : threads) t.join();
  pool.wait_idle();
  int wrong = 0;
  for (auto& h : hits) wrong += h.load() == 1 ? 0 : 1;
  CHECK(wrong == 0);
}

TEST_CASE("wait_idle_for reports a pool that stays busy") {
  ptk::thread_pool pool{1};
  gate g;
  pool.post([&] { g.wait(); });
  CHECK_FALSE(pool.wait_idle_for(20ms));
  g.open();
  CHECK(pool.wait_idle_for(60s));
}

TEST_CASE("tasks of one priority start in submission order on one worker") {
  ptk::thread_pool pool{1};
  gate g;
  pool.post([&] { g.wait(); });
  std::vector<int> order;  // one worker: no lock needed
  for (int i = 0; i < 200; ++i) pool.post([&, i] { order.push_back(i); });
  g.open();
  pool.wait_idle();
  REQUIRE(order.size() == 200);
  bool in_order = true;
  for (int i = 0; i < 200; ++i) in_order = in_order && order[static_cast<std::size_t>(i)] == i;
  CHECK(in_order);
}

TEST_CASE("a wait on a future or on the pool ends when its stop token is triggered") {
  ptk::thread_pool pool{1};
  gate g;
  auto f = pool.submit([&] {
    g.wait();
    return 1;
  });
  std::stop_source stop;
  std::atomic<bool> future_wait_result{true};
  std::atomic<bool> idle_wait_result{true};
  std::thread waiter([&] {
    future_wait_result = f.wait(stop.get_token());
    idle_wait_result = pool.wait_idle(stop.get_token());
  });
  stop.request_stop();
  waiter.join();
  CHECK_FALSE(future_wait_result.load());
  CHECK_FALSE(idle_wait_result.load());
  g.open();
  CHECK(f.wait(std::stop_token{}));
  CHECK(f.get() == 1);
  CHECK(pool.wait_idle(std::stop_token{}));
}

namespace {
// The smallest coroutine type that can use pool.schedule(): eager, fire and forget.
struct detached {
  struct promise_type {
    detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

detached hop_to(ptk::thread_pool& pool, std::atomic<bool>& on_worker, std::latch& done) {
  co_await pool.schedule();
  on_worker = pool.running_in_this_thread();
  done.count_down();
}
}  // namespace

TEST_CASE("co_await pool.schedule() resumes the coroutine on a worker") {
  ptk::thread_pool pool{2};
  std::atomic<bool> on_worker{false};
  std::latch done{1};
  hop_to(pool, on_worker, done);
  done.wait();
  CHECK(on_worker.load());
}

namespace {
detached reschedule_loop(ptk::thread_pool& pool, std::atomic<bool>& other_ran, int& seen_at,
                         std::latch& done) {
  for (int i = 1; i <= 100; ++i) {
    co_await pool.schedule();
    if (other_ran.load() && seen_at == 0) seen_at = i;
  }
  done.count_down();
}
}  // namespace

TEST_CASE("a coroutine rescheduling itself yields to tasks queued meanwhile") {
  ptk::thread_pool pool{1};
  gate g;
  pool.post([&] { g.wait(); });
  std::atomic<bool> other_ran{false};
  int seen_at = 0;
  std::latch done{1};
  reschedule_loop(pool, other_ran, seen_at, done);  // queued behind the gate
  pool.post([&] { other_ran = true; });             // queued behind the coroutine
  g.open();
  done.wait();
  // One hop later, not after all 100. Two hops when the worker took the gate task and
  // the coroutine in one batch before `other` was posted: the coroutine's requeue and
  // `other` then sit in different queues, which the worker serves in turn.
  CHECK(seen_at >= 2);
  CHECK(seen_at <= 3);
}

TEST_CASE("a coroutine rescheduling itself does not starve a task posted from outside") {
  // Forces the interleaving the test above meets only sometimes: the worker takes the
  // gate task and the coroutine from the poster's lane in one batch, and `other` is
  // posted to the lane only after that, while the coroutine's hops go to the shared
  // queue.
  ptk::thread_pool pool{1};
  gate first;
  first.hold(pool);  // the worker is busy: the next two wait in the lane together
  gate g;
  g.post_hold(pool);
  std::atomic<bool> other_ran{false};
  int seen_at = 0;
  std::latch done{1};
  reschedule_loop(pool, other_ran, seen_at, done);
  first.open();
  g.held.wait();  // the worker has taken the gate task and the coroutine
  pool.post([&] { other_ran = true; });
  g.open();
  done.wait();
  CHECK(seen_at > 0);  // 0: `other` ran only after all 100 hops
  CHECK(seen_at <= 3);
}

// --- lanes: the per-thread submission queues of outside posters --------------------

namespace {

// Callables of the shapes a lane stores differently: small, 16-byte aligned, too
// large for inline storage (boxed), and not nothrow-movable (boxed).
struct alignas(16) aligned_task {
  std::vector<int>* out;
  int value;
  void operator()() const { out->push_back(value); }
};
struct large_task {
  std::vector<int>* out;
  int value;
  char padding[96] = {};
  void operator()() const { out->push_back(value); }
};
struct throwing_move_task {
  std::vector<int>* out;
  int value;
  throwing_move_task(std::vector<int>* o, int v) : out(o), value(v) {}
  throwing_move_task(const throwing_move_task&) = default;
  throwing_move_task(throwing_move_task&& other) noexcept(false)
      : out(other.out), value(other.value) {}
  void operator()() const { out->push_back(value); }
};

}  // namespace

TEST_CASE("posts from one thread keep their order across lane segments, whatever their size") {
  ptk::thread_pool pool{1};
  gate g;
  g.hold(pool);             // the worker is busy: everything below stays queued
  std::vector<int> order;   // one worker: no lock needed
  constexpr int n = 20000;  // about 40 segments of 16 KiB
  for (int i = 0; i < n; ++i) {
    switch (i % 4) {
      case 0:
        pool.post([&order, i] { order.push_back(i); });
        break;
      case 1:
        pool.post(aligned_task{&order, i});
        break;
      case 2:
        pool.post(large_task{&order, i});
        break;
      default:
        pool.post(throwing_move_task{&order, i});
        break;
    }
  }
  CHECK(pool.stats().queued == n);
  g.open();
  pool.wait_idle();
  REQUIRE(order.size() == n);
  int misplaced = 0;
  for (int i = 0; i < n; ++i) misplaced += order[static_cast<std::size_t>(i)] == i ? 0 : 1;
  CHECK(misplaced == 0);
  CHECK(pool.stats().queued == 0);
}

TEST_CASE("one thread posting to more pools than it keeps lanes for keeps each pool's order") {
  constexpr int pools = 7;  // more than the four lanes a thread keeps
  std::vector<std::unique_ptr<ptk::thread_pool>> p;
  std::vector<gate> gates(pools);
  std::vector<std::vector<int>> orders(pools);
  for (int k = 0; k < pools; ++k) {
    p.push_back(std::make_unique<ptk::thread_pool>(1));
    p.back()->post([&gates, k] { gates[static_cast<std::size_t>(k)].wait(); });
  }
  for (int i = 0; i < 3000; ++i) {
    for (int k = 0; k < pools; ++k) {
      auto& out = orders[static_cast<std::size_t>(k)];
      p[static_cast<std::size_t>(k)]->post([&out, i] { out.push_back(i); });
    }
  }
  for (auto& g : gates) g.open();
  for (int k = 0; k < pools; ++k) {
    p[static_cast<std::size_t>(k)]->wait_idle();
    const auto& out = orders[static_cast<std::size_t>(k)];
    REQUIRE(out.size() == 3000);
    int misplaced = 0;
    for (int i = 0; i < 3000; ++i) misplaced += out[static_cast<std::size_t>(i)] == i ? 0 : 1;
    CHECK(misplaced == 0);
  }
}

TEST_CASE("more posting threads than lanes lose and duplicate nothing") {
  ptk::thread_pool pool{2};
  constexpr int posters = 80;  // more than the pool's 64 lanes: some use the shared queue
  constexpr int per_poster = 500;
  std::vector<std::atomic<int>> hits(posters * per_poster);
  std::latch start{posters};
  std::vector<std::thread> threads;
  for (int t = 0; t < posters; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();  // all own a lane (or fail to) at the same time
      for (int i = 0; i < per_poster; ++i) {
        pool.post(
            [&hits, k = t * per_poster + i] { hits[static_cast<std::size_t>(k)].fetch_add(1); });
      }
    });
  }
  for (auto& t : threads) t.join();
  pool.wait_idle();
  int wrong = 0;
  for (auto& h : hits) wrong += h.load() == 1 ? 0 : 1;
  CHECK(wrong == 0);
}

TEST_CASE("lanes of exited threads are reused, and a thread outlives its pools' lanes") {
  std::atomic<int> ran{0};
  {
    ptk::thread_pool pool{2};
    // Short-lived posters, one after another: each takes over a lane another left.
    for (int t = 0; t < 200; ++t) {
      std::thread([&] {
        for (int i = 0; i < 50; ++i) pool.post([&] { ran.fetch_add(1); });
      }).join();
    }
    pool.wait_idle();
    CHECK(ran.load() == 200 * 50);
  }
  // One thread posts to pools that come and go; each new pool gets a fresh lane.
  std::thread poster([&] {
    for (int k = 0; k < 20; ++k) {
      ptk::thread_pool pool{1};
      for (int i = 0; i < 100; ++i) pool.post([&] { ran.fetch_add(1); });
      pool.wait_idle();
    }
  });
  poster.join();
  CHECK(ran.load() == 200 * 50 + 20 * 100);
}

TEST_CASE("a callable whose copy throws is not posted, and the lane stays usable") {
  struct copy_throws {
    std::atomic<int>* ran;
    copy_throws(std::atomic<int>* r) : ran(r) {}  // NOLINT(google-explicit-constructor)
    copy_throws(const copy_throws& /*other*/) : ran(nullptr) { throw std::runtime_error("copy"); }
    copy_throws(copy_throws&& other) noexcept : ran(other.ran) {}
    void operator()() const { ran->fetch_add(1); }
  };
  ptk::thread_pool pool{2};
  std::atomic<int> ran{0};
  const copy_throws task{&ran};
  pool.post([&] { ran.fetch_add(1); });
  CHECK_THROWS_AS(pool.post(task), std::runtime_error);  // the copy into the lane throws
  pool.post(copy_throws{&ran});                          // a move does not
  REQUIRE(pool.wait_idle_for(60s));
  CHECK(ran.load() == 2);
  CHECK(pool.stats().executed == 2);
}

TEST_CASE("a batch task that blocks on a later task of its batch does not hold it hostage") {
  // Both workers blocked, then r1, r2 and ten more tasks queued: the first worker
  // freed takes half (r1, r2 and four more) as its batch. r1 blocks (without
  // helping the pool) until r2 has run, so the other worker must steal r2.
  ptk::thread_pool pool{2};
  gate g;
  std::latch both_blocked{2};
  for (int i = 0; i < 2; ++i) {
    pool.post([&] {
      both_blocked.count_down();
      g.wait();
    });
  }
  both_blocked.wait();
  std::mutex m;
  std::condition_variable cv;
  bool r2_ran = false;
  std::atomic<bool> r1_saw_r2{false};
  pool.post([&] {
    std::unique_lock lock(m);
    r1_saw_r2 = cv.wait_for(lock, 30s, [&] { return r2_ran; });
  });
  pool.post([&] {
    const std::lock_guard lock(m);
    r2_ran = true;
    cv.notify_all();
  });
  std::atomic<int> rest{0};
  for (int i = 0; i < 10; ++i) pool.post([&] { rest.fetch_add(1); });
  g.open();
  pool.wait_idle();
  CHECK(r1_saw_r2.load());
  CHECK(rest.load() == 10);
}
