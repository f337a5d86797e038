/// @file
/// @brief ptk::spawn and ptk::process: start a child process and supervise it.
///
/// Children are started without fork: no copy of the parent's memory, so spawning
/// costs the same from a 10 MiB or a 10 GiB parent. Two backends, picked once per
/// process:
/// - **clone3** (x86-64, Linux 5.9+; the default): clone3(CLONE_VM | CLONE_VFORK |
///   CLONE_PIDFD | CLONE_CLEAR_SIGHAND). Between clone and exec the child runs only
///   raw system calls on data the parent prepared (PATH search included), so it is
///   safe from any number of threads. It is the backend that can set a parent-death
///   signal (command::parent_death_signal), and the pidfd comes with the child.
/// - **posix_spawn** + pidfd_open: used on other architectures, on kernels without
///   clone3, CLONE_CLEAR_SIGHAND or close_range, when a seccomp filter refuses clone3,
///   and when the environment variable PTK_SPAWN_BACKEND is set to posix_spawn
///   (for comparison and troubleshooting). It cannot set a parent-death signal.
///
/// Both report an exec failure to the parent, so ptk::spawn throws it. Each child is
/// tracked by a pidfd (Linux 5.3+): signals cannot hit a recycled pid, and waits with
/// a timeout sleep in poll(2). Where pidfd_open is refused (old kernels, some
/// sandboxes) ptk falls back to the pid and to polling waitpid in timed waits.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/clone_spawn.hpp>
#include <ptk/detail/procfs.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>
#include <ptk/process/command.hpp>
#include <ptk/process/exit_status.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace ptk {

namespace detail {
// Raw system call (pidfd_open is in detail/syscall.hpp): glibc 2.36's <sys/pidfd.h>
// lacks extern "C", so its wrappers cannot be linked from C++.
inline long pidfd_send_signal(int pidfd, int sig) noexcept {
  return ::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0U);
}
}  // namespace detail

/// @brief The parent's end of a pipe to a child's standard stream.
///
/// Reads and writes block; writing to a child that closed its end reports EPIPE as
/// an exception instead of killing the parent with SIGPIPE.
class pipe_end {
 public:
  /// A closed end.
  pipe_end() noexcept = default;
  /// Takes ownership of `fd`.
  /// @param fd the parent's end of the pipe.
  explicit pipe_end(detail::unique_fd fd) noexcept : fd_(std::move(fd)) {}

  /// @return the descriptor, or -1 when closed.
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// @return whether the end is open.
  [[nodiscard]] bool is_open() const noexcept { return fd_.valid(); }
  /// Closes the end (the child sees end-of-file on its stdin).
  void close() noexcept { fd_.reset(); }

  /// Reads what is available, blocking until at least one byte or end-of-file.
  /// @param buf where to store the bytes.
  /// @param size the capacity of `buf`.
  /// @return the number of bytes read; 0 at end-of-file.
  std::size_t read_some(char* buf, std::size_t size) {
    const ssize_t n = detail::retry_on_eintr([&] { return ::read(fd_.get(), buf, size); });
    if (n == -1) throw_last_os_error("read from child pipe");
    return static_cast<std::size_t>(n);
  }

  /// Reads until end-of-file.
  /// @return everything the child wrote.
  std::string read_all() {
    std::string out;
    char buf[65536];
    while (const std::size_t n = read_some(buf, sizeof buf)) out.append(buf, n);
    return out;
  }

  /// Writes all of `data`, blocking as needed.
  /// @param data the bytes to write.
  void write_all(std::string_view data) {
    while (!data.empty()) data.remove_prefix(write_some(data));
  }

  /// Writes as much of `data` as the pipe takes now (at least one byte if blocking).
  /// @param data the bytes to write.
  /// @return how many bytes were written.
  std::size_t write_some(std::string_view data);

 private:
  detail::unique_fd fd_;
};

