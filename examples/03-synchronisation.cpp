// 03 — synchronisation: what the standard gives, and the two pieces ptk adds.
//
// C++20 already has std::mutex, std::condition_variable, std::counting_semaphore,
// std::latch and std::barrier; ptk does not wrap them, use them as they are. It adds
// two things the standard lacks:
//   * ptk::event, Python's threading.Event: a flag that threads wait on, set and
//     cleared again, with timed waits and waits a std::stop_token can cancel;
//   * ptk::wait_group, Go's sync.WaitGroup: a count of outstanding tasks that grows
//     with add() at any time and can be reused once it has reached zero.
// Both are a few 32-bit words on a futex, so they also work between processes.
#include <ptk/thread.hpp>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <latch>
#include <mutex>
#include <optional>
#include <semaphore>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

namespace {

using steady = std::chrono::steady_clock;

double ms(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// CPU-bound work the optimiser cannot remove: xorshift steps.
std::uint64_t churn(std::uint64_t x, int steps) {
  for (int i = 0; i < steps; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

}  // namespace

int main() {
  std::printf("The standard's pieces, briefly\n");

  // std::mutex: one thread at a time in the critical section.
  {
    std::mutex m;
    long counter = 0;
    const auto t0 = steady::now();
    {
      std::vector<std::jthread> threads;
      threads.reserve(2);
      for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&] {
          for (int i = 0; i < 100'000; ++i) {
            const std::lock_guard lock(m);
            ++counter;
          }
        });
      }
    }  // jthreads join here
    std::printf("  std::mutex: 2 threads x 100000 locked increments = %ld (%.1f ms)\n", counter,
                ms(steady::now() - t0));
  }

  // std::condition_variable: sleep until a condition on shared data holds. The
  // condition lives under a mutex, and wait() takes a predicate.
  {
    std::mutex m;
    std::condition_variable cv;
    std::deque<int> queue;
    bool closed = false;
    std::vector<int> received;
    std::jthread consumer([&] {
      std::unique_lock lock(m);
      for (;;) {
        cv.wait(lock, [&] { return !queue.empty() || closed; });
        if (queue.empty()) return;  // closed and drained
        received.push_back(queue.front());
        queue.pop_front();
      }
    });
    for (int i = 1; i <= 5; ++i) {
      {
        const std::lock_guard lock(m);
        queue.push_back(i * i);
      }
      cv.notify_one();
    }
    {
      const std::lock_guard lock(m);
      closed = true;
    }
    cv.notify_one();
    consumer.join();
    std::printf("  std::condition_variable: the consumer received");
    for (int v : received) std::printf(" %d", v);
    std::printf("\n");
  }

