#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/detail/atomic.hpp>
#include <ptk/thread/thread_pool.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

namespace {

ptk::task<int> value_of(int x) { co_return x; }

ptk::task<int> add_one_awaited(int x) { co_return co_await value_of(x) + 1; }

// The address of a local in the innermost task of a chain, to compare with the outermost.
thread_local std::uintptr_t innermost_stack = 0;

// A plain function: its local is on the stack (a coroutine's locals live in its frame).
[[gnu::noinline]] void record_stack_position() {
  innermost_stack = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

ptk::task<int> nested_chain(int depth) {
  if (depth == 0) {
    record_stack_position();
    co_return 0;
  }
  co_return 1 + co_await nested_chain(depth - 1);
}

// How far below this function's frame the innermost task of a `depth` chain ran.
[[gnu::noinline]] std::uintptr_t stack_used_by_chain(int depth) {
  const auto top = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
  const int levels = ptk::sync_wait(nested_chain(depth));
  REQUIRE(levels == depth);
  return top > innermost_stack ? top - innermost_stack : innermost_stack - top;
}

// Clang always compiles symmetric transfer to a tail call. GCC does so only with
// -foptimize-sibling-calls, which -O2 and up turn on (CMake's Release and
// RelWithDebInfo); an unoptimised GCC build grows the stack per transfer. (A
// hand-made GCC -O1 build needs -foptimize-sibling-calls added.) ThreadSanitizer's
// function exit hooks rule out tail calls with either compiler, and GCC also drops
// them under AddressSanitizer.
#if defined(__clang__) && !defined(PTK_TSAN)
constexpr bool transfer_is_tail_call = true;
#elif !defined(__clang__) && defined(__OPTIMIZE__) && !defined(PTK_TSAN) && !defined(PTK_ASAN)
constexpr bool transfer_is_tail_call = true;
#else
constexpr bool transfer_is_tail_call = false;
#endif

ptk::task<void> throws_out_of_range() {
  throw std::out_of_range("index 7");
  co_return;
}

}  // namespace

TEST_CASE("a task does not run its body until it is awaited") {
  bool ran = false;
  auto body = [](bool& flag) -> ptk::task<int> {
    flag = true;
    co_return 1;
  };
  ptk::task<int> t = body(ran);
  CHECK_FALSE(ran);
  CHECK(ptk::sync_wait(t) == 1);
  CHECK(ran);
}

TEST_CASE("a task that is never awaited destroys its frame and captured state") {
  auto counter = std::make_shared<int>(0);
  {
    auto body = [](std::shared_ptr<int> c) -> ptk::task<void> {
      ++*c;
      co_return;
    };
    ptk::task<void> t = body(counter);
    CHECK(counter.use_count() == 2);
  }
  CHECK(counter.use_count() == 1);
  CHECK(*counter == 0);
}

TEST_CASE("a task gives its value, nothing, a move-only value or a reference") {
  CHECK(ptk::sync_wait(add_one_awaited(41)) == 42);
  ptk::sync_wait([]() -> ptk::task<void> { co_return; }());
  auto p = ptk::sync_wait([]() -> ptk::task<std::unique_ptr<std::string>> {
    co_return std::make_unique<std::string>("moved");
  }());
  REQUIRE(p != nullptr);
  CHECK(*p == "moved");
  int target = 1;
  int& r = ptk::sync_wait([](int& t) -> ptk::task<int&> { co_return t; }(target));
  r = 5;
  CHECK(target == 5);
}

TEST_CASE("an exception thrown in a task reaches the awaiter with its type") {
  auto outer = []() -> ptk::task<std::string> {
    try {
      co_await throws_out_of_range();
    } catch (const std::out_of_range& e) {
      co_return std::string("caught ") + e.what();
    }
    co_return "not thrown";
  };
  CHECK(ptk::sync_wait(outer()) == "caught index 7");
  CHECK_THROWS_AS(ptk::sync_wait(throws_out_of_range()), std::out_of_range);
}

TEST_CASE("100000 nested co_awaits run in constant stack space") {
  if constexpr (transfer_is_tail_call) {
    CHECK(stack_used_by_chain(100000) < 64 * 1024);
  } else {
    WARN("no tail calls in this build (unoptimised GCC, or a sanitizer): checking 1000 levels");
    CHECK(stack_used_by_chain(1000) < 1024 * 1024);
  }
}

TEST_CASE("a million awaits of tasks that complete at once run in constant stack") {
  const int rounds = transfer_is_tail_call ? 1000000 : 1000;
  auto loop = [](int n) -> ptk::task<long> {
    long sum = 0;
    for (int i = 0; i < n; ++i) sum += co_await value_of(1);
    co_return sum;
  };
  CHECK(ptk::sync_wait(loop(rounds)) == rounds);
}

TEST_CASE("sync_wait returns the result of a task that completed on a pool worker") {
  ptk::thread_pool pool{2};
  const std::thread::id caller = std::this_thread::get_id();
  auto hop = [](ptk::thread_pool& p) -> ptk::task<std::thread::id> {
    co_await p.schedule();
    co_return std::this_thread::get_id();
  };
  const std::thread::id ran_on = ptk::sync_wait(hop(pool));
  CHECK(ran_on != caller);
}

TEST_CASE("sync_wait rethrows an exception thrown on a pool worker") {
  ptk::thread_pool pool{1};
  auto fail = [](ptk::thread_pool& p) -> ptk::task<int> {
    co_await p.schedule();
    throw std::runtime_error("failed on a worker");
  };
  CHECK_THROWS_WITH(ptk::sync_wait(fail(pool)), "failed on a worker");
}

TEST_CASE("sync_wait on a pool worker lets the awaited task use the same pool") {
  ptk::thread_pool pool{1};
  auto inner = [](ptk::thread_pool& p) -> ptk::task<int> {
    co_await p.schedule();
    co_return 3;
  };
  auto f = pool.submit([&] { return ptk::sync_wait(inner(pool)); });
  CHECK(f.get() == 3);
}

TEST_CASE("sync_wait accepts any awaitable, not only tasks") {
  ptk::thread_pool pool{1};
  ptk::sync_wait(pool.schedule());
  struct ready_seven {
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    int await_resume() const noexcept { return 7; }
  };
  CHECK(ptk::sync_wait(ready_seven{}) == 7);
}

TEST_CASE("a task inherits its awaiter's stop token and reads it without suspending") {
  std::stop_source source;
  auto leaf = []() -> ptk::task<bool> {
    std::stop_token t = co_await ptk::get_stop_token();
    co_return t.stop_requested();
  };
  auto middle = [&]() -> ptk::task<bool> {
    std::stop_token t = co_await ptk::get_stop_token();
    CHECK(t.stop_possible());
    co_return co_await leaf();
  };
  CHECK_FALSE(ptk::sync_wait(middle(), source.get_token()));
  source.request_stop();
  CHECK(ptk::sync_wait(middle(), source.get_token()));
  CHECK_FALSE(ptk::sync_wait(leaf()));
}

TEST_CASE("the frame allocator serves frames from the thread's cache after warm-up") {
  ptk::sync_wait(add_one_awaited(1));  // warm up: frames of these sizes are cached now
  const ptk::frame_allocator_stats before = ptk::this_thread_frame_stats();
  for (int i = 0; i < 1000; ++i) ptk::sync_wait(add_one_awaited(i));
  const ptk::frame_allocator_stats after = ptk::this_thread_frame_stats();
  // The driver and two tasks per round; Clang may elide the inner task's allocation.
  CHECK(after.allocations - before.allocations >= 2000);
  CHECK(after.hits - before.hits == after.allocations - before.allocations);
  CHECK(after.misses == before.misses);
}

TEST_CASE("the frame cache of a thread stays bounded") {
  std::thread t([] {
    std::vector<ptk::task<int>> many;
    for (int i = 0; i < 100000; ++i) many.push_back(value_of(i));
    many.clear();  // about 100000 frames freed on this thread
    const ptk::frame_allocator_stats s = ptk::this_thread_frame_stats();
    CHECK(s.cached_bytes <= std::size_t{1} << 20);
    CHECK(s.released > 0);
  });
  t.join();
}

TEST_CASE("inline_executor resumes at once on the calling thread") {
  ptk::inline_executor ex;
  const std::thread::id caller = std::this_thread::get_id();
  auto body = [](ptk::inline_executor e) -> ptk::task<std::thread::id> {
    co_await e.schedule();
    co_return std::this_thread::get_id();
  };
  CHECK(ptk::sync_wait(body(ex)) == caller);
  int calls = 0;
  ex.post([&] { ++calls; });
  CHECK(calls == 1);
}