class process;
class exit_awaitable;
namespace detail {
struct spawn_setup;
// The two ways of starting a child (ptk::spawn picks one); friends of ptk::process.
struct spawner {
  static process with_posix_spawn(spawn_setup& s);
  static std::optional<process> with_clone3(spawn_setup& s);
};
}  // namespace detail
/// @brief Starts `cmd` as a child process.
/// @param cmd what to run and how.
/// @return the running child.
/// @throws std::system_error "spawn 'prog': reason" if it cannot start (missing
///         program, no permission, bad working directory, a limit reached...).
process spawn(const command& cmd);

/// @brief A child process started by ptk::spawn: wait for it, signal it, talk to it.
///
/// Owns the child: destroying a process that has not been waited for kills it
/// (SIGKILL) and reaps it, so no zombie is left; call detach() to let it run on.
/// Not thread-safe: one thread owns a process object.
///
/// @code
/// auto p = ptk::spawn(ptk::command{"sort"}.std_in(ptk::stdio::pipe).std_out(ptk::stdio::pipe));
/// p.std_in().write_all("b\na\n");
/// p.std_in().close();
/// std::string sorted = p.std_out().read_all();   // "a\nb\n"
/// ptk::exit_status s = p.wait();
/// @endcode
class process {
 public:
  /// No process.
  process() noexcept = default;
  /// Takes over `other`'s child.
  /// @param other the process to move from; it becomes empty.
  process(process&& other) noexcept { *this = std::move(other); }
  /// Kills and reaps the current child (if any and unwaited), then takes `other`'s.
  /// @param other the process to move from; it becomes empty.
  /// @return `*this`.
  process& operator=(process&& other) noexcept {
    if (this != &other) {
      abandon();
      pid_ = std::exchange(other.pid_, -1);
      pidfd_ = std::move(other.pidfd_);
      in_ = std::move(other.in_);
      out_ = std::move(other.out_);
      err_ = std::move(other.err_);
      status_ = std::exchange(other.status_, std::nullopt);
      group_leader_ = other.group_leader_;
    }
    return *this;
  }
  process(const process&) = delete;
  process& operator=(const process&) = delete;
  /// Kills (SIGKILL) and reaps the child unless it was waited for or detached.
  ~process() { abandon(); }

  /// @return the child's pid (-1 for an empty process).
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// @return the pidfd tracking the child, or -1 where pidfds are unavailable or
  ///         after the child was reaped.
  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
  /// @return the pipe to the child's stdin (open if spawned with stdio::pipe).
  pipe_end& std_in() noexcept { return in_; }
  /// @return the pipe from the child's stdout (open if spawned with stdio::pipe).
  pipe_end& std_out() noexcept { return out_; }
  /// @return the pipe from the child's stderr (open if spawned with stdio::pipe).
  pipe_end& std_err() noexcept { return err_; }

  /// @return the exit status once the child has been waited for, else nullopt.
  [[nodiscard]] const std::optional<exit_status>& status() const noexcept { return status_; }

  /// Blocks until the child exits and reaps it.
  /// @return how it ended.
  exit_status wait() {
    check_owned();
    if (status_) return *status_;
    return *reap(0);
  }

  /// Reaps the child if it has exited; never blocks.
  /// @return how it ended, or nullopt if it is still running.
  std::optional<exit_status> try_wait() {
    check_owned();
    if (status_) return status_;
    return reap(WNOHANG);
  }

  /// Waits at most `timeout` for the child to exit.
  /// @param timeout how long to wait.
  /// @return how it ended, or nullopt if it still runs.
  template <class Rep, class Period>
  std::optional<exit_status> wait_for(std::chrono::duration<Rep, Period> timeout) {
    return wait_until(std::chrono::steady_clock::now() +
                      std::chrono::ceil<std::chrono::steady_clock::duration>(timeout));
  }

