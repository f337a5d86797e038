#include <ptk/process/process.hpp>
#include <ptk/process/run.hpp>
#include <ptk/process_pool.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using namespace ptk::test;

// ---- the remote functions the tests run ----

namespace pool_test {
struct custom_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
}  // namespace pool_test

static int twice(int n) { return 2 * n; }
PTK_REMOTE(twice);

static std::string shout(const std::string& s, int times) {
  std::string out;
  for (int i = 0; i < times; ++i) out += s + "!";
  return out;
}
PTK_REMOTE(shout);

static std::vector<double> scale(std::vector<double> v, double k) {
  for (double& x : v) x *= k;
  return v;
}
PTK_REMOTE(scale);

static int throws_custom(int n) {
  if (n < 0) throw pool_test::custom_error("negative input " + std::to_string(n));
  return n;
}
PTK_REMOTE(throws_custom);

static int throws_int(int) { throw 42; }
PTK_REMOTE(throws_int);

// One input in ten crashes, three ways: a segfault, an abort, a kill -9 of itself.
static int crashes_sometimes(int n) {
  if (n % 10 == 3) {
    switch ((n / 10) % 3) {
      case 0:
        ::raise(SIGSEGV);
        break;
      case 1:
        std::abort();
      default:
        ::raise(SIGKILL);
        break;
    }
  }
  return n;
}
PTK_REMOTE(crashes_sometimes);

static int segfault(int) {
  ::raise(SIGSEGV);
  return 0;
}
PTK_REMOTE(segfault);

static int exits_with(int code) { std::_Exit(code); }
PTK_REMOTE(exits_with);

static int worker_pid(int) { return static_cast<int>(::getpid()); }
PTK_REMOTE(worker_pid);

static int blocks_forever(int) {
  for (;;) ::pause();
}
PTK_REMOTE(blocks_forever);

static void nothing() {}
PTK_REMOTE(nothing);

static int not_registered(int n) { return n; }

// A mode of this binary in which nothing calls serve_if_worker() before the pool: its
// workers (the same binary, with the same environment) start serving in the pool's
// constructor, as Python's spawn start method re-runs the main module.
[[maybe_unused]] static const bool pool_constructor_mode = [] {
  if (std::getenv("PTK_TEST_POOL_CONSTRUCTOR") == nullptr) return false;
  const bool worker = std::getenv("PTK_PROCESS_POOL_WORKER_FD") != nullptr;
  std::printf("main before the pool runs in %s\n", worker ? "a worker" : "the parent");
  std::fflush(stdout);
  ptk::process_pool pool{{.workers = 1}};  // a worker serves from here, never returns
  std::printf("result %d\n", pool.submit(twice, 21).get());
  std::fflush(stdout);
  std::_Exit(0);
}();

// The unit-test binary is a Catch2 program whose main we do not own, so workers
// start serving here, at static initialisation: every registration above is already
// done (a translation unit initialises in order), and nothing of Catch's runs.
[[maybe_unused]] static const bool worker_served = (ptk::process_pool::serve_if_worker(), false);

// A mode of this binary for the parent-death test: a pool parent that prints its
// worker's pid and waits to be killed.
[[maybe_unused]] static const bool pool_parent_mode = [] {
  if (std::getenv("PTK_TEST_POOL_PARENT") == nullptr) return false;
  ::unsetenv("PTK_TEST_POOL_PARENT");
  ptk::process_pool pool{{.workers = 1}};
  std::printf("%d\n", pool.submit(worker_pid, 0).get());
  std::fflush(stdout);
  for (;;) ::pause();
}();

namespace {

bool has_children() {
  // ECHILD: no child at all, running or zombie.
  return ::waitpid(-1, nullptr, WNOHANG | __WALL) != -1 || errno != ECHILD;
}

bool process_gone(int pid) {
  if (::kill(pid, 0) == -1 && errno == ESRCH) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  const auto paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'Z';
}

}  // namespace

TEST_CASE("process_pool: submit returns results computed in another process", "[process_pool]") {
  ptk::process_pool pool{{.workers = 2}};
  auto a = pool.submit(twice, 21);
  auto b = pool.submit(shout, "hey", 2);  // a literal converts to the std::string parameter
  auto c = pool.submit(scale, std::vector<double>{1.0, 2.5}, 2.0);
  auto pid = pool.submit(worker_pid, 0);
  auto v = pool.submit(nothing);
  CHECK(a.get() == 42);
  CHECK(b.get() == "hey!hey!");
  CHECK(c.get() == std::vector<double>{2.0, 5.0});
  CHECK(pid.get() != ::getpid());
  v.get();
  const auto s = pool.stats();
  CHECK(s.tasks_done == 5);
  CHECK(s.tasks_failed == 0);
}

