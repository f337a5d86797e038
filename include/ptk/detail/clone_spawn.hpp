// Internal: starting a child with clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD), the
// way ptk::spawn starts children where it can (x86-64, Linux 5.9+).
//
// Why not only posix_spawn: posix_spawn cannot set a parent-death signal, and glibc's
// child walks every signal (64 rt_sigaction calls) to reset handlers, where clone3's
// CLONE_CLEAR_SIGHAND does it in the kernel for free.
//
// The child shares the parent's memory (CLONE_VM) and runs on a small stack of its
// own while the parent thread is suspended (CLONE_VFORK) until the child calls execve
// or exits. So the child must not allocate, take a lock, touch errno or any other
// thread-local, or call into the C library (sanitizer interceptors live there): it
// reads a child_plan that the parent filled in beforehand, makes raw system calls
// through inline assembly, and reports a failure by writing the errno into the plan
// (the parent reads it once clone3 returns, which happens only after the child has
// exec'd or exited). Everything the child needs, down to the PATH candidates for
// execve, is prepared by the parent.
#pragma once

#include <ptk/config.hpp>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#define PTK_HAVE_CLONE_SPAWN 1
#else
#define PTK_HAVE_CLONE_SPAWN 0
#endif

// The child function must not be instrumented: a sanitizer's bookkeeping would run
// on the child's stack but write into the parent thread's shared state. (Clang 14
// knows disable_sanitizer_instrumentation but still instruments for ASan and UBSan
// under it, so the sanitizers are also named one by one.)
#if defined(__clang__) && __has_attribute(disable_sanitizer_instrumentation)
#define PTK_CHILD_CODE                                                                             \
  __attribute__((no_sanitize("address", "thread", "undefined"), disable_sanitizer_instrumentation, \
                 noinline, no_stack_protector))
#else
#define PTK_CHILD_CODE \
  __attribute__((no_sanitize("address", "thread", "undefined"), noinline, no_stack_protector))
#endif

namespace ptk::detail {

#if PTK_HAVE_CLONE_SPAWN

// System call numbers and flags, spelled here so that no kernel header (whose macros
// collide with glibc's) is needed.
inline constexpr long sys_clone3 = 435;
inline constexpr long sys_close_range = 436;
inline constexpr std::uint64_t clone_vm = 0x00000100;
inline constexpr std::uint64_t clone_pidfd = 0x00001000;
inline constexpr std::uint64_t clone_vfork = 0x00004000;
inline constexpr std::uint64_t clone_clear_sighand = 0x100000000ULL;  // Linux 5.5

// struct clone_args, version 0 (Linux 5.3): the fields clone3 reads.
struct clone3_args {
  std::uint64_t flags;
  std::uint64_t pidfd;
  std::uint64_t child_tid;
  std::uint64_t parent_tid;
  std::uint64_t exit_signal;
  std::uint64_t stack;
  std::uint64_t stack_size;
  std::uint64_t tls;
};
static_assert(sizeof(clone3_args) == 64, "CLONE_ARGS_SIZE_VER0");

// The kernel's struct sigaction for rt_sigaction on x86-64 (not glibc's).
struct kernel_sigaction {
  std::uintptr_t handler;
  unsigned long flags;
  std::uintptr_t restorer;
  std::uint64_t mask;
};
static_assert(sizeof(kernel_sigaction) == 32);
inline constexpr unsigned long kernel_sigset_size = 8;

// A system call with no C library involved: returns the result, or -errno.
[[gnu::always_inline]] inline long raw_syscall(long n, long a1 = 0, long a2 = 0, long a3 = 0,
                                               long a4 = 0) noexcept {
  long ret;
  register long r10 __asm__("r10") = a4;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "0"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10)
                   : "rcx", "r11", "memory", "cc");
  return ret;
}

// clone3 that runs fn(arg) in the child on the stack described by `args`, and exits
// the child with 127 should fn ever return. In the parent it returns the child's pid
// or -errno. Written in assembly because the child starts on a stack with no frame
// to return to: it must call fn before executing any compiler-generated code.
[[gnu::always_inline]] inline long clone3_call(clone3_args* args, void (*fn)(void*),
                                               void* arg) noexcept {
  long ret;
  __asm__ volatile(
      "syscall\n\t"
      "test %%rax, %%rax\n\t"
      "jnz 1f\n\t"
      // The child: an outermost frame, the ABI's stack alignment, then fn(arg).
      "xor %%ebp, %%ebp\n\t"
      "and $-16, %%rsp\n\t"
      "mov %[arg], %%rdi\n\t"
      "call *%[fn]\n\t"
      "mov $231, %%eax\n\t"  // exit_group(127)
      "mov $127, %%edi\n\t"
      "syscall\n\t"
      "hlt\n"
      "1:"
      : "=a"(ret)
      : "0"(sys_clone3), "D"(args), "S"(sizeof(clone3_args)), [fn] "r"(fn), [arg] "r"(arg)
      : "rcx", "r11", "memory", "cc");
  return ret;
}

