#include <asio.hpp>
#include <cstdio>
#include <ptk/coro_asio.hpp>
// @example include/ptk/coro_asio.hpp 8
int main() {}
