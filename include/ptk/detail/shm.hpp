// Internal: the machinery shared by ptk's shared-memory channels: mapping segments,
// the validated header every ptk segment starts with, type identities, telling
// whether a peer process is still alive, and the spin-then-sleep wait loop.
//
// Everything read from shared memory is untrusted: another process (buggy, hostile,
// or killed half-way) may have written anything. Headers are copied out once and
// validated; channels keep their own copies of sizes and never re-read them.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>
#include <ptk/detail/death_alarm.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>
#include <ptk/ipc/channel.hpp>

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>

namespace ptk::detail {

/// Rounds up to a multiple of 8 bytes (slot and record alignment).
inline constexpr std::uint64_t round8(std::uint64_t n) noexcept {
  return (n + 7) & ~std::uint64_t{7};
}

// ---- type identity --------------------------------------------------------------

/// The compiler's spelling of T, e.g. "int" or "std::array<char, 16>". Processes
/// built by different compilers may spell a type differently (and are then told
/// the types differ), which errs on the safe side.
template <class T>
constexpr std::string_view type_name() noexcept {
  const std::string_view p = __PRETTY_FUNCTION__;
  const std::size_t b = p.find("T = ") + 4;
#if defined(__clang__)
  const std::size_t e = p.rfind(']');
#else
  const std::size_t e = p.find("; ", b) == std::string_view::npos ? p.rfind(']') : p.find("; ", b);
#endif
  return p.substr(b, e - b);
}

/// FNV-1a of the type's name, size and alignment.
template <class T>
constexpr std::uint64_t type_hash() noexcept {
  std::uint64_t h = 1469598103934665603ULL;
  for (const char c : type_name<T>()) {
    h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ULL;
  }
  if constexpr (!std::is_void_v<T>) {
    h = (h ^ sizeof(T)) * 1099511628211ULL;
    h = (h ^ alignof(T)) * 1099511628211ULL;
  }
  return h;
}

// ---- the segment header -----------------------------------------------------------

inline constexpr std::uint64_t segment_magic = 0x315f4d48534b5450ULL;  // "PTKSHM_1"
// 2: ptk::queue claims slots through per-slot state words instead of a lock.
// 3: a shm_ring of slots under 64 bytes has spare slots beyond its capacity.
// 4: a shm_ring records its slot layout (ptk::ring_layout) in `param`.
inline constexpr std::uint32_t segment_version = 4;

enum class segment_kind : std::uint32_t { ring = 1, queue = 2, value = 3, array = 4 };

inline const char* kind_name(std::uint32_t k) noexcept {
  switch (k) {
    case 1:
      return "shm_ring";
    case 2:
      return "queue";
    case 3:
      return "shared_value";
    case 4:
      return "shared_array";
    default:
      return "unknown";
  }
}

/// The fields of a header, as plain values (what a channel keeps after validation).
struct segment_info {
  std::uint64_t magic = 0;
  std::uint32_t version = 0;
  std::uint32_t kind = 0;
  std::uint64_t type_hash = 0;
  std::uint64_t elem_size = 0;   // codec fixed size, or 0 for variable-size messages
  std::uint64_t capacity = 0;    // slots, or bytes for variable-size rings
  std::uint64_t param = 0;       // kind-specific (slot size of a queue)
  std::uint64_t total_size = 0;  // bytes of the whole segment
  char type_name[96] = {};
};

/// The first bytes of every ptk segment. `ready` turns non-zero, with release order,
/// only once the creator has initialised everything after it.
struct alignas(64) segment_header {
  futex_word ready;
  std::uint32_t pad;
  segment_info info;
};
static_assert(std::is_trivially_copyable_v<segment_info>, "headers are copied out as bytes");
static_assert(sizeof(segment_header) % 64 == 0, "the header ends on a cache line");

template <class T>
segment_info make_info(segment_kind kind, std::uint64_t elem_size, std::uint64_t capacity,
                       std::uint64_t param, std::uint64_t total) {
  segment_info i;
  i.magic = segment_magic;
  i.version = segment_version;
  i.kind = static_cast<std::uint32_t>(kind);
  i.type_hash = type_hash<T>();
  i.elem_size = elem_size;
  i.capacity = capacity;
  i.param = param;
  i.total_size = total;
  const std::string_view n = type_name<T>();
  std::memcpy(i.type_name, n.data(), std::min(n.size(), sizeof i.type_name - 1));
  return i;
}

/// Writes the header of a fresh segment (the rest is already initialised).
inline void publish_header(segment_header& h, const segment_info& info) noexcept {
  h.info = info;
  h.ready.store(1, std::memory_order_release);
  futex_wake_all(h.ready);
}

/// Copies the header out of a mapped segment of `mapped` bytes and checks it against
/// what the opener expects. Throws channel_error naming the first mismatch.
inline segment_info read_header(const void* base, std::size_t mapped, const segment_info& want,
                                const std::string& what) {
  if (mapped < sizeof(segment_header)) {
    throw channel_error(what + ": segment of " + std::to_string(mapped) +
                        " bytes is too small for a ptk header");
  }
  auto& h = *static_cast<segment_header*>(const_cast<void*>(base));
  // A creator in another process may still be initialising: wait for it, boundedly.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (h.ready.load(std::memory_order_acquire) == 0) {
    if (futex_wait_until(h.ready, 0, deadline) == futex_status::timed_out &&
        h.ready.load(std::memory_order_acquire) == 0) {
      throw channel_error(what + ": segment was never initialised (no ptk header)");
    }
  }
  segment_info got;
  std::memcpy(&got, &h.info, sizeof got);
  got.type_name[sizeof got.type_name - 1] = '\0';
  if (got.magic != segment_magic) throw channel_error(what + ": not a ptk segment (bad magic)");
  if (got.version != segment_version) {
    throw channel_error(what + ": layout version " + std::to_string(got.version) +
                        ", this build reads version " + std::to_string(segment_version));
  }
  if (got.kind != want.kind) {
    throw channel_error(what + ": segment is a " + kind_name(got.kind) + ", opened as a " +
                        kind_name(want.kind));
  }
  if (got.type_hash != want.type_hash || got.elem_size != want.elem_size) {
    throw channel_error(what + ": created for type '" + got.type_name + "' (element size " +
                        std::to_string(got.elem_size) + "), opened as '" + want.type_name +
                        "' (element size " + std::to_string(want.elem_size) + ")");
  }
  if (got.total_size != mapped) {
    throw channel_error(what + ": header says " + std::to_string(got.total_size) +
                        " bytes, segment has " + std::to_string(mapped));
  }
  return got;
}

