/// @file
/// @brief What the kernel knows about a thread: name, scheduler state, CPU time,
/// context switches, last CPU and priority, read from `/proc`.
///
/// @code
/// ptk::thread worker{"crunch", [](std::stop_token st) {
///   while (!st.stop_requested()) crunch_some();
/// }};
/// const ptk::thread_stats s = ptk::thread_info(worker.native_id());  // while it runs
/// std::printf("%s is %s, %lld ms on CPU\n", s.name.c_str(),
///             std::string(ptk::to_string(s.state)).c_str(),
///             static_cast<long long>(s.cpu_time().count() / 1'000'000));
/// @endcode
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/procfs.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace ptk {

/// @brief A thread's scheduler state, as the kernel reports it (see proc(5)).
enum class scheduler_state {
  running,       ///< R: running or ready to run
  sleeping,      ///< S: sleeping, interruptible (a futex, a read, a poll, ...)
  disk_sleep,    ///< D: sleeping, uninterruptible (usually I/O)
  stopped,       ///< T: stopped by a signal (SIGSTOP, SIGTSTP, ...)
  tracing_stop,  ///< t: stopped by a debugger
  zombie,        ///< Z: exited, not yet reaped
  dead,          ///< X (or x before Linux 3.14): being removed
  idle,          ///< I: an idle kernel thread (Linux 4.14+)
  parked,        ///< P: a parked kernel thread (Linux 3.9 to 3.13, and 4.14+)
  waking,        ///< W: waking (Linux 2.6.33 to 3.13; paging before 2.6)
  wakekill,      ///< K: woken to be killed (Linux 2.6.33 to 3.13)
  unknown,       ///< a letter this version of ptk does not know
};

/// @brief The scheduler state a `/proc` state letter stands for.
/// @param letter the letter from `/proc/<pid>/task/<tid>/stat`, e.g. S.
/// @return the matching state; scheduler_state::unknown for any other character.
[[nodiscard]] constexpr scheduler_state scheduler_state_from_letter(char letter) noexcept {
  switch (letter) {
    case 'R':
      return scheduler_state::running;
    case 'S':
      return scheduler_state::sleeping;
    case 'D':
      return scheduler_state::disk_sleep;
    case 'T':
      return scheduler_state::stopped;
    case 't':
      return scheduler_state::tracing_stop;
    case 'Z':
      return scheduler_state::zombie;
    case 'X':
    case 'x':
      return scheduler_state::dead;
    case 'I':
      return scheduler_state::idle;
    case 'P':
      return scheduler_state::parked;
    case 'W':
      return scheduler_state::waking;
    case 'K':
      return scheduler_state::wakekill;
    default:
      return scheduler_state::unknown;
  }
}

/// @brief A readable description of a scheduler state.
/// @param state the state to describe.
/// @return the wording of proc(5): "running", "sleeping", "disk sleep", "stopped",
///         "tracing stop", "zombie", "dead", "idle", "parked", "waking", "wakekill",
///         or "unknown".
[[nodiscard]] constexpr std::string_view to_string(scheduler_state state) noexcept {
  switch (state) {
    case scheduler_state::running:
      return "running";
    case scheduler_state::sleeping:
      return "sleeping";
    case scheduler_state::disk_sleep:
      return "disk sleep";
    case scheduler_state::stopped:
      return "stopped";
    case scheduler_state::tracing_stop:
      return "tracing stop";
    case scheduler_state::zombie:
      return "zombie";
    case scheduler_state::dead:
      return "dead";
    case scheduler_state::idle:
      return "idle";
    case scheduler_state::parked:
      return "parked";
    case scheduler_state::waking:
      return "waking";
    case scheduler_state::wakekill:
      return "wakekill";
    case scheduler_state::unknown:
      return "unknown";
  }
  return "unknown";
}

/// @brief One snapshot of a thread, as ptk::thread_info reads it from `/proc`.
///
/// CPU times come from clock ticks (`sysconf(_SC_CLK_TCK)`, usually 100 per second),
/// so they move in steps of about 10 ms.
struct thread_stats {
  pid_t pid = 0;            ///< the process the thread belongs to (its thread group id)
  pid_t tid = 0;            ///< the kernel thread id
  std::string name;         ///< the kernel name (comm): at most 15 bytes
  char state_letter = '?';  ///< the scheduler state letter: R, S, D, T, t, Z, X, I, ...
  scheduler_state state = scheduler_state::unknown;  ///< the same, as an enumeration
  std::chrono::nanoseconds user_time{0};             ///< CPU time spent in user mode
  std::chrono::nanoseconds system_time{0};           ///< CPU time spent in the kernel
  std::uint64_t voluntary_context_switches = 0;      ///< times it gave up the CPU to wait
  std::uint64_t nonvoluntary_context_switches = 0;   ///< times it was preempted
  int last_cpu = -1;  ///< the CPU it last ran on (the processor field of stat)
  int priority = 0;   ///< the kernel priority: 20 + nice for normal threads, negative for real-time
  int nice = 0;       ///< the nice value, -20 (favoured) to 19

  /// @brief Total CPU time.
  /// @return user_time + system_time.
  [[nodiscard]] std::chrono::nanoseconds cpu_time() const noexcept {
    return user_time + system_time;
  }
};

}  // namespace ptk

