// Internal: a submission lane, the queue that one outside thread posts to a pool
// through.
//
// A shared multi-producer queue makes every post claim its slot with a locked
// read-modify-write on a line that the consumers read too; on x86 that instruction
// also waits for the poster's earlier stores (the last task, a line a worker has
// just read) to reach the cache. A lane has one producer at a time, so a post is
// plain stores: the task's record, then the published position (a release store,
// no lock prefix).
//
// Records are packed: a header (the record's operations) and the callable itself,
// rounded up to 16 bytes, so an empty lambda with the pool pointer takes 32 bytes
// rather than a 64-byte task_fn slot, and fewer cache lines travel from the
// producer's core to the consumers'. Records fill 16 KiB segments; a full segment
// gets an end marker and a link to the next, so a lane is unbounded and keeps its
// producer's order. Consumed segments go back to a process-wide cache.
//
// Consumers take records under a try-lock: one consumer at a time moves a batch
// out (noexcept moves into task_fn objects); another finding it taken looks
// elsewhere. Nothing a consumer reads can be overwritten meanwhile, and no index is
// read speculatively.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/task_fn.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace ptk::detail {

class task_lane {
 public:
  static constexpr std::size_t segment_bytes = 16384;

  task_lane() : head_seg_(new_segment()), tail_seg_(head_seg_) {}
  task_lane(const task_lane&) = delete;
  task_lane& operator=(const task_lane&) = delete;

  /// Destroys the records nobody took, then frees the segments.
  ~task_lane() {
    const std::uint64_t end = published_.load(std::memory_order_acquire);
    std::uint64_t pos = taken_.load(std::memory_order_relaxed);
    while (pos != end) {
      std::byte* rec = head_seg_->bytes + head_off_;
      const record_ops* ops = header(rec);
      if (ops == &end_marker) {
        pos += advance_segment();
        continue;
      }
      ops->destroy(rec + ops->offset);
      head_off_ += ops->size;
      pos += ops->size;
    }
    for (segment* s = head_seg_; s != nullptr;) {
      segment* next = s->next.load(std::memory_order_relaxed);
      free_segment(s);
      s = next;
    }
  }

  // --- the producer: the thread that owns the lane ---------------------------------

  /// Appends `f` as one record and publishes it. Strong guarantee: if allocating a
  /// segment or constructing the callable throws, nothing is published.
  template <class F>
  void push(F&& f) {
    using D = stored_t<std::decay_t<F>>;
    constexpr std::size_t off = alignof(D) <= 8 ? 8 : 16;
    constexpr std::size_t size = (off + sizeof(D) + 15) / 16 * 16;
    static_assert(size + marker_bytes <= segment_bytes);
    // Keep room for the end marker, so a full segment can always say so.
    if (tail_off_ + size + marker_bytes > segment_bytes) next_segment();
    std::byte* rec = tail_seg_->bytes + tail_off_;
    ::new (static_cast<void*>(rec + off)) D(std::forward<F>(f));
    const record_ops* ops = &ops_for<D, off, size>;
    std::memcpy(rec, &ops, sizeof ops);
    tail_off_ += size;
    tail_ += size;
    // Counted before it is visible: the pool's idle test relies on it (the release
    // store below carries this relaxed one).
    pushed_.store(++count_, std::memory_order_relaxed);
    published_.store(tail_, std::memory_order_release);
  }

  // --- consumers: any thread --------------------------------------------------------

