/// @file
/// @brief ptk::pipe: a duplex typed channel over two kernel pipes, the C++ form of
///        Python's multiprocessing.Pipe.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>
#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/codec.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
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

// ---- SIGPIPE ------------------------------------------------------------------------
// A write to a pipe whose reader is gone raises SIGPIPE, which kills by default.
// Blocking it around each write costs two system calls per message (a quarter of a
// round trip), so instead a process whose SIGPIPE is still SIG_DFL gets a handler
// that ignores the SIGPIPEs raised inside ptk::pipe's own writes (the write returns
// EPIPE, reported as peer_lost) and does what SIG_DFL does, terminate, for any other.
// The flag is initial-exec TLS so the handler reads it without allocating.

/// Set while this thread is inside a ptk::pipe write.
inline thread_local volatile std::sig_atomic_t in_pipe_write [[gnu::tls_model("initial-exec")]] = 0;

inline void pipe_sigpipe_handler(int) noexcept {
  if (in_pipe_write != 0) return;  // ours: the write reports EPIPE
  const int saved = errno;
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ::sigaction(SIGPIPE, &dfl, nullptr);
  ::raise(SIGPIPE);  // pending until this handler returns, then fatal as by default
  errno = saved;
}

/// Installs pipe_sigpipe_handler if SIGPIPE is SIG_DFL: an ignored SIGPIPE or a
/// handler of the program's own is left alone. Every new endpoint checks (one
/// system call), so a program that resets SIGPIPE later is covered from its next
/// endpoint on.
inline void shield_sigpipe() noexcept {
  struct sigaction old {};
  if (::sigaction(SIGPIPE, nullptr, &old) != 0) return;
  if ((old.sa_flags & SA_SIGINFO) != 0 || old.sa_handler != SIG_DFL) return;
  struct sigaction mine {};
  mine.sa_handler = &pipe_sigpipe_handler;
  sigemptyset(&mine.sa_mask);
  mine.sa_flags = SA_RESTART;
  ::sigaction(SIGPIPE, &mine, nullptr);
}

/// write(2) on a ptk::pipe descriptor, flagged for pipe_sigpipe_handler.
inline ssize_t pipe_write(int fd, const void* data, std::size_t n) noexcept {
  in_pipe_write = 1;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  const ssize_t w = ::write(fd, data, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  in_pipe_write = 0;
  return w;
}

/// A read that never blocks on a blocking descriptor: preadv2 with RWF_NOWAIT, or,
/// on a kernel whose pipes lack it, a zero-timeout poll first (the one reader cannot
/// lose what poll saw). Returns -1 with EAGAIN when nothing is there.
inline ssize_t read_nowait(int fd, void* into, std::size_t n) noexcept {
  static constinit std::atomic<bool> no_rwf_nowait{false};
  if (!no_rwf_nowait.load(std::memory_order_relaxed)) {
    iovec v{into, n};
    const ssize_t r = ::preadv2(fd, &v, 1, -1, RWF_NOWAIT);
    if (r >= 0 || errno != EOPNOTSUPP) return r;
    no_rwf_nowait.store(true, std::memory_order_relaxed);
  }
  pollfd p{fd, POLLIN, 0};
  const int ready = ::poll(&p, 1, 0);
  if (ready == 0) errno = EAGAIN;
  if (ready <= 0) return -1;
  return ::read(fd, into, n);
}
}  // namespace detail

