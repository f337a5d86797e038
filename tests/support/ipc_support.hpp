// Helpers for the IPC tests: unique segment names, forked peers, and telling that
// a thread really sleeps in the kernel.
#pragma once

#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>
#include <string_view>

namespace ptk::test {

/// A segment name unique to this process and test, unlinked when it goes out of
/// scope (in case the code under test failed to).
class shm_name {
 public:
  shm_name() {
    static std::atomic<int> counter{0};
    name_ = "ptk-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
    path_ = "/" + name_;
  }
  shm_name(const shm_name&) = delete;
  shm_name& operator=(const shm_name&) = delete;
  ~shm_name() { ::shm_unlink(path_.c_str()); }
  operator std::string_view() const noexcept { return name_; }  // NOLINT
  const std::string& str() const noexcept { return name_; }
  /// "/name", for shm_open.
  const char* c_str() const noexcept { return path_.c_str(); }

 private:
  std::string name_;
  std::string path_;
};

/// Whether /dev/shm holds `name`.
inline bool shm_exists(const shm_name& name) {
  struct stat st {};
  return ::stat(("/dev/shm/" + name.str()).c_str(), &st) == 0;
}

/// Forks a child that runs `body` (returning its exit code; an exception is 99) and
/// leaves with _exit, so no test-framework state runs twice.
template <class F>
pid_t fork_child(F body) {
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
    } catch (...) {
    }
    ::_exit(code);
  }
  return pid;
}

/// The calling thread's id.
inline pid_t gettid_now() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

/// Whether thread `tid` of this process is asleep in a futex wait.
inline bool sleeping_in_futex(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/wchan");
  std::string w;
  std::getline(f, w);
  return w.find("futex") != std::string::npos;
}

}  // namespace ptk::test