TEST_CASE("process_pool: map returns results in input order", "[process_pool]") {
  ptk::process_pool pool{{.workers = 2}};
  std::vector<int> inputs;
  for (int i = 0; i < 500; ++i) inputs.push_back(i);
  const std::vector<int> out = pool.map(twice, inputs);
  REQUIRE(out.size() == inputs.size());
  for (std::size_t i = 0; i < out.size(); ++i) REQUIRE(out[i] == 2 * inputs[i]);
}

TEST_CASE("process_pool: an exception reaches the future with its type name and message",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 1}};
  auto f = pool.submit(throws_custom, -7);
  try {
    (void)f.get();
    FAIL("no exception");
  } catch (const ptk::remote_error& e) {
    CHECK(e.type_name() == "pool_test::custom_error");
    CHECK(e.message() == "negative input -7");
    CHECK(std::string(e.what()).find("pool_test::custom_error") != std::string::npos);
  }
  try {
    (void)pool.submit(throws_int, 0).get();
    FAIL("no exception");
  } catch (const ptk::remote_error& e) {
    CHECK(e.type_name() == "int");
  }
  CHECK(pool.submit(throws_custom, 5).get() == 5);  // the worker survived
  CHECK(pool.stats().crashes == 0);
}

TEST_CASE("process_pool: submitting an unregistered function is a clear error", "[process_pool]") {
  ptk::process_pool pool{{.workers = 1}};
  try {
    (void)pool.submit(not_registered, 1);
    FAIL("no exception");
  } catch (const std::invalid_argument& e) {
    CHECK(std::string(e.what()).find("PTK_REMOTE") != std::string::npos);
  }
}

TEST_CASE("process_pool: a segfault fails its task with the signal and the pool goes on",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 1}};
  auto f = pool.submit(segfault, 0);
  try {
    (void)f.get();
    FAIL("no exception");
  } catch (const ptk::worker_crash_error& e) {
#if !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
    CHECK(e.signal() == SIGSEGV);  // sanitizers catch SIGSEGV themselves and exit instead
#endif
    CHECK((e.status().signaled() || e.status().exited()));
  }
  CHECK(pool.submit(twice, 4).get() == 8);
  const auto s = pool.stats();
  CHECK(s.crashes == 1);
  CHECK(s.restarts == 1);
}

TEST_CASE("process_pool: a task that exits the worker fails with the exit code", "[process_pool]") {
  ptk::process_pool pool{{.workers = 1}};
  try {
    (void)pool.submit(exits_with, 3).get();
    FAIL("no exception");
  } catch (const ptk::worker_crash_error& e) {
    CHECK(e.status().exited());
    CHECK(e.status().code() == 3);
    CHECK(e.signal() == 0);
  }
  CHECK(pool.submit(twice, 1).get() == 2);
}

TEST_CASE("process_pool: 1000 tasks of which 10% crash give exactly 900 results and 100 errors",
          "[process_pool]") {
  const int fds = open_fd_count();
  {
    ptk::process_pool pool{{.workers = 2}};
    std::vector<ptk::future<int>> futures;
    for (int i = 0; i < 1000; ++i) futures.push_back(pool.submit(crashes_sometimes, i));
    std::multiset<int> results;
    int crashed = 0;
    int other = 0;
    std::multiset<int> crashed_inputs;
    for (int i = 0; i < 1000; ++i) {
      try {
        results.insert(futures[static_cast<std::size_t>(i)].get());
      } catch (const ptk::worker_crash_error&) {
        ++crashed;
        crashed_inputs.insert(i);
      } catch (...) {
        ++other;
      }
    }
    CHECK(results.size() == 900);
    CHECK(crashed == 100);
    CHECK(other == 0);
    for (int i = 0; i < 1000; ++i) {  // each result once, for exactly the inputs that do not crash
      REQUIRE(results.count(i) == (i % 10 == 3 ? 0U : 1U));
      REQUIRE(crashed_inputs.count(i) == (i % 10 == 3 ? 1U : 0U));
    }
    const auto s = pool.stats();
    CHECK(s.tasks_done == 900);
    CHECK(s.tasks_failed == 100);
    CHECK(s.crashes == 100);
    CHECK(s.tasks_queued == 0);
    CHECK(s.tasks_running == 0);
    CHECK(pool.submit(twice, 5).get() == 10);  // still serving
  }
  CHECK(open_fd_count() == fds);
  CHECK_FALSE(has_children());
}

