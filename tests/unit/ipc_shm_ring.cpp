#include <ptk/ipc/queue.hpp>
#include <ptk/ipc/shm_ring.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <random>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "ipc_support.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
using ptk::channel_status;
using namespace ptk::test;

namespace {
// The slot layouts, as types for TEMPLATE_TEST_CASE.
template <ptk::ring_layout L>
struct layout {
  static constexpr ptk::ring_layout value = L;
};
using packed = layout<ptk::ring_layout::packed>;
using stamped = layout<ptk::ring_layout::stamped>;
}  // namespace

TEMPLATE_TEST_CASE("shm_ring carries fixed-size messages in order between threads",
                   "[ipc][shm_ring]", packed, stamped) {
  using u64_ring = ptk::shm_ring<std::uint64_t, TestType::value>;
  const shm_name name;
  const int fds = open_fd_count();
  {
    auto tx = u64_ring::create(name, 64);
    auto rx = u64_ring::open(name);
    CHECK(tx.capacity() == 64);
    constexpr std::uint64_t n = 200000;
    std::atomic<int> failures{0};  // Catch assertions are for the main thread only
    std::thread producer([&] {
      for (std::uint64_t i = 0; i < n; ++i) failures += tx.send(i) != channel_status::ok;
      tx.close();
    });
    std::uint64_t expect = 0;
    while (auto v = rx.recv()) {
      REQUIRE(*v == expect);
      ++expect;
    }
    producer.join();
    CHECK(failures == 0);
    CHECK(expect == n);
    CHECK(rx.recv().status() == channel_status::closed);
  }
  CHECK_FALSE(shm_exists(name));
  CHECK(open_fd_count() == fds);
}

TEST_CASE("shm_ring carries variable-size messages across the wrap-around", "[ipc][shm_ring]") {
  const shm_name name;
  auto tx = ptk::shm_ring<std::string>::create(name, 256);
  auto rx = ptk::shm_ring<std::string>::open(name);
  CHECK(tx.max_message_size() == 120);
  std::atomic<int> failures{0};
  std::thread producer([&] {
    std::mt19937 rng(7);
    for (int i = 0; i < 20000; ++i) {
      const auto len = static_cast<std::size_t>(rng() % 120);
      failures += tx.send(std::string(len, static_cast<char>('a' + i % 26))) != channel_status::ok;
    }
    tx.close();
  });
  std::mt19937 rng(7);
  int got = 0;
  while (auto s = rx.recv()) {
    const auto len = static_cast<std::size_t>(rng() % 120);
    REQUIRE(*s == std::string(len, static_cast<char>('a' + got % 26)));
    ++got;
  }
  producer.join();
  CHECK(failures == 0);
  CHECK(got == 20000);
  CHECK_THROWS_AS(tx.try_send(std::string(121, 'x')), std::length_error);
}

TEST_CASE("shm_ring vectors and loans write in place", "[ipc][shm_ring]") {
  const shm_name name;
  auto ring = ptk::shm_ring<std::vector<int>>::create(name, 4096);
  REQUIRE(ring.send(std::vector<int>{1, 2, 3}) == channel_status::ok);
  {
    auto slot = ring.prepare(2 * sizeof(int));
    REQUIRE(slot);
    const int two[2] = {7, 8};
    std::memcpy(slot.bytes().data(), two, sizeof two);
    slot.commit();
  }
  {
    [[maybe_unused]] auto abandoned = ring.prepare(sizeof(int));
  }  // dropped without commit: nothing sent
  CHECK(*ring.recv() == std::vector<int>{1, 2, 3});
  {
    auto v = ring.peek();
    REQUIRE(v);
    CHECK(v.bytes().size() == 2 * sizeof(int));
    CHECK(v.decode() == std::vector<int>{7, 8});
  }
  CHECK(ring.try_recv().status() == channel_status::empty);
  CHECK(ring.peek_for(10ms).status() == channel_status::timeout);
  for (int i = 0; i < 2; ++i) {  // two 2000-byte records fill the 4096-byte ring
    auto slot = ring.prepare_for(2000, 10ms);
    REQUIRE(slot);
    std::memset(slot.bytes().data(), 0, 2000);
    slot.commit();
  }
  CHECK_FALSE(ring.prepare_for(2000, 10ms));  // full: the loan times out, empty
  CHECK(ring.recv()->size() == 500);
  CHECK(ring.recv()->size() == 500);

  const shm_name fixed_name;
  struct big {
    std::array<char, 1000> text;
    int id;
  };
  auto fixed = ptk::shm_ring<big>::create(fixed_name, 4);
  auto slot = fixed.prepare();
  slot->id = 5;
  std::strcpy(slot->text.data(), "in place");
  slot.commit();
  auto r = fixed.recv();
  REQUIRE(r);
  CHECK(r->id == 5);
  CHECK(std::string(r->text.data()) == "in place");
}

