#include <ptk/error.hpp>

#include <fcntl.h>

#include <cerrno>
#include <string>
#include <system_error>

#include "catch.hpp"

TEST_CASE("os_error carries the errno and says what was attempted") {
  const std::system_error e = ptk::os_error(ENOENT, "spawn 'nosuchprog'");
  CHECK(e.code().value() == ENOENT);
  CHECK(e.code().category() == std::system_category());
  CHECK(e.code() == std::errc::no_such_file_or_directory);
  CHECK(std::string(e.what()) == "spawn 'nosuchprog': No such file or directory");
}

TEST_CASE("throw_last_os_error reports the errno of the call that just failed") {
  const int fd = ::open("/nonexistent/ptk/file", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd == -1);
  try {
    ptk::throw_last_os_error("open '/nonexistent/ptk/file'");
    FAIL("throw_last_os_error returned");
  } catch (const std::system_error& e) {
    CHECK(e.code() == std::errc::no_such_file_or_directory);
    CHECK(std::string(e.what()) == "open '/nonexistent/ptk/file': No such file or directory");
  }
}

TEST_CASE("throw_os_error throws std::system_error, catchable as std::runtime_error") {
  CHECK_THROWS_AS(ptk::throw_os_error(EPERM, "kill 1"), std::runtime_error);
  CHECK_THROWS_WITH(ptk::throw_os_error(EPERM, "kill 1"), "kill 1: Operation not permitted");
}
