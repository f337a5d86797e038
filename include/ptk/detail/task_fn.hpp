// Internal: the type-erased unit of work every ptk executor queues.
//
// A move-only `void()` callable with 48 bytes of inline storage, so the closures
// ptk creates (a function pointer plus a few captures, or a pointer to a shared
// future state) never allocate. Larger callables are boxed on the heap.
#pragma once

#include <ptk/config.hpp>

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>

namespace ptk::detail {

class task_fn {
 public:
  static constexpr std::size_t inline_size = 48;
  static constexpr std::size_t inline_align = alignof(std::max_align_t);

  task_fn() noexcept = default;

  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, task_fn> &&
           std::is_invocable_v<std::remove_cvref_t<F>&>)
      task_fn(F&& f) {  // NOLINT(google-explicit-constructor): a task is made from any callable
    init(std::forward<F>(f));
  }

  /// Replaces the callable with `f`, constructed in place (no intermediate move).
  template <class F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, task_fn> &&
           std::is_invocable_v<std::remove_cvref_t<F>&>) void emplace(F&& f) {
    reset();
    init(std::forward<F>(f));
  }

  task_fn(task_fn&& other) noexcept : ops_(std::exchange(other.ops_, nullptr)) {
    if (ops_ != nullptr) ops_->move(storage_, other.storage_);
  }
  task_fn& operator=(task_fn&& other) noexcept {
    if (this != &other) {
      reset();
      ops_ = std::exchange(other.ops_, nullptr);
      if (ops_ != nullptr) ops_->move(storage_, other.storage_);
    }
    return *this;
  }
  task_fn(const task_fn&) = delete;
  task_fn& operator=(const task_fn&) = delete;
  ~task_fn() { reset(); }

  explicit operator bool() const noexcept { return ops_ != nullptr; }

  /// Runs the callable once and destroys it (the task is empty afterwards), also
  /// when it throws.
  void operator()() {
    const ops* o = std::exchange(ops_, nullptr);
    o->invoke_and_destroy(storage_);
  }

  /// Destroys the callable without running it.
  void reset() noexcept {
    if (const ops* o = std::exchange(ops_, nullptr)) o->destroy(storage_);
  }

 private:
  struct ops {
    void (*invoke_and_destroy)(void*);
    void (*move)(void* to, void* from) noexcept;  // move-constructs into `to`, destroys `from`
    void (*destroy)(void*) noexcept;
  };

  template <class F>
  void init(F&& f) {
    using D = std::remove_cvref_t<F>;
    if constexpr (fits_inline<D>) {
      ::new (static_cast<void*>(storage_)) D(std::forward<F>(f));
      ops_ = &inline_ops<D>;
    } else {
      *reinterpret_cast<D**>(storage_) = new D(std::forward<F>(f));
      ops_ = &boxed_ops<D>;
    }
  }

  template <class D>
  static constexpr bool fits_inline =
      sizeof(D) <= inline_size &&
      alignof(D) <= inline_align&& std::is_nothrow_move_constructible_v<D>;

  template <class D>
  static constexpr ops inline_ops{
      [](void* p) {
        D& d = *std::launder(static_cast<D*>(p));
        struct destroy_at_exit {
          D& d;
          ~destroy_at_exit() { std::destroy_at(&d); }
        } guard{d};
        d();
      },
      [](void* to, void* from) noexcept {
        D& src = *std::launder(static_cast<D*>(from));
        ::new (to) D(std::move(src));
        src.~D();
      },
      [](void* p) noexcept { std::launder(static_cast<D*>(p))->~D(); },
  };

  template <class D>
  static constexpr ops boxed_ops{
      [](void* p) {
        std::unique_ptr<D> d(*static_cast<D**>(p));
        (*d)();
      },
      [](void* to, void* from) noexcept { *static_cast<D**>(to) = *static_cast<D**>(from); },
      [](void* p) noexcept { delete *static_cast<D**>(p); },
  };

  const ops* ops_ = nullptr;
  alignas(inline_align) std::byte storage_[inline_size];
};

static_assert(sizeof(task_fn) == 64, "a task is one cache line");

}  // namespace ptk::detail
