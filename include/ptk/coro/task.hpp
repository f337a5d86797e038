/// @file
/// @brief ptk::task: a lazy, move-only coroutine with symmetric transfer, the
///        cancellation pieces every ptk coroutine shares (ptk::get_stop_token,
///        ptk::operation_cancelled) and the per-thread frame allocator behind them.
///
/// @code
/// ptk::task<int> answer() { co_return 42; }
/// ptk::task<int> twice() { co_return 2 * co_await answer(); }
/// int v = ptk::sync_wait(twice());  // 84
/// @endcode
#pragma once

#include <ptk/config.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

#if defined(__SANITIZE_ADDRESS__)
#define PTK_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PTK_ASAN 1
#endif
#endif
#if defined(PTK_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace ptk {

template <class T>
class task;

/// @brief Counters of the calling thread's coroutine frame allocator.
///
/// Every ptk coroutine frame (ptk::task, ptk::generator, the helpers of
/// ptk::when_all, ptk::when_any, ptk::async_scope and ptk::sync_wait) comes from a
/// per-thread cache of freed frames, sorted into 32-byte size classes up to 2 KiB.
/// A frame freed on a thread goes to that thread's cache, which keeps at most
/// 128 KiB of frames per size class and 1 MiB in all (plus one frame per class, kept
/// apart for the free-then-allocate pattern of awaiting tasks one after another), so
/// a chain of a thousand nested tasks is served by the thread alone. Beyond that,
/// batches of 32 frames move to a process-wide depot of at most 4 MiB, where threads
/// whose cache ran dry take them back (frames created on one thread and finished on
/// a pool worker return to the creating thread this way, without malloc); beyond
/// the depot's limit, and above 2 KiB, frames go back to the global heap
/// (`operator delete`). A thread's cache is released when the thread exits.
struct frame_allocator_stats {
  std::uint64_t allocations = 0;  ///< frames allocated by this thread
  std::uint64_t hits = 0;         ///< allocations served from the caches (no malloc)
  std::uint64_t misses = 0;       ///< allocations of a cacheable size that had to malloc
  std::uint64_t oversize = 0;     ///< allocations over 2 KiB, never cached
  std::uint64_t released = 0;     ///< frees sent to the global heap because the caches were full
  std::size_t cached_bytes = 0;   ///< bytes held by this thread's cache now
};

