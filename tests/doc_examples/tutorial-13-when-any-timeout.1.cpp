#include <ptk/coro.hpp>
#include <string>
using namespace std::chrono_literals;
ptk::task<std::string> query(ptk::timer_queue& timers, std::chrono::milliseconds latency);
ptk::task<void> run(ptk::timer_queue& timers, std::chrono::milliseconds latency) {
  // @example docs/tutorials/13-when-any-timeout.md 1
  if (r.index() == 0) (void)std::get<0>(r).size();
}
int main() {}
