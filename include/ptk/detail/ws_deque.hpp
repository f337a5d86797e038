// Internal: the Chase-Lev work-stealing deque, with the memory orderings of
// Lê, Pop, Cohen and Zappa Nardelli, "Correct and Efficient Work-Stealing for Weak
// Memory Models" (PPoPP 2013).
//
// The owner pushes and pops at the bottom (LIFO: the task it just spawned is hot in
// its cache); thieves take from the top (FIFO: the oldest, usually largest, work).
// Elements are pointers because a thief reads a slot before it knows whether its
// claim succeeded, which is only race-free for atomic, trivially copyable values.
// Arrays grow by doubling; an outgrown array stays alive until the deque dies, since
// a slow thief may still be reading it.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/atomic.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace ptk::detail {

template <class T>
class ws_deque {
 public:
  explicit ws_deque(std::size_t capacity = 256) {
    std::size_t cap = 2;
    while (cap < capacity) cap *= 2;
    arrays_.push_back(std::make_unique<ring>(cap));
    array_.store(arrays_.back().get(), std::memory_order_relaxed);
  }
  ws_deque(const ws_deque&) = delete;
  ws_deque& operator=(const ws_deque&) = delete;
  ~ws_deque() = default;

  /// Owner only.
  void push(T* item) {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed);
    const std::int64_t t = top_.load(std::memory_order_acquire);
    ring* a = array_.load(std::memory_order_relaxed);
    if (b - t > a->mask) a = grow(a, t, b);
    a->put(b, item);
    // Release publishes the item (and what it points to) to a thief that reads
    // `bottom_` with acquire; on x86 this is a plain store.
    bottom_.store(b + 1, std::memory_order_release);
  }

  /// Owner only. nullptr when empty.
  T* pop() {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed) - 1;
    ring* a = array_.load(std::memory_order_relaxed);
    bottom_.store(b, std::memory_order_relaxed);
    // The owner's claim (bottom) and a thief's claim (top) must be ordered against
    // each other: this fence pairs with the one in steal().
    seq_cst_fence();
    std::int64_t t = top_.load(std::memory_order_relaxed);
    if (t > b) {  // empty
      bottom_.store(b + 1, std::memory_order_relaxed);
      return nullptr;
    }
    T* item = a->get(b);
    if (t == b) {  // the last item: race the thieves for it
      if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                        std::memory_order_relaxed)) {
        item = nullptr;
      }
      bottom_.store(b + 1, std::memory_order_relaxed);
    }
    return item;
  }

  /// Any thread. nullptr when empty or when another thread won the race.
  T* steal() {
    std::int64_t t = top_.load(std::memory_order_acquire);
    seq_cst_fence();
    const std::int64_t b = bottom_.load(std::memory_order_acquire);
    if (t >= b) return nullptr;
    ring* a = array_.load(std::memory_order_acquire);
    T* item = a->get(t);
    if (!top_.compare_exchange_strong(t, t + 1, std::memory_order_seq_cst,
                                      std::memory_order_relaxed)) {
      return nullptr;
    }
    return item;
  }

  /// A snapshot; exact only when nobody else is touching the deque.
  [[nodiscard]] std::size_t size_approx() const noexcept {
    const std::int64_t b = bottom_.load(std::memory_order_relaxed);
    const std::int64_t t = top_.load(std::memory_order_relaxed);
    return b > t ? static_cast<std::size_t>(b - t) : 0;
  }

  [[nodiscard]] bool empty_approx() const noexcept { return size_approx() == 0; }

 private:
  struct ring {
    explicit ring(std::size_t cap)
        : mask(static_cast<std::int64_t>(cap) - 1), slots(new std::atomic<T*>[cap]) {}
    void put(std::int64_t i, T* v) noexcept { slot(i).store(v, std::memory_order_relaxed); }
    T* get(std::int64_t i) const noexcept { return slot(i).load(std::memory_order_relaxed); }
    std::atomic<T*>& slot(std::int64_t i) const noexcept {
      return slots[static_cast<std::size_t>(i & mask)];
    }
    std::int64_t mask;
    std::unique_ptr<std::atomic<T*>[]> slots;
  };

  ring* grow(ring* old, std::int64_t t, std::int64_t b) {
    auto bigger = std::make_unique<ring>(static_cast<std::size_t>(old->mask + 1) * 2);
    for (std::int64_t i = t; i < b; ++i) bigger->put(i, old->get(i));
    ring* raw = bigger.get();
    arrays_.push_back(std::move(bigger));
    array_.store(raw, std::memory_order_release);
    return raw;
  }

  alignas(64) std::atomic<std::int64_t> top_{0};
  alignas(64) std::atomic<std::int64_t> bottom_{0};
  alignas(64) std::atomic<ring*> array_{nullptr};
  std::vector<std::unique_ptr<ring>> arrays_;  // owner only; every array ever used
};

}  // namespace ptk::detail