  /// Waits until `deadline` at most for the child to exit.
  /// @param deadline when to give up.
  /// @return how it ended, or nullopt if it still runs.
  std::optional<exit_status> wait_until(std::chrono::steady_clock::time_point deadline) {
    return wait_impl(deadline, -1);
  }

  /// Waits for the child to exit or for stop to be requested on `stop`.
  /// @param stop a token whose stop request ends the wait (the child keeps running).
  /// @return how it ended, or nullopt if the wait was stopped.
  std::optional<exit_status> wait(std::stop_token stop) {
    check_owned();
    if (status_) return status_;
    detail::unique_fd wake(
        detail::check(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd for a stoppable wait"));
    const std::stop_callback on_stop(std::move(stop), [fd = wake.get()] {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
    });
    return wait_impl(std::nullopt, wake.get());
  }

  /// Sends `sig` to the child (through its pidfd: never to a recycled pid).
  /// @param sig the signal, e.g. SIGTERM.
  /// @return false if the child has already exited (nothing was sent).
  bool signal(int sig) {
    check_owned();
    if (status_) return false;
    const long r =
        pidfd_.valid() ? detail::pidfd_send_signal(pidfd_.get(), sig) : ::kill(pid_, sig);
    if (r == 0) return true;
    if (errno == ESRCH) return false;
    throw_last_os_error("signal " + std::to_string(sig) + " to process " + std::to_string(pid_));
  }

  /// Asks the child to stop (SIGTERM), waits up to `grace`, then kills it (SIGKILL).
  /// @param grace how long the child may take to exit cleanly.
  /// @return how it ended.
  exit_status terminate(std::chrono::milliseconds grace = std::chrono::seconds(2)) {
    check_owned();
    if (status_) return *status_;
    signal(SIGTERM);
    if (auto s = wait_for(grace)) return *s;
    signal(SIGKILL);
    return wait();
  }

  /// Sends `sig` to the child and to every process it started, down the whole tree:
  /// to its process group when it leads one (command::new_process_group), else to
  /// its descendants found in /proc (stopped first, so none can fork away meanwhile).
  /// @param sig the signal (default SIGKILL).
  void kill_tree(int sig = SIGKILL);

  /// Waits for the child's exit in a coroutine (a ptk::task), with no thread
  /// blocked: `ptk::exit_status s = co_await p.async_wait();`. See ptk::exit_awaitable.
  /// @return the awaitable.
  [[nodiscard]] exit_awaitable async_wait();

  /// Lets the child run on unsupervised: this object forgets it. The child is not
  /// reaped by ptk; it is reaped by init once this process exits.
  void detach() noexcept {
    pid_ = -1;
    pidfd_.reset();
  }

 private:
  friend struct detail::spawner;

  void check_owned() const {
    if (pid_ <= 0) throw std::logic_error("ptk::process: no child (empty, moved-from or detached)");
  }

  std::optional<exit_status> reap(int options) {
    int raw = 0;
    rusage usage{};
    const pid_t r = detail::retry_on_eintr([&] { return ::wait4(pid_, &raw, options, &usage); });
    if (r == 0) return std::nullopt;
    if (r == -1) throw_last_os_error("wait for process " + std::to_string(pid_));
    status_ = exit_status(raw, usage);
    pidfd_.reset();
    return status_;
  }

  // Waits for exit, a deadline, or `wake_fd` becoming readable, then reaps.
  std::optional<exit_status> wait_impl(
      std::optional<std::chrono::steady_clock::time_point> deadline, int wake_fd) {
    check_owned();
    if (status_) return status_;
    for (auto backoff = std::chrono::milliseconds(1);;) {
      if (auto s = reap(WNOHANG)) return s;
      int timeout_ms = -1;
      if (deadline) {
        const auto left = *deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::steady_clock::duration::zero()) return std::nullopt;
        timeout_ms = static_cast<int>(std::min<std::int64_t>(
            std::chrono::ceil<std::chrono::milliseconds>(left).count(), 1 << 30));
      }
      pollfd fds[2] = {{pidfd_.get(), POLLIN, 0}, {wake_fd, POLLIN, 0}};
      if (!pidfd_.valid()) {  // fallback without pidfd: poll waitpid with backoff
        const int step = static_cast<int>(backoff.count());
        timeout_ms = timeout_ms < 0 ? step : std::min(timeout_ms, step);
        backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
        fds[0].fd = -1;
      }
      const int n = ::poll(fds, 2, timeout_ms);
      if (n == -1 && errno != EINTR) throw_last_os_error("poll process " + std::to_string(pid_));
      if (n > 0 && (fds[1].revents & POLLIN) != 0) return reap(WNOHANG);
    }
  }

  void abandon() noexcept {
    if (pid_ > 0 && !status_) {
      try {
        signal(SIGKILL);
        wait();
      } catch (...) {  // already reaped by someone else: nothing left to clean
      }
    }
    pid_ = -1;
  }

  pid_t pid_ = -1;
  detail::unique_fd pidfd_;
  pipe_end in_;
  pipe_end out_;
  pipe_end err_;
  std::optional<exit_status> status_;
  bool group_leader_ = false;
};

namespace detail {

// RAII for the posix_spawn structures.
struct spawn_actions {
  posix_spawn_file_actions_t fa{};
  spawn_actions() { ::posix_spawn_file_actions_init(&fa); }
  ~spawn_actions() { ::posix_spawn_file_actions_destroy(&fa); }
  spawn_actions(const spawn_actions&) = delete;
  spawn_actions& operator=(const spawn_actions&) = delete;
};
struct spawn_attributes {
  posix_spawnattr_t attr{};
  spawn_attributes() { ::posix_spawnattr_init(&attr); }
  ~spawn_attributes() { ::posix_spawnattr_destroy(&attr); }
  spawn_attributes(const spawn_attributes&) = delete;
  spawn_attributes& operator=(const spawn_attributes&) = delete;
};

inline void check_spawn_call(int r, const char* what) {
  if (r != 0) throw_os_error(r, what);
}

// The environment for the child: the parent's (unless cleared) with the changes.
inline std::vector<std::string> child_environment(const command& cmd) {
  std::map<std::string, std::string> vars;
  if (cmd.inherits_environment()) {
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
      const std::string_view kv(*e);
      const auto eq = kv.find('=');
      if (eq == std::string_view::npos) continue;
      vars.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
  }
  for (const auto& [key, value] : cmd.environment_changes()) {
    if (value) {
      vars[key] = *value;
    } else {
      vars.erase(key);
    }
  }
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (const auto& [key, value] : vars) out.push_back(key + "=" + value);
  return out;
}

// pids of every descendant of `root`, parents before children, from /proc.
inline std::vector<pid_t> descendants(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  if (DIR* dir = ::opendir("/proc")) {
    while (const dirent* e = ::readdir(dir)) {
      pid_t pid = 0;
      if (!parse_number(std::string_view(e->d_name), pid)) continue;
      std::string stat;
      try {
        stat = read_proc_file("/proc/" + std::string(e->d_name) + "/stat", "read stat");
      } catch (const std::system_error&) {
        continue;  // exited meanwhile
      }
      stat_fields f;
      pid_t ppid = 0;
      if (f.parse(stat) && f.number(4, ppid)) children.emplace(ppid, pid);
    }
    ::closedir(dir);
  }
  std::vector<pid_t> out;
  std::vector<pid_t> frontier{root};
  while (!frontier.empty()) {
    const pid_t p = frontier.back();
    frontier.pop_back();
    auto [lo, hi] = children.equal_range(p);
    for (auto it = lo; it != hi; ++it) {
      out.push_back(it->second);
      frontier.push_back(it->second);
    }
  }
  return out;
}

// Blocks SIGPIPE in this thread while alive; a SIGPIPE raised meanwhile is consumed.
class sigpipe_guard {
 public:
  sigpipe_guard() noexcept {
    sigset_t pipe_only;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old_);
  }
  ~sigpipe_guard() {
    if (!was_pending_) {
      sigset_t pipe_only;
      sigemptyset(&pipe_only);
      sigaddset(&pipe_only, SIGPIPE);
      const timespec zero{0, 0};
      while (::sigtimedwait(&pipe_only, nullptr, &zero) == SIGPIPE) {
      }
    }
    ::pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  sigpipe_guard(const sigpipe_guard&) = delete;
  sigpipe_guard& operator=(const sigpipe_guard&) = delete;

 private:
  sigset_t old_{};
  bool was_pending_ = false;
};

}  // namespace detail

inline std::size_t pipe_end::write_some(std::string_view data) {
  const detail::sigpipe_guard guard;
  const ssize_t n =
      detail::retry_on_eintr([&] { return ::write(fd_.get(), data.data(), data.size()); });
  if (n == -1) {
    if (errno == EAGAIN) return 0;
    throw_last_os_error("write to child pipe");
  }
  return static_cast<std::size_t>(n);
}

inline void process::kill_tree(int sig) {
  check_owned();
  if (status_) return;
  if (group_leader_) {
    if (::kill(-pid_, sig) == -1 && errno != ESRCH) {
      throw_last_os_error("kill process group " + std::to_string(pid_));
    }
    return;
  }
  // Freeze the tree top-down until no new descendant appears, then signal it.
  std::vector<pid_t> tree;
  for (;;) {
    signal(SIGSTOP);
    std::vector<pid_t> now = detail::descendants(pid_);
    for (pid_t p : now) ::kill(p, SIGSTOP);
    if (now == tree) break;
    tree = std::move(now);
  }
  for (auto it = tree.rbegin(); it != tree.rend(); ++it) {
    ::kill(*it, sig);
    if (sig != SIGKILL) ::kill(*it, SIGCONT);
  }
  signal(sig);
  if (sig != SIGKILL) signal(SIGCONT);
}

namespace detail {

// What both backends need, prepared in the parent before anything is started.
struct spawn_setup {
  explicit spawn_setup(const command& c) : cmd(c), what("spawn '" + c.program() + "'") {
    // Descriptors the child receives must sit above every target number, so that no
    // dup2 in the child overwrites a source still to be copied.
    for (const auto& [from, to] : cmd.passed_fds()) {
      if (to < 3) throw std::invalid_argument(what + ": pass_fd target must be 3 or more");
      floor = std::max(floor, to + 1);
    }
    if (cmd.stdin_mode() == stdio::to_stdout || cmd.stdout_mode() == stdio::to_stdout) {
      throw std::invalid_argument(what + ": stdio::to_stdout is for stderr only");
    }
    argv.push_back(const_cast<char*>(cmd.program().c_str()));  // execve does not write
    for (const auto& a : cmd.arguments()) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    if (cmd.inherits_environment() && cmd.environment_changes().empty()) {
      envp = environ;  // the common case: no copy at all
    } else {
      env = child_environment(cmd);
      for (auto& e : env) env_pointers.push_back(e.data());
      env_pointers.push_back(nullptr);
      envp = env_pointers.data();
    }
  }

