/// @file
/// @brief ptk::shm_ring: a single-producer/single-consumer ring in shared memory, for
///        threads or processes, with in-place (zero-copy) sends and receives.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/shm.hpp>
#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/codec.hpp>
#include <ptk/ipc/shared_memory.hpp>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

namespace ptk {

namespace detail {

/// The shared control block at the start of a ring segment; the data follows it.
/// Each index lives on its own cache line, written by one side only.
struct ring_control {
  segment_header header;
  alignas(64) std::atomic<std::uint64_t> tail;  // written by the producer
  alignas(64) std::atomic<std::uint64_t> head;  // written by the consumer
  // Read by both sides on every message, written only around sleeps and at close:
  // one line, shared clean in both caches while the ring is busy.
  alignas(64) futex_word consumer_sleeping;  // 1 while the consumer sleeps (empty)
  futex_word producer_sleeping;              // 1 while the producer sleeps (full)
  std::atomic<std::uint32_t> closed;
  std::atomic<std::uint32_t> producer_fenced;  // the producer fences every publish
  std::atomic<std::uint32_t> consumer_fenced;  // the consumer fences every release
  alignas(64) pid_word producer;
  pid_word consumer;
};
static_assert(sizeof(ring_control) % 64 == 0, "ring data starts on a cache line");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "indices are shared lock-free");

/// Variable-size records: an 8-byte header, then the payload padded to 8 bytes.
struct record_header {
  std::uint32_t length;
  std::uint32_t kind;  // record_data, or record_wrap: skip to the start of the ring
};
inline constexpr std::uint32_t record_data = 0x5244;  // "DR"
inline constexpr std::uint32_t record_wrap = 0x5257;  // "WR"

}  // namespace detail

/// @brief How a ptk::shm_ring of fixed-size messages lays its slots out in memory.
///
/// A hand-over from producer to consumer moves cache lines between cores, and the
/// two layouts trade the cost of one message against the density of many:
/// - `packed` (the default): slots follow each other with nothing between them, and
///   a waiting consumer learns of a message from the producer's tail index. A lone
///   message moves two cache lines (the tail's and the slot's); a stream moves one
///   line per 64 bytes of messages plus a tail now and then. Best for throughput.
/// - `stamped`: each cache line holds as many slots as fit next to an 8-byte stamp
///   (7 slots of 8 bytes, 3 of 16, one from 29 bytes on) that says how far the line
///   is written, and a waiting consumer watches the stamp of the line its next
///   message goes to. A lone message moves one cache line instead of two; a stream
///   pays for the lower density and the stamp stores.
///
/// Which one answers a request faster depends on the CPU, so measure (the `ipc`
/// benchmark has both rows). On an Intel Xeon (Sapphire Rapids), where each line
/// crossing between cores is expensive, a polling round trip took 0.9 to 1.1x a raw
/// one-word ping-pong stamped against 1.3 to 1.5x packed; on an AMD EPYC (Zen 3),
/// where two crossings overlap well, packed took 1.1 to 1.25x and stamped 1.1 to
/// 1.3x. Stamped streams 10 to 40% slower between two threads on both.
///
/// Variable-size rings (strings, vectors) always use length-prefixed records. Both
/// ends must use the same layout: opening a ring with the other one is a
/// ptk::channel_error.
enum class ring_layout : std::uint32_t {
  packed = 0,   ///< dense slots, a consumer waits on the tail index (throughput)
  stamped = 1,  ///< slots with a stamp in every cache line (round-trip latency)
};

/// @brief A single-producer/single-consumer channel of T over shared memory.
///
/// One side sends, the other receives; each may be a thread of this process or
/// another process that opened the same segment by name (open()) or by descriptor
/// (from_fd(), for anonymous rings passed to a child). The first send claims the
/// producer role and the first receive the consumer role for this process; a
/// second live process asking for a taken role gets std::logic_error. Roles belong
/// to processes, not to handles: a child forked with a handle its parent had used
/// claims a role of its own on its first send or receive (and gets that error while
/// the parent holds it), and only the process that claimed a role gives it up.
///
/// Fixed-size types (a codec with `fixed_size`, e.g. any trivially copyable T) sit
/// in fixed slots and the capacity counts messages. Other types (strings, vectors)
/// are length-prefixed records and the capacity counts bytes; one message may take
/// up to half of it.
///
/// Fixed-size slots are laid out as `Layout` says (see ptk::ring_layout: `packed`
/// for throughput, the default; `stamped` for round-trip latency). Slots smaller
/// than a cache line get spare slots (a line's worth, rounded up to a power of two
/// of slots or lines), so a producer never writes the line the consumer is reading.
/// When one process holds both roles and the ring has at least 16 lines of slots,
/// the consumer frees slots a cache line at a time: such a ring accepts up to a
/// line's slots minus one beyond capacity() (7 for 8-byte messages, packed; 6,
/// stamped), and always at least capacity().
///
/// Sending and receiving make no system call while the other side is awake: a
/// waiting side spins briefly, then sleeps on a shared futex, and only then does
/// the other side pay for a wake-up. Every blocking call takes a timeout and/or a
/// std::stop_token. If the other process dies, even half-way through writing a
/// message, the survivor drains every message that was complete and then gets
/// channel_status::peer_lost. A sleeping side is woken by the peer's exit itself
/// (ptk keeps one thread per process that watches peers' pidfds), so its sleep
/// arms no timer; where pidfds are missing it looks every 100 ms instead.
///
/// Everything read from the segment is checked: a corrupt header or index is a
/// ptk::channel_error, never a wild read.
/// @code
/// auto ring = ptk::shm_ring<int>::create("jobs", 1024);     // producer process
/// ring.send(42);
/// auto peer = ptk::shm_ring<int>::open("jobs");             // consumer process
/// while (auto v = peer.recv()) std::printf("%d\n", *v);    // until closed or peer lost
/// @endcode
/// @tparam T an encodable message type (see ptk::codec).
/// @tparam Layout how fixed-size slots sit in memory (see ptk::ring_layout).
template <class T, ring_layout Layout = ring_layout::packed>
class shm_ring {
  static_assert((detail::require_encodable<T>(), true));
  static constexpr bool fixed = fixed_size_encodable<T>;
  static_assert(fixed || Layout == ring_layout::packed,
                "ptk::shm_ring: the stamped layout needs a fixed-size message type; "
                "variable-size messages are records, use ring_layout::packed");
  static constexpr bool stamped = Layout == ring_layout::stamped;