TEMPLATE_TEST_CASE("shm_ring timeouts, try forms and stop tokens", "[ipc][shm_ring]", packed,
                   stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  const shm_name name;
  auto ring = int_ring::create(name, 2);
  CHECK(ring.try_recv().status() == channel_status::empty);
  CHECK(ring.recv_for(20ms).status() == channel_status::timeout);
  CHECK(ring.try_send(1) == channel_status::ok);
  CHECK(ring.try_send(2) == channel_status::ok);
  CHECK(ring.try_send(3) == channel_status::full);
  CHECK(ring.send_for(3, 20ms) == channel_status::timeout);

  std::stop_source stop;
  std::atomic<channel_status> result{channel_status::ok};
  std::atomic<pid_t> tid{0};
  std::thread blocked([&] {
    tid = gettid_now();
    result = ring.send(3, stop.get_token());
  });
  // The sender sleeps in the kernel before we stop it: no sleep-as-synchronisation.
  REQUIRE(eventually([&] { return tid != 0 && sleeping_in_futex(tid); }));
  stop.request_stop();
  blocked.join();
  CHECK(result == channel_status::cancelled);
  CHECK(*ring.recv() == 1);
  CHECK(*ring.recv() == 2);
  CHECK(ring.try_recv().status() == channel_status::empty);
}

TEMPLATE_TEST_CASE(
    "shm_ring of small slots between threads: capacity is a floor, with a line's slack",
    "[ipc][shm_ring]", packed, stamped) {
  using u64_ring = ptk::shm_ring<std::uint64_t, TestType::value>;
  // 8-byte slots, 8 to a cache line (7 next to a stamp): the consumer may publish
  // its head a line at a time, so up to 7 (6) messages beyond capacity() fit; never
  // fewer than capacity().
  const std::uint64_t slack = TestType::value == ptk::ring_layout::stamped ? 6 : 7;
  const shm_name name;
  auto ring = u64_ring::create(name, 256);
  REQUIRE(ring.capacity() == 256);
  std::uint64_t sent = 0;
  while (ring.try_send(sent) == channel_status::ok) ++sent;
  CHECK(sent >= 256);
  CHECK(sent <= 256 + slack);

  // Whatever was accepted, a blocked sender gets in as soon as fewer than capacity()
  // messages are queued, even when the consumer stops in the middle of a line.
  std::atomic<channel_status> result{channel_status::full};
  std::atomic<pid_t> tid{0};
  std::thread blocked([&] {
    tid = gettid_now();
    result = ring.send(sent);
  });
  REQUIRE(eventually([&] { return tid != 0 && sleeping_in_futex(tid); }));
  std::uint64_t expect = 0;
  for (; expect < sent - 256 + 1; ++expect) {
    auto v = ring.recv();
    REQUIRE(v);
    CHECK(*v == expect);
  }
  REQUIRE(eventually([&] { return result.load() != channel_status::full; }));
  blocked.join();
  CHECK(result == channel_status::ok);
  for (; expect <= sent; ++expect) {
    auto v = ring.try_recv();
    REQUIRE(v);
    CHECK(*v == expect);
  }
  CHECK(ring.try_recv().status() == channel_status::empty);
}

TEMPLATE_TEST_CASE("shm_ring: a consumer's successor starts after the last message received",
                   "[ipc][shm_ring]", packed, stamped) {
  using u64_ring = ptk::shm_ring<std::uint64_t, TestType::value>;
  const shm_name name;
  auto tx = u64_ring::create(name, 256);
  for (std::uint64_t i = 0; i < 20; ++i) REQUIRE(tx.send(i) == channel_status::ok);
  {
    auto rx = u64_ring::open(name);
    // Past one line boundary (where the head is published) and stopped mid-line.
    for (std::uint64_t i = 0; i < 11; ++i) CHECK(*rx.recv() == i);
  }
  auto rx = u64_ring::open(name);
  for (std::uint64_t i = 11; i < 20; ++i) CHECK(*rx.recv() == i);
  CHECK(rx.try_recv().status() == channel_status::empty);
}

