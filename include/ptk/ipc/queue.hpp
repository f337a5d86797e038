/// @file
/// @brief ptk::queue: a bounded multi-producer/multi-consumer queue of T, shared by
///        threads and processes (Python's multiprocessing.Queue).
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/shm.hpp>
#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/codec.hpp>
#include <ptk/ipc/shared_memory.hpp>

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ptk {

/// @brief Sizing of a ptk::queue.
struct queue_options {
  /// The largest message in encoded bytes, for types without a fixed size (strings,
  /// vectors): every slot reserves this much. Ignored for fixed-size types.
  std::size_t max_message_size = 256;
};

namespace detail {

inline constexpr std::size_t queue_max_peers = 64;

/// The state word at the start of every slot: (rank << 22) | claimant pid, where
/// rank = turn * 4 + phase and turn = position / capacity (the lap). A slot goes
/// empty(t) -> writing(t, pid) -> full(t) -> reading(t, pid) -> empty(t + 1); each
/// step is one atomic store or compare-exchange of this word, so every claim names
/// its claimant in the same instant it is made, and a process killed holding a slot
/// is found by its pid. Ranks are 42 bits and compared modulo 2^42 (a handle would
/// have to stall for 2^40 laps to mistake one lap for another). A zeroed slot is
/// empty for lap 0, so a fresh segment needs no initialisation.
namespace queue_slot {
enum phase : std::uint64_t { empty = 0, writing = 1, full = 2, reading = 3 };
inline constexpr int pid_bits = 22;
inline constexpr std::uint64_t pid_mask = (std::uint64_t{1} << pid_bits) - 1;
static_assert(pid_limit == std::int32_t{1} << pid_bits, "every pid fits in the claimant field");

/// The word of a slot in `p` on lap `turn`, claimed by `pid` (0 when unclaimed).
constexpr std::uint64_t make(std::uint64_t turn, phase p, std::uint32_t pid) noexcept {
  return ((turn << 2 | p) << pid_bits) | (pid & pid_mask);
}
/// How many steps `w` is ahead of (positive) or behind (negative) phase `p` of lap
/// `turn`, as a signed 42-bit difference.
constexpr std::int64_t distance(std::uint64_t w, std::uint64_t turn, phase p) noexcept {
  const std::uint64_t diff = (w & ~pid_mask) - ((turn << 2 | p) << pid_bits);
  return static_cast<std::int64_t>(diff) >> pid_bits;
}
/// The claimant recorded in `w`.
constexpr std::int32_t claimant(std::uint64_t w) noexcept {
  return static_cast<std::int32_t>(w & pid_mask);
}
static_assert(distance(make(7, full, 5), 7, writing) == 1);
static_assert(distance(make(7, empty, 0), 6, reading) == 1);
static_assert(distance(make(0, empty, 0), (std::uint64_t{1} << 40) - 1, reading) == 1,
              "ranks wrap around");
static_assert(distance(make(3, reading, 9), 5, empty) == -5);
}  // namespace queue_slot

/// Bytes of a slot before the message: the state word.
inline constexpr std::uint64_t queue_slot_header = sizeof(std::uint64_t);

/// Attempts, each after a CPU pause, before a waiting queue call yields (about 1 to
/// 3 microseconds): fewer than the rings' spin because four processes on two cores
/// measured 30% faster (a spinning waiter takes the core its peer needs).
inline constexpr int queue_spin_rounds = 50;
/// Attempts, each after a sched_yield(), before a waiting queue call sleeps on the
/// futex.
inline constexpr int queue_yields = 8;

/// How long a receiver waits on a slot that a sender claimed (or a sender on one a
/// receiver claimed) before asking whether the claimant is still alive: a live one
/// finishes within nanoseconds unless it is descheduled.
inline constexpr std::chrono::milliseconds queue_slot_patience{1};

/// The shared control block of a queue; slots follow it. There is no lock: senders
/// and receivers claim slots one at a time with a compare-exchange of the slot's
/// state word (Vyukov's bounded MPMC queue, with the claimant's pid in the word).
/// `tail` and `head` are hints, where to start looking for the next slot to write
/// and to read: a claimant stores the position after its slot, and searches step
/// over slots already claimed, so a hint that lags (its claimant was descheduled or
/// killed before the store, or two stores raced) costs a step and nothing else.
/// Claims are contiguous: a position is claimed only once every earlier one is.
struct queue_control {
  segment_header header;
  alignas(64) std::atomic<std::uint64_t> tail;  // about the next position to write
  alignas(64) std::atomic<std::uint64_t> head;  // about the next position to read
  alignas(64) futex_word not_empty_seq;
  std::atomic<std::uint32_t> not_empty_sleepers;
  alignas(64) futex_word not_full_seq;
  std::atomic<std::uint32_t> not_full_sleepers;
  alignas(64) std::atomic<std::uint32_t> closed;
  pid_word senders[queue_max_peers];    // processes that sent: 0 = free slot
  pid_word receivers[queue_max_peers];  // processes that received
};
static_assert(sizeof(queue_control) % 64 == 0, "slots start on a cache line");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "slot words are shared");

}  // namespace detail