 public:
  /// The message type.
  using value_type = T;
  /// The slot layout.
  static constexpr ring_layout layout = Layout;

  /// @brief A slot reserved by prepare(): write the message in place, then commit().
  ///        Dropping it without commit() sends nothing.
  class loan {
   public:
    /// Moves a loan. @param o the loan to move from (left empty).
    loan(loan&& o) noexcept
        : ring_(std::exchange(o.ring_, nullptr)), data_(o.data_), size_(o.size_), pos_(o.pos_) {}
    loan(const loan&) = delete;
    loan& operator=(const loan&) = delete;
    loan& operator=(loan&&) = delete;
    ~loan() = default;

    /// @return whether a slot was reserved (try_prepare may return an empty loan).
    explicit operator bool() const noexcept { return ring_ != nullptr; }
    /// @return the reserved bytes (variable-size rings: the size asked for).
    [[nodiscard]] std::span<std::byte> bytes() const noexcept { return {data_, size_}; }
    /// @return the slot as a T, for fixed-size rings of trivially copyable T.
    [[nodiscard]] T& value() const noexcept requires(fixed&& detail::bitwise_encodable<T>) {
      return *std::launder(reinterpret_cast<T*>(data_));
    }
    /// @return the slot as a T (fixed-size, trivially copyable T).
    T* operator->() const noexcept requires(fixed&& detail::bitwise_encodable<T>) {
      return &value();
    }
    /// Publishes the whole slot.
    void commit() noexcept { commit(size_); }
    /// Publishes the first `used` bytes (variable-size rings; at most the reserved size).
    /// @param used how many bytes were written.
    void commit(std::size_t used) noexcept {
      if (ring_ == nullptr) return;
      std::exchange(ring_, nullptr)->publish(pos_, data_, used <= size_ ? used : size_);
    }

   private:
    friend class shm_ring;
    loan(shm_ring* r, std::byte* d, std::size_t n, std::uint64_t pos) noexcept
        : ring_(r), data_(d), size_(n), pos_(pos) {}
    shm_ring* ring_ = nullptr;
    std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::uint64_t pos_ = 0;
  };

  /// @brief A received message still in the ring (see peek()): read it in place; the
  ///        slot is released by release() or the destructor.
  class view {
   public:
    /// Moves a view. @param o the view to move from (left empty).
    view(view&& o) noexcept
        : ring_(std::exchange(o.ring_, nullptr)),
          data_(o.data_),
          size_(o.size_),
          next_(o.next_),
          status_(o.status_) {}
    view(const view&) = delete;
    view& operator=(const view&) = delete;
    view& operator=(view&&) = delete;
    /// Releases the slot.
    ~view() { release(); }

    /// @return whether a message is held; otherwise status() says why not.
    explicit operator bool() const noexcept { return ring_ != nullptr; }
    /// @return ok, or why there is no message.
    [[nodiscard]] channel_status status() const noexcept { return status_; }
    /// @return the message's encoded bytes.
    [[nodiscard]] std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
    /// @return the message decoded (a copy).
    [[nodiscard]] T decode() const { return codec<T>::decode(bytes()); }
    /// Gives the slot back to the producer.
    void release() noexcept {
      if (ring_ != nullptr) std::exchange(ring_, nullptr)->consume(next_);
    }

   private:
    friend class shm_ring;
    explicit view(channel_status s) noexcept : status_(s) {}
    view(shm_ring* r, const std::byte* d, std::size_t n, std::uint64_t next) noexcept
        : ring_(r), data_(d), size_(n), next_(next) {}
    shm_ring* ring_ = nullptr;
    const std::byte* data_ = nullptr;
    std::size_t size_ = 0;
    std::uint64_t next_ = 0;
    channel_status status_ = channel_status::ok;
  };

