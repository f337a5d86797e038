/// @file
/// @brief ptk::run: run a command to completion and capture its output.
#pragma once

#include <ptk/config.hpp>
#include <ptk/process/process.hpp>

#include <fcntl.h>
#include <poll.h>

#include <chrono>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ptk {

/// @brief Options of ptk::run.
struct run_options {
  /// Written to the child's stdin, which is then closed (empty: stdin is /dev/null).
  std::string input{};
  /// After this long the child and every process it started are killed (SIGKILL)
  /// and the result says timed_out.
  std::optional<std::chrono::milliseconds> timeout{};
  /// Output beyond this many bytes per stream is read and dropped, so a runaway
  /// child cannot exhaust the parent's memory; the result says truncated.
  std::size_t max_output = std::size_t{256} << 20;
};

/// @brief What ptk::run returns.
struct run_result {
  exit_status status;      ///< how the child ended
  std::string out;         ///< everything it wrote to stdout (up to max_output)
  std::string err;         ///< everything it wrote to stderr (up to max_output)
  bool timed_out = false;  ///< it was killed because the timeout passed
  bool truncated = false;  ///< some output beyond max_output was dropped
};

/// @brief Runs `cmd` to completion: feeds it `options.input`, captures stdout and
/// stderr (read together, so a child filling one pipe never deadlocks), enforces
/// the timeout.
///
/// @code
/// auto r = ptk::run(ptk::command{"sh"}.args({"-c", "echo hi; echo err >&2"}), {.timeout = 5s});
/// // r.status.code() == 0, r.out == "hi\n", r.err == "err\n"
/// @endcode
/// @param cmd the command; its stdin/stdout/stderr settings are replaced.
/// @param options input, timeout and output limit.
/// @return the exit status and the output.
/// @throws std::system_error if the command cannot be started.
inline run_result run(command cmd, const run_options& options = {}) {
  cmd.std_in(options.input.empty() ? stdio::null : stdio::pipe)
      .std_out(stdio::pipe)
      .std_err(stdio::pipe);
  process child = spawn(cmd);
  const bool has_deadline = options.timeout.has_value();
  const auto deadline = has_deadline ? std::chrono::steady_clock::now() + *options.timeout
                                     : std::chrono::steady_clock::time_point::max();
  run_result result;
  std::string_view input = options.input;
  if (child.std_in().is_open()) {
    detail::check(::fcntl(child.std_in().fd(), F_SETFL, O_NONBLOCK),
                  "make child stdin non-blocking");
  }
  const auto drain = [&](pipe_end& from, std::string& into) {
    char buf[65536];
    const std::size_t n = from.read_some(buf, sizeof buf);
    if (n == 0) {
      from.close();
      return;
    }
    const std::size_t room = options.max_output - std::min(options.max_output, into.size());
    into.append(buf, std::min(n, room));
    if (n > room) result.truncated = true;
  };
  while (child.std_out().is_open() || child.std_err().is_open()) {
    if (input.empty() && child.std_in().is_open()) child.std_in().close();
    pollfd fds[3] = {{child.std_out().fd(), POLLIN, 0},
                     {child.std_err().fd(), POLLIN, 0},
                     {child.std_in().fd(), POLLOUT, 0}};
    int timeout_ms = -1;
    if (has_deadline) {
      const auto left = deadline - std::chrono::steady_clock::now();
      if (left <= std::chrono::steady_clock::duration::zero()) {
        result.timed_out = true;
        child.kill_tree(SIGKILL);
        break;
      }
      timeout_ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
    }
    const int n = ::poll(fds, 3, timeout_ms);
    if (n == -1) {
      if (errno == EINTR) continue;
      throw_last_os_error("poll child pipes");
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) drain(child.std_out(), result.out);
    if ((fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) drain(child.std_err(), result.err);
    if ((fds[2].revents & (POLLERR | POLLHUP)) != 0) {
      child.std_in().close();  // the child stopped reading: drop the rest
      input = {};
    } else if ((fds[2].revents & POLLOUT) != 0) {
      try {
        input.remove_prefix(child.std_in().write_some(input));
      } catch (const std::system_error&) {  // EPIPE: the child closed its stdin
        child.std_in().close();
        input = {};
      }
    }
  }
  child.std_in().close();
  if (!result.timed_out && has_deadline) {
    if (auto s = child.wait_until(deadline)) {
      result.status = *s;
      return result;
    }
    result.timed_out = true;
    child.kill_tree(SIGKILL);
  }
  result.status = child.wait();
  return result;
}

/// @brief Runs `argv[0]` with arguments `argv[1...]`; see run(command, const run_options&).
///
/// @code
/// auto r = ptk::run({"sh", "-c", "echo hi; echo err >&2"}, {.input = "", .timeout = 5s});
/// @endcode
/// @param argv the program and its arguments (not empty).
/// @param options input, timeout and output limit.
/// @return the exit status and the output.
inline run_result run(const std::vector<std::string>& argv, const run_options& options = {}) {
  if (argv.empty()) throw std::invalid_argument("ptk::run: empty argv");
  return run(command(argv.front()).args({argv.begin() + 1, argv.end()}), options);
}

/// @brief As run(const std::vector<std::string>&, const run_options&), for a braced
///        list of words: `ptk::run({"true"})` would otherwise be ambiguous between a
///        one-word argv and a ptk::command.
/// @code
/// auto r = ptk::run({"true"}, {.timeout = 5s});
/// @endcode
/// @param argv the program and its arguments (not empty).
/// @param options input, timeout and output limit.
/// @return the exit status and the output.
inline run_result run(std::initializer_list<std::string> argv, const run_options& options = {}) {
  return run(std::vector<std::string>(argv), options);
}

}  // namespace ptk