// One dup2 the child performs: `from` (above every target) becomes `to`.
struct fd_move {
  int from;
  int to;
};

// The steps of the child, named so the parent can say which one failed.
enum class child_step : int { none, signals, session, death_signal, descriptors, chdir, exec };

// Everything the child does, prepared by the parent. The child only reads it, except
// for the two result fields.
struct child_plan {
  const fd_move* moves = nullptr;  // dup2s, in order
  int move_count = 0;
  const int* keep = nullptr;  // descriptors above 2 that stay open, ascending
  int keep_count = 0;
  const char* cwd = nullptr;
  const char* const* exec_paths = nullptr;  // candidates in PATH order
  int exec_path_count = 0;
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  bool new_session = false;
  bool new_group = false;
  int death_signal = 0;
  pid_t expected_parent = 0;
  std::uint64_t ignored_signals = 0;            // bit (sig - 1): reset from SIG_IGN to SIG_DFL
  kernel_sigaction default_action{0, 0, 0, 0};  // SIG_DFL, for those resets
  std::uint64_t empty_mask = 0;                 // the child's final signal mask

  // Written by the child before it exits, read by the parent after clone3 returns.
  volatile int error = 0;
  volatile child_step failed = child_step::none;
};

// Whether an execve error means "try the next PATH entry", as execvp decides.
[[gnu::always_inline]] inline bool try_next_path(long err) noexcept {
  return err == ENOENT || err == ENOTDIR || err == EACCES || err == ESTALE || err == ENODEV ||
         err == ETIMEDOUT || err == ELOOP || err == ENAMETOOLONG;
}

// The child, between clone3 and execve. Async-signal-safe by construction: raw
// system calls and reads of the plan, nothing else (no lambda or helper that is not
// inlined: it would be compiled with the sanitizers' instrumentation).
[[noreturn]] PTK_CHILD_CODE inline void clone_child_main(void* p) noexcept {
  auto* plan = static_cast<child_plan*>(p);
  long r = 0;
  long err = 0;
  bool denied = false;
  child_step step = child_step::signals;

  // Handlers are already SIG_DFL (CLONE_CLEAR_SIGHAND); signals the parent ignores
  // are reset too, so the child starts from default dispositions.
  for (int sig = 1; sig <= 64 && plan->ignored_signals != 0; ++sig) {
    if (((plan->ignored_signals >> (sig - 1)) & 1U) == 0) continue;
    r = raw_syscall(SYS_rt_sigaction, sig, reinterpret_cast<long>(&plan->default_action), 0,
                    static_cast<long>(kernel_sigset_size));
    if (r < 0) goto failed;
  }

  step = child_step::session;
  if (plan->new_session) {
    r = raw_syscall(SYS_setsid);
    if (r < 0) goto failed;
  } else if (plan->new_group) {
    r = raw_syscall(SYS_setpgid, 0, 0);
    if (r < 0) goto failed;
  }

  step = child_step::death_signal;
  if (plan->death_signal != 0) {
    r = raw_syscall(SYS_prctl, PR_SET_PDEATHSIG, plan->death_signal);
    if (r < 0) goto failed;
    // The parent may have died before prctl took effect: then no signal will come,
    // so the child sends it to itself (delivered once the mask is lifted below).
    if (raw_syscall(SYS_getppid) != plan->expected_parent) {
      raw_syscall(SYS_kill, raw_syscall(SYS_getpid), plan->death_signal);
    }
  }

  step = child_step::descriptors;
  for (int i = 0; i < plan->move_count; ++i) {
    r = raw_syscall(SYS_dup2, plan->moves[i].from, plan->moves[i].to);
    if (r < 0) goto failed;
  }
  // Close everything above 2 except the descriptors passed on: the gaps between them,
  // then all above the last. close_range's cost does not grow with RLIMIT_NOFILE.
  {
    long low = 3;
    for (int i = 0; i < plan->keep_count; ++i) {
      const long k = plan->keep[i];
      if (k > low) raw_syscall(sys_close_range, low, k - 1, 0);
      low = k + 1;
    }
    r = raw_syscall(sys_close_range, low, ~0U, 0);
    if (r < 0) goto failed;
  }

  step = child_step::chdir;
  if (plan->cwd != nullptr) {
    r = raw_syscall(SYS_chdir, reinterpret_cast<long>(plan->cwd));
    if (r < 0) goto failed;
  }

  // The parent blocked every signal around clone3; the program starts with none blocked.
  step = child_step::signals;
  r = raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&plan->empty_mask), 0,
                  static_cast<long>(kernel_sigset_size));
  if (r < 0) goto failed;

  step = child_step::exec;
  r = -ENOENT;
  for (int i = 0; i < plan->exec_path_count; ++i) {
    r = raw_syscall(SYS_execve, reinterpret_cast<long>(plan->exec_paths[i]),
                    reinterpret_cast<long>(plan->argv), reinterpret_cast<long>(plan->envp));
    if (r == -EACCES) denied = true;
    if (!try_next_path(-r)) break;
  }
  // Like execvp: a program found but not executable is reported as such, even when a
  // later PATH entry simply did not have it.
  if (denied && try_next_path(-r)) r = -EACCES;

