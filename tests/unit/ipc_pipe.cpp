#include <ptk/ipc/pipe.hpp>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
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

TEST_CASE("pipe: duplex ping-pong of strings between threads", "[ipc][pipe]") {
  const int fds = open_fd_count();
  {
    auto [a, b] = ptk::pipe<std::string>::create();
    std::atomic<int> failures{0};  // Catch assertions are for the main thread only
    std::thread echo([&b = b, &failures] {
      while (auto m = b.recv()) failures += b.send("re: " + *m) != channel_status::ok;
      b.close();
    });
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(a.send(std::to_string(i)) == channel_status::ok);
      auto r = a.recv();
      REQUIRE(r);
      REQUIRE(*r == "re: " + std::to_string(i));
    }
    a.close();
    CHECK(a.send("late") == channel_status::closed);
    CHECK(a.recv().status() == channel_status::closed);  // the echo closed after us
    echo.join();
    CHECK(failures == 0);
  }
  CHECK(open_fd_count() == fds);
}

TEST_CASE("pipe: large and empty messages, vectors", "[ipc][pipe]") {
  auto [a, b] = ptk::pipe<std::vector<std::uint32_t>>::create();
  std::vector<std::uint32_t> big(3 << 20);  // 12 MiB: many socket buffers
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint32_t>(i * 2654435761U);
  std::atomic<int> failures{0};
  std::thread sender([&a = a, &big, &failures] {
    failures += a.send(big) != channel_status::ok;
    failures += a.send({}) != channel_status::ok;
    failures += a.send({1, 2}) != channel_status::ok;
  });
  CHECK(*b.recv() == big);
  CHECK(b.recv()->empty());
  CHECK(*b.recv() == std::vector<std::uint32_t>{1, 2});
  sender.join();
  CHECK(failures == 0);
}

TEST_CASE("pipe: try forms, timeouts and stop tokens", "[ipc][pipe]") {
  auto [a, b] = ptk::pipe<int>::create();
  CHECK(b.try_recv().status() == channel_status::empty);
  CHECK(b.recv_for(20ms).status() == channel_status::timeout);
  REQUIRE(a.try_send(5) == channel_status::ok);
  CHECK(*b.try_recv() == 5);

  // Fill the socket until it refuses a whole frame.
  int sent = 0;
  while (a.try_send(sent) == channel_status::ok) ++sent;
  CHECK(sent > 0);
  CHECK(a.send_for(-1, 20ms) == channel_status::timeout);
  for (int i = 0; i < sent; ++i) REQUIRE(*b.recv() == i);
  CHECK(b.try_recv().status() == channel_status::empty);

  std::stop_source stop;
  std::atomic<channel_status> result{channel_status::ok};
  std::atomic<pid_t> tid{0};
  std::thread blocked([&, &b = b] {
    tid = gettid_now();
    result = b.recv(stop.get_token()).status();
  });
  REQUIRE(eventually([&] { return tid != 0 && thread_state(tid) == 'S'; }));
  stop.request_stop();
  blocked.join();
  CHECK(result == channel_status::cancelled);
  REQUIRE(a.send(9) == channel_status::ok);  // nothing was lost by the cancelled wait
  CHECK(*b.recv() == 9);
}

TEST_CASE("pipe: a child process at the other end", "[ipc][pipe]") {
  auto [parent, child_end] = ptk::pipe<std::string>::create();
  const int fd = child_end.fd();
  const pid_t child = fork_child([fd] {
    auto ch = ptk::pipe<std::string>::from_fd(::dup(fd));
    while (auto m = ch.recv()) ch.send(*m + *m);
    ch.close();
    return 0;
  });
  { auto drop = std::move(child_end); }
  REQUIRE(parent.send("ab") == channel_status::ok);
  CHECK(*parent.recv() == "abab");
  parent.close();
  CHECK(parent.recv().status() == channel_status::closed);
  CHECK(wait_exit_code(child) == 0);
}

TEST_CASE("pipe: a peer killed in the middle of a message", "[ipc][pipe]") {
  auto [parent, child_end] = ptk::pipe<std::string>::create();
  const int fd = child_end.fd();
  const pid_t child = fork_child([fd] {
    auto ch = ptk::pipe<std::string>::from_fd(::dup(fd));
    for (int i = 0; i < 50; ++i) ch.send(std::to_string(i));
    // Half a frame: a header announcing 1000 bytes, then 10 of them.
    const std::uint32_t h[2] = {1000, 0x444b5450};
    (void)!::write(fd, h, sizeof h);
    (void)!::write(fd, "0123456789", 10);
    ::kill(::getpid(), SIGKILL);
    return 0;
  });
  { auto drop = std::move(child_end); }
  int i = 0;
  auto r = parent.recv_for(30s);
  for (; r; r = parent.recv_for(30s)) REQUIRE(*r == std::to_string(i++));
  CHECK(i == 50);
  CHECK(r.status() == channel_status::peer_lost);
  CHECK(parent.send("anyone?") == channel_status::peer_lost);
  ::waitpid(child, nullptr, 0);
}

TEST_CASE("pipe: an endpoint dropped without close is a lost peer", "[ipc][pipe]") {
  auto [a, b] = ptk::pipe<int>::create();
  REQUIRE(a.send(1) == channel_status::ok);
  { auto gone = std::move(a); }
  CHECK(*b.recv() == 1);
  CHECK(b.recv().status() == channel_status::peer_lost);
}

TEST_CASE("pipe: malformed frames and undecodable messages", "[ipc][pipe]") {
  using Catch::Matchers::Contains;
  SECTION("a bad tag breaks the stream for good") {
    auto [a, b] = ptk::pipe<int>::create();
    const char junk[] = "GET / HTTP/1.1\r\n\r\n";
    REQUIRE(::write(a.fd(), junk, sizeof junk) > 0);
    CHECK_THROWS_WITH(b.recv(), Contains("malformed frame"));
    CHECK_THROWS_AS(b.try_recv(), ptk::channel_error);
  }
  SECTION("a frame longer than the limit is refused before allocating") {
    auto [a, b] = ptk::pipe<std::string>::create({.max_message_size = 1024});
    const std::uint32_t h[2] = {0x7fffffff, 0x444b5450};
    REQUIRE(::write(a.fd(), h, sizeof h) == sizeof h);
    CHECK_THROWS_WITH(b.recv(), Contains("exceeds the limit of 1024"));
    CHECK_THROWS_AS(a.send(std::string(2000, 'x')), std::length_error);
  }
  SECTION("a message that does not decode is dropped, the next one arrives") {
    auto [a, b] = ptk::pipe<std::vector<std::uint32_t>>::create();
    const std::uint32_t h[2] = {3, 0x444b5450};
    REQUIRE(::write(a.fd(), h, sizeof h) == sizeof h);
    REQUIRE(::write(a.fd(), "abc", 3) == 3);
    REQUIRE(a.send({4, 5}) == channel_status::ok);
    CHECK_THROWS_AS(b.recv(), ptk::codec_error);
    CHECK(*b.recv() == std::vector<std::uint32_t>{4, 5});
  }
  SECTION("from_fd refuses what is not a stream socket") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    CHECK_THROWS_WITH(ptk::pipe<int>::from_fd(p[0]), Contains("not a stream socket"));
    ::close(p[1]);
  }
}
