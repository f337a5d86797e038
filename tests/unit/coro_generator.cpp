#include <ptk/coro/generator.hpp>

#include <algorithm>
#include <memory>
#include <ranges>
#include <stdexcept>
#include <string>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

ptk::generator<int> count_to(int n, int& produced) {
  for (int i = 1; i <= n; ++i) {
    ++produced;
    co_yield i;
  }
}

[[maybe_unused]] ptk::generator<int> naturals() {
  for (int i = 0;; ++i) co_yield i;
}

}  // namespace

static_assert(std::ranges::input_range<ptk::generator<int>>);
static_assert(std::ranges::view<ptk::generator<int>>);

TEST_CASE("a generator runs its body only as values are requested") {
  int produced = 0;
  auto g = count_to(3, produced);
  CHECK(produced == 0);
  auto it = g.begin();
  CHECK(produced == 1);
  CHECK(*it == 1);
  ++it;
  CHECK(produced == 2);
  CHECK(*it == 2);
}

TEST_CASE("range-for visits every yielded value in order") {
  int produced = 0;
  std::vector<int> seen;
  for (int v : count_to(5, produced)) seen.push_back(v);
  CHECK(seen == std::vector<int>{1, 2, 3, 4, 5});
  int none = 0;
  CHECK(count_to(0, none).begin() == std::default_sentinel);
}

TEST_CASE("an exception thrown by the body reaches the consumer") {
  auto failing = []() -> ptk::generator<int> {
    co_yield 1;
    throw std::runtime_error("generator failed");
  };
  std::vector<int> seen;
  auto consume = [&] {
    for (int v : failing()) seen.push_back(v);
  };
  CHECK_THROWS_WITH(consume(), "generator failed");
  CHECK(seen == std::vector<int>{1});
  auto fails_first = []() -> ptk::generator<int> {
    throw std::logic_error("before the first value");
    co_yield 0;
  };
  auto g = fails_first();
  CHECK_THROWS_AS(g.begin(), std::logic_error);
}

TEST_CASE("a generator composes with std::views and std::ranges algorithms") {
  // Clang before 16 cannot compile libstdc++ 12's views (filter_view and friends)
  // whatever the range; the algorithms part below runs everywhere.
#if !defined(__clang__) || __clang_major__ >= 16
  auto even_squares = naturals() | std::views::filter([](int v) { return v % 2 == 0; }) |
                      std::views::transform([](int v) { return v * v; }) | std::views::take(4);
  std::vector<int> out;
  std::ranges::copy(even_squares, std::back_inserter(out));
  CHECK(out == std::vector<int>{0, 4, 16, 36});
#endif
  int produced = 0;
  auto numbers = count_to(100, produced);
  auto found = std::ranges::find(numbers, 7);
  REQUIRE(found != std::default_sentinel);
  CHECK(*found == 7);
  CHECK(produced == 7);  // stopped pulling once found
}

TEST_CASE("a generator yields references and move-only values without copying") {
  std::vector<std::string> words{"a", "b"};
  auto refs = [](std::vector<std::string>& w) -> ptk::generator<std::string&> {
    for (auto& s : w) co_yield s;
  };
  for (std::string& s : refs(words)) s += "!";
  CHECK(words == std::vector<std::string>{"a!", "b!"});
  auto owners = []() -> ptk::generator<std::unique_ptr<int>> {
    co_yield std::make_unique<int>(1);
    co_yield std::make_unique<int>(2);
  };
  int sum = 0;
  for (std::unique_ptr<int>& p : owners()) {
    std::unique_ptr<int> mine = std::move(p);
    sum += *mine;
  }
  CHECK(sum == 3);
}

TEST_CASE("destroying a half-consumed generator destroys the body's locals") {
  auto alive = std::make_shared<int>(0);
  {
    auto holds = [](std::shared_ptr<int> keep) -> ptk::generator<int> {
      for (;;) co_yield *keep;
    };
    auto g = holds(alive);
    auto it = g.begin();
    CHECK(*it == 0);
    CHECK(alive.use_count() == 2);
  }
  CHECK(alive.use_count() == 1);
}
