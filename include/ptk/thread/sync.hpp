/// @file
/// @brief The synchronisation pieces the standard lacks: ptk::event and ptk::wait_group.
///
/// Both are a few 32-bit words sleeping on a futex, with no pointer inside, so they
/// work between threads of one process and equally between processes that map the
/// same memory (`MAP_SHARED` memory inherited over `fork`, `shm_open`, `memfd`).
/// Their setters (ptk::event::set, ptk::wait_group::done) make no system call when
/// nobody waits: each object counts its sleepers next to its futex word.
///
/// @code
/// ptk::event ready;
/// ptk::wait_group workers{2};
/// std::jthread a([&] { ready.wait(); /* ... */ workers.done(); });
/// std::jthread b([&] { ready.wait(); /* ... */ workers.done(); });
/// ready.set();     // releases both
/// workers.wait();  // returns once both have called done()
/// @endcode
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/futex.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace ptk::detail {

/// A deadline on the clock the futex sleeps against (CLOCK_MONOTONIC).
using steady_deadline = std::chrono::steady_clock::time_point;

/// The deadline that never comes: a wait given it sleeps without a timeout.
inline constexpr steady_deadline no_deadline = steady_deadline::max();

/// The deadline `timeout` from now. A timeout that is zero or negative gives a
/// deadline already past (the wait checks once and gives up); one too long to
/// represent (e.g. `duration::max()`) gives no_deadline instead of overflowing.
template <class Rep, class Period>
steady_deadline deadline_after(std::chrono::duration<Rep, Period> timeout) {
  using clock = std::chrono::steady_clock;
  if (timeout <= timeout.zero()) return steady_deadline{};
  constexpr auto forever = std::chrono::hours(24 * 365 * 100);
  if (timeout >= forever) return no_deadline;
  return clock::now() + std::chrono::ceil<clock::duration>(timeout);
}

/// The steady-clock deadline for the absolute time `t` of any clock. A steady_clock
/// time is used as it is; another clock's time is turned into "that long from now"
/// once, so a later jump of that clock (settimeofday, NTP) does not move the deadline.
template <class Clock, class Duration>
steady_deadline deadline_at(const std::chrono::time_point<Clock, Duration>& t) {
  if constexpr (std::is_same_v<Clock, std::chrono::steady_clock>) {
    return std::chrono::ceil<std::chrono::steady_clock::duration>(t);
  } else {
    return deadline_after(t - Clock::now());
  }
}

/// Sleeps on `word` until `ready(value)` holds for a value freshly loaded from it,
/// until `*stopped` (when given) becomes true, or until `deadline`. Returns the last
/// verdict of `ready`: true when the condition was met, false on stop or timeout.
///
/// While it waits the caller is counted in `waiters`, which is how a setter decides
/// whether it must make the futex_wake system call at all. Correctness rests on a
/// Dekker-style handshake, all in seq_cst: the waiter increments `waiters` and then
/// loads the state; the setter stores the state and then loads `waiters`. At least one
/// of them sees the other, so either the waiter sees the new state or the setter sees
/// the waiter and wakes it (and if the wake comes before the waiter is asleep, the
/// kernel's compare of `word` against the value the waiter saw makes the sleep
/// return at once).
template <class Ready>
bool futex_await(futex_word& word, std::atomic<std::uint32_t>& waiters, Ready ready,
                 steady_deadline deadline, const std::atomic<bool>* stopped) {
  struct registration {
    std::atomic<std::uint32_t>& count;
    explicit registration(std::atomic<std::uint32_t>& c) noexcept : count(c) {
      count.fetch_add(1, std::memory_order_seq_cst);
    }
    ~registration() { count.fetch_sub(1, std::memory_order_seq_cst); }
    registration(const registration&) = delete;
    registration& operator=(const registration&) = delete;
  } const guard(waiters);

  for (;;) {
    const std::uint32_t seen = word.load(std::memory_order_seq_cst);
    if (ready(seen)) return true;
    if (stopped != nullptr && stopped->load(std::memory_order_acquire)) return false;
    const futex_status status =
        deadline == no_deadline ? futex_wait(word, seen) : futex_wait_until(word, seen, deadline);
    if (status == futex_status::timed_out) return ready(word.load(std::memory_order_seq_cst));
  }
}

/// The top 8 bits of a ptk::event or ptk::wait_group futex word count "nudges": a stop
/// callback adds one to change the word, so that a waiter about to sleep on the value
/// it saw finds it changed and re-checks its stop flag instead of sleeping through
/// the request. The count may wrap (the carry leaves bit 31 and is lost): only the
/// change matters.
inline constexpr std::uint32_t nudge_unit = std::uint32_t{1} << 24;

/// The bits of such a word below the nudge counter.
inline constexpr std::uint32_t below_nudge_mask = nudge_unit - 1;

/// Runs `wait(&stopped)` with a std::stop_callback that, on a stop request, sets
/// `stopped` and nudges and wakes every sleeper on `word`, so the request cannot be
/// lost between the waiter's check of `stopped` and its sleep.
template <class Wait>
bool wait_with_stop(std::stop_token token, futex_word& word, Wait wait) {
  std::atomic<bool> stopped{false};
  // The callback may run right here (stop already requested) or in whichever thread
  // calls request_stop(); stop_callback's destructor waits for a running callback,
  // so `stopped` outlives every use.
  const std::stop_callback on_stop(std::move(token), [&stopped, &word]() noexcept {
    stopped.store(true, std::memory_order_release);
    word.fetch_add(nudge_unit, std::memory_order_seq_cst);
    futex_wake_all(word);
  });
  return wait(&stopped);
}

}  // namespace ptk::detail