TEMPLATE_TEST_CASE("shm_ring across processes: capacity is exact and the head is freed per message",
                   "[ipc][shm_ring]", packed, stamped) {
  using u64_ring = ptk::shm_ring<std::uint64_t, TestType::value>;
  const shm_name name;
  auto rx = u64_ring::create(name, 256);
  REQUIRE(rx.try_recv().status() == channel_status::empty);  // the parent consumes
  auto ack = u64_ring::anonymous(4);                         // child to parent
  auto go = u64_ring::anonymous(4);                          // parent to child
  const pid_t child = fork_child([&] {
    auto tx = u64_ring::open(name.str());
    std::uint64_t sent = 0;
    while (tx.try_send(sent) == channel_status::ok) ++sent;
    if (sent != 256) return 1;
    if (ack.send(sent) != channel_status::ok) return 2;
    // The 9 messages received by the parent (across a line boundary) free exactly
    // 9 slots.
    if (!go.recv()) return 3;
    for (int i = 0; i < 9; ++i) {
      if (tx.try_send(sent++) != channel_status::ok) return 4;
    }
    if (tx.try_send(sent) != channel_status::full) return 5;
    return 0;
  });
  auto filled = ack.recv();
  REQUIRE(filled);
  CHECK(*filled == 256);
  for (std::uint64_t i = 0; i < 9; ++i) CHECK(*rx.recv() == i);
  REQUIRE(go.send(1) == channel_status::ok);
  CHECK(wait_exit_code(child) == 0);
  for (std::uint64_t i = 9; i < 265; ++i) CHECK(*rx.recv() == i);
  CHECK(rx.try_recv().status() == channel_status::peer_lost);
}

TEMPLATE_TEST_CASE("shm_ring close: sends fail, receivers drain, then see closed",
                   "[ipc][shm_ring]", packed, stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  const shm_name name;
  auto tx = int_ring::create(name, 8);
  auto rx = int_ring::open(name);
  std::atomic<channel_status> woke{channel_status::ok};
  std::atomic<pid_t> tid{0};
  std::thread waiter([&] {
    tid = gettid_now();
    woke = rx.recv().status();
  });
  REQUIRE(eventually([&] { return tid != 0 && sleeping_in_futex(tid); }));
  tx.close();
  waiter.join();
  CHECK(woke == channel_status::closed);

  const shm_name name2;
  auto a = int_ring::create(name2, 8);
  REQUIRE(a.send(1) == channel_status::ok);
  REQUIRE(a.send(2) == channel_status::ok);
  a.close();
  CHECK(a.closed());
  CHECK(a.send(3) == channel_status::closed);
  CHECK(a.try_send(3) == channel_status::closed);
  CHECK(*a.recv() == 1);
  CHECK(*a.recv() == 2);
  CHECK(a.recv().status() == channel_status::closed);
  CHECK(a.try_recv().status() == channel_status::closed);
  CHECK_THROWS_AS(a.recv().value(), ptk::channel_error);
}

TEST_CASE("shm_ring between processes: producer child, consumer parent", "[ipc][shm_ring]") {
  const shm_name name;
  auto ring = ptk::shm_ring<std::string>::create(name, 1024);
  const pid_t child = fork_child([&] {
    auto tx = ptk::shm_ring<std::string>::open(name.str());
    for (int i = 0; i < 5000; ++i) {
      if (tx.send("message " + std::to_string(i)) != channel_status::ok) return 1;
    }
    tx.close();
    return 0;
  });
  int i = 0;
  while (auto m = ring.recv()) {
    REQUIRE(*m == "message " + std::to_string(i));
    ++i;
  }
  CHECK(i == 5000);
  CHECK(wait_exit_code(child) == 0);
}

