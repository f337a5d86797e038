// ptk::async_wait_exit: children awaited from asio coroutines on one io_context.
#include <ptk/process_asio.hpp>

#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/use_awaitable.hpp>

#include <chrono>
#include <string>
#include <vector>

#include "catch.hpp"

namespace {
asio::awaitable<void> wait_all(std::vector<ptk::process>& ps, std::vector<int>& codes) {
  for (auto& p : ps) {
    const ptk::exit_status s = co_await ptk::async_wait_exit(p, asio::use_awaitable);
    codes.push_back(s.code());
  }
}
}  // namespace

TEST_CASE("asio coroutines await children through their pidfds on one thread") {
  asio::io_context io;
  std::vector<ptk::process> ps;
  for (int code : {3, 1, 2}) {
    ps.push_back(
        ptk::spawn(ptk::command{"sh"}.args({"-c", "sleep 0.05; exit " + std::to_string(code)})));
  }
  std::vector<int> codes;
  asio::co_spawn(io, wait_all(ps, codes), asio::detached);
  io.run();
  CHECK(codes == std::vector<int>{3, 1, 2});
  for (auto& p : ps) CHECK(p.status().has_value());
}

TEST_CASE("async_wait_exit with a plain handler, on a child that already exited") {
  asio::io_context io;
  auto p = ptk::spawn(ptk::command{"false"});
  p.wait();
  int code = -1;
  std::error_code error;
  ptk::async_wait_exit(io.get_executor(), p, [&](std::error_code ec, ptk::exit_status s) {
    error = ec;
    code = s.code();
  });
  CHECK(code == -1);  // never completes inline
  io.run();
  CHECK_FALSE(error);
  CHECK(code == 1);
}