namespace detail {

inline constexpr std::size_t frame_granule = 32;
inline constexpr std::size_t frame_classes = 64;  // frames of up to 64 * 32 = 2048 bytes
inline constexpr std::uint32_t frame_batch = 32;  // frames moved to or from the depot at once
inline constexpr std::size_t frame_depot_limit = std::size_t{4} << 20;
inline constexpr std::size_t frame_class_limit = std::size_t{128} << 10;  // per thread
inline constexpr std::size_t frame_cache_limit = std::size_t{1} << 20;    // per thread
static_assert(frame_granule % __STDCPP_DEFAULT_NEW_ALIGNMENT__ == 0,
              "size classes keep operator new's alignment");

struct frame_block {
  frame_block* next;        // the next frame in a list or batch
  frame_block* next_batch;  // in the depot, on a batch's first frame: the next batch
};
static_assert(sizeof(frame_block) <= frame_granule, "a link fits in the smallest frame");

// Reads a link of a cached (and, under ASan, poisoned) frame.
inline frame_block* frame_next(frame_block* b) noexcept {
#if defined(PTK_ASAN)
  __asan_unpoison_memory_region(b, sizeof(frame_block));
  frame_block* n = b->next;
  __asan_poison_memory_region(b, sizeof(frame_block));
  return n;
#else
  return b->next;
#endif
}

// The process-wide depot: per size class, a stack of batches of frame_batch frames,
// each under its own mutex (taken once per batch, never on the per-frame path).
// Never destroyed: threads may still free frames while static objects are destroyed.
struct frame_depot {
  std::mutex mutex[frame_classes];
  frame_block* batches[frame_classes] = {};
  std::atomic<std::size_t> bytes{0};
};

inline frame_depot& the_frame_depot() {
  static frame_depot* const depot = new frame_depot;
  return *depot;
}

// Trivially destructible and constant-initialised, so the hot path reads it with a
// plain thread-pointer-relative access (no TLS init guard). The reaper below frees
// the blocks when the thread exits.
struct frame_cache {
  // One frame per class, reused first. Awaiting tasks one after another frees a frame
  // and allocates one of the same size at once: through this slot the pair touches
  // nothing but the slot itself (no list link, no count), so successive awaits do not
  // form a chain of dependent loads and stores through memory.
  frame_block* hot[frame_classes];
  frame_block* heads[frame_classes];
  std::uint32_t counts[frame_classes];
  frame_allocator_stats stats;
  bool reaper_armed;
  bool dead;  // the thread is exiting: free straight to the heap
};

inline thread_local constinit frame_cache tls_frame_cache{};

struct frame_cache_reaper {
  frame_cache_reaper() = default;
  frame_cache_reaper(const frame_cache_reaper&) = delete;
  frame_cache_reaper& operator=(const frame_cache_reaper&) = delete;
  ~frame_cache_reaper() {
    frame_cache& c = tls_frame_cache;
    c.dead = true;
    for (frame_block*& b : c.hot) {
      if (b != nullptr) ::operator delete(std::exchange(b, nullptr));
    }
    for (frame_block*& head : c.heads) {
      while (head != nullptr) {
        frame_block* b = head;
        head = frame_next(b);
        ::operator delete(b);
      }
    }
    for (std::uint32_t& n : c.counts) n = 0;
    c.stats.cached_bytes = 0;
  }
};

inline void arm_frame_cache_reaper() {
  thread_local frame_cache_reaper reaper;  // registered for thread exit on first pass
  tls_frame_cache.reaper_armed = true;
}

// Refills an empty class of the calling thread's cache with a batch from the depot.
inline bool frame_refill(frame_cache& c, std::size_t cls) {
  frame_depot& d = the_frame_depot();
  frame_block* batch = nullptr;
  {
    const std::lock_guard lock(d.mutex[cls - 1]);
    batch = d.batches[cls - 1];
    if (batch == nullptr) return false;
#if defined(PTK_ASAN)
    __asan_unpoison_memory_region(batch, sizeof(frame_block));
#endif
    d.batches[cls - 1] = batch->next_batch;
#if defined(PTK_ASAN)
    __asan_poison_memory_region(batch, sizeof(frame_block));
#endif
  }
  d.bytes.fetch_sub(frame_batch * cls * frame_granule, std::memory_order_relaxed);
  c.heads[cls - 1] = batch;
  c.counts[cls - 1] = frame_batch;
  c.stats.cached_bytes += frame_batch * cls * frame_granule;
  return true;
}

// Moves the oldest frame_batch frames of a full class to the depot, or to the heap
// when the depot is full.
[[gnu::noinline]] inline void frame_spill(frame_cache& c, std::size_t cls) noexcept {
  const std::size_t bytes = frame_batch * cls * frame_granule;
  // The batch is the list's first frame_batch frames: cut it after the last of them.
  frame_block* batch = c.heads[cls - 1];
  frame_block* last = batch;
  for (std::uint32_t i = 1; i < frame_batch; ++i) last = frame_next(last);
#if defined(PTK_ASAN)
  __asan_unpoison_memory_region(last, sizeof(frame_block));
#endif
  c.heads[cls - 1] = last->next;
  last->next = nullptr;
#if defined(PTK_ASAN)
  __asan_poison_memory_region(last, sizeof(frame_block));
#endif
  c.counts[cls - 1] -= frame_batch;
  c.stats.cached_bytes -= bytes;
  frame_depot& d = the_frame_depot();
#if defined(PTK_ASAN)
  // LeakSanitizer does not follow the links inside poisoned cached frames, so under
  // ASan every batch parked in the depot would be reported as leaked: free them.
  constexpr bool use_depot = false;
#else
  constexpr bool use_depot = true;
#endif
  if (use_depot &&
      d.bytes.fetch_add(bytes, std::memory_order_relaxed) + bytes <= frame_depot_limit) {
    const std::lock_guard lock(d.mutex[cls - 1]);
#if defined(PTK_ASAN)
    __asan_unpoison_memory_region(batch, sizeof(frame_block));
#endif
    batch->next_batch = d.batches[cls - 1];
#if defined(PTK_ASAN)
    __asan_poison_memory_region(batch, sizeof(frame_block));
#endif
    d.batches[cls - 1] = batch;
    return;
  }
  if (use_depot) d.bytes.fetch_sub(bytes, std::memory_order_relaxed);
  c.stats.released += frame_batch;
  while (batch != nullptr) {
    frame_block* b = batch;
    batch = frame_next(b);
    ::operator delete(b);
  }
}

// The slow half of frame_allocate: thread exiting, oversized, or an empty class.
[[gnu::noinline]] inline void* frame_allocate_slow(frame_cache& c, std::size_t n, std::size_t cls) {
  if (cls > frame_classes || c.dead) {
    ++c.stats.oversize;
    return ::operator new(n);
  }
  if (!c.reaper_armed) arm_frame_cache_reaper();  // it frees what a refill brings
  if (frame_refill(c, cls)) {
    frame_block* b = c.heads[cls - 1];
    c.heads[cls - 1] = frame_next(b);
#if defined(PTK_ASAN)
    __asan_unpoison_memory_region(b, cls * frame_granule);
#endif
    --c.counts[cls - 1];
    c.stats.cached_bytes -= cls * frame_granule;
    ++c.stats.hits;
    return b;
  }
  ++c.stats.misses;
  return ::operator new(cls* frame_granule);
}

/// Allocates a coroutine frame of `n` bytes from the calling thread's cache.
inline void* frame_allocate(std::size_t n) {
  frame_cache& c = tls_frame_cache;
  ++c.stats.allocations;
  const std::size_t cls = (n + frame_granule - 1) / frame_granule;
  if (cls <= frame_classes) [[likely]] {
    // (A dead thread's cache is empty: these find nothing.)
    if (frame_block* b = c.hot[cls - 1]) {
#if defined(PTK_ASAN)
      __asan_unpoison_memory_region(b, cls * frame_granule);
#endif
      c.hot[cls - 1] = nullptr;
      ++c.stats.hits;
      return b;
    }
    if (frame_block* b = c.heads[cls - 1]) {
      c.heads[cls - 1] = frame_next(b);
#if defined(PTK_ASAN)
      __asan_unpoison_memory_region(b, cls * frame_granule);
#endif
      --c.counts[cls - 1];
      c.stats.cached_bytes -= cls * frame_granule;
      ++c.stats.hits;
      return b;
    }
  }
  return frame_allocate_slow(c, n, cls);
}

/// Frees a frame of `n` bytes (the size frame_allocate was given) into the calling
/// thread's cache, spilling a batch to the depot when the class is full.
inline void frame_deallocate(void* p, std::size_t n) noexcept {
  frame_cache& c = tls_frame_cache;
  const std::size_t cls = (n + frame_granule - 1) / frame_granule;
  const std::size_t bytes = cls * frame_granule;
  if (cls <= frame_classes && c.hot[cls - 1] == nullptr && c.reaper_armed && !c.dead) {
    c.hot[cls - 1] = static_cast<frame_block*>(p);
#if defined(PTK_ASAN)
    __asan_poison_memory_region(p, bytes);
#endif
    return;
  }
  if (cls > frame_classes || c.dead) {
    ::operator delete(p);
    return;
  }
  if (!c.reaper_armed) {
    try {
      arm_frame_cache_reaper();
    } catch (...) {  // could not register the thread-exit hook: do not cache
      ::operator delete(p);
      return;
    }
  }
  auto* b = static_cast<frame_block*>(p);
  b->next = c.heads[cls - 1];
  c.heads[cls - 1] = b;
  c.stats.cached_bytes += bytes;
#if defined(PTK_ASAN)
  __asan_poison_memory_region(b, bytes);  // a use after free still reports
#endif
  // Spilling takes the batch of the most recently freed frames (still in this core's
  // cache, so cutting it off is cheap) and leaves at least one batch behind.
  if (++c.counts[cls - 1] >= 2 * frame_batch &&
      (c.counts[cls - 1] * bytes > frame_class_limit || c.stats.cached_bytes > frame_cache_limit)) {
    frame_spill(c, cls);
  }
}

/// Gives a promise type the recycling allocator.
struct frame_allocated {
  static void* operator new(std::size_t n) { return frame_allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept { frame_deallocate(p, n); }
};

/// The token of a coroutine that nobody can stop.
inline const std::stop_token no_stop_token{};

/// What `co_await ptk::get_stop_token()` names inside a ptk coroutine.
struct get_stop_token_tag {};

/// What every ptk promise shares: the awaiter to resume, the stop token inherited from
/// it (a pointer into the awaiter's frame, which outlives this one: no reference
/// count touched per co_await) and the exception the body threw.
struct promise_base : frame_allocated {
  std::coroutine_handle<> continuation_;
  const std::stop_token* stop_ = &no_stop_token;
  std::exception_ptr error_;