// ---- peers ------------------------------------------------------------------------

/// A role slot in shared memory: 0 = nobody yet, departed = left without closing,
/// otherwise the pid of the process holding the role.
using pid_word = std::atomic<std::int32_t>;
inline constexpr std::int32_t departed = -1;
inline constexpr std::int32_t pid_limit = 4194304;  // PID_MAX_LIMIT

// getpid() and gettid() are system calls (glibc caches neither), and the lock below
// needs both on every acquisition: cache them per thread. A forked child's only
// thread is the one that called fork(), so the atfork handler resets its cache.
struct id_cache {
  std::uint32_t pid = 0;
  std::uint32_t tid = 0;
};
inline thread_local id_cache tls_ids{};

inline void reset_id_cache() noexcept { tls_ids = {}; }

// The first call of a thread (and of a forked child) fills the cache; the atfork
// handler is registered there, before any cache can exist to be made stale.
[[gnu::noinline, gnu::cold]] inline const id_cache& fill_id_cache() noexcept {
  static const bool registered = ::pthread_atfork(nullptr, nullptr, &reset_id_cache) == 0;
  (void)registered;
  tls_ids.pid = static_cast<std::uint32_t>(::getpid());
  tls_ids.tid = static_cast<std::uint32_t>(::syscall(SYS_gettid));
  return tls_ids;
}

// Every send and receive asks: the common case is a TLS read, inlined.
inline const id_cache& this_ids() noexcept {
  if (tls_ids.pid != 0) [[likely]] {
    return tls_ids;
  }
  return fill_id_cache();
}

