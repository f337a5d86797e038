// 01 — hello, ptk: the version, and how ptk reports a failed system call.
//
// Every ptk call that fails in the operating system throws std::system_error whose
// code() is the errno and whose what() says what was attempted. Expected outcomes
// (a timeout, an empty or closed channel) are return values instead.
#include <ptk/ptk.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <system_error>

namespace {

// A tiny function in ptk's style: on failure, report errno and what was attempted.
int open_or_throw(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd == -1) ptk::throw_last_os_error("open '" + path + "'");
  return fd;
}

}  // namespace

int main() {
  std::printf("ptk %s (PTK_VERSION = %d)\n", PTK_VERSION_STRING, PTK_VERSION);

  const int fd = open_or_throw("/proc/self/status");
  std::printf("opened /proc/self/status as descriptor %d\n", fd);
  ::close(fd);

  try {
    open_or_throw("/no/such/file");
  } catch (const std::system_error& e) {
    std::printf("caught std::system_error: \"%s\"\n", e.what());
    std::printf("  e.code().value() = %d (errno ENOENT = %d)\n", e.code().value(), ENOENT);
    std::printf("  e.code() == std::errc::no_such_file_or_directory: %s\n",
                e.code() == std::errc::no_such_file_or_directory ? "true" : "false");
  }
  return 0;
}