  void unhandled_exception() noexcept { error_ = std::current_exception(); }

  template <class A>
  A&& await_transform(A&& a) noexcept {
    return std::forward<A>(a);
  }

  struct stop_token_awaiter {
    std::stop_token token;
    bool await_ready() const noexcept { return true; }
    void await_suspend(std::coroutine_handle<>) const noexcept {}
    std::stop_token await_resume() noexcept { return std::move(token); }
  };
  stop_token_awaiter await_transform(get_stop_token_tag) noexcept { return {*stop_}; }
};

/// The stop token of the coroutine behind `h`, or an empty one for foreign coroutines.
template <class P>
const std::stop_token* stop_token_of(std::coroutine_handle<P> h) noexcept {
  if constexpr (std::is_base_of_v<promise_base, P>) {
    return h.promise().stop_;
  } else {
    return &no_stop_token;
  }
}

/// Where a ptk::task started directly by a group (ptk::when_all over a vector of
/// tasks) reports its end, instead of resuming an awaiter: it saves the group a
/// wrapper coroutine (a frame and a resumption) per child.
class task_group_sink {
 public:
  /// The task behind `p` finished; returns what to resume next.
  virtual std::coroutine_handle<> child_done(promise_base& p) noexcept = 0;

 protected:
  task_group_sink() = default;
  task_group_sink(const task_group_sink&) = default;
  task_group_sink& operator=(const task_group_sink&) = default;
  ~task_group_sink() = default;
};

/// Transfers to the continuation (or reports to the group) when a ptk::task finishes.
struct final_transfer {
  bool await_ready() const noexcept { return false; }
  template <class P>
  std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) const noexcept {
    P& p = h.promise();
    if (p.group_ != nullptr) [[unlikely]] {
      return p.group_->child_done(p);
    }
    return p.continuation_;
  }
  void await_resume() const noexcept {}
};

/// Where a coroutine keeps its result: a value, a reference (as a pointer), or nothing.
template <class R>
class result_holder {
 public:
  template <class U = R>
  requires std::constructible_from<R, U&&>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<R, U&&>) {
    value_.emplace(std::forward<U>(v));
  }
  R take() { return std::move(*value_); }