  /// Moves up to `max` tasks, oldest first, into `out`: a fair share of what waits,
  /// waiting / share (at least one). Returns how many; 0 when the lane is empty or
  /// another consumer is taking from it right now.
  std::size_t try_take(task_fn* out, std::size_t max, std::size_t share) noexcept {
    if (busy_.load(std::memory_order_relaxed) || busy_.exchange(true, std::memory_order_acquire)) {
      return 0;
    }
    const std::uint64_t end = published_.load(std::memory_order_acquire);
    const std::uint64_t waiting =
        pushed_.load(std::memory_order_relaxed) - taken_count_.load(std::memory_order_relaxed);
    if (share > 1 && waiting / share < max) {
      max = waiting / share > 0 ? static_cast<std::size_t>(waiting / share) : 1;
    }
    std::uint64_t pos = taken_.load(std::memory_order_relaxed);
    std::size_t n = 0;
    while (pos != end && n < max) {
      std::byte* rec = head_seg_->bytes + head_off_;
      const record_ops* ops = header(rec);
      if (ops == &end_marker) {
        pos += advance_segment();
        continue;
      }
      ops->move_to(rec + ops->offset, out[n++]);
      head_off_ += ops->size;
      pos += ops->size;
    }
    taken_count_.store(taken_count_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    taken_.store(pos, std::memory_order_release);
    busy_.store(false, std::memory_order_release);
    return n;
  }

  /// A cheap, possibly stale look: false means "probably something to take".
  [[nodiscard]] bool empty_hint() const noexcept {
    return published_.load(std::memory_order_relaxed) == taken_.load(std::memory_order_relaxed);
  }

  /// Whether anything is published and not taken (seq_cst loads, for the last look
  /// before a worker sleeps).
  [[nodiscard]] bool empty() const noexcept {
    return published_.load(std::memory_order_seq_cst) == taken_.load(std::memory_order_seq_cst);
  }

  /// How many tasks were ever pushed.
  [[nodiscard]] std::uint64_t pushed() const noexcept {
    return pushed_.load(std::memory_order_seq_cst);
  }

  /// A snapshot of how many tasks wait in the lane.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const std::uint64_t taken = taken_count_.load(std::memory_order_relaxed);
    const std::uint64_t pushed = pushed_.load(std::memory_order_relaxed);
    return pushed > taken ? static_cast<std::size_t>(pushed - taken) : 0;
  }

  // --- ownership: which thread produces -------------------------------------------

  /// Makes the calling thread (`who`: a token unique to it) the producer, if the
  /// lane has none.
  bool try_own(const void* who) noexcept {
    bool expected = false;
    if (!owned_.compare_exchange_strong(expected, true, std::memory_order_acquire,
                                        std::memory_order_relaxed)) {
      return false;
    }
    last_owner_.store(who, std::memory_order_relaxed);
    return true;
  }
  /// @return the token of the thread that owned the lane last.
  [[nodiscard]] const void* last_owner() const noexcept {
    return last_owner_.load(std::memory_order_relaxed);
  }
  /// The producer is done with the lane (its later pushes go elsewhere).
  void disown() noexcept { owned_.store(false, std::memory_order_release); }
  /// The lane's pool is gone: no producer should keep it.
  void orphan() noexcept { orphaned_.store(true, std::memory_order_release); }
  /// @return whether the lane's pool is gone.
  [[nodiscard]] bool orphaned() const noexcept { return orphaned_.load(std::memory_order_acquire); }

 private:
  struct record_ops {
    std::uint32_t size;    // bytes, header included (0: the end marker)
    std::uint32_t offset;  // of the callable, from the record's start
    void (*move_to)(void* payload, task_fn& out) noexcept;  // and destroys the payload
    void (*destroy)(void* payload) noexcept;
  };

  struct segment {
    std::atomic<segment*> next{nullptr};
    alignas(64) std::byte bytes[segment_bytes];
  };

  static constexpr std::size_t marker_bytes = 16;

