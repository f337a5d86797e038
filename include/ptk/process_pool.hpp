/// @file
/// @brief ptk::process_pool: Python's ProcessPoolExecutor in C++, crash-isolated.
///
/// Functions registered with PTK_REMOTE run in worker processes; a crash, a hang or a
/// leak costs one task, never the pool.
///
/// @code
/// int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
/// PTK_REMOTE(fib);
///
/// int main() {
///   ptk::process_pool::serve_if_worker();  // first thing: workers serve from here
///   ptk::process_pool pool{{.workers = 4, .max_tasks_per_worker = 1000, .task_timeout = 10s}};
///   ptk::future<int> f = pool.submit(fib, 30);
///   std::vector<int> all = pool.map(fib, std::vector<int>{20, 21, 22});
/// }
/// @endcode
///
/// How workers start. A worker is never a fork of the (possibly multithreaded)
/// parent: the pool re-executes the program's own binary (/proc/self/exe) with the
/// parent's arguments and an environment variable naming the descriptor of its
/// channel. The re-executed program runs its static initialisers (so every
/// PTK_REMOTE registration exists, in every translation unit) and then main(). The
/// worker turns into a server at the first of:
/// - a call to ptk::process_pool::serve_if_worker(), which programs should make first
///   thing in main();
/// - the construction of a ptk::process_pool, like Python's "spawn" start method,
///   which re-imports the main module: whatever main() does before it reaches the
///   pool runs once more in every worker (printing, opening files, reading stdin,
///   which is /dev/null in a worker). Call serve_if_worker() to avoid that.
///
/// Tasks name their function by the string PTK_REMOTE registered, so the parent and
/// the worker must be the same binary: they are.
///
/// The cost of that choice, measured by benchmarks/process_pool.cpp on a 2-vCPU VM:
/// one worker goes from spawn to serving in about 1.6 ms on a quiet machine (3 to
/// 7 ms while other builds run; a program with heavy static initialisers pays for
/// them in every worker), four in about 4 ms (8 to 12 ms under load). Python's
/// ProcessPoolExecutor takes about 12 ms for four with its fork start method and
/// 100 to 300 ms with spawn. A fork server would start workers faster, but it is a
/// fork of a process that must itself stay single-threaded; a re-executed binary
/// needs no such care.
#pragma once

#include <ptk/config.hpp>
#include <ptk/ipc/codec.hpp>
#include <ptk/ipc/pipe.hpp>
#include <ptk/process/command.hpp>
#include <ptk/process/exit_status.hpp>
#include <ptk/process/process.hpp>
#include <ptk/thread/future.hpp>

#include <cxxabi.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <typeinfo>
#include <utility>
#include <variant>
#include <vector>

namespace ptk {

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// @brief The base of every error a ptk::process_pool future reports (besides the
///        ptk::codec_error of a result that does not decode).
class process_pool_error : public std::runtime_error {
 public:
  /// @param what the message.
  explicit process_pool_error(const std::string& what) : std::runtime_error(what) {}
};

/// @brief A task threw: the exception's type name (demangled) and message, as the
///        worker saw them.
///
/// @code
/// try { pool.submit(parse, "x").get(); }
/// catch (const ptk::remote_error& e) {
///   std::puts(e.type_name().c_str());  // "std::invalid_argument"
/// }
/// @endcode
class remote_error : public process_pool_error {
 public:
  /// @param type_name the demangled type of the exception thrown in the worker.
  /// @param message its what(), or a note when it was not a std::exception.
  remote_error(std::string type_name, std::string message)
      : process_pool_error("remote task threw " + type_name + ": " + message),
        type_(std::move(type_name)),
        message_(std::move(message)) {}
  /// @return the demangled type name, e.g. "std::out_of_range".
  [[nodiscard]] const std::string& type_name() const noexcept { return type_; }
  /// @return the exception's message.
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

 private:
  std::string type_;
  std::string message_;
};

/// @brief The worker running the task died (a signal such as SIGSEGV, SIGABRT or
///        SIGKILL, or an exit from inside the task). The pool replaced it.
class worker_crash_error : public process_pool_error {
 public:
  /// @param status how the worker ended.
  explicit worker_crash_error(const exit_status& status)
      : process_pool_error("ptk::process_pool: worker " + status.to_string() +
                           " while running the task"),
        status_(status) {}
  /// @return how the worker ended.
  [[nodiscard]] const exit_status& status() const noexcept { return status_; }
  /// @return the signal that killed the worker, or 0 if it exited.
  [[nodiscard]] int signal() const noexcept { return status_.signal(); }

 private:
  exit_status status_;
};

/// @brief The task ran longer than process_pool_options::task_timeout; its worker
///        was killed (with its whole process group) and replaced.
class task_timeout_error : public process_pool_error {
 public:
  /// @param limit the timeout that was exceeded.
  explicit task_timeout_error(std::chrono::milliseconds limit)
      : process_pool_error("ptk::process_pool: task exceeded its timeout of " +
                           std::to_string(limit.count()) + " ms; its worker was killed"),
        limit_(limit) {}
  /// @return the timeout that was exceeded.
  [[nodiscard]] std::chrono::milliseconds timeout() const noexcept { return limit_; }

