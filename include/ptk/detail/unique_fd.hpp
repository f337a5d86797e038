// Internal: RAII ownership of file descriptors, and descriptor factories that are
// O_CLOEXEC by construction (a descriptor must never leak into a spawned child
// unless ptk passes it on purpose).
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/syscall.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <utility>

namespace ptk::detail {

/// Owns one file descriptor and closes it on destruction. Move-only; -1 is empty.
class unique_fd {
 public:
  unique_fd() noexcept = default;
  explicit unique_fd(int fd) noexcept : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(other.release()) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  [[nodiscard]] int get() const noexcept { return fd_; }
  [[nodiscard]] bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return valid(); }

  /// Gives up ownership without closing.
  [[nodiscard]] int release() noexcept { return std::exchange(fd_, -1); }

  /// Closes the current descriptor (if any) and takes `fd`. close(2) is not retried
  /// on EINTR: Linux has released the descriptor whatever close reports.
  void reset(int fd = -1) noexcept {
    const int old = std::exchange(fd_, fd);
    if (old >= 0) ::close(old);
  }

  /// A new descriptor for the same open file, with FD_CLOEXEC set.
  [[nodiscard]] unique_fd dup() const {
    return unique_fd(
        checked_call("dup descriptor", [&] { return ::fcntl(fd_, F_DUPFD_CLOEXEC, 0); }));
  }

  friend void swap(unique_fd& a, unique_fd& b) noexcept { std::swap(a.fd_, b.fd_); }

 private:
  int fd_ = -1;
};

/// open(2) with O_CLOEXEC always added; throws "open '<path>': <reason>" on failure.
[[nodiscard]] inline unique_fd open_fd(const char* path, int flags, mode_t mode = 0) {
  const int fd = retry_on_eintr([&] { return ::open(path, flags | O_CLOEXEC, mode); });
  if (fd == -1) {
    const int err = errno;
    throw_os_error(err, "open '" + std::string(path) + "'");
  }
  return unique_fd(fd);
}

/// The two ends of a pipe or socket pair.
struct fd_pair {
  unique_fd first;   ///< read end of a pipe; one end of a socket pair
  unique_fd second;  ///< write end of a pipe; the other end of a socket pair
};

/// pipe2(2) with O_CLOEXEC always added (plus `flags`, e.g. O_NONBLOCK or O_DIRECT).
[[nodiscard]] inline fd_pair make_pipe(int flags = 0) {
  int fds[2];
  check(::pipe2(fds, flags | O_CLOEXEC), "pipe2");
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

/// socketpair(2) in AF_UNIX with SOCK_CLOEXEC always added to `type`.
[[nodiscard]] inline fd_pair make_socketpair(int type = SOCK_STREAM) {
  int fds[2];
  check(::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, fds), "socketpair");
  return {unique_fd(fds[0]), unique_fd(fds[1])};
}

/// Whether FD_CLOEXEC is set on `fd` (throws if `fd` is not open).
[[nodiscard]] inline bool is_cloexec(int fd) {
  return (check(::fcntl(fd, F_GETFD), "fcntl F_GETFD") & FD_CLOEXEC) != 0;
}

}  // namespace ptk::detail
