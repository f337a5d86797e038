// Internal: one epoll thread per process that tells waiters when a descriptor is
// ready, so awaiting a child's exit (a pidfd) or a channel needs no thread per wait.
//
// Every registration, readiness callback and cancellation runs on the reactor thread,
// in order: a cancelled registration can never fire afterwards, and a stale
// cancellation (for a registration that already fired) finds no id and does nothing.
// Callbacks run on the reactor thread and must be short (resume a coroutine, post it).
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/syscall.hpp>
#include <ptk/detail/unique_fd.hpp>
#include <ptk/error.hpp>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ptk::detail {

class reactor {
 public:
  /// Called once, on the reactor thread: `ready` true when the descriptor became
  /// ready, false when the registration was cancelled.
  using callback = std::function<void(bool ready)>;

  /// The process-wide reactor, started on first use.
  static reactor& instance() {
    static reactor r;
    return r;
  }

  reactor(const reactor&) = delete;
  reactor& operator=(const reactor&) = delete;

  /// Watches `fd` for `events` (EPOLLIN...) once. Returns an id for cancel().
  std::uint64_t watch(int fd, std::uint32_t events, callback cb) {
    const std::lock_guard lock(mutex_);
    const std::uint64_t id = ++last_id_;
    commands_.push_back({command::add, id, fd, events, std::move(cb)});
    poke();
    return id;
  }

  /// Cancels watch `id`: its callback runs with false, unless it already ran.
  void cancel(std::uint64_t id) {
    const std::lock_guard lock(mutex_);
    commands_.push_back({command::remove, id, -1, 0, {}});
    poke();
  }

 private:
  struct command {
    enum kind_t { add, remove } kind;
    std::uint64_t id;
    int fd;
    std::uint32_t events;
    callback cb;
  };
  struct watch_entry {
    int fd;
    callback cb;
  };

  reactor()
      : epoll_(check(::epoll_create1(EPOLL_CLOEXEC), "epoll_create1")),
        wake_(check(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd")) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // id 0: the wake-up eventfd
    check(::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev), "epoll_ctl add eventfd");
    thread_ = std::thread([this] { run(); });
  }

  ~reactor() {
    {
      const std::lock_guard lock(mutex_);
      stopping_ = true;
      poke();
    }
    thread_.join();
  }

  void poke() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] const ssize_t n = ::write(wake_.get(), &one, sizeof one);
  }

  void run() {
    std::vector<epoll_event> events(64);
    for (;;) {
      const int n = ::epoll_wait(epoll_.get(), events.data(), static_cast<int>(events.size()), -1);
      if (n == -1) {
        if (errno == EINTR) continue;
        return;  // the epoll descriptor is gone: nothing more can be watched
      }
      for (int i = 0; i < n; ++i) {
        const std::uint64_t id = events[static_cast<std::size_t>(i)].data.u64;
        if (id == 0) {
          std::uint64_t drained = 0;
          [[maybe_unused]] const ssize_t r = ::read(wake_.get(), &drained, sizeof drained);
          continue;
        }
        finish(id, true);
      }
      std::vector<command> pending;
      bool stop = false;
      {
        const std::lock_guard lock(mutex_);
        pending.swap(commands_);
        stop = stopping_;
      }
      for (command& c : pending) apply(c);
      if (stop) {
        for (auto& [id, w] : watches_) w.cb(false);
        watches_.clear();
        return;
      }
    }
  }

  void apply(command& c) {
    if (c.kind == command::remove) {
      finish(c.id, false);
      return;
    }
    epoll_event ev{};
    ev.events = c.events | EPOLLONESHOT;
    ev.data.u64 = c.id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, c.fd, &ev) == -1) {
      c.cb(false);  // not watchable (closed descriptor...): report as not ready
      return;
    }
    watches_.emplace(c.id, watch_entry{c.fd, std::move(c.cb)});
  }

  void finish(std::uint64_t id, bool ready) {
    auto it = watches_.find(id);
    if (it == watches_.end()) return;  // already finished: a stale cancel or event
    watch_entry w = std::move(it->second);
    watches_.erase(it);
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, w.fd, nullptr);
    w.cb(ready);
  }

  unique_fd epoll_;
  unique_fd wake_;
  std::mutex mutex_;
  std::vector<command> commands_;
  bool stopping_ = false;
  std::uint64_t last_id_ = 0;
  std::unordered_map<std::uint64_t, watch_entry> watches_;  // reactor thread only
  std::thread thread_;
};

}  // namespace ptk::detail
