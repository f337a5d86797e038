/// @file
/// @brief ptk::thread: a named thread whose state, kernel id and outcome can be observed.
///
/// A ptk::thread is a `std::jthread` that also
/// - carries a name, given to the kernel so that `top -H`, `ps -L`, debuggers and
///   `/proc/self/task/<tid>/comm` show it;
/// - reports its life as a ptk::thread_state (created, running, finished or failed),
///   readable from any thread at any time and waitable with a timeout;
/// - captures an exception escaping its function instead of calling std::terminate;
/// - knows its kernel thread id, to look it up with ptk::thread_info.
///
/// @code
/// ptk::thread worker{"worker-1", [](std::stop_token stop, int n) {
///   while (!stop.stop_requested() && n-- > 0) { /* ... */ }
/// }, 1000};
/// if (!worker.wait_for(std::chrono::seconds(1))) worker.request_stop();
/// worker.join();
/// if (worker.state() == ptk::thread_state::failed) std::rethrow_exception(worker.exception());
/// @endcode
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/error.hpp>
#include <ptk/thread/sync.hpp>

#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

namespace ptk {

/// @brief Where a ptk::thread is in its life. It only ever moves forward:
/// created, then running, then finished or failed.
enum class thread_state : std::uint32_t {
  created = 0,   ///< constructed; the new thread has not yet started running its function
  running = 1,   ///< its function is running
  finished = 2,  ///< its function returned normally
  failed = 3,    ///< its function exited with an exception, kept in ptk::thread::exception
};

/// @brief The name of a thread state.
/// @param state the state to name.
/// @return "created", "running", "finished" or "failed" ("unknown" for a value
///         outside the enumeration).
[[nodiscard]] constexpr std::string_view to_string(thread_state state) noexcept {
  switch (state) {
    case thread_state::created:
      return "created";
    case thread_state::running:
      return "running";
    case thread_state::finished:
      return "finished";
    case thread_state::failed:
      return "failed";
  }
  return "unknown";
}

}  // namespace ptk

namespace ptk::detail {

/// Linux keeps at most 15 bytes of a thread name (TASK_COMM_LEN is 16 with the NUL).
inline constexpr std::size_t kernel_thread_name_max = 15;

/// Gives the calling thread the kernel name `name`, cut to its first 15 bytes (never
/// in the middle of a UTF-8 sequence, and at an embedded NUL). An empty name keeps
/// the name inherited from the creating thread. Best effort: naming is advisory, and
/// pthread_setname_np on the calling thread cannot fail for a name that fits.
inline void set_kernel_thread_name(std::string_view name) noexcept {
  name = name.substr(0, name.find('\0'));
  if (name.empty()) return;
  std::size_t n = std::min(name.size(), kernel_thread_name_max);
  if (n < name.size()) {
    // The byte at n would start the next character; back up while it continues one.
    while (n > 0 && (static_cast<unsigned char>(name[n]) & 0xC0U) == 0x80U) --n;
  }
  char buf[kernel_thread_name_max + 1] = {};
  std::memcpy(buf, name.data(), n);
  (void)::pthread_setname_np(::pthread_self(), buf);
}

/// What a ptk::thread and its running thread share. It lives on the heap, owned by
/// the ptk::thread, so moving the handle never moves it; the handle joins before
/// freeing it, so the running thread's pointer stays valid for the thread's life.
struct thread_control {
  explicit thread_control(std::string thread_name) : name(std::move(thread_name)) {}

  futex_word state{static_cast<std::uint32_t>(thread_state::created)};  // the futex word
  std::atomic<std::uint32_t> waiters{0};  // sleepers on `state`: publish() wakes only if any
  std::atomic<pid_t> tid{0};              // written before `state` leaves created
  std::exception_ptr error;               // written before `state` becomes failed
  std::stop_source stop;
  const std::string name;

  [[nodiscard]] thread_state load_state() const noexcept {
    return static_cast<thread_state>(state.load(std::memory_order_acquire));
  }

  // seq_cst store then seq_cst load of `waiters`: the setter half of futex_await's
  // handshake. The store also releases tid and error to whoever sees the new state.
  void publish(thread_state s) noexcept {
    state.store(static_cast<std::uint32_t>(s), std::memory_order_seq_cst);
    if (waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(state);
  }

  bool await(steady_deadline deadline, thread_state at_least) {
    const auto target = static_cast<std::uint32_t>(at_least);
    return futex_await(
        state, waiters, [target](std::uint32_t s) { return s >= target; }, deadline, nullptr);
  }
};

/// The function and arguments of a ptk::thread, decay-copied like std::jthread does,
/// and invoked as rvalues, with the stop token first when the function accepts one.
template <class F, class... Args>
struct thread_package {
  F fn;
  std::tuple<Args...> args;