/// @brief A bounded MPMC queue of T in shared memory: any number of threads and
///        processes send and receive.
///
/// Many parties sleep and wake here often, so the "is anyone asleep" handshake uses
/// a plain fence on both sides (a membarrier per sleep, as the rings use, costs
/// inter-processor interrupts that add up under contention).
///
/// Create it by name (create/open), anonymously to hand to children (anonymous,
/// from_fd), or in-process with the constructor. Waiting spins briefly, yields the
/// CPU a few times, then sleeps on a shared futex; a send or receive that does not
/// have to wait makes no system call while nobody sleeps.
///
/// Peers are processes (a child forked with a handle is a peer of its own once it
/// sends or receives). A receiver waiting on an empty queue gets `peer_lost` once
/// every process that ever sent has died (and what they completed is drained); a
/// sender waiting on a full queue gets `peer_lost` once every receiving process has
/// died. close() works as for every ptk channel (see channel_status); a send that
/// returned ok is drained by receivers even when it raced with close().
///
/// There is no lock: each message claims a slot with one compare-exchange that also
/// records the claimant's pid, so nobody waits for a descheduled process except for
/// the one slot it holds. What a process killed at any point costs:
/// - a sender: nothing committed. A send is committed when its slot turns full
///   (before send() returns ok). A sender killed after claiming a slot and before
///   that leaves a slot that receivers skip, as if nothing had been sent, once they
///   have waited about a millisecond on it and found the pid dead; meanwhile they
///   wait (messages behind it are not overtaken).
/// - a receiver: at most the one message it was reading. Delivery is at most once:
///   a receiver killed after claiming a message and before recv() returned it
///   loses that message (nobody else receives it); senders reuse its slot once they
///   find the pid dead. Nothing else is lost or duplicated.
///
/// Each receiver gets each sender's messages in the order they were sent. A
/// claimant that is stopped (SIGSTOP) rather than dead holds its one slot until it
/// continues, and a pid reused by a new process while a dead claimant's slot is
/// pending delays the recovery of that slot until the new process exits.
/// @code
/// auto q = ptk::queue<job>::create("jobs", 1024);            // any process
/// q.send(job{42});
/// auto w = ptk::queue<job>::open("jobs");                    // each worker process
/// while (auto j = w.recv()) run(*j);
/// @endcode
/// @tparam T an encodable message type (see ptk::codec).
template <class T>
class queue {
  static_assert((detail::require_encodable<T>(), true));
  static constexpr bool fixed = fixed_size_encodable<T>;

 public:
  /// The message type.
  using value_type = T;

  /// An in-process queue of `capacity` messages (its memory is an anonymous segment,
  /// so it can still be handed to a child through fd()).
  /// @param capacity at least 1. @param options sizing for variable-size T.
  explicit queue(std::size_t capacity, const queue_options& options = {})
      : queue(anonymous(capacity, options)) {}

  /// Creates a named queue (/dev/shm, mode 0600, unlinked by this handle's destructor).
  /// @param name the segment name. @param capacity messages. @param options sizing.
  /// @return the queue.
  static queue create(std::string_view name, std::size_t capacity,
                      const queue_options& options = {}) {
    const auto g = geometry(capacity, options);
    return queue(shared_memory::create(name, g.total), g, true);
  }
  /// Opens a named queue. @param name the segment name. @return the queue.
  /// @throws ptk::channel_error if it is not a queue of T or is corrupt.
  static queue open(std::string_view name) { return queue(shared_memory::open(name), {}, false); }
  /// Creates an anonymous queue to pass to children. @param capacity messages.
  /// @param options sizing. @return the queue.
  static queue anonymous(std::size_t capacity, const queue_options& options = {}) {
    const auto g = geometry(capacity, options);
    return queue(shared_memory::anonymous(g.total), g, true);
  }
  /// Maps a queue received as a descriptor (takes ownership of `fd`).
  /// @param fd the descriptor. @return the queue.
  static queue from_fd(int fd) { return queue(shared_memory::from_fd(fd), {}, false); }

