// 04 — ptk::thread_pool: many small tasks on a few threads.
//
// Starting a thread costs tens of microseconds; a pool starts its workers once and
// hands them tasks for well under a microsecond each. This program shows the whole
// surface of ptk::thread_pool:
//   * post(f): fire and forget; wait_idle() waits until everything has run;
//   * submit(f, args...): returns a ptk::future; the task's exception comes out of
//     get(), as with concurrent.futures;
//   * priorities: priority::high jumps ahead of every queued normal task;
//   * a task may wait on a future of its own pool: the waiting worker runs other
//     tasks meanwhile, so the pool cannot deadlock on itself;
//   * a task taking a std::stop_token can be cancelled through its future;
//   * stats() for metrics, and shutdown policies for what is still queued.
#include <ptk/thread.hpp>

#include <pthread.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

double ms(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The kernel name of the calling thread: pool workers are named "<pool name>-<index>".
std::string current_thread_name() {
  char buf[16] = {};
  (void)::pthread_getname_np(::pthread_self(), buf, sizeof buf);
  return buf;
}

// CPU-bound work the optimiser cannot remove: xorshift steps.
std::uint64_t churn(std::uint64_t x, int steps) {
  for (int i = 0; i < steps; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

void print_stats(const char* when, const ptk::thread_pool& pool) {
  const ptk::thread_pool_stats s = pool.stats();
  std::printf(
      "  stats() %s: workers %zu, queued %zu, running %zu, executed %llu, stolen %llu, "
      "discarded %llu\n",
      when, s.workers, s.queued, s.running, static_cast<unsigned long long>(s.executed),
      static_cast<unsigned long long>(s.stolen), static_cast<unsigned long long>(s.discarded));
}

}  // namespace

int main() {
  // A posted task has no future to carry its exception: the pool hands it to
  // on_error (without one, it prints it and terminates, like a std::thread would).
  std::mutex errors_mutex;
  std::vector<std::string> posted_errors;
  ptk::thread_pool pool{
      {.workers = 2, .name = "tutorial", .on_error = [&](const std::exception_ptr& e) {
         try {
           std::rethrow_exception(e);
         } catch (const std::exception& ex) {
           const std::lock_guard lock(errors_mutex);
           posted_errors.emplace_back(ex.what());
         }
       }}};
  std::printf("a pool of %u workers named tutorial-0 and tutorial-1\n", pool.size());

  // 1. post: fire and forget. wait_idle() returns once every task has run.
  std::printf("\n1. post() and wait_idle()\n");
  {
    std::mutex m;
    std::map<std::string, int> ran_on;
    std::uint64_t checksum = 0;  // keeps the work from being optimised away
    const auto t0 = steady::now();
    for (int i = 0; i < 8; ++i) {
      pool.post([&m, &ran_on, &checksum, i] {
        const std::uint64_t r = churn(static_cast<std::uint64_t>(i) + 1, 1'000'000);
        const std::lock_guard lock(m);
        checksum ^= r;
        ran_on[current_thread_name()] += 1;
      });
    }
    pool.post([] { throw std::runtime_error("a posted task failed"); });
    pool.wait_idle();
    std::printf("  9 tasks posted; wait_idle() returned after %.1f ms\n", ms(steady::now() - t0));
    std::printf("  the 8 computing tasks ran on:");
    for (const auto& [name, count] : ran_on) std::printf(" %s x%d", name.c_str(), count);
    std::printf(" (checksum %016llx)\n", static_cast<unsigned long long>(checksum));
    std::printf("  on_error received: \"%s\"\n",
                posted_errors.empty() ? "(nothing)" : posted_errors.front().c_str());
  }

  // 2. submit: arguments are copied or moved into the task; the result comes back
  //    through a ptk::future.
  std::printf("\n2. submit() with arguments, and futures\n");
  {
    ptk::future<int> product = pool.submit([](int a, int b) { return a * b; }, 6, 7);
    ptk::future<std::string> greeting = pool.submit(
        [](const std::string& who, std::unique_ptr<int> times) {
          std::string s;
          for (int i = 0; i < *times; ++i) s += "hello " + who + "! ";
          return s + "(from " + current_thread_name() + ")";
        },
        std::string("pool"), std::make_unique<int>(2));  // a move-only argument is fine
    std::printf("  product.get() = %d\n", product.get());
    std::printf("  greeting.get() = \"%s\"\n", greeting.get().c_str());
    std::printf("  after get() the future is empty: valid() = %s\n",
                greeting.valid() ? "true" : "false");
  }

  // 3. An exception thrown by a submitted task is rethrown by get(), with its type.
  std::printf("\n3. exceptions travel through futures\n");
  {
    ptk::future<double> root = pool.submit(
        [](double x) {
          if (x < 0) throw std::domain_error("sqrt of a negative number");
          return x;
        },
        -1.0);
    root.wait();
    std::printf("  is_ready() = %s\n", root.is_ready() ? "true" : "false");
    try {
      (void)root.get();
    } catch (const std::domain_error& e) {
      std::printf("  get() rethrew std::domain_error: \"%s\"\n", e.what());
    }
  }

  // 4. Priorities, shown on a one-worker pool so that the order is certain: hold its
  //    worker, queue three normal and two high tasks, then let it go. Priority is
  //    the only order promised: tasks of one priority may start in any order (a
  //    worker claims several queued tasks at once and keeps them on its own deque).
  std::printf("\n4. priority::high runs before every queued normal task\n");
  {
    ptk::thread_pool single{{.workers = 1, .name = "single"}};
    ptk::event holding;
    ptk::event release;
    single.post([&] {
      holding.set();
      release.wait();
    });
    holding.wait();

    std::mutex m;
    std::vector<std::string> order;
    auto record = [&m, &order](std::string what) {
      return [&m, &order, what = std::move(what)] {
        const std::lock_guard lock(m);
        order.push_back(what);
      };
    };
    for (int i = 1; i <= 3; ++i) single.post(record("normal-" + std::to_string(i)));
    for (int i = 1; i <= 2; ++i)
      single.post(ptk::priority::high, record("high-" + std::to_string(i)));
    print_stats("while the worker is held", single);
    release.set();
    single.wait_idle();
    std::printf("  queued normal-1..3 then high-1..2; they ran as:");
    for (const auto& s : order) std::printf(" %s", s.c_str());
    std::printf("\n");
  }

  // 5. Nested waits: each outer task submits two inner tasks to the same pool and
  //    waits for them. With 4 outer tasks on 2 workers, a pool of plain threads
  //    blocking in std::future::get() would deadlock; a waiting ptk worker runs
  //    queued tasks (often the very ones it waits for) instead of sleeping.
  std::printf("\n5. a task waiting on futures of its own pool\n");
  {
    struct outcome {
      long sum = 0;
      int inner_on_waiting_worker = 0;
    };
    const auto t0 = steady::now();
    std::vector<ptk::future<outcome>> outer;
    outer.reserve(4);
    for (int k = 1; k <= 4; ++k) {
      outer.push_back(pool.submit(
          [&pool](int n) {
            const std::thread::id waiter = std::this_thread::get_id();
            auto inner = [waiter](long v) {
              volatile std::uint64_t work = churn(static_cast<std::uint64_t>(v), 500'000);
              (void)work;
              return std::pair{v, std::this_thread::get_id() == waiter};
            };
            ptk::future<std::pair<long, bool>> a = pool.submit(inner, n * 10L);
            ptk::future<std::pair<long, bool>> b = pool.submit(inner, n * 100L);
            const auto [va, a_here] = a.get();  // runs queued tasks while it waits
            const auto [vb, b_here] = b.get();
            return outcome{va + vb, (a_here ? 1 : 0) + (b_here ? 1 : 0)};
          },
          k));
    }
    long total = 0;
    int helped = 0;
    for (auto& f : outer) {
      const outcome o = f.get();
      total += o.sum;
      helped += o.inner_on_waiting_worker;
    }
    std::printf("  4 outer x 2 inner tasks on 2 workers: sum = %ld (expected 1100), %.1f ms\n",
                total, ms(steady::now() - t0));
    std::printf("  %d of the 8 inner tasks ran on the worker that was waiting for them\n", helped);
  }

  // 6. Cancellation: a task that takes a std::stop_token first gets one, triggered by
  //    its future's request_stop() (and by the pool's shutdown).
  std::printf("\n6. cancelling a task through its future\n");
  {
    ptk::event started;
    ptk::future<std::uint64_t> counting = pool.submit([&started](const std::stop_token& stop) {
      std::uint64_t rounds = 0;
      while (!stop.stop_requested()) {
        ++rounds;
        started.set();
      }
      return rounds;
    });
    started.wait();
    const auto t0 = steady::now();
    const bool asked = counting.request_stop();
    const std::uint64_t rounds = counting.get();
    std::printf("  request_stop() -> %s; the task returned %.3f ms later after %llu rounds\n",
                asked ? "true" : "false", ms(steady::now() - t0),
                static_cast<unsigned long long>(rounds));
  }

  std::printf("\n7. counters\n");
  pool.wait_idle();
  print_stats("after all of the above", pool);

  // 8. What happens to queued work at shutdown: drain (the default) runs it all;
  //    discard drops what has not started, and its futures report broken_promise.
  //    The running task sees the shutdown's stop request and ends early.
  std::printf("\n8. shutdown(shutdown_policy::discard)\n");
  {
    ptk::thread_pool single{{.workers = 1, .name = "single"}};
    ptk::event holding;
    ptk::event never_set;
    ptk::future<bool> running = single.submit([&](std::stop_token stop) {
      holding.set();
      return never_set.wait(std::move(stop));  // false once the pool asks it to stop
    });
    holding.wait();
    std::vector<ptk::future<int>> queued;
    queued.reserve(3);
    for (int i = 0; i < 3; ++i) queued.push_back(single.submit([i] { return i; }));
    single.shutdown(ptk::shutdown_policy::discard);
    std::printf("  the running task's wait returned %s (stopped)\n",
                running.get() ? "true" : "false");
    for (auto& f : queued) {
      try {
        (void)f.get();
      } catch (const std::future_error& e) {
        std::printf("  a queued task's get(): std::future_error, broken_promise = %s\n",
                    e.code() == std::future_errc::broken_promise ? "true" : "false");
      }
    }
    print_stats("after shutdown", single);
  }
  return 0;
}
