#include <ptk/thread/sync.hpp>

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <new>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <utility>
#include <vector>

#include "catch.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

namespace {

// One page of MAP_SHARED anonymous memory: after fork, parent and child see the same
// physical page, the simplest form of the shared memory ptk::event is built for.
class shared_page {
 public:
  shared_page() {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mem_ = p;
  }
  ~shared_page() { ::munmap(mem_, size); }
  shared_page(const shared_page&) = delete;
  shared_page& operator=(const shared_page&) = delete;
  void* get() const { return mem_; }

 private:
  static constexpr std::size_t size = 4096;
  void* mem_ = nullptr;
};

// Sets an event when leaving a scope, so that a failed REQUIRE cannot leave a waiter
// thread blocked forever while its std::jthread destructor joins it.
struct set_on_exit {
  ptk::event& e;
  ~set_on_exit() { e.set(); }
};

// Whether thread `tid` of this process is asleep ('S'): the kernel-observable proof
// that a waiter really blocked before the test wakes it.
bool asleep(const std::atomic<pid_t>& tid) {
  const pid_t t = tid.load();
  return t != 0 && ptk::test::thread_state(t) == 'S';
}

// For a forked child: the state letter of the task whose stat file is at `path`,
// with only async-signal-safe calls (open, read, close) and no allocation.
char raw_task_state(const char* path) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd == -1) return '?';
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  for (ssize_t i = n - 1; i > 0; --i) {
    if (buf[i] == ')') return i + 2 < n ? buf[i + 2] : '?';
  }
  return '?';
}

// For a forked child: monotonic seconds, async-signal-safe.
double monotonic_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

}  // namespace

// ---------------------------------------------------------------------------- event

TEST_CASE("event set before a wait makes every wait return at once") {
  ptk::event e;
  CHECK_FALSE(e.is_set());
  e.set();
  CHECK(e.is_set());
  e.wait();
  CHECK(e.wait_for(0s));
  CHECK(e.wait_for(-1s));
  CHECK(e.wait_until(steady::now() - 1s));
  std::stop_source stop;
  stop.request_stop();
  CHECK(e.wait(stop.get_token()));  // a set event wins over a stop request
  e.set();                          // setting twice is harmless
  CHECK(e.is_set());
}

TEST_CASE("event constructed set starts set") {
  ptk::event e{true};
  CHECK(e.is_set());
  ptk::event f{false};
  CHECK_FALSE(f.is_set());
}

TEST_CASE("event wait wakes when another thread sets it") {
  ptk::event e;
  std::atomic<pid_t> tid{0};
  std::atomic<bool> returned{false};
  std::jthread waiter([&] {
    tid = ptk::test::current_tid();
    e.wait();
    returned = true;
  });
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  CHECK_FALSE(returned);
  e.set();
  waiter.join();
  CHECK(returned);
}

TEST_CASE("event wait_for times out returning false") {
  ptk::event e;
  const auto start = steady::now();
  CHECK_FALSE(e.wait_for(20ms));
  CHECK(steady::now() - start >= 20ms);
  CHECK_FALSE(e.wait_for(0s));
  CHECK_FALSE(e.wait_for(-5s));
  CHECK_FALSE(e.wait_until(steady::now() + 5ms));
  CHECK_FALSE(e.wait_until(steady::now() - 1s));
  CHECK_FALSE(e.wait_until(std::chrono::system_clock::now() + 5ms));
  CHECK_FALSE(e.is_set());
}

TEST_CASE("event wait_for returns true when set before its timeout") {
  ptk::event e;
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&] {
    tid = ptk::test::current_tid();
    result = e.wait_for(60s) ? 1 : 2;
  });
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  e.set();
  waiter.join();
  CHECK(result == 1);
}

TEST_CASE("event clear lowers the flag until the next set") {
  ptk::event e;
  e.set();
  e.clear();
  CHECK_FALSE(e.is_set());
  CHECK_FALSE(e.wait_for(5ms));
  e.clear();  // clearing a cleared event is harmless
  CHECK_FALSE(e.is_set());
  e.set();
  CHECK(e.is_set());
  CHECK(e.wait_for(0s));
}