  // Segments freed by any lane wait here (up to 8 MiB) for the next segment any lane
  // needs: a burst that queues megabytes, or a new pool after an old one, then reuses
  // memory already mapped instead of taking a page fault per 4 KiB again. One lock
  // per 16 KiB of tasks. Never destroyed, so a lane freed late in the process's
  // exit still finds it.
  struct segment_cache {
    static constexpr std::size_t max_segments = 512;
    std::mutex mutex;
    std::vector<segment*> free;
  };
  static segment_cache& cache() {
    static segment_cache* const c = new segment_cache;  // NOLINT: immortal on purpose
    return *c;
  }
  static segment* new_segment() {
    segment_cache& c = cache();
    {
      const std::lock_guard lock(c.mutex);
      if (!c.free.empty()) {
        segment* s = c.free.back();
        c.free.pop_back();
        s->next.store(nullptr, std::memory_order_relaxed);
        return s;
      }
    }
    return new segment;
  }
  static void free_segment(segment* s) noexcept {
    segment_cache& c = cache();
    {
      const std::lock_guard lock(c.mutex);
      if (c.free.size() < segment_cache::max_segments) {
        try {
          c.free.push_back(s);
          return;
        } catch (...) {  // no room to remember it: free it instead
        }
      }
    }
    delete s;
  }

  // A callable is stored as itself when task_fn would hold it inline (so moving it
  // out cannot throw or allocate), else as a task_fn that boxes it.
  template <class C>
  static constexpr bool storable =
      sizeof(C) <= task_fn::inline_size &&
      alignof(C) <= task_fn::inline_align&& std::is_nothrow_move_constructible_v<C>;
  template <class C>
  using stored_t = std::conditional_t<storable<C>, C, task_fn>;

  template <class D, std::size_t Off, std::size_t Size>
  static constexpr record_ops ops_for{
      static_cast<std::uint32_t>(Size),
      static_cast<std::uint32_t>(Off),
      [](void* p, task_fn& out) noexcept {
        D& d = *std::launder(static_cast<D*>(p));
        if constexpr (std::is_same_v<D, task_fn>) {
          out = std::move(d);
        } else {
          out.emplace(std::move(d));  // inline in task_fn: no allocation, no throw
        }
        d.~D();
      },
      [](void* p) noexcept { std::launder(static_cast<D*>(p))->~D(); },
  };
  static constexpr record_ops end_marker{0, 0, nullptr, nullptr};

  static const record_ops* header(const std::byte* rec) noexcept {
    const record_ops* ops = nullptr;
    std::memcpy(&ops, rec, sizeof ops);
    return ops;
  }

  // Producer: ends the current segment with a marker and continues in a new one.
  void next_segment() {
    segment* s = new_segment();  // may throw: nothing has changed yet
    const record_ops* marker = &end_marker;
    std::memcpy(tail_seg_->bytes + tail_off_, &marker, sizeof marker);
    // Published by the release store of the next push, before which no consumer
    // reads the marker.
    tail_seg_->next.store(s, std::memory_order_relaxed);
    tail_ += segment_bytes - tail_off_;
    tail_seg_ = s;
    tail_off_ = 0;
  }

  // Consumer (holding the lock): leaves a finished segment. Returns the positions
  // skipped.
  std::uint64_t advance_segment() noexcept {
    segment* done = head_seg_;
    const std::uint64_t skipped = segment_bytes - head_off_;
    head_seg_ = done->next.load(std::memory_order_relaxed);
    head_off_ = 0;
    free_segment(done);  // the cache's lock orders these reads before its reuse
    return skipped;
  }

  // The consumers' line: the lock, what they have taken, where they read.
  alignas(64) std::atomic<bool> busy_{false};
  std::atomic<std::uint64_t> taken_{0};        // positions (bytes) consumed
  std::atomic<std::uint64_t> taken_count_{0};  // tasks consumed
  segment* head_seg_;
  std::size_t head_off_ = 0;
  // What the producer has published: it only stores here, consumers read.
  alignas(64) std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> pushed_{0};
  // The producer's own cursor, on a line nobody else reads: its loads never wait
  // for a line that a consumer's read has just taken away.
  alignas(64) segment* tail_seg_;
  std::size_t tail_off_ = 0;
  std::uint64_t tail_ = 0;
  std::uint64_t count_ = 0;
  // Cold: who owns the lane.
  alignas(64) std::atomic<bool> owned_{false};
  std::atomic<bool> orphaned_{false};
  std::atomic<const void*> last_owner_{nullptr};
};

