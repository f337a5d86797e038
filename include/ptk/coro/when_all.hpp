/// @file
/// @brief ptk::when_all: run several awaitables concurrently and wait for all of them.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <functional>
#include <limits>
#include <stdexcept>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace ptk::detail {

/// How a result of type R is stored in what ptk::when_all and ptk::when_any return:
/// void becomes std::monostate, a reference a std::reference_wrapper.
template <class R>
struct when_value {
  using type = R;
};
template <>
struct when_value<void> {
  using type = std::monostate;
};
template <class R>
struct when_value<R&> {
  using type = std::reference_wrapper<R>;
};
template <class R>
using when_value_t = typename when_value<R>::type;

inline constexpr std::size_t no_index = std::numeric_limits<std::size_t>::max();

/// What the children of one when_all / when_any share. `remaining` starts at the
/// number of children plus one: the awaiter holds the extra count while it starts
/// them, so no child can resume it before it has suspended; whoever brings the count
/// to zero resumes it.
struct when_state {
  std::atomic<std::size_t> remaining{0};
  std::coroutine_handle<> awaiter;
  // when_all: the first child to fail; when_any: the first child to finish.
  std::atomic<std::size_t> first{no_index};
  bool first_is_any_completion = false;
  std::stop_source* stop_on_first = nullptr;  // when_any: stopped by the first finisher

  void start(std::coroutine_handle<> h, std::size_t children) noexcept {
    awaiter = h;
    remaining.store(children + 1, std::memory_order_relaxed);
  }
  // Drops the awaiter's own count; true if the awaiter must suspend.
  bool release_starter() noexcept { return remaining.fetch_sub(1, std::memory_order_acq_rel) != 1; }
};

/// One child of a when_all / when_any: a coroutine awaiting the user's awaitable.
template <class R>
class when_child {
 public:
  struct promise_type : promise_base, result_holder<R> {
    when_state* state = nullptr;
    std::size_t index = 0;

    when_child get_return_object() noexcept {
      return when_child{std::coroutine_handle<promise_type>::from_promise(*this)};
    }
    std::suspend_always initial_suspend() const noexcept { return {}; }
    auto final_suspend() const noexcept {
      struct finish {
        bool await_ready() const noexcept { return false; }
        std::coroutine_handle<> await_suspend(
            std::coroutine_handle<promise_type> h) const noexcept {
          promise_type& p = h.promise();
          when_state& s = *p.state;
          if (p.error_ || s.first_is_any_completion) {
            std::size_t expected = no_index;
            if (s.first.compare_exchange_strong(expected, p.index, std::memory_order_relaxed) &&
                s.stop_on_first != nullptr) {
              s.stop_on_first->request_stop();
            }
          }
          // The last child to finish resumes the awaiter, by symmetric transfer. The
          // acq_rel chain on `remaining` publishes every child's result to it.
          if (s.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) return s.awaiter;
          return std::noop_coroutine();
        }
        void await_resume() const noexcept {}
      };
      return finish{};
    }
  };

  when_child(when_child&& other) noexcept : h_(std::exchange(other.h_, nullptr)) {}
  when_child& operator=(when_child&&) = delete;
  ~when_child() {
    if (h_) h_.destroy();
  }

  void start(when_state& s, std::size_t index, const std::stop_token* stop) {
    promise_type& p = h_.promise();
    p.state = &s;
    p.index = index;
    p.stop_ = stop;
    h_.resume();
  }
  [[nodiscard]] bool failed() const noexcept { return static_cast<bool>(h_.promise().error_); }
  void rethrow() { std::rethrow_exception(std::exchange(h_.promise().error_, nullptr)); }
  when_value_t<R> take() {
    if constexpr (std::is_void_v<R>) {
      return {};
    } else {
      return h_.promise().take();
    }
  }

