#include <ptk/coro/timer.hpp>
ptk::task<void> f(ptk::timer_queue& timers) {
  // @example include/ptk/coro/timer.hpp 3
}
int main() {}