TEST_CASE("shm_ring survives a producer killed in the middle of a message", "[ipc][shm_ring]") {
  const shm_name name;
  auto ring = ptk::shm_ring<std::string>::create(name, 1 << 16);
  const pid_t child = fork_child([&] {
    auto tx = ptk::shm_ring<std::string>::open(name.str());
    for (int i = 0; i < 100; ++i) tx.send(std::to_string(i));
    auto slot = tx.prepare(64);
    std::memset(slot.bytes().data(), 'X', 32);  // half-written, never committed
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  int i = 0;
  ptk::recv_result<std::string> r = ring.recv_for(30s);
  for (; r; r = ring.recv_for(30s)) {
    REQUIRE(*r == std::to_string(i));
    ++i;
  }
  CHECK(i == 100);
  CHECK(r.status() == channel_status::peer_lost);
  int status = 0;
  ::waitpid(child, &status, 0);
  CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
}

TEMPLATE_TEST_CASE("shm_ring: producers killed at random points lose nothing committed",
                   "[ipc][shm_ring]", packed, stamped) {
  using u64_ring = ptk::shm_ring<std::uint64_t, TestType::value>;
  std::mt19937 rng(1234);
  for (int round = 0; round < 8; ++round) {
    const shm_name name;
    auto ring = u64_ring::create(name, 64);
    const pid_t child = fork_child([&] {
      auto tx = u64_ring::open(name.str());
      for (std::uint64_t i = 0;; ++i) {
        if (tx.send(i) != channel_status::ok) return 1;
      }
    });
    const auto kill_after = rng() % 5000;
    std::uint64_t expect = 0;
    for (;;) {
      auto v = ring.recv_for(30s);
      if (!v) {
        CHECK(v.status() == channel_status::peer_lost);
        break;
      }
      REQUIRE(*v == expect);  // in order, nothing lost, nothing twice
      if (++expect == kill_after) ::kill(child, SIGKILL);
    }
    CHECK(expect >= kill_after);
    int status = 0;
    ::waitpid(child, &status, 0);
  }
}

TEMPLATE_TEST_CASE("shm_ring: a sender blocked on a full ring learns its consumer died",
                   "[ipc][shm_ring]", packed, stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  const shm_name name;
  auto ring = int_ring::create(name, 4);
  int pipefd[2];
  REQUIRE(::pipe2(pipefd, O_CLOEXEC) == 0);
  const pid_t child = fork_child([&] {
    auto rx = int_ring::open(name.str());
    const bool ok = rx.recv().has_value();  // claims the consumer role
    char c = ok ? 'y' : 'n';
    (void)!::write(pipefd[1], &c, 1);
    ::pause();
    return 0;
  });
  ::close(pipefd[1]);
  REQUIRE(ring.send(0) == channel_status::ok);
  char c = 0;
  REQUIRE(::read(pipefd[0], &c, 1) == 1);
  ::close(pipefd[0]);
  REQUIRE(c == 'y');
  for (int i = 1; i <= 4; ++i) REQUIRE(ring.send(i) == channel_status::ok);
  ::kill(child, SIGKILL);
  CHECK(ring.send_for(5, 30s) == channel_status::peer_lost);
  ::waitpid(child, nullptr, 0);
}

// Under TSan the death alarm is off (see peer_watch::cover): sleeps keep a timer.
#if !defined(PTK_TSAN)
namespace {
// Whether thread `tid` sleeps in futex(2) with no timeout (the fourth argument in
// /proc/.../syscall is the timeout pointer): a sleep no timer ends.
bool sleeps_without_timer(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  std::string nr, addr, op, val, timeout;
  f >> nr >> addr >> op >> val >> timeout;
  return nr == std::to_string(SYS_futex) && timeout == "0x0";
}

// A child that sends one message on anonymous ring `ring`, then waits to be killed
// (or dies with its parent, so a failing test leaves no orphan behind).
template <class Ring>
pid_t producer_that_stays(Ring& ring) {
  const pid_t parent = ::getpid();
  return fork_child([&ring, parent] {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) return 1;
    if (ring.send(1) != channel_status::ok) return 1;
    for (;;) ::pause();
  });
}

// A thread receiving from `ring` with no deadline sleeps untimed until `child`
// (its producer) is SIGKILLed; the receive then reports peer_lost. 0 when all held.
template <class Ring>
int death_wakes_untimed_sleeper(Ring& ring, pid_t child) {
  if (!ring.recv().has_value()) return 1;  // the producer is attached and known
  std::atomic<pid_t> tid{0};
  std::atomic<channel_status> result{channel_status::ok};
  std::thread rx([&] {
    tid = gettid_now();
    result = ring.recv().status();
  });
  const bool untimed = eventually([&] { return tid != 0 && sleeps_without_timer(tid); });
  ::kill(child, SIGKILL);
  rx.join();
  ::waitpid(child, nullptr, 0);
  if (!untimed) return 2;
  return result == channel_status::peer_lost ? 0 : 3;
}
}  // namespace

TEMPLATE_TEST_CASE("shm_ring: a receiver sleeps with no timer; its producer's death wakes it",
                   "[ipc][shm_ring]", packed, stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  auto ring = int_ring::anonymous(16);
  CHECK(death_wakes_untimed_sleeper(ring, producer_that_stays(ring)) == 0);
}

TEST_CASE("shm_ring: a forked child's sleeps are woken by its own death alarm", "[ipc][shm_ring]") {
  // The parent arms its alarm thread first; the child inherits none of it running.
  auto first = ptk::shm_ring<int>::anonymous(16);
  CHECK(death_wakes_untimed_sleeper(first, producer_that_stays(first)) == 0);
  const pid_t child = fork_child([] {
    auto ring = ptk::shm_ring<int>::anonymous(16);
    return death_wakes_untimed_sleeper(ring, producer_that_stays(ring));
  });
  CHECK(wait_exit_code(child) == 0);
}
#endif

namespace {

// For a child process: 0 when a send on `ring` is refused because another live
// process is the producer; 1 when it is accepted, 2 for another error.
template <class Ring>
int producer_refused(Ring& ring) {
  try {
    ring.send(2);
  } catch (const std::logic_error& e) {
    return std::string(e.what()).find("already has a producer") != std::string::npos ? 0 : 2;
  }
  return 1;
}

}  // namespace

TEMPLATE_TEST_CASE("shm_ring roles: a second live producer is refused", "[ipc][shm_ring]", packed,
                   stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  const shm_name name;
  auto ring = int_ring::create(name, 4);
  REQUIRE(ring.send(1) == channel_status::ok);
  const pid_t child = fork_child([&] {
    auto other = int_ring::open(name.str());
    return producer_refused(other);
  });
  CHECK(wait_exit_code(child) == 0);
}

TEMPLATE_TEST_CASE("shm_ring roles: a child forked with its parent's handle claims its own",
                   "[ipc][shm_ring]", packed, stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  auto ring = int_ring::anonymous(4);
  REQUIRE(ring.send(1) == channel_status::ok);  // this process is the producer
  // The child inherits a handle that has produced; it is not the producer for that.
  const pid_t child = fork_child([&] { return producer_refused(ring); });
  CHECK(wait_exit_code(child) == 0);
  CHECK(*ring.recv() == 1);  // this process is the consumer
  CHECK(ring.try_recv().status() == channel_status::empty);
}

TEMPLATE_TEST_CASE("shm_ring roles: a forked child's copy of a consumer leaves the head alone",
                   "[ipc][shm_ring]", packed, stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  const shm_name name;
  auto ring = int_ring::create(name, 4);
  const pid_t producer = fork_child([&] {
    auto tx = int_ring::open(name.str());
    for (int i = 1; i <= 4; ++i) {
      if (tx.send(i) != channel_status::ok) return 1;
    }
    return 0;
  });
  REQUIRE(wait_exit_code(producer) == 0);
  REQUIRE(*ring.recv() == 1);  // this process is the consumer, at position 1
  auto gate = ptk::queue<int>::anonymous(1);
  // A child forked now destroys its copy of the handle after this process has read
  // on: the copy's head (1) is stale and must not be published.
  const pid_t child = fork_child([&] {
    if (!gate.recv_for(30s)) return 1;
    { const int_ring copy(std::move(ring)); }
    return 0;
  });
  REQUIRE(*ring.recv() == 2);
  REQUIRE(*ring.recv() == 3);
  REQUIRE(gate.send(0) == channel_status::ok);
  REQUIRE(wait_exit_code(child) == 0);
  CHECK(ring.size_approx() == 1);
  CHECK(*ring.try_recv() == 4);
  CHECK(ring.size_approx() == 0);
}

TEST_CASE("shm_ring rejects corrupt, foreign and mismatched segments", "[ipc][shm_ring]") {
  using Catch::Matchers::Contains;
  const shm_name name;
  auto ring = ptk::shm_ring<int>::create(name, 16);

  CHECK_THROWS_WITH(ptk::shm_ring<double>::open(name), Contains("created for type 'int'"));
  CHECK_THROWS_WITH(ptk::shm_ring<std::string>::open(name), Contains("element size"));

  {  // another user's segment, and one readable by others
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
    REQUIRE(fd >= 0);
    REQUIRE(::fchmod(fd, 0644) == 0);
    CHECK_THROWS_WITH(ptk::shm_ring<int>::open(name), Contains("accessible to other users"));
    REQUIRE(::fchmod(fd, 0600) == 0);
    REQUIRE(::fchown(fd, 65534, 65534) == 0);
    CHECK_THROWS_WITH(ptk::shm_ring<int>::open(name), Contains("owned by uid 65534"));
    REQUIRE(::fchown(fd, ::geteuid(), ::getegid()) == 0);
    ::close(fd);
  }
  {  // wrong size
    auto raw = ptk::shared_memory::open(name);
    const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(raw.size() + 4096)) == 0);
    CHECK_THROWS_WITH(ptk::shm_ring<int>::open(name), Contains("header says"));
    REQUIRE(::ftruncate(fd, static_cast<off_t>(raw.size())) == 0);
    ::close(fd);
  }
  auto raw = ptk::shared_memory::open(name);
  {  // bad magic
    std::uint64_t saved;
    std::memcpy(&saved, raw.data() + 8, 8);
    std::memset(raw.data() + 8, 0x5a, 8);
    CHECK_THROWS_WITH(ptk::shm_ring<int>::open(name), Contains("bad magic"));
    std::memcpy(raw.data() + 8, &saved, 8);
  }
  {  // an index out of bounds, written by a "peer"
    auto rx = ptk::shm_ring<int>::open(name);
    auto* tail = reinterpret_cast<std::atomic<std::uint64_t>*>(
        raw.data() + offsetof(ptk::detail::ring_control, tail));
    tail->store(1000);
    CHECK_THROWS_WITH(rx.try_recv(), Contains("corrupt"));
    tail->store(0);
  }
  CHECK_NOTHROW(ptk::shm_ring<int>::open(name));

  const shm_name uninitialised;
  auto blank = ptk::shared_memory::create(uninitialised, 4096);
  CHECK_THROWS_WITH(ptk::shm_ring<int>::open(uninitialised), Contains("never initialised"));
  CHECK_THROWS_WITH(ptk::shm_ring<int>::open("no-such-ring-here"), Contains("No such file"));
}