 private:
  explicit when_child(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  std::coroutine_handle<promise_type> h_;
};

template <class R, class A>
when_child<R> make_when_child(A a) {
  if constexpr (std::is_void_v<R>) {
    co_await std::move(a);
  } else {
    co_return co_await std::move(a);
  }
}

/// Awaits a fixed set of children. Lives in the when_all / when_any coroutine's
/// frame, so its address is stable while children run.
template <class... R>
class when_tuple_awaiter {
 public:
  explicit when_tuple_awaiter(when_child<R>... children, bool any, std::stop_source* stop)
      : children_(std::move(children)...) {
    state_.first_is_any_completion = any;
    state_.stop_on_first = stop;
  }
  bool await_ready() const noexcept { return sizeof...(R) == 0; }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h, const std::stop_token* stop) {
    state_.start(h, sizeof...(R));
    std::apply(
        [&](auto&... c) {
          std::size_t i = 0;
          (c.start(state_, i++, stop), ...);
        },
        children_);
    return state_.release_starter();
  }
  std::size_t first() const noexcept { return state_.first.load(std::memory_order_relaxed); }
  std::tuple<when_child<R>...>& children() noexcept { return children_; }

 private:
  std::tuple<when_child<R>...> children_;
  when_state state_;
};

/// Awaits a run-time number of children of one type.
template <class R>
class when_vector_awaiter {
 public:
  when_vector_awaiter(std::vector<when_child<R>> children, bool any, std::stop_source* stop)
      : children_(std::move(children)) {
    state_.first_is_any_completion = any;
    state_.stop_on_first = stop;
  }
  bool await_ready() const noexcept { return children_.empty(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h, const std::stop_token* stop) {
    state_.start(h, children_.size());
    for (std::size_t i = 0; i < children_.size(); ++i) children_[i].start(state_, i, stop);
    return state_.release_starter();
  }
  std::size_t first() const noexcept { return state_.first.load(std::memory_order_relaxed); }
  std::vector<when_child<R>>& children() noexcept { return children_; }

 private:
  std::vector<when_child<R>> children_;
  when_state state_;
};

/// Awaits a vector of ptk::task directly: each task reports its end to this group
/// (task_group_sink) instead of going through a when_child wrapper.
template <class T>
class when_task_vector_awaiter final : public task_group_sink {
 public:
  explicit when_task_vector_awaiter(std::vector<task<T>>& tasks) noexcept : tasks_(tasks) {}
  bool await_ready() const noexcept { return tasks_.empty(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h, const std::stop_token* stop) {
    state_.start(h, tasks_.size());
    for (task<T>& t : tasks_) {
      auto child = task_handle(t);
      task_promise<T>& p = child.promise();
      p.group_ = this;
      p.stop_ = stop;
      child.resume();
    }
    return state_.release_starter();
  }
  std::coroutine_handle<> child_done(promise_base& p) noexcept override {
    if (p.error_) {
      bool expected = false;
      if (failed_.compare_exchange_strong(expected, true, std::memory_order_relaxed)) {
        error_ = p.error_;  // the first failure (in time); published by `remaining`
      }
    }
    // The last child to finish resumes the awaiter; the acq_rel chain on `remaining`
    // publishes every child's result to it.
    if (state_.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) return state_.awaiter;
    return std::noop_coroutine();
  }
  void rethrow_if_failed() {
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  std::vector<task<T>>& tasks_;
  when_state state_;
  std::atomic<bool> failed_{false};
  std::exception_ptr error_;
};

/// Gives the awaiting coroutine's stop token to the children (when_all).
template <class Inner>
class inherit_stop {
 public:
  explicit inherit_stop(Inner& inner) noexcept : inner_(inner) {}
  bool await_ready() const noexcept { return inner_.await_ready(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    return inner_.await_suspend(h, stop_token_of(h));
  }
  void await_resume() const noexcept {}

 private:
  Inner& inner_;
};

template <class... R>
std::tuple<when_value_t<R>...> take_all(when_tuple_awaiter<R...>& aw) {
  if (const std::size_t f = aw.first(); f != no_index) {
    std::apply(
        [&](auto&... c) {
          std::size_t i = 0;
          ((i++ == f ? c.rethrow() : void()), ...);
        },
        aw.children());
  }
  return std::apply([](auto&... c) { return std::tuple<when_value_t<R>...>(c.take()...); },
                    aw.children());
}

}  // namespace ptk::detail

namespace ptk {

/// @brief Runs every awaitable concurrently and gives all their results.
///
/// The returned task is lazy. When awaited it starts each child in turn on the
/// awaiting thread (a child runs until its first suspension, e.g. a
/// `co_await pool.schedule()`), then completes when the last child completes,
/// continuing on that child's thread. Children inherit the awaiter's stop token.
///
/// Results come back as a tuple in argument order; a `void` result becomes
/// `std::monostate` and a reference a `std::reference_wrapper`. If children throw,
/// when_all still waits for all of them, then rethrows the exception of the first
/// child to fail (in time); the other exceptions are dropped.
///
/// @code
/// ptk::task<int> f(ptk::thread_pool& pool) { co_await pool.schedule(); co_return 1; }
/// ptk::task<std::string> g() { co_return "two"; }
/// auto [a, b] = co_await ptk::when_all(f(pool), g());  // 1, "two"
/// @endcode
/// @tparam A the awaitables' types (ptk::task or any other awaitable).
/// @param awaitables the awaitables, moved into the returned task.
/// @return a task giving a `std::tuple` of the results.
template <awaitable... A>
task<std::tuple<detail::when_value_t<detail::await_result_t<A>>...>> when_all(A... awaitables) {
  detail::when_tuple_awaiter<detail::await_result_t<A>...> aw{
      detail::make_when_child<detail::await_result_t<A>>(std::move(awaitables))..., false, nullptr};
  co_await detail::inherit_stop{aw};
  co_return detail::take_all(aw);
}

/// @brief Runs every awaitable of a vector concurrently and gives their results in order.
///
/// As the variadic ptk::when_all, with a `std::vector` of results (of
/// `std::monostate` when the awaitables give `void`).
///
/// @code
/// std::vector<ptk::sleep_awaitable> naps;
/// for (int i = 1; i <= 3; ++i) naps.push_back(ptk::sleep_for(timers, i * 10ms));
/// co_await ptk::when_all(std::move(naps));  // about 30 ms: the three sleep at once
/// @endcode
/// @tparam A the awaitables' type.
/// @param awaitables the awaitables, moved into the returned task.
/// @return a task giving a `std::vector` of the results, in the order of `awaitables`.
template <awaitable A>
task<std::vector<detail::when_value_t<detail::await_result_t<A>>>> when_all(
    std::vector<A> awaitables) {
  using R = detail::await_result_t<A>;
  std::vector<detail::when_child<R>> children;
  children.reserve(awaitables.size());
  for (A& a : awaitables) children.push_back(detail::make_when_child<R>(std::move(a)));
  awaitables.clear();
  detail::when_vector_awaiter<R> aw{std::move(children), false, nullptr};
  co_await detail::inherit_stop{aw};
  if (const std::size_t f = aw.first(); f != detail::no_index) aw.children()[f].rethrow();
  std::vector<detail::when_value_t<R>> out;
  out.reserve(aw.children().size());
  for (auto& c : aw.children()) out.push_back(c.take());
  co_return out;
}

/// @brief Runs every ptk::task of a vector concurrently and gives their results in order.
///
/// As the ptk::when_all over a vector of any awaitables, with less machinery: each
/// task reports its end to the when_all directly (no wrapper coroutine per task).
///
/// @code
/// std::vector<ptk::task<int>> jobs;
/// for (int i = 0; i < 100; ++i) jobs.push_back(square_on(pool, i));
/// std::vector<int> squares = co_await ptk::when_all(std::move(jobs));
/// @endcode
/// @tparam T the tasks' result type.
/// @param tasks the tasks, moved into the returned task; throws std::logic_error (when
///        awaited) if one of them is empty.
/// @return a task giving a `std::vector` of the results, in the order of `tasks`.
template <class T>
task<std::vector<detail::when_value_t<T>>> when_all(std::vector<task<T>> tasks) {
  for (const task<T>& t : tasks) {
    if (!t.valid()) throw std::logic_error("ptk::when_all: an empty task");
  }
  detail::when_task_vector_awaiter<T> aw{tasks};
  co_await detail::inherit_stop{aw};
  aw.rethrow_if_failed();
  std::vector<detail::when_value_t<T>> out;
  out.reserve(tasks.size());
  for (task<T>& t : tasks) {
    auto& p = detail::task_handle(t).promise();
    if constexpr (std::is_void_v<T>) {
      out.emplace_back();
    } else {
      p.error_ = nullptr;  // a later failure, dropped (the first one was rethrown)
      out.push_back(p.take());
    }
  }
  co_return out;
}

}  // namespace ptk
