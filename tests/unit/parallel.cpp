#include <ptk/thread/parallel.hpp>

#include <atomic>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"

TEST_CASE("parallel_for calls the body exactly once for every index") {
  ptk::thread_pool pool{2};
  for (std::size_t n : {0UL, 1UL, 7UL, 1000UL, 100003UL}) {
    for (std::size_t grain : {0UL, 1UL, 3UL, 4096UL}) {
      std::vector<std::atomic<int>> hits(n + 10);
      ptk::parallel_for(
          pool, 10, n + 10, [&](std::size_t i) { hits[i].fetch_add(1); }, grain);
      int wrong = 0;
      for (std::size_t i = 0; i < n + 10; ++i) wrong += hits[i].load() == (i >= 10 ? 1 : 0) ? 0 : 1;
      INFO("n = " << n << ", grain = " << grain);
      CHECK(wrong == 0);
    }
  }
}

TEST_CASE("parallel_for runs part of the range on the calling thread") {
  ptk::thread_pool pool{2};
  std::vector<std::thread::id> who(1000);
  ptk::parallel_for(pool, 0, who.size(),
                    [&](std::size_t i) { who[i] = std::this_thread::get_id(); });
  CHECK(who[0] == std::this_thread::get_id());  // the caller keeps the first chunk
}

TEST_CASE("parallel_for rethrows the first exception and skips the rest") {
  ptk::thread_pool pool{2};
  std::atomic<int> ran{0};
  std::atomic<bool> first_ran{false};
  CHECK_THROWS_AS(ptk::parallel_for(
                      pool, 0, 100000,
                      [&](std::size_t i) {
                        ran.fetch_add(1);
                        if (i == 0) {
                          first_ran.store(true);
                          throw std::domain_error("index 0");
                        }
                        // The other chunks wait for index 0 (the caller runs it), so
                        // a caller preempted before it cannot let the helpers finish
                        // the whole range before the throw.
                        while (!first_ran.load()) std::this_thread::yield();
                      },
                      1),
                  std::domain_error);
  CHECK(ran.load() < 100000);
}

TEST_CASE("a parallel loop on a pool that was shut down throws and runs nothing") {
  ptk::thread_pool pool{2};
  pool.shutdown(ptk::shutdown_policy::drain);
  std::atomic<int> ran{0};
  CHECK_THROWS_AS(ptk::parallel_for(pool, 0, 100, [&](std::size_t) { ran.fetch_add(1); }),
                  std::runtime_error);
  CHECK(ran.load() == 0);
}

TEST_CASE("parallel loops nested inside pool tasks, more than workers, finish") {
  ptk::thread_pool pool{2};
  std::atomic<long> total{0};
  ptk::parallel_for(
      pool, 0, 8,
      [&](std::size_t) {
        ptk::parallel_for(
            pool, 0, 100, [&](std::size_t j) { total.fetch_add(static_cast<long>(j)); }, 1);
      },
      1);
  CHECK(total.load() == 8 * 4950);
}

TEST_CASE("parallel_reduce sums like a sequential loop") {
  ptk::thread_pool pool{2};
  const std::size_t n = 1'000'003;
  const auto sum = ptk::parallel_reduce(
      pool, 0, n, std::uint64_t{0}, [](std::size_t i) { return std::uint64_t{i}; }, std::plus<>{});
  CHECK(sum == std::uint64_t{n} * (n - 1) / 2);
  CHECK(ptk::parallel_reduce(
            pool, 5, 5, 17, [](std::size_t) { return 1; }, std::plus<>{}) == 17);
}

TEST_CASE("parallel_reduce combines chunks in index order, deterministically") {
  ptk::thread_pool pool{2};
  const auto digits = ptk::parallel_reduce(
      pool, 0, 200, std::string{}, [](std::size_t i) { return std::to_string(i % 10); },
      [](std::string a, const std::string& b) { return a + b; }, 7);
  std::string expected;
  for (int i = 0; i < 200; ++i) expected += std::to_string(i % 10);
  CHECK(digits == expected);

  // Chunks large enough to be folded as four quarters (with a remainder): the
  // concatenation, which is associative but not commutative, shows the order kept.
  const auto long_digits = ptk::parallel_reduce(
      pool, 0, 5003, std::string{}, [](std::size_t i) { return std::to_string(i % 10); },
      [](std::string a, const std::string& b) { return a + b; }, 1001);
  std::string long_expected;
  for (int i = 0; i < 5003; ++i) long_expected += std::to_string(i % 10);
  CHECK(long_digits == long_expected);

  std::vector<double> v(100000);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = 1.0 / static_cast<double>(i + 1);
  const auto once = ptk::parallel_reduce(
      pool, 0, v.size(), 0.0, [&](std::size_t i) { return v[i]; }, std::plus<>{});
  const auto again = ptk::parallel_reduce(
      pool, 0, v.size(), 0.0, [&](std::size_t i) { return v[i]; }, std::plus<>{});
  CHECK(once == again);
}