inline std::uint32_t this_tid() noexcept { return this_ids().tid; }

/// How often a sleeper wakes to check that its peer is alive: dead processes cannot
/// wake anybody, so this bounds how late "peer lost" is noticed.
inline constexpr std::chrono::milliseconds liveness_period{100};

/// Tells whether the process whose pid sits in a role slot is gone, through a pidfd
/// (immune to pid reuse once opened), cached per pid. A live peer is probed (a system
/// call) at most once per liveness period, so a channel that sleeps and wakes on every
/// message does not pay a poll() each time; a peer that left cleanly (`departed`) is
/// seen at once.
class peer_watch {
 public:
  peer_watch() = default;
  /// Moves a watch (its alarm, if any, goes along).
  peer_watch(peer_watch&&) noexcept = default;
  peer_watch& operator=(peer_watch&&) = delete;
  peer_watch(const peer_watch&) = delete;
  peer_watch& operator=(const peer_watch&) = delete;
  ~peer_watch() { disarm(); }

  /// @param pid the peer's pid as read from its role slot.
  /// @param what names the channel in an error: a string, or a callable giving one
  ///        (so the wait path builds no string unless it throws).
  /// @return true when the peer left or died; false when alive or not attached yet.
  template <class What>
  bool lost(std::int32_t pid, const What& what) {
    if (pid == 0) return false;
    if (pid == departed) return true;
    if (pid < 0 || pid > pid_limit) {
      std::string name;
      if constexpr (std::is_invocable_v<const What&>) {
        name = what();
      } else {
        name = what;
      }
      throw channel_error(name + ": corrupt peer id " + std::to_string(pid) + " in shared memory");
    }
    if (static_cast<std::uint32_t>(pid) == this_ids().pid) return false;
    if (pid != pid_) {
      disarm();
      pid_ = pid;
      next_probe_ = {};
      const int fd = pidfd_open(pid);
      if (fd < 0) {
        if (errno == ESRCH) {
          pidfd_.reset();
          dead_ = true;
          return true;
        }
        // No pidfd (old kernel, sandbox): fall back to probing the pid.
        dead_ = false;
        pidfd_.reset();
      } else {
        dead_ = false;
        pidfd_.reset(fd);
      }
    }
    if (dead_) return true;
    if (alarm_ && alarm_->fired.load(std::memory_order_acquire)) return dead_ = true;
    const auto now = std::chrono::steady_clock::now();
    if (now < next_probe_) return false;
    next_probe_ = now + liveness_period;
    if (pidfd_) {
      pollfd p{pidfd_.get(), POLLIN, 0};
      dead_ = ::poll(&p, 1, 0) == 1;
    } else {
      dead_ = ::kill(pid, 0) == -1 && errno == ESRCH;
    }
    return dead_;
  }

  /// Makes sure the peer last seen by lost() wakes `flag` when it exits (see
  /// death_alarm). @return whether a sleep on `flag` may go without a timeout: the
  /// alarm is armed, or the peer is this very process (which wakes on leaving).
  /// Under TSan, which kills a forked child of a threaded process that starts a
  /// thread, no alarm is armed and sleeps keep their liveness timeout.
  bool cover(std::int32_t pid, futex_word& flag) {
    const std::uint32_t me = this_ids().pid;
    if (pid > 0 && static_cast<std::uint32_t>(pid) == me) return true;
#if defined(PTK_TSAN)
    (void)flag;
    return false;
#else
    if (pid <= 0 || pid != pid_ || dead_ || !pidfd_) return false;
    if (alarm_ && alarm_pid_ == me && alarm_->flag == &flag) return true;
    disarm();
    alarm_ = death_alarm::instance(me).arm(pidfd_.get(), flag);
    alarm_pid_ = me;
    return alarm_ != nullptr;
#endif
  }

 private:
  void disarm() noexcept {
    // An alarm armed before a fork belongs to the parent's alarm thread: leave it.
    if (alarm_ && alarm_pid_ == this_ids().pid) death_alarm::instance(alarm_pid_).disarm(*alarm_);
    alarm_.reset();
  }

