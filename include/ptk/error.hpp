/// @file
/// @brief How ptk reports operating-system errors.
///
/// A failed system call becomes a `std::system_error` whose code is the `errno`
/// value (in `std::system_category()`) and whose message says what was attempted,
/// for example `"spawn 'nosuchprog': No such file or directory"`. Expected outcomes
/// (a timeout, an empty or closed channel) are return values, never exceptions.
#pragma once

#include <ptk/config.hpp>

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>

namespace ptk {

/// @brief Makes the exception ptk throws for a failed OS call.
/// @param err  the `errno` value the call failed with.
/// @param what what was attempted, e.g. `open /etc/ptk.conf`.
/// @return a `std::system_error` whose `code()` is `std::error_code(err, std::system_category())`
///         and whose `what()` reads "what: strerror(err)".
///
/// @code
/// auto e = ptk::os_error(ENOENT, "spawn 'nosuchprog'");
/// assert(e.code() == std::errc::no_such_file_or_directory);
/// // e.what() == "spawn 'nosuchprog': No such file or directory"
/// @endcode
[[nodiscard]] inline std::system_error os_error(int err, std::string_view what) {
  return {std::error_code(err, std::system_category()), std::string(what)};
}

/// @brief Throws `os_error(err, what)`.
/// @param err  the `errno` value the call failed with.
/// @param what what was attempted.
[[noreturn]] inline void throw_os_error(int err, std::string_view what) {
  throw os_error(err, what);
}

/// @brief Throws `os_error(errno, what)`: call it right after the failed call.
/// @param what what was attempted.
///
/// @code
/// if (::mkdir(path, 0700) == -1) ptk::throw_last_os_error("mkdir '" + std::string(path) + "'");
/// @endcode
[[noreturn]] inline void throw_last_os_error(std::string_view what) { throw_os_error(errno, what); }

}  // namespace ptk