 private:
  std::optional<R> value_;
};

template <class R>
class result_holder<R&> {
 public:
  void return_value(R& v) noexcept { value_ = std::addressof(v); }
  R& take() noexcept { return *value_; }

 private:
  R* value_ = nullptr;
};

template <>
class result_holder<void> {
 public:
  void return_void() noexcept {}
  void take() noexcept {}
};

/// The awaiter an awaitable `a` produces: `a.operator co_await()`, a free
/// `operator co_await(a)`, or `a` itself.
template <class A>
decltype(auto) get_awaiter(A&& a) {
  if constexpr (requires { std::forward<A>(a).operator co_await(); }) {
    return std::forward<A>(a).operator co_await();
  } else if constexpr (requires { operator co_await(std::forward<A>(a)); }) {
    return operator co_await(std::forward<A>(a));
  } else {
    return std::forward<A>(a);
  }
}

/// The type `co_await std::declval<A>()` gives.
template <class A>
using await_result_t = decltype(get_awaiter(std::declval<A>()).await_resume());

template <class T>
class task_promise;

template <class T>
std::coroutine_handle<task_promise<T>> task_handle(const task<T>& t) noexcept;

}  // namespace detail

/// @brief Something `co_await` accepts: it has (or gives through `operator co_await`)
///        `await_ready`, `await_suspend` and `await_resume`.
/// @tparam A the type to check.
template <class A>
concept awaitable = requires(A&& a) {
  detail::get_awaiter(std::forward<A>(a)).await_ready();
  detail::get_awaiter(std::forward<A>(a)).await_resume();
};

