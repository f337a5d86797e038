/// @file
/// @brief ptk::shared_value and ptk::shared_array: one value or a fixed array in
///        shared memory (Python's multiprocessing.Value and Array).
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/shm.hpp>
#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/shared_memory.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace ptk {

namespace detail {

/// A segment holding a lock and `count` elements of T, shared by value and array.
template <class T>
class shared_elements {
  static_assert(std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>,
                "ptk::shared_value / shared_array hold trivially copyable, pointer-free types: "
                "their bytes are shared between processes as they are");

 public:
  struct control {
    segment_header header;
    alignas(64) shm_lock lock;
  };
  static constexpr std::size_t data_offset =
      (sizeof(control) + alignof(T) - 1) / alignof(T) * alignof(T);

  shared_elements(shared_memory seg, segment_kind kind, std::uint64_t count, bool fresh,
                  const char* kind_name)
      : seg_(std::move(seg)), kind_name_(kind_name) {
    asymmetric_fence::prepare();
    ctl_ = reinterpret_cast<control*>(seg_.data());
    if (fresh) {
      publish_header(ctl_->header, make_info<T>(kind, sizeof(T), count, 0, seg_.size()));
    } else {
      const auto got =
          read_header(seg_.data(), seg_.size(), make_info<T>(kind, sizeof(T), 0, 0, 0), describe());
      count = got.capacity;
      if (count == 0 || bytes_for(count) != seg_.size()) {
        throw channel_error(describe() + ": " + std::to_string(count) +
                            " elements do not match the segment's " + std::to_string(seg_.size()) +
                            " bytes");
      }
    }
    count_ = static_cast<std::size_t>(count);
    data_ = std::launder(reinterpret_cast<T*>(seg_.data() + data_offset));
  }

  static std::size_t bytes_for(std::uint64_t count) {
    if (count == 0 || count > (std::uint64_t{1} << 40) / sizeof(T)) {
      throw std::invalid_argument("ptk shared memory: element count out of range");
    }
    return data_offset + static_cast<std::size_t>(count) * sizeof(T);
  }

  std::string describe() const {
    return std::string("ptk::") + kind_name_ + " '" +
           (seg_.name().empty() ? std::string("memfd") : seg_.name()) + "'";
  }

  template <class F>
  decltype(auto) locked(F&& f) {
    lock_shm(ctl_->lock, [this] { return describe(); });
    struct unlocker {
      shm_lock& l;
      ~unlocker() { unlock_shm(l); }
    } u{ctl_->lock};
    return std::forward<F>(f)();
  }

  shared_memory seg_;
  const char* kind_name_;
  control* ctl_ = nullptr;
  T* data_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace detail

/// @brief One T in shared memory, for several processes (Python's `Value`).
///
/// When T fits a lock-free atomic (integers, small structs on x86-64), load, store,
/// exchange, compare_exchange and fetch_add are atomic without a lock. Every T can be
/// updated under the value's process-shared lock with update(); a process killed
/// while holding that lock does not wedge the others (they take it over, and see
/// the value as it was before the interrupted update only if the update writes it
/// with one final store, as update() does).
/// @code
/// auto counter = ptk::shared_value<long>::create("hits", 0);
/// counter.fetch_add(1);                                   // lock-free, from any process
/// auto peer = ptk::shared_value<long>::open("hits");
/// peer.fetch_add(1);
///
/// struct stats { long calls; double total_ms; };         // updated as a whole
/// auto s = ptk::shared_value<stats>::create("stats", {});
/// s.update([](stats& v) { ++v.calls; v.total_ms += 2.5; });  // under the lock
/// @endcode
/// Use one style per value: an update() may overwrite a lock-free fetch_add that
/// runs at the same time.
/// @tparam T a trivially copyable type without pointers.
template <class T>
class shared_value {
  static constexpr bool lock_free = std::atomic_ref<T>::is_always_lock_free;