namespace ptk {

/// @brief A flag threads can wait on, like Python's `threading.Event`.
///
/// ptk::event::set raises the flag and wakes every waiter; ptk::event::clear lowers it;
/// the waits return as soon as the flag is up. A waiter also returns when a set()
/// happens while it waits, even if clear() lowers the flag again before the waiter
/// runs: a set is never lost.
///
/// The event is two 32-bit atomics, standard-layout, with no pointer inside, and it
/// uses shared (not process-private) futexes, so it also works between processes when
/// placed in shared memory. Construct it there once with placement new; all-zero
/// bytes are the cleared state with nobody waiting.
///
/// set() and clear() never make a system call when nobody waits. (A process killed
/// while waiting on a shared event leaves its waiter count behind: later set() calls
/// then make one needless wake-up call each, which costs time, never correctness.)
///
/// @code
/// ptk::event done;
/// std::jthread worker([&] { /* ... */ done.set(); });
/// if (!done.wait_for(std::chrono::seconds(5))) std::puts("worker is late");
/// @endcode
class event {
 public:
  /// @brief Makes a cleared event.
  event() noexcept = default;

  /// @brief Makes an event, set or cleared.
  /// @param initially_set whether the flag starts up.
  explicit event(bool initially_set) noexcept : word_(initially_set ? set_bit : 0) {}

  event(const event&) = delete;             ///< Not copyable: waiters hold its address.
  event& operator=(const event&) = delete;  ///< Not assignable.
  ~event() = default;                       ///< No waiter may remain.

  /// @brief Raises the flag and wakes every waiter. Does nothing if it is already up.
  ///
  /// Everything this thread did before set() is visible to a waiter that returns
  /// because of it.
  void set() noexcept {
    std::uint32_t w = word_.load(std::memory_order_relaxed);
    std::uint32_t next = 0;
    do {
      if ((w & set_bit) != 0) return;
      // Bump the generation so a waiter sees this set even if a clear() follows it.
      next = (w & ~below_mask) | ((w + generation_unit) & generation_mask) | set_bit;
    } while (!word_.compare_exchange_weak(w, next, std::memory_order_seq_cst,
                                          std::memory_order_relaxed));
    if (waiters_.load(std::memory_order_seq_cst) != 0) detail::futex_wake_all(word_);
  }

  /// @brief Lowers the flag; later waits block until the next set(). Never blocks.
  void clear() noexcept { word_.fetch_and(~set_bit, std::memory_order_seq_cst); }

  /// @brief Whether the flag is up.
  /// @return true between a set() and the next clear().
  [[nodiscard]] bool is_set() const noexcept {
    return (word_.load(std::memory_order_acquire) & set_bit) != 0;
  }

  /// @brief Blocks until the flag is up (returns at once if it already is).
  void wait() { (void)wait_impl(detail::no_deadline, nullptr); }

