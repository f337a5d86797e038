/// @file
/// @brief ptk::exit_status: how a child process ended, and what it used.
#pragma once

#include <ptk/config.hpp>

#include <sys/resource.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>

namespace ptk {

/// @brief Resources a finished child process used (from wait4's rusage).
struct resource_usage {
  std::chrono::nanoseconds user_time{0};           ///< CPU time in user mode
  std::chrono::nanoseconds system_time{0};         ///< CPU time in the kernel
  std::uint64_t max_rss_bytes = 0;                 ///< peak resident set size
  std::uint64_t minor_faults = 0;                  ///< page faults served without I/O
  std::uint64_t major_faults = 0;                  ///< page faults that needed I/O
  std::uint64_t voluntary_context_switches = 0;    ///< the process waited
  std::uint64_t involuntary_context_switches = 0;  ///< the process was preempted
};

/// @brief How a child process ended: it exited with a code, or a signal killed it
/// (possibly dumping core). Also carries its resource usage.
///
/// @code
/// ptk::exit_status s = ptk::spawn(ptk::command{"false"}).wait();
/// if (s.exited()) std::printf("code %d\n", s.code());        // code 1
/// if (s.signaled()) std::printf("signal %d\n", s.signal());
/// @endcode
class exit_status {
 public:
  /// A status for "exited with code 0"; real ones come from waiting.
  exit_status() noexcept = default;
  /// From a raw wait status and the usage wait4 reported.
  /// @param raw the status as waitpid(2) / wait4(2) return it.
  /// @param usage the child's resource usage.
  exit_status(int raw, const rusage& usage) noexcept : raw_(raw), usage_(from(usage)) {}

  /// @return whether the process called exit (or returned from main).
  [[nodiscard]] bool exited() const noexcept { return WIFEXITED(raw_); }
  /// @return the exit code if exited(), else -1.
  [[nodiscard]] int code() const noexcept { return exited() ? WEXITSTATUS(raw_) : -1; }
  /// @return whether a signal ended the process.
  [[nodiscard]] bool signaled() const noexcept { return WIFSIGNALED(raw_); }
  /// @return the signal that ended the process if signaled(), else 0.
  [[nodiscard]] int signal() const noexcept { return signaled() ? WTERMSIG(raw_) : 0; }
  /// @return whether the process dumped core as it died.
  [[nodiscard]] bool core_dumped() const noexcept { return signaled() && WCOREDUMP(raw_); }
  /// @return whether it exited with code 0.
  [[nodiscard]] bool success() const noexcept { return exited() && code() == 0; }
  /// @return the raw wait status.
  [[nodiscard]] int raw() const noexcept { return raw_; }
  /// @return what the process used: CPU times, peak memory, faults, switches.
  [[nodiscard]] const resource_usage& usage() const noexcept { return usage_; }

  /// @return "exited with code 3", "killed by signal 9 (SIGKILL)" or
  ///         "killed by signal 11 (SIGSEGV), core dumped".
  [[nodiscard]] std::string to_string() const {
    if (exited()) return "exited with code " + std::to_string(code());
    if (!signaled()) return "status " + std::to_string(raw_);
    std::string s = "killed by signal " + std::to_string(signal());
    if (const char* abbrev = ::sigabbrev_np(signal())) s += std::string(" (SIG") + abbrev + ")";
    if (core_dumped()) s += ", core dumped";
    return s;
  }

 private:
  static std::chrono::nanoseconds from(const timeval& t) noexcept {
    return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec);
  }
  static resource_usage from(const rusage& r) noexcept {
    resource_usage u;
    u.user_time = from(r.ru_utime);
    u.system_time = from(r.ru_stime);
    u.max_rss_bytes = static_cast<std::uint64_t>(r.ru_maxrss) * 1024U;  // Linux: KiB
    u.minor_faults = static_cast<std::uint64_t>(r.ru_minflt);
    u.major_faults = static_cast<std::uint64_t>(r.ru_majflt);
    u.voluntary_context_switches = static_cast<std::uint64_t>(r.ru_nvcsw);
    u.involuntary_context_switches = static_cast<std::uint64_t>(r.ru_nivcsw);
    return u;
  }

  int raw_ = 0;
  resource_usage usage_;
};

}  // namespace ptk