TEST_CASE("shm_ring rejects a corrupt record length", "[ipc][shm_ring]") {
  const shm_name name;
  auto ring = ptk::shm_ring<std::string>::create(name, 256);
  REQUIRE(ring.send("hello") == channel_status::ok);
  auto raw = ptk::shared_memory::open(name);
  const std::uint32_t huge = 1u << 30;
  std::memcpy(raw.data() + sizeof(ptk::detail::ring_control), &huge, 4);
  CHECK_THROWS_AS(ring.try_recv(), ptk::channel_error);
}

TEST_CASE("shm_ring: both ends must use the same slot layout", "[ipc][shm_ring]") {
  using Catch::Matchers::Contains;
  const shm_name name;
  auto ring = ptk::shm_ring<std::uint64_t, ptk::ring_layout::stamped>::create(name, 16);
  CHECK_THROWS_WITH(ptk::shm_ring<std::uint64_t>::open(name),
                    Contains("created with the stamped layout, opened as packed"));
  const shm_name other;
  auto dense = ptk::shm_ring<std::uint64_t>::create(other, 16);
  CHECK_THROWS_WITH((ptk::shm_ring<std::uint64_t, ptk::ring_layout::stamped>::open(other)),
                    Contains("created with the packed layout, opened as stamped"));
}