failed:
  err = -r;
  plan->error = static_cast<int>(err);
  plan->failed = step;
  raw_syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

// Whether this kernel has everything the clone path needs: clone3 with
// CLONE_CLEAR_SIGHAND (5.5) and close_range (5.9). clone3 itself is probed by the
// first spawn (it fails with ENOSYS or EINVAL before creating anything).
inline bool kernel_has_close_range() noexcept {
  // close_range(1, 0) is invalid (first > last): EINVAL where it exists.
  static const bool have = raw_syscall(sys_close_range, 1, 0, 0) == -EINVAL;
  return have;
}

// Bits (sig - 1) of the signals whose disposition is SIG_IGN in this process.
inline std::uint64_t ignored_signals() noexcept {
  std::uint64_t bits = 0;
  for (int sig = 1; sig <= 64; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    kernel_sigaction old{};
    if (raw_syscall(SYS_rt_sigaction, sig, 0, reinterpret_cast<long>(&old),
                    static_cast<long>(kernel_sigset_size)) == 0 &&
        old.handler == 1) {  // SIG_IGN
      bits |= std::uint64_t{1} << (sig - 1);
    }
  }
  return bits;
}

// Stack for the child: it only makes system calls, so a few pages are plenty. It lives
// in the parent's frame, which is idle while the child runs (CLONE_VFORK).
inline constexpr std::size_t child_stack_size = 16 * 1024;

// Starts the child described by `plan`. Returns the pid (and stores the pidfd), or
// -errno; the caller checks plan.error for a failure inside the child.
inline long clone_spawn(child_plan& plan, int& pidfd) noexcept {
  alignas(64) unsigned char stack[child_stack_size];
  int fd = -1;
  clone3_args args{};
  args.flags = clone_vm | clone_vfork | clone_pidfd | clone_clear_sighand;
  args.pidfd = reinterpret_cast<std::uintptr_t>(&fd);
  args.exit_signal = SIGCHLD;
  args.stack = reinterpret_cast<std::uintptr_t>(stack);
  args.stack_size = sizeof stack;

  // No signal handler may run in the child (it would run the parent's code on the
  // parent's memory): block everything, internal glibc signals included, until the
  // child has exec'd. The raw call blocks what pthread_sigmask refuses to.
  const std::uint64_t all = ~std::uint64_t{0};
  std::uint64_t old = 0;
  raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&all),
              reinterpret_cast<long>(&old), static_cast<long>(kernel_sigset_size));
  const long pid = clone3_call(&args, &clone_child_main, &plan);
  raw_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&old), 0,
              static_cast<long>(kernel_sigset_size));
  pidfd = fd;
  return pid;
}

#endif  // PTK_HAVE_CLONE_SPAWN

// Which way ptk::spawn starts children. PTK_SPAWN_BACKEND=posix_spawn in the
// environment forces the fallback (for comparison and troubleshooting).
enum class spawn_backend_kind : int { clone3, posix_spawn };

inline std::atomic<spawn_backend_kind>& spawn_backend_state() noexcept {
  static std::atomic<spawn_backend_kind> state{[] {
#if PTK_HAVE_CLONE_SPAWN
    const char* forced = std::getenv("PTK_SPAWN_BACKEND");
    if (forced != nullptr && std::strcmp(forced, "posix_spawn") == 0) {
      return spawn_backend_kind::posix_spawn;
    }
    return kernel_has_close_range() ? spawn_backend_kind::clone3 : spawn_backend_kind::posix_spawn;
#else
    return spawn_backend_kind::posix_spawn;
#endif
  }()};
  return state;
}

// The backend the next spawn uses.
inline spawn_backend_kind spawn_backend() noexcept {
  return spawn_backend_state().load(std::memory_order_relaxed);
}

}  // namespace ptk::detail
