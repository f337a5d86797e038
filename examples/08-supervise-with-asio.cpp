// 08 — supervising several children at once from one asio thread.
//
// Each child is awaited by its own asio coroutine; all of them share one io_context
// thread, because the waits are pidfds in asio's reactor, not blocked threads.
// Meanwhile a timer keeps ticking on the same thread.
#include <ptk/process_asio.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;

namespace {

const auto start = std::chrono::steady_clock::now();
double ms_since_start() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
      .count();
}

asio::awaitable<void> supervise(std::string name, std::string script) {
  auto child = ptk::spawn(ptk::command{"sh"}.args({"-c", script}));
  std::printf("%7.1f ms  started %-8s pid %d\n", ms_since_start(), name.c_str(), child.pid());
  const ptk::exit_status s = co_await ptk::async_wait_exit(child, asio::use_awaitable);
  std::printf("%7.1f ms  %-8s %s\n", ms_since_start(), name.c_str(), s.to_string().c_str());
}

asio::awaitable<void> ticker(int ticks) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  for (int i = 0; i < ticks; ++i) {
    timer.expires_after(100ms);
    co_await timer.async_wait(asio::use_awaitable);
    std::printf("%7.1f ms  tick (the same thread is free)\n", ms_since_start());
  }
}

}  // namespace

int main() {
  asio::io_context io;  // one thread runs everything below
  asio::co_spawn(io, supervise("quick", "exit 0"), asio::detached);
  asio::co_spawn(io, supervise("slow", "sleep 0.35; exit 2"), asio::detached);
  asio::co_spawn(io, supervise("killed", "sleep 0.15; kill -KILL $$"), asio::detached);
  asio::co_spawn(io, supervise("medium", "sleep 0.25"), asio::detached);
  asio::co_spawn(io, ticker(3), asio::detached);
  io.run();
  std::puts("all children reaped by one io_context thread");
  return 0;
}
