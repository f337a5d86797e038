// A condition an asio coroutine can await from any strand: notify() wakes every
// coroutine waiting now; a waiter that passes the version it last saw never misses a
// notification that came before it started waiting.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/this_coro.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace server {

class notifier {
 public:
  /// @return the current version, to pass to wait().
  [[nodiscard]] std::uint64_t version() const {
    const std::lock_guard lock(mutex_);
    return version_;
  }

  /// Wakes every waiter (each on its own executor).
  void notify() {
    std::vector<std::shared_ptr<asio::steady_timer>> timers;
    {
      const std::lock_guard lock(mutex_);
      ++version_;
      timers.swap(waiting_);
    }
    for (auto& t : timers) {
      asio::post(t->get_executor(), [t] { t->cancel(); });
    }
  }

  /// Waits until the version differs from `seen` or `deadline` passes.
  /// @return the version now.
  asio::awaitable<std::uint64_t> wait(std::uint64_t seen,
                                      std::chrono::steady_clock::time_point deadline =
                                          std::chrono::steady_clock::time_point::max()) {
    auto timer = std::make_shared<asio::steady_timer>(co_await asio::this_coro::executor);
    timer->expires_at(deadline);
    {
      const std::lock_guard lock(mutex_);
      if (version_ != seen) co_return version_;
      waiting_.push_back(timer);
    }
    // notify() posts the cancel to this coroutine's executor, so it runs only after
    // this wait has started: nothing is lost between the check and the wait.
    std::error_code ec;
    co_await timer->async_wait(asio::redirect_error(asio::use_awaitable, ec));
    const std::lock_guard lock(mutex_);
    std::erase(waiting_, timer);
    co_return version_;
  }

 private:
  mutable std::mutex mutex_;
  std::uint64_t version_ = 0;
  std::vector<std::shared_ptr<asio::steady_timer>> waiting_;
};

}  // namespace server