  /// Creates a named ring (in /dev/shm, mode 0600, unlinked by this handle's destructor).
  /// @param name the segment name (see ptk::shared_memory::create).
  /// @param capacity messages (fixed-size T) or bytes (variable-size T); rounded up to
  ///        a power of two.
  /// @return the ring.
  static shm_ring create(std::string_view name, std::size_t capacity) {
    const auto [cap, total] = geometry(capacity);
    return shm_ring(shared_memory::create(name, total), cap, true);
  }
  /// Opens a ring created by another handle.
  /// @param name the segment name. @return the ring.
  /// @throws ptk::channel_error if the segment is not a ring of T or is corrupt.
  static shm_ring open(std::string_view name) {
    return shm_ring(shared_memory::open(name), 0, false);
  }
  /// Creates an anonymous ring (memfd): pass fd() to a child, which calls from_fd().
  /// @param capacity as for create(). @return the ring.
  static shm_ring anonymous(std::size_t capacity) {
    const auto [cap, total] = geometry(capacity);
    return shm_ring(shared_memory::anonymous(total), cap, true);
  }
  /// Maps a ring whose descriptor this process received (takes ownership of `fd`).
  /// @param fd the descriptor. @return the ring.
  static shm_ring from_fd(int fd) { return shm_ring(shared_memory::from_fd(fd), 0, false); }

  /// Moves a handle. @param o the handle to move from (left empty).
  shm_ring(shm_ring&& o) noexcept
      : seg_(std::move(o.seg_)),
        ctl_(std::exchange(o.ctl_, nullptr)),
        data_(o.data_),
        cap_(o.cap_),
        mask_(o.mask_),
        p_(o.p_),
        c_peer_for_producer_(std::move(o.c_peer_for_producer_)),
        c_(std::move(o.c_)),
        spin_(o.spin_) {}
  shm_ring(const shm_ring&) = delete;
  shm_ring& operator=(const shm_ring&) = delete;
  shm_ring& operator=(shm_ring&&) = delete;
  /// Gives up this process's role without closing: the peer sees peer_lost once it
  /// has drained. Call close() first to end the stream cleanly.
  ~shm_ring() {
    if (ctl_ == nullptr) return;
    // Only the process that took a role leaves it (not a child forked with the handle).
    const std::uint32_t me = detail::this_ids().pid;
    if (p_.owner == me) {
      detail::leave_role(ctl_->producer);
      wake(ctl_->consumer_sleeping);
    }
    if (c_.owner == me) {
      ctl_->head.store(c_.head, std::memory_order_release);  // exact, for a successor
      detail::leave_role(ctl_->consumer);
      wake(ctl_->producer_sleeping);
    }
  }

  // ---- sending ----

  /// Sends `v`, waiting while the ring is full.
  /// @param v the message. @param stop stops the wait (then `cancelled`).
  /// @return ok, closed, peer_lost (the consumer died while the ring was full), cancelled.
  channel_status send(const T& v, std::stop_token stop = {}) {
    return send_impl(v, std::nullopt, stop);
  }
  /// Sends `v` if there is room now. @param v the message. @return ok, full or closed.
  channel_status try_send(const T& v) {
    claim_producer();
    const std::size_t n = codec<T>::encoded_size(v);
    if constexpr (!fixed) check_size(n);
    if (closed_now()) return channel_status::closed;
    return try_push(v, n) ? channel_status::ok : channel_status::full;
  }
  /// Sends `v`, waiting at most `timeout`. @param v the message. @param timeout how long.
  /// @param stop stops the wait. @return as send(), or timeout.
  template <class Rep, class Period>
  channel_status send_for(const T& v, std::chrono::duration<Rep, Period> timeout,
                          std::stop_token stop = {}) {
    return send_impl(v, std::chrono::steady_clock::now() + timeout, stop);
  }
  /// Sends `v`, waiting until `deadline`. @param v the message. @param deadline when to
  /// give up. @param stop stops the wait. @return as send(), or timeout.
  channel_status send_until(const T& v, std::chrono::steady_clock::time_point deadline,
                            std::stop_token stop = {}) {
    return send_impl(v, deadline, stop);
  }

  /// Reserves a slot to write a fixed-size message in place, waiting while full.
  /// @param stop stops the wait.
  /// @return the loan; empty if the ring is closed, the consumer was lost or `stop` fired.
  loan prepare(std::stop_token stop = {}) requires fixed {
    return prepare_impl(slot_size, std::nullopt, stop);
  }
  /// As prepare(), waiting at most `timeout` for room.
  /// @param timeout how long. @param stop stops the wait.
  /// @return the loan (empty when closed, lost, stopped or timed out).
  template <class Rep, class Period>
  loan prepare_for(std::chrono::duration<Rep, Period> timeout,
                   std::stop_token stop = {}) requires fixed {
    return prepare_impl(slot_size, std::chrono::steady_clock::now() + timeout, stop);
  }
  /// Reserves `bytes` bytes to write an encoded message in place (variable-size T),
  /// waiting while full. @param bytes at most max_message_size().
  /// @param stop stops the wait. @return the loan (empty when closed, lost or stopped).
  loan prepare(std::size_t bytes, std::stop_token stop = {}) requires(!fixed) {
    check_size(bytes);
    return prepare_impl(bytes, std::nullopt, stop);
  }
  /// As prepare(bytes), waiting at most `timeout` for room.
  /// @param bytes at most max_message_size(). @param timeout how long.
  /// @param stop stops the wait. @return the loan (empty when closed, lost, stopped or
  /// timed out).
  template <class Rep, class Period>
  loan prepare_for(std::size_t bytes, std::chrono::duration<Rep, Period> timeout,
                   std::stop_token stop = {}) requires(!fixed) {
    check_size(bytes);
    return prepare_impl(bytes, std::chrono::steady_clock::now() + timeout, stop);
  }

