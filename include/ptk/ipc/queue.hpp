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

#include <unistd.h>

#include <atomic>
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

/// The shared control block of a queue; slots follow it. Producers and consumers
/// serialise on a small lock whose owner is recorded (pid and thread), so a process
/// killed while holding it is detected and the lock taken over. That is safe because
/// the indices move only after a slot is completely written or read: whatever point
/// a process dies at, the queue is consistent.
struct queue_control {
  segment_header header;
  alignas(64) shm_lock lock;
  alignas(64) std::atomic<std::uint64_t> head;  // next slot to read (under the lock)
  std::atomic<std::uint64_t> tail;              // next slot to write (under the lock)
  alignas(64) futex_word not_empty_seq;
  std::atomic<std::uint32_t> not_empty_sleepers;
  alignas(64) futex_word not_full_seq;
  std::atomic<std::uint32_t> not_full_sleepers;
  alignas(64) std::atomic<std::uint32_t> closed;
  pid_word senders[queue_max_peers];    // processes that sent: 0 = free slot
  pid_word receivers[queue_max_peers];  // processes that received
};
static_assert(sizeof(queue_control) % 64 == 0, "slots start on a cache line");

}  // namespace detail

/// @brief A bounded MPMC queue of T in shared memory: any number of threads and
///        processes send and receive.
///
/// Many parties sleep and wake here often, so the "is anyone asleep" handshake uses
/// a plain fence on both sides (a membarrier per sleep, as the rings use, costs
/// inter-processor interrupts that add up under contention).
///
/// Create it by name (create/open), anonymously to hand to children (anonymous,
/// from_fd), or in-process with the constructor. Waiting spins briefly and then
/// sleeps on a shared futex; nobody makes a system call while nobody sleeps.
///
/// Peers are processes. A receiver waiting on an empty queue gets `peer_lost` once
/// every process that ever sent has died (and what they completed is drained); a
/// sender waiting on a full queue gets `peer_lost` once every receiving process has
/// died. A process killed at any point, even holding the queue's lock half-way
/// through a message, neither loses nor duplicates a committed message, and the
/// others carry on. close() works as for every ptk channel (see channel_status).
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
  recv_result<T> recv(std::stop_token stop = {}) { return recv_impl(std::nullopt, stop, true); }
  /// @return a message if one is queued; otherwise empty or closed.
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
  /// Sets how many times a waiting call of this handle polls before it sleeps in
  /// the kernel (default 500, about 10 microseconds; 0 sleeps at once, which saves CPU
  /// when the other side is slow to answer).
  /// @param rounds polls before sleeping.
  void set_spin(int rounds) noexcept { spin_ = rounds < 0 ? 0 : rounds; }
  /// @return how many messages it holds at most.
  [[nodiscard]] std::size_t capacity() const noexcept { return static_cast<std::size_t>(cap_); }
  /// @return the largest message in encoded bytes.
  [[nodiscard]] std::size_t max_message_size() const noexcept { return max_message_; }
  /// @return how many messages are queued (a snapshot).
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const auto t = ctl_->tail.load(std::memory_order_acquire);
    const auto h = ctl_->head.load(std::memory_order_acquire);
    return t >= h ? static_cast<std::size_t>(t - h) : 0;
  }
  /// @return the segment (fd() for a child's from_fd()).
  [[nodiscard]] const shared_memory& segment() const noexcept { return seg_; }
  /// @return the segment's descriptor.
  [[nodiscard]] int fd() const noexcept { return seg_.fd(); }

 private:
  friend struct detail::channel_access;

  bool arm_recv(detail::recv_wait& w) {
    join(ctl_->receivers, received_);
    ctl_->not_empty_sleepers.fetch_add(1, std::memory_order_seq_cst);
    detail::seq_cst_fence();
    const std::uint32_t s = ctl_->not_empty_seq.load(std::memory_order_acquire);
    if (ctl_->tail.load(std::memory_order_acquire) != ctl_->head.load(std::memory_order_acquire) ||
        closed_now()) {
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
    g.slot = detail::round8(length_prefix + g.max_message);
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
      g.slot = detail::round8(length_prefix + g.max_message);
      if (sizeof(detail::queue_control) + g.cap * g.slot != seg_.size()) {
        throw channel_error(describe(seg_) + ": " + std::to_string(g.cap) + " slots of " +
                            std::to_string(g.slot) + " bytes do not match the segment's " +
                            std::to_string(seg_.size()) + " bytes");
      }
    }
    cap_ = g.cap;
    slot_size_ = g.slot;
    max_message_ = static_cast<std::size_t>(g.max_message);
    slots_ = seg_.data() + sizeof(detail::queue_control);
  }

  [[noreturn]] void corrupt(const char* what) const {
    throw channel_error(describe(seg_) + ": corrupt shared state (" + what + ")");
  }

  // ---- the lock ----

  void lock() {
    detail::lock_shm(ctl_->lock, [this] { return describe(seg_); });
  }
  void unlock() noexcept { detail::unlock_shm(ctl_->lock); }
  struct guard {
    queue* q;
    explicit guard(queue* qq) : q(qq) { q->lock(); }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;
    ~guard() { q->unlock(); }
  };

  // ---- peers ----

  void join(detail::pid_word (&table)[detail::queue_max_peers], std::atomic<bool>& joined) {
    if (joined.load(std::memory_order_relaxed)) return;
    bool done = false;
    struct mark {
      std::atomic<bool>& j;
      bool& d;
      ~mark() {
        if (d) j.store(true, std::memory_order_relaxed);
      }
    } m{joined, done};
    const std::int32_t me = ::getpid();
    detail::peer_watch w;
    for (auto& slot : table) {
      std::int32_t cur = slot.load(std::memory_order_acquire);
      if (cur == me) {
        done = true;
        return;
      }
    }
    for (auto& slot : table) {
      std::int32_t cur = slot.load(std::memory_order_acquire);
      if ((cur == 0 || w.lost(cur, describe(seg_))) &&
          slot.compare_exchange_strong(cur, me, std::memory_order_acq_rel)) {
        done = true;
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
      if (!w.lost(pid, describe(seg_))) return false;
    }
    return any;
  }

  // ---- operations ----

  std::byte* slot_at(std::uint64_t pos) const noexcept {
    return slots_ + static_cast<std::size_t>((pos % cap_) * slot_size_);
  }

  bool closed_now() const noexcept { return ctl_->closed.load(std::memory_order_acquire) != 0; }

  // One attempt under the lock; false when full.
  bool push(const T& v, std::size_t n) {
    {
      guard g(this);
      const std::uint64_t h = ctl_->head.load(std::memory_order_relaxed);
      const std::uint64_t t = ctl_->tail.load(std::memory_order_relaxed);
      if (t - h > cap_) corrupt("head and tail too far apart");
      if (t - h == cap_) return false;
      std::byte* s = slot_at(t);
      if constexpr (!fixed) {
        const std::uint64_t len = n;
        std::memcpy(s, &len, sizeof len);
      }
      codec<T>::encode(v, std::span<std::byte>(s + length_prefix, n));
      ctl_->tail.store(t + 1, std::memory_order_release);  // the commit point
    }
    detail::seq_cst_fence();
    detail::notify_all_sleepers(ctl_->not_empty_seq, ctl_->not_empty_sleepers);
    return true;
  }

  // One attempt under the lock: decodes the message at the head; nullopt when empty.
  // A message that does not decode is dropped (the head moves past it) and the
  // codec_error propagates.
  std::optional<T> pop() {
    std::optional<T> out;
    {
      guard g(this);
      const std::uint64_t h = ctl_->head.load(std::memory_order_relaxed);
      const std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
      if (t - h > cap_) corrupt("head and tail too far apart");
      if (t == h) return out;
      const std::byte* s = slot_at(h);
      std::uint64_t len = max_message_;
      if constexpr (!fixed) {
        std::memcpy(&len, s, sizeof len);
        if (len > max_message_) corrupt("message length beyond the slot");
      }
      struct commit {
        queue* q;
        std::uint64_t next;
        ~commit() { q->ctl_->head.store(next, std::memory_order_release); }  // the commit point
      } c{this, h + 1};
      out.emplace(codec<T>::decode(
          std::span<const std::byte>(s + length_prefix, static_cast<std::size_t>(len))));
    }
    detail::seq_cst_fence();
    detail::notify_all_sleepers(ctl_->not_full_seq, ctl_->not_full_sleepers);
    return out;
  }

  template <class Ready, class Lost>
  channel_status sleep(detail::futex_word& seq, std::atomic<std::uint32_t>& sleepers, Ready&& ready,
                       Lost&& lost, std::optional<std::chrono::steady_clock::time_point> deadline,
                       std::stop_token& stop) {
    struct waker {
      detail::futex_word* seq;
      void operator()() const noexcept {
        seq->fetch_add(1);
        detail::futex_wake_all(*seq);
      }
    };
    for (int i = 0; i < spin_; ++i) {
      if (ready()) return channel_status::ok;
      detail::cpu_relax();
    }
    std::optional<std::stop_callback<waker>> on_stop;
    if (stop.stop_possible()) on_stop.emplace(stop, waker{&seq});
    bool probe = false;  // peers are probed after each liveness period of silence
    for (;;) {
      if (ready()) return channel_status::ok;
      if (stop.stop_requested()) return channel_status::cancelled;
      if (probe && lost()) return ready() ? channel_status::ok : channel_status::peer_lost;
      const auto now = std::chrono::steady_clock::now();
      if (deadline && now >= *deadline) return channel_status::timeout;
      sleepers.fetch_add(1, std::memory_order_seq_cst);
      detail::seq_cst_fence();
      const std::uint32_t s = seq.load(std::memory_order_acquire);
      probe = false;
      if (!ready() && !stop.stop_requested()) {
        auto until = now + detail::liveness_period;
        if (deadline && *deadline < until) until = *deadline;
        probe = detail::futex_wait_until(seq, s, until) == detail::futex_status::timed_out;
      }
    }
  }

  channel_status send_impl(const T& v,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    join(ctl_->senders, sent_);
    const std::size_t n = codec<T>::encoded_size(v);
    if (n > max_message_) {
      throw std::length_error(describe(seg_) + ": message of " + std::to_string(n) +
                              " bytes exceeds the slot size of " + std::to_string(max_message_));
    }
    for (;;) {
      if (closed_now()) return channel_status::closed;
      if (push(v, n)) return channel_status::ok;
      if (!may_wait) return channel_status::full;
      const auto st = sleep(
          ctl_->not_full_seq, ctl_->not_full_sleepers,
          [&] {
            return closed_now() || ctl_->tail.load(std::memory_order_acquire) -
                                           ctl_->head.load(std::memory_order_acquire) <
                                       cap_;
          },
          [&] { return all_lost(ctl_->receivers); }, deadline, stop);
      if (st != channel_status::ok) return st;
    }
  }

  recv_result<T> recv_impl(std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    join(ctl_->receivers, received_);
    for (;;) {
      if (auto v = pop()) return std::move(*v);
      if (closed_now()) {
        if (auto v = pop()) return std::move(*v);
        return channel_status::closed;
      }
      if (!may_wait)
        return senders_lost_cheap() ? channel_status::peer_lost : channel_status::empty;
      const auto st = sleep(
          ctl_->not_empty_seq, ctl_->not_empty_sleepers,
          [&] {
            return closed_now() || ctl_->tail.load(std::memory_order_acquire) !=
                                       ctl_->head.load(std::memory_order_acquire);
          },
          [&] { return all_lost(ctl_->senders); }, deadline, stop);
      if (st != channel_status::ok) {
        if (auto v = pop()) return std::move(*v);
        return st;
      }
    }
  }

  shared_memory seg_;
  detail::queue_control* ctl_ = nullptr;
  std::byte* slots_ = nullptr;
  std::uint64_t cap_ = 0;
  std::uint64_t slot_size_ = 0;
  std::size_t max_message_ = 0;
  std::atomic<std::chrono::steady_clock::rep> next_probe_{0};
  std::atomic<bool> sent_{false};      // this process joined the senders' table
  std::atomic<bool> received_{false};  // ... the receivers' table
  int spin_ = detail::spin_rounds;
};

}  // namespace ptk

#include <ptk/ipc/async_recv.hpp>
