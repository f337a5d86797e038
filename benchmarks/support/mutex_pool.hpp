// The baseline peer: a fixed pool of threads sharing one mutex-protected queue of
// std::function, woken by a condition variable. This is the design of
// BS::thread_pool and of most hand-written pools.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace ptk::bench {

class mutex_pool {
 public:
  explicit mutex_pool(unsigned n) {
    for (unsigned i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
  }
  mutex_pool(const mutex_pool&) = delete;
  mutex_pool& operator=(const mutex_pool&) = delete;
  ~mutex_pool() {  // drains the queue, then joins
    {
      const std::lock_guard lock(m_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  void post(std::function<void()> f) {
    {
      const std::lock_guard lock(m_);
      q_.push_back(std::move(f));
    }
    cv_.notify_one();
  }

 private:
  void work() {
    for (;;) {
      std::function<void()> f;
      {
        std::unique_lock lock(m_);
        // Timed, though a plain wait would do: the condition variable of glibc 2.36
        // (Debian 12) can lose a wake-up (sourceware bug 25847), which once hung a
        // benchmark run here. The timeout bounds that; it costs one wake-up a second.
        while (!stopping_ && q_.empty()) cv_.wait_for(lock, std::chrono::seconds(1));
        if (q_.empty()) return;
        f = std::move(q_.front());
        q_.pop_front();
      }
      f();
    }
  }

  std::mutex m_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> q_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace ptk::bench
