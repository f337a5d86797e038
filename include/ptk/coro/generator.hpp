/// @file
/// @brief ptk::generator: a synchronous coroutine that yields a sequence (`co_yield`),
///        consumed with range-for or std::ranges.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>

#include <coroutine>
#include <cstddef>
#include <exception>
#include <iterator>
#include <memory>
#include <ranges>
#include <type_traits>
#include <utility>

namespace ptk {

/// @brief A lazy sequence of `T` produced by a coroutine with `co_yield`.
///
/// Nothing runs until the first value is asked for; each increment of the iterator
/// runs the body up to its next `co_yield`. A yielded value is not copied: the
/// iterator refers to it until the next increment. An exception thrown by the body
/// propagates out of `begin()` or `++it`, to the consumer. The generator is a
/// single-pass `std::ranges::input_range` and a view, so it composes with
/// `std::views` (e.g. `gen | std::views::take(3)`). The body cannot `co_await`.
///
/// @code
/// ptk::generator<int> naturals() {
///   for (int i = 0;; ++i) co_yield i;
/// }
/// for (int v : naturals() | std::views::filter(is_prime) | std::views::take(5))
///   std::printf("%d\n", v);  // 2 3 5 7 11
/// @endcode
/// @tparam T the element type (a reference type yields references).
template <class T>
class [[nodiscard]] generator : public std::ranges::view_base {
 public:
  /// The type `*it` gives: a reference to the yielded value.
  using reference = std::conditional_t<std::is_reference_v<T>, T, T&>;
  /// The element type.
  using value_type = std::remove_cvref_t<T>;

  /// @brief The coroutine machinery (used by the compiler).
  class promise_type : public detail::frame_allocated {
   public:
    /// @return the generator owning this coroutine.
    generator get_return_object() noexcept {
      return generator{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    /// @return suspend_always: lazy.
    std::suspend_always initial_suspend() const noexcept { return {}; }
    /// @return suspend_always: the generator destroys the frame.
    std::suspend_always final_suspend() const noexcept { return {}; }
    /// Keeps the address of a yielded lvalue or temporary (alive until resumption).
    /// @param v the value.
    /// @return suspend_always: hand the value to the consumer.
    std::suspend_always yield_value(std::remove_reference_t<reference>& v) noexcept {
      value_ = std::addressof(v);
      return {};
    }
    /// Keeps the address of a yielded temporary (alive until resumption).
    /// @param v the value.
    /// @return suspend_always: hand the value to the consumer.
    std::suspend_always yield_value(std::remove_reference_t<reference>&& v) noexcept {
      value_ = std::addressof(v);
      return {};
    }
    /// Nothing to return at the end.
    void return_void() const noexcept {}
    /// Keeps the exception for the consumer.
    void unhandled_exception() noexcept { error_ = std::current_exception(); }
    /// `co_await` is not allowed in a generator.
    /// @tparam U anything.
    /// @param u unused.
    /// @return never: the overload is deleted.
    template <class U>
    std::suspend_never await_transform(U&& u) = delete;

    /// @return the current value.
    reference value() const noexcept { return static_cast<reference>(*value_); }
    /// Rethrows the body's exception, if it threw.
    void rethrow_if_failed() {
      if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    }

   private:
    std::add_pointer_t<reference> value_ = nullptr;
    std::exception_ptr error_;
  };

  /// @brief The input iterator over a generator.
  class iterator {
   public:
    /// Iterator traits.
    using iterator_concept = std::input_iterator_tag;
    /// Iterator traits.
    using difference_type = std::ptrdiff_t;
    /// Iterator traits.
    using value_type = generator::value_type;

    /// A singular iterator.
    iterator() noexcept = default;
    /// @return the current value.
    reference operator*() const noexcept { return h_.promise().value(); }
    /// Runs the body to its next `co_yield` (rethrowing what it throws).
    /// @return this iterator.
    iterator& operator++() {
      h_.resume();
      if (h_.done()) h_.promise().rethrow_if_failed();
      return *this;
    }
    /// Runs the body to its next `co_yield`.
    void operator++(int) { ++*this; }
    /// @param it an iterator.
    /// @return whether the body has finished.
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
      return !it.h_ || it.h_.done();
    }

   private:
    friend class generator;
    explicit iterator(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> h_;
  };

  /// An empty generator (yields nothing).
  generator() noexcept = default;
  /// Takes over `other`'s coroutine.
  /// @param other the generator to move from.
  generator(generator&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  /// Destroys this generator's coroutine and takes over `other`'s.
  /// @param other the generator to move from.
  /// @return this generator.
  generator& operator=(generator&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  /// Destroys the coroutine frame, even mid-sequence (its locals are destroyed).
  ~generator() {
    if (h_) h_.destroy();
  }

  /// Runs the body to its first `co_yield`. Call once: the sequence is single-pass.
  /// @return an iterator at the first value (or at the end).
  iterator begin() {
    if (!h_) return iterator{};
    h_.resume();
    if (h_.done()) h_.promise().rethrow_if_failed();
    return iterator{h_};
  }
  /// @return the end sentinel.
  [[nodiscard]] std::default_sentinel_t end() const noexcept { return {}; }

 private:
  explicit generator(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

}  // namespace ptk
