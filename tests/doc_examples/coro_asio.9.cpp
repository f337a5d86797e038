#include <asio.hpp>
#include <ptk/coro_asio.hpp>
asio::io_context& app_io();
ptk::task<void> f() {
  // @example include/ptk/coro_asio.hpp 9
}
int main() {}
