#include <asio.hpp>
#include <ptk/coro_asio.hpp>
ptk::task<int> compute();
// @example include/ptk/coro_asio.hpp 15
int main() {}