  /// Moves a handle. @param o the handle to move from (left empty).
  queue(queue&& o) noexcept
      : seg_(std::move(o.seg_)),
        ctl_(std::exchange(o.ctl_, nullptr)),
        slots_(o.slots_),
        cap_(o.cap_),
        cap_shift_(o.cap_shift_),
        slot_size_(o.slot_size_),
        max_message_(o.max_message_),
        sent_(o.sent_.load()),
        received_(o.received_.load()),
        spin_(o.spin_) {}
  queue(const queue&) = delete;
  queue& operator=(const queue&) = delete;
  queue& operator=(queue&&) = delete;
  /// Unmaps the queue (the owner of a name also unlinks it).
  ~queue() = default;

  /// Sends `v`, waiting while the queue is full. @param v the message.
  /// @param stop stops the wait. @return ok, closed, peer_lost or cancelled.
  channel_status send(const T& v, std::stop_token stop = {}) {
    return send_impl(v, std::nullopt, stop, true);
  }
  /// @param v the message. @return ok, full or closed, without waiting.
  channel_status try_send(const T& v) { return send_impl(v, std::nullopt, {}, false); }
  /// Sends, waiting at most `timeout`. @param v the message. @param timeout how long.
  /// @param stop stops the wait. @return as send(), or timeout.
  template <class Rep, class Period>
  channel_status send_for(const T& v, std::chrono::duration<Rep, Period> timeout,
                          std::stop_token stop = {}) {
    return send_impl(v, std::chrono::steady_clock::now() + timeout, stop, true);
  }
  /// Sends, waiting until `deadline`. @param v the message. @param deadline when to
  /// give up. @param stop stops the wait. @return as send_for().
  channel_status send_until(const T& v, std::chrono::steady_clock::time_point deadline,
                            std::stop_token stop = {}) {
    return send_impl(v, deadline, stop, true);
  }

  /// Receives, waiting while empty. @param stop stops the wait.
  /// @return the message, or closed / peer_lost / cancelled.
  recv_result<T> recv(std::stop_token stop = {}) {
    // The common case inline, where the caller's code can keep it hot: a process
    // that has received before finds a message at once. (Measured: with the whole
    // of recv_impl behind a call, 2 producer and 2 consumer processes on 2 cores
    // ran 1.2-1.4x slower.) Everything else takes the full path.
    const std::uint32_t me = detail::this_ids().pid;
    if (received_.load(std::memory_order_relaxed) == me) {
      std::uint64_t holder = 0;
      if (auto v = pop(holder, me)) return v;
    }
    return recv_impl(std::nullopt, stop, true);
  }
  /// @return a message if one is queued; otherwise empty, closed, or peer_lost once
  ///         every process that sent has died (asked at most once per liveness period).
  recv_result<T> try_recv() { return recv_impl(std::nullopt, {}, false); }
  /// Receives, waiting at most `timeout`. @param timeout how long. @param stop stops it.
  /// @return the message, or timeout / closed / peer_lost / cancelled.
  template <class Rep, class Period>
  recv_result<T> recv_for(std::chrono::duration<Rep, Period> timeout, std::stop_token stop = {}) {
    return recv_impl(std::chrono::steady_clock::now() + timeout, stop, true);
  }
  /// Receives, waiting until `deadline`. @param deadline when to give up.
  /// @param stop stops the wait. @return as recv_for().
  recv_result<T> recv_until(std::chrono::steady_clock::time_point deadline,
                            std::stop_token stop = {}) {
    return recv_impl(deadline, stop, true);
  }

  /// Receives in a coroutine: `co_await ch.async_recv()` suspends without blocking a
  /// thread and resumes on ptk's shared watcher thread. The awaiting task's stop token
  /// ends the wait with `cancelled`.
  /// @code
  /// ptk::task<void> consume(ptk::queue<int>& q) {
  ///   while (auto v = co_await q.async_recv()) handle(*v);
  /// }
  /// @endcode
  /// @return a task giving the message, or closed / peer_lost / cancelled.
  task<recv_result<T>> async_recv() { return detail::async_recv_loop(*this); }

