#include <asio.hpp>
#include <future>
#include <ptk/coro_asio.hpp>
ptk::task<int> compute();
int main() {
  // @example include/ptk/coro_asio.hpp 14
}