TEST_CASE("event set then cleared at once still releases a blocked waiter") {
  // The waiter sleeps; set() and clear() both happen before it runs again. A waiter
  // that only looked at the flag would go back to sleep and miss the set.
  ptk::event e;
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&] {
    tid = ptk::test::current_tid();
    result = e.wait_for(60s) ? 1 : 2;
  });
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  e.set();
  e.clear();
  waiter.join();
  CHECK(result == 1);
  CHECK_FALSE(e.is_set());
}

TEST_CASE("event set wakes every waiter") {
  constexpr int count = 4;
  ptk::event e;
  std::atomic<pid_t> tids[count] = {};
  std::atomic<int> released{0};
  std::vector<std::jthread> waiters;
  waiters.reserve(count);
  for (auto& tid : tids) {
    waiters.emplace_back([&] {
      tid = ptk::test::current_tid();
      e.wait();
      released.fetch_add(1);
    });
  }
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] {
    for (const auto& t : tids) {
      if (!asleep(t)) return false;
    }
    return true;
  }));
  e.set();
  waiters.clear();  // joins them all
  CHECK(released == count);
}

TEST_CASE("event wait with a stop_token returns false when a stop is requested") {
  ptk::event e;
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&](std::stop_token token) {
    tid = ptk::test::current_tid();
    result = e.wait(std::move(token)) ? 1 : 2;
  });
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  waiter.request_stop();
  waiter.join();
  CHECK(result == 2);
  CHECK_FALSE(e.is_set());
}

TEST_CASE("event wait with an already stopped token returns false at once") {
  ptk::event e;
  std::stop_source stop;
  stop.request_stop();
  CHECK_FALSE(e.wait(stop.get_token()));
}

TEST_CASE("event wait with a stop_token still returns true when set") {
  ptk::event e;
  std::stop_source stop;
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&] {
    tid = ptk::test::current_tid();
    result = e.wait(stop.get_token()) ? 1 : 2;
  });
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  e.set();
  waiter.join();
  CHECK(result == 1);
  CHECK(e.wait(std::stop_token{}));  // a token that can never stop is a plain wait
}

TEST_CASE("event waits with enormous timeouts neither overflow nor time out") {
  ptk::event e;
  std::atomic<pid_t> tid_for{0};
  std::atomic<pid_t> tid_until{0};
  std::atomic<int> results{0};
  std::jthread a([&] {
    tid_for = ptk::test::current_tid();
    if (e.wait_for(std::chrono::hours::max())) results.fetch_add(1);
  });
  std::jthread b([&] {
    tid_until = ptk::test::current_tid();
    if (e.wait_until(steady::time_point::max())) results.fetch_add(1);
  });
  const set_on_exit guard{e};
  REQUIRE(ptk::test::eventually([&] { return asleep(tid_for) && asleep(tid_until); }));
  e.set();
  a.join();
  b.join();
  CHECK(results == 2);
}

TEST_CASE("event in MAP_SHARED memory is set by a forked child while the parent waits") {
  shared_page page;
  auto* e = new (page.get()) ptk::event;
  // Built before fork: the child only reads this buffer, it allocates nothing.
  char stat_path[64];
  std::snprintf(stat_path, sizeof stat_path, "/proc/%d/task/%d/stat", static_cast<int>(::getpid()),
                static_cast<int>(ptk::test::current_tid()));

  const pid_t child = ::fork();
  REQUIRE(child != -1);
  if (child == 0) {
    // Child: wait (bounded) until the parent sleeps in its wait, then set the event.
    const double give_up = monotonic_seconds() + 10;
    while (raw_task_state(stat_path) != 'S' && monotonic_seconds() < give_up) ::sched_yield();
    e->set();
    ::_exit(0);
  }
  const bool woken = e->wait_for(30s);
  CHECK(ptk::test::wait_exit_code(child) == 0);
  CHECK(woken);
  CHECK(e->is_set());
}

// ----------------------------------------------------------------------- wait_group