  // ---- receiving ----

  /// Receives the next message, waiting while the ring is empty.
  /// @param stop stops the wait. @return the message, or closed / peer_lost / cancelled.
  /// @throws ptk::codec_error if the message does not decode (it is dropped).
  recv_result<T> recv(std::stop_token stop = {}) { return take(peek_impl(std::nullopt, stop)); }
  /// @return the next message if there is one now; otherwise empty, closed or peer_lost.
  recv_result<T> try_recv() {
    if constexpr (fixed) {  // the hot path of polling consumers, without a view
      claim_consumer();
      if (c_.head != c_.tail_cache || refresh_tail()) {
        const std::uint64_t at = c_.head;
        struct release {
          shm_ring* r;
          std::uint64_t next;
          ~release() { r->consume(next); }  // also when decode throws: the message is dropped
        } done{this, at + 1};
        return recv_result<T>(detail::build_value, [&] {
          return codec<T>::decode(std::span<const std::byte>(slot(at), codec<T>::fixed_size));
        });
      }
    }
    return take(try_peek());
  }
  /// Receives, waiting at most `timeout`. @param timeout how long. @param stop stops it.
  /// @return the message, or timeout / closed / peer_lost / cancelled.
  template <class Rep, class Period>
  recv_result<T> recv_for(std::chrono::duration<Rep, Period> timeout, std::stop_token stop = {}) {
    return take(peek_impl(std::chrono::steady_clock::now() + timeout, stop));
  }
  /// Receives, waiting until `deadline`. @param deadline when to give up.
  /// @param stop stops the wait. @return as recv_for().
  recv_result<T> recv_until(std::chrono::steady_clock::time_point deadline,
                            std::stop_token stop = {}) {
    return take(peek_impl(deadline, stop));
  }

  /// Waits for the next message and lends it in place (zero-copy receive).
  /// @param stop stops the wait. @return the view (empty with a status if none).
  view peek(std::stop_token stop = {}) { return peek_impl(std::nullopt, stop); }
  /// As peek(), waiting at most `timeout`. @param timeout how long.
  /// @param stop stops the wait. @return the view (empty with a status if none).
  template <class Rep, class Period>
  view peek_for(std::chrono::duration<Rep, Period> timeout, std::stop_token stop = {}) {
    return peek_impl(std::chrono::steady_clock::now() + timeout, stop);
  }
  /// @return a view of the next message if there is one now.
  view try_peek() {
    claim_consumer();
    if (auto v = front()) return std::move(*v);
    if (closed_now()) {
      if (auto v = front()) return std::move(*v);
      return view(channel_status::closed);
    }
    if (producer_gone_cheap()) {
      if (auto v = front()) return std::move(*v);
      return view(channel_status::peer_lost);
    }
    return view(channel_status::empty);
  }

  /// Receives in a coroutine: `co_await ch.async_recv()` suspends without blocking a
  /// thread and resumes on ptk's shared watcher thread. The awaiting task's stop token
  /// ends the wait with `cancelled`.
  /// @code
  /// ptk::task<void> consume(ptk::shm_ring<int>& ring) {
  ///   while (auto v = co_await ring.async_recv()) handle(*v);
  /// }
  /// @endcode
  /// @return a task giving the message, or closed / peer_lost / cancelled.
  task<recv_result<T>> async_recv() { return detail::async_recv_loop(*this); }

  // ---- state ----

