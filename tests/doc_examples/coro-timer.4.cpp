#include <ptk/coro/timer.hpp>
using namespace std::chrono_literals;
ptk::task<void> f(ptk::timer_queue& timers) {
  // @example include/ptk/coro/timer.hpp 4
}
int main() {}
