// Internal: reading /proc, shared by thread_info and process_info.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <array>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>

namespace ptk::detail {

/// Reads a whole /proc file. Any failure becomes ptk's system_error with `what` as
/// the attempted action (the path alone would not tell the user which thread). A
/// task that exits between the open and the read fails with ESRCH; that is reported
/// as ENOENT, the same "no such process or thread" as a task already gone.
inline std::string read_proc_file(const std::string& path, const std::string& what) {
  unique_fd fd;
  try {
    fd = open_fd(path.c_str(), O_RDONLY);
  } catch (const std::system_error& e) {
    throw_os_error(e.code().value() == ESRCH ? ENOENT : e.code().value(), what);
  }
  std::string text;
  char buf[1024];
  for (;;) {
    const ssize_t n = retry_on_eintr([&] { return ::read(fd.get(), buf, sizeof buf); });
    if (n == -1) throw_os_error(errno == ESRCH ? ENOENT : errno, what);
    if (n == 0) return text;
    text.append(buf, static_cast<std::size_t>(n));
  }
}

/// Parses a whole decimal token as T; false if it is not one.
template <class T>
bool parse_number(std::string_view token, T& out) noexcept {
  if (token.empty()) return false;
  const char* end = token.data() + token.size();
  const auto [ptr, ec] = std::from_chars(token.data(), end, out);
  return ec == std::errc{} && ptr == end;
}

/// Clock ticks (the unit of times in /proc) to nanoseconds, without the overflow of
/// ticks * 1e9.
inline std::chrono::nanoseconds ticks_to_duration(std::uint64_t ticks) noexcept {
  static const std::uint64_t hz = [] {
    const long r = ::sysconf(_SC_CLK_TCK);
    return r > 0 ? static_cast<std::uint64_t>(r) : std::uint64_t{100};
  }();
  constexpr std::uint64_t ns_per_s = 1'000'000'000;
  const std::uint64_t ns = ticks / hz * ns_per_s + ticks % hz * ns_per_s / hz;
  return std::chrono::nanoseconds(static_cast<std::chrono::nanoseconds::rep>(ns));
}

/// The fields of a /proc/<pid>/stat line, numbered as in proc(5): field(1) is the
/// pid, field(2) the command name (without parentheses), field(3) the state...
class stat_fields {
 public:
  /// false if `stat` is not in the expected format.
  bool parse(std::string_view stat) noexcept {
    // "pid (comm) S ppid ...": comm may hold spaces and ')' itself, but nothing
    // after it can, so it ends at the last ')'.
    const std::size_t open_paren = stat.find('(');
    const std::size_t close_paren = stat.rfind(')');
    if (open_paren == std::string_view::npos || close_paren == std::string_view::npos ||
        close_paren < open_paren) {
      return false;
    }
    fields_[1] = stat.substr(0, open_paren);
    while (!fields_[1].empty() && fields_[1].back() == ' ') fields_[1].remove_suffix(1);
    fields_[2] = stat.substr(open_paren + 1, close_paren - open_paren - 1);
    std::string_view rest = stat.substr(close_paren + 1);
    count_ = 2;
    while (count_ + 1 < fields_.size()) {
      const std::size_t start = rest.find_first_not_of(" \n");
      if (start == std::string_view::npos) break;
      rest.remove_prefix(start);
      const std::size_t len = std::min(rest.find_first_of(" \n"), rest.size());
      fields_[++count_] = rest.substr(0, len);
      rest.remove_prefix(len);
    }
    return count_ >= 3 && fields_[3].size() == 1;
  }

  /// Field `n` (1-based), empty if the line had fewer fields.
  [[nodiscard]] std::string_view field(std::size_t n) const noexcept {
    return n <= count_ ? fields_[n] : std::string_view{};
  }

  /// Field `n` as a number; false if missing or not a number.
  template <class T>
  bool number(std::size_t n, T& out) const noexcept {
    return parse_number(field(n), out);
  }

 private:
  std::array<std::string_view, 64> fields_{};
  std::size_t count_ = 0;
};

/// The value of `key` in a "Key:\tvalue" file such as /proc/<pid>/status, with
/// leading blanks removed; empty if absent.
inline std::string_view status_value(std::string_view status, std::string_view key) noexcept {
  while (!status.empty()) {
    const std::size_t eol = std::min(status.find('\n'), status.size());
    const std::string_view line = status.substr(0, eol);
    status.remove_prefix(std::min(eol + 1, status.size()));
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || line.substr(0, colon) != key) continue;
    std::string_view value = line.substr(colon + 1);
    const std::size_t start = value.find_first_not_of(" \t");
    return start == std::string_view::npos ? std::string_view{} : value.substr(start);
  }
  return {};
}

}  // namespace ptk::detail
