#include <ptk/ipc/queue.hpp>
#include <ptk/ipc/shm_ring.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <random>
#include <set>
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

TEST_CASE("queue: many threads send and receive, each message exactly once", "[ipc][queue]") {
  // A power-of-two capacity and another (slots are found by a shift or a division).
  const std::size_t capacity = GENERATE(std::size_t{64}, std::size_t{100});
  ptk::queue<std::uint64_t> q{capacity};
  CHECK(q.capacity() == capacity);
  constexpr int producers = 3, consumers = 3, per = 20000;
  std::vector<std::vector<std::uint64_t>> got(consumers);
  std::vector<std::thread> threads;
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      while (auto v = q.recv()) got[static_cast<std::size_t>(c)].push_back(*v);
    });
  }
  std::vector<std::thread> senders;
  std::atomic<int> failures{0};  // Catch assertions are for the main thread only
  for (int p = 0; p < producers; ++p) {
    senders.emplace_back([&, p] {
      for (int i = 0; i < per; ++i) {
        failures += q.send((static_cast<std::uint64_t>(p) << 32) | static_cast<std::uint64_t>(i)) !=
                    channel_status::ok;
      }
    });
  }
  for (auto& t : senders) t.join();
  q.close();
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  std::vector<std::uint64_t> all;
  for (auto& g : got) {
    // Each consumer sees each producer's messages in the order they were sent.
    std::vector<std::int64_t> last(producers, -1);
    for (auto v : g) {
      const auto p = static_cast<std::size_t>(v >> 32);
      const auto i = static_cast<std::int64_t>(v & 0xffffffff);
      REQUIRE(i > last[p]);
      last[p] = i;
    }
    all.insert(all.end(), g.begin(), g.end());
  }
  std::sort(all.begin(), all.end());
  REQUIRE(all.size() == producers * per);
  CHECK(std::adjacent_find(all.begin(), all.end()) == all.end());
}

TEST_CASE("queue: strings up to the slot size; try forms, timeouts, stop, close", "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<std::string>::create(name, 2, {.max_message_size = 16});
  CHECK(q.max_message_size() == 16);
  CHECK_THROWS_AS(q.send(std::string(17, 'x')), std::length_error);
  CHECK(q.try_recv().status() == channel_status::empty);
  CHECK(q.recv_for(10ms).status() == channel_status::timeout);
  CHECK(q.try_send("one") == channel_status::ok);
  CHECK(q.try_send(std::string(16, 'y')) == channel_status::ok);
  CHECK(q.try_send("three") == channel_status::full);
  CHECK(q.send_for("three", 10ms) == channel_status::timeout);
  std::stop_source stop;
  std::atomic<channel_status> r{channel_status::ok};
  std::atomic<pid_t> tid{0};
  std::thread t([&] {
    tid = gettid_now();
    r = q.send("three", stop.get_token());
  });
  REQUIRE(eventually([&] { return tid != 0 && sleeping_in_futex(tid); }));
  stop.request_stop();
  t.join();
  CHECK(r == channel_status::cancelled);
  q.close();
  CHECK(q.send("late") == channel_status::closed);
  CHECK(*q.recv() == "one");
  CHECK(*q.recv() == std::string(16, 'y'));
  CHECK(q.recv().status() == channel_status::closed);
}

TEST_CASE("queue: an idle receiver sleeps in the kernel until a send wakes it", "[ipc][queue]") {
  // A receive on an empty queue tries again a few dozen times (pausing, then
  // yielding) and then sleeps on the futex: it does not spin while nothing comes.
  ptk::queue<std::uint64_t> q{4};
  std::atomic<pid_t> tid{0};
  std::atomic<std::uint64_t> got{0};
  std::thread receiver([&] {
    tid = gettid_now();
    auto v = q.recv();
    got = v ? *v : 0;
  });
  // (Checked after the join: a failed REQUIRE here would leave the thread blocked.)
  const bool asleep = eventually([&] { return tid != 0 && sleeping_in_futex(tid); });
  CHECK(q.send(42) == channel_status::ok);
  receiver.join();
  CHECK(asleep);
  CHECK(got == 42);
  CHECK(q.try_recv().status() == channel_status::empty);
}