  std::int32_t pid_ = 0;
  unique_fd pidfd_;
  bool dead_ = false;
  std::chrono::steady_clock::time_point next_probe_{};
  std::shared_ptr<death_alarm::entry> alarm_;  // wakes our sleeps when the peer exits
  std::uint32_t alarm_pid_ = 0;                // the process that armed it
};

/// Claims a role slot for this process: free, departed and dead holders may be
/// replaced; a live other process keeps it (std::logic_error).
inline void claim_role(pid_word& slot, const char* role, const std::string& what) {
  const auto me = static_cast<std::int32_t>(this_ids().pid);
  std::int32_t cur = slot.load(std::memory_order_acquire);
  peer_watch w;
  for (;;) {
    if (cur == me) return;
    if (cur != 0 && !w.lost(cur, what)) {
      throw std::logic_error(what + ": already has a " + role + " (pid " + std::to_string(cur) +
                             "); it is single-" + role);
    }
    if (slot.compare_exchange_weak(cur, me, std::memory_order_acq_rel)) return;
  }
}

/// Gives a role slot up (without closing): the peer sees peer_lost once drained.
inline void leave_role(pid_word& slot) noexcept {
  auto me = static_cast<std::int32_t>(this_ids().pid);
  slot.compare_exchange_strong(me, departed, std::memory_order_acq_rel);
}

// ---- waiting ----------------------------------------------------------------------

/// Polls before sleeping: a peer answering within a few microseconds is caught
/// without a system call on either side. About 20 to 40 us (a pause takes 10 to 20 ns
/// on current x86): longer than the wake-up of a sleeping peer (10 to 25 us measured
/// on a 2-vCPU VM). With a spin shorter than that, one sleep of a round-trip partner
/// (it was preempted, say) feeds itself: its reply comes a wake-up later, after the
/// other side's spin ran out, so that side sleeps too, and so on; at 500 rounds about
/// 1 round trip in 80 slept, and those sleeps made up most of the average.
inline constexpr int spin_rounds = 2000;

/// Wakes a sleeper flagged in `flag` (1 = sleeping). Callers run
/// asymmetric_fence::light_side() between publishing and calling this.
inline void wake_sleeper(futex_word& flag) noexcept {
  if (flag.load(std::memory_order_relaxed) != 0) {
    flag.store(0, std::memory_order_relaxed);
    futex_wake_all(flag);
  }
}

struct stop_waker {
  futex_word* flag;
  void operator()() const noexcept {
    flag->store(0, std::memory_order_relaxed);
    futex_wake_all(*flag);
  }
};

/// The sleeper's half of the "publish, then check for sleepers" handshake. A peer
/// that has announced it fences every publish (it woke us often: its partner sleeps
/// a lot) needs only a plain fence here; otherwise a membarrier makes the peer's
/// compiler-only fence sufficient.
///
/// The peer may withdraw its announcement (publish_and_wake) while we fence. It
/// withdraws with a store and a full fence, then publishes with compiler-only
/// fences. So the announcement is read again after our fence: still there, the
/// withdrawal is not visible yet, and every later publish of the peer checks our
/// flag (already visible) after it; gone, we pay the membarrier after all.
inline void sleeper_fence(const std::atomic<std::uint32_t>* peer_fenced) noexcept {
  if (peer_fenced != nullptr && peer_fenced->load(std::memory_order_acquire) != 0) {
    seq_cst_fence();
    if (peer_fenced->load(std::memory_order_seq_cst) != 0) return;
  }
  asymmetric_fence::heavy_side();
}

/// What a publishing side remembers to decide whether to fence fully.
struct wake_rate {
  bool fenced = false;             // full fence on every publish
  std::uint32_t wakes = 0;         // wake-ups in the current window
  std::uint64_t window_start = 0;  // the position of the window's first wake-up
  std::uint32_t quiet = 0;         // fenced: publishes since the last wake-up
};

/// Publishes in a row without a wake-up after which a fenced publisher goes back
/// to compiler-only fences.
inline constexpr std::uint32_t fenced_quiet_publishes = 16384;
/// A publisher switches to full fences after this many wake-ups...
inline constexpr std::uint32_t fence_switch_wakes = 8;
/// ...within this many messages: the partner sleeps after nearly every message.
inline constexpr std::uint64_t fence_switch_window = 32;