  /// @brief Blocks until the flag is up or a stop is requested on `token`.
  /// @param token cancels the wait when a stop is requested on it.
  /// @return true if the event was set, false if the wait was cancelled. A set event
  ///         returns true even when a stop has also been requested.
  [[nodiscard]] bool wait(std::stop_token token) {
    if (is_set()) return true;
    if (!token.stop_possible()) return wait_impl(detail::no_deadline, nullptr);
    return detail::wait_with_stop(std::move(token), word_, [this](const std::atomic<bool>* s) {
      return wait_impl(detail::no_deadline, s);
    });
  }

  /// @brief Blocks until the flag is up or `timeout` has passed.
  /// @param timeout how long to wait at most; zero or negative only checks.
  /// @return true if the event was set, false on timeout.
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    if (is_set() || timeout <= timeout.zero()) return is_set();
    return wait_impl(detail::deadline_after(timeout), nullptr);
  }

  /// @brief Blocks until the flag is up or the time `deadline` is reached.
  /// @param deadline when to give up; a steady_clock time is followed exactly, another
  ///        clock's time is converted to a timeout once, when the wait starts.
  /// @return true if the event was set, false on timeout.
  template <class Clock, class Duration>
  [[nodiscard]] bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    if (is_set()) return true;
    return wait_impl(detail::deadline_at(deadline), nullptr);
  }

 private:
  // The futex word: bit 0 is the flag, bits 1-23 count the sets (so a waiter can tell
  // a set-then-clear from nothing having happened), bits 24-31 count stop nudges.
  static constexpr std::uint32_t set_bit = 1;
  static constexpr std::uint32_t generation_unit = 2;
  static constexpr std::uint32_t below_mask = detail::below_nudge_mask;
  static constexpr std::uint32_t generation_mask = below_mask & ~set_bit;

  bool wait_impl(detail::steady_deadline deadline, const std::atomic<bool>* stopped) {
    const std::uint32_t start = word_.load(std::memory_order_seq_cst);
    if ((start & set_bit) != 0) return true;
    const std::uint32_t generation = start & generation_mask;
    return detail::futex_await(
        word_, waiters_,
        [generation](std::uint32_t w) {
          // Only a generation wrapped all the way round would go unseen: 2^23 set and
          // clear pairs between a wake-up and this waiter running again.
          return (w & set_bit) != 0 || (w & generation_mask) != generation;
        },
        deadline, stopped);
  }

  detail::futex_word word_{0};
  std::atomic<std::uint32_t> waiters_{0};
};

static_assert(std::is_standard_layout_v<event>, "an event must be placeable in shared memory");
static_assert(std::is_trivially_destructible_v<event>,
              "an event in shared memory needs no cleanup");
static_assert(sizeof(event) == 8 && alignof(event) == 4, "an event is two 32-bit words");

/// @brief Waits for a group of tasks to finish, like Go's `sync.WaitGroup`.
///
/// ptk::wait_group::add counts tasks in, ptk::wait_group::done counts one out, and the
/// waits return when the count drops to zero. A waiter returns when the count reaches
/// zero while it waits, even if add() raises it again before the waiter runs.
///
/// The counter is a 32-bit unsigned count: add() beyond 4294967295 throws
/// std::overflow_error, and done() at zero throws std::logic_error (a done() without
/// its add() is a bug, and going negative would release waiters too early).
///
/// Like ptk::event it is three 32-bit atomics, standard-layout, with no pointer
/// inside, so it works between processes in shared memory (placement-new it there
/// once; all-zero bytes are an empty group). done() makes no system call when nobody
/// waits (but see ptk::event about a waiter killed in the middle of a wait).
///
/// @code
/// ptk::wait_group group;
/// std::vector<std::jthread> workers;
/// for (int i = 0; i < 4; ++i) {
///   group.add();
///   workers.emplace_back([&] { /* ... */ group.done(); });
/// }
/// group.wait();
/// @endcode
class wait_group {
 public:
  /// @brief Makes an empty group (count zero).
  wait_group() noexcept = default;

  /// @brief Makes a group that already counts `initial` tasks.
  /// @param initial the starting count.
  explicit wait_group(std::uint32_t initial) noexcept : count_(initial) {}

  wait_group(const wait_group&) = delete;             ///< Not copyable: waiters hold its address.
  wait_group& operator=(const wait_group&) = delete;  ///< Not assignable.
  ~wait_group() = default;                            ///< No waiter may remain.