namespace ptk::detail {

/// Fills name, state, times, priority, nice and last CPU from the text of
/// /proc/.../stat; false if it is not in the expected format.
inline bool parse_thread_stat(std::string_view stat, thread_stats& out) {
  // "tid (comm) S ppid ...": comm may hold spaces and ')' itself, but nothing after
  // it can, so it ends at the last ')'.
  const std::size_t open_paren = stat.find('(');
  const std::size_t close_paren = stat.rfind(')');
  if (open_paren == std::string_view::npos || close_paren == std::string_view::npos ||
      close_paren < open_paren) {
    return false;
  }
  out.name.assign(stat.substr(open_paren + 1, close_paren - open_paren - 1));

  // Field numbers below are those of proc(5); field 3 (state) is the first after ')'.
  constexpr std::size_t state_field = 3, utime_field = 14, stime_field = 15, priority_field = 18,
                        nice_field = 19, processor_field = 39;
  std::string_view rest = stat.substr(close_paren + 1);
  std::uint64_t user_ticks = 0, system_ticks = 0;
  long long prio = 0, nice_value = 0, cpu = -1;
  std::size_t field = state_field - 1;
  bool ok = true;
  while (ok && field < processor_field) {
    const std::size_t start = rest.find_first_not_of(" \n");
    if (start == std::string_view::npos) return false;
    rest.remove_prefix(start);
    const std::size_t len = std::min(rest.find_first_of(" \n"), rest.size());
    const std::string_view token = rest.substr(0, len);
    rest.remove_prefix(len);
    switch (++field) {
      case state_field:
        if (token.size() != 1) return false;
        out.state_letter = token[0];
        break;
      case utime_field:
        ok = parse_number(token, user_ticks);
        break;
      case stime_field:
        ok = parse_number(token, system_ticks);
        break;
      case priority_field:
        ok = parse_number(token, prio);
        break;
      case nice_field:
        ok = parse_number(token, nice_value);
        break;
      case processor_field:
        ok = parse_number(token, cpu);
        break;
      default:
        break;
    }
  }
  if (!ok) return false;
  out.state = scheduler_state_from_letter(out.state_letter);
  out.user_time = ticks_to_duration(user_ticks);
  out.system_time = ticks_to_duration(system_ticks);
  out.priority = static_cast<int>(prio);
  out.nice = static_cast<int>(nice_value);
  out.last_cpu = static_cast<int>(cpu);
  return true;
}

/// Fills the thread group id and the context switch counts from the text of
/// /proc/.../status ("Key:\tvalue" lines); false if one is missing or malformed.
inline bool parse_thread_status(std::string_view status, thread_stats& out) {
  bool have_pid = false, have_voluntary = false, have_nonvoluntary = false;
  while (!status.empty()) {
    const std::size_t eol = std::min(status.find('\n'), status.size());
    const std::string_view line = status.substr(0, eol);
    status.remove_prefix(std::min(eol + 1, status.size()));
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view key = line.substr(0, colon);
    std::string_view value = line.substr(colon + 1);
    const std::size_t digits = value.find_first_not_of(" \t");
    value.remove_prefix(digits == std::string_view::npos ? value.size() : digits);
    if (key == "Tgid") {
      have_pid = parse_number(value, out.pid);
    } else if (key == "voluntary_ctxt_switches") {
      have_voluntary = parse_number(value, out.voluntary_context_switches);
    } else if (key == "nonvoluntary_ctxt_switches") {
      have_nonvoluntary = parse_number(value, out.nonvoluntary_context_switches);
    }
  }
  return have_pid && have_voluntary && have_nonvoluntary;
}

/// thread_info for the thread directory `dir` (".../task/<tid>"); `what` names the
/// thread in errors.
inline thread_stats read_thread_stats(const std::string& dir, pid_t tid, const std::string& what) {
  thread_stats stats;
  stats.tid = tid;
  const std::string stat_path = dir + "/stat";
  if (!parse_thread_stat(read_proc_file(stat_path, what), stats)) {
    throw std::runtime_error(what + ": unexpected format of " + stat_path);
  }
  const std::string status_path = dir + "/status";
  if (!parse_thread_status(read_proc_file(status_path, what), stats)) {
    throw std::runtime_error(what + ": unexpected format of " + status_path);
  }
  return stats;
}

}  // namespace ptk::detail

