#include <cstdio>
#include <ptk/coro/timer.hpp>
#include <ptk/coro/when_any.hpp>
#include <string>
using namespace std::chrono_literals;
ptk::task<std::string> fetch(ptk::thread_pool& pool);
ptk::task<void> run(ptk::thread_pool& pool, ptk::timer_queue& timers) {
  // @example include/ptk/coro/when_any.hpp 1
}
int main() {}