TEST_CASE("process_pool: a task past its timeout is killed and its worker replaced",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 1, .task_timeout = 300ms}};
  auto stuck = pool.submit(blocks_forever, 0);
  auto after = pool.submit(twice, 3);  // runs on the replacement worker
  const auto t0 = std::chrono::steady_clock::now();
  try {
    (void)stuck.get();
    FAIL("no exception");
  } catch (const ptk::task_timeout_error& e) {
    CHECK(e.timeout() == 300ms);
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK(after.get() == 6);
  const auto s = pool.stats();
  CHECK(s.timeouts == 1);
  CHECK(s.restarts == 1);
  CHECK(s.crashes == 0);
}

TEST_CASE("process_pool: max_tasks_per_worker recycles workers", "[process_pool]") {
  ptk::process_pool pool{{.workers = 1, .max_tasks_per_worker = 3}};
  std::vector<int> pids;
  for (int i = 0; i < 9; ++i) pids.push_back(pool.submit(worker_pid, i).get());
  const std::set<int> distinct(pids.begin(), pids.end());
  CHECK(distinct.size() == 3);
  for (int i = 0; i < 9; i += 3) {
    CHECK(pids[static_cast<std::size_t>(i)] == pids[static_cast<std::size_t>(i + 2)]);
  }
  const auto s = pool.stats();
  CHECK(s.recycled >= 2);
  CHECK(s.crashes == 0);
}

TEST_CASE("process_pool: graceful shutdown finishes queued work and refuses new work",
          "[process_pool]") {
  const int fds = open_fd_count();
  {
    ptk::process_pool pool{{.workers = 2}};
    std::vector<ptk::future<int>> futures;
    for (int i = 0; i < 200; ++i) futures.push_back(pool.submit(twice, i));
    pool.shutdown();
    for (int i = 0; i < 200; ++i) REQUIRE(futures[static_cast<std::size_t>(i)].get() == 2 * i);
    CHECK_THROWS_AS(pool.submit(twice, 1), ptk::process_pool_error);
    CHECK(pool.stats().workers_alive == 0);
  }
  CHECK(open_fd_count() == fds);
  CHECK_FALSE(has_children());
}

TEST_CASE("process_pool: immediate shutdown cancels queued and running tasks and kills the workers",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 1}};
  const int pid = pool.submit(worker_pid, 0).get();
  auto stuck = pool.submit(blocks_forever, 0);
  std::vector<ptk::future<int>> queued;
  for (int i = 0; i < 20; ++i) queued.push_back(pool.submit(twice, i));
  const auto t0 = std::chrono::steady_clock::now();
  pool.shutdown(ptk::shutdown_mode::immediate);
  CHECK(std::chrono::steady_clock::now() - t0 < 5s);
  CHECK_THROWS_AS(stuck.get(), ptk::task_cancelled_error);
  for (auto& f : queued) CHECK_THROWS_AS(f.get(), ptk::task_cancelled_error);
  CHECK(process_gone(pid));
  CHECK_FALSE(has_children());
  const auto s = pool.stats();
  CHECK(s.tasks_failed == 21);
  CHECK(s.tasks_queued == 0);
  CHECK(s.tasks_running == 0);
}

TEST_CASE("process_pool: submit is safe from many threads", "[process_pool]") {
  ptk::process_pool pool{{.workers = 2, .prefetch = 8}};
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&pool, &wrong, t] {
      std::vector<ptk::future<int>> fs;
      for (int i = 0; i < 250; ++i) fs.push_back(pool.submit(twice, t * 1000 + i));
      for (int i = 0; i < 250; ++i)
        wrong += fs[static_cast<std::size_t>(i)].get() != 2 * (t * 1000 + i);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
  CHECK(pool.stats().tasks_done == 1000);
}

TEST_CASE("process_pool: reports its workers and is ready once they serve", "[process_pool]") {
  ptk::process_pool pool{{.workers = 2}};
  REQUIRE(pool.wait_ready_for(30s));
  CHECK(pool.stats().workers_alive == 2);
  CHECK(pool.size() == 2);
}