  void run(std::stop_token token) {
    std::apply(
        [&](Args&... a) {
          if constexpr (std::is_invocable_v<F, std::stop_token, Args...>) {
            std::invoke(std::move(fn), std::move(token), std::move(a)...);
          } else {
            std::invoke(std::move(fn), std::move(a)...);
          }
        },
        args);
  }
};

/// What ptk::thread accepts: a function and arguments that can be decay-copied, with
/// the function invocable on the copies, with or without a std::stop_token first.
template <class F, class... Args>
concept thread_startable = std::constructible_from<std::decay_t<F>, F> &&
    std::conjunction_v<std::is_constructible<std::decay_t<Args>, Args>...> &&
    (std::is_invocable_v<std::decay_t<F>, std::stop_token, std::decay_t<Args>...> ||
     std::is_invocable_v<std::decay_t<F>, std::decay_t<Args>...>);

/// The body of every ptk::thread. Never lets an exception out: the function's
/// exception becomes the failed state. The function and its arguments are destroyed
/// before the final state is published, so whoever sees finished or failed also sees
/// everything their destructors did.
template <class Package>
void thread_main(thread_control* control, std::unique_ptr<Package> package) noexcept {
  set_kernel_thread_name(control->name);
  control->tid.store(::gettid(), std::memory_order_relaxed);
  control->publish(thread_state::running);

  thread_state outcome = thread_state::finished;
  try {
    package->run(control->stop.get_token());
  } catch (...) {
    control->error = std::current_exception();
    outcome = thread_state::failed;
  }
  package.reset();
  control->publish(outcome);
}

}  // namespace ptk::detail

namespace ptk {

/// @brief A named, observable thread that is always joined by its owner.
///
/// `ptk::thread t{"worker-1", f, args...}` starts a thread running `f(args...)`,
/// or `f(token, args...)` when `f` accepts a `std::stop_token` first (as with
/// std::jthread). `f` and `args` are copied or moved into the new thread.
///
/// **Names.** The name is given to the kernel (pthread_setname_np), which keeps only
/// 15 bytes: a longer name is cut to its first 15 bytes (at a UTF-8 character
/// boundary) in `/proc/self/task/<tid>/comm`, `top -H` and the like, while name()
/// returns it whole. An empty name keeps the kernel name inherited from the creating
/// thread.
///
/// **State.** state() may be read from any thread at any time: created until the new
/// thread starts `f`, running while `f` runs, then finished (returned) or failed (an
/// exception escaped; exception() has it). wait_for() and wait_until() sleep on the
/// state, a futex word, until `f` has ended. An exception escaping `f` never calls
/// std::terminate.
///
/// **Lifetime.** The destructor requests a stop and joins, like std::jthread's, and a
/// move assignment does the same to the thread it replaces. There is deliberately no
/// `detach()`: a ptk::thread never outlives its owner, so nothing it uses can be
/// destroyed under it and no thread is left running at exit. A thread that must
/// outlive a scope belongs to an owner that lives longer (move it there).
///
/// An empty ptk::thread (default-constructed or moved from) is not joinable; its
/// name(), state(), exception(), native_id(), wait_for() and wait_until() throw
/// std::logic_error. After join() all of them keep working.
class thread {
 public:
  /// @brief Makes an empty thread object that represents no thread.
  thread() noexcept = default;

  /// @brief Starts a thread named `name` running `f(args...)`, or
  /// `f(stop_token, args...)` when `f` accepts that.
  /// @param name the thread's name (the kernel keeps its first 15 bytes).
  /// @param f    the function to run; decay-copied into the new thread.
  /// @param args its arguments; decay-copied into the new thread.
  /// @throws std::system_error "start thread 'name': reason" if the thread cannot be
  ///         created (e.g. EAGAIN at a thread limit).
  template <class F, class... Args>
  requires detail::thread_startable<F, Args...>
  explicit thread(std::string name, F&& f, Args&&... args)
      : control_(std::make_unique<detail::thread_control>(std::move(name))) {
    using package = detail::thread_package<std::decay_t<F>, std::decay_t<Args>...>;
    auto work = std::make_unique<package>(package{
        std::forward<F>(f), std::tuple<std::decay_t<Args>...>(std::forward<Args>(args)...)});
    try {
      thread_ = std::thread(&detail::thread_main<package>, control_.get(), std::move(work));
    } catch (const std::system_error& e) {
      throw_os_error(e.code().value(), "start thread '" + control_->name + "'");
    }
  }

  /// @brief Takes over the thread of `other`, which becomes empty.
  /// @param other the thread object to move from.
  thread(thread&& other) noexcept = default;

  /// @brief Stops and joins this object's thread (if any), then takes over `other`'s.
  /// @param other the thread object to move from; it becomes empty.
  /// @return `*this`.
  thread& operator=(thread&& other) noexcept {
    if (this != &other) {
      stop_and_join();
      control_ = std::move(other.control_);
      thread_ = std::move(other.thread_);
    }
    return *this;
  }

  thread(const thread&) = delete;             ///< Not copyable: a thread has one owner.
  thread& operator=(const thread&) = delete;  ///< Not copyable: a thread has one owner.

