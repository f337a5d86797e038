/// @file
/// @brief ptk::when_any: run several awaitables concurrently, keep the first to
///        finish, stop the others and wait for them.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>
#include <ptk/coro/when_all.hpp>

#include <coroutine>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <utility>
#include <variant>
#include <vector>

namespace ptk {

/// @brief What ptk::when_any over a vector gives: which child finished first, and its
///        result.
/// @tparam T the result type (`std::monostate` for awaitables giving `void`).
template <class T>
struct when_any_result {
  std::size_t index;  ///< position of the winner in the vector
  T value;            ///< the winner's result
};

}  // namespace ptk

namespace ptk::detail {

struct forward_stop {
  std::stop_source* target;
  void operator()() const noexcept { target->request_stop(); }
};

/// The stop state of one when_any: its source, the token its children inherit, and
/// the link that forwards a stop request of the awaiter's token to the source.
struct when_any_stop {
  std::stop_source source;
  std::stop_token token = source.get_token();
  std::optional<std::stop_callback<forward_stop>> link;
};

/// Gives the children the when_any's own stop token and links the awaiting
/// coroutine's token to it. (Only references inside: GCC 12 may copy an awaiter.)
template <class Inner>
class own_stop {
 public:
  own_stop(Inner& inner, when_any_stop& stop) noexcept : inner_(inner), stop_(stop) {}
  bool await_ready() const noexcept { return inner_.await_ready(); }
  template <class P>
  bool await_suspend(std::coroutine_handle<P> h) {
    const std::stop_token* outer = stop_token_of(h);
    // Runs at once if the outer stop was already requested: children then start stopped.
    if (outer->stop_possible()) stop_.link.emplace(*outer, forward_stop{&stop_.source});
    return inner_.await_suspend(h, &stop_.token);
  }
  void await_resume() const noexcept {}

 private:
  Inner& inner_;
  when_any_stop& stop_;
};

}  // namespace ptk::detail

namespace ptk {

/// @brief Runs every awaitable concurrently and gives the result of the first to finish.
///
/// The returned task is lazy. When awaited it starts every child (as ptk::when_all
/// does). The first child to finish, with a value or an exception, wins; when_any
/// then requests stop on a std::stop_source whose token all children inherit (a
/// sleeping child is woken with ptk::operation_cancelled, a polling one sees
/// `stop_requested()`), and waits for every other child to finish before it
/// completes: no child outlives it. A stop request on the awaiter's own token is
/// forwarded to the children too.
///
/// The result is a `std::variant` whose `index()` is the winner's position and whose
/// alternative holds its value (`std::monostate` for `void`, `std::reference_wrapper`
/// for a reference). If the winner threw, its exception is rethrown; what the losers
/// return or throw is dropped.
///
/// @code
/// auto r = co_await ptk::when_any(fetch(pool), ptk::sleep_for(timers, 100ms));
/// if (r.index() == 1) std::puts("timed out");  // fetch saw the stop request
/// @endcode
/// @tparam A the awaitables' types (ptk::task or any other awaitable).
/// @param awaitables at least one awaitable, moved into the returned task.
/// @return a task giving a `std::variant` holding the winner's result at its index.
template <awaitable... A>
requires(sizeof...(A) > 0)
    task<std::variant<detail::when_value_t<detail::await_result_t<A>>...>> when_any(
        A... awaitables) {
  using result = std::variant<detail::when_value_t<detail::await_result_t<A>>...>;
  detail::when_any_stop stop;
  detail::when_tuple_awaiter<detail::await_result_t<A>...> aw{
      detail::make_when_child<detail::await_result_t<A>>(std::move(awaitables))..., true,
      &stop.source};
  co_await detail::own_stop{aw, stop};
  const std::size_t winner = aw.first();
  std::optional<result> out;
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    (
        [&] {
          if (I != winner) return;
          auto& child = std::get<I>(aw.children());
          if (child.failed()) child.rethrow();
          out.emplace(std::in_place_index<I>, child.take());
        }(),
        ...);
  }
  (std::index_sequence_for<A...>{});
  co_return std::move(*out);
}

/// @brief Runs every awaitable of a vector concurrently and gives the first to finish.
///
/// As the variadic ptk::when_any, returning the winner's index and value.
///
/// @code
/// std::vector<ptk::task<int>> replicas = query_all(pool);
/// ptk::when_any_result<int> r = co_await ptk::when_any(std::move(replicas));
/// std::printf("replica %zu answered %d first\n", r.index, r.value);
/// @endcode
/// @tparam A the awaitables' type.
/// @param awaitables the awaitables, moved into the returned task; throws
///        std::invalid_argument (when awaited) if empty.
/// @return a task giving the winner's index and result.
template <awaitable A>
task<when_any_result<detail::when_value_t<detail::await_result_t<A>>>> when_any(
    std::vector<A> awaitables) {
  using R = detail::await_result_t<A>;
  if (awaitables.empty()) throw std::invalid_argument("ptk::when_any: no awaitables");
  std::vector<detail::when_child<R>> children;
  children.reserve(awaitables.size());
  for (A& a : awaitables) children.push_back(detail::make_when_child<R>(std::move(a)));
  awaitables.clear();
  detail::when_any_stop stop;
  detail::when_vector_awaiter<R> aw{std::move(children), true, &stop.source};
  co_await detail::own_stop{aw, stop};
  const std::size_t winner = aw.first();
  auto& child = aw.children()[winner];
  if (child.failed()) child.rethrow();
  co_return when_any_result<detail::when_value_t<R>>{winner, child.take()};
}

}  // namespace ptk
