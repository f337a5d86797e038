/// @file
/// @brief ptk::process_info: what the kernel knows about any process (like psutil).
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/procfs.hpp>
#include <ptk/error.hpp>

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace ptk {

/// @brief A snapshot of one process, read from /proc/PID.
struct process_stats {
  pid_t pid = 0;     ///< the process id
  pid_t ppid = 0;    ///< its parent's id
  std::string name;  ///< the command name (at most 15 bytes)
  /// Its arguments; empty for kernel threads and zombies, and for a moment right
  /// after a spawn, while the kernel still lays out the new program's arguments.
  std::vector<std::string> cmdline;
  char state = '?';             ///< R running, S sleeping, D disk sleep, Z zombie, T stopped...
  std::uint32_t threads = 0;    ///< how many threads it has
  std::uint64_t rss_bytes = 0;  ///< resident memory
  std::uint64_t vm_bytes = 0;   ///< virtual memory size
  std::chrono::nanoseconds user_time{0};             ///< CPU time in user mode
  std::chrono::nanoseconds system_time{0};           ///< CPU time in the kernel
  std::chrono::system_clock::time_point start_time;  ///< when it started (wall clock)
  uid_t uid = 0;                                     ///< its real user id
};

namespace detail {

inline std::chrono::system_clock::time_point boot_time() {
  const std::string stat = read_proc_file("/proc/stat", "read /proc/stat");
  // A line "btime <seconds since the epoch>".
  std::int64_t btime = 0;
  const auto pos = stat.find("\nbtime ");
  if (pos == std::string::npos) throw std::runtime_error("process_info: no btime in /proc/stat");
  const auto begin = pos + 7;
  const auto end = std::min(stat.find('\n', begin), stat.size());
  if (!parse_number(std::string_view(stat).substr(begin, end - begin), btime)) {
    throw std::runtime_error("process_info: malformed btime in /proc/stat");
  }
  return std::chrono::system_clock::time_point(std::chrono::seconds(btime));
}

}  // namespace detail

/// @brief What the kernel reports about process `pid`: name, arguments, state,
/// parent, threads, memory, CPU times, start time, owner.
///
/// @code
/// ptk::process_stats s = ptk::process_info(::getpid());
/// std::printf("%s: %u threads, %llu bytes resident\n", s.name.c_str(), s.threads,
///             (unsigned long long)s.rss_bytes);
/// @endcode
/// @param pid the process.
/// @return its snapshot.
/// @throws std::system_error "process_info 123: No such file or directory" (ENOENT)
///         if there is no such process.
inline process_stats process_info(pid_t pid) {
  const std::string dir = "/proc/" + std::to_string(pid);
  const std::string what = "process_info " + std::to_string(pid);
  process_stats s;
  s.pid = pid;
  const std::string stat_text = detail::read_proc_file(dir + "/stat", what);
  detail::stat_fields f;
  std::uint64_t utime = 0, stime = 0, start_ticks = 0, vsize = 0;
  std::int64_t rss_pages = 0;
  // Field numbers of proc(5): 4 ppid, 14 utime, 15 stime, 20 threads, 22 starttime,
  // 23 vsize, 24 rss.
  if (!f.parse(stat_text) || !f.number(4, s.ppid) || !f.number(14, utime) || !f.number(15, stime) ||
      !f.number(20, s.threads) || !f.number(22, start_ticks) || !f.number(23, vsize) ||
      !f.number(24, rss_pages)) {
    throw std::runtime_error(what + ": unexpected format of " + dir + "/stat");
  }
  s.name = std::string(f.field(2));
  s.state = f.field(3)[0];
  s.user_time = detail::ticks_to_duration(utime);
  s.system_time = detail::ticks_to_duration(stime);
  s.vm_bytes = vsize;
  static const std::uint64_t page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  s.rss_bytes = rss_pages > 0 ? static_cast<std::uint64_t>(rss_pages) * page : 0;
  static const auto booted = detail::boot_time();
  s.start_time = booted + std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              detail::ticks_to_duration(start_ticks));

  const std::string cmdline = detail::read_proc_file(dir + "/cmdline", what);
  std::size_t start = 0;
  while (start < cmdline.size()) {
    const std::size_t end = std::min(cmdline.find('\0', start), cmdline.size());
    s.cmdline.emplace_back(cmdline, start, end - start);
    start = end + 1;
  }
  const std::string status = detail::read_proc_file(dir + "/status", what);
  std::string_view uid_line = detail::status_value(status, "Uid");
  uid_line = uid_line.substr(0, uid_line.find_first_of(" \t"));
  if (!detail::parse_number(uid_line, s.uid)) {
    throw std::runtime_error(what + ": unexpected format of " + dir + "/status");
  }
  return s;
}

}  // namespace ptk
