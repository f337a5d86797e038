#include <ptk/detail/futex.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <new>
#include <thread>

#include "catch.hpp"
#include "test_support.hpp"

using ptk::detail::futex_status;
using ptk::detail::futex_word;
using namespace std::chrono_literals;

namespace {

// A futex word in MAP_SHARED anonymous memory: after fork, parent and child see the
// same physical page, which is exactly the cross-process case ptk's channels need.
class shared_words {
 public:
  shared_words() {
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    mem_ = p;
    words_ = new (p) futex_word[2]{};
  }
  ~shared_words() { ::munmap(mem_, 4096); }
  shared_words(const shared_words&) = delete;
  shared_words& operator=(const shared_words&) = delete;
  futex_word& operator[](int i) { return words_[i]; }

 private:
  void* mem_ = nullptr;
  futex_word* words_ = nullptr;
};

}  // namespace

TEST_CASE("futex_wait returns value_changed at once when the word differs") {
  futex_word w{5};
  CHECK(ptk::detail::futex_wait(w, 4) == futex_status::value_changed);
  CHECK(ptk::detail::futex_wait_for(w, 4, 10s) == futex_status::value_changed);
}

TEST_CASE("futex_wait_for times out no earlier than its deadline") {
  futex_word w{0};
  const auto start = std::chrono::steady_clock::now();
  CHECK(ptk::detail::futex_wait_for(w, 0, 20ms) == futex_status::timed_out);
  CHECK(std::chrono::steady_clock::now() - start >= 20ms);
}

TEST_CASE("futex_wait_until with a deadline in the past times out without sleeping") {
  futex_word w{0};
  CHECK(ptk::detail::futex_wait_until(w, 0, std::chrono::steady_clock::now() - 1s) ==
        futex_status::timed_out);
}

TEST_CASE("futex_wake reports zero when nobody waits") {
  futex_word w{0};
  CHECK(ptk::detail::futex_wake(w) == 0);
  CHECK(ptk::detail::futex_wake_all(w) == 0);
}

TEST_CASE("futex_wake wakes a thread sleeping in futex_wait") {
  futex_word w{0};
  std::atomic<futex_status> result{futex_status::timed_out};
  std::thread waiter([&] { result = ptk::detail::futex_wait(w, 0); });
  // futex_wake returns how many it woke, so the loop ends exactly when the waiter
  // was asleep in the kernel and got woken: no guessing with sleeps.
  REQUIRE(ptk::test::eventually([&] { return ptk::detail::futex_wake(w) == 1; }));
  waiter.join();
  CHECK(result == futex_status::woken);
}

TEST_CASE("futex_wait_for wakes before its timeout when woken") {
  futex_word w{0};
  std::atomic<futex_status> result{futex_status::value_changed};
  std::thread waiter([&] {
    while (w.load() == 0) result = ptk::detail::futex_wait_for(w, 0, 60s);
  });
  REQUIRE(ptk::test::eventually([&] { return ptk::detail::futex_wake(w) == 1; }));
  w.store(1);
  ptk::detail::futex_wake_all(w);
  waiter.join();
  CHECK(result != futex_status::timed_out);
}

TEST_CASE("futex_wake_all wakes every waiter") {
  futex_word w{0};
  std::atomic<int> woken{0};
  std::thread a([&] {
    if (ptk::detail::futex_wait(w, 0) == futex_status::woken) ++woken;
  });
  std::thread b([&] {
    if (ptk::detail::futex_wait(w, 0) == futex_status::woken) ++woken;
  });
  int total = 0;
  REQUIRE(ptk::test::eventually([&] {
    total += ptk::detail::futex_wake_all(w);
    return total == 2;
  }));
  a.join();
  b.join();
  CHECK(woken == 2);
}

TEST_CASE("futex wait and wake work across processes on shared memory") {
  shared_words words;
  futex_word& ping = words[0];
  futex_word& pong = words[1];

  const pid_t child = ::fork();
  REQUIRE(child != -1);
  if (child == 0) {
    // Child: only atomics, raw futex calls and _exit (fork of a test process).
    const auto r = ptk::detail::futex_wait(ping, 0);
    pong.store(r == futex_status::woken ? 1 : 2);
    ptk::detail::futex_wake(pong);
    ::_exit(0);
  }
  // Only a shared futex lets this wake reach the child's wait: with a private
  // futex the loop would never see a waiter and the test would fail by its bound.
  const bool woke_child = ptk::test::eventually([&] { return ptk::detail::futex_wake(ping) == 1; });
  if (!woke_child) ::kill(child, SIGKILL);
  while (pong.load() == 0) (void)ptk::detail::futex_wait_for(pong, 0, 10s);
  CHECK(ptk::test::wait_exit_code(child) == 0);
  REQUIRE(woke_child);
  CHECK(pong.load() == 1);
}

TEST_CASE("futex_wait_until keeps its absolute deadline across signals") {
  // The waiter is interrupted by a handler installed without SA_RESTART, so the
  // kernel returns EINTR: the wrapper must retry with the same absolute deadline,
  // neither returning early nor sleeping past it.
  ptk::test::interrupting_handler handler;
  futex_word w{0};
  std::atomic<pid_t> tid{0};
  std::atomic<futex_status> result{futex_status::woken};
  const auto deadline = std::chrono::steady_clock::now() + 300ms;
  std::thread waiter([&] {
    tid = ptk::test::current_tid();
    result = ptk::detail::futex_wait_until(w, 0, deadline);
  });
  const int before = ptk::test::interrupting_handler::count();
  REQUIRE(ptk::test::eventually([&] { return tid != 0 && ptk::test::thread_state(tid) == 'S'; }));
  ::pthread_kill(waiter.native_handle(), SIGUSR1);
  waiter.join();
  CHECK(ptk::test::interrupting_handler::count() > before);
  CHECK(result == futex_status::timed_out);
  CHECK(std::chrono::steady_clock::now() >= deadline);
}
