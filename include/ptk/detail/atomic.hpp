// Internal: small atomic helpers shared by the lock-free pieces.
#pragma once

#include <ptk/config.hpp>

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

}  // namespace ptk::detail
