#include <ptk/coro.hpp>
#include <ptk/ipc.hpp>
#include <ptk/thread.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "ipc_support.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using namespace ptk::test;
using ptk::channel_status;

namespace {

template <class Channel>
ptk::task<std::vector<typename Channel::value_type>> drain(Channel& ch, channel_status& end) {
  std::vector<typename Channel::value_type> got;
  for (;;) {
    auto r = co_await ch.async_recv();
    if (!r) {
      end = r.status();
      co_return got;
    }
    got.push_back(std::move(*r));
  }
}

using packed_ring = ptk::shm_ring<int>;
using stamped_ring = ptk::shm_ring<int, ptk::ring_layout::stamped>;

}  // namespace

TEMPLATE_TEST_CASE("async_recv on a shm_ring, fed by another thread", "[ipc][async]", packed_ring,
                   stamped_ring) {
  const shm_name name;
  auto rx = TestType::create(name, 8);
  auto tx = TestType::open(name);
  std::atomic<int> failures{0};  // Catch assertions are for the main thread only
  std::thread producer([&] {
    for (int i = 0; i < 5000; ++i) failures += tx.send(i) != channel_status::ok;
    tx.close();
  });
  channel_status end = channel_status::ok;
  const auto got = ptk::sync_wait(drain(rx, end));
  producer.join();
  CHECK(failures == 0);
  CHECK(end == channel_status::closed);
  REQUIRE(got.size() == 5000);
  for (int i = 0; i < 5000; ++i) REQUIRE(got[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("async_recv on a queue and a pipe", "[ipc][async]") {
  ptk::queue<std::string> q{4, {.max_message_size = 32}};
  auto [a, b] = ptk::pipe<std::string>::create();
  std::atomic<int> failures{0};
  std::thread producer([&, &a = a] {
    for (int i = 0; i < 2000; ++i) {
      failures += q.send("q" + std::to_string(i)) != channel_status::ok;
      failures += a.send("p" + std::to_string(i)) != channel_status::ok;
    }
    q.close();
    a.close();
  });
  channel_status qend = channel_status::ok, pend = channel_status::ok;
  auto [qs, ps] = ptk::sync_wait(ptk::when_all(drain(q, qend), drain(b, pend)));
  producer.join();
  CHECK(failures == 0);
  CHECK(qend == channel_status::closed);
  CHECK(pend == channel_status::closed);
  REQUIRE(qs.size() == 2000);
  REQUIRE(ps.size() == 2000);
  CHECK(qs.back() == "q1999");
  CHECK(ps.back() == "p1999");
}

TEST_CASE("async_recv: many channels wait at once without a thread each", "[ipc][async]") {
  constexpr int n = 300;  // more than one futex_waitv batch
  std::vector<ptk::shm_ring<int>> rings;
  rings.reserve(n);
  for (int i = 0; i < n; ++i) rings.push_back(ptk::shm_ring<int>::anonymous(2));
  const auto threads_before = threads_of_this_process().size();
  ptk::thread_pool pool{2};
  std::atomic<int> sum{0};
  ptk::async_scope scope;
  for (auto& r : rings) {
    scope.spawn([](ptk::shm_ring<int>& ring, std::atomic<int>& total) -> ptk::task<void> {
      auto v = co_await ring.async_recv();
      if (v) total += *v;
    }(r, sum));
  }
  // 300 waiters: the pool's 2 workers plus a handful of watcher threads, not 300.
  CHECK(threads_of_this_process().size() < threads_before + 2 + 8);
  for (int i = 0; i < n; ++i)
    REQUIRE(rings[static_cast<std::size_t>(i)].send(i) == channel_status::ok);
  ptk::sync_wait(scope.join());
  CHECK(sum == n * (n - 1) / 2);
}

TEST_CASE("async_recv: stop tokens cancel, and a dead producer is reported", "[ipc][async]") {
  const shm_name name;
  auto rx = ptk::shm_ring<int>::create(name, 8);
  std::stop_source stop;
  std::atomic<channel_status> st{channel_status::ok};
  std::atomic<pid_t> tid{0};
  std::thread waiter([&] {
    tid = gettid_now();
    st = ptk::sync_wait(
        [](ptk::shm_ring<int>& r) -> ptk::task<channel_status> {
          co_return (co_await r.async_recv()).status();
        }(rx),
        stop.get_token());
  });
  // Its only suspension point is async_recv: once the thread sleeps, the coroutine waits.
  REQUIRE(eventually([&] { return tid != 0 && sleeping_in_futex(tid); }));
  stop.request_stop();
  waiter.join();
  CHECK(st == channel_status::cancelled);

  const pid_t child = fork_child([&] {
    auto tx = ptk::shm_ring<int>::open(name.str());
    tx.send(1);
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  channel_status end = channel_status::ok;
  const auto got = ptk::sync_wait(drain(rx, end));
  CHECK(got == std::vector<int>{1});
  CHECK(end == channel_status::peer_lost);
  ::waitpid(child, nullptr, 0);
}
