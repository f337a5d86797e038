/// @file
/// @brief ptk::pipe: a duplex typed channel over a Unix socket pair, the C++ form of
///        Python's multiprocessing.Pipe.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>
#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/codec.hpp>

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

namespace ptk {

/// @brief Limits of a ptk::pipe endpoint.
struct pipe_options {
  /// The largest message accepted, in encoded bytes, in both directions. A frame
  /// announcing more is rejected as malformed: a peer cannot make us allocate
  /// without bound.
  std::size_t max_message_size = std::size_t{64} << 20;
};

namespace detail {
inline constexpr std::uint32_t frame_data = 0x444b5450;   // "PTKD"
inline constexpr std::uint32_t frame_close = 0x434b5450;  // "PTKC"
struct frame_header {
  std::uint32_t length;
  std::uint32_t tag;
};
static_assert(sizeof(frame_header) == 8, "frames start with an 8-byte header");
}  // namespace detail

/// @brief One end of a duplex channel of T messages between two threads or
///        processes, over an AF_UNIX stream socket pair.
///
/// Messages are framed (length and tag), so variable-size types are fine. Blocking
/// calls sleep in the kernel (read, poll); an idle endpoint uses no CPU. Pass one end
/// to a child with ptk::command::pass_fd and rebuild it there with from_fd().
///
/// Close semantics: close() tells the peer that nothing more will come; the peer's
/// receives drain what was sent and then return `closed`, and its sends return
/// `closed` from then on. An endpoint that disappears without close(), because it
/// was destroyed or its process died (even in the middle of a message), is reported
/// to the peer as `peer_lost` after the complete messages were drained.
///
/// A malformed frame (bad tag, or longer than pipe_options::max_message_size) throws
/// ptk::channel_error; the byte stream cannot be trusted after that and every later
/// receive throws too. A message that fails to decode throws ptk::codec_error and is
/// dropped; the channel stays usable.
/// @code
/// auto [parent, child] = ptk::pipe<std::string>::create();
/// auto p = ptk::spawn(ptk::command{"./worker"}.pass_fd(child.fd(), 3));
/// parent.send("ping");
/// auto reply = parent.recv();          // in ./worker: ptk::pipe<std::string>::from_fd(3)
/// @endcode
/// @tparam T an encodable message type (see ptk::codec).
template <class T>
class pipe {
  static_assert((detail::require_encodable<T>(), true));

 public:
  /// The message type.
  using value_type = T;

  /// Creates a connected pair of endpoints.
  /// @param options limits for both endpoints.
  /// @return the two ends; each can send to and receive from the other.
  static std::pair<pipe, pipe> create(const pipe_options& options = {}) {
    auto fds = detail::make_socketpair(SOCK_STREAM);
    return {pipe(std::move(fds.first), options), pipe(std::move(fds.second), options)};
  }
  /// Adopts a stream socket received from a parent (e.g. descriptor 3 passed with
  /// ptk::command::pass_fd).
  /// @param fd the descriptor; this endpoint owns it from now on.
  /// @param options limits.
  /// @return the endpoint.
  /// @throws std::system_error if `fd` is not a stream socket.
  static pipe from_fd(int fd, const pipe_options& options = {}) {
    detail::unique_fd owned(fd);
    int type = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 || type != SOCK_STREAM) {
      throw_os_error(ENOTSOCK,
                     "ptk::pipe::from_fd(" + std::to_string(fd) + "): not a stream socket");
    }
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    return pipe(std::move(owned), options);
  }

  /// Moves an endpoint.
  pipe(pipe&&) noexcept = default;
  /// Moves an endpoint in (the current one is dropped without close()).
  /// @return *this.
  pipe& operator=(pipe&&) noexcept = default;
  pipe(const pipe&) = delete;
  pipe& operator=(const pipe&) = delete;
  /// Closes the descriptor without sending a close: the peer sees peer_lost.
  ~pipe() = default;

  // ---- sending ----