namespace ptk {

/// @brief The calling thread's kernel thread id (gettid), as ptk::thread_info and
/// ptk::thread::native_id use it.
/// @return the kernel thread id; in a single-threaded process it equals getpid().
[[nodiscard]] inline pid_t this_thread_id() noexcept { return ::gettid(); }

/// @brief A snapshot of thread `tid` of this process, read from
/// `/proc/self/task/<tid>/stat` and `/proc/self/task/<tid>/status`.
///
/// The two files are read one after the other, so a snapshot of a busy thread is not
/// atomic (its state may have changed between them).
/// @param tid the kernel thread id (see ptk::this_thread_id and ptk::thread::native_id).
/// @return the thread's name, state, CPU times, context switches, last CPU and priority.
/// @throws std::system_error "thread_info <tid>: No such file or directory" (ENOENT)
///         when this process has no such thread, or another errno if /proc cannot be
///         read. A thread that has just exited (even one already joined: the kernel
///         wakes the joiner slightly before it removes the thread) may still be
///         reported for a moment, while it finishes its exit in the kernel.
/// @throws std::runtime_error if /proc answers in a format ptk does not understand.
[[nodiscard]] inline thread_stats thread_info(pid_t tid) {
  const std::string id = std::to_string(tid);
  return detail::read_thread_stats("/proc/self/task/" + id, tid, "thread_info " + id);
}

/// @brief A snapshot of thread `tid` of process `pid` (any process this one may read
/// in `/proc`), read from `/proc/<pid>/task/<tid>`.
/// @param pid the process id.
/// @param tid the kernel thread id of one of its threads; `pid` itself names its
///            main thread.
/// @return the thread's name, state, CPU times, context switches, last CPU and priority.
/// @throws std::system_error "thread_info <tid> of process <pid>: reason" when there is
///         no such thread (ENOENT) or it cannot be read (e.g. EACCES).
/// @throws std::runtime_error if /proc answers in a format ptk does not understand.
[[nodiscard]] inline thread_stats thread_info(pid_t pid, pid_t tid) {
  const std::string p = std::to_string(pid);
  const std::string t = std::to_string(tid);
  return detail::read_thread_stats("/proc/" + p + "/task/" + t, tid,
                                   "thread_info " + t + " of process " + p);
}

}  // namespace ptk