TEST_CASE("process_pool: workers die with a parent that is killed", "[process_pool]") {
  auto parent = ptk::spawn(ptk::command("/proc/self/exe")
                               .env("PTK_TEST_POOL_PARENT", "1")
                               .std_out(ptk::stdio::pipe)
                               .std_in(ptk::stdio::null));
  std::string line;
  char buf[64];
  while (line.find('\n') == std::string::npos) {
    const std::size_t n = parent.std_out().read_some(buf, sizeof buf);
    REQUIRE(n > 0);
    line.append(buf, n);
  }
  const int worker = std::stoi(line);
  REQUIRE(worker > 0);
  REQUIRE_FALSE(process_gone(worker));
  parent.signal(SIGKILL);
  CHECK(parent.wait().signal() == SIGKILL);
  CHECK(eventually([&] { return process_gone(worker); }));
}

TEST_CASE(
    "process_pool: without serve_if_worker, a worker starts serving at the pool's constructor",
    "[process_pool]") {
  ptk::run_options options;
  options.timeout = std::chrono::seconds(60);
  const auto r =
      ptk::run(ptk::command("/proc/self/exe").env("PTK_TEST_POOL_CONSTRUCTOR", "1"), options);
  CHECK(r.status.success());
  CHECK(r.out.find("main before the pool runs in the parent\n") != std::string::npos);
  CHECK(r.out.find("main before the pool runs in a worker\n") != std::string::npos);  // documented
  CHECK(r.out.find("result 42\n") != std::string::npos);
}

TEST_CASE("process_pool: request_stop on a future cancels its task before it starts",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 1, .task_timeout = 1s, .prefetch = 1}};
  auto stuck = pool.submit(blocks_forever, 0);  // holds the only worker until its timeout
  auto queued = pool.submit(twice, 1);
  auto kept = pool.submit(twice, 2);
  CHECK(queued.request_stop());
  CHECK_THROWS_AS(queued.get(), ptk::task_cancelled_error);
  CHECK(kept.get() == 4);
  CHECK_THROWS_AS(stuck.get(), ptk::task_timeout_error);
  CHECK(pool.stats().tasks_failed == 2);
}

TEST_CASE("process_pool: works from the tasks of a busy thread_pool", "[process_pool]") {
  ptk::thread_pool threads(4);
  ptk::process_pool pool{{.workers = 2}};
  std::vector<ptk::future<int>> outer;
  for (int t = 0; t < 8; ++t) {
    outer.push_back(threads.submit([&pool, t] {
      int sum = 0;
      for (int i = 0; i < 50; ++i) sum += pool.submit(twice, t * 100 + i).get();
      return sum;
    }));
  }
  for (int t = 0; t < 8; ++t) {
    int expected = 0;
    for (int i = 0; i < 50; ++i) expected += 2 * (t * 100 + i);
    CHECK(outer[static_cast<std::size_t>(t)].get() == expected);
  }
}

TEST_CASE("process_pool: with prefetch 1, short tasks never wait behind a long one",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 2, .prefetch = 1}};
  REQUIRE(pool.wait_ready_for(30s));
  auto stuck = pool.submit(blocks_forever, 0);
  std::vector<ptk::future<int>> shorts;
  for (int i = 0; i < 100; ++i) shorts.push_back(pool.submit(twice, i));
  for (int i = 0; i < 100; ++i) REQUIRE(shorts[static_cast<std::size_t>(i)].get() == 2 * i);
  CHECK_FALSE(stuck.is_ready());
  pool.shutdown(ptk::shutdown_mode::immediate);
  CHECK_THROWS_AS(stuck.get(), ptk::task_cancelled_error);
}

TEST_CASE("process_pool: tasks prefetched behind a task that times out run elsewhere, once",
          "[process_pool]") {
  ptk::process_pool pool{{.workers = 2, .task_timeout = 1s}};
  REQUIRE(pool.wait_ready_for(30s));
  // Both workers learn that tasks are short, so they take several at a time...
  for (int i = 0; i < 50; ++i) REQUIRE(pool.submit(twice, i).get() == 2 * i);
  // ...then one task never ends, and some short ones may already sit behind it.
  auto stuck = pool.submit(blocks_forever, 0);
  std::vector<ptk::future<int>> shorts;
  for (int i = 0; i < 100; ++i) shorts.push_back(pool.submit(twice, i));
  for (int i = 0; i < 100; ++i) REQUIRE(shorts[static_cast<std::size_t>(i)].get() == 2 * i);
  CHECK_THROWS_AS(stuck.get(), ptk::task_timeout_error);
  const auto s = pool.stats();
  CHECK(s.tasks_done == 150);
  CHECK(s.tasks_failed == 1);
  CHECK(s.tasks_queued == 0);
  CHECK(s.tasks_running == 0);
}
