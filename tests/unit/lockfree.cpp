// The lock-free queues under the thread pool, tested directly with real threads.
#include <ptk/detail/mpmc_queue.hpp>
#include <ptk/detail/task_fn.hpp>
#include <ptk/detail/ws_deque.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#include "catch.hpp"

namespace {

// Counts live instances, so leaks and double destructions show.
struct tracked {
  static std::atomic<int>& live() {
    static std::atomic<int> n{0};
    return n;
  }
  int value = -1;
  tracked() { live().fetch_add(1); }
  explicit tracked(int v) : value(v) { live().fetch_add(1); }
  tracked(tracked&& o) noexcept : value(o.value) { live().fetch_add(1); }
  tracked& operator=(tracked&& o) noexcept {
    value = o.value;
    return *this;
  }
  tracked(const tracked&) = delete;
  tracked& operator=(const tracked&) = delete;
  ~tracked() { live().fetch_sub(1); }
};

}  // namespace

TEST_CASE("mpmc_queue is FIFO for one producer and one consumer, across many blocks") {
  ptk::detail::mpmc_queue<int> q;
  int out = 0;
  CHECK_FALSE(q.try_pop(out));
  for (int i = 0; i < 1000; ++i) {
    int v = i;
    q.push(std::move(v));
  }
  CHECK(q.size_approx() == 1000);
  CHECK(q.pushed() == 1000);
  for (int i = 0; i < 1000; ++i) {
    REQUIRE(q.try_pop(out));
    CHECK(out == i);
  }
  CHECK_FALSE(q.try_pop(out));
  CHECK(q.size_approx() == 0);
}

TEST_CASE("mpmc_queue::try_pop_many takes a share in order and never crosses a block") {
  ptk::detail::mpmc_queue<int> q;
  for (int i = 0; i < 100; ++i) {
    int v = i;
    q.push(std::move(v));
  }
  std::vector<int> got;
  const auto n = q.try_pop_many([&](int&& v) { got.push_back(v); }, 64, 1);
  CHECK(n == 31);  // the rest of the first block, however many are queued
  const auto m = q.try_pop_many([&](int&& v) { got.push_back(v); }, 5, 1);
  CHECK(m == 5);
  for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i] == static_cast<int>(i));
  CHECK(q.size_approx() == 64);
}

TEST_CASE("mpmc_queue destroys what is left in it, exactly once") {
  REQUIRE(tracked::live() == 0);
  {
    ptk::detail::mpmc_queue<tracked> q;
    for (int i = 0; i < 100; ++i) q.push(tracked(i));
    tracked out;
    for (int i = 0; i < 40; ++i) REQUIRE(q.try_pop(out));
    CHECK(out.value == 39);
  }
  CHECK(tracked::live() == 0);
}

TEST_CASE("mpmc_queue reuses its blocks: values stay intact across many refills") {
  REQUIRE(tracked::live() == 0);
  {
    ptk::detail::mpmc_queue<tracked> q;
    int next_in = 0;
    int next_out = 0;
    // Short bursts keep only a few blocks in use, so retired blocks are taken again.
    for (int round = 0; round < 200; ++round) {
      for (int i = 0; i < 45; ++i) q.push(tracked(next_in++));
      while (q.try_pop_many([&](tracked&& t) { CHECK(t.value == next_out++); }, 16, 1) != 0) {
      }
    }
    CHECK(next_out == next_in);
    CHECK(q.size_approx() == 0);
  }
  CHECK(tracked::live() == 0);
}

TEST_CASE("mpmc_queue::try_pop_many destroys the rest of a claim when the sink throws") {
  REQUIRE(tracked::live() == 0);
  {
    ptk::detail::mpmc_queue<tracked> q;
    for (int i = 0; i < 100; ++i) q.push(tracked(i));
    int handed = 0;
    CHECK_THROWS_AS(q.try_pop_many(
                        [&](tracked&&) {
                          if (++handed == 3) throw std::runtime_error("sink");
                        },
                        10, 1),
                    std::runtime_error);
    CHECK(tracked::live() == 90);  // ten claimed: three handed over, seven destroyed
    std::vector<int> rest;
    while (q.try_pop_many([&](tracked&& t) { rest.push_back(t.value); }, 16, 1) != 0) {
    }
    REQUIRE(rest.size() == 90);
    CHECK(rest.front() == 10);
    CHECK(rest.back() == 99);
  }
  CHECK(tracked::live() == 0);
}

