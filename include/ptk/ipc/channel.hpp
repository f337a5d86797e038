/// @file
/// @brief What every ptk channel returns: ptk::channel_status, ptk::recv_result,
///        ptk::channel_error.
#pragma once

#include <ptk/config.hpp>
#include <ptk/coro/task.hpp>

#include <atomic>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
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

/// @brief The outcome of a receive: a value, or the status that explains why not.
///
/// @code
/// while (auto msg = ch.recv()) use(*msg);      // stops at closed or peer_lost
/// auto r = ch.recv_for(100ms);
/// if (r.status() == ptk::channel_status::timeout) ...
/// @endcode
/// @tparam T the message type.
template <class T>
class recv_result {
 public:
  /// A received value. @param v the value.
  recv_result(T v) : value_(std::move(v)) {}  // NOLINT(google-explicit-constructor)
  /// No value. @param s why (never `ok`).
  recv_result(channel_status s) : status_(s) {}  // NOLINT(google-explicit-constructor)

  /// @return whether a value was received.
  explicit operator bool() const noexcept { return value_.has_value(); }
  /// @return whether a value was received.
  bool has_value() const noexcept { return value_.has_value(); }
  /// @return `ok`, or why there is no value.
  channel_status status() const noexcept { return status_; }

  /// @return the value. @throws ptk::channel_error naming the status if there is none.
  T& value() & {
    check();
    return *value_;
  }
  /// @return the value, moved out. @throws ptk::channel_error if there is none.
  T&& value() && {
    check();
    return std::move(*value_);
  }
  /// @return the value (precondition: has_value()).
  T& operator*() noexcept { return *value_; }
  /// @return the value (precondition: has_value()).
  const T& operator*() const noexcept { return *value_; }
  /// @return a pointer to the value (precondition: has_value()).
  T* operator->() noexcept { return &*value_; }

 private:
  void check() const {
    if (!value_) {
      throw channel_error(std::string("ptk channel: no value (") + to_string(status_) + ")",
                          status_);
    }
  }
  channel_status status_ = channel_status::ok;
  std::optional<T> value_;
};

namespace detail {
/// What a channel asks to be woken by for an asynchronous receive: its socket, or a
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
