#include <asio.hpp>
#include <ptk/coro.hpp>
#include <ptk/coro_asio.hpp>
using namespace std::chrono_literals;
std::size_t crunch();
// @example include/ptk/coro_asio.hpp 1
int main() {}
