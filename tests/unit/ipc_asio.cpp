#include <ptk/ipc_asio.hpp>

#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "ipc_support.hpp"
#include "test_support.hpp"

using ptk::channel_status;

TEST_CASE("ptk::async_recv in asio coroutines: ring, queue and pipe", "[ipc][asio]") {
  asio::io_context io;
  auto ring = ptk::shm_ring<int>::anonymous(8);
  ptk::queue<std::string> q{8, {.max_message_size = 16}};
  auto [a, b] = ptk::pipe<std::string>::create();
  std::vector<int> ints;
  std::vector<std::string> words, lines;
  channel_status ends[3] = {channel_status::ok, channel_status::ok, channel_status::ok};

  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto v = co_await ptk::async_recv(ring, asio::use_awaitable);
          if (!v) {
            ends[0] = v.status();
            co_return;
          }
          ints.push_back(*v);
        }
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto v = co_await ptk::async_recv(q, asio::use_awaitable);
          if (!v) {
            ends[1] = v.status();
            co_return;
          }
          words.push_back(*v);
        }
      },
      asio::detached);
  asio::co_spawn(
      io,
      [&, &b = b]() -> asio::awaitable<void> {
        for (;;) {
          auto v = co_await ptk::async_recv(b, asio::use_awaitable);
          if (!v) {
            ends[2] = v.status();
            co_return;
          }
          lines.push_back(*v);
        }
      },
      asio::detached);

  std::atomic<int> failures{0};
  std::thread producer([&, &a = a] {
    for (int i = 0; i < 500; ++i) {
      failures += ring.send(i) != channel_status::ok;
      failures += q.send("w" + std::to_string(i)) != channel_status::ok;
      failures += a.send("l" + std::to_string(i)) != channel_status::ok;
    }
    ring.close();
    q.close();
    a.close();
  });
  io.run();  // returns only when all three loops ended: pending receives count as work
  producer.join();
  CHECK(failures == 0);
  REQUIRE(ints.size() == 500);
  for (int i = 0; i < 500; ++i) REQUIRE(ints[static_cast<std::size_t>(i)] == i);
  CHECK(words.size() == 500);
  CHECK(lines.back() == "l499");
  for (auto e : ends) CHECK(e == channel_status::closed);
}

TEST_CASE("ptk::async_recv: a callback, and cancellation through the slot", "[ipc][asio]") {
  asio::io_context io;
  ptk::queue<int> q{4};
  asio::cancellation_signal cancel;
  std::optional<channel_status> got;
  // A plain callback's executor is asio's system executor: bind it to `io`.
  ptk::async_recv(q, asio::bind_cancellation_slot(
                         cancel.slot(), asio::bind_executor(io, [&](ptk::recv_result<int> r) {
                           got = r.status();
                         })));
  io.poll();  // the receive is pending: nothing completes
  CHECK_FALSE(got);
  cancel.emit(asio::cancellation_type::terminal);
  io.run();
  REQUIRE(got);
  CHECK(*got == channel_status::cancelled);

  REQUIRE(q.send(7) == channel_status::ok);
  int value = 0;
  io.restart();
  ptk::async_recv(q, asio::bind_executor(io, [&](ptk::recv_result<int> r) { value = *r; }));
  io.run();
  CHECK(value == 7);
}
