#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/timer.hpp>
#include <ptk/coro/when_any.hpp>
using namespace std::chrono_literals;
int main() {
  // @example include/ptk/coro/timer.hpp 2
}