  /// Sends `v`, waiting while the socket buffer is full.
  /// @param v the message. @param stop stops a wait that has not started writing.
  /// @return ok, closed, peer_lost or cancelled.
  /// @throws std::length_error if `v` encodes to more than max_message_size.
  channel_status send(const T& v, std::stop_token stop = {}) {
    return send_impl(v, std::nullopt, stop, true);
  }
  /// Sends `v` if the socket can take the whole frame now.
  /// @param v the message. @return ok, full, closed or peer_lost.
  channel_status try_send(const T& v) {
    return send_impl(v, std::chrono::steady_clock::now(), {}, false);
  }
  /// Sends `v`, waiting at most `timeout` for room. @param v the message.
  /// @param timeout how long. @param stop stops the wait. @return as send(), or timeout.
  template <class Rep, class Period>
  channel_status send_for(const T& v, std::chrono::duration<Rep, Period> timeout,
                          std::stop_token stop = {}) {
    return send_impl(v, std::chrono::steady_clock::now() + timeout, stop, true);
  }
  /// Sends `v`, waiting until `deadline` for room. @param v the message.
  /// @param deadline when to give up. @param stop stops the wait. @return as send_for().
  channel_status send_until(const T& v, std::chrono::steady_clock::time_point deadline,
                            std::stop_token stop = {}) {
    return send_impl(v, deadline, stop, true);
  }

  // ---- receiving ----

  /// Receives the next message, waiting for it.
  /// @param stop stops the wait. @return the message, or closed / peer_lost / cancelled.
  recv_result<T> recv(std::stop_token stop = {}) { return recv_impl(std::nullopt, stop, true); }
  /// @return the next message if a complete one has arrived; otherwise empty,
  ///         closed or peer_lost.
  recv_result<T> try_recv() { return recv_impl(std::chrono::steady_clock::now(), {}, false); }
  /// Receives, waiting at most `timeout`. @param timeout how long. @param stop stops it.
  /// @return the message, or timeout / closed / peer_lost / cancelled.
  template <class Rep, class Period>
  recv_result<T> recv_for(std::chrono::duration<Rep, Period> timeout, std::stop_token stop = {}) {
    return recv_impl(std::chrono::steady_clock::now() + timeout, stop, true);
  }
  /// Receives, waiting until `deadline`. @param deadline when to give up.
  /// @param stop stops the wait. @return as recv_for().
  recv_result<T> recv_until(std::chrono::steady_clock::time_point deadline,
                            std::stop_token stop = {}) {
    return recv_impl(deadline, stop, true);
  }

  /// Receives in a coroutine: `co_await ch.async_recv()` suspends without blocking a
  /// thread and resumes on ptk's reactor thread. The awaiting task's stop token
  /// ends the wait with `cancelled`.
  /// @code
  /// ptk::task<void> consume(ptk::pipe<int>& ch) {
  ///   while (auto v = co_await ch.async_recv()) handle(*v);
  /// }
  /// @endcode
  /// @return a task giving the message, or closed / peer_lost / cancelled.
  task<recv_result<T>> async_recv() { return detail::async_recv_loop(*this); }

  // ---- state ----

  /// Tells the peer nothing more will be sent (it drains, then sees `closed`).
  /// This endpoint's sends return `closed` from now on; it can still receive. The
  /// close marker travels behind the messages already sent, so close() waits while
  /// the socket is full (a dead peer ends that wait at once).
  void close() {
    if (sent_close_ || !fd_) return;
    sent_close_ = true;
    const detail::frame_header h{0, detail::frame_close};
    write_all(&h, sizeof h, std::nullopt, {});  // a dead peer needs no goodbye
    ::shutdown(fd_.get(), SHUT_WR);
  }
  /// @return the socket (pass it to a child with ptk::command::pass_fd).
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  /// @return the options this endpoint enforces.
  [[nodiscard]] const pipe_options& options() const noexcept { return options_; }
  /// @return whether a complete message is already buffered (try_recv would not read).
  [[nodiscard]] bool has_buffered_message() const noexcept { return complete_frame().has_value(); }

 private:
  friend struct detail::channel_access;

  bool arm_recv(detail::recv_wait& w) const {
    if (has_buffered_message() || eof_ || !broken_.empty()) return false;
    w.fd = fd_.get();
    return true;
  }
  void disarm_recv() noexcept {}

