#include <asio.hpp>
#include <ptk/coro_asio.hpp>
asio::awaitable<int> asio_compute();
asio::io_context& app_io();
ptk::task<void> f() {
  // @example include/ptk/coro_asio.hpp 18
}
int main() {}
