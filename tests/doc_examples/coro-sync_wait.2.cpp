#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/timer.hpp>
#include <thread>
using namespace std::chrono_literals;
void f(ptk::timer_queue& timers) {
  // @example include/ptk/coro/sync_wait.hpp 2
}
int main() {}