/// publish_and_wake's rare part: a fenced publish, or a sleeper to wake.
[[gnu::noinline]] inline void publish_and_wake_slow(futex_word& sleeping,
                                                    std::atomic<std::uint32_t>& announce,
                                                    wake_rate& rate,
                                                    std::uint64_t position) noexcept {
  if (rate.fenced) {
    seq_cst_fence();
    if (sleeping.load(std::memory_order_relaxed) == 0) {
      if (++rate.quiet == fenced_quiet_publishes) {
        announce.store(0, std::memory_order_seq_cst);
        seq_cst_fence();  // later publishes check the sleeper flag after the withdrawal
        rate.fenced = false;
        rate.wakes = 0;
      }
      return;
    }
    rate.quiet = 0;
    sleeping.store(0, std::memory_order_relaxed);
    futex_wake_all(sleeping);
    return;
  }
  // A light publish that found the sleeper flag set (after its fence).
  sleeping.store(0, std::memory_order_relaxed);
  futex_wake_all(sleeping);
  if (rate.wakes++ == 0) rate.window_start = position;
  if (rate.wakes == fence_switch_wakes) {
    if (position - rate.window_start < fence_switch_window) {
      announce.store(1, std::memory_order_seq_cst);
      rate.fenced = true;
      rate.quiet = 0;
    }
    rate.wakes = 0;
  }
}

/// The publisher's half: fence (fully while `rate.fenced`) and wake a flagged
/// sleeper. `position` counts the publisher's messages. When fence_switch_wakes
/// wake-ups happen within fence_switch_window messages (the partner sleeps after
/// nearly every message), switch to a full fence per publish and announce it in
/// `announce`, so the sleeper stops paying for a membarrier (whose inter-processor
/// interrupts cost tens of microseconds in a VM) on every sleep. A ring whose
/// partner keeps up by spinning does not switch: there a full fence would wait for
/// the index's cache line to reach the other core on every message. A burst of
/// sleeps (a slow start, a preempted partner) may switch it all the same, so a
/// fenced publisher that wakes nobody for fenced_quiet_publishes publishes in a row
/// withdraws the announcement and goes back (see sleeper_fence for why that is
/// safe). Only wake-ups and fenced publishes touch `rate`, so the busy light path
/// writes nothing extra.
inline void publish_and_wake(futex_word& sleeping, std::atomic<std::uint32_t>& announce,
                             wake_rate& rate, std::uint64_t position) noexcept {
  // The busy path, small enough to inline into every send and receive: a publisher
  // slowed by a call here lets its consumer catch up and read the very line it is
  // writing, message after message (8x slower in the SPSC benchmark).
  if (!rate.fenced) {
    asymmetric_fence::light_side();
    if (sleeping.load(std::memory_order_relaxed) == 0) return;
  }
  publish_and_wake_slow(sleeping, announce, rate, position);
}

/// Spins, then sleeps on `flag` until `ready()` holds. Returns ok (re-check and
/// retry the operation), timeout, cancelled, or peer_lost when `lost()` says so
/// while not ready. `deadline` nullopt waits forever. `covered()`, asked before each
/// sleep, says whether the peer's exit will wake `flag` (peer_watch::cover): then
/// the sleep needs no liveness timeout.
template <class Ready, class Lost, class Covered>
channel_status wait_until_ready(futex_word& flag, Ready&& ready, Lost&& lost, Covered&& covered,
                                std::optional<std::chrono::steady_clock::time_point> deadline,
                                std::stop_token stop, int spin = spin_rounds,
                                const std::atomic<std::uint32_t>* peer_fenced = nullptr) {
  for (int i = 0; i < spin; ++i) {
    if (ready()) return channel_status::ok;
    cpu_relax();
  }
  std::optional<std::stop_callback<stop_waker>> on_stop;
  if (stop.stop_possible()) on_stop.emplace(stop, stop_waker{&flag});
  // The peer is probed (a system call) only once per liveness period of silence.
  bool probe = true;
  for (;;) {
    if (ready()) return channel_status::ok;
    if (stop.stop_requested()) return channel_status::cancelled;
    if (probe && lost()) return ready() ? channel_status::ok : channel_status::peer_lost;
    const auto now = std::chrono::steady_clock::now();
    if (deadline && now >= *deadline) return channel_status::timeout;
    const bool alarmed = covered();
    flag.store(1, std::memory_order_relaxed);
    sleeper_fence(peer_fenced);
    if (ready() || stop.stop_requested()) {
      flag.store(0, std::memory_order_relaxed);
      continue;
    }
    if (alarmed) {
      // The alarm (or the peer's own leaving) wakes us: look at the peer after
      // every wake-up, which costs nothing until the alarm has fired.
      if (deadline) {
        futex_wait_until(flag, 1, *deadline);
      } else {
        futex_wait(flag, 1);
      }
      probe = true;
      continue;
    }
    auto until = now + liveness_period;
    if (deadline && *deadline < until) until = *deadline;
    probe = futex_wait_until(flag, 1, until) == futex_status::timed_out;
  }
}