 private:
  std::chrono::milliseconds limit_;
};

/// @brief The task was cancelled: by process_pool::shutdown(shutdown_mode::immediate)
///        before it finished, or by its future's request_stop() before it started.
class task_cancelled_error : public process_pool_error {
 public:
  task_cancelled_error()
      : process_pool_error("ptk::process_pool: task cancelled by an immediate shutdown") {}
};

// ---------------------------------------------------------------------------
// Registration of remote functions
// ---------------------------------------------------------------------------

namespace detail {

using erased_fn = void (*)();
using remote_invoker = void (*)(erased_fn fn, std::span<const std::byte> args,
                                std::vector<std::byte>& out);

template <class P>
inline constexpr bool remote_param_ok =
    encodable<std::remove_cvref_t<P>> &&
    !(std::is_lvalue_reference_v<P> && !std::is_const_v<std::remove_reference_t<P>>);

template <class R, class... P>
constexpr void check_remote_signature() {
  static_assert((remote_param_ok<P> && ...),
                "ptk::process_pool: every parameter of a remote function must cross processes "
                "through ptk::codec (trivially copyable types without pointers, std::string, "
                "std::vector of those, or your own ptk::codec specialisation), by value or by "
                "const reference");
  static_assert(std::is_void_v<R> || encodable<std::remove_cvref_t<R>>,
                "ptk::process_pool: the result of a remote function must be void or a type "
                "with a ptk::codec (trivially copyable without pointers, std::string, std::vector "
                "of those, or your own ptk::codec specialisation)");
  static_assert(!std::is_reference_v<R> && !std::is_const_v<R>,
                "ptk::process_pool: a remote function returns a non-const value, not a reference");
}

inline void put_bytes(std::vector<std::byte>& out, const void* p, std::size_t n) {
  const std::size_t at = out.size();
  out.resize(at + n);
  if (n != 0) std::memcpy(out.data() + at, p, n);
}
template <class T>
void put_pod(std::vector<std::byte>& out, T v) {
  put_bytes(out, &v, sizeof v);
}
template <class T>
void put_value(std::vector<std::byte>& out, const T& v) {  // codec bytes, no length
  const std::size_t n = codec<T>::encoded_size(v);
  const std::size_t at = out.size();
  out.resize(at + n);
  codec<T>::encode(v, std::span<std::byte>(out.data() + at, n));
}
template <class T>
void put_sized(std::vector<std::byte>& out, const T& v) {  // u64 length, then codec bytes
  put_pod(out, static_cast<std::uint64_t>(codec<T>::encoded_size(v)));
  put_value(out, v);
}

struct byte_reader {
  std::span<const std::byte> in;
  template <class T>
  T pod() {
    T v;
    std::memcpy(&v, take(sizeof v).data(), sizeof v);
    return v;
  }
  std::span<const std::byte> take(std::uint64_t n) {
    if (n > in.size()) throw codec_error("process_pool: truncated message");
    auto s = in.first(static_cast<std::size_t>(n));
    in = in.subspan(static_cast<std::size_t>(n));
    return s;
  }
  std::string_view text(std::uint64_t n) {
    auto s = take(n);
    return {reinterpret_cast<const char*>(s.data()), s.size()};
  }
};

// Runs in the worker: decodes the arguments, calls the function, encodes the result.
template <class R, class... P>
void invoke_remote(erased_fn fn, std::span<const std::byte> args, std::vector<std::byte>& out) {
  auto f = reinterpret_cast<R (*)(P...)>(fn);  // NOLINT: the inverse of the registration's cast
  byte_reader in{args};
  std::array<std::span<const std::byte>, sizeof...(P)> parts{};
  for (auto& part : parts) part = in.take(in.pod<std::uint64_t>());
  if (!in.in.empty()) throw codec_error("process_pool: more arguments than the function takes");
  [&]<std::size_t... I>(std::index_sequence<I...>) {
    std::tuple<std::remove_cvref_t<P>...> values{
        codec<std::remove_cvref_t<P>>::decode(parts[I])...};
    if constexpr (std::is_void_v<R>) {
      f(std::get<I>(std::move(values))...);
    } else {
      put_value<R>(out, f(std::get<I>(std::move(values))...));
    }
  }
  (std::index_sequence_for<P...>{});
}

/// The functions a program registered with PTK_REMOTE, by name and by address.
class remote_registry {
 public:
  struct entry {
    erased_fn fn;
    remote_invoker invoke;
    bool ambiguous;
  };

  static remote_registry& instance() {
    static remote_registry r;  // built on first use: safe from any static initialiser
    return r;
  }

  void add(const char* name, erased_fn fn, remote_invoker invoke) {
    const std::lock_guard lock(m_);
    auto [it, inserted] = by_name_.try_emplace(name, entry{fn, invoke, false});
    if (!inserted && it->second.fn != fn) it->second.ambiguous = true;  // two functions, one name
    by_fn_.try_emplace(fn, it->first);
  }

  std::optional<entry> find(std::string_view name) {
    const std::lock_guard lock(m_);
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return std::nullopt;
    return it->second;
  }

  // The name a function was registered under; throws if it was not, or if its name
  // is shared with another function.
  const std::string& name_of(erased_fn fn) {
    const std::lock_guard lock(m_);
    auto it = by_fn_.find(fn);
    if (it == by_fn_.end()) {
      throw std::invalid_argument(
          "ptk::process_pool::submit: this function is not registered as a remote function; "
          "add PTK_REMOTE(its_name); at namespace scope next to its definition");
    }
    if (by_name_.find(it->second)->second.ambiguous) {
      throw std::invalid_argument(
          "ptk::process_pool::submit: two different functions were registered as '" + it->second +
          "'; give one of them another name");
    }
    return it->second;
  }

 private:
  std::mutex m_;
  std::map<std::string, entry, std::less<>> by_name_;
  std::map<erased_fn, std::string> by_fn_;
};

/// What PTK_REMOTE expands to: registers a function at static initialisation.
struct remote_registrar {
  template <class R, class... P>
  remote_registrar(const char* name, R (*f)(P...)) {
    check_remote_signature<R, P...>();
    remote_registry::instance().add(name, reinterpret_cast<erased_fn>(f),  // NOLINT
                                    &invoke_remote<R, P...>);
  }
};

// Message kinds on a worker's channel.
enum class pool_msg : std::uint8_t { task = 1, ready = 2, value = 3, error = 4 };

inline constexpr const char* worker_fd_env = "PTK_PROCESS_POOL_WORKER_FD";
inline constexpr const char* worker_parent_env = "PTK_PROCESS_POOL_PARENT";

// Requests up to this size are sent ahead to a busy worker; a larger one waits until
// its worker is idle (and reading), so the pool never blocks writing to a worker
// that is itself blocked writing a result to the pool.
inline constexpr std::size_t pipelined_request_limit = 16 * 1024;
inline constexpr std::size_t pipelined_bytes_limit = 64 * 1024;
// Tasks shorter than this on average are worth sending ahead (process_pool_options::prefetch).
inline constexpr std::chrono::milliseconds short_task{1};

inline std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(mangled, nullptr, nullptr, &status), std::free);
  return status == 0 && out ? std::string(out.get()) : std::string(mangled);
}