 public:
  /// Creates a named value. @param name the segment name. @param initial the value.
  /// @return the value (its handle unlinks the name when destroyed).
  static shared_value create(std::string_view name, const T& initial = T{}) {
    return shared_value(shared_memory::create(name, elems::bytes_for(1)), initial);
  }
  /// Opens a named value. @param name the segment name. @return the value.
  static shared_value open(std::string_view name) {
    return shared_value(shared_memory::open(name));
  }
  /// Creates an anonymous value (pass fd() to a child). @param initial the value.
  /// @return the value.
  static shared_value anonymous(const T& initial = T{}) {
    return shared_value(shared_memory::anonymous(elems::bytes_for(1)), initial);
  }
  /// Maps a value received as a descriptor (takes ownership). @param fd the
  /// descriptor. @return the value.
  static shared_value from_fd(int fd) { return shared_value(shared_memory::from_fd(fd)); }

  /// @return the current value (atomic when lock-free, else read under the lock).
  T load() const {
    if constexpr (lock_free) {
      return std::atomic_ref<T>(*e_.data_).load(std::memory_order_seq_cst);
    } else {
      return e_.locked([&] { return *e_.data_; });
    }
  }
  /// Replaces the value. @param v the new value.
  void store(const T& v) {
    if constexpr (lock_free) {
      std::atomic_ref<T>(*e_.data_).store(v, std::memory_order_seq_cst);
    } else {
      e_.locked([&] { std::memcpy(static_cast<void*>(e_.data_), &v, sizeof(T)); });
    }
  }
  /// Replaces the value atomically. @param v the new value. @return the old one.
  T exchange(const T& v) requires lock_free { return std::atomic_ref<T>(*e_.data_).exchange(v); }
  /// Atomic compare-and-swap. @param expected the value expected (updated on
  /// failure). @param desired the new value. @return whether it was swapped.
  bool compare_exchange(T& expected, const T& desired) requires lock_free {
    return std::atomic_ref<T>(*e_.data_).compare_exchange_strong(expected, desired);
  }
  /// Atomic addition (arithmetic T). @param d what to add. @return the old value.
  T fetch_add(T d) requires(lock_free&& std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    return std::atomic_ref<T>(*e_.data_).fetch_add(d);
  }
  /// Atomic subtraction (arithmetic T). @param d what to subtract. @return the old value.
  T fetch_sub(T d) requires(lock_free&& std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) {
    return std::atomic_ref<T>(*e_.data_).fetch_sub(d);
  }
  /// Runs `f(T&)` on a copy under the process-shared lock and stores the result
  /// with one final write, so a process killed in the middle changes nothing.
  /// Updates are atomic with respect to each other (and to load/store of a T that
  /// is not lock-free); a lock-free fetch_add running at the same time as an update
  /// may be overwritten by it, so use one style per value.
  /// @param f the update. @return what `f` returns.
  template <class F>
  decltype(auto) update(F&& f) {
    return e_.locked([&]() -> decltype(auto) {
      T copy;
      if constexpr (lock_free) {
        copy = std::atomic_ref<T>(*e_.data_).load();  // fetch_add does not take the lock
      } else {
        copy = *e_.data_;
      }
      struct commit {
        shared_value* self;
        T& copy;
        bool ok = false;
        ~commit() {
          if (!ok) return;
          if constexpr (lock_free) {
            std::atomic_ref<T>(*self->e_.data_).store(copy);
          } else {
            std::memcpy(static_cast<void*>(self->e_.data_), &copy, sizeof(T));
          }
        }
      } c{this, copy};
      if constexpr (std::is_void_v<decltype(f(copy))>) {
        f(copy);
        c.ok = true;
      } else {
        decltype(auto) r = f(copy);
        c.ok = true;
        return r;
      }
    });
  }
  /// @return the segment. @return its fd() is what a child needs.
  [[nodiscard]] const shared_memory& segment() const noexcept { return e_.seg_; }
  /// @return the segment's descriptor.
  [[nodiscard]] int fd() const noexcept { return e_.seg_.fd(); }

