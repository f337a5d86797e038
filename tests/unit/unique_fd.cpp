#include <ptk/detail/unique_fd.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <type_traits>
#include <utility>

#include "catch.hpp"
#include "test_support.hpp"

using ptk::detail::unique_fd;

static_assert(!std::is_copy_constructible_v<unique_fd>);
static_assert(std::is_nothrow_move_constructible_v<unique_fd>);

namespace {
bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }
}  // namespace

TEST_CASE("unique_fd closes its descriptor when destroyed") {
  const int before = ptk::test::open_fd_count();
  int raw = -1;
  {
    unique_fd fd = ptk::detail::open_fd("/dev/null", O_RDONLY);
    raw = fd.get();
    CHECK(is_open(raw));
    CHECK(ptk::test::open_fd_count() == before + 1);
  }
  CHECK_FALSE(is_open(raw));
  CHECK(ptk::test::open_fd_count() == before);
}

TEST_CASE("unique_fd moves ownership and closes exactly once") {
  unique_fd a = ptk::detail::open_fd("/dev/null", O_RDONLY);
  const int raw = a.get();
  unique_fd b = std::move(a);
  CHECK_FALSE(a.valid());  // NOLINT(bugprone-use-after-move): the moved-from state is the contract
  CHECK(b.get() == raw);
  unique_fd c;
  c = std::move(b);
  CHECK(c.get() == raw);
  CHECK(is_open(raw));
  c.reset();
  CHECK_FALSE(c);
  CHECK_FALSE(is_open(raw));
}

TEST_CASE("unique_fd move-assignment closes the descriptor it replaces") {
  unique_fd a = ptk::detail::open_fd("/dev/null", O_RDONLY);
  unique_fd b = ptk::detail::open_fd("/dev/null", O_RDONLY);
  const int replaced = a.get();
  a = std::move(b);
  CHECK_FALSE(is_open(replaced));
  CHECK(a.valid());
}

TEST_CASE("unique_fd::release gives up ownership without closing") {
  unique_fd a = ptk::detail::open_fd("/dev/null", O_RDONLY);
  const int raw = a.release();
  CHECK_FALSE(a.valid());
  CHECK(is_open(raw));
  ::close(raw);
}

TEST_CASE("every descriptor factory sets close-on-exec") {
  const int before = ptk::test::open_fd_count();
  {
    const unique_fd f = ptk::detail::open_fd("/dev/null", O_RDONLY);
    CHECK(ptk::detail::is_cloexec(f.get()));
    const unique_fd d = f.dup();
    CHECK(d.get() != f.get());
    CHECK(ptk::detail::is_cloexec(d.get()));
    const auto p = ptk::detail::make_pipe();
    CHECK(ptk::detail::is_cloexec(p.first.get()));
    CHECK(ptk::detail::is_cloexec(p.second.get()));
    const auto s = ptk::detail::make_socketpair();
    CHECK(ptk::detail::is_cloexec(s.first.get()));
    CHECK(ptk::detail::is_cloexec(s.second.get()));
  }
  CHECK(ptk::test::open_fd_count() == before);
}

TEST_CASE("make_pipe passes its flags on: a non-blocking read of an empty pipe fails with EAGAIN") {
  const auto p = ptk::detail::make_pipe(O_NONBLOCK);
  char c = 0;
  CHECK(::read(p.first.get(), &c, 1) == -1);
  CHECK(errno == EAGAIN);
}

TEST_CASE("open_fd names the path and reason when it fails, and leaks nothing") {
  const int before = ptk::test::open_fd_count();
  try {
    (void)ptk::detail::open_fd("/nonexistent/ptk", O_RDONLY);
    FAIL("open_fd did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(std::string(e.what()) == "open '/nonexistent/ptk': No such file or directory");
  }
  CHECK(ptk::test::open_fd_count() == before);
}

TEST_CASE("dup of an empty unique_fd is an error, not a descriptor") {
  const unique_fd empty;
  CHECK_THROWS_AS(empty.dup(), std::system_error);
}