inline void put_error(std::vector<std::byte>& out, std::uint64_t id, const std::string& type,
                      const std::string& message) {
  out.clear();
  put_pod(out, pool_msg::error);
  put_pod(out, id);
  put_pod(out, static_cast<std::uint32_t>(type.size()));
  put_bytes(out, type.data(), type.size());
  put_bytes(out, message.data(), message.size());
}

// The worker's side: answers task requests in order until the pool closes the channel.
// Its channel is descriptors `fd` (from the pool) and `fd + 1` (to the pool).
[[noreturn]] inline void serve_worker(int fd) {
  try {
    auto ch = pipe<std::vector<std::byte>>::from_fds(fd, fd + 1);
    std::vector<std::byte> reply;
    put_pod(reply, pool_msg::ready);
    put_pod(reply, std::uint64_t{0});
    if (ch.send(reply) != channel_status::ok) ::_exit(0);
    for (;;) {
      auto request = ch.recv();
      if (!request) break;  // closed by the pool (shutdown, recycling) or the pool died
      byte_reader in{*request};
      std::uint64_t id = 0;
      try {
        if (in.pod<pool_msg>() != pool_msg::task)
          throw codec_error("process_pool: unexpected message kind");
        id = in.pod<std::uint64_t>();
        const std::string_view name = in.text(in.pod<std::uint32_t>());
        const auto e = remote_registry::instance().find(name);
        if (!e) {
          throw process_pool_error("ptk::process_pool: function '" + std::string(name) +
                                   "' is not registered in the worker");
        }
        reply.clear();
        put_pod(reply, pool_msg::value);
        put_pod(reply, id);
        e->invoke(e->fn, in.in, reply);
      } catch (const std::exception& ex) {
        put_error(reply, id, demangle(typeid(ex).name()), ex.what());
      } catch (...) {
        const std::type_info* t = abi::__cxa_current_exception_type();
        put_error(reply, id, t != nullptr ? demangle(t->name()) : "unknown",
                  "(not a std::exception)");
      }
      if (ch.send(reply) != channel_status::ok) break;
    }
  } catch (...) {
    std::fflush(nullptr);
    ::_exit(70);  // the channel itself failed: nothing sensible left to do
  }
  // Leave without the program's atexit handlers and static destructors: this process
  // is a clone of the program's start, and the work it did belongs to the parent.
  std::fflush(nullptr);
  ::_exit(0);
}

/// The pool's side of a submitted task: a future state that a worker's reply fulfils.
class remote_sink {
 public:
  remote_sink() = default;
  remote_sink(const remote_sink&) = delete;
  remote_sink& operator=(const remote_sink&) = delete;
  // Decodes the result and keeps it; the error if the bytes did not decode. The
  // pool counts the outcome between stage() and publish(), so a caller that sees
  // its result also sees it counted in stats().
  virtual std::exception_ptr stage(std::span<const std::byte> result) noexcept = 0;
  virtual void publish() noexcept = 0;  // fulfils the future with the staged result
  virtual void fail_with(std::exception_ptr e) noexcept = 0;
  virtual void drop() noexcept = 0;  // the pool's reference
  // Whether the future's request_stop() was called (checked before dispatch).
  [[nodiscard]] virtual bool cancel_requested() const noexcept = 0;

 protected:
  ~remote_sink() = default;
};

template <class R>
class remote_state final : public future_state<R>, public remote_sink {
 public:
  remote_state() : future_state<R>(&remote_state::destroy) { this->stop_ = std::stop_source(); }

  std::exception_ptr stage(std::span<const std::byte> result) noexcept override {
    try {
      if constexpr (std::is_void_v<R>) {
        if (!result.empty()) throw codec_error("process_pool: a void task returned bytes");
      } else {
        staged_.emplace(codec<R>::decode(result));
      }
      return nullptr;
    } catch (...) {
      return std::current_exception();
    }
  }
  void publish() noexcept override {
    if constexpr (std::is_void_v<R>) {
      this->fulfil([] {});
    } else {
      this->fulfil([this]() -> R { return std::move(*staged_); });
    }
  }
  void fail_with(std::exception_ptr e) noexcept override { this->fail(std::move(e)); }
  void drop() noexcept override { this->release(); }
  [[nodiscard]] bool cancel_requested() const noexcept override {
    return this->stop_.stop_requested();
  }

 private:
  ~remote_state() = default;
  static void destroy(future_state<R>* s) noexcept { delete static_cast<remote_state*>(s); }

  [[no_unique_address]] std::conditional_t<std::is_void_v<R>, std::monostate, std::optional<R>>
      staged_;
};

// One submitted task on its way: the encoded request and the future to fulfil.
struct pool_call {
  std::vector<std::byte> request;
  remote_sink* sink = nullptr;
};

// The parent's arguments, for the workers' main(): a program that parses them before
// it reaches the pool parses them the same way in a worker.
inline std::vector<std::string> own_arguments() {
  std::string all;
  if (const int fd = ::open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC); fd != -1) {
    char buf[4096];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) all.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
  }
  std::vector<std::string> args;
  for (std::size_t at = 0; at < all.size();) {
    const std::size_t end = std::min(all.find('\0', at), all.size());
    args.emplace_back(all, at, end - at);
    at = end + 1;
  }
  if (!args.empty()) args.erase(args.begin());  // the program itself
  return args;
}

}  // namespace detail

