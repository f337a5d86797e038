/// @file
/// @brief ptk::process_table: a bounded, thread-safe registry of child processes —
///        what a service that starts, lists, inspects and kills processes needs.
#pragma once

#include <ptk/config.hpp>
#include <ptk/process/process.hpp>

#include <chrono>
#include <cstddef>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace ptk {

/// @brief Thrown when a process_table is full.
class limit_exceeded : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief How to build a process_table.
struct process_table_options {
  /// At most this many processes run at once; spawn() beyond it throws
  /// ptk::limit_exceeded. Finished processes do not count.
  std::size_t max_processes = 64;
  /// How long kill() and the destructor let a process exit after SIGTERM before
  /// SIGKILL.
  std::chrono::milliseconds grace = std::chrono::seconds(2);
};

/// @brief One process as a process_table reports it.
struct process_entry {
  pid_t pid = 0;                                  ///< its pid
  std::vector<std::string> argv;                  ///< the program and its arguments
  std::chrono::system_clock::time_point started;  ///< when it was spawned
  std::optional<exit_status> status;              ///< set once it has exited (and was reaped)
  [[nodiscard]] bool running() const noexcept { return !status.has_value(); }  ///< @return !status
};

/// @brief A bounded, thread-safe set of supervised children: spawn, list, inspect,
/// kill, reap. Finished processes stay listed with their exit status until
/// remove()d. The destructor terminates whatever still runs: nothing outlives it.
///
/// @code
/// ptk::process_table table{{.max_processes = 10}};
/// pid_t pid = table.spawn(ptk::command{"sleep"}.arg("5"));
/// for (const auto& e : table.list()) {
///   std::printf("%d %s\n", e.pid, e.running() ? "running" : "done");
/// }
/// table.kill(pid);  // SIGTERM, then SIGKILL after the grace period
/// @endcode
class process_table {
 public:
  /// A table with the given limits.
  /// @param options maximum running processes and termination grace period.
  explicit process_table(process_table_options options = {}) : options_(options) {}
  process_table(const process_table&) = delete;
  process_table& operator=(const process_table&) = delete;
  /// Terminates (SIGTERM, then SIGKILL after the grace period) and reaps every
  /// process still running.
  ~process_table() {
    const std::lock_guard lock(mutex_);
    for (auto& [pid, s] : slots_) {
      if (!s.entry.status) {
        try {
          s.entry.status = s.child.terminate(options_.grace);
        } catch (...) {  // reaped elsewhere: nothing left to clean up
        }
      }
    }
  }

  /// Starts `cmd` and registers it.
  /// @param cmd the command. Nobody would read pipes of a registered process, so a
  ///        stream set to stdio::pipe is connected to /dev/null instead.
  /// @return the new child's pid.
  /// @throws ptk::limit_exceeded if max_processes are running;
  ///         std::system_error if it cannot be started.
  pid_t spawn(command cmd) {
    if (cmd.stdin_mode().mode == stdio::pipe) cmd.std_in(stdio::null);
    if (cmd.stdout_mode().mode == stdio::pipe) cmd.std_out(stdio::null);
    if (cmd.stderr_mode().mode == stdio::pipe) cmd.std_err(stdio::null);
    const std::lock_guard lock(mutex_);
    reap_locked();
    if (running_locked() >= options_.max_processes) {
      throw limit_exceeded("process_table: " + std::to_string(options_.max_processes) +
                           " processes are running already (max_processes)");
    }
    child_slot s;
    s.child = ptk::spawn(cmd);
    s.entry.pid = s.child.pid();
    s.entry.argv.push_back(cmd.program());
    s.entry.argv.insert(s.entry.argv.end(), cmd.arguments().begin(), cmd.arguments().end());
    s.entry.started = std::chrono::system_clock::now();
    const pid_t pid = s.entry.pid;
    slots_.emplace(pid, std::move(s));
    return pid;
  }

  /// @return every registered process, oldest pid first, with exit statuses of the
  ///         ones that finished (they are reaped first).
  [[nodiscard]] std::vector<process_entry> list() {
    const std::lock_guard lock(mutex_);
    reap_locked();
    std::vector<process_entry> out;
    out.reserve(slots_.size());
    for (const auto& [pid, s] : slots_) out.push_back(s.entry);
    return out;
  }

  /// @param pid a registered process.
  /// @return its entry (reaped first if it finished), or nullopt if unknown.
  [[nodiscard]] std::optional<process_entry> status(pid_t pid) {
    const std::lock_guard lock(mutex_);
    auto it = slots_.find(pid);
    if (it == slots_.end()) return std::nullopt;
    reap_one(it->second);
    return it->second.entry;
  }

  /// Terminates a registered process: SIGTERM, then SIGKILL after the grace period.
  /// Blocks other calls on the table meanwhile.
  /// @param pid a registered process.
  /// @return its exit status, or nullopt if the pid is unknown.
  std::optional<exit_status> kill(pid_t pid) {
    const std::lock_guard lock(mutex_);
    auto it = slots_.find(pid);
    if (it == slots_.end()) return std::nullopt;
    child_slot& s = it->second;
    if (!s.entry.status) s.entry.status = s.child.terminate(options_.grace);
    return s.entry.status;
  }

  /// Sends `sig` to a registered, running process.
  /// @param pid a registered process.
  /// @param sig the signal.
  /// @return false if the pid is unknown or the process already exited.
  bool signal(pid_t pid, int sig) {
    const std::lock_guard lock(mutex_);
    auto it = slots_.find(pid);
    return it != slots_.end() && !it->second.entry.status && it->second.child.signal(sig);
  }

  /// Reaps every process that has exited (never blocks).
  /// @return how many were newly found finished.
  std::size_t reap() {
    const std::lock_guard lock(mutex_);
    return reap_locked();
  }

  /// Forgets a finished process.
  /// @param pid a registered process.
  /// @return false if unknown or still running (running ones are kept).
  bool remove(pid_t pid) {
    const std::lock_guard lock(mutex_);
    auto it = slots_.find(pid);
    if (it == slots_.end()) return false;
    reap_one(it->second);
    if (!it->second.entry.status) return false;
    slots_.erase(it);
    return true;
  }

  /// @return how many registered processes are running now.
  [[nodiscard]] std::size_t running() {
    const std::lock_guard lock(mutex_);
    reap_locked();
    return running_locked();
  }

  /// @return the configured limits.
  [[nodiscard]] const process_table_options& options() const noexcept { return options_; }

 private:
  struct child_slot {
    process child;
    process_entry entry;
  };

  static bool reap_one(child_slot& s) {
    if (s.entry.status) return false;
    s.entry.status = s.child.try_wait();
    return s.entry.status.has_value();
  }
  std::size_t reap_locked() {
    std::size_t n = 0;
    for (auto& [pid, s] : slots_) n += reap_one(s) ? 1U : 0U;
    return n;
  }
  std::size_t running_locked() const {
    std::size_t n = 0;
    for (const auto& [pid, s] : slots_) n += s.entry.status ? 0U : 1U;
    return n;
  }

  process_table_options options_;
  std::mutex mutex_;
  std::map<pid_t, child_slot> slots_;
};

}  // namespace ptk
