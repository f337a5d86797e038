#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>

#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "catch.hpp"
#include "test_support.hpp"

using ptk::test::interrupting_handler;

TEST_CASE("retry_on_eintr retries a call that fails with EINTR and returns its result") {
  int calls = 0;
  const int r = ptk::detail::retry_on_eintr([&] {
    if (++calls < 3) {
      errno = EINTR;
      return -1;
    }
    return 42;
  });
  CHECK(r == 42);
  CHECK(calls == 3);
}

TEST_CASE("retry_on_eintr returns other failures at once with errno intact") {
  int calls = 0;
  const long r = ptk::detail::retry_on_eintr([&] {
    ++calls;
    errno = EBADF;
    return -1L;
  });
  CHECK(r == -1);
  CHECK(errno == EBADF);
  CHECK(calls == 1);
}

TEST_CASE("retry_on_eintr keeps a blocking read going through real signals") {
  interrupting_handler handler;
  auto [rd, wr] = ptk::detail::make_pipe();
  std::atomic<pid_t> reader_tid{0};
  ssize_t got = 0;
  char byte = 0;
  std::thread reader([&, fd = rd.get()] {
    reader_tid = ptk::test::current_tid();
    got = ptk::detail::retry_on_eintr([&] { return ::read(fd, &byte, 1); });
  });
  const pthread_t reader_handle = reader.native_handle();

  // Interrupt the read three times, each time once the reader sleeps in it.
  for (int i = 1; i <= 3; ++i) {
    REQUIRE(ptk::test::eventually([&] {
      const pid_t tid = reader_tid.load();
      return tid != 0 && ptk::test::thread_state(tid) == 'S';
    }));
    ::pthread_kill(reader_handle, SIGUSR1);
    REQUIRE(ptk::test::eventually([&] { return interrupting_handler::count() >= i; }));
  }
  REQUIRE(::write(wr.get(), "x", 1) == 1);
  reader.join();
  CHECK(got == 1);
  CHECK(byte == 'x');
}

TEST_CASE("check passes results through and turns -1 into a system_error") {
  CHECK(ptk::detail::check(7, "anything") == 7);
  errno = EACCES;
  CHECK_THROWS_WITH(ptk::detail::check(-1, "open '/root/secret'"),
                    "open '/root/secret': Permission denied");
}

TEST_CASE("checked_call reports a real failing call with its errno") {
  try {
    (void)ptk::detail::checked_call("close descriptor 12345",
                                    [] { return ::fcntl(12345, F_GETFD); });
    FAIL("checked_call did not throw");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::bad_file_descriptor);
  }
}
