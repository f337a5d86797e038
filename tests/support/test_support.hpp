// Helpers shared by ptk's tests: real descriptors, real processes, no sleeps.
#pragma once

#include <ptk/detail/syscall.hpp>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace ptk::test {

/// How many descriptors this process has open (entries of /proc/self/fd, minus the
/// one opendir itself holds while reading).
inline int open_fd_count() {
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) throw std::runtime_error("cannot open /proc/self/fd");
  int n = 0;
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(dir);
  return n - 1;
}

/// The scheduler state letter (R, S, D, ...) of thread `tid` of this process.
inline char thread_state(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/stat";
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd == -1) return '?';
  char buf[512];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return '?';
  const std::string_view stat(buf, static_cast<std::size_t>(n));
  const auto close_paren = stat.rfind(')');  // the name may itself contain ')'
  if (close_paren == std::string_view::npos || close_paren + 2 >= stat.size()) return '?';
  return stat[close_paren + 2];
}

/// Polls (yielding, never sleeping) until `pred()` holds; false if `limit` passes first.
/// This is bounded polling on an observable kernel fact, not a sleep that hopes.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::yield();
  }
  return true;
}

/// This thread's kernel thread id.
inline pid_t current_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

/// This process's threads as (kernel tid, name) pairs, from /proc/self/task/*/comm.
inline std::vector<std::pair<pid_t, std::string>> threads_of_this_process() {
  std::vector<std::pair<pid_t, std::string>> out;
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) throw std::runtime_error("cannot open /proc/self/task");
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const std::string path = std::string("/proc/self/task/") + e->d_name + "/comm";
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd == -1) continue;  // the thread exited meanwhile
    char buf[32] = {};
    const ssize_t n = ::read(fd, buf, sizeof buf - 1);
    ::close(fd);
    std::string name(buf, n > 0 ? static_cast<std::size_t>(n) : 0);
    while (!name.empty() && name.back() == '\n') name.pop_back();
    out.emplace_back(static_cast<pid_t>(std::stoi(e->d_name)), name);
  }
  ::closedir(dir);
  return out;
}

/// Kernel tids of this process's threads whose name starts with `prefix`.
inline std::vector<pid_t> threads_named(const std::string& prefix) {
  std::vector<pid_t> tids;
  for (const auto& [tid, name] : threads_of_this_process()) {
    if (name.rfind(prefix, 0) == 0) tids.push_back(tid);
  }
  return tids;
}

/// How a forked child ended and what it wrote to stderr.
struct child_outcome {
  int status = 0;  ///< the raw wait status
  std::string stderr_text;
};

/// Runs `body` in a forked child (stderr captured, SIGABRT at its default action so
/// the test framework's handler does not report it) and returns how it ended. For
/// checking code that must terminate the process.
template <class F>
child_outcome in_forked_child(F body) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  const pid_t child = ::fork();
  if (child == -1) throw std::runtime_error("fork failed");
  if (child == 0) {
    ::signal(SIGABRT, SIG_DFL);
    ::dup2(fds[1], STDERR_FILENO);
    body();
    ::_exit(0);
  }
  ::close(fds[1]);
  child_outcome out;
  char buf[256];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0)
    out.stderr_text.append(buf, static_cast<std::size_t>(n));
  ::close(fds[0]);
  ::waitpid(child, &out.status, 0);
  return out;
}

/// Waits for child `pid` and returns its exit code; -1 if it did not exit normally.
inline int wait_exit_code(pid_t pid) {
  int status = 0;
  if (ptk::detail::retry_on_eintr([&] { return ::waitpid(pid, &status, 0); }) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/// Installs a SIGUSR1 handler *without* SA_RESTART while alive, so blocking calls in
/// a thread sent SIGUSR1 really fail with EINTR; restores the previous disposition.
class interrupting_handler {
 public:
  interrupting_handler() {
    struct sigaction sa {};
    sa.sa_handler = &interrupting_handler::on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ::sigaction(SIGUSR1, &sa, &previous_);
  }
  ~interrupting_handler() { ::sigaction(SIGUSR1, &previous_, nullptr); }
  interrupting_handler(const interrupting_handler&) = delete;
  interrupting_handler& operator=(const interrupting_handler&) = delete;

  /// How many SIGUSR1 this process has handled so far.
  static int count() { return counter().load(); }

 private:
  static std::atomic<int>& counter() {
    static std::atomic<int> n{0};
    return n;
  }
  static void on_signal(int) { counter().fetch_add(1, std::memory_order_relaxed); }
  struct sigaction previous_ {};
};

}  // namespace ptk::test