  /// Closes the queue for everyone: sends fail, receivers drain and then see `closed`.
  void close() noexcept {
    ctl_->closed.store(1, std::memory_order_seq_cst);
    detail::seq_cst_fence();
    ctl_->not_empty_seq.fetch_add(1);
    detail::futex_wake_all(ctl_->not_empty_seq);
    ctl_->not_full_seq.fetch_add(1);
    detail::futex_wake_all(ctl_->not_full_seq);
  }
  /// @return whether the queue was closed.
  [[nodiscard]] bool closed() const noexcept {
    return ctl_->closed.load(std::memory_order_acquire) != 0;
  }
  /// Sets how many times a waiting call of this handle tries again, pausing the CPU
  /// before each try, before it yields the CPU a few times and then sleeps in the
  /// kernel (default 50, a few microseconds; 0 sleeps at once, which saves CPU when
  /// the other side is slow to answer).
  /// @param rounds tries before yielding and sleeping.
  void set_spin(int rounds) noexcept { spin_ = rounds < 0 ? 0 : rounds; }
  /// @return how many messages it holds at most.
  [[nodiscard]] std::size_t capacity() const noexcept { return static_cast<std::size_t>(cap_); }
  /// @return the largest message in encoded bytes.
  [[nodiscard]] std::size_t max_message_size() const noexcept { return max_message_; }
  /// @return how many messages are queued (a snapshot).
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const auto t = ctl_->tail.load(std::memory_order_relaxed);
    const auto h = ctl_->head.load(std::memory_order_relaxed);  // (hints: clamp)
    return t > h ? static_cast<std::size_t>(std::min(t - h, cap_)) : 0;
  }
  /// @return the segment (fd() for a child's from_fd()).
  [[nodiscard]] const shared_memory& segment() const noexcept { return seg_; }
  /// @return the segment's descriptor.
  [[nodiscard]] int fd() const noexcept { return seg_.fd(); }

 private:
  friend struct detail::channel_access;

  bool arm_recv(detail::recv_wait& w) {
    join(ctl_->receivers, received_, detail::this_ids().pid);
    ctl_->not_empty_sleepers.fetch_add(1, std::memory_order_seq_cst);
    detail::seq_cst_fence();
    const std::uint32_t s = ctl_->not_empty_seq.load(std::memory_order_acquire);
    if (recv_readiness() == readiness::ready) {
      disarm_recv();
      return false;
    }
    w.word = &ctl_->not_empty_seq;
    w.expected = s;
    return true;
  }
  void disarm_recv() noexcept {}  // see detail::notify_all_sleepers: counts are never taken back

  // try_recv on an empty queue checks for lost senders at most once per liveness
  // period (it costs a system call per sender).
  bool senders_lost_cheap() {
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto next = next_probe_.load(std::memory_order_relaxed);
    if (now < next) return false;
    const auto period =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(detail::liveness_period);
    if (!next_probe_.compare_exchange_strong(next, now + period.count())) return false;
    return all_lost(ctl_->senders);
  }

  struct geometry_t {
    std::uint64_t cap = 0;
    std::uint64_t slot = 0;
    std::uint64_t max_message = 0;
    std::size_t total = 0;
  };
  static constexpr std::uint64_t length_prefix = fixed ? 0 : sizeof(std::uint64_t);

  static geometry_t geometry(std::size_t capacity, const queue_options& options) {
    if (capacity == 0 || capacity > (std::size_t{1} << 32)) {
      throw std::invalid_argument("ptk::queue: capacity must be between 1 and 2^32");
    }
    geometry_t g;
    g.cap = capacity;
    if constexpr (fixed) {
      g.max_message = codec<T>::fixed_size;
    } else {
      if (options.max_message_size == 0 || options.max_message_size > (std::size_t{1} << 30)) {
        throw std::invalid_argument("ptk::queue: max_message_size must be between 1 and 2^30");
      }
      g.max_message = options.max_message_size;
    }
    g.slot = detail::round8(detail::queue_slot_header + length_prefix + g.max_message);
    g.total = sizeof(detail::queue_control) + static_cast<std::size_t>(g.cap * g.slot);
    return g;
  }
  static detail::segment_info expected(const geometry_t& g, std::size_t total) {
    std::uint64_t elem = 0;
    if constexpr (fixed) elem = codec<T>::fixed_size;
    return detail::make_info<T>(detail::segment_kind::queue, elem, g.cap, g.max_message, total);
  }
  static std::string describe(const shared_memory& s) {
    return "ptk::queue '" + (s.name().empty() ? std::string("memfd") : s.name()) + "'";
  }

  queue(shared_memory seg, geometry_t g, bool fresh) : seg_(std::move(seg)) {
    ctl_ = reinterpret_cast<detail::queue_control*>(seg_.data());
    if (fresh) {
      detail::publish_header(ctl_->header, expected(g, seg_.size()));
    } else {
      const auto got =
          detail::read_header(seg_.data(), seg_.size(), expected(g, seg_.size()), describe(seg_));
      g.cap = got.capacity;
      g.max_message = got.param;
      if (g.cap == 0 || g.cap > (std::uint64_t{1} << 32) || g.max_message == 0 ||
          g.max_message > (std::uint64_t{1} << 30) || (fixed && g.max_message != got.elem_size)) {
        throw channel_error(describe(seg_) + ": corrupt geometry in the header");
      }
      g.slot = detail::round8(detail::queue_slot_header + length_prefix + g.max_message);
      if (sizeof(detail::queue_control) + g.cap * g.slot != seg_.size()) {
        throw channel_error(describe(seg_) + ": " + std::to_string(g.cap) + " slots of " +
                            std::to_string(g.slot) + " bytes do not match the segment's " +
                            std::to_string(seg_.size()) + " bytes");
      }
    }
    cap_ = g.cap;
    cap_shift_ = std::has_single_bit(cap_) ? std::countr_zero(cap_) : -1;
    slot_size_ = g.slot;
    max_message_ = static_cast<std::size_t>(g.max_message);
    slots_ = seg_.data() + sizeof(detail::queue_control);
  }

  [[noreturn]] void corrupt(const char* what) const {
    throw channel_error(describe(seg_) + ": corrupt shared state (" + what + ")");
  }

  // ---- peers ----

  // Enters this process in a table of peers, once per process, handle and side:
  // `joined` holds the pid of the process that did, so that a child forked with a
  // handle its parent had used joins on its own (and counts as a live peer).
  void join(detail::pid_word (&table)[detail::queue_max_peers], std::atomic<std::uint32_t>& joined,
            std::uint32_t me) {
    if (joined.load(std::memory_order_relaxed) == me) return;
    const auto pid = static_cast<std::int32_t>(me);
    detail::peer_watch w;
    for (auto& slot : table) {
      if (slot.load(std::memory_order_acquire) == pid) {
        joined.store(me, std::memory_order_relaxed);
        return;
      }
    }
    for (auto& slot : table) {
      std::int32_t cur = slot.load(std::memory_order_acquire);
      if ((cur == 0 || w.lost(cur, [this] { return describe(seg_); })) &&
          slot.compare_exchange_strong(cur, pid, std::memory_order_acq_rel)) {
        joined.store(me, std::memory_order_relaxed);
        return;
      }
    }
    throw std::logic_error(describe(seg_) + ": more than " +
                           std::to_string(detail::queue_max_peers) + " live processes on one side");
  }
  // Whether some process joined the table and every one of them is gone.
  bool all_lost(detail::pid_word (&table)[detail::queue_max_peers]) {
    bool any = false;
    for (auto& slot : table) {
      const std::int32_t pid = slot.load(std::memory_order_acquire);
      if (pid == 0) continue;
      any = true;
      detail::peer_watch w;
      if (!w.lost(pid, [this] { return describe(seg_); })) return false;
    }
    return any;
  }

  // Whether the process that claimed a slot (its word is `w`) is dead. Asked only
  // once this handle has seen the very same word for queue_slot_patience, so a
  // claimant that is merely descheduled costs nobody a system call; the first
  // sighting (the common one: a claimant nanoseconds from finishing) does not read
  // the clock. Threads of a handle share the memo; racing on it only moves the next
  // question earlier or later, and the answer (a pidfd) is right whenever asked.
  bool claimant_dead(std::uint64_t w) {
    if (stall_word_.load(std::memory_order_relaxed) != w) {
      stall_word_.store(w, std::memory_order_relaxed);
      stall_since_.store(0, std::memory_order_relaxed);
      return false;
    }
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    const auto since = stall_since_.load(std::memory_order_relaxed);
    const auto patience =
        std::chrono::duration_cast<std::chrono::steady_clock::duration>(detail::queue_slot_patience)
            .count();
    if (since == 0) stall_since_.store(now, std::memory_order_relaxed);
    if (since == 0 || now - since < patience) return false;
    stall_since_.store(now, std::memory_order_relaxed);
    const std::int32_t pid = detail::queue_slot::claimant(w);
    if (pid == 0) return true;  // a claim without a claimant: nobody will finish it
    detail::peer_watch watch;
    return watch.lost(pid, [this] { return describe(seg_); });
  }

  // ---- operations ----

  using slot_state = std::atomic<std::uint64_t>;
  struct slot_ref {
    slot_state* state;
    std::byte* bytes;  // the length prefix (variable-size T), then the message
    std::uint64_t turn;
  };
  slot_ref slot_at(std::uint64_t pos) const noexcept {
    // A capacity that is a power of two (the common case) divides by a shift.
    const std::uint64_t turn = cap_shift_ >= 0 ? pos >> cap_shift_ : pos / cap_;
    std::byte* s = slots_ + static_cast<std::size_t>((pos - turn * cap_) * slot_size_);
    return {reinterpret_cast<slot_state*>(s), s + detail::queue_slot_header, turn};
  }

  bool closed_now() const noexcept { return ctl_->closed.load(std::memory_order_seq_cst) != 0; }

  // The "publish, then check for sleepers" half of the sleep handshake. The publish
  // before it is a seq_cst store or read-modify-write and so is this load: either
  // the sleeper's re-check after its fence sees the publish, or this sees its count.
  static void wake_sleepers(detail::futex_word& seq,
                            std::atomic<std::uint32_t>& sleepers) noexcept {
    if (sleepers.load(std::memory_order_seq_cst) != 0 &&
        sleepers.exchange(0, std::memory_order_acq_rel) != 0) {
      seq.fetch_add(1, std::memory_order_seq_cst);
      detail::futex_wake_all(seq);
    }
  }
  void wake_receivers() noexcept { wake_sleepers(ctl_->not_empty_seq, ctl_->not_empty_sleepers); }
  void wake_senders() noexcept { wake_sleepers(ctl_->not_full_seq, ctl_->not_full_sleepers); }

  // The next position worth trying after `pos`, whose slot is `d` (> 0) steps past
  // the phase looked for. Every position up to pos + j * capacity, j = (d - 1) / 4,
  // has been claimed (the slot reached lap turn + j), so a search that starts from a
  // stale hint skips whole laps instead of walking them.
  std::uint64_t next_after(std::uint64_t pos, std::int64_t d) const noexcept {
    return pos + static_cast<std::uint64_t>((d - 1) / 4) * cap_ + 1;
  }
  // Moves a hint (tail or head) on to `next`. A plain store, not a read-modify-write:
  // two racing claimants may move it back a little, which costs the next search a
  // step or two over claimed slots and nothing else.
  static void hint(std::atomic<std::uint64_t>& word, std::uint64_t next) noexcept {
    if (word.load(std::memory_order_relaxed) < next) word.store(next, std::memory_order_relaxed);
  }

  // What one attempt found. `holder` is the word of a slot another process has
  // claimed and this one has to wait for (0: none).
  struct attempt {
    channel_status status;
    std::uint64_t holder = 0;
  };

  // One attempt to send: claim the first unclaimed slot from the tail on, move the
  // tail past it, write, and commit by marking the slot full. ok, full (with the
  // holder when a receiver still reads the slot) or closed.
  //
  // Slot distances from "empty on this lap": 0 claimable; positive, already claimed
  // (the tail was stale): look further; -1..-3 the slot still holds the previous
  // lap (reading, full, writing): the queue is full. Anything below cannot happen
  // (the tail only ever names a position whose predecessors were all claimed) and
  // means corruption.
  attempt push(const T& v, std::size_t n, std::uint32_t me) {
    namespace qs = detail::queue_slot;
    std::uint64_t pos = ctl_->tail.load(std::memory_order_relaxed);
    for (;;) {
      const slot_ref s = slot_at(pos);
      std::uint64_t w = s.state->load(std::memory_order_acquire);
      const std::int64_t d = qs::distance(w, s.turn, qs::empty);
      if (d == 0) {
        if (!s.state->compare_exchange_strong(w, qs::make(s.turn, qs::writing, me),
                                              std::memory_order_seq_cst)) {
          continue;
        }
        hint(ctl_->tail, pos + 1);
        return write(s, v, n);
      }
      if (d > 0) {
        pos = next_after(pos, d);
        continue;
      }
      if (d < -3) corrupt("slot state behind the tail");
      hint(ctl_->tail, pos);              // as in pop(): a waiting send looks at the hint's slot
      if (d == -1 && claimant_dead(w)) {  // a receiver died reading this slot
        s.state->compare_exchange_strong(w, qs::make(s.turn, qs::empty, 0),
                                         std::memory_order_acq_rel);
        continue;
      }
      return {channel_status::full, d == -1 ? w : 0};
    }
  }

  // Writes into a slot this process has claimed and commits it. A close() that came
  // before the claim was visible makes the send fail instead: the slot is released
  // as consumed-as-nothing, so a receiver that saw the close never waits for it and
  // a send that returns ok is one every receiver drains.
  attempt write(const slot_ref& s, const T& v, std::size_t n) {
    namespace qs = detail::queue_slot;
    struct release {
      queue* q;
      const slot_ref& s;
      bool committed = false;
      ~release() {
        if (committed) return;
        s.state->store(qs::make(s.turn + 1, qs::empty, 0), std::memory_order_seq_cst);
        q->wake_receivers();  // a receiver may be waiting on this very slot
      }
    } r{this, s};
    if (closed_now()) return {channel_status::closed};
    if constexpr (!fixed) {
      const std::uint64_t len = n;
      std::memcpy(s.bytes, &len, sizeof len);
    }
    codec<T>::encode(v, std::span<std::byte>(s.bytes + length_prefix, n));
    r.committed = true;
    s.state->store(qs::make(s.turn, qs::full, 0), std::memory_order_seq_cst);  // the commit
    wake_receivers();
    return {channel_status::ok};
  }

  // One attempt to receive: claim the first full slot from the head on, move the
  // head past it, read, and hand the slot to the next lap's sender. A message that
  // does not decode is dropped (its slot is released) and the codec_error propagates.
  //
  // Slot distances from "full on this lap": 0 claimable; positive, already taken
  // (the head was stale): look further; -1 a sender is writing it (wait for that
  // sender, or skip its slot once it is found dead); -2 empty, -3 the previous lap's
  // receiver is still reading: nothing to take.
  recv_result<T> pop(std::uint64_t& holder, std::uint32_t me) {
    namespace qs = detail::queue_slot;
    holder = 0;
    std::uint64_t pos = ctl_->head.load(std::memory_order_relaxed);
    for (;;) {
      const slot_ref s = slot_at(pos);
      std::uint64_t w = s.state->load(std::memory_order_acquire);
      const std::int64_t d = qs::distance(w, s.turn, qs::full);
      if (d == 0) {
        if (!s.state->compare_exchange_strong(w, qs::make(s.turn, qs::reading, me),
                                              std::memory_order_acq_rel)) {
          continue;
        }
        hint(ctl_->head, pos + 1);
        return recv_result<T>(detail::build_value, [&] { return read(s); });  // in place
      }
      if (d > 0) {
        pos = next_after(pos, d);
        continue;
      }
      if (d < -3) corrupt("slot state behind the head");
      // Nothing to take at `pos`: the head hint goes there, past any slots this
      // search stepped over (a dead sender's, say). A waiting receive looks at the
      // hint's slot only, and one left on a consumed slot reads as "ready" for ever:
      // the receive would spin without sleeping, or seeing its deadline or a lost peer.
      hint(ctl_->head, pos);
      if (d == -1) {
        if (!claimant_dead(w)) {
          holder = w;
          return channel_status::empty;
        }
        // The sender died before committing: its message was never sent. The slot
        // is consumed as nothing and goes to the next lap.
        if (s.state->compare_exchange_strong(w, qs::make(s.turn + 1, qs::empty, 0),
                                             std::memory_order_seq_cst)) {
          wake_senders();
          wake_receivers();  // others waiting on this slot
        }
        continue;
      }
      return channel_status::empty;
    }
  }

  T read(const slot_ref& s) {
    namespace qs = detail::queue_slot;
    struct release {
      queue* q;
      const slot_ref& s;
      ~release() {
        s.state->store(qs::make(s.turn + 1, qs::empty, 0), std::memory_order_seq_cst);
        q->wake_senders();
      }
    } r{this, s};
    std::uint64_t len = max_message_;
    if constexpr (!fixed) {
      std::memcpy(&len, s.bytes, sizeof len);
      if (len > max_message_) corrupt("message length beyond the slot");
    }
    return codec<T>::decode(
        std::span<const std::byte>(s.bytes + length_prefix, static_cast<std::size_t>(len)));
  }

  // What a waiting call would find now: something to do, nothing yet, or a slot
  // claimed by another process that it has to wait for.
  enum class readiness { not_yet, ready, held };

  readiness recv_readiness() const noexcept {
    namespace qs = detail::queue_slot;
    const slot_ref s = slot_at(ctl_->head.load(std::memory_order_acquire));
    const std::int64_t d = qs::distance(s.state->load(std::memory_order_seq_cst), s.turn, qs::full);
    if (d >= 0 || d < -3) return readiness::ready;  // (corruption is reported by pop)
    if (d == -1) return readiness::held;            // even when closed: it drains
    return closed_now() ? readiness::ready : readiness::not_yet;
  }
  readiness send_readiness() const noexcept {
    namespace qs = detail::queue_slot;
    if (closed_now()) return readiness::ready;
    const slot_ref s = slot_at(ctl_->tail.load(std::memory_order_acquire));
    const std::int64_t d =
        qs::distance(s.state->load(std::memory_order_seq_cst), s.turn, qs::empty);
    if (d >= 0 || d < -3) return readiness::ready;
    return d == -1 ? readiness::held : readiness::not_yet;
  }

  // Waits one step before the caller's next attempt; `rounds` (0 at the start of
  // the send or receive) counts the steps taken. The first spin_ steps pause the
  // CPU once, the next queue_yields yield it once, and the caller retries the whole
  // operation after each: a retry claims a slot the moment one is there, where
  // polling a readiness check first and then claiming measured 1.2x slower with
  // two processes on each side. Past those, sleeps on `seq` until `ready()` says
  // ready. Returns ok (retry the operation), timeout, cancelled or peer_lost
  // (`lost()`, asked after each liveness period of silence). While a slot is held
  // by another process the sleep is cut to queue_slot_patience and ok returned, so
  // the caller's next attempt can ask whether the holder died.
  template <class Ready, class Lost>
  channel_status wait(detail::futex_word& seq, std::atomic<std::uint32_t>& sleepers, Ready&& ready,
                      Lost&& lost, std::optional<std::chrono::steady_clock::time_point> deadline,
                      std::stop_token& stop, int& rounds) {
    struct waker {
      detail::futex_word* seq;
      void operator()() const noexcept {
        seq->fetch_add(1);
        detail::futex_wake_all(*seq);
      }
    };
    if (rounds < spin_) {
      ++rounds;
      detail::cpu_relax();
      return channel_status::ok;
    }
    // Then give the CPU away a few times before sleeping: with more processes than
    // cores, the one this waits for is often runnable on this very core, and a yield
    // runs it at once, where a sleep would cost it a wake-up call.
    if (spin_ > 0 && rounds < spin_ + detail::queue_yields) {
      ++rounds;
      ::sched_yield();
      return channel_status::ok;
    }
    std::optional<std::stop_callback<waker>> on_stop;
    if (stop.stop_possible()) on_stop.emplace(stop, waker{&seq});
    bool probe = false;  // peers are probed after each liveness period of silence
    for (;;) {
      readiness r = ready();
      if (r == readiness::ready) return channel_status::ok;
      if (stop.stop_requested()) return channel_status::cancelled;
      if (probe && lost()) {
        return ready() == readiness::ready ? channel_status::ok : channel_status::peer_lost;
      }
      const auto now = std::chrono::steady_clock::now();
      if (deadline && now >= *deadline) return channel_status::timeout;
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      detail::seq_cst_fence();
      const std::uint32_t s = seq.load(std::memory_order_acquire);
      probe = false;
      r = ready();
      if (r == readiness::ready || stop.stop_requested()) continue;
      auto until =
          now + (r == readiness::held ? detail::queue_slot_patience : detail::liveness_period);
      if (deadline && *deadline < until) until = *deadline;
      if (detail::futex_wait_until(seq, s, until) == detail::futex_status::timed_out) {
        if (r == readiness::held) return channel_status::ok;
        probe = true;
      }
    }
  }

  channel_status send_impl(const T& v,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    const std::uint32_t me = detail::this_ids().pid;  // (asked once: a TLS read)
    join(ctl_->senders, sent_, me);
    int rounds = 0;  // waiting steps taken (see wait)
    const std::size_t n = codec<T>::encoded_size(v);
    if (n > max_message_) {
      throw std::length_error(describe(seg_) + ": message of " + std::to_string(n) +
                              " bytes exceeds the slot size of " + std::to_string(max_message_));
    }
    for (;;) {
      if (closed_now()) return channel_status::closed;
      const attempt a = push(v, n, me);
      if (a.status != channel_status::full || !may_wait) return a.status;
      const auto st = wait(
          ctl_->not_full_seq, ctl_->not_full_sleepers, [&] { return send_readiness(); },
          [&] { return all_lost(ctl_->receivers); }, deadline, stop, rounds);
      if (st != channel_status::ok) return st;
    }
  }

  recv_result<T> recv_impl(std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    const std::uint32_t me = detail::this_ids().pid;
    join(ctl_->receivers, received_, me);
    std::uint64_t holder = 0;
    int rounds = 0;  // waiting steps taken (see wait)
    for (;;) {
      if (auto v = pop(holder, me)) return v;
      // A send claimed before close() may still be writing (holder): it drains too.
      if (closed_now()) {
        if (auto v = pop(holder, me)) return v;
        if (holder == 0) return channel_status::closed;
      }
      if (!may_wait) {
        return holder == 0 && senders_lost_cheap() ? channel_status::peer_lost
                                                   : channel_status::empty;
      }
      const auto st = wait(
          ctl_->not_empty_seq, ctl_->not_empty_sleepers, [&] { return recv_readiness(); },
          [&] { return all_lost(ctl_->senders); }, deadline, stop, rounds);
      if (st != channel_status::ok) {
        if (auto v = pop(holder, me)) return v;
        // Every sender is gone, but one died holding the head slot and committed
        // messages may lie behind it: skip it (pop does, after its patience) first.
        if (st == channel_status::peer_lost && holder != 0) continue;
        return st;
      }
    }
  }

  shared_memory seg_;
  detail::queue_control* ctl_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t cap_ = 0;
  int cap_shift_ = -1;  // log2(cap_) when it is a power of two
  std::uint64_t slot_size_ = 0;
  std::size_t max_message_ = 0;
  std::atomic<std::chrono::steady_clock::rep> next_probe_{0};
  std::atomic<std::uint64_t> stall_word_{0};                    // the held slot word last waited on
  std::atomic<std::chrono::steady_clock::rep> stall_since_{0};  // 0: not timed yet
  std::atomic<std::uint32_t> sent_{0};      // the pid that joined the senders' table (0: none)
  std::atomic<std::uint32_t> received_{0};  // ... the receivers' table
  int spin_ = detail::queue_spin_rounds;
};

}  // namespace ptk

#include <ptk/ipc/async_recv.hpp>