namespace {
using stamped_ring = ptk::shm_ring<std::uint64_t, ptk::ring_layout::stamped>;

// A message of N 8-byte words.
template <std::size_t N>
struct words {
  std::array<std::uint64_t, N> w;
};

// The stamp of cell 0 of a stamped_ring: 7 slots of 8 bytes, then the stamp.
std::atomic<std::uint64_t>* first_stamp(ptk::shared_memory& raw) {
  return reinterpret_cast<std::atomic<std::uint64_t>*>(raw.data() +
                                                       sizeof(ptk::detail::ring_control) + 56);
}
}  // namespace

TEST_CASE(
    "shm_ring stamped: a producer that died between a stamp and the tail; its successor "
    "follows",
    "[ipc][shm_ring]") {
  // The consumer waits by the stamp next to each message, so a message whose tail
  // store never happened is delivered; a successor producer must start after it,
  // neither overwriting it nor leaving a gap.
  const shm_name name;
  auto rx = stamped_ring::create(name, 16);
  {
    auto tx = stamped_ring::open(name);
    for (std::uint64_t i = 0; i < 3; ++i) REQUIRE(tx.send(i) == channel_status::ok);
  }
  auto raw = ptk::shared_memory::open(name);
  auto* tail = reinterpret_cast<std::atomic<std::uint64_t>*>(
      raw.data() + offsetof(ptk::detail::ring_control, tail));
  REQUIRE(tail->load() == 3);
  REQUIRE(first_stamp(raw)->load() == 3);
  tail->store(2);  // as if the producer died right after message 2's stamp

  CHECK(*rx.recv_for(30s) == 0);
  CHECK(*rx.recv_for(30s) == 1);
  {
    auto tx = stamped_ring::open(name);
    REQUIRE(tx.send(3) == channel_status::ok);
  }
  for (std::uint64_t i = 2; i < 4; ++i) {
    auto v = rx.recv_for(30s);
    REQUIRE(v);
    CHECK(*v == i);
  }
  // Once more, and this time the consumer takes the stamped message before any
  // successor comes: the tail then trails the consumer's head, which is no corruption.
  {
    auto tx = stamped_ring::open(name);
    REQUIRE(tx.send(4) == channel_status::ok);
  }
  tail->store(4);
  CHECK(*rx.recv_for(30s) == 4);
  CHECK(rx.try_recv().status() == channel_status::peer_lost);
}