TEST_CASE("queue: every send that returned ok, even racing close(), is received", "[ipc][queue]") {
  ptk::queue<std::uint64_t> q{8};
  std::atomic<std::uint64_t> sent{0}, received{0};
  std::vector<std::thread> threads;
  for (int p = 0; p < 3; ++p) {
    threads.emplace_back([&] {
      for (std::uint64_t i = 0; q.send(i) == channel_status::ok; ++i) ++sent;
    });
  }
  for (int c = 0; c < 2; ++c) {
    threads.emplace_back([&] {
      while (q.recv()) ++received;
    });
  }
  REQUIRE(eventually([&] { return sent.load() > 5000; }));
  q.close();  // while sends are in flight
  for (auto& t : threads) t.join();
  CHECK(received.load() == sent.load());
}

TEST_CASE("queue: 2 producer and 2 consumer processes", "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<std::uint64_t>::create(name, 128);
  auto results = ptk::queue<std::uint64_t>::anonymous(1 << 16);
  constexpr std::uint64_t per = 10000;
  std::vector<pid_t> kids;
  for (std::uint64_t p = 0; p < 2; ++p) {
    kids.push_back(fork_child([&, p] {
      auto tx = ptk::queue<std::uint64_t>::open(name.str());
      for (std::uint64_t i = 0; i < per; ++i) {
        if (tx.send(p * per + i) != channel_status::ok) return 1;
      }
      return 0;
    }));
  }
  for (int c = 0; c < 2; ++c) {
    kids.push_back(fork_child([&] {
      auto rx = ptk::queue<std::uint64_t>::open(name.str());
      while (auto v = rx.recv()) {
        if (results.send(*v) != channel_status::ok) return 1;
      }
      return 0;
    }));
  }
  CHECK(wait_exit_code(kids[0]) == 0);
  CHECK(wait_exit_code(kids[1]) == 0);
  std::vector<std::uint64_t> all;
  while (all.size() < 2 * per) {
    auto v = results.recv_for(30s);
    REQUIRE(v);
    all.push_back(*v);
  }
  q.close();
  CHECK(wait_exit_code(kids[2]) == 0);
  CHECK(wait_exit_code(kids[3]) == 0);
  std::sort(all.begin(), all.end());
  for (std::uint64_t i = 0; i < 2 * per; ++i) REQUIRE(all[i] == i);
  // Every process that sent on `results` has exited: the queue says so.
  CHECK(results.try_recv().status() == channel_status::peer_lost);
}

TEST_CASE("queue: producers killed at random points lose nothing committed", "[ipc][queue]") {
  std::mt19937 rng(99);
  for (int round = 0; round < 6; ++round) {
    const shm_name name;
    auto q = ptk::queue<std::uint64_t>::create(name, 32);
    std::vector<pid_t> kids;
    for (std::uint64_t p = 0; p < 2; ++p) {
      kids.push_back(fork_child([&, p] {
        auto tx = ptk::queue<std::uint64_t>::open(name.str());
        for (std::uint64_t i = 0;; ++i) {
          if (tx.send((p << 32) | i) != channel_status::ok) return 1;
        }
      }));
    }
    const std::uint64_t kill_at[2] = {rng() % 3000, rng() % 3000};
    std::uint64_t next[2] = {0, 0};
    for (;;) {
      auto v = q.recv_for(30s);
      if (!v) {
        CHECK(v.status() == channel_status::peer_lost);
        break;
      }
      const auto p = static_cast<std::size_t>(*v >> 32);
      REQUIRE(p < 2);
      REQUIRE((*v & 0xffffffff) == next[p]);  // in order, no gap, no duplicate
      if (++next[p] == kill_at[p] + 1) ::kill(kids[p], SIGKILL);
    }
    CHECK(next[0] > kill_at[0]);
    CHECK(next[1] > kill_at[1]);
    for (auto k : kids) ::waitpid(k, nullptr, 0);
  }
}