TEST_CASE("mpmc_queue loses and duplicates nothing with many producers and consumers") {
  constexpr int producers = 3;
  constexpr int consumers = 3;
  constexpr int per_producer = 50000;
  ptk::detail::mpmc_queue<int> q;
  std::vector<std::atomic<int>> seen(producers * per_producer);
  std::atomic<int> consumed{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      for (int i = 0; i < per_producer; ++i) {
        int v = p * per_producer + i;
        q.push(std::move(v));
      }
    });
  }
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      int v = 0;
      while (consumed.load() < producers * per_producer) {
        if (c % 2 == 0) {
          if (q.try_pop(v)) {
            seen[static_cast<std::size_t>(v)].fetch_add(1);
            consumed.fetch_add(1);
          }
        } else {
          const auto n = q.try_pop_many(
              [&](int&& x) { seen[static_cast<std::size_t>(x)].fetch_add(1); }, 8, 2);
          consumed.fetch_add(static_cast<int>(n));
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  int wrong = 0;
  for (auto& s : seen) wrong += s.load() == 1 ? 0 : 1;
  CHECK(wrong == 0);
  CHECK(q.pushed() == producers * per_producer);
}

TEST_CASE("ws_deque: the owner pops LIFO and thieves steal FIFO") {
  ptk::detail::ws_deque<int> d(2);
  int items[5] = {0, 1, 2, 3, 4};
  for (int& i : items) d.push(&i);  // grows past its initial capacity
  CHECK(d.size_approx() == 5);
  CHECK(*d.steal() == 0);
  CHECK(*d.pop() == 4);
  CHECK(*d.steal() == 1);
  CHECK(*d.pop() == 3);
  CHECK(*d.pop() == 2);
  CHECK(d.pop() == nullptr);
  CHECK(d.steal() == nullptr);
}

TEST_CASE("ws_deque hands every item to exactly one of the owner and the thieves") {
  constexpr int n = 200000;
  std::vector<int> values(n);
  std::vector<std::atomic<int>> taken(n);
  ptk::detail::ws_deque<int> d(16);
  std::atomic<bool> done{false};
  std::vector<std::thread> thieves;
  for (int t = 0; t < 2; ++t) {
    thieves.emplace_back([&] {
      while (!done.load()) {
        if (int* p = d.steal()) taken[static_cast<std::size_t>(p - values.data())].fetch_add(1);
      }
    });
  }
  for (int i = 0; i < n; ++i) {
    d.push(&values[static_cast<std::size_t>(i)]);
    if (i % 3 == 0) {
      if (int* p = d.pop()) taken[static_cast<std::size_t>(p - values.data())].fetch_add(1);
    }
  }
  while (int* p = d.pop()) taken[static_cast<std::size_t>(p - values.data())].fetch_add(1);
  done = true;
  for (auto& t : thieves) t.join();
  int wrong = 0;
  for (auto& t : taken) wrong += t.load() == 1 ? 0 : 1;
  CHECK(wrong == 0);
}

TEST_CASE("task_fn runs small callables inline and large ones boxed, destroying each once") {
  REQUIRE(tracked::live() == 0);
  int sum = 0;
  {
    ptk::detail::task_fn small([&sum, t = std::make_shared<tracked>(1)] { sum += t->value; });
    ptk::detail::task_fn big([&sum, t = std::make_shared<tracked>(2),
                              pad = std::array<char, 200>{}] { sum += t->value + pad[0]; });
    ptk::detail::task_fn moved = std::move(big);
    CHECK_FALSE(big);  // NOLINT(bugprone-use-after-move)
    CHECK(tracked::live() == 2);
    small();
    moved();
    CHECK_FALSE(small);
    CHECK(tracked::live() == 0);  // running destroys the callable
    ptk::detail::task_fn dropped([t = std::make_shared<tracked>(3)] {});
    CHECK(tracked::live() == 1);
  }
  CHECK(sum == 3);
  CHECK(tracked::live() == 0);
}
