// Internal: a futex wait/wake wrapper that works across processes.
//
// Shared (not FUTEX_PRIVATE_FLAG) futexes are keyed by the physical page, so a
// waiter in one process is woken by a waker in another as long as both map the same
// memory (MAP_SHARED anonymous memory inherited over fork, shm_open, memfd). Private
// futexes are keyed by (mm, address) and would never see each other across processes;
// the small extra cost of the shared key is the price of one primitive for both cases.
#pragma once

#include <ptk/config.hpp>
#include <ptk/error.hpp>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <ctime>

namespace ptk::detail {

/// The 32-bit word the kernel compares and sleeps on.
using futex_word = std::atomic<std::uint32_t>;
static_assert(sizeof(futex_word) == sizeof(std::uint32_t), "a futex is exactly 32 bits");
static_assert(alignof(futex_word) == alignof(std::uint32_t), "a futex is 4-byte aligned");
static_assert(futex_word::is_always_lock_free, "futex words must be lock-free to be shared");

/// Why futex_wait returned. Every outcome may be spurious from the caller's point
/// of view: always re-check the condition in a loop.
enum class futex_status {
  woken,          ///< a futex_wake woke this waiter (or a spurious kernel wake-up)
  value_changed,  ///< *word != expected when the kernel checked: nothing to wait for
  timed_out,      ///< the deadline passed
};

namespace futex_impl {

inline long call(futex_word& word, int op, std::uint32_t val, const timespec* ts,
                 std::uint32_t val3) noexcept {
  // std::atomic<uint32_t> is layout-compatible with uint32_t (asserted above).
  return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), op, val, ts, nullptr, val3);
}

inline timespec to_timespec(std::chrono::steady_clock::time_point t) noexcept {
  const auto ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  if (ns <= 0) return {0, 0};
  return {static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
}

inline futex_status classify(long r, const char* what) {
  if (r == 0) return futex_status::woken;
  switch (errno) {
    case EAGAIN:
      return futex_status::value_changed;
    case ETIMEDOUT:
      return futex_status::timed_out;
    case EINTR:
      return futex_status::woken;  // a signal handler ran: callers re-check anyway
    default:
      throw_os_error(errno, what);
  }
}

}  // namespace futex_impl

/// Sleeps while `word == expected`, until woken. Returns at once with
/// value_changed if the word already differs. A signal is reported as `woken`.
inline futex_status futex_wait(futex_word& word, std::uint32_t expected) {
  return futex_impl::classify(futex_impl::call(word, FUTEX_WAIT, expected, nullptr, 0),
                              "futex wait");
}

/// As futex_wait, but gives up at `deadline` (CLOCK_MONOTONIC, which is what
/// std::chrono::steady_clock reads on Linux). The deadline is absolute
/// (FUTEX_WAIT_BITSET), so a wait interrupted by a signal and retried never
/// extends it.
inline futex_status futex_wait_until(futex_word& word, std::uint32_t expected,
                                     std::chrono::steady_clock::time_point deadline) {
  const timespec ts = futex_impl::to_timespec(deadline);
  for (;;) {
    const long r = futex_impl::call(word, FUTEX_WAIT_BITSET, expected, &ts, FUTEX_BITSET_MATCH_ANY);
    if (r == -1 && errno == EINTR) {
      if (word.load(std::memory_order_relaxed) != expected) return futex_status::value_changed;
      continue;  // absolute deadline: retrying costs no extra time
    }
    return futex_impl::classify(r, "futex wait");
  }
}

/// As futex_wait_until, with a deadline `timeout` from now. A timeout too long to
/// represent as a deadline (e.g. `duration::max()`) waits without one.
template <class Rep, class Period>
futex_status futex_wait_for(futex_word& word, std::uint32_t expected,
                            std::chrono::duration<Rep, Period> timeout) {
  using clock = std::chrono::steady_clock;
  constexpr auto forever = std::chrono::hours(24 * 365 * 100);
  if (timeout >= forever) return futex_wait(word, expected);
  return futex_wait_until(word, expected,
                          clock::now() + std::chrono::ceil<clock::duration>(timeout));
}

/// Wakes at most `count` waiters sleeping on `word` (in any process mapping it).
/// Returns how many were woken. The caller changes the word *before* waking.
inline int futex_wake(futex_word& word, int count = 1) noexcept {
  const long r = futex_impl::call(word, FUTEX_WAKE, static_cast<std::uint32_t>(count), nullptr, 0);
  return r < 0 ? 0 : static_cast<int>(r);
}

/// Wakes every waiter sleeping on `word`.
inline int futex_wake_all(futex_word& word) noexcept { return futex_wake(word, INT_MAX); }

}  // namespace ptk::detail
