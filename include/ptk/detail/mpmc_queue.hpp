// Internal: an unbounded multi-producer/multi-consumer queue with values stored in
// place, in linked blocks of 31 slots. The algorithm is crossbeam's SegQueue
// (Rust, MIT/Apache-2.0), itself after Dmitry Vyukov's bounded queue: a push or a
// pop is one CAS on an index; a block is needed once per 31 pushes and retired by
// whichever of its readers finishes last (into a small cache of blocks for reuse).
//
// Index layout: bits 1.. count positions (32 per block; position 31 of a block is
// never a slot, it marks "the next block is being installed"); bit 0 of the head
// index means "the head's block is not the tail's block" (no need to look at tail).
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <thread>
#include <utility>

namespace ptk::detail {

template <class T>
class mpmc_queue {
  static constexpr std::size_t shift = 1;
  static constexpr std::size_t has_next = 1;
  static constexpr std::size_t lap = 32;
  static constexpr std::size_t block_cap = lap - 1;

  struct slot {
    alignas(T) unsigned char storage[sizeof(T)];
    std::atomic<bool> written{false};  // set once, by the producer, after constructing
    T* value() noexcept { return std::launder(reinterpret_cast<T*>(storage)); }
    void wait_written() const noexcept {
      for (unsigned i = 0; !written.load(std::memory_order_acquire); ++i) snooze(i);
    }
  };

  struct block {
    std::atomic<block*> next{nullptr};
    // Slots whose readers are done with them. Each claim adds its count once, after
    // its last access to the block; whoever completes block_cap retires the block.
    // (One read-modify-write per claim, where a flag per slot would cost one per
    // value, on a cache line the producer has just written.)
    std::atomic<std::uint32_t> finished{0};
    slot slots[block_cap];
    block* wait_next() const noexcept {
      for (unsigned i = 0;; ++i) {
        if (block* n = next.load(std::memory_order_acquire)) return n;
        snooze(i);
      }
    }
  };

  void finish_reads(block* b, std::size_t n) noexcept {
    // acq_rel: every reader's accesses happen before the retiring reader's recycle.
    if (b->finished.fetch_add(static_cast<std::uint32_t>(n), std::memory_order_acq_rel) + n ==
        block_cap) {
      recycle(b);
    }
  }

  // Blocks are recycled through a few cached pointers: a steady stream of pushes
  // and pops then reuses the same warm blocks instead of calling malloc and free
  // once per block_cap values from different threads (which contend on the
  // allocator's arena lock and, for a deep queue, fault in fresh pages). Whole
  // blocks change hands by exchange, so there is no ABA to worry about.
  static constexpr std::size_t cached_blocks = 8;

  void recycle(block* b) noexcept {
    for (auto& c : cache_) {
      if (c.load(std::memory_order_relaxed) != nullptr) continue;
      block* expected = nullptr;
      // Release: the last reads of the block's slots happen before its reuse.
      if (c.compare_exchange_strong(expected, b, std::memory_order_release,
                                    std::memory_order_relaxed)) {
        return;
      }
    }
    delete b;
  }

  block* new_block() {
    for (auto& c : cache_) {
      if (c.load(std::memory_order_relaxed) == nullptr) continue;
      if (block* b = c.exchange(nullptr, std::memory_order_acquire)) {
        b->next.store(nullptr, std::memory_order_relaxed);
        b->finished.store(0, std::memory_order_relaxed);
        for (slot& s : b->slots) s.written.store(false, std::memory_order_relaxed);
        return b;  // published by the release stores that install it
      }
    }
    return new block;
  }

