#include <asio.hpp>
#include <ptk/coro_asio.hpp>
using namespace std::chrono_literals;
ptk::task<void> f(asio::io_context& io) {
  // @example include/ptk/coro_asio.hpp 10
  // @example include/ptk/coro_asio.hpp 11
}
int main() {}