  /// Closes the ring for both sides: sends fail from now on; the receiver drains
  /// what was sent, then gets `closed`.
  void close() noexcept {
    ctl_->closed.store(1, std::memory_order_seq_cst);
    detail::seq_cst_fence();
    wake(ctl_->consumer_sleeping);
    wake(ctl_->producer_sleeping);
  }
  /// @return whether close() was called (by either side).
  [[nodiscard]] bool closed() const noexcept {
    return ctl_->closed.load(std::memory_order_acquire) != 0;
  }
  /// Sets how many times a waiting call of this handle polls before it sleeps in
  /// the kernel (default 2000, about 20 to 40 microseconds: longer than a sleeping
  /// peer takes to wake; 0 sleeps at once, which saves CPU when the other side is slow
  /// to answer).
  /// @param rounds polls before sleeping.
  void set_spin(int rounds) noexcept { spin_ = rounds < 0 ? 0 : rounds; }
  /// @return the capacity: messages for fixed-size T (see the class notes for
  ///         rings of small slots between threads), bytes otherwise.
  [[nodiscard]] std::size_t capacity() const noexcept { return static_cast<std::size_t>(cap_); }
  /// @return the largest message, in encoded bytes.
  [[nodiscard]] std::size_t max_message_size() const noexcept {
    if constexpr (fixed) {
      return codec<T>::fixed_size;
    } else {
      return static_cast<std::size_t>(cap_ / 2 - sizeof(detail::record_header));
    }
  }
  /// @return how much is queued right now (messages, or bytes for variable-size T); a
  ///         snapshot that may be stale at once.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const auto t = ctl_->tail.load(std::memory_order_acquire);
    const auto h = ctl_->head.load(std::memory_order_acquire);
    return t >= h ? static_cast<std::size_t>(t - h) : 0;
  }
  /// @return the segment (its fd() is what a child needs for from_fd()).
  [[nodiscard]] const shared_memory& segment() const noexcept { return seg_; }
  /// @return the descriptor of the segment.
  [[nodiscard]] int fd() const noexcept { return seg_.fd(); }

 private:
  friend struct detail::channel_access;

  // Flags the consumer as sleeping for an asynchronous wait; false when there is
  // already something to do (then nothing is armed).
  bool arm_recv(detail::recv_wait& w) {
    claim_consumer();
    ctl_->consumer_sleeping.store(1, std::memory_order_relaxed);
    detail::sleeper_fence(&ctl_->producer_fenced);
    if (published_at_head() || closed_now() ||
        ctl_->producer.load(std::memory_order_acquire) == detail::departed) {
      ctl_->consumer_sleeping.store(0, std::memory_order_relaxed);
      return false;
    }
    w.word = &ctl_->consumer_sleeping;
    w.expected = 1;
    return true;
  }
  void disarm_recv() noexcept {}

  static constexpr std::size_t slot_size = [] {
    if constexpr (fixed) {
      return static_cast<std::size_t>(detail::round8(codec<T>::fixed_size));
    } else {
      return std::size_t{0};
    }
  }();

  struct geometry_t {
    std::uint64_t cap;
    std::size_t total;
  };
  static geometry_t geometry(std::size_t capacity) {
    if (capacity == 0 || capacity > (std::size_t{1} << 40)) {
      throw std::invalid_argument("ptk::shm_ring: capacity must be between 1 and 2^40");
    }
    std::uint64_t cap = std::bit_ceil(static_cast<std::uint64_t>(capacity));
    if constexpr (!fixed) cap = cap < 64 ? 64 : cap;
    return {cap, sizeof(detail::ring_control) + data_bytes(cap)};
  }
  static constexpr std::size_t stamp_size = sizeof(std::uint64_t);
  // Slots that share a cache line. Packed: a power of two, 1 for slots of a line or
  // more. Stamped: as many as fit next to the stamp, 1 from 29 bytes on.
  static constexpr std::uint64_t line_slots = [] {
    if constexpr (!fixed) {
      return std::uint64_t{1};
    } else if constexpr (stamped) {
      return slot_size + stamp_size <= 64 ? (64 - stamp_size) / slot_size : std::uint64_t{1};
    } else {
      return slot_size < 64 ? std::uint64_t{std::bit_floor(64 / slot_size)} : std::uint64_t{1};
    }
  }();
  // Stamped: the slots sit in cells of whole cache lines, line_slots slots and then
  // the cell's stamp in its last 8 bytes (after the message, for slots of more than
  // 56 bytes). The producer writes a message, then its cell's stamp (the position
  // after it), then the tail; a waiting consumer learns that the message at its head
  // is there from the stamp, on the line it then reads the message from.
  static constexpr std::size_t cell_size =
      stamped ? (line_slots * slot_size + stamp_size + 63) / 64 * 64 : 0;
  // The slots (packed) or cells (stamped) behind a capacity of `cap` messages, a
  // power of two. With at least line_slots - 1 spare slots, a producer that keeps at
  // most `cap` messages queued never writes into the cache line the consumer is
  // reading: on a full ring the two sides then meet on the head index only, not on
  // every message's line.
  static std::uint64_t physical_slots(std::uint64_t cap) noexcept {
    if constexpr (stamped) {
      return std::bit_ceil((cap + 2 * (line_slots - 1)) / line_slots);
    } else {
      return line_slots > 1 ? std::bit_ceil(cap + line_slots - 1) : cap;
    }
  }
  static std::uint64_t data_bytes(std::uint64_t cap) noexcept {
    if constexpr (stamped) return physical_slots(cap) * cell_size;
    return fixed ? physical_slots(cap) * slot_size : cap;
  }
  static detail::segment_info expected(std::uint64_t cap, std::size_t total) {
    std::uint64_t elem = 0;
    if constexpr (fixed) elem = codec<T>::fixed_size;
    return detail::make_info<T>(detail::segment_kind::ring, elem, cap,
                                static_cast<std::uint64_t>(Layout), total);
  }
  static const char* layout_name(std::uint64_t l) noexcept {
    return l == 0 ? "packed" : l == 1 ? "stamped" : "unknown";
  }
  static std::string describe(const shared_memory& s) {
    return "ptk::shm_ring '" + (s.name().empty() ? std::string("memfd") : s.name()) + "'";
  }

  shm_ring(shared_memory seg, std::uint64_t cap, bool fresh) : seg_(std::move(seg)) {
    detail::asymmetric_fence::prepare();
    ctl_ = reinterpret_cast<detail::ring_control*>(seg_.data());
    if (fresh) {
      // The segment is zero-filled: indices, flags and roles start at zero.
      detail::publish_header(ctl_->header, expected(cap, seg_.size()));
    } else {
      const auto want = expected(0, seg_.size());
      const auto got = detail::read_header(seg_.data(), seg_.size(), want, describe(seg_));
      cap = got.capacity;
      if (got.param != static_cast<std::uint64_t>(Layout)) {
        throw channel_error(describe(seg_) + ": created with the " + layout_name(got.param) +
                            " layout, opened as " +
                            layout_name(static_cast<std::uint64_t>(Layout)));
      }
      if (cap == 0 || !std::has_single_bit(cap) || (!fixed && cap < 64) ||
          cap > (std::uint64_t{1} << 40) ||
          sizeof(detail::ring_control) + data_bytes(cap) != seg_.size()) {
        throw channel_error(describe(seg_) + ": capacity " + std::to_string(cap) +
                            " does not match the segment's " + std::to_string(seg_.size()) +
                            " bytes");
      }
    }
    cap_ = cap;
    mask_ = (fixed ? physical_slots(cap) : cap) - 1;  // slots, cells, or bytes
    data_ = seg_.data() + sizeof(detail::ring_control);
  }

  // Producer-side and consumer-side local state, on separate cache lines so one
  // handle can be shared by a sending and a receiving thread.
  struct alignas(64) producer_state {
    std::uint32_t owner = 0;       // the process that claimed the role (0: none yet)
    detail::wake_rate rate;        // see publish_and_wake
    std::uint64_t tail = 0;        // next position to write (our copy)
    std::uint64_t head_cache = 0;  // last head seen
    std::uint64_t records = 0;     // variable-size: messages published (see publish)
  };
  struct alignas(64) consumer_state {
    std::uint32_t owner = 0;       // the process that claimed the role (0: none yet)
    detail::wake_rate rate;        // see publish_and_wake
    std::uint64_t head = 0;        // next position to read (our copy)
    std::uint64_t tail_cache = 0;  // last tail seen
    bool lazy = false;             // publish the head a line at a time (see consume)
    std::uint64_t records = 0;     // variable-size: records and wraps consumed
    detail::peer_watch peer;       // the producer
    std::chrono::steady_clock::time_point next_probe{};
  };

  [[noreturn]] void corrupt(const char* what) const {
    throw channel_error(describe(seg_) + ": corrupt shared state (" + what + ")");
  }

  // A role is claimed once per process: a child forked with a handle its parent had
  // used claims the role for itself (and fails while the parent holds it).
  void claim_producer() {
    const std::uint32_t me = detail::this_ids().pid;
    if (p_.owner == me) return;
    detail::claim_role(ctl_->producer, "producer", describe(seg_));
    p_.owner = me;
    // A predecessor may have announced full fences: keep the promise.
    p_.rate.fenced = ctl_->producer_fenced.load(std::memory_order_acquire) != 0;
    p_.tail = ctl_->tail.load(std::memory_order_acquire);
    if constexpr (stamped) {
      // A predecessor that died between a stamp and the tail store: its message is
      // published (the consumer goes by the stamps), so continue after it.
      for (std::uint64_t s; (s = stamp(p_.tail).load(std::memory_order_acquire)) > p_.tail;) {
        if (s - p_.tail > line_slots) corrupt("slot stamp beyond its cell");
        p_.tail = s;
      }
    }
    p_.head_cache = ctl_->head.load(std::memory_order_acquire);
    if (p_.tail - p_.head_cache > cap_ + lag_slots) corrupt("tail and head too far apart");
  }
  void claim_consumer() {
    const std::uint32_t me = detail::this_ids().pid;
    if (c_.owner == me) return;
    detail::claim_role(ctl_->consumer, "consumer", describe(seg_));
    c_.owner = me;
    c_.rate.fenced = ctl_->consumer_fenced.load(std::memory_order_acquire) != 0;
    c_.head = ctl_->head.load(std::memory_order_acquire);
    c_.tail_cache = c_.head;
  }

  bool closed_now() const noexcept { return ctl_->closed.load(std::memory_order_acquire) != 0; }

  static void wake(detail::futex_word& flag) noexcept { detail::wake_sleeper(flag); }

  // The slots a lazily published head may lag behind the consumer (see consume()).
  static constexpr std::uint64_t lag_slots = line_slots - 1;
  // Whether the consumer may publish its head lazily: one process holds both roles,
  // and the ring is large enough (16 lines or more) that the lag is a small part of it.
  bool head_may_lag() const noexcept {
    return lag_slots != 0 && cap_ >= 16 * line_slots &&
           ctl_->producer.load(std::memory_order_relaxed) ==
               ctl_->consumer.load(std::memory_order_relaxed);
  }

  // Room for `n` positions (slots or bytes) starting at p_.tail.
  bool has_room(std::uint64_t n) {
    if (p_.tail + n - p_.head_cache <= cap_) return true;
    p_.head_cache = ctl_->head.load(std::memory_order_acquire);
    if (p_.tail - p_.head_cache > cap_ + lag_slots) corrupt("head ahead of tail");
    const std::uint64_t limit = head_may_lag() ? cap_ + lag_slots : cap_;
    return p_.tail + n - p_.head_cache <= limit;
  }

  // Where a record of `bytes` payload goes: returns the position of its header
  // (after a wrap marker if needed) and the total span to reserve, or nullopt.
  struct placement {
    std::uint64_t pos;
    std::uint64_t end;
  };
  std::optional<placement> place(std::size_t bytes) {
    if constexpr (fixed) {
      if (!has_room(1)) return std::nullopt;
      return placement{p_.tail, p_.tail + 1};
    } else {
      const std::uint64_t rec = sizeof(detail::record_header) + detail::round8(bytes);
      const std::uint64_t off = p_.tail & mask_;
      const std::uint64_t skip = off + rec > cap_ ? cap_ - off : 0;
      if (!has_room(skip + rec)) return std::nullopt;
      return placement{p_.tail + skip, p_.tail + skip + rec};
    }
  }

  std::byte* slot(std::uint64_t pos) const noexcept {
    if constexpr (stamped) {
      const std::uint64_t cell = pos / line_slots;  // a constant: a multiply
      return data_ + (cell & mask_) * cell_size + (pos - cell * line_slots) * slot_size;
    } else if constexpr (fixed) {
      return data_ + (pos & mask_) * slot_size;
    } else {
      return data_ + (pos & mask_);
    }
  }
  // The stamp of the cell holding position `pos` (stamped rings): the position after
  // the last message written to the cell.
  std::atomic<std::uint64_t>& stamp(std::uint64_t pos) const noexcept requires stamped {
    std::byte* cell = data_ + ((pos / line_slots) & mask_) * cell_size;
    return *std::launder(
        reinterpret_cast<std::atomic<std::uint64_t>*>(cell + cell_size - stamp_size));
  }
  // Whether the message at the consumer's head is published: the tail says, or, in
  // a stamped ring, the head's stamp, and what it says is kept in c_.tail_cache (a
  // lower bound of the tail) so the receive that follows needs no look at the tail.
  bool published_at_head() {
    if constexpr (stamped) {
      const std::uint64_t s = stamp(c_.head).load(std::memory_order_acquire);
      if (s <= c_.head) return false;
      if (s - c_.head > line_slots) corrupt("slot stamp beyond its cell");
      c_.tail_cache = s;
      return true;
    } else {
      return ctl_->tail.load(std::memory_order_acquire) != c_.head;
    }
  }

  // Writes the record header(s) and makes [p_.tail, end) visible to the consumer.
  void publish(std::uint64_t pos, std::byte* /*data*/, std::size_t used) noexcept {
    std::uint64_t end = pos + 1;
    if constexpr (!fixed) {
      if (pos != p_.tail) {  // a wrap marker fills the rest of the ring
        const detail::record_header wrap{0, detail::record_wrap};
        std::memcpy(slot(p_.tail), &wrap, sizeof wrap);
      }
      const detail::record_header h{static_cast<std::uint32_t>(used), detail::record_data};
      std::memcpy(slot(pos), &h, sizeof h);
      end = pos + sizeof h + detail::round8(used);
    }
    if constexpr (stamped) stamp(pos).store(end, std::memory_order_release);
    p_.tail = end;
    ctl_->tail.store(end, std::memory_order_release);
    // publish_and_wake counts in messages: positions are bytes in a variable-size ring.
    std::uint64_t count = end;
    if constexpr (!fixed) count = ++p_.records;
    detail::publish_and_wake(ctl_->consumer_sleeping, ctl_->producer_fenced, p_.rate, count);
  }

  // `n` is codec<T>::encoded_size(v), already checked against max_message_size().
  bool try_push(const T& v, std::size_t n) {
    const auto at = place(n);
    if (!at) return false;
    std::byte* d = payload(at->pos);
    codec<T>::encode(v, std::span<std::byte>(d, n));
    publish(at->pos, d, n);
    return true;
  }

  std::byte* payload(std::uint64_t pos) const noexcept {
    if constexpr (fixed) {
      return slot(pos);
    } else {
      return slot(pos) + sizeof(detail::record_header);
    }
  }

  void check_size(std::size_t n) const {
    if (n > max_message_size()) {
      throw std::length_error(describe(seg_) + ": message of " + std::to_string(n) +
                              " bytes exceeds the limit of " + std::to_string(max_message_size()));
    }
  }

  bool consumer_lost() {
    // The producer only learns about a dead consumer when it has to wait.
    return c_peer_for_producer_.lost(ctl_->consumer.load(std::memory_order_acquire),
                                     [this] { return describe(seg_); });
  }

  template <class Try>
  channel_status send_loop(Try&& attempt, std::size_t bytes,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop) {
    claim_producer();
    for (;;) {
      if (closed_now()) return channel_status::closed;
      if (attempt()) return channel_status::ok;
      const auto st = detail::wait_until_ready(
          ctl_->producer_sleeping, [&] { return closed_now() || place(bytes).has_value(); },
          [&] { return consumer_lost(); },
          [&] {
            return c_peer_for_producer_.cover(ctl_->consumer.load(std::memory_order_acquire),
                                              ctl_->producer_sleeping);
          },
          deadline, stop, spin_, &ctl_->consumer_fenced);
      if (st != channel_status::ok) return st;
    }
  }

  channel_status send_impl(const T& v,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop) {
    claim_producer();
    const std::size_t n = codec<T>::encoded_size(v);
    if constexpr (!fixed) check_size(n);
    return send_loop([&] { return try_push(v, n); }, n, deadline, stop);
  }

  loan prepare_impl(std::size_t bytes,
                    std::optional<std::chrono::steady_clock::time_point> deadline,
                    std::stop_token stop) {
    std::optional<placement> at;
    const auto st =
        send_loop([&] { return (at = place(bytes)).has_value(); }, bytes, deadline, stop);
    if (st != channel_status::ok) return loan(nullptr, nullptr, 0, 0);
    return loan(this, payload(at->pos), bytes, at->pos);
  }

  // Reloads the producer's tail; true when there is something at the head now.
  // Polling reads the tail even in a stamped ring: it may cover many lines at once,
  // and a consumer that has caught up with a streaming producer then takes the
  // tail's line from it, not the line the producer is writing messages into. Only
  // waiting goes by the stamps (published_at_head).
  bool refresh_tail() {
    const std::uint64_t t = ctl_->tail.load(std::memory_order_acquire);
    if (t - c_.head <= cap_ + lag_slots) {
      c_.tail_cache = t;
      return c_.head != t;
    }
    // Stamped: the tail may trail the stamps by the message between a stamp and its
    // tail store (or for good, if the producer died between them).
    if (stamped && c_.head - t <= line_slots) {
      c_.tail_cache = c_.head;
      return false;
    }
    corrupt("tail and head too far apart");
  }

  // The message at the consumer's head, if the producer has published one.
  std::optional<view> front() {
    for (;;) {
      if (c_.head == c_.tail_cache && !refresh_tail()) return std::nullopt;
      if constexpr (fixed) {
        return view(this, slot(c_.head), codec<T>::fixed_size, c_.head + 1);
      } else {
        detail::record_header h;
        const std::uint64_t off = c_.head & mask_;
        const std::uint64_t avail = c_.tail_cache - c_.head;
        if (avail < sizeof h || off + sizeof h > cap_) corrupt("record header out of bounds");
        std::memcpy(&h, slot(c_.head), sizeof h);
        if (h.kind == detail::record_wrap) {
          if (cap_ - off > avail) corrupt("wrap marker beyond the tail");
          consume(c_.head + (cap_ - off));
          continue;
        }
        const std::uint64_t rec = sizeof h + detail::round8(h.length);
        if (h.kind != detail::record_data || rec > avail || off + rec > cap_) {
          corrupt("record length out of bounds");
        }
        return view(this, slot(c_.head) + sizeof h, h.length, c_.head + rec);
      }
    }
  }

  // Frees the consumed positions. Between threads of one process, a fixed ring of
  // at least 16 lines of small slots publishes its head only when it enters a new
  // cache line (or when the producer sleeps): a producer polling a full ring then
  // takes the head's line once per line of messages instead of once per message.
  // The published head lags by fewer than line_slots, and the producer allows for it
  // (has_room), so such a ring holds from capacity() to capacity() + line_slots - 1
  // messages. Across processes the head is exact after every message: a successor
  // taking over a dead consumer's role must not receive a message twice. (A
  // producer that leaves mid-line and a successor in another process see a head
  // that lags: that only makes the successor wait for a little more room.)
  void consume(std::uint64_t next) noexcept {
    c_.head = next;
    if constexpr (lag_slots != 0) {
      if (stamped ? next % line_slots != 0 : (next & lag_slots) != 0) {
        if (c_.lazy && ctl_->producer_sleeping.load(std::memory_order_relaxed) == 0) return;
      } else {
        c_.lazy = head_may_lag();  // looked at once a line: roles change rarely
      }
    }
    ctl_->head.store(next, std::memory_order_release);
    std::uint64_t count = next;
    if constexpr (!fixed) count = ++c_.records;
    detail::publish_and_wake(ctl_->producer_sleeping, ctl_->consumer_fenced, c_.rate, count);
  }

  bool producer_lost() {
    return c_.peer.lost(ctl_->producer.load(std::memory_order_acquire),
                        [this] { return describe(seg_); });
  }
  // try_peek on an empty ring: a departed producer is seen at once; a dead one is
  // probed at most every liveness period (a pidfd poll is a system call).
  bool producer_gone_cheap() {
    const auto pid = ctl_->producer.load(std::memory_order_acquire);
    if (pid == 0) return false;
    if (pid == detail::departed) return true;
    if (pid == ctl_->consumer.load(std::memory_order_relaxed)) return false;  // ourselves
    const auto now = std::chrono::steady_clock::now();
    if (now < c_.next_probe) return false;
    c_.next_probe = now + detail::liveness_period;
    return producer_lost();
  }

  view peek_impl(std::optional<std::chrono::steady_clock::time_point> deadline,
                 std::stop_token stop) {
    claim_consumer();
    for (;;) {
      if (auto v = front()) return std::move(*v);
      if (closed_now()) {
        if (auto v = front()) return std::move(*v);
        return view(channel_status::closed);
      }
      const auto st = detail::wait_until_ready(
          ctl_->consumer_sleeping,
          [&] {
            // Packed: ask for the next message's line along with the tail's, so the
            // two cache misses of a wake-by-polling overlap instead of following
            // each other. Stamped: the stamp is on the message's line.
            if constexpr (!stamped) __builtin_prefetch(slot(c_.head));
            return closed_now() || published_at_head();
          },
          [&] { return producer_lost(); },
          [&] {
            return c_.peer.cover(ctl_->producer.load(std::memory_order_acquire),
                                 ctl_->consumer_sleeping);
          },
          deadline, stop, spin_, &ctl_->producer_fenced);
      if (st != channel_status::ok) {
        if (auto v = front()) return std::move(*v);  // completed just before it died
        return view(st);
      }
    }
  }

  recv_result<T> take(view v) {
    if (!v) return recv_result<T>(v.status());
    // Decoded into the result itself; a codec_error drops the message (view releases).
    return recv_result<T>(detail::build_value, [&] { return v.decode(); });
  }

  shared_memory seg_;
  detail::ring_control* ctl_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t cap_ = 0;
  std::uint64_t mask_ = 0;
  producer_state p_;
  detail::peer_watch c_peer_for_producer_;
  consumer_state c_;
  int spin_ = detail::spin_rounds;
};

}  // namespace ptk

#include <ptk/ipc/async_recv.hpp>
