#include <asio.hpp>
#include <ptk/coro_asio.hpp>
// @example include/ptk/coro_asio.hpp 2
// @example include/ptk/coro_asio.hpp 3
// @example include/ptk/coro_asio.hpp 12
int main() {}
