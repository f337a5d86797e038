#include <asio.hpp>
#include <ptk/coro_asio.hpp>
asio::awaitable<int> asio_compute();
ptk::task<void> f(asio::io_context& io) {
  // @example include/ptk/coro_asio.hpp 16
}
int main() {}
