// Internal: small atomic helpers shared by the lock-free pieces.
#pragma once

#include <ptk/config.hpp>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#if defined(__SANITIZE_THREAD__)
#define PTK_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PTK_TSAN 1
#endif
#endif

namespace ptk::detail {

/// A sequentially consistent fence. ThreadSanitizer does not model fences, so under
/// TSan it becomes a seq_cst read-modify-write of one shared word: every thread
/// passing it synchronises with every other, which is stronger than the fence (no
/// false reports) and keeps the algorithms' orderings intact.
inline void seq_cst_fence() noexcept {
#if defined(PTK_TSAN)
  static std::atomic<unsigned> word{0};
  word.fetch_add(1, std::memory_order_seq_cst);
#else
  std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
}

/// One pause instruction: tells the core we are spinning (saves power, frees the
/// sibling hyper-thread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

/// An asymmetric Dekker fence pair for "publish, then check whether someone sleeps"
/// handshakes across threads and processes. The fast side (a writer that publishes
/// on every message) pays only a compiler barrier; the slow side (a reader about to
/// sleep, which makes a system call anyway) pays a membarrier(2) that runs a full
/// barrier on every CPU currently running a process registered for it. The
/// registration happens once per process, on first use; where membarrier is missing
/// (or under TSan, which cannot see it) both sides use a real seq_cst fence.
class asymmetric_fence {
 public:
  /// Registers this process; call it when a channel is attached, before any fence,
  /// so no publish of this process precedes its registration.
  static void prepare() noexcept {
    if (mode.load(std::memory_order_acquire) != unknown) return;
#if defined(PTK_TSAN)
    mode.store(unavailable, std::memory_order_release);
#else
    const bool ok = ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0U, 0) == 0;
    mode.store(ok ? registered : unavailable, std::memory_order_release);
#endif
  }
  /// Fence on the frequent side (publish; light_side(); check the sleeper flag).
  static void light_side() noexcept {
    if (mode.load(std::memory_order_relaxed) == registered) {
      std::atomic_signal_fence(std::memory_order_seq_cst);
    } else {
      seq_cst_fence();
    }
  }
  /// Fence on the rare side (set the sleeper flag; heavy_side(); re-check).
  static void heavy_side() noexcept {
    if (mode.load(std::memory_order_relaxed) == registered &&
        ::syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0U, 0) == 0) {
      return;
    }
    seq_cst_fence();
  }

 private:
  enum : int { unknown, registered, unavailable };
  // A plain constant-initialised word (no function-local static guard) because
  // light_side() runs on every message.
  static inline constinit std::atomic<int> mode{unknown};
};

}  // namespace ptk::detail
