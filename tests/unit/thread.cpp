#include <ptk/thread/sync.hpp>
#include <ptk/thread/thread.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using ptk::thread_state;

namespace {

// The kernel's name for thread `tid` of this process, without the trailing newline.
std::string kernel_name(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/comm";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd == -1) return "<cannot open " + path + ">";
  char buf[64];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  std::string name(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
  if (!name.empty() && name.back() == '\n') name.pop_back();
  return name;
}

// A thread body that blocks until `release` is set or a stop is requested, so that
// a ptk::thread's destructor always ends it, even when a REQUIRE fails.
auto block_until(ptk::event& release) {
  return [&release](std::stop_token token) { (void)release.wait(std::move(token)); };
}

}  // namespace

TEST_CASE("ptk::thread runs its function with its arguments") {
  int sum = 0;
  ptk::thread t{"adder", [&sum](int a, int b) { sum = a + b; }, 2, 3};
  CHECK(t.joinable());
  t.join();
  CHECK_FALSE(t.joinable());
  CHECK(sum == 5);
  CHECK(t.state() == thread_state::finished);
  CHECK(t.exception() == nullptr);
}

TEST_CASE("ptk::thread copies its arguments, moves move-only ones, and honours std::ref") {
  int target = 0;
  std::string copied = "original";
  auto owned = std::make_unique<int>(42);
  int seen = 0;
  ptk::thread t{"args",
                [&seen](int& ref, std::string s, std::unique_ptr<int> p) {
                  ref = 7;
                  s += " changed";
                  seen = *p;
                },
                std::ref(target), copied, std::move(owned)};
  t.join();
  CHECK(target == 7);
  CHECK(copied == "original");
  CHECK(seen == 42);
}

TEST_CASE("ptk::thread gives the kernel its name, visible in /proc/self/task/<tid>/comm") {
  const int fds_before = ptk::test::open_fd_count();
  ptk::event release;
  {
    ptk::thread t{"worker-1", block_until(release)};
    CHECK(t.name() == "worker-1");
    CHECK(kernel_name(t.native_id()) == "worker-1");
    release.set();
  }
  CHECK(ptk::test::open_fd_count() == fds_before);
}

TEST_CASE("ptk::thread cuts a long name to 15 bytes for the kernel but keeps it whole") {
  ptk::event release;
  ptk::thread t{"a-very-long-thread-name", block_until(release)};
  CHECK(t.name() == "a-very-long-thread-name");
  CHECK(kernel_name(t.native_id()) == "a-very-long-thr");

  // Nine two-byte characters: 15 bytes would end inside the eighth, so 14 are kept.
  const std::string accented =
      "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9";
  ptk::thread u{accented, block_until(release)};
  CHECK(u.name() == accented);
  CHECK(kernel_name(u.native_id()) == accented.substr(0, 14));
  release.set();
}

TEST_CASE("ptk::thread goes from created through running to finished") {
  ptk::event entered;
  ptk::event release;
  ptk::thread t{"stages", [&](std::stop_token token) {
                  entered.set();
                  (void)release.wait(std::move(token));
                }};
  // Nothing holds the new thread back, so it may already be running here.
  const thread_state first = t.state();
  CHECK((first == thread_state::created || first == thread_state::running));
  REQUIRE(entered.wait_for(10s));
  CHECK(t.state() == thread_state::running);
  CHECK_FALSE(t.wait_for(0s));
  CHECK(t.exception() == nullptr);
  release.set();
  REQUIRE(t.wait_for(10s));
  CHECK(t.state() == thread_state::finished);
  t.join();
  CHECK(t.state() == thread_state::finished);
  CHECK(t.exception() == nullptr);
}

TEST_CASE("an exception escaping the function fails the thread and is kept") {
  ptk::thread t{"thrower", [] { throw std::runtime_error("boom"); }};
  REQUIRE(t.wait_for(10s));
  CHECK(t.state() == thread_state::failed);
  REQUIRE(t.exception() != nullptr);
  CHECK_THROWS_WITH(std::rethrow_exception(t.exception()), "boom");
  t.join();
  CHECK(t.state() == thread_state::failed);
  CHECK(t.exception() != nullptr);
}

TEST_CASE("an exception of any type is captured, never std::terminate") {
  ptk::thread t{"int-thrower", [] { throw 42; }};
  t.join();
  CHECK(t.state() == thread_state::failed);
  CHECK_THROWS_AS(std::rethrow_exception(t.exception()), int);
}

TEST_CASE("the stop token reaches the function, and the destructor requests stop and joins") {
  std::atomic<bool> saw_stop{false};
  ptk::event entered;
  {
    ptk::thread t{"stoppable", [&](std::stop_token token) {
                    ptk::event never;
                    entered.set();
                    saw_stop = !never.wait(std::move(token));
                  }};
    REQUIRE(entered.wait_for(10s));
    CHECK_FALSE(saw_stop);
  }
  // The destructor returned, so it joined: the function has run to its end.
  CHECK(saw_stop);
}

TEST_CASE("request_stop signals the token that get_stop_token returns") {
  ptk::event release;
  ptk::thread t{"stop-me", block_until(release)};
  const std::stop_token token = t.get_stop_token();
  CHECK(token.stop_possible());
  CHECK_FALSE(token.stop_requested());
  CHECK(t.request_stop());
  CHECK(token.stop_requested());
  CHECK_FALSE(t.request_stop());  // already requested
  REQUIRE(t.wait_for(10s));
  CHECK(t.state() == thread_state::finished);
  CHECK_FALSE(release.is_set());  // it ended through the stop, not the event
}

TEST_CASE("ptk::thread wait_for times out while the function runs") {
  ptk::event release;
  ptk::thread t{"slow", block_until(release)};
  const auto start = steady::now();
  CHECK_FALSE(t.wait_for(20ms));
  CHECK(steady::now() - start >= 20ms);
  CHECK_FALSE(t.wait_until(steady::now() + 5ms));
  CHECK_FALSE(t.wait_until(std::chrono::system_clock::now() + 5ms));
  CHECK(t.state() == thread_state::running);
  release.set();
  CHECK(t.wait_until(steady::time_point::max()));  // no deadline: must not overflow
  CHECK(t.wait_for(std::chrono::hours::max()));
}

TEST_CASE("ptk::thread wait_for sleeps in the kernel instead of spinning") {
  ptk::event release;
  ptk::thread t{"awaited", block_until(release)};
  std::atomic<pid_t> watcher_tid{0};
  std::atomic<int> result{0};
  ptk::thread watcher{"watcher", [&] {
                        watcher_tid = ptk::test::current_tid();
                        result = t.wait_for(60s) ? 1 : 2;
                      }};
  const bool slept = ptk::test::eventually(
      [&] { return watcher_tid != 0 && ptk::test::thread_state(watcher_tid) == 'S'; });
  release.set();
  watcher.join();
  CHECK(slept);
  CHECK(result == 1);
}

TEST_CASE("native_id is the kernel thread id the thread sees for itself") {
  std::atomic<pid_t> inside{0};
  ptk::thread t{"whoami", [&] { inside = ptk::test::current_tid(); }};
  const pid_t id = t.native_id();  // may have to wait for the thread to publish it
  t.join();
  CHECK(id == inside);
  CHECK(id != ptk::test::current_tid());
  CHECK(t.native_id() == id);  // still readable after join
}

TEST_CASE("ptk::thread is move-only, and a moved-from one is empty") {
  static_assert(!std::is_copy_constructible_v<ptk::thread>);
  static_assert(!std::is_copy_assignable_v<ptk::thread>);
  static_assert(std::is_nothrow_move_constructible_v<ptk::thread>);
  static_assert(std::is_nothrow_move_assignable_v<ptk::thread>);

  ptk::event release;
  ptk::thread a{"mover", block_until(release)};
  const pid_t id = a.native_id();
  ptk::thread b = std::move(a);
  CHECK(b.joinable());
  CHECK(b.name() == "mover");
  CHECK(b.native_id() == id);

  CHECK_FALSE(a.joinable());  // NOLINT(bugprone-use-after-move): testing the moved-from state
  CHECK_THROWS_AS(a.state(), std::logic_error);
  CHECK_THROWS_AS(a.name(), std::logic_error);
  CHECK_THROWS_AS(a.native_id(), std::logic_error);
  CHECK_THROWS_AS(a.exception(), std::logic_error);
  CHECK_THROWS_AS(a.wait_for(0s), std::logic_error);
  CHECK_FALSE(a.request_stop());
  CHECK_FALSE(a.get_stop_token().stop_possible());
  release.set();
}

TEST_CASE("a default-constructed ptk::thread represents no thread") {
  ptk::thread t;
  CHECK_FALSE(t.joinable());
  CHECK_THROWS_AS(t.state(), std::logic_error);
  CHECK_THROWS_AS(t.join(), std::system_error);
  CHECK_FALSE(t.request_stop());
}

TEST_CASE("move assignment stops and joins the thread it replaces") {
  std::atomic<bool> first_stopped{false};
  ptk::event release;
  ptk::thread a{"first", [&](std::stop_token token) {
                  ptk::event never;
                  first_stopped = !never.wait(std::move(token));
                }};
  ptk::thread b{"second", block_until(release)};
  a = std::move(b);
  CHECK(first_stopped);  // the assignment returned only after the first thread ended
  CHECK(a.name() == "second");
  CHECK(a.state() != thread_state::finished);
  release.set();
  a.join();
  CHECK(a.state() == thread_state::finished);
}

TEST_CASE("join on a joined thread throws std::system_error") {
  ptk::thread t{"once", [] {}};
  t.join();
  CHECK_THROWS_AS(t.join(), std::system_error);
  CHECK(t.state() == thread_state::finished);
}

TEST_CASE("to_string names every thread_state") {
  STATIC_REQUIRE(ptk::to_string(thread_state::created) == "created");
  STATIC_REQUIRE(ptk::to_string(thread_state::running) == "running");
  STATIC_REQUIRE(ptk::to_string(thread_state::finished) == "finished");
  STATIC_REQUIRE(ptk::to_string(thread_state::failed) == "failed");
  CHECK(ptk::to_string(static_cast<thread_state>(99)) == "unknown");
}
