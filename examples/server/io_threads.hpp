// The I/O threads of ptk-server and of its load-test baseline, ptk-bare-responder, so
// that both have exactly the same threading.
//
// per-thread: one io_context per thread. The main one (the caller's thread) also runs
//   whatever is posted to main(); connections are dealt out over all of them, and a
//   connection stays on its thread, with no hand-off and no strand.
// shared: main() alone, run by every thread; connections need strands.
#pragma once

#include <asio/executor_work_guard.hpp>
#include <asio/io_context.hpp>

#include <memory>
#include <thread>
#include <vector>

namespace server {

class io_threads {
 public:
  io_threads(unsigned threads, bool shared)
      : shared_(shared),
        threads_(threads == 0 ? 1 : threads),
        main_(shared ? static_cast<int>(threads_) : 1) {
    all_.push_back(&main_);
    for (unsigned i = 1; i < threads_ && !shared_; ++i) {
      extra_.push_back(std::make_unique<asio::io_context>(1));
      all_.push_back(extra_.back().get());
    }
  }
  io_threads(const io_threads&) = delete;
  io_threads& operator=(const io_threads&) = delete;

  /// The context of the main thread (the only one when shared).
  asio::io_context& main() noexcept { return main_; }
  /// The single-threaded contexts to deal connections out to; empty when shared.
  [[nodiscard]] std::vector<asio::io_context*> for_connections() const {
    return shared_ ? std::vector<asio::io_context*>{} : all_;
  }
  [[nodiscard]] bool shared() const noexcept { return shared_; }

  /// Runs every context on its threads (this one included) until stop().
  void run() {
    std::vector<std::thread> threads;
    for (auto& c : extra_) {
      threads.emplace_back([&c] {
        const auto busy = asio::make_work_guard(*c);  // idle until stop(), not done
        c->run();
      });
    }
    for (unsigned i = 1; i < threads_ && shared_; ++i) {
      threads.emplace_back([this] { main_.run(); });
    }
    main_.run();
    for (auto& t : threads) t.join();
  }
  /// Makes run() return (callable from any thread).
  void stop() {
    for (auto* c : all_) c->stop();
  }

 private:
  bool shared_;
  unsigned threads_;
  asio::io_context main_;
  std::vector<std::unique_ptr<asio::io_context>> extra_;
  std::vector<asio::io_context*> all_;
};

}  // namespace server