/// @brief One end of a duplex channel of T messages between two threads or
///        processes, over two kernel pipes (one for each direction).
///
/// Messages are framed (length and tag), so variable-size types are fine. Blocking
/// calls sleep in the kernel (read, poll); an idle endpoint uses no CPU. An endpoint
/// is two descriptors, read_fd() and write_fd(): pass both to a child with
/// ptk::command::pass_fd and rebuild the end there with from_fds().
///
/// Close semantics: close() tells the peer that nothing more will come; the peer's
/// receives drain what was sent and then return `closed`, and its sends return
/// `closed` from then on. An endpoint that disappears without close(), because it
/// was destroyed or its process died (even in the middle of a message), is reported
/// to the peer as `peer_lost` after the complete messages were drained; a send to it
/// returns `peer_lost` at once.
///
/// SIGPIPE: a write to a pipe nobody reads raises SIGPIPE. So that a send to a lost
/// peer returns `peer_lost` without a system call per message to mask the signal,
/// an endpoint created while the process's SIGPIPE is the default installs a
/// handler. It ignores the SIGPIPEs of ptk::pipe's own writes and terminates the
/// process, as the default does, on any other. A program that ignores SIGPIPE or
/// handles it itself is left alone (its handler also sees ptk's). A program that
/// resets SIGPIPE to SIG_DFL while endpoints exist must create a new endpoint
/// before sending again: until then a send to a lost peer kills it.
///
/// A malformed frame (bad tag, or longer than pipe_options::max_message_size) throws
/// ptk::channel_error; the byte stream cannot be trusted after that and every later
/// receive throws too. A message that fails to decode throws ptk::codec_error and is
/// dropped; the channel stays usable.
///
/// An endpoint is used by one thread at a time.
///
/// Once a child has its endpoint, drop the parent's copy of it. While the parent
/// holds it, the parent itself keeps the child's pipe ends open: a child that dies
/// without close() then looks like a child that is silent (recv waits on, sends
/// succeed) instead of `peer_lost`.
/// @code
/// auto [parent, child] = ptk::pipe<std::string>::create();
/// auto p = ptk::spawn(ptk::command{"./worker"}.pass_fd(child.read_fd(), 3)
///                                              .pass_fd(child.write_fd(), 4));
/// { auto handed_over = std::move(child); }  // ./worker has its own copies now
/// parent.send("ping");
/// auto reply = parent.recv();      // in ./worker: ptk::pipe<std::string>::from_fds(3, 4)
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
    auto there = detail::make_pipe();  // first -> second
    auto back = detail::make_pipe();   // second -> first
    return {pipe(std::move(back.first), std::move(there.second), options),
            pipe(std::move(there.first), std::move(back.second), options)};
  }
  /// Adopts the two pipe ends of an endpoint received from a parent (e.g.
  /// descriptors 3 and 4 passed with ptk::command::pass_fd).
  /// @param read_fd the read end of the pipe the peer writes to.
  /// @param write_fd the write end of the pipe the peer reads from.
  /// @param options limits.
  /// @return the endpoint; it owns both descriptors from now on (also when this throws).
  /// @throws std::system_error if either is not the right end of a pipe.
  static pipe from_fds(int read_fd, int write_fd, const pipe_options& options = {}) {
    detail::unique_fd r(read_fd);
    detail::unique_fd w(write_fd);
    const auto require = [](int fd, int access, const char* what) {
      struct stat st {};
      const int fl = ::fcntl(fd, F_GETFL);
      if (::fstat(fd, &st) == -1 || !S_ISFIFO(st.st_mode) || fl == -1 ||
          (fl & O_ACCMODE) != access) {
        throw_os_error(EINVAL, std::string("ptk::pipe::from_fds: descriptor ") +
                                   std::to_string(fd) + " is not " + what);
      }
    };
    require(read_fd, O_RDONLY, "the read end of a pipe");
    require(write_fd, O_WRONLY, "the write end of a pipe");
    ::fcntl(read_fd, F_SETFD, FD_CLOEXEC);
    ::fcntl(write_fd, F_SETFD, FD_CLOEXEC);
    return pipe(std::move(r), std::move(w), options);
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

  /// Sends `v`, waiting while the pipe is full.
  /// @param v the message. @param stop stops a wait that has not started writing.
  /// @return ok, closed, peer_lost or cancelled.
  /// @throws std::length_error if `v` encodes to more than max_message_size.
  channel_status send(const T& v, std::stop_token stop = {}) {
    return send_impl(v, std::nullopt, stop, true);
  }
  /// Sends `v` if the pipe can take the whole frame now.
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
  /// the pipe is full (a dead peer ends that wait at once).
  void close() {
    if (sent_close_ || !wfd_) return;
    sent_close_ = true;
    const detail::frame_header h{0, detail::frame_close};
    write_all(&h, sizeof h, std::nullopt, {});  // a dead peer needs no goodbye
    wfd_.reset();
  }
  /// @return the descriptor this endpoint receives from (a pipe's read end).
  [[nodiscard]] int read_fd() const noexcept { return rfd_.get(); }
  /// @return the descriptor this endpoint sends to (a pipe's write end), or -1 after
  ///         close().
  [[nodiscard]] int write_fd() const noexcept { return wfd_.get(); }
  /// @return the options this endpoint enforces.
  [[nodiscard]] const pipe_options& options() const noexcept { return options_; }
  /// @return whether a complete message is already buffered (try_recv would not read).
  [[nodiscard]] bool has_buffered_message() const noexcept { return complete_frame().has_value(); }

 private:
  friend struct detail::channel_access;

  bool arm_recv(detail::recv_wait& w) const {
    if (has_buffered_message() || eof_ || !broken_.empty()) return false;
    w.fd = rfd_.get();
    return true;
  }
  void disarm_recv() noexcept {}

  pipe(detail::unique_fd r, detail::unique_fd w, const pipe_options& options)
      : rfd_(std::move(r)), wfd_(std::move(w)), options_(options) {
    // Writes never block (a full pipe is waited for with poll); reads block when a
    // receive may wait for ever, and use RWF_NOWAIT otherwise.
    const int fl = detail::check(::fcntl(wfd_.get(), F_GETFL), "fcntl F_GETFL");
    detail::check(::fcntl(wfd_.get(), F_SETFL, fl | O_NONBLOCK), "fcntl F_SETFL");
    const int rl = detail::check(::fcntl(rfd_.get(), F_GETFL), "fcntl F_GETFL");
    if ((rl & O_NONBLOCK) != 0) {
      detail::check(::fcntl(rfd_.get(), F_SETFL, rl & ~O_NONBLOCK), "fcntl F_SETFL");
    }
    detail::shield_sigpipe();
  }

  enum class io { done, would_block, timeout, cancelled, lost };

  // Waits for `events` on `fd` until the deadline or a stop request.
  io wait_fd(int fd, short events, std::optional<std::chrono::steady_clock::time_point> deadline,
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
      pollfd p[2] = {{fd, events, 0}, {wake_ ? wake_.get() : -1, POLLIN, 0}};
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
      const ssize_t w = detail::pipe_write(wfd_.get(), p, n);
      if (w >= 0) {
        started = true;
        p += w;
        n -= static_cast<std::size_t>(w);
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EPIPE) return io::lost;
      if (errno != EAGAIN) throw_os_error(errno, "ptk::pipe: write");
      if (!may_wait && !started) return io::would_block;
      std::stop_token none;
      const io r = started ? wait_fd(wfd_.get(), POLLOUT, std::nullopt, none)
                           : wait_fd(wfd_.get(), POLLOUT, deadline, stop);
      if (r != io::done) return r;
    }
    return io::done;
  }

  channel_status send_impl(const T& v,
                           std::optional<std::chrono::steady_clock::time_point> deadline,
                           std::stop_token stop, bool may_wait) {
    if (sent_close_) return channel_status::closed;
    if (got_close_) return channel_status::closed;
    // The peer's end vanished without close(): its read end went with it, though
    // the kernel may release the two at slightly different moments after a kill.
    // Once a receive has seen that, sends report it too instead of filling a pipe
    // that is about to lose its reader.
    if (eof_) return channel_status::peer_lost;
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

  // Reads what the pipe has (at least one byte unless it would block).
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
      const bool block = may_wait && !deadline && !stop.stop_possible();
      void* into = rbuf_.data() + rend_;
      const std::size_t room = rbuf_.size() - rend_;
      const ssize_t r =
          block ? ::read(rfd_.get(), into, room) : detail::read_nowait(rfd_.get(), into, room);
      if (r > 0) {
        rend_ += static_cast<std::size_t>(r);
        return io::done;
      }
      if (r == 0) return io::lost;  // end of stream: every writer is gone
      if (errno == EINTR) continue;
      if (errno != EAGAIN) throw_os_error(errno, "ptk::pipe: read");
      if (!may_wait) return io::would_block;
      const io w = wait_fd(rfd_.get(), POLLIN, deadline, stop);
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
        return recv_result<T>(detail::build_value, [&] {
          return codec<T>::decode(std::span<const std::byte>(rbuf_.data() + f->payload, f->length));
        });
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

  detail::unique_fd rfd_;  // read end of the pipe from the peer
  detail::unique_fd wfd_;  // write end of the pipe to the peer; closed by close()
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
