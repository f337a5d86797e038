// Internal: the EINTR-safe way every ptk module makes a system call.
#pragma once

#include <ptk/config.hpp>
#include <ptk/error.hpp>

#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <concepts>
#include <string_view>
#include <type_traits>
#include <utility>

namespace ptk::detail {

/// pidfd_open(2) as a raw system call: glibc 2.36's <sys/pidfd.h> lacks extern "C",
/// so its wrapper cannot be linked from C++. -1 and errno on failure.
inline int pidfd_open(pid_t pid) noexcept {
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0U));
}

/// Calls `f()` until it fails with something other than EINTR. `f` follows the
/// POSIX convention: it returns -1 (as int, long or ssize_t) and sets errno on
/// failure. The result of the last call is returned with errno left as it set it.
///
/// Not for close(2): on Linux the descriptor is released even when close reports
/// EINTR, and retrying could close a descriptor another thread has just opened.
template <std::invocable F>
requires std::is_integral_v<std::invoke_result_t<F>> && std::is_signed_v<std::invoke_result_t<F>>
auto retry_on_eintr(F&& f) -> std::invoke_result_t<F> {
  for (;;) {
    auto r = std::forward<F>(f)();
    if (r != -1 || errno != EINTR) return r;
  }
}

/// Returns `r`, or throws ptk's `std::system_error` built from the current errno
/// and `what` when `r == -1`. `what` is only read on failure, so callers may pass
/// a cheap literal and build richer text themselves when they need it.
template <std::signed_integral R>
R check(R r, std::string_view what) {
  if (r == -1) throw_os_error(errno, what);
  return r;
}

/// retry_on_eintr + check: the usual form for a call that must succeed.
template <std::invocable F>
auto checked_call(std::string_view what, F&& f) {
  return check(retry_on_eintr(std::forward<F>(f)), what);
}

}  // namespace ptk::detail