TEST_CASE("wait_group wait returns once every one of many threads has called done") {
  constexpr int count = 16;
  ptk::wait_group group;
  group.add(count);
  CHECK(group.count() == count);
  std::vector<int> results(count, 0);  // plain ints: done/wait must order the writes
  std::vector<std::jthread> workers;
  workers.reserve(count);
  for (int i = 0; i < count; ++i) {
    workers.emplace_back([&, i] {
      results[static_cast<std::size_t>(i)] = i + 1;
      group.done();
    });
  }
  group.wait();
  CHECK(group.count() == 0);
  for (int i = 0; i < count; ++i) CHECK(results[static_cast<std::size_t>(i)] == i + 1);
}

TEST_CASE("wait_group with nothing to wait for returns at once") {
  ptk::wait_group group;
  CHECK(group.count() == 0);
  group.wait();
  CHECK(group.wait_for(0s));
  CHECK(group.wait_until(steady::now() - 1s));
  std::stop_source stop;
  stop.request_stop();
  CHECK(group.wait(stop.get_token()));
}

TEST_CASE("wait_group done below zero throws logic_error and keeps the count at zero") {
  ptk::wait_group group;
  CHECK_THROWS_AS(group.done(), std::logic_error);
  CHECK(group.count() == 0);
  group.add(1);
  group.done();
  CHECK_THROWS_AS(group.done(), std::logic_error);
  CHECK(group.count() == 0);
}

TEST_CASE("wait_group add beyond the 32-bit count throws overflow_error") {
  ptk::wait_group group{std::numeric_limits<std::uint32_t>::max() - 1};
  group.add();
  CHECK(group.count() == std::numeric_limits<std::uint32_t>::max());
  CHECK_THROWS_AS(group.add(), std::overflow_error);
  CHECK(group.count() == std::numeric_limits<std::uint32_t>::max());
}

TEST_CASE("wait_group wait_for times out while tasks are outstanding") {
  ptk::wait_group group;
  group.add(2);
  const auto start = steady::now();
  CHECK_FALSE(group.wait_for(20ms));
  CHECK(steady::now() - start >= 20ms);
  CHECK_FALSE(group.wait_for(0s));
  CHECK_FALSE(group.wait_until(steady::now() + 5ms));
  CHECK_FALSE(group.wait_until(std::chrono::system_clock::now() + 5ms));
  group.done();
  CHECK_FALSE(group.wait_for(1ms));
  group.done();
  CHECK(group.wait_for(0s));
}

TEST_CASE("wait_group releases a blocked waiter at the last done, not before") {
  ptk::wait_group group{2};
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&] {
    tid = ptk::test::current_tid();
    result = group.wait_for(60s) ? 1 : 2;
  });
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  group.done();
  CHECK(result == 0);  // the first done makes no wake-up call: nothing to see yet
  group.done();
  waiter.join();
  CHECK(result == 1);
}

TEST_CASE("wait_group releases a waiter even if refilled right after reaching zero") {
  ptk::wait_group group{1};
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&] {
    tid = ptk::test::current_tid();
    result = group.wait_for(60s) ? 1 : 2;
  });
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  group.done();
  group.add();  // before the waiter can run again
  waiter.join();
  CHECK(result == 1);
  CHECK(group.count() == 1);
}

TEST_CASE("wait_group wait with a stop_token returns false when a stop is requested") {
  ptk::wait_group group{1};
  std::atomic<pid_t> tid{0};
  std::atomic<int> result{0};
  std::jthread waiter([&](std::stop_token token) {
    tid = ptk::test::current_tid();
    result = group.wait(std::move(token)) ? 1 : 2;
  });
  REQUIRE(ptk::test::eventually([&] { return asleep(tid); }));
  waiter.request_stop();
  waiter.join();
  CHECK(result == 2);
  CHECK(group.count() == 1);
}

TEST_CASE("wait_group in MAP_SHARED memory counts done from forked children") {
  constexpr int children = 3;
  shared_page page;
  auto* group = new (page.get()) ptk::wait_group{children};
  pid_t pids[children] = {};
  for (pid_t& pid : pids) {
    pid = ::fork();
    REQUIRE(pid != -1);
    if (pid == 0) {
      try {
        group->done();
      } catch (...) {
        ::_exit(1);
      }
      ::_exit(0);
    }
  }
  const bool all_done = group->wait_for(30s);
  for (const pid_t pid : pids) CHECK(ptk::test::wait_exit_code(pid) == 0);
  CHECK(all_done);
  CHECK(group->count() == 0);
}