  // `fd` itself if it is above every target, else a close-on-exec copy that is.
  int above_floor(int fd) {
    if (fd >= floor) return fd;
    keep_alive.emplace_back(
        check(::fcntl(fd, F_DUPFD_CLOEXEC, floor), "copy descriptor for the child"));
    return keep_alive.back().get();
  }

  // For stdio::pipe: makes the pipe, gives the parent its end, returns the child's.
  int pipe_for(int target, pipe_end& parent_end) {
    auto p = make_pipe();
    unique_fd& child_side = target == 0 ? p.first : p.second;
    parent_end = pipe_end(std::move(target == 0 ? p.second : p.first));
    keep_alive.push_back(std::move(child_side));
    return above_floor(keep_alive.back().get());
  }

  static int open_flags(file_mode how) noexcept {
    return how == file_mode::read       ? O_RDONLY
           : how == file_mode::truncate ? O_WRONLY | O_CREAT | O_TRUNC
                                        : O_WRONLY | O_CREAT | O_APPEND;
  }

  const command& cmd;
  std::string what;
  int floor = 3;
  std::vector<unique_fd> keep_alive;  // parent-side copies, closed after the spawn
  std::vector<char*> argv;
  std::vector<std::string> env;
  std::vector<char*> env_pointers;
  char* const* envp = nullptr;
};

// The PATH candidates for `program`, in order, as execvp would try them (the
// parent's PATH, /bin:/usr/bin when unset; an empty entry is the working directory).
inline std::vector<std::string> exec_candidates(const std::string& program) {
  if (program.find('/') != std::string::npos) return {program};
  std::vector<std::string> out;
  if (program.empty()) return out;
  const char* path = std::getenv("PATH");
  std::string_view rest = path != nullptr ? path : "/bin:/usr/bin";
  for (;;) {
    const auto colon = rest.find(':');
    const std::string_view dir = rest.substr(0, colon);
    out.push_back(dir.empty() ? program : std::string(dir) + "/" + program);
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  return out;
}

}  // namespace detail

// Starts children with posix_spawn: the fallback where clone3 is not available.
inline process detail::spawner::with_posix_spawn(spawn_setup& s) {
  const command& cmd = s.cmd;
  const std::string& what = s.what;
  if (cmd.death_signal() != 0) {
    throw_os_error(ENOSYS, what +
                               ": a parent-death signal needs the clone3 backend "
                               "(x86-64, Linux 5.9+)");
  }
  detail::spawn_actions actions;
  detail::spawn_attributes attributes;
  process child;
  auto& fa = actions.fa;
  const auto connect = [&](const stdio_target& how, int target, pipe_end& parent_end) {
    switch (how.mode) {
      case stdio::inherit:
        break;
      case stdio::null:
        detail::check_spawn_call(
            ::posix_spawn_file_actions_addopen(&fa, target, "/dev/null",
                                               target == 0 ? O_RDONLY : O_WRONLY, 0),
            "spawn: /dev/null action");
        break;
      case stdio::pipe:
        detail::check_spawn_call(
            ::posix_spawn_file_actions_adddup2(&fa, s.pipe_for(target, parent_end), target),
            "spawn: dup2 action");
        break;
      case stdio::to_stdout:
        // Runs after stdout's own action, so stderr follows stdout wherever it goes.
        detail::check_spawn_call(::posix_spawn_file_actions_adddup2(&fa, 1, 2),
                                 "spawn: dup2 action");
        break;
      case stdio::file:
        detail::check_spawn_call(
            ::posix_spawn_file_actions_addopen(&fa, target, how.path.c_str(),
                                               spawn_setup::open_flags(how.how), 0644),
            "spawn: open action");
        break;
      case stdio::fd:
        detail::check_spawn_call(
            ::posix_spawn_file_actions_adddup2(&fa, s.above_floor(how.fd), target),
            "spawn: dup2 action");
        break;
    }
  };
  connect(cmd.stdin_mode(), 0, child.in_);
  connect(cmd.stdout_mode(), 1, child.out_);
  connect(cmd.stderr_mode(), 2, child.err_);
  for (const auto& [from, to] : cmd.passed_fds()) {
    detail::check_spawn_call(::posix_spawn_file_actions_adddup2(&fa, s.above_floor(from), to),
                             "spawn: dup2 action");
  }
  // Nothing else crosses: every descriptor above the passed ones is closed, even
  // one some other code opened without O_CLOEXEC, and so is every one in the gaps
  // below them (closing a descriptor that is not open is not an error here).
  for (int fd = 3; fd < s.floor; ++fd) {
    const auto& passed = cmd.passed_fds();
    if (std::none_of(passed.begin(), passed.end(),
                     [fd](const auto& p) { return p.second == fd; })) {
      detail::check_spawn_call(::posix_spawn_file_actions_addclose(&fa, fd), "spawn: close action");
    }
  }
  detail::check_spawn_call(::posix_spawn_file_actions_addclosefrom_np(&fa, s.floor),
                           "spawn: closefrom action");
  if (cmd.working_directory()) {
    detail::check_spawn_call(
        ::posix_spawn_file_actions_addchdir_np(&fa, cmd.working_directory()->c_str()),
        "spawn: chdir action");
  }

  // The child starts with no blocked signal and default dispositions, whatever the
  // spawning thread had (a pool worker, an asio thread blocking SIGINT...).
  auto& attr = attributes.attr;
  sigset_t none;
  sigset_t all;
  sigemptyset(&none);
  sigfillset(&all);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &all);
  if (cmd.starts_session()) flags = static_cast<short>(flags | POSIX_SPAWN_SETSID);
  if (cmd.starts_process_group() && !cmd.starts_session()) {
    flags = static_cast<short>(flags | POSIX_SPAWN_SETPGROUP);
    ::posix_spawnattr_setpgroup(&attr, 0);
  }
  ::posix_spawnattr_setflags(&attr, flags);

