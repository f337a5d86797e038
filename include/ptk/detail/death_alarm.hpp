// Internal: one thread per process that wakes a sleeping channel side when the
// process at the other end exits, so a sleep with no deadline needs no timeout.
//
// Without it a sleeper must wake every liveness period to look at its peer (a dead
// process wakes nobody), and a futex wait with a timeout arms and cancels a timer
// on every sleep: in a VM that is a fifth of a sleeping round trip. An alarm is a
// pidfd in an epoll set; when the peer exits, the alarm thread marks the alarm
// fired, clears the sleeper's flag and wakes it.
//
// After fork() a child gets its own alarm thread on first use; the parent's
// instance (its mutex possibly held by a thread that does not exist in the child)
// is never touched there again.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/unique_fd.hpp>

#include <sys/epoll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace ptk::detail {

class death_alarm {
 public:
  /// One armed alarm: `fired` turns true once its process has exited.
  struct entry {
    std::uint64_t id = 0;
    int pidfd = -1;
    futex_word* flag = nullptr;
    std::atomic<bool> fired{false};
  };

  /// This process's alarm thread (started on first arm()).
  /// @param pid this process's id (detail::this_ids().pid).
  static death_alarm& instance(std::uint32_t pid) {
    static constinit std::atomic<death_alarm*> current{nullptr};
    death_alarm* a = current.load(std::memory_order_acquire);
    while (a == nullptr || a->owner_ != pid) {
      auto* fresh = new death_alarm(pid);  // cheap: the thread starts on first arm()
      if (current.compare_exchange_strong(a, fresh, std::memory_order_acq_rel)) return *fresh;
      delete fresh;  // another thread of this process won; `a` is its instance
    }
    return *a;
  }

  death_alarm(const death_alarm&) = delete;
  death_alarm& operator=(const death_alarm&) = delete;

  /// Watches the process behind `pidfd`: when it exits, the entry fires, `flag` is
  /// set to 0 and its sleepers are woken. The caller keeps `pidfd` open and `flag`
  /// mapped until disarm(). @return the entry, or nullptr if it cannot be watched.
  std::shared_ptr<entry> arm(int pidfd, futex_word& flag) {
    const std::lock_guard lock(mutex_);
    if (!epoll_) {
      const int ep = ::epoll_create1(EPOLL_CLOEXEC);
      if (ep == -1) return nullptr;
      epoll_.reset(ep);
      try {
        std::thread([this] { run(); }).detach();  // lives as long as the process
      } catch (const std::system_error&) {
        epoll_.reset();
        return nullptr;
      }
    }
    auto e = std::make_shared<entry>();
    e->id = ++last_id_;
    e->pidfd = pidfd;
    e->flag = &flag;
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = e->id;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, pidfd, &ev) == -1) return nullptr;
    entries_.emplace(e->id, e);
    return e;
  }

  /// Stops watching: once this returns, the alarm thread no longer touches the
  /// entry's flag.
  void disarm(const entry& e) {
    const std::lock_guard lock(mutex_);
    if (entries_.erase(e.id) != 0) ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, e.pidfd, nullptr);
  }

 private:
  explicit death_alarm(std::uint32_t pid) noexcept : owner_(pid) {}

  void run() {
    epoll_event events[16];
    for (;;) {
      const int n = ::epoll_wait(epoll_.get(), events, 16, -1);
      if (n == -1) {
        if (errno == EINTR) continue;
        return;
      }
      const std::lock_guard lock(mutex_);
      for (int i = 0; i < n; ++i) {
        const auto it = entries_.find(events[i].data.u64);
        if (it == entries_.end()) continue;  // disarmed meanwhile
        entry& e = *it->second;
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, e.pidfd, nullptr);
        e.fired.store(true, std::memory_order_release);
        e.flag->store(0, std::memory_order_seq_cst);
        futex_wake_all(*e.flag);
        entries_.erase(it);
      }
    }
  }

  const std::uint32_t owner_;
  std::mutex mutex_;
  unique_fd epoll_;
  std::uint64_t last_id_ = 0;
  std::unordered_map<std::uint64_t, std::shared_ptr<entry>> entries_;
};

}  // namespace ptk::detail