TEST_CASE("shm_ring stamped: a corrupt stamp is an error on both sides", "[ipc][shm_ring]") {
  using Catch::Matchers::Contains;
  const shm_name name;
  auto rx = stamped_ring::create(name, 16);
  REQUIRE(rx.try_recv().status() == channel_status::empty);
  auto raw = ptk::shared_memory::open(name);
  first_stamp(raw)->store(1000);
  CHECK_THROWS_WITH(rx.recv_for(30s), Contains("stamp"));
  auto tx = stamped_ring::open(name);
  CHECK_THROWS_WITH(tx.try_send(1), Contains("stamp"));
}

TEST_CASE("shm_ring stamped: slots of every size cross the wrap-around intact", "[ipc][shm_ring]") {
  // 24-byte slots (2 to a line next to the stamp) and 72-byte ones (a cell of two
  // lines, the stamp after the message), between two threads, many times round.
  const auto run = [](auto tag) {
    using msg = decltype(tag);
    using ring_t = ptk::shm_ring<msg, ptk::ring_layout::stamped>;
    const shm_name name;
    auto tx = ring_t::create(name, 8);
    auto rx = ring_t::open(name);
    constexpr std::uint64_t n = 20000;
    std::thread producer([&] {
      for (std::uint64_t i = 0; i < n; ++i) {
        msg m{};
        for (auto& w : m.w) w = i;
        if (tx.send(m) != channel_status::ok) return;
      }
      tx.close();
    });
    std::uint64_t expect = 0;
    bool intact = true;
    while (auto v = rx.recv()) {
      for (auto w : v->w) intact = intact && w == expect;
      ++expect;
    }
    producer.join();
    CHECK(intact);
    CHECK(expect == n);
  };
  run(words<3>{});
  run(words<9>{});
}

TEMPLATE_TEST_CASE("shm_ring anonymous: passed to a child by descriptor", "[ipc][shm_ring]", packed,
                   stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  auto ring = int_ring::anonymous(16);
  CHECK(ring.segment().name().empty());
  const int fd = ring.fd();
  const pid_t child = fork_child([&] {
    auto tx = int_ring::from_fd(::dup(fd));
    for (int i = 0; i < 1000; ++i) tx.send(i * 3);
    tx.close();
    return 0;
  });
  int i = 0;
  while (auto v = ring.recv()) CHECK(*v == 3 * i++);
  CHECK(i == 1000);
  CHECK(wait_exit_code(child) == 0);
}

