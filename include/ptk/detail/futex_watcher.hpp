// Internal: one thread that waits on many shared futex words at once (futex_waitv,
// Linux 5.16+), so awaiting a shared-memory channel needs no thread per wait — the
// futex counterpart of detail::reactor for descriptors.
//
// A watch fires once: with true when its word no longer holds the expected value
// (or was woken), and also on every liveness tick so the waiter can check that its
// peer is alive; with false when cancelled. Callbacks run on a watcher thread and
// must be short. One thread serves up to 127 words; more threads start on demand.
// Without futex_waitv (older kernels) a watcher polls its words every millisecond.
#pragma once

#include <ptk/config.hpp>
#include <ptk/detail/futex.hpp>
#include <ptk/detail/shm.hpp>

#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ptk::detail {

class futex_watcher {
 public:
  using callback = std::function<void(bool fired)>;
  static constexpr std::size_t per_thread = 127;  // futex_waitv takes at most 128 words

  /// The process-wide watcher pool.
  static futex_watcher& instance() {
    static futex_watcher w;
    return w;
  }

  futex_watcher(const futex_watcher&) = delete;
  futex_watcher& operator=(const futex_watcher&) = delete;
  ~futex_watcher() {
    for (auto& t : threads_) t->stop();
  }

  /// Watches `word` while it holds `expected`. Returns an id for cancel().
  std::uint64_t watch(futex_word& word, std::uint32_t expected, callback cb) {
    const std::lock_guard lock(mutex_);
    const std::uint64_t id = ++last_id_;
    worker* w = nullptr;
    for (auto& t : threads_) {
      if (t->load() < per_thread) {
        w = t.get();
        break;
      }
    }
    if (w == nullptr) w = threads_.emplace_back(std::make_unique<worker>()).get();
    owner_[id] = w;
    w->add(id, word, expected, std::move(cb));
    return id;
  }

  /// Cancels watch `id`: its callback runs with false unless it already ran.
  void cancel(std::uint64_t id) {
    const std::lock_guard lock(mutex_);
    const auto it = owner_.find(id);
    if (it == owner_.end()) return;
    it->second->remove(id);
    owner_.erase(it);
  }

  /// Forgets a finished id (called by workers after firing).
  void forget(std::uint64_t id) {
    const std::lock_guard lock(mutex_);
    owner_.erase(id);
  }

 private:
  futex_watcher() = default;

  struct futex_waitv_arg {
    std::uint64_t val;
    std::uint64_t uaddr;
    std::uint32_t flags;
    std::uint32_t reserved;
  };
  static constexpr std::uint32_t futex2_size_u32 = 0x02;

  class worker {
   public:
    worker() : thread_([this] { run(); }) {}
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;
    ~worker() { stop(); }

    std::size_t load() {
      const std::lock_guard lock(mutex_);
      return entries_.size();
    }
    void add(std::uint64_t id, futex_word& word, std::uint32_t expected, callback cb) {
      {
        const std::lock_guard lock(mutex_);
        entries_.push_back({id, &word, expected, std::move(cb)});
      }
      poke();
    }
    void remove(std::uint64_t id) {
      callback cb;
      {
        const std::lock_guard lock(mutex_);
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
          if (it->id == id) {
            cb = std::move(it->cb);
            entries_.erase(it);
            break;
          }
        }
      }
      poke();
      if (cb) cb(false);
    }
    void stop() {
      if (!thread_.joinable()) return;
      stopping_.store(true);
      poke();
      thread_.join();
    }

   private:
    struct entry {
      std::uint64_t id;
      futex_word* word;
      std::uint32_t expected;
      callback cb;
    };

    void poke() noexcept {
      control_.fetch_add(1, std::memory_order_seq_cst);
      futex_wake_all(control_);
    }

    void run() {
      static std::atomic<int> have_waitv{-1};  // unknown, 0 = missing, 1 = present
      std::vector<futex_waitv_arg> args;
      std::vector<std::uint64_t> ids;
      for (;;) {
        const std::uint32_t ctl = control_.load(std::memory_order_acquire);
        if (stopping_.load()) return;
        const auto tick = std::chrono::steady_clock::now() + liveness_period;
        args.clear();
        ids.clear();
        args.push_back({ctl, reinterpret_cast<std::uintptr_t>(&control_), futex2_size_u32, 0});
        {
          const std::lock_guard lock(mutex_);
          for (const auto& e : entries_) {
            args.push_back(
                {e.expected, reinterpret_cast<std::uintptr_t>(e.word), futex2_size_u32, 0});
          }
        }
        bool timed_out = false;
        if (have_waitv.load(std::memory_order_relaxed) != 0) {
          const timespec ts = futex_impl::to_timespec(tick);
          const long r = ::syscall(449 /* futex_waitv */, args.data(),
                                   static_cast<unsigned>(args.size()), 0U, &ts, CLOCK_MONOTONIC);
          if (r == -1 && errno == ENOSYS) {
            have_waitv.store(0);
          } else {
            have_waitv.store(1);
            timed_out = r == -1 && errno == ETIMEDOUT;
          }
        }
        if (have_waitv.load(std::memory_order_relaxed) == 0) {
          futex_wait_until(control_, ctl,
                           std::chrono::steady_clock::now() + std::chrono::milliseconds(1));
          timed_out = std::chrono::steady_clock::now() >= tick;
        }
        fire(timed_out || std::chrono::steady_clock::now() >= tick);
      }
    }

    // Fires every entry whose word changed, or all of them on a liveness tick.
    void fire(bool everyone) {
      std::vector<entry> ready;
      {
        const std::lock_guard lock(mutex_);
        for (auto it = entries_.begin(); it != entries_.end();) {
          if (everyone || it->word->load(std::memory_order_acquire) != it->expected) {
            ready.push_back(std::move(*it));
            it = entries_.erase(it);
          } else {
            ++it;
          }
        }
      }
      for (auto& e : ready) {
        futex_watcher::instance().forget(e.id);
        e.cb(true);
      }
    }

    std::mutex mutex_;
    std::list<entry> entries_;
    futex_word control_{0};
    std::atomic<bool> stopping_{false};
    std::thread thread_;
  };

  std::mutex mutex_;
  std::vector<std::unique_ptr<worker>> threads_;
  std::unordered_map<std::uint64_t, worker*> owner_;
  std::uint64_t last_id_ = 0;
};

}  // namespace ptk::detail