// clang-format off
/// @brief Registers a function to run in a ptk::process_pool, under its own name.
///
/// Write it at namespace scope, after the function's declaration, in a file of the
/// program (it is a static registrar, run before main):
/// @code
/// int fib(int n);
/// PTK_REMOTE(fib);
/// @endcode
/// The parameters and the result must have a ptk::codec; a compile error says so
/// otherwise. Overloaded functions cannot be registered this way.
/// @param fn the function's name.
#define PTK_REMOTE(fn) \
  [[maybe_unused]] static const ::ptk::detail::remote_registrar PTK_POOL_CAT(ptk_remote_, __COUNTER__){#fn, &fn}
// clang-format on

/// @brief Pastes two tokens after expanding them (used by PTK_REMOTE).
/// @param a the first token. @param b the second token.
#define PTK_POOL_CAT(a, b) PTK_POOL_CAT_IMPL(a, b)
/// @brief Pastes two tokens (used by PTK_POOL_CAT).
/// @param a the first token. @param b the second token.
#define PTK_POOL_CAT_IMPL(a, b) a##b

// ---------------------------------------------------------------------------
// The pool
// ---------------------------------------------------------------------------

/// @brief How a ptk::process_pool runs its workers.
struct process_pool_options {
  /// How many worker processes; 0 means std::thread::hardware_concurrency().
  std::size_t workers = 0;
  /// A worker is replaced after this many tasks (a leak stays bounded); 0: never.
  std::size_t max_tasks_per_worker = 0;
  /// A task running longer is failed with ptk::task_timeout_error and its worker
  /// killed and replaced; 0: no limit.
  std::chrono::milliseconds task_timeout{0};
  /// How many tasks may be sent ahead to one worker (it runs them one at a time, in
  /// order), to hide the round trip of short tasks. Only a worker whose recent tasks
  /// took under a millisecond, and whose current task has not run that long, gets
  /// more than one: a long task never holds queued ones hostage while another
  /// worker is free. A crash fails only the running task: the ones queued behind it
  /// in that worker go back to the pool's queue. 1 turns prefetching off.
  std::size_t prefetch = 16;
  /// A worker that is not serving this long after its spawn is killed and counted
  /// as a start failure; three failures in a row without any worker ever serving
  /// break the pool (every task then fails with ptk::process_pool_error).
  std::chrono::milliseconds start_timeout{30000};
};

/// @brief How process_pool::shutdown ends the pool.
enum class shutdown_mode {
  graceful,   ///< run every task already submitted, then stop the workers
  immediate,  ///< fail queued and running tasks with ptk::task_cancelled_error and kill the workers
};

/// @brief A snapshot of a pool's activity, for a metrics endpoint.
struct process_pool_stats {
  std::size_t workers_alive = 0;  ///< workers started and serving
  std::size_t tasks_queued = 0;   ///< submitted, not yet sent to a worker
  std::size_t tasks_running =
      0;                         ///< sent to a worker (running, or prefetched behind a running one)
  std::uint64_t tasks_done = 0;  ///< finished with a result
  std::uint64_t tasks_failed =
      0;                       ///< finished with an error: exception, crash, timeout, cancellation
  std::uint64_t crashes = 0;   ///< workers that died on their own (signal or exit)
  std::uint64_t timeouts = 0;  ///< workers killed for a task past task_timeout
  std::uint64_t recycled = 0;  ///< workers retired after max_tasks_per_worker tasks
  std::uint64_t restarts = 0;  ///< workers started to replace a crashed, killed or retired one
};

/// @brief A pool of worker processes running registered functions: Python's
///        concurrent.futures.ProcessPoolExecutor, with crash isolation.
///
/// Each task runs in a worker process started by re-executing the program (see the
/// file's documentation for how, and why a worker is never a fork of this process).
/// Arguments and results cross through ptk::codec. A task that throws fails its
/// future with ptk::remote_error; a worker that crashes, is killed or runs past the
/// timeout fails only the task it was running (ptk::worker_crash_error,
/// ptk::task_timeout_error) and is replaced. Workers get SIGKILL when the pool's
/// supervisor thread ends, even if the whole parent is killed (parent-death signal),
/// and lead their own process group, so a task's own children die with them.
///
/// submit() and map() may be called from any thread. Costs: a worker starts in
/// about the time of an exec of the program plus its static initialisers (about
/// 2 ms for a small program); a task costs one message each way over a Unix
/// socket, relayed by the pool's supervisor thread: 10 to 100 microseconds for one
/// task in flight (thread wake-ups dominate), about 4 microseconds per task of
/// throughput with many trivial tasks in flight on 2 workers.
///
/// Shutdown: the destructor (like shutdown()) runs every submitted task first, so a
/// task that never ends keeps it waiting unless task_timeout is set;
/// shutdown(shutdown_mode::immediate) cancels instead.
///
/// @code
/// ptk::process_pool pool{{.workers = 2, .task_timeout = 5s}};
/// auto f = pool.submit(fib, 30);
/// try { int v = f.get(); }
/// catch (const ptk::worker_crash_error& e) {
///   std::printf("worker killed by signal %d\n", e.signal());  // e.g. SIGSEGV
/// }
/// @endcode
class process_pool {
 public:
  /// Starts the supervisor thread, which spawns the workers (the constructor does
  /// not wait for them: see wait_ready()). In a worker process, this is where the
  /// worker starts serving if serve_if_worker() was not called earlier.
  /// @param options sizes and limits.
  explicit process_pool(process_pool_options options = {}) : options_(options) {
    serve_if_worker();
    if (options_.workers == 0) options_.workers = std::max(1U, std::thread::hardware_concurrency());
    if (options_.prefetch == 0) options_.prefetch = 1;
    args_ = detail::own_arguments();
    wake_ = detail::unique_fd(detail::check(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd"));
    supervisor_ = std::thread([this] { supervise(); });
  }

  /// Shuts down gracefully: waits for every submitted task, then stops the workers.
  ~process_pool() { shutdown(shutdown_mode::graceful); }

  process_pool(const process_pool&) = delete;
  process_pool& operator=(const process_pool&) = delete;

  /// In a worker process started by a pool, serves tasks and never returns; in any
  /// other process, returns at once. Call it first thing in main() so that nothing
  /// main() does runs again in the workers.
  static void serve_if_worker() {
    const char* fd_text = std::getenv(detail::worker_fd_env);
    if (fd_text == nullptr) return;
    const int fd = std::atoi(fd_text);
    const char* parent_text = std::getenv(detail::worker_parent_env);
    const pid_t parent = parent_text != nullptr ? static_cast<pid_t>(std::atol(parent_text)) : 0;
    ::unsetenv(detail::worker_fd_env);  // a pool made by a task is an ordinary pool
    ::unsetenv(detail::worker_parent_env);
    // Normally set by the spawn already; again here for the posix_spawn backend. The
    // check after it closes the race with a parent that died before the prctl.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (parent != 0 && ::getppid() != parent) ::_exit(0);
    detail::serve_worker(fd);
  }

  /// Runs `f(args...)` in a worker.
  /// @param f a function registered with PTK_REMOTE.
  /// @param args its arguments, converted to its parameter types and encoded here.
  /// @return the future result; its get() rethrows ptk::remote_error,
  ///         ptk::worker_crash_error, ptk::task_timeout_error or
  ///         ptk::task_cancelled_error. Its request_stop() cancels the task if no
  ///         worker has started it yet (a running task is not interrupted: use
  ///         task_timeout for that).
  /// @throws std::invalid_argument if `f` is not registered.
  /// @throws ptk::process_pool_error after shutdown().
  /// @tparam R the result type. @tparam P the parameter types. @tparam A the argument types.
  template <class R, class... P, class... A>
  future<R> submit(R (*f)(P...), A&&... args) {
    detail::check_remote_signature<R, P...>();
    static_assert(sizeof...(A) == sizeof...(P),
                  "ptk::process_pool::submit: wrong number of arguments");
    const std::string& name =
        detail::remote_registry::instance().name_of(reinterpret_cast<detail::erased_fn>(f));
    detail::pool_call call;
    encode_request<std::remove_cvref_t<P>...>(call.request, name, std::forward<A>(args)...);
    auto* state = new detail::remote_state<R>();
    future<R> fut = detail::make_future<R>(state);
    call.sink = state;
    {
      const std::lock_guard lock(m_);
      if (stop_ != stop_state::running) {
        state->drop();
        throw process_pool_error("ptk::process_pool::submit: the pool is shut down");
      }
      incoming_.push_back(std::move(call));
      queued_.fetch_add(1, std::memory_order_relaxed);
    }
    if (supervisor_idle_.exchange(false)) wake();  // a busy supervisor sees it anyway
    return fut;
  }

  /// Runs `f` on every element of `inputs` and returns the results in order, like
  /// Python's Executor.map. Every task is submitted before the first is waited for.
  /// @param f a function of one parameter registered with PTK_REMOTE.
  /// @param inputs the arguments.
  /// @return the results, in the order of `inputs`.
  /// @throws the first failure in input order (after every task has finished).
  /// @tparam R the result type. @tparam P the parameter type. @tparam Range a range of arguments.
  template <class R, class P, class Range>
  std::vector<R> map(R (*f)(P), const Range& inputs) {
    static_assert(!std::is_void_v<R>, "ptk::process_pool::map: the function must return a value");
    std::vector<future<R>> futures;
    for (const auto& x : inputs) futures.push_back(submit(f, x));
    std::vector<R> out;
    out.reserve(futures.size());
    std::exception_ptr first;
    for (auto& fut : futures) {
      try {
        out.push_back(fut.get());
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first) std::rethrow_exception(first);
    return out;
  }

  /// Stops the pool and waits until every worker has exited; later submits throw.
  /// Idempotent; an immediate shutdown may follow a graceful one that is waiting.
  /// @param mode graceful (finish every submitted task) or immediate (cancel them).
  void shutdown(shutdown_mode mode = shutdown_mode::graceful) {
    {
      const std::lock_guard lock(m_);
      if (mode == shutdown_mode::immediate) {
        stop_ = stop_state::immediate;
      } else if (stop_ == stop_state::running) {
        stop_ = stop_state::graceful;
      }
    }
    wake();
    const std::lock_guard join(join_m_);
    if (supervisor_.joinable()) supervisor_.join();
  }

  /// Waits until every worker has started and is serving (or the pool broke or
  /// stopped). Useful before timing, or to surface start-up problems early.
  /// @param timeout how long to wait at most.
  /// @return whether all workers are serving.
  template <class Rep, class Period>
  bool wait_ready_for(std::chrono::duration<Rep, Period> timeout) {
    std::unique_lock lock(m_);
    ready_cv_.wait_for(lock, timeout, [&] {
      return alive_.load() >= options_.workers || broken_.load() || stop_ != stop_state::running;
    });
    return alive_.load() >= options_.workers;
  }

  /// @return a snapshot of the pool's counters.
  [[nodiscard]] process_pool_stats stats() const noexcept {
    process_pool_stats s;
    s.workers_alive = alive_.load(std::memory_order_relaxed);
    s.tasks_queued = queued_.load(std::memory_order_relaxed);
    s.tasks_running = running_.load(std::memory_order_relaxed);
    s.tasks_done = done_.load(std::memory_order_relaxed);
    s.tasks_failed = failed_.load(std::memory_order_relaxed);
    s.crashes = crashes_.load(std::memory_order_relaxed);
    s.timeouts = timeouts_.load(std::memory_order_relaxed);
    s.recycled = recycled_.load(std::memory_order_relaxed);
    s.restarts = restarts_.load(std::memory_order_relaxed);
    return s;
  }

  /// @return the number of workers the pool keeps running.
  [[nodiscard]] std::size_t size() const noexcept { return options_.workers; }

 private:
  using clock = std::chrono::steady_clock;
  using channel = pipe<std::vector<std::byte>>;
  enum class stop_state { running, graceful, immediate };

  struct worker {
    explicit worker(channel c) : ch(std::move(c)), spawned_at(clock::now()) {}
    process proc;
    channel ch;
    clock::time_point spawned_at;
    clock::time_point head_started;          // when the oldest in-flight task started running
    std::optional<clock::duration> typical;  // moving average of its recent task times
    std::deque<detail::pool_call> in_flight;
    std::size_t in_flight_bytes = 0;
    std::size_t sent = 0;
    bool ready = false;
    bool lost = false;      // a send failed: its end of stream is on the way
    bool retiring = false;  // closed after its last task; waiting for it to exit
    bool dead = false;      // reaped; removed at the end of the round
  };

  // D: the parameter types without references; each argument is converted to its
  // parameter's type before it is encoded (a string literal becomes a std::string).
  template <class... D, class... A>
  static void encode_request(std::vector<std::byte>& out, const std::string& name, A&&... args) {
    detail::put_pod(out, detail::pool_msg::task);
    detail::put_pod(out, std::uint64_t{0});  // the id, filled in by the supervisor
    detail::put_pod(out, static_cast<std::uint32_t>(name.size()));
    detail::put_bytes(out, name.data(), name.size());
    (encode_arg<D>(out, std::forward<A>(args)), ...);
  }
  template <class D, class A>
  static void encode_arg(std::vector<std::byte>& out, A&& a) {
    if constexpr (std::is_same_v<std::remove_cvref_t<A>, D>) {
      detail::put_sized<D>(out, a);
    } else {
      const D converted(std::forward<A>(a));
      detail::put_sized<D>(out, converted);
    }
  }

  void wake() noexcept {
    const std::uint64_t one = 1;
    (void)!::write(wake_.get(), &one, sizeof one);
  }
  void notify_ready() {
    { const std::lock_guard lock(m_); }
    ready_cv_.notify_all();
  }

  // The exception, with the temporary it was copied from already destroyed: the
  // message of a std::runtime_error is reference-counted, and the last reference
  // must not be dropped here after the future's reader may have read it.
  template <class E, class... A>
  static std::exception_ptr make_error(const A&... a) {
    return std::make_exception_ptr(E(a...));
  }

  static void finish(detail::pool_call& c, std::exception_ptr e) noexcept {
    c.sink->fail_with(std::move(e));
    std::exchange(c.sink, nullptr)->drop();
  }
  void fail_call(detail::pool_call& c, std::exception_ptr e) noexcept {
    failed_.fetch_add(1, std::memory_order_relaxed);  // counted before the caller can see it
    finish(c, std::move(e));
  }

  // ---- the supervisor thread: the only one touching workers_ and pending_ ----

  void supervise() {
    try {
      serve_tasks();
    } catch (const std::exception& e) {  // the OS refused something the pool cannot do without
      broken_reason_ = std::string("ptk::process_pool: supervisor failed: ") + e.what();
      broken_.store(true);
      const std::lock_guard lock(m_);
      stop_ = stop_state::immediate;
    }
    try {
      stop_all();
    } catch (...) {  // nothing left to report to: the workers are killed by their death signal
    }
  }

  void serve_tasks() {
    for (;;) {
      stop_state stop;
      {
        const std::lock_guard lock(m_);
        for (auto& c : incoming_) pending_.push_back(std::move(c));
        incoming_.clear();
        stop = stop_;
      }
      if (stop == stop_state::immediate) break;
      if (broken_.load()) {
        queued_.fetch_sub(pending_.size(), std::memory_order_relaxed);
        for (auto& c : pending_) fail_call(c, make_error<process_pool_error>(broken_reason_));
        pending_.clear();
      }
      const bool work_left =
          !pending_.empty() || std::any_of(workers_.begin(), workers_.end(),
                                           [](auto& w) { return !w->in_flight.empty(); });
      if (stop == stop_state::graceful && !work_left) break;
      spawn_missing();
      dispatch();
      wait_and_handle();
    }
  }

  std::size_t live_workers() const {
    return static_cast<std::size_t>(std::count_if(
        workers_.begin(), workers_.end(), [](auto& w) { return !w->retiring && !w->dead; }));
  }

  void spawn_missing() {
    while (!broken_.load() && live_workers() < options_.workers) {
      auto [mine, theirs] = channel::create();
      command cmd("/proc/self/exe");
      cmd.args(args_)
          .env(detail::worker_fd_env, "3")
          .env(detail::worker_parent_env, std::to_string(::getpid()))
          .pass_fd(theirs.read_fd(), 3)
          .pass_fd(theirs.write_fd(), 4)
          .std_in(stdio::null)
          .new_process_group()
          .parent_death_signal(SIGKILL);  // this thread lives as long as the workers
      auto w = std::make_unique<worker>(std::move(mine));
      try {
        try {
          w->proc = spawn(cmd);
        } catch (const std::system_error& e) {
          if (e.code().value() != ENOSYS) throw;
          w->proc = spawn(cmd.parent_death_signal(0));  // posix_spawn backend: the worker sets it
        }
      } catch (const std::exception& e) {
        start_failed(std::string("cannot spawn a worker: ") + e.what());
        continue;
      }
      if (spawned_ever_++ >= options_.workers) restarts_.fetch_add(1, std::memory_order_relaxed);
      workers_.push_back(std::move(w));
    }
  }

  void start_failed(const std::string& why) {
    if (++start_failures_ >= 3 && alive_.load() == 0) {
      broken_reason_ =
          "ptk::process_pool: workers fail to start (" + why +
          "); does main() reach the pool, or call ptk::process_pool::serve_if_worker(), "
          "the same way in a worker?";
      broken_.store(true);
      notify_ready();
    }
  }

  // Whether a worker runs short tasks, so sending it more than one pays off.
  bool runs_short_tasks(const worker& w, clock::time_point now) const {
    return w.typical && *w.typical < detail::short_task &&
           (w.in_flight.empty() || now - w.head_started < detail::short_task);
  }

  worker* pick_worker(const detail::pool_call& c, clock::time_point now) {
    worker* best = nullptr;
    for (auto& w : workers_) {
      if (!w->ready || w->lost || w->retiring || w->dead) continue;
      const std::size_t depth = runs_short_tasks(*w, now) ? options_.prefetch : 1;
      if (w->in_flight.size() >= depth) continue;
      if (options_.max_tasks_per_worker != 0 && w->sent >= options_.max_tasks_per_worker) continue;
      if (!w->in_flight.empty() &&
          (c.request.size() > detail::pipelined_request_limit ||
           w->in_flight_bytes + c.request.size() > detail::pipelined_bytes_limit)) {
        continue;
      }
      if (best == nullptr || w->in_flight.size() < best->in_flight.size()) best = w.get();
    }
    return best;
  }

  void dispatch() {
    const auto now = clock::now();
    while (!pending_.empty()) {
      detail::pool_call& c = pending_.front();
      if (c.sink->cancel_requested()) {  // future.request_stop() before the task started
        detail::pool_call cancelled = std::move(c);
        pending_.pop_front();
        queued_.fetch_sub(1, std::memory_order_relaxed);
        fail_call(cancelled, make_error<task_cancelled_error>());
        continue;
      }
      worker* w = pick_worker(c, now);
      if (w == nullptr) return;
      const std::uint64_t id = ++next_id_;
      std::memcpy(c.request.data() + 1, &id, sizeof id);
      if (w->ch.send(c.request) != channel_status::ok) {  // died: its end of stream tells how
        w->lost = true;
        continue;
      }
      if (w->in_flight.empty()) w->head_started = now;
      w->in_flight_bytes += c.request.size();
      ++w->sent;
      w->in_flight.push_back(std::move(c));
      pending_.pop_front();
      queued_.fetch_sub(1, std::memory_order_relaxed);
      running_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void wait_and_handle() {
    pollfds_.clear();
    pollfds_.push_back({wake_.get(), POLLIN, 0});
    std::optional<clock::time_point> deadline;
    auto earliest = [&](clock::time_point t) { deadline = deadline ? std::min(*deadline, t) : t; };
    for (auto& w : workers_) {
      pollfds_.push_back({w->ch.read_fd(), POLLIN, 0});
      if (!w->ready && !w->retiring) earliest(w->spawned_at + options_.start_timeout);
      if (!w->in_flight.empty() && options_.task_timeout.count() > 0)
        earliest(w->head_started + options_.task_timeout);
    }
    int ms = -1;
    if (deadline) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(*deadline - clock::now()).count();
      ms = static_cast<int>(std::clamp<decltype(left)>(left, 0, 60'000));
    }
    // Submitters write to the eventfd only while this thread sleeps: announce the
    // sleep, then look at the queue once more (the mutex orders both with submit).
    supervisor_idle_.store(true);
    {
      const std::lock_guard lock(m_);
      if (!incoming_.empty() || stop_ != stop_state::running) ms = 0;
    }
    const int polled = ::poll(pollfds_.data(), pollfds_.size(), ms);
    supervisor_idle_.store(false);
    if (polled == -1 && errno != EINTR) throw_last_os_error("ptk::process_pool: poll");
    if (pollfds_[0].revents != 0) {
      std::uint64_t v;
      (void)!::read(wake_.get(), &v, sizeof v);
    }
    for (std::size_t i = 0; i < workers_.size(); ++i) {
      if (pollfds_[i + 1].revents != 0 || workers_[i]->ch.has_buffered_message())
        drain(*workers_[i]);
    }
    const auto now = clock::now();
    for (auto& w : workers_) {
      if (w->dead) continue;
      if (!w->in_flight.empty() && options_.task_timeout.count() > 0 &&
          now >= w->head_started + options_.task_timeout) {
        kill_worker(*w);
        timeouts_.fetch_add(1, std::memory_order_relaxed);
        fail_head_requeue_rest(*w, make_error<task_timeout_error>(options_.task_timeout));
      } else if (!w->ready && !w->retiring && now >= w->spawned_at + options_.start_timeout) {
        kill_worker(*w);
        start_failed("not serving after " + std::to_string(options_.start_timeout.count()) + " ms");
      }
    }
    std::erase_if(workers_, [](auto& w) { return w->dead; });
  }

  // Reads every message a worker has sent; handles its end.
  void drain(worker& w) {
    for (;;) {
      recv_result<std::vector<std::byte>> r = channel_status::empty;
      try {
        r = w.ch.try_recv();
      } catch (const std::exception&) {  // a corrupt stream: the worker cannot be trusted
        kill_worker(w);
        crashes_.fetch_add(1, std::memory_order_relaxed);
        fail_head_requeue_rest(w, std::current_exception());
        return;
      }
      if (r.status() == channel_status::empty) return;
      if (!r) {
        on_end(w);
        return;
      }
      on_message(w, *r);
      if (w.dead) return;
    }
  }

  void on_message(worker& w, const std::vector<std::byte>& msg) {
    detail::byte_reader in{msg};
    try {
      const auto kind = in.pod<detail::pool_msg>();
      (void)in.pod<std::uint64_t>();
      if (kind == detail::pool_msg::ready && !w.ready) {
        w.ready = true;
        start_failures_ = 0;
        alive_.fetch_add(1, std::memory_order_relaxed);
        notify_ready();
        return;
      }
      if ((kind != detail::pool_msg::value && kind != detail::pool_msg::error) ||
          w.in_flight.empty()) {
        throw codec_error("process_pool: unexpected message from a worker");
      }
      detail::pool_call c = std::move(w.in_flight.front());
      w.in_flight.pop_front();
      w.in_flight_bytes -= c.request.size();
      const auto now = clock::now();
      const clock::duration took = now - w.head_started;
      w.typical = w.typical ? (*w.typical * 3 + took) / 4 : took;
      w.head_started = now;
      running_.fetch_sub(1, std::memory_order_relaxed);
      if (kind == detail::pool_msg::value) {
        if (std::exception_ptr bad = c.sink->stage(in.in)) {
          fail_call(c, std::move(bad));
        } else {
          done_.fetch_add(1, std::memory_order_relaxed);
          c.sink->publish();
          std::exchange(c.sink, nullptr)->drop();
        }
      } else {
        const std::string type(in.text(in.pod<std::uint32_t>()));
        const std::string message(in.text(in.in.size()));
        fail_call(c, make_error<remote_error>(type, message));
      }
    } catch (const codec_error&) {
      kill_worker(w);
      crashes_.fetch_add(1, std::memory_order_relaxed);
      fail_head_requeue_rest(w, std::current_exception());
      return;
    }
    if (options_.max_tasks_per_worker != 0 && w.sent >= options_.max_tasks_per_worker &&
        w.in_flight.empty()) {
      w.ch.close();  // the worker exits; its end of stream reaps it
      w.retiring = true;
      alive_.fetch_sub(1, std::memory_order_relaxed);
      recycled_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // A worker's channel ended: it exited after a close (retiring), or it died.
  void on_end(worker& w) {
    const exit_status status = reap(w);
    if (w.retiring) return;
    if (!w.ready) {
      start_failed("a worker " + status.to_string() + " before serving");
      return;
    }
    alive_.fetch_sub(1, std::memory_order_relaxed);
    w.ready = false;
    crashes_.fetch_add(1, std::memory_order_relaxed);
    notify_ready();
    fail_head_requeue_rest(w, make_error<worker_crash_error>(status));
  }

  exit_status reap(worker& w) {
    w.dead = true;
    if (auto s = w.proc.wait_for(std::chrono::seconds(2))) return *s;
    w.proc.kill_tree(SIGKILL);  // closed its channel but lingers: not ours to keep
    return w.proc.wait();
  }

  void kill_worker(worker& w) {
    if (w.dead) return;
    w.proc.kill_tree(SIGKILL);
    (void)w.proc.wait();
    w.dead = true;
    if (w.ready && !w.retiring) {
      alive_.fetch_sub(1, std::memory_order_relaxed);
      notify_ready();
    }
    w.ready = false;
  }

  // The oldest in-flight task was the running one: it fails. The ones behind it never
  // started (a worker runs its tasks in order) and go back to the front of the queue.
  void fail_head_requeue_rest(worker& w, std::exception_ptr e) {
    if (w.in_flight.empty()) return;
    detail::pool_call head = std::move(w.in_flight.front());
    w.in_flight.pop_front();
    const std::size_t back = w.in_flight.size();
    while (!w.in_flight.empty()) {
      pending_.push_front(std::move(w.in_flight.back()));
      w.in_flight.pop_back();
    }
    w.in_flight_bytes = 0;
    running_.fetch_sub(back + 1, std::memory_order_relaxed);
    queued_.fetch_add(back, std::memory_order_relaxed);
    fail_call(head, std::move(e));
  }

  void stop_all() {
    stop_state stop;
    {
      const std::lock_guard lock(m_);
      stop = stop_;
      for (auto& c : incoming_) pending_.push_back(std::move(c));
      incoming_.clear();
    }
    if (stop == stop_state::immediate) {
      for (auto& w : workers_) w->proc.kill_tree(SIGKILL);
    } else {
      for (auto& w : workers_) w->ch.close();
    }
    alive_.store(0);
    for (auto& w : workers_) {
      if (!w->dead) (void)reap(*w);
      running_.fetch_sub(w->in_flight.size(), std::memory_order_relaxed);
      for (auto& c : w->in_flight) fail_call(c, make_error<task_cancelled_error>());
    }
    workers_.clear();
    queued_.fetch_sub(pending_.size(), std::memory_order_relaxed);
    for (auto& c : pending_) fail_call(c, make_error<task_cancelled_error>());
    pending_.clear();
    notify_ready();
  }

  process_pool_options options_;
  std::vector<std::string> args_;
  detail::unique_fd wake_;

  std::mutex m_;  // guards incoming_ and stop_
  std::condition_variable ready_cv_;
  std::deque<detail::pool_call> incoming_;
  stop_state stop_ = stop_state::running;

  // The supervisor's own state.
  std::vector<std::unique_ptr<worker>> workers_;
  std::deque<detail::pool_call> pending_;
  std::vector<pollfd> pollfds_;
  std::uint64_t next_id_ = 0;
  std::size_t spawned_ever_ = 0;
  int start_failures_ = 0;
  std::string broken_reason_;

  std::atomic<bool> broken_{false};
  std::atomic<bool> supervisor_idle_{false};  // sleeping in poll: submit must wake it
  std::atomic<std::size_t> alive_{0};
  std::atomic<std::size_t> queued_{0};
  std::atomic<std::size_t> running_{0};
  std::atomic<std::uint64_t> done_{0};
  std::atomic<std::uint64_t> failed_{0};
  std::atomic<std::uint64_t> crashes_{0};
  std::atomic<std::uint64_t> timeouts_{0};
  std::atomic<std::uint64_t> recycled_{0};
  std::atomic<std::uint64_t> restarts_{0};

  std::mutex join_m_;
  std::thread supervisor_;  // last: started once everything above exists
};

}  // namespace ptk