  /// @brief Counts `n` more tasks in.
  /// @param n how many tasks to add.
  /// @throws std::overflow_error if the count would exceed 4294967295; the count is then
  ///         unchanged.
  void add(std::uint32_t n = 1) {
    std::uint32_t c = count_.load(std::memory_order_relaxed);
    do {
      if (n > std::numeric_limits<std::uint32_t>::max() - c) {
        throw std::overflow_error("ptk::wait_group::add: the count would exceed 4294967295");
      }
    } while (!count_.compare_exchange_weak(c, c + n, std::memory_order_seq_cst,
                                           std::memory_order_relaxed));
  }

  /// @brief Counts one task out; the one that brings the count to zero wakes the waiters.
  ///
  /// Everything the tasks did before their done() is visible to a waiter that returns.
  /// @throws std::logic_error if the count is already zero; the count stays zero.
  void done() {
    std::uint32_t c = count_.load(std::memory_order_relaxed);
    do {
      if (c == 0) {
        throw std::logic_error("ptk::wait_group::done: called more often than add (count is 0)");
      }
    } while (!count_.compare_exchange_weak(c, c - 1, std::memory_order_seq_cst,
                                           std::memory_order_relaxed));
    if (c != 1) return;
    // Bump the zero generation even with nobody waiting (an atomic add, no system call):
    // a waiter that has already read the count still sees the change on its futex word.
    // Its low 24 bits wrap into the nudge bits after 2^24 rounds, which only nudges.
    zeros_.fetch_add(1, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) detail::futex_wake_all(zeros_);
  }

  /// @brief How many tasks are counted in right now.
  /// @return the current count (already stale if other threads add or finish tasks).
  [[nodiscard]] std::uint32_t count() const noexcept {
    return count_.load(std::memory_order_acquire);
  }

  /// @brief Blocks until the count is zero (returns at once if it already is).
  void wait() { (void)wait_impl(detail::no_deadline, nullptr); }

  /// @brief Blocks until the count is zero or a stop is requested on `token`.
  /// @param token cancels the wait when a stop is requested on it.
  /// @return true if the count reached zero, false if the wait was cancelled.
  [[nodiscard]] bool wait(std::stop_token token) {
    if (count() == 0) return true;
    if (!token.stop_possible()) return wait_impl(detail::no_deadline, nullptr);
    return detail::wait_with_stop(std::move(token), zeros_, [this](const std::atomic<bool>* s) {
      return wait_impl(detail::no_deadline, s);
    });
  }

  /// @brief Blocks until the count is zero or `timeout` has passed.
  /// @param timeout how long to wait at most; zero or negative only checks.
  /// @return true if the count reached zero, false on timeout.
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) {
    if (count() == 0 || timeout <= timeout.zero()) return count() == 0;
    return wait_impl(detail::deadline_after(timeout), nullptr);
  }

  /// @brief Blocks until the count is zero or the time `deadline` is reached.
  /// @param deadline when to give up; a steady_clock time is followed exactly, another
  ///        clock's time is converted to a timeout once, when the wait starts.
  /// @return true if the count reached zero, false on timeout.
  template <class Clock, class Duration>
  [[nodiscard]] bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) {
    if (count() == 0) return true;
    return wait_impl(detail::deadline_at(deadline), nullptr);
  }

 private:
  static constexpr std::uint32_t generation_mask = detail::below_nudge_mask;

  bool wait_impl(detail::steady_deadline deadline, const std::atomic<bool>* stopped) {
    // Read the zero generation before the count: a done() that empties the group after
    // this point bumps the generation after its count store, so it cannot go unseen.
    const std::uint32_t generation = zeros_.load(std::memory_order_seq_cst) & generation_mask;
    return detail::futex_await(
        zeros_, waiters_,
        [this, generation](std::uint32_t z) {
          return (z & generation_mask) != generation || count_.load(std::memory_order_seq_cst) == 0;
        },
        deadline, stopped);
  }

  std::atomic<std::uint32_t> count_{0};
  // The futex word: bits 0-23 count how often the count reached zero, bits 24-31 count
  // stop nudges.
  detail::futex_word zeros_{0};
  std::atomic<std::uint32_t> waiters_{0};
};

static_assert(std::is_standard_layout_v<wait_group>,
              "a wait_group must be placeable in shared memory");
static_assert(std::is_trivially_destructible_v<wait_group>,
              "a wait_group in shared memory needs no cleanup");
static_assert(sizeof(wait_group) == 12 && alignof(wait_group) == 4,
              "a wait_group is three 32-bit words");

}  // namespace ptk