/// A worker's batch of tasks taken from a lane. The owner runs them in order, in
/// place; other workers may claim (steal) any task not yet started, so a task that
/// blocks does not hold the rest of its batch hostage. A claim is one atomic add
/// (the owner) or compare-exchange (a thief) on the batch's state word, which
/// carries a generation so a thief's stale claim fails once the batch is refilled.
class task_batch {
 public:
  static constexpr std::size_t capacity = 64;

  task_batch() = default;
  task_batch(const task_batch&) = delete;
  task_batch& operator=(const task_batch&) = delete;

  // --- the owner ------------------------------------------------------------------

  /// Whether every task is claimed and every thief has moved its task out, so the
  /// slots may be refilled.
  [[nodiscard]] bool reusable() const noexcept {
    const std::uint64_t s = state_.load(std::memory_order_acquire);
    return index(s) >= count(s) && stolen_.load(std::memory_order_acquire) == count(s) - own_;
  }
  /// The slots to fill (only when reusable()).
  task_fn* slots() noexcept { return slots_; }
  /// Publishes `n` filled slots; the owner claims the first one itself, and
  /// returns it.
  task_fn& publish(std::size_t n) noexcept {
    own_ = 1;
    stolen_.store(0, std::memory_order_relaxed);
    const std::uint64_t gen =
        (generation(state_.load(std::memory_order_relaxed)) + 1) & 0xFFFFFFFFU;
    // Release: the slots are written before any thief can claim them.
    state_.store(gen << 32 | static_cast<std::uint64_t>(n) << 16 | 1U, std::memory_order_release);
    return slots_[0];
  }
  /// Claims the next task for the owner; nullptr when none is left.
  task_fn* claim() noexcept {
    // Looked at first, so that claims on a finished batch do not move the index on.
    if (const std::uint64_t seen = state_.load(std::memory_order_relaxed);
        index(seen) >= count(seen)) {
      return nullptr;
    }
    const std::uint64_t s = state_.fetch_add(1, std::memory_order_acq_rel);
    if (index(s) >= count(s)) return nullptr;
    ++own_;
    return &slots_[index(s)];
  }

  // --- other workers --------------------------------------------------------------

  /// Claims the oldest unstarted task into `out`; false when there is none.
  bool steal(task_fn& out) noexcept {
    std::uint64_t s = state_.load(std::memory_order_acquire);
    while (index(s) < count(s)) {
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        out = std::move(slots_[index(s)]);
        // Release: the move is done before the owner refills the slot.
        stolen_.fetch_add(1, std::memory_order_release);
        return true;
      }
    }
    return false;
  }

  /// How many tasks are not claimed yet (a snapshot).
  [[nodiscard]] std::size_t unclaimed() const noexcept {
    const std::uint64_t s = state_.load(std::memory_order_seq_cst);
    return index(s) < count(s) ? count(s) - index(s) : 0;
  }

 private:
  static std::uint32_t index(std::uint64_t s) noexcept { return s & 0xFFFFU; }
  static std::uint32_t count(std::uint64_t s) noexcept { return (s >> 16) & 0xFFFFU; }
  static std::uint64_t generation(std::uint64_t s) noexcept { return s >> 32; }

  // generation (32 bits) | count (16) | next index to claim (16). The index runs
  // past the count only by an owner's claim that lost a race with the thieves for
  // the last task, after which claim() no longer adds.
  alignas(64) std::atomic<std::uint64_t> state_{0};
  std::atomic<std::uint32_t> stolen_{0};  // thieves done moving out, this generation
  std::uint32_t own_ = 0;                 // the owner's claims, this generation
  alignas(64) task_fn slots_[capacity];
};

// Each thread's lanes: the last one used (a plain thread_local, checked on every
// post), and up to four it owns, released when the thread exits.
struct lane_hint {
  std::uint64_t set = 0;  // the lane_set's id
  task_lane* lane = nullptr;
  bool dead = false;  // the thread's lanes are released: post through the shared queue
};
inline thread_local constinit lane_hint current_lane{};