  pipe(detail::unique_fd fd, const pipe_options& options) : fd_(std::move(fd)), options_(options) {}

  enum class io { done, would_block, timeout, cancelled, lost };

  // Waits for `events` on the socket until the deadline or a stop request.
  io wait_fd(short events, std::optional<std::chrono::steady_clock::time_point> deadline,
             std::stop_token& stop) {
    if (stop.stop_possible() && !wake_) {
      wake_ = detail::unique_fd(detail::check(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"));
    }
    struct waker {
      int fd;
      void operator()() const noexcept {
        const std::uint64_t one = 1;
        (void)!::write(fd, &one, sizeof one);
      }
    };
    std::optional<std::stop_callback<waker>> on_stop;
    if (stop.stop_possible()) on_stop.emplace(stop, waker{wake_.get()});
    for (;;) {
      if (stop.stop_requested()) return io::cancelled;
      int ms = -1;
      if (deadline) {
        const auto left = *deadline - std::chrono::steady_clock::now();
        if (left <= std::chrono::steady_clock::duration::zero()) return io::timeout;
        ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      }
      pollfd p[2] = {{fd_.get(), events, 0}, {wake_ ? wake_.get() : -1, POLLIN, 0}};
      const int r = ::poll(p, 2, ms);
      if (r == -1 && errno != EINTR) throw_os_error(errno, "ptk::pipe: poll");
      if (r > 0 && p[0].revents != 0) return io::done;
      if (r > 0 && p[1].revents != 0) {
        std::uint64_t v;
        (void)!::read(wake_.get(), &v, sizeof v);
      }
    }
  }

  // Writes a whole frame. Once its first byte is out, the frame is finished even past
  // the deadline (a half frame would corrupt the stream); a dead peer still ends it.
  io write_all(const void* data, std::size_t n,
               std::optional<std::chrono::steady_clock::time_point> deadline, std::stop_token stop,
               bool may_wait = true) {
    const auto* p = static_cast<const std::byte*>(data);
    bool started = false;
    while (n > 0) {
      const ssize_t w = ::send(fd_.get(), p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w >= 0) {
        started = true;
        p += w;
        n -= static_cast<std::size_t>(w);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) return io::lost;
      if (errno != EAGAIN) throw_os_error(errno, "ptk::pipe: send");
      if (!may_wait && !started) return io::would_block;
      std::stop_token none;
      const io r =
          started ? wait_fd(POLLOUT, std::nullopt, none) : wait_fd(POLLOUT, deadline, stop);
      if (r != io::done) return r;
    }
    return io::done;
  }

  channel_status send_impl(const T& v,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    if (sent_close_) return channel_status::closed;
    if (got_close_) return channel_status::closed;
    const std::size_t n = codec<T>::encoded_size(v);
    if (n > options_.max_message_size || n > UINT32_MAX) {
      throw std::length_error("ptk::pipe: message of " + std::to_string(n) +
                              " bytes exceeds the limit of " +
                              std::to_string(options_.max_message_size));
    }
    wbuf_.resize(sizeof(detail::frame_header) + n);
    const detail::frame_header h{static_cast<std::uint32_t>(n), detail::frame_data};
    std::memcpy(wbuf_.data(), &h, sizeof h);
    codec<T>::encode(v, std::span<std::byte>(wbuf_.data() + sizeof h, n));
    switch (write_all(wbuf_.data(), wbuf_.size(), deadline, stop, may_wait)) {
      case io::done:
        return channel_status::ok;
      case io::would_block:
        return channel_status::full;
      case io::timeout:
        return channel_status::timeout;
      case io::cancelled:
        return channel_status::cancelled;
      case io::lost:
        return got_close_ ? channel_status::closed : channel_status::peer_lost;
    }
    return channel_status::peer_lost;
  }

  struct frame {
    std::size_t payload;
    std::size_t length;
    std::uint32_t tag;
  };
  // The frame at the start of the buffered bytes, if it is complete.
  std::optional<frame> complete_frame() const {
    const std::size_t have = rend_ - rpos_;
    if (have < sizeof(detail::frame_header)) return std::nullopt;
    detail::frame_header h;
    std::memcpy(&h, rbuf_.data() + rpos_, sizeof h);
    if (have < sizeof h + h.length) return std::nullopt;
    return frame{rpos_ + sizeof h, h.length, h.tag};
  }

  void check_header() {
    if (rend_ - rpos_ < sizeof(detail::frame_header)) return;
    detail::frame_header h;
    std::memcpy(&h, rbuf_.data() + rpos_, sizeof h);
    if ((h.tag != detail::frame_data && h.tag != detail::frame_close) ||
        (h.tag == detail::frame_close && h.length != 0)) {
      broken_ = "ptk::pipe: malformed frame (bad tag)";
    } else if (h.length > options_.max_message_size) {
      broken_ = "ptk::pipe: frame of " + std::to_string(h.length) + " bytes exceeds the limit of " +
                std::to_string(options_.max_message_size);
    }
    if (!broken_.empty()) throw channel_error(broken_);
  }

  // Reads what the socket has (at least one byte unless it would block).
  io fill(std::optional<std::chrono::steady_clock::time_point> deadline, std::stop_token& stop,
          bool may_wait) {
    if (rpos_ == rend_) rpos_ = rend_ = 0;
    std::size_t want = 64 * 1024;
    if (rend_ - rpos_ >= sizeof(detail::frame_header)) {
      detail::frame_header h;
      std::memcpy(&h, rbuf_.data() + rpos_, sizeof h);
      want = std::max(want, sizeof h + h.length);
    }
    if (rpos_ > 0 && rpos_ + want > rbuf_.size()) {  // compact before growing
      std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rend_ - rpos_);
      rend_ -= rpos_;
      rpos_ = 0;
    }
    if (rbuf_.size() < rpos_ + want) rbuf_.resize(rpos_ + want);
    for (;;) {
      const int flags = (may_wait && !deadline && !stop.stop_possible()) ? 0 : MSG_DONTWAIT;
      const ssize_t r = ::recv(fd_.get(), rbuf_.data() + rend_, rbuf_.size() - rend_, flags);
      if (r > 0) {
        rend_ += static_cast<std::size_t>(r);
        return io::done;
      }
      if (r == 0) return io::lost;  // end of stream
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) return io::lost;
      if (errno != EAGAIN) throw_os_error(errno, "ptk::pipe: recv");
      if (!may_wait) return io::would_block;
      const io w = wait_fd(POLLIN, deadline, stop);
      if (w != io::done) return w;
    }
  }