 private:
  using elems = detail::shared_elements<T>;
  explicit shared_value(shared_memory seg)
      : e_(std::move(seg), detail::segment_kind::value, 1, false, "shared_value") {}
  shared_value(shared_memory seg, const T& initial)
      : e_(std::move(seg), detail::segment_kind::value, 1, true, "shared_value") {
    std::memcpy(static_cast<void*>(e_.data_), &initial, sizeof(T));
  }
  mutable elems e_;
};

/// @brief A fixed-size array of T in shared memory (Python's `Array`).
///
/// Elements are plain memory: index them directly when one process writes each
/// element, use atomic(i) for lock-free atomic access to one element, or with_lock()
/// to work on the whole array under its process-shared lock. Use one style per
/// element: with_lock() does not stop a writer that goes through atomic(i).
/// @code
/// auto a = ptk::shared_array<double>::create("results", 8);
/// a[3] = 1.5;                                         // one writer per element
/// a.atomic(0).fetch_add(1.0);                         // many writers, lock-free
/// use(a.atomic(0).load());                            // a lock-free read
/// // [2], [4] and [5] are only ever changed under the lock:
/// a.with_lock([](std::span<double> all) { all[2] = all[4] + all[5]; });
/// @endcode
/// @tparam T a trivially copyable type without pointers.
template <class T>
class shared_array {
 public:
  /// Creates a named array of `n` zero-initialised elements. @param name the segment
  /// name. @param n the element count. @return the array.
  static shared_array create(std::string_view name, std::size_t n) {
    return shared_array(shared_memory::create(name, elems::bytes_for(n)), n, true);
  }
  /// Opens a named array. @param name the segment name. @return the array.
  static shared_array open(std::string_view name) {
    return shared_array(shared_memory::open(name), 0, false);
  }
  /// Creates an anonymous array. @param n the element count. @return the array.
  static shared_array anonymous(std::size_t n) {
    return shared_array(shared_memory::anonymous(elems::bytes_for(n)), n, true);
  }
  /// Maps an array received as a descriptor (takes ownership). @param fd the
  /// descriptor. @return the array.
  static shared_array from_fd(int fd) { return shared_array(shared_memory::from_fd(fd), 0, false); }

  /// @return the element count.
  [[nodiscard]] std::size_t size() const noexcept { return e_.count_; }
  /// @param i an index below size(). @return element `i` (plain access).
  T& operator[](std::size_t i) noexcept { return e_.data_[i]; }
  /// @param i an index below size(). @return element `i` (plain access).
  const T& operator[](std::size_t i) const noexcept { return e_.data_[i]; }
  /// @param i an index. @return an atomic view of element `i`.
  /// @throws std::out_of_range if `i` is not below size().
  std::atomic_ref<T> atomic(std::size_t i) {
    if (i >= e_.count_) throw std::out_of_range("ptk::shared_array: index " + std::to_string(i));
    return std::atomic_ref<T>(e_.data_[i]);
  }
  /// @return all elements (plain access).
  [[nodiscard]] std::span<T> span() noexcept { return {e_.data_, e_.count_}; }
  /// Runs `f(std::span<T>)` under the array's process-shared lock.
  /// @param f the work. @return what `f` returns.
  template <class F>
  decltype(auto) with_lock(F&& f) {
    return e_.locked([&]() -> decltype(auto) { return f(std::span<T>(e_.data_, e_.count_)); });
  }
  /// @return the segment.
  [[nodiscard]] const shared_memory& segment() const noexcept { return e_.seg_; }
  /// @return the segment's descriptor.
  [[nodiscard]] int fd() const noexcept { return e_.seg_.fd(); }

 private:
  using elems = detail::shared_elements<T>;
  shared_array(shared_memory seg, std::size_t n, bool fresh)
      : e_(std::move(seg), detail::segment_kind::array, n, fresh, "shared_array") {}
  elems e_;
};

}  // namespace ptk
