#include <asio.hpp>
#include <ptk/coro_asio.hpp>
ptk::task<void> f(asio::io_context& io) {
  // @example include/ptk/coro_asio.hpp 7
}
int main() {}