// ---- a lock that survives its owner's death ---------------------------------------

/// A lock in shared memory whose owner (pid and thread) is recorded, so a process
/// killed while holding it is detected and the lock taken over. Users must keep the
/// protected data consistent at every instant (commit with one final store), which
/// is what makes taking over safe.
struct shm_lock {
  std::atomic<std::uint64_t> owner;  // (pid << 32 | tid), 0 when free
  futex_word seq;
  std::atomic<std::uint32_t> sleepers;
};

/// Wakes every sleeper announced in `sleepers` by bumping `seq`.
///
/// A sleeper adds 1 to `sleepers`, fences, reads `seq`, re-checks its condition and
/// sleeps on `seq`; it never takes its 1 back. The waker that finds a non-zero count
/// takes it all (exchange to 0) and makes the one wake-up call for everyone, so a
/// burst of publishes while a sleeper is being scheduled costs one system call, not
/// one each. A stale count (a sleeper that found its condition true after all) costs
/// at most one spare wake-up.
inline void notify_all_sleepers(futex_word& seq, std::atomic<std::uint32_t>& sleepers) noexcept {
  if (sleepers.load(std::memory_order_relaxed) != 0 &&
      sleepers.exchange(0, std::memory_order_acq_rel) != 0) {
    seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(seq);
  }
}

/// Takes `l`: spins, yields (the owner may be preempted), then sleeps, waking every
/// liveness period to see whether the owner died. `describe()` names the segment.
template <class Describe>
void lock_shm(shm_lock& l, Describe&& describe) {
  const id_cache& ids = this_ids();
  const std::uint64_t me = (static_cast<std::uint64_t>(ids.pid) << 32) | ids.tid;
  peer_watch owner_watch;
  for (unsigned i = 0;; ++i) {
    std::uint64_t cur = 0;
    if (l.owner.compare_exchange_weak(cur, me, std::memory_order_acquire,
                                      std::memory_order_relaxed))
      return;
    if (cur == 0) continue;
    if (i < 64) {
      cpu_relax();
    } else if (i < 128) {
      ::sched_yield();
    } else {
      l.sleepers.fetch_add(1, std::memory_order_seq_cst);
      seq_cst_fence();
      const std::uint32_t s = l.seq.load(std::memory_order_acquire);
      if (l.owner.load(std::memory_order_acquire) == cur) {
        futex_wait_until(l.seq, s, std::chrono::steady_clock::now() + liveness_period);
      }
      if (l.owner.load(std::memory_order_acquire) == cur &&
          owner_watch.lost(static_cast<std::int32_t>(cur >> 32), describe())) {
        // The owner died inside the lock; the data is consistent by contract.
        if (l.owner.compare_exchange_strong(cur, me, std::memory_order_acquire)) return;
      }
    }
  }
}

/// Releases `l`.
inline void unlock_shm(shm_lock& l) noexcept {
  l.owner.store(0, std::memory_order_release);
  seq_cst_fence();
  notify_all_sleepers(l.seq, l.sleepers);
}

}  // namespace ptk::detail