  pid_t pid = -1;
  const bool search_path = cmd.program().find('/') == std::string::npos;
  const int r = search_path
                    ? ::posix_spawnp(&pid, cmd.program().c_str(), &fa, &attr, s.argv.data(), s.envp)
                    : ::posix_spawn(&pid, cmd.program().c_str(), &fa, &attr, s.argv.data(), s.envp);
  if (r != 0) {
    // posix_spawn reports a failed chdir and a failed exec alike; name the directory
    // when it is the culprit.
    if (cmd.working_directory() && ::access(cmd.working_directory()->c_str(), X_OK) == -1) {
      throw_os_error(r, what + " in '" + *cmd.working_directory() + "'");
    }
    for (const stdio_target* t : {&cmd.stdin_mode(), &cmd.stdout_mode(), &cmd.stderr_mode()}) {
      if (t->mode == stdio::file && t->how == file_mode::read &&
          ::access(t->path.c_str(), R_OK) == -1) {
        throw_os_error(r, what + " with input file '" + t->path + "'");
      }
    }
    throw_os_error(r, what);
  }
  child.pid_ = pid;
  child.group_leader_ = cmd.starts_process_group() || cmd.starts_session();
  const int pidfd = detail::pidfd_open(pid);  // pidfds are always close-on-exec
  if (pidfd >= 0) child.pidfd_.reset(pidfd);  // else: documented fallback to the pid
  return child;
}

#if PTK_HAVE_CLONE_SPAWN
// Starts children with clone3 (see detail/clone_spawn.hpp); nullopt when the kernel
// turns clone3 down, after which every spawn uses posix_spawn.
inline std::optional<process> detail::spawner::with_clone3(spawn_setup& s) {
  const command& cmd = s.cmd;
  const std::string& what = s.what;
  process child;
  std::vector<fd_move> moves;
  moves.reserve(3 + cmd.passed_fds().size());
  // Files are opened here, in the parent, so a failure names the file.
  const auto open_for = [&](const std::string& path, int flags, const char* role) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC, 0644);
    if (fd == -1) throw_last_os_error(what + " with " + role + " file '" + path + "'");
    s.keep_alive.emplace_back(fd);
    return s.above_floor(fd);
  };
  const auto connect = [&](const stdio_target& how, int target, pipe_end& parent_end) {
    switch (how.mode) {
      case stdio::inherit:
        break;
      case stdio::null:
        moves.push_back({open_for("/dev/null", target == 0 ? O_RDONLY : O_WRONLY, "null"), target});
        break;
      case stdio::pipe:
        moves.push_back({s.pipe_for(target, parent_end), target});
        break;
      case stdio::to_stdout:
        moves.push_back({1, 2});  // after stdout's own move: stderr follows it
        break;
      case stdio::file:
        moves.push_back({open_for(how.path, spawn_setup::open_flags(how.how),
                                  how.how == file_mode::read ? "input" : "output"),
                         target});
        break;
      case stdio::fd:
        moves.push_back({s.above_floor(how.fd), target});
        break;
    }
  };
  connect(cmd.stdin_mode(), 0, child.in_);
  connect(cmd.stdout_mode(), 1, child.out_);
  connect(cmd.stderr_mode(), 2, child.err_);
  std::vector<int> keep;
  for (const auto& [from, to] : cmd.passed_fds()) {
    moves.push_back({s.above_floor(from), to});
    keep.push_back(to);
  }
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());

  const std::vector<std::string> paths = exec_candidates(cmd.program());
  std::vector<const char*> path_pointers;
  path_pointers.reserve(paths.size());
  for (const auto& p : paths) path_pointers.push_back(p.c_str());

  child_plan plan;
  plan.moves = moves.data();
  plan.move_count = static_cast<int>(moves.size());
  plan.keep = keep.data();
  plan.keep_count = static_cast<int>(keep.size());
  plan.cwd = cmd.working_directory() ? cmd.working_directory()->c_str() : nullptr;
  plan.exec_paths = path_pointers.data();
  plan.exec_path_count = static_cast<int>(path_pointers.size());
  plan.argv = s.argv.data();
  plan.envp = s.envp;
  plan.new_session = cmd.starts_session();
  plan.new_group = cmd.starts_process_group();
  plan.death_signal = cmd.death_signal();
  plan.expected_parent = ::getpid();
  plan.ignored_signals = ignored_signals();

  int pidfd = -1;
  const long pid = clone_spawn(plan, pidfd);
  if (pid == -ENOSYS || pid == -EINVAL || pid == -EPERM) {
    // No clone3, or no CLONE_CLEAR_SIGHAND (before 5.5), or a seccomp filter that
    // refuses clone3 (some container runtimes): posix_spawn from now on.
    spawn_backend_state().store(spawn_backend_kind::posix_spawn, std::memory_order_relaxed);
    return std::nullopt;
  }
  if (pid < 0) throw_os_error(static_cast<int>(-pid), what);
  unique_fd owned_pidfd(pidfd);
  if (plan.failed != child_step::none) {
    // The child exited before exec; it is a zombie by now (CLONE_VFORK): reap it.
    int raw = 0;
    retry_on_eintr([&] { return ::waitpid(static_cast<pid_t>(pid), &raw, 0); });
    const int err = plan.error;
    switch (plan.failed) {
      case child_step::chdir:
        throw_os_error(err, what + " in '" + *cmd.working_directory() + "'");
      case child_step::descriptors:
        throw_os_error(err, what + ": set up the child's descriptors");
      case child_step::session:
        throw_os_error(err, what + ": start a new session or process group");
      case child_step::death_signal:
        throw_os_error(err, what + ": set the parent-death signal");
      case child_step::signals:
        throw_os_error(err, what + ": reset the child's signals");
      case child_step::exec:
      case child_step::none:
        break;
    }
    throw_os_error(err, what);
  }
  child.pid_ = static_cast<pid_t>(pid);
  child.pidfd_ = std::move(owned_pidfd);
  child.group_leader_ = cmd.starts_process_group() || cmd.starts_session();
  return child;
}
#endif

inline process spawn(const command& cmd) {
  detail::spawn_setup setup(cmd);
#if PTK_HAVE_CLONE_SPAWN
  if (detail::spawn_backend() == detail::spawn_backend_kind::clone3) {
    if (auto child = detail::spawner::with_clone3(setup)) return std::move(*child);
  }
#endif
  return detail::spawner::with_posix_spawn(setup);
}

}  // namespace ptk

// process::async_wait() is defined with its awaitable.
#include <ptk/process/async_wait.hpp>