namespace {
// Sends make(0) .. make(n - 1) on `ping` (named `ping_name`) to an echo thread that
// sleeps before every message and answers on `pong`; checks each answer. Returns
// whether the producer of `ping` ended up announcing full fences.
template <class Ring, class Make>
bool sleeping_partner_switches_fences(Ring& ping, const shm_name& ping_name, Ring& pong, int n,
                                      Make make) {
  ping.set_spin(0);
  pong.set_spin(0);
  std::atomic<int> failures{0};
  std::thread echo([&] {
    auto rx = Ring::open(ping_name);
    rx.set_spin(0);
    for (;;) {
      auto v = rx.recv();
      if (!v) return;
      failures += pong.send(*v) != channel_status::ok;
    }
  });
  for (int i = 0; i < n; ++i) {
    REQUIRE(ping.send(make(i)) == channel_status::ok);
    auto r = pong.recv_for(30s);  // every message crosses, whichever fence is used
    REQUIRE(r);
    REQUIRE(*r == make(i));
  }
  ping.close();
  echo.join();
  CHECK(failures == 0);
  auto raw = ptk::shared_memory::open(ping_name);
  const auto* announced = reinterpret_cast<const std::atomic<std::uint32_t>*>(
      raw.data() + offsetof(ptk::detail::ring_control, producer_fenced));
  return announced->load() == 1;
}
}  // namespace

TEMPLATE_TEST_CASE(
    "shm_ring: a partner that sleeps on every message switches the publisher to full fences",
    "[ipc][shm_ring]", packed, stamped) {
  using int_ring = ptk::shm_ring<int, TestType::value>;
  const shm_name ping_name;
  auto ping = int_ring::create(ping_name, 4);
  auto pong = int_ring::anonymous(4);
  // The echo thread slept after (nearly) every message.
  CHECK(sleeping_partner_switches_fences(ping, ping_name, pong, 2000, [](int i) { return i; }));
}

TEST_CASE("shm_ring of strings: a partner that sleeps on every message switches fences too",
          "[ipc][shm_ring]") {
  // Variable-size rings count positions in bytes; the switch counts messages.
  const shm_name ping_name;
  auto ping = ptk::shm_ring<std::string>::create(ping_name, 4096);
  auto pong = ptk::shm_ring<std::string>::anonymous(4096);
  CHECK(sleeping_partner_switches_fences(ping, ping_name, pong, 500, [](int i) {
    return "message number " + std::to_string(i) + std::string(100, 'x');
  }));
}

TEST_CASE("shm_ring: a fenced publisher whose partner stops sleeping goes back to light fences",
          "[ipc][shm_ring]") {
  const shm_name ping_name, pong_name;
  auto ping = ptk::shm_ring<int>::create(ping_name, 16);
  auto pong = ptk::shm_ring<int>::create(pong_name, 16);
  ping.set_spin(0);
  pong.set_spin(0);
  auto raw = ptk::shared_memory::open(ping_name);
  const auto* announced = reinterpret_cast<const std::atomic<std::uint32_t>*>(
      raw.data() + offsetof(ptk::detail::ring_control, producer_fenced));
  // Lives across the rounds: a departed producer would be peer_lost for pong.
  auto tx = ptk::shm_ring<int>::open(pong_name);
  // An echo thread that sleeps before every message, until it receives -1.
  const auto sleeping_echo_round = [&](int first) {
    std::atomic<int> failures{0};
    std::thread echo([&] {
      auto rx = ptk::shm_ring<int>::open(ping_name);
      rx.set_spin(0);
      for (;;) {
        auto v = rx.recv();
        if (!v || *v == -1) return;
        failures += tx.send(*v) != channel_status::ok;
      }
    });
    for (int i = first; i < first + 2000; ++i) {
      REQUIRE(ping.send(i) == channel_status::ok);
      auto r = pong.recv_for(30s);  // a lost wake-up would show here as a timeout
      REQUIRE(r);
      REQUIRE(*r == i);
    }
    REQUIRE(ping.send(-1) == channel_status::ok);
    echo.join();
    CHECK(failures == 0);
  };

  sleeping_echo_round(0);
  CHECK(announced->load() == 1);  // the partner slept after (nearly) every message

  // The echo thread has left; this thread consumes what it sends, so nobody sleeps:
  // after enough publishes that wake nobody, the producer withdraws its promise.
  for (int i = 0; i < 20000; ++i) {
    REQUIRE(ping.try_send(i) == channel_status::ok);
    auto v = ping.try_recv();
    REQUIRE(v);
    REQUIRE(*v == i);
  }
  CHECK(announced->load() == 0);

  // A sleeping partner again: every message still crosses, and the producer
  // switches back to full fences.
  sleeping_echo_round(100000);
  CHECK(announced->load() == 1);
}