namespace {

// The state word of slot `i` of a queue whose segment is mapped at `base`.
std::atomic<std::uint64_t>& slot_word(ptk::shared_memory& base, std::size_t slot_size,
                                      std::size_t i) {
  return *reinterpret_cast<std::atomic<std::uint64_t>*>(
      base.data() + sizeof(ptk::detail::queue_control) + i * slot_size);
}
constexpr std::size_t int_slot = ptk::detail::round8(ptk::detail::queue_slot_header + sizeof(int));

// A sender process that, after sending `first` (if any), claims slot `slot` (lap 0)
// the way a sender does and dies before writing its message (and before moving the
// tail on). Returns once it is dead; false if it did not die by the signal.
bool sender_dies_holding(const shm_name& name, ptk::shared_memory& raw, std::size_t slot,
                         std::optional<int> first) {
  namespace qs = ptk::detail::queue_slot;
  const pid_t child = fork_child([&] {
    auto tx = ptk::queue<int>::open(name.str());
    if (first && tx.send(*first) != channel_status::ok) return 2;
    std::uint64_t empty = qs::make(0, qs::empty, 0);
    const auto me = static_cast<std::uint32_t>(::getpid());
    if (!slot_word(raw, int_slot, slot)
             .compare_exchange_strong(empty, qs::make(0, qs::writing, me))) {
      return 1;
    }
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  int status = 0;
  ::waitpid(child, &status, 0);
  return WIFSIGNALED(status);
}

}  // namespace

TEST_CASE("queue: a sender killed after claiming a slot does not wedge the queue", "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<int>::create(name, 4);
  auto raw = ptk::shared_memory::open(name);
  // The next sender steps over the dead sender's claimed slot 0.
  REQUIRE(sender_dies_holding(name, raw, 0, std::nullopt));
  REQUIRE(q.send(1) == channel_status::ok);  // behind the dead sender's slot
  CHECK(*q.recv_for(30s) == 1);              // skips it once the claimant is found dead
  for (int i = 2; i < 12; ++i) {
    REQUIRE(q.send(i) == channel_status::ok);
    REQUIRE(*q.recv() == i);
  }
  CHECK(q.try_recv().status() == channel_status::empty);
}

TEST_CASE("queue: the only sender, killed after claiming a slot, is reported lost",
          "[ipc][queue]") {
  // The receiver steps over the dead sender's slot and finds the queue empty. It
  // must then wait (and learn that every sender is gone), not spin: its head hint
  // once stayed on the skipped slot, which a waiting receive read as "ready" for
  // ever, so recv_for() neither slept nor returned.
  const shm_name name;
  auto q = ptk::queue<int>::create(name, 4);
  auto raw = ptk::shared_memory::open(name);
  REQUIRE(sender_dies_holding(name, raw, 1, 7));
  CHECK(*q.recv_for(30s) == 7);
  CHECK(q.recv_for(30s).status() == channel_status::peer_lost);
}

TEST_CASE("queue: tail and head hints that lag laps behind are stepped over", "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<int>::create(name, 4);
  for (int i = 0; i < 10; ++i) {
    REQUIRE(q.send(i) == channel_status::ok);
    REQUIRE(*q.recv() == i);
  }
  // As if two claimants descheduled since position 0 had just stored their hints.
  auto raw = ptk::shared_memory::open(name);
  for (auto offset :
       {offsetof(ptk::detail::queue_control, tail), offsetof(ptk::detail::queue_control, head)}) {
    reinterpret_cast<std::atomic<std::uint64_t>*>(raw.data() + offset)->store(1);
  }
  for (int i = 10; i < 14; ++i) REQUIRE(q.try_send(i) == channel_status::ok);
  CHECK(q.try_send(14) == channel_status::full);
  CHECK(q.size_approx() == 4);
  for (int i = 10; i < 14; ++i) REQUIRE(*q.try_recv() == i);
  CHECK(q.try_recv().status() == channel_status::empty);
}

TEST_CASE("queue: a receiver killed while reading costs that message and no slot", "[ipc][queue]") {
  namespace qs = ptk::detail::queue_slot;
  const shm_name name;
  auto q = ptk::queue<int>::create(name, 2);
  REQUIRE(q.send(1) == channel_status::ok);
  REQUIRE(q.send(2) == channel_status::ok);
  auto raw = ptk::shared_memory::open(name);
  const pid_t child = fork_child([&] {
    // Claim message 1 the way a receiver does, then die before reading it.
    auto rx = ptk::queue<int>::open(name.str());
    std::uint64_t full = qs::make(0, qs::full, 0);
    const auto me = static_cast<std::uint32_t>(::getpid());
    if (!slot_word(raw, int_slot, 0).compare_exchange_strong(full, qs::make(0, qs::reading, me)))
      return 1;
    ::kill(::getpid(), SIGKILL);  // before moving the head on, too
    return 0;
  });
  int status = 0;
  ::waitpid(child, &status, 0);
  REQUIRE(WIFSIGNALED(status));
  // The queue is full until a sender finds the reader dead and takes its slot back.
  CHECK(q.send_for(3, 30s) == channel_status::ok);
  CHECK(*q.recv() == 2);
  CHECK(*q.recv() == 3);
  CHECK(q.try_recv().status() == channel_status::empty);
}

TEST_CASE("queue: consumers killed at random points neither duplicate nor wedge", "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<std::uint64_t>::create(name, 16);
  auto seen = ptk::queue<std::uint64_t>::anonymous(1 << 15);
  std::vector<pid_t> kids;
  for (int c = 0; c < 2; ++c) {
    kids.push_back(fork_child([&] {
      auto rx = ptk::queue<std::uint64_t>::open(name.str());
      while (auto v = rx.recv()) seen.send(*v);
      return 0;
    }));
  }
  constexpr std::uint64_t n = 20000;
  bool lost = false;
  for (std::uint64_t i = 0; i < n && !lost; ++i) {
    if (i == n / 3) ::kill(kids[0], SIGKILL);
    if (i == n / 2) ::kill(kids[1], SIGKILL);
    const auto st = q.send_for(i, 30s);
    lost = st == channel_status::peer_lost;  // both consumers gone and the queue is full
    REQUIRE((lost || st == channel_status::ok));
  }
  for (auto k : kids) ::waitpid(k, nullptr, 0);
  std::set<std::uint64_t> got;
  while (auto v = seen.try_recv()) REQUIRE(got.insert(*v).second);
  while (auto v = q.try_recv()) REQUIRE(got.insert(*v).second);  // what nobody took is still there
  CHECK(lost);
  CHECK(got.size() >= n / 3);
  REQUIRE(q.send(n) == channel_status::ok);  // still usable
  CHECK(*q.recv() == n);
}

TEST_CASE("queue: a receiver learns that every sender died", "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<int>::create(name, 8);
  const pid_t child = fork_child([&] {
    auto tx = ptk::queue<int>::open(name.str());
    tx.send(5);
    return 0;
  });
  CHECK(*q.recv_for(30s) == 5);
  CHECK(wait_exit_code(child) == 0);
  CHECK(q.recv_for(30s).status() == channel_status::peer_lost);
}

TEST_CASE("queue: a child forked with a handle its parent sent on counts as a sender",
          "[ipc][queue]") {
  const shm_name name;
  auto q = ptk::queue<int>::create(name, 8);
  auto gate = ptk::queue<int>::anonymous(1);
  // A sender sends, then forks a child that goes on sending with the same handle
  // after the sender has exited. The child must have joined the senders on its own:
  // the receiver must not report the senders lost while it lives. The receiver runs
  // in a child that adopts orphans, to reap that grandchild. Exit codes tell the
  // step that failed.
  const pid_t receiver = fork_child([&] {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) return 10;
    const pid_t sender = fork_child([&] {
      auto tx = ptk::queue<int>::open(name.str());
      if (tx.send(1) != channel_status::ok) return 1;
      return fork_child([&] {
               if (tx.send(2) != channel_status::ok) return 1;
               if (!gate.recv_for(30s)) return 2;  // until the receiver has looked
               return tx.send(3) == channel_status::ok ? 0 : 3;
             }) > 0
                 ? 0
                 : 4;
    });
    if (wait_exit_code(sender) != 0) return 11;
    auto v = q.recv_for(30s);
    if (!v || *v != 1) return 12;
    v = q.recv_for(30s);
    if (!v || *v != 2) return 13;
    // The sender is gone; the grandchild lives, blocked on the gate.
    if (q.recv_for(500ms).status() != channel_status::timeout) return 14;
    if (gate.send(0) != channel_status::ok) return 15;
    v = q.recv_for(30s);
    if (!v || *v != 3) return 16;
    int status = 0;
    if (::waitpid(-1, &status, 0) <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      return 17;
    }
    return q.recv_for(30s).status() == channel_status::peer_lost ? 0 : 18;
  });
  CHECK(wait_exit_code(receiver) == 0);
}

TEST_CASE("queue: corrupt and mismatched segments are rejected", "[ipc][queue]") {
  using Catch::Matchers::Contains;
  const shm_name name;
  auto q = ptk::queue<std::string>::create(name, 4, {.max_message_size = 32});
  CHECK_THROWS_WITH(ptk::queue<int>::open(name), Contains("created for type"));
  CHECK_THROWS_WITH(ptk::shm_ring<std::string>::open(name),
                    Contains("is a queue, opened as a shm_ring"));
  REQUIRE(q.send("hello") == channel_status::ok);
  auto raw = ptk::shared_memory::open(name);
  const std::uint64_t huge = 1 << 20;
  std::memcpy(raw.data() + sizeof(ptk::detail::queue_control) + ptk::detail::queue_slot_header,
              &huge, sizeof huge);
  CHECK_THROWS_WITH(q.try_recv(), Contains("message length beyond the slot"));
  auto* tail = reinterpret_cast<std::atomic<std::uint64_t>*>(
      raw.data() + offsetof(ptk::detail::queue_control, tail));
  tail->store(1000);
  CHECK_THROWS_WITH(q.try_send("x"), Contains("corrupt"));
}