  recv_result<T> recv_impl(std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    if (!broken_.empty()) throw channel_error(broken_);
    for (;;) {
      if (got_close_ && rend_ == rpos_) return channel_status::closed;
      check_header();
      if (const auto f = complete_frame()) {
        rpos_ = f->payload + f->length;
        if (f->tag == detail::frame_close) {
          got_close_ = true;
          continue;
        }
        return codec<T>::decode(std::span<const std::byte>(rbuf_.data() + f->payload, f->length));
      }
      if (eof_) return got_close_ ? channel_status::closed : channel_status::peer_lost;
      switch (fill(deadline, stop, may_wait)) {
        case io::done:
          break;
        case io::would_block:
          return channel_status::empty;
        case io::timeout:
          return channel_status::timeout;
        case io::cancelled:
          return channel_status::cancelled;
        case io::lost:
          eof_ = true;  // a partial frame left in the buffer is discarded
          rpos_ = rend_;
          break;
      }
    }
  }

  detail::unique_fd fd_;
  pipe_options options_;
  detail::unique_fd wake_;  // eventfd that a stop request writes to, made on first use
  std::vector<std::byte> wbuf_;
  std::vector<std::byte> rbuf_;
  std::size_t rpos_ = 0;
  std::size_t rend_ = 0;
  bool sent_close_ = false;
  bool got_close_ = false;
  bool eof_ = false;
  std::string broken_;
};

}  // namespace ptk

#include <ptk/ipc/async_recv.hpp>