struct lane_cache {
  struct entry {
    std::uint64_t set = 0;
    std::shared_ptr<task_lane> lane;  // keeps the lane alive if its pool goes first
  };
  static constexpr std::size_t size = 4;
  entry entries[size];
  std::size_t next_victim = 0;
  lane_cache() = default;
  lane_cache(const lane_cache&) = delete;
  lane_cache& operator=(const lane_cache&) = delete;
  ~lane_cache() {
    current_lane = lane_hint{0, nullptr, true};
    for (entry& e : entries) {
      if (e.lane) e.lane->disown();
    }
  }
};

/// The lanes of one pool: at most max_lanes, each owned by one posting thread at a
/// time; a thread that cannot get one posts through the pool's shared queue.
class lane_set {
 public:
  static constexpr unsigned max_lanes = 64;

  lane_set() { owners_.reserve(max_lanes); }
  lane_set(const lane_set&) = delete;
  lane_set& operator=(const lane_set&) = delete;
  ~lane_set() {
    for (auto& l : owners_) l->orphan();
  }

  /// The calling thread's lane, claimed on its first post; nullptr when every lane
  /// is owned (or the thread is exiting).
  task_lane* mine() {
    if (current_lane.set == id_) return current_lane.lane;
    return mine_slow();
  }

  /// How many lanes exist (they are never removed before the set is destroyed).
  [[nodiscard]] unsigned size() const noexcept { return count_.load(std::memory_order_acquire); }
  /// Lane `i`, for `i < size()`.
  [[nodiscard]] task_lane& operator[](unsigned i) const noexcept {
    return *lanes_[i].load(std::memory_order_acquire);
  }

 private:
  task_lane* mine_slow() {
    if (current_lane.dead) return nullptr;
    thread_local lane_cache cache;
    for (auto& e : cache.entries) {
      if (e.set == id_) {
        current_lane = lane_hint{id_, e.lane.get(), false};
        return e.lane.get();
      }
    }
    std::shared_ptr<task_lane> lane = claim(&cache);
    if (!lane) return nullptr;
    lane_cache::entry* slot = nullptr;
    for (auto& e : cache.entries) {
      if (!e.lane || e.lane->orphaned()) {
        slot = &e;
        break;
      }
    }
    if (slot == nullptr) slot = &cache.entries[cache.next_victim++ % lane_cache::size];
    if (slot->lane) slot->lane->disown();
    slot->set = id_;
    slot->lane = std::move(lane);
    current_lane = lane_hint{id_, slot->lane.get(), false};
    return slot->lane.get();
  }

  // A free lane for the thread `who`: the one it had before if it is free (what it
  // posted there then still runs before what it posts now), else any, else a new one.
  std::shared_ptr<task_lane> claim(const void* who) {
    const std::lock_guard lock(mutex_);
    for (auto& l : owners_) {
      if (l->last_owner() == who && l->try_own(who)) return l;
    }
    for (auto& l : owners_) {
      if (l->try_own(who)) return l;
    }
    if (owners_.size() == max_lanes) return nullptr;
    auto l = std::make_shared<task_lane>();
    l->try_own(who);
    lanes_[owners_.size()].store(l.get(), std::memory_order_release);
    owners_.push_back(l);  // reserved: cannot throw
    count_.store(static_cast<unsigned>(owners_.size()), std::memory_order_release);
    return l;
  }

  static std::uint64_t next_id() noexcept {
    static constinit std::atomic<std::uint64_t> counter{0};
    return counter.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  const std::uint64_t id_ = next_id();  // never reused, unlike the pool's address
  std::atomic<unsigned> count_{0};
  std::atomic<task_lane*> lanes_[max_lanes] = {};
  std::mutex mutex_;
  std::vector<std::shared_ptr<task_lane>> owners_;
};

}  // namespace ptk::detail
