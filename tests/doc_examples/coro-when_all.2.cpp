#include <chrono>
#include <ptk/coro/timer.hpp>
#include <ptk/coro/when_all.hpp>
using namespace std::chrono_literals;
ptk::task<void> run(ptk::timer_queue& timers) {
  // @example include/ptk/coro/when_all.hpp 2
}
int main() {}