  /// @brief Requests a stop and joins, like std::jthread's destructor.
  ~thread() { stop_and_join(); }

  /// @brief The thread's name, whole (the kernel shows at most its first 15 bytes).
  /// @return the name given at construction.
  /// @throws std::logic_error on an empty ptk::thread.
  [[nodiscard]] const std::string& name() const { return control().name; }

  /// @brief Where the thread is in its life; safe to call from any thread.
  /// @return created, running, finished or failed.
  /// @throws std::logic_error on an empty ptk::thread.
  [[nodiscard]] thread_state state() const { return control().load_state(); }

  /// @brief The exception that escaped the thread's function.
  /// @return it when state() is failed; a null pointer otherwise (also while running).
  /// @throws std::logic_error on an empty ptk::thread.
  [[nodiscard]] std::exception_ptr exception() const {
    const detail::thread_control& c = control();
    // The acquire load of the state orders the read of `error` after its write.
    return c.load_state() == thread_state::failed ? c.error : nullptr;
  }

  /// @brief The thread's kernel thread id (what gettid returns in it, the `<tid>` of
  /// `/proc/self/task/<tid>`), for ptk::thread_info.
  ///
  /// The new thread publishes its id as it starts, before running its function: if it
  /// has not yet done so, this call sleeps until it has (typically microseconds).
  /// After the thread has exited the id stays readable here, but the kernel may reuse
  /// it for another thread.
  /// @return the kernel thread id.
  /// @throws std::logic_error on an empty ptk::thread.
  [[nodiscard]] pid_t native_id() const {
    detail::thread_control& c = control();
    if (c.load_state() == thread_state::created) {
      (void)c.await(detail::no_deadline, thread_state::running);
    }
    return c.tid.load(std::memory_order_relaxed);
  }

  /// @brief The pthread handle, for POSIX calls such as pthread_kill.
  /// @return the handle; meaningful only while joinable().
  [[nodiscard]] std::thread::native_handle_type native_handle() { return thread_.native_handle(); }

  /// @brief Whether this object has a thread that has not been joined yet.
  /// @return true from construction until join() (or a move away).
  [[nodiscard]] bool joinable() const noexcept { return thread_.joinable(); }

  /// @brief Blocks until the thread has exited. state(), exception(), name() and
  /// native_id() remain available afterwards.
  /// @throws std::system_error if not joinable(), or when called from the thread itself.
  void join() { thread_.join(); }

  /// @brief Asks the thread to stop, through the std::stop_token its function received.
  /// @return true if this call made the request, false if a stop was already
  ///         requested or this ptk::thread is empty.
  bool request_stop() noexcept { return control_ != nullptr && control_->stop.request_stop(); }

  /// @brief The stop token the thread's function receives.
  /// @return a token of the thread's stop state; one with no stop state for an empty
  ///         ptk::thread.
  [[nodiscard]] std::stop_token get_stop_token() const noexcept {
    return control_ != nullptr ? control_->stop.get_token() : std::stop_token{};
  }

  /// @brief Waits until the thread's function has ended (finished or failed), for at
  /// most `timeout`. The thread may still be exiting: join() it to be sure it is gone.
  /// @param timeout how long to wait at most; zero or negative only checks.
  /// @return true if the function has ended, false on timeout.
  /// @throws std::logic_error on an empty ptk::thread.
  template <class Rep, class Period>
  [[nodiscard]] bool wait_for(std::chrono::duration<Rep, Period> timeout) const {
    detail::thread_control& c = control();
    if (timeout <= timeout.zero()) return ended(c);
    return ended(c) || c.await(detail::deadline_after(timeout), thread_state::finished);
  }

  /// @brief Waits until the thread's function has ended (finished or failed), or until
  /// the time `deadline`.
  /// @param deadline when to give up; a steady_clock time is followed exactly, another
  ///        clock's time is converted to a timeout once, when the wait starts.
  /// @return true if the function has ended, false on timeout.
  /// @throws std::logic_error on an empty ptk::thread.
  template <class Clock, class Duration>
  [[nodiscard]] bool wait_until(const std::chrono::time_point<Clock, Duration>& deadline) const {
    detail::thread_control& c = control();
    return ended(c) || c.await(detail::deadline_at(deadline), thread_state::finished);
  }

 private:
  [[nodiscard]] detail::thread_control& control() const {
    if (control_ == nullptr) {
      throw std::logic_error("ptk::thread: no thread (default-constructed or moved from)");
    }
    return *control_;
  }

  static bool ended(const detail::thread_control& c) noexcept {
    return c.load_state() >= thread_state::finished;
  }

  void stop_and_join() noexcept {
    if (!thread_.joinable()) return;
    control_->stop.request_stop();
    thread_.join();  // from the thread itself this throws, and noexcept terminates
  }

  // control_ first: it is created before the thread starts and must outlive it.
  std::unique_ptr<detail::thread_control> control_;
  std::thread thread_;
};

}  // namespace ptk
