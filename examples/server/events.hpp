// Live events (process started/exited, thread started/finished, job done) and the
// WebSocket endpoint that streams them.
//
// Publishers on any thread put events into an in-process ptk::queue; one coroutine
// receives them with ptk::async_recv and fans them out to every WebSocket
// subscriber's bounded outbox. Frames are built and parsed by wslay.
#pragma once

#include "http.hpp"
#include "notify.hpp"

#include <ptk/ipc.hpp>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace server {

/// One WebSocket client's queue of events.
struct subscriber {
  std::mutex mutex;
  std::deque<std::string> outbox;
  std::size_t dropped = 0;  ///< events dropped because the outbox was full (slow client)
  notifier wake;
  static constexpr std::size_t max_outbox = 1024;
};

class event_hub {
 public:
  explicit event_hub(asio::io_context& io);
  /// Publishes an event: adds "type" and "time" (Unix seconds) and never blocks; an
  /// event that finds the queue full is counted as dropped.
  void publish(std::string type, nlohmann::json fields = nlohmann::json::object());
  /// Starts the fan-out coroutine.
  void start();
  /// Closes the queue: the fan-out ends, and every session sends a close frame.
  void stop();
  std::shared_ptr<subscriber> subscribe();
  void unsubscribe(const std::shared_ptr<subscriber>& s);
  /// {published, delivered, dropped, subscribers, queue_capacity}
  [[nodiscard]] nlohmann::json stats() const;
  [[nodiscard]] bool stopped() const noexcept { return stopped_.load(); }
  /// Notified when stop() is called.
  notifier stopping;
  /// Waits (bounded) until the fan-out coroutine has ended: its pending receive on the
  /// queue must complete before the queue is destroyed.
  asio::awaitable<void> drained(std::chrono::steady_clock::time_point deadline);

 private:
  asio::awaitable<void> pump();

  asio::io_context& io_;
  ptk::queue<std::string> queue_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<subscriber>> subscribers_;
  std::atomic<std::uint64_t> published_{0};
  std::atomic<std::uint64_t> delivered_{0};
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<bool> stopped_{false};
  std::atomic<bool> pump_running_{false};
  notifier pump_ended_;
};

/// Validates a WebSocket upgrade request (RFC 6455 §4.2.1) and answers 101 with a
/// session streaming the hub's events, or 400/426 with a JSON error.
response websocket_upgrade(const request& req, event_hub& hub);

}  // namespace server
