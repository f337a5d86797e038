/// @file
/// @brief What every ptk channel returns: ptk::channel_status, ptk::recv_result,
///        ptk::channel_error.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>

#include <atomic>
#include <cstdint>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

namespace ptk {

/// @brief How a channel operation ended. Expected outcomes are values, not exceptions.
///
/// Close semantics follow Go's channels: after close() (by either side), sends return
/// `closed` at once; receivers first drain every message sent before the close, then
/// get `closed`. A peer that disappears without closing (it crashed, or was killed
/// even in the middle of a message) is reported as `peer_lost` once the messages it
/// completed have been drained; a half-written message is never delivered.
enum class channel_status {
  ok,         ///< the message was sent or received
  empty,      ///< try_recv: nothing to receive right now
  full,       ///< try_send: no room right now
  timeout,    ///< the deadline of a *_for / *_until call passed
  closed,     ///< the channel was closed (and, for a receive, is drained)
  peer_lost,  ///< the other side died without closing
  cancelled,  ///< the std::stop_token passed to the call was stopped
};

/// @brief The name of a status, e.g. "peer_lost".
/// @param s the status.
/// @return a static string.
constexpr const char* to_string(channel_status s) noexcept {
  switch (s) {
    case channel_status::ok:
      return "ok";
    case channel_status::empty:
      return "empty";
    case channel_status::full:
      return "full";
    case channel_status::timeout:
      return "timeout";
    case channel_status::closed:
      return "closed";
    case channel_status::peer_lost:
      return "peer_lost";
    case channel_status::cancelled:
      return "cancelled";
  }
  return "unknown";
}

/// @brief Thrown by recv_result::value() when there is no value, and by channels
///        when their shared state is unusable (a corrupt or foreign segment).
class channel_error : public std::runtime_error {
 public:
  /// @param what the message. @param status the status that caused it.
  explicit channel_error(const std::string& what, channel_status status = channel_status::ok)
      : std::runtime_error(what), status_(status) {}
  /// @return the status behind the error (`ok` for a corrupt channel).
  channel_status status() const noexcept { return status_; }

 private:
  channel_status status_;
};

namespace detail {
/// Selects recv_result's constructor that builds the value in place.
struct build_value_t {
  explicit build_value_t() = default;
};
/// The tag of recv_result's in-place constructor.
inline constexpr build_value_t build_value{};
}  // namespace detail

/// @brief The outcome of a receive: a value, or the status that explains why not.
///
/// @code
/// while (auto msg = ch.recv()) use(*msg);      // stops at closed or peer_lost
/// @endcode
/// @code
/// auto r = ch.recv_for(100ms);
/// if (r) {
///   use(*r);
/// } else if (r.status() == ptk::channel_status::timeout) {
///   // nothing yet: the channel is still open
/// }
/// @endcode
///
/// A channel decodes a message straight into its recv_result, so a large trivially
/// copyable message is copied once, from the channel to the result.
/// @tparam T the message type.
template <class T>
class recv_result {
 public:
  /// A received value. @param v the value.
  recv_result(T v) { emplace(std::move(v)); }  // NOLINT(google-explicit-constructor)
  /// No value. @param s why (never `ok`).
  recv_result(channel_status s) noexcept : status_(s) {}  // NOLINT(google-explicit-constructor)
  /// A value built in place by `make()` (used by ptk's channels: no copy of the value).
  /// @param make returns a T (a prvalue, which initialises the value directly).
  template <class F>
  recv_result(detail::build_value_t, F&& make) {
    ::new (static_cast<void*>(&value_)) T(std::forward<F>(make)());
    has_ = true;
  }
  /// Copies the value or the status. @param o the result copied.
  recv_result(const recv_result& o) : status_(o.status_) {
    if (o.has_) emplace(o.value_);
  }
  /// Moves the value or copies the status. @param o the result moved from.
  recv_result(recv_result&& o) noexcept(std::is_nothrow_move_constructible_v<T>)
      : status_(o.status_) {
    if (o.has_) emplace(std::move(o.value_));
  }
  /// Replaces this result by a copy of `o`. @param o the result copied. @return *this.
  recv_result& operator=(const recv_result& o) {
    if (this != &o) {
      recv_result copy(o);
      *this = std::move(copy);
    }
    return *this;
  }
  /// Replaces this result by `o`'s value or status. @param o the result moved from.
  /// @return *this.
  recv_result& operator=(recv_result&& o) noexcept(
      std::is_nothrow_move_constructible_v<T>&& std::is_nothrow_move_assignable_v<T>) {
    if (this == &o) return *this;
    if (has_ && o.has_) {
      value_ = std::move(o.value_);
    } else if (o.has_) {
      emplace(std::move(o.value_));
    } else {
      reset();
    }
    status_ = o.status_;
    return *this;
  }
  ~recv_result() { reset(); }

  /// @return whether a value was received.
  explicit operator bool() const noexcept { return has_; }
  /// @return whether a value was received.
  bool has_value() const noexcept { return has_; }
  /// @return `ok`, or why there is no value.
  channel_status status() const noexcept { return status_; }

  /// @return the value. @throws ptk::channel_error naming the status if there is none.
  T& value() & {
    check();
    return value_;
  }
  /// @return the value, moved out. @throws ptk::channel_error if there is none.
  T&& value() && {
    check();
    return std::move(value_);
  }
  /// @return the value (precondition: has_value()).
  T& operator*() noexcept { return value_; }
  /// @return the value (precondition: has_value()).
  const T& operator*() const noexcept { return value_; }
  /// @return a pointer to the value (precondition: has_value()).
  T* operator->() noexcept { return &value_; }

 private:
  void check() const {
    if (!has_) {
      throw channel_error(std::string("ptk channel: no value (") + to_string(status_) + ")",
                          status_);
    }
  }
  // Constructs the value (none alive) from `a`. (The in-place constructor does not
  // come here: a forwarded prvalue would be materialised and moved.)
  template <class A>
  void emplace(A&& a) {
    ::new (static_cast<void*>(&value_)) T(std::forward<A>(a));
    has_ = true;
  }
  void reset() noexcept {
    if (has_) {
      value_.~T();
      has_ = false;
    }
  }
  union {
    T value_;  // alive while has_
  };
  channel_status status_ = channel_status::ok;
  bool has_ = false;
};

namespace detail {
/// What a channel asks to be woken by for an asynchronous receive: its descriptor, or a
/// futex word and the value it holds while nothing happened.
struct recv_wait {
  int fd = -1;
  std::atomic<std::uint32_t>* word = nullptr;
  std::uint32_t expected = 0;
};
/// How ptk's asynchronous receives reach a channel's private arm/disarm hooks.
struct channel_access;
template <class Channel>
task<recv_result<typename Channel::value_type>> async_recv_loop(Channel& ch);
}  // namespace detail

}  // namespace ptk
