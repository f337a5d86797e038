#include <chrono>
#include <ptk/ipc/channel.hpp>
#include <ptk/ipc/pipe.hpp>
using namespace std::chrono_literals;
void use(int);
void f(ptk::pipe<int>& ch) {
  // @example include/ptk/ipc/channel.hpp 1
}
void g(ptk::pipe<int>& ch) {
  // @example include/ptk/ipc/channel.hpp 2
}
