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
  std::vector<std::uint32_t> big(3 << 20);  // 12 MiB: many pipe buffers
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

  // Fill the pipe until it refuses a whole frame.
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
  const int rfd = child_end.read_fd();
  const int wfd = child_end.write_fd();
  const pid_t child = fork_child([rfd, wfd] {
    auto ch = ptk::pipe<std::string>::from_fds(::dup(rfd), ::dup(wfd));
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
  const int rfd = child_end.read_fd();
  const int wfd = child_end.write_fd();
  const pid_t child = fork_child([rfd, wfd] {
    auto ch = ptk::pipe<std::string>::from_fds(::dup(rfd), ::dup(wfd));
    const int fd = ch.write_fd();
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
    REQUIRE(::write(a.write_fd(), junk, sizeof junk) > 0);
    CHECK_THROWS_WITH(b.recv(), Contains("malformed frame"));
    CHECK_THROWS_AS(b.try_recv(), ptk::channel_error);
  }
  SECTION("a frame longer than the limit is refused before allocating") {
    auto [a, b] = ptk::pipe<std::string>::create({.max_message_size = 1024});
    const std::uint32_t h[2] = {0x7fffffff, 0x444b5450};
    REQUIRE(::write(a.write_fd(), h, sizeof h) == sizeof h);
    CHECK_THROWS_WITH(b.recv(), Contains("exceeds the limit of 1024"));
    CHECK_THROWS_AS(a.send(std::string(2000, 'x')), std::length_error);
  }
  SECTION("a message that does not decode is dropped, the next one arrives") {
    auto [a, b] = ptk::pipe<std::vector<std::uint32_t>>::create();
    const std::uint32_t h[2] = {3, 0x444b5450};
    REQUIRE(::write(a.write_fd(), h, sizeof h) == sizeof h);
    REQUIRE(::write(a.write_fd(), "abc", 3) == 3);
    REQUIRE(a.send({4, 5}) == channel_status::ok);
    CHECK_THROWS_AS(b.recv(), ptk::codec_error);
    CHECK(*b.recv() == std::vector<std::uint32_t>{4, 5});
  }
  SECTION("from_fds refuses what is not the right end of a pipe, and closes it") {
    const int before = open_fd_count();
    int p[2];
    REQUIRE(::pipe(p) == 0);
    CHECK_THROWS_WITH(
        ptk::pipe<int>::from_fds(p[1], p[0]),
        Contains("descriptor " + std::to_string(p[1]) + " is not the read end of a pipe"));
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    REQUIRE(::pipe(p) == 0);
    CHECK_THROWS_WITH(ptk::pipe<int>::from_fds(p[0], sv[0]),
                      Contains("is not the write end of a pipe"));
    ::close(p[1]);
    ::close(sv[1]);
    CHECK(open_fd_count() == before);
  }
}

// SIGPIPE: each case runs in a child whose SIGPIPE starts as the default (the test
// runner may have inherited an ignored one), so the handler ptk installs is the one
// under test.
namespace {
int with_default_sigpipe(int (*body)()) {
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, nullptr);
  return body();
}
int killed_by(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}
volatile std::sig_atomic_t user_handler_calls = 0;
}  // namespace

TEST_CASE("pipe: a send to a lost peer is peer_lost, not a SIGPIPE death", "[ipc][pipe]") {
  const pid_t child = fork_child([] {
    return with_default_sigpipe([] {
      auto [a, b] = ptk::pipe<std::string>::create();
      { auto gone = std::move(b); }
      const bool lost = a.send("hello?") == channel_status::peer_lost &&
                        a.send(std::string(1 << 20, 'x')) == channel_status::peer_lost;
      return lost ? 0 : 1;
    });
  });
  CHECK(wait_exit_code(child) == 0);
}

TEST_CASE("pipe: another SIGPIPE still terminates the process as by default", "[ipc][pipe]") {
  const pid_t child = fork_child([] {
    return with_default_sigpipe([] {
      auto [a, b] = ptk::pipe<int>::create();  // installs ptk's handler
      int p[2];
      if (::pipe(p) != 0) return 2;
      ::close(p[0]);
      (void)!::write(p[1], "x", 1);  // not a ptk write: must kill with SIGPIPE
      return 3;
    });
  });
  CHECK(killed_by(child) == SIGPIPE);
}

TEST_CASE("pipe: a program's own SIGPIPE handler is kept", "[ipc][pipe]") {
  const pid_t child = fork_child([] {
    struct sigaction mine {};
    mine.sa_handler = [](int) { user_handler_calls = user_handler_calls + 1; };
    sigemptyset(&mine.sa_mask);
    ::sigaction(SIGPIPE, &mine, nullptr);
    auto [a, b] = ptk::pipe<int>::create();
    { auto gone = std::move(b); }
    if (a.send(1) != channel_status::peer_lost) return 1;
    struct sigaction now {};
    ::sigaction(SIGPIPE, nullptr, &now);
    return now.sa_handler == mine.sa_handler && user_handler_calls == 1 ? 0 : 2;
  });
  CHECK(wait_exit_code(child) == 0);
}
