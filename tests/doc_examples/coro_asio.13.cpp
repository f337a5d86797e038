#include <asio.hpp>
#include <ptk/coro_asio.hpp>
#include <ptk/thread/thread_pool.hpp>
// @example include/ptk/coro_asio.hpp 13
int main() {}