  // std::counting_semaphore: at most N threads inside at once.
  {
    std::counting_semaphore<2> slots(2);
    std::atomic<int> inside{0};
    std::atomic<int> most_inside{0};
    {
      std::vector<std::jthread> threads;
      threads.reserve(6);
      for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&, t] {
          slots.acquire();
          const int now = inside.fetch_add(1) + 1;
          int seen = most_inside.load();
          while (seen < now && !most_inside.compare_exchange_weak(seen, now)) {
          }
          volatile std::uint64_t sink = churn(static_cast<std::uint64_t>(t) + 1, 2'000'000);
          (void)sink;
          inside.fetch_sub(1);
          slots.release();
        });
      }
    }
    std::printf("  std::counting_semaphore<2>: 6 threads, at most %d inside at once\n",
                most_inside.load());
  }

  // std::latch: a single-use countdown; wait() returns once it reaches zero.
  {
    std::latch initialised(3);
    std::atomic<int> ready{0};
    std::vector<std::jthread> threads;
    threads.reserve(3);
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&] {
        ready.fetch_add(1);
        initialised.count_down();
        // ... the thread would go on with its real work here ...
      });
    }
    initialised.wait();
    std::printf("  std::latch(3): main saw %d of 3 threads initialised\n", ready.load());
  }

  // std::barrier: threads meet at the end of each phase; the completion function
  // runs once per phase, on one of them, before any continues.
  {
    int phase = 0;
    std::barrier meet(3, [&phase]() noexcept {
      ++phase;
      std::printf("  std::barrier(3): phase %d complete, all 3 threads arrived\n", phase);
    });
    std::vector<std::jthread> threads;
    threads.reserve(3);
    for (int t = 0; t < 3; ++t) {
      threads.emplace_back([&meet] {
        for (int p = 0; p < 3; ++p) meet.arrive_and_wait();
      });
    }
  }

  std::printf("\nptk::event: Python's threading.Event\n");
  {
    ptk::event ev;

    // A timed wait on a flag nobody raises: an expected outcome, a return value.
    auto t0 = steady::now();
    const bool got = ev.wait_for(std::chrono::milliseconds(30));
    std::printf("  wait_for(30 ms) on a cleared event -> %s after %.1f ms\n",
                got ? "true" : "false", ms(steady::now() - t0));

    // One set() releases every waiter: no mutex, no predicate, no notify_all, and,
    // unlike std::latch, the event can be cleared and used again.
    ptk::wait_group released;
    std::vector<std::jthread> waiters;
    waiters.reserve(3);
    for (int t = 0; t < 3; ++t) {
      released.add();
      waiters.emplace_back([&] {
        ev.wait();
        released.done();
      });
    }
    t0 = steady::now();
    ev.set();
    released.wait();
    std::printf("  one set() let all 3 waiters through in %.3f ms; is_set() = %s\n",
                ms(steady::now() - t0), ev.is_set() ? "true" : "false");
    ev.clear();
    std::printf("  after clear(): is_set() = %s, wait_for(0 ms) -> %s\n",
                ev.is_set() ? "true" : "false",
                ev.wait_for(std::chrono::milliseconds(0)) ? "true" : "false");

    // A stop token cancels a wait: the way to shut down a thread blocked on an event
    // that will never be set.
    std::optional<bool> outcome;  // written by the thread, read after join()
    std::jthread blocked([&](std::stop_token stop) { outcome = ev.wait(std::move(stop)); });
    t0 = steady::now();
    blocked.request_stop();
    blocked.join();
    std::printf("  wait(stop_token) cancelled by request_stop() -> %s, %.3f ms after the request\n",
                *outcome ? "true" : "false", ms(steady::now() - t0));
  }

  std::printf("\nptk::wait_group: Go's sync.WaitGroup\n");
  {
    ptk::wait_group group;
    ptk::event hold_last;  // keeps the last worker busy until we have looked
    std::atomic<std::uint64_t> work_done{0};
    std::vector<std::jthread> workers;
    workers.reserve(5);
    for (int t = 0; t < 3; ++t) {
      group.add();  // count the task in before starting it, as in Go
      workers.emplace_back([&, t] {
        work_done.fetch_add(churn(static_cast<std::uint64_t>(t) + 1, 100'000) % 10);
        if (t == 2) hold_last.wait();
        group.done();
      });
    }
    auto t0 = steady::now();
    const bool all = group.wait_for(std::chrono::milliseconds(20));
    std::printf("  3 tasks, one held back: wait_for(20 ms) -> %s after %.1f ms, count() = %u\n",
                all ? "true" : "false", ms(steady::now() - t0), group.count());
    hold_last.set();
    group.wait();
    std::printf("  released it: wait() returned, count() = %u\n", group.count());

    // Unlike std::latch, the count can grow again after reaching zero: reuse it for a
    // second round.
    group.add(2);
    for (int t = 0; t < 2; ++t) workers.emplace_back([&] { group.done(); });
    group.wait();
    std::printf("  second round with add(2): wait() returned, count() = %u\n", group.count());

    // A done() without its add() is a bug, reported loudly.
    try {
      group.done();
    } catch (const std::logic_error& e) {
      std::printf("  one done() too many throws std::logic_error: \"%s\"\n", e.what());
    }
  }
  return 0;
}