/// @brief The counters of the calling thread's frame allocator.
/// @return a copy of this thread's counters (see ptk::frame_allocator_stats).
[[nodiscard]] inline frame_allocator_stats this_thread_frame_stats() noexcept {
  return detail::tls_frame_cache.stats;
}

/// @brief Thrown out of a wait (such as `co_await ptk::sleep_for(...)`) whose stop
///        token was asked to stop.
class operation_cancelled : public std::exception {
 public:
  /// @return a description of the exception.
  [[nodiscard]] const char* what() const noexcept override { return "ptk: operation cancelled"; }
};

/// @brief The stop token of the running ptk coroutine, without suspending.
///
/// A ptk::task inherits the token of the ptk coroutine that awaits it; ptk::when_any,
/// ptk::async_scope and ptk::sync_wait give their children their own.
///
/// @code
/// ptk::task<void> poll(ptk::thread_pool& pool) {
///   std::stop_token stop = co_await ptk::get_stop_token();
///   while (!stop.stop_requested()) co_await pool.schedule();
/// }
/// @endcode
/// @return an awaitable whose `co_await` gives the current std::stop_token.
[[nodiscard]] constexpr detail::get_stop_token_tag get_stop_token() noexcept { return {}; }

/// @brief A lazy coroutine producing a `T` (a value, a reference, or nothing for void).
///
/// The body does not start until the task is awaited (or passed to ptk::sync_wait,
/// ptk::when_all, ptk::when_any or ptk::async_scope::spawn). Awaiting it transfers
/// straight into it, and its end transfers straight back to the awaiter (symmetric
/// transfer), so chains of any depth run in constant stack. An exception the body
/// throws is rethrown by the `co_await`. A task is awaited at most once.
///
/// Frames come from a per-thread recycling allocator (ptk::frame_allocator_stats),
/// so creating and awaiting a task makes no malloc once the cache is warm.
///
/// @code
/// ptk::task<std::string> greet(std::string name) { co_return "hello " + name; }
/// ptk::task<void> run(ptk::thread_pool& pool) {
///   co_await pool.schedule();                 // continue on a worker
///   std::string s = co_await greet("world");  // inline; no malloc once the cache is warm
/// }
/// @endcode
/// @tparam T the result type; `void` for none.
template <class T = void>
class [[nodiscard]] task {
 public:
  /// The coroutine machinery (used by the compiler).
  using promise_type = detail::task_promise<T>;
  /// The result type.
  using value_type = T;