  static void snooze(unsigned i) noexcept {
    if (i < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }

 public:
  mpmc_queue() = default;
  mpmc_queue(const mpmc_queue&) = delete;
  mpmc_queue& operator=(const mpmc_queue&) = delete;

  ~mpmc_queue() {
    std::size_t head = head_index_.load(std::memory_order_relaxed) & ~has_next;
    const std::size_t tail = tail_index_.load(std::memory_order_relaxed) & ~has_next;
    block* b = head_block_.load(std::memory_order_relaxed);
    while (head != tail) {
      const std::size_t offset = (head >> shift) % lap;
      if (offset < block_cap) {
        b->slots[offset].value()->~T();
      } else {
        block* next = b->next.load(std::memory_order_relaxed);
        delete b;
        b = next;
      }
      head += std::size_t{1} << shift;
    }
    delete b;
    for (auto& c : cache_) delete c.load(std::memory_order_relaxed);
  }

  /// Constructs a value from `args` directly in its slot.
  template <class... A>
  void push(A&&... args) {
    std::size_t tail = tail_index_.load(std::memory_order_acquire);
    block* b = tail_block_.load(std::memory_order_acquire);
    block* spare = nullptr;
    for (unsigned spin = 0;; ++spin) {
      const std::size_t offset = (tail >> shift) % lap;
      if (offset == block_cap) {  // another producer is installing the next block
        snooze(spin);
        tail = tail_index_.load(std::memory_order_acquire);
        b = tail_block_.load(std::memory_order_acquire);
        continue;
      }
      if (offset + 1 == block_cap && spare == nullptr) spare = new_block();  // before claiming
      if (b == nullptr) {  // the very first push installs the first block
        block* first = spare != nullptr ? std::exchange(spare, nullptr) : new_block();
        block* expected = nullptr;
        if (tail_block_.compare_exchange_strong(expected, first, std::memory_order_release)) {
          head_block_.store(first, std::memory_order_release);
          b = first;
        } else {
          spare = first;
          tail = tail_index_.load(std::memory_order_acquire);
          b = tail_block_.load(std::memory_order_acquire);
          continue;
        }
      }
      const std::size_t new_tail = tail + (std::size_t{1} << shift);
      // seq_cst: this claim is also the store half of the handshake with sleeping
      // consumers (see thread_pool::notify_after_push).
      if (tail_index_.compare_exchange_weak(tail, new_tail, std::memory_order_seq_cst,
                                            std::memory_order_acquire)) {
        if (offset + 1 == block_cap) {  // took the last slot: install the next block
          block* next = std::exchange(spare, nullptr);
          tail_block_.store(next, std::memory_order_release);
          tail_index_.store(new_tail + (std::size_t{1} << shift), std::memory_order_release);
          b->next.store(next, std::memory_order_release);
        }
        slot& s = b->slots[offset];
        ::new (static_cast<void*>(s.storage)) T(std::forward<A>(args)...);
        s.written.store(true, std::memory_order_release);
        if (spare != nullptr) recycle(spare);  // for a boundary another producer got to first
        return;
      }
      b = tail_block_.load(std::memory_order_acquire);
    }
  }

  /// Pops the oldest value into `out`; false when empty.
  bool try_pop(T& out) {
    return try_pop_many([&out](T&& v) { out = std::move(v); }, 1, 1) == 1;
  }

  /// Pops up to `max` values (at least one, never past the end of the head's block)
  /// with one claim, handing each to `sink` in queue order. Returns how many; 0 when
  /// empty. `share` divides what is queued: a consumer takes available / share + 1,
  /// leaving the rest to other consumers.
  template <class Sink>
  std::size_t try_pop_many(Sink&& sink, std::size_t max, std::size_t share) {
    std::size_t head = head_index_.load(std::memory_order_acquire);
    block* b = head_block_.load(std::memory_order_acquire);
    for (unsigned spin = 0;; ++spin) {
      const std::size_t offset = (head >> shift) % lap;
      if (offset == block_cap) {
        snooze(spin);
        head = head_index_.load(std::memory_order_acquire);
        b = head_block_.load(std::memory_order_acquire);
        continue;
      }
      seq_cst_fence();
      const std::size_t tail = tail_index_.load(std::memory_order_relaxed);
      const std::size_t available = (tail >> shift) - (head >> shift);
      if (available == 0) return 0;
      std::size_t n = available / (share == 0 ? 1 : share) + 1;
      if (n > max) n = max;
      if (n > available) n = available;
      if (n > block_cap - offset) n = block_cap - offset;
      std::size_t new_head = head + (n << shift);
      if ((head >> shift) / lap != (tail >> shift) / lap) new_head |= has_next;
      if (b == nullptr) {
        snooze(spin);
        head = head_index_.load(std::memory_order_acquire);
        b = head_block_.load(std::memory_order_acquire);
        continue;
      }
      if (head_index_.compare_exchange_weak(head, new_head, std::memory_order_seq_cst,
                                            std::memory_order_acquire)) {
        if (offset + n == block_cap) {  // took the block's last slot: move the head on
          block* next = b->wait_next();
          std::size_t next_index = (new_head & ~has_next) + (std::size_t{1} << shift);
          if (next->next.load(std::memory_order_relaxed) != nullptr) next_index |= has_next;
          head_block_.store(next, std::memory_order_release);
          head_index_.store(next_index, std::memory_order_release);
        }
        // The claimed slots, in order. If `sink` throws, the values not handed over
        // yet are destroyed, and the block still learns that this claim is done.
        struct finisher {
          mpmc_queue& q;
          block* b;
          std::size_t next;  // the next slot to hand over
          std::size_t end;
          std::size_t count;
          ~finisher() {
            for (; next < end; ++next) {  // only when `sink` threw (from that slot on)
              slot& sl = b->slots[next];
              sl.wait_written();
              sl.value()->~T();
            }
            q.finish_reads(b, count);
          }
        } claim{*this, b, offset, offset + n, n};
        while (claim.next < claim.end) {
          slot& sl = b->slots[claim.next];
          sl.wait_written();
          sink(std::move(*sl.value()));  // moved straight from the slot to its destination
          sl.value()->~T();
          ++claim.next;
        }
        return n;
      }
      b = head_block_.load(std::memory_order_acquire);
    }
  }

  /// How many values were ever pushed (claimed slots; exact when quiescent).
  [[nodiscard]] std::uint64_t pushed() const noexcept {
    const std::size_t pos = tail_index_.load(std::memory_order_seq_cst) >> shift;
    return pos - pos / lap;  // one position per block is not a slot
  }

  /// A cheap, possibly stale look: false means "probably something to pop". Used to
  /// skip try_pop (and its fence) on the hot path; never to decide to sleep.
  [[nodiscard]] bool empty_hint() const noexcept {
    return (tail_index_.load(std::memory_order_relaxed) >> shift) ==
           (head_index_.load(std::memory_order_relaxed) >> shift);
  }

  /// A snapshot of how many values are queued.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const std::size_t t = tail_index_.load(std::memory_order_seq_cst) >> shift;
    const std::size_t h = head_index_.load(std::memory_order_seq_cst) >> shift;
    const std::size_t pushed_n = t - t / lap;
    const std::size_t popped_n = h - h / lap;
    return pushed_n > popped_n ? pushed_n - popped_n : 0;
  }

 private:
  alignas(64) std::atomic<std::size_t> head_index_{0};
  std::atomic<block*> head_block_{nullptr};
  alignas(64) std::atomic<std::size_t> tail_index_{0};
  std::atomic<block*> tail_block_{nullptr};
  alignas(64) std::atomic<block*> cache_[cached_blocks] = {};
};

}  // namespace ptk::detail