  /// An empty task (not a coroutine; must not be awaited).
  task() noexcept = default;
  /// Takes over `other`'s coroutine; `other` becomes empty.
  /// @param other the task to move from.
  task(task&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  /// Destroys this task's coroutine (if any) and takes over `other`'s.
  /// @param other the task to move from.
  /// @return this task.
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, nullptr);
    }
    return *this;
  }
  task(const task&) = delete;             ///< Not copyable: a task has one owner.
  task& operator=(const task&) = delete;  ///< Not copyable.
  /// Destroys the coroutine frame (a task never awaited never runs its body).
  ~task() {
    if (h_) h_.destroy();
  }

  /// @return whether this task holds a coroutine (false once moved from).
  [[nodiscard]] bool valid() const noexcept { return static_cast<bool>(h_); }

  /// @brief What `co_await task` uses.
  class awaiter {
   public:
    /// @return false: a lazy task always starts by suspending the awaiter.
    [[nodiscard]] bool await_ready() const {
      if (!h_) throw std::logic_error("ptk::task: co_await on an empty task");
      return false;
    }
    /// Starts the task; it inherits the awaiter's stop token.
    /// @tparam P the awaiting coroutine's promise type.
    /// @param awaiting the coroutine to resume when the task is done.
    /// @return the task's coroutine, resumed next (symmetric transfer).
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> awaiting) const noexcept {
      promise_type& p = h_.promise();
      p.continuation_ = awaiting;
      p.stop_ = detail::stop_token_of(awaiting);
      return h_;
    }
    /// @return the task's result; rethrows the exception its body threw.
    T await_resume() const { return h_.promise().take(); }

   private:
    friend class task;
    explicit awaiter(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    std::coroutine_handle<promise_type> h_;
  };

  /// @return the awaiter that runs this task and gives its result.
  awaiter operator co_await() const noexcept { return awaiter{h_}; }

 private:
  friend class detail::task_promise<T>;
  template <class U>
  friend std::coroutine_handle<detail::task_promise<U>> detail::task_handle(
      const task<U>& t) noexcept;
  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

namespace detail {

template <class T>
class task_promise : public promise_base, public result_holder<T> {
 public:
  task<T> get_return_object() noexcept {
    return task<T>{std::coroutine_handle<task_promise>::from_promise(*this)};
  }
  std::suspend_always initial_suspend() const noexcept { return {}; }
  final_transfer final_suspend() const noexcept { return {}; }

  T take() {
    // Moved out, so the exception object dies on the awaiter's side.
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    return result_holder<T>::take();
  }

  task_group_sink* group_ = nullptr;  // set instead of continuation_ by a group
};

/// What a group needs of a ptk::task it runs directly: its coroutine.
template <class T>
std::coroutine_handle<task_promise<T>> task_handle(const task<T>& t) noexcept {
  return t.h_;
}

}  // namespace detail

/// @brief An executor that runs work at once, on the calling thread.
///
/// For symmetry with ptk::thread_pool: `co_await ex.schedule()` does not suspend and
/// `post(f)` calls `f()` before returning.
///
/// @code
/// ptk::inline_executor ex;
/// co_await ex.schedule();       // continues right here
/// ex.post([] { std::puts("now"); });
/// @endcode
class inline_executor {
 public:
  /// @return an awaitable that does not suspend.
  [[nodiscard]] std::suspend_never schedule() const noexcept { return {}; }
  /// Calls `f()` now.
  /// @tparam F a callable taking no arguments.
  /// @param f the callable.
  template <class F>
  requires std::invocable<F&>
  void post(F&& f) const { f(); }
  /// @return true: every thread is this executor's thread.
  [[nodiscard]] bool running_in_this_thread() const noexcept { return true; }
};

}  // namespace ptk
