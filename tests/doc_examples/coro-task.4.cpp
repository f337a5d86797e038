#include <cstdio>
#include <ptk/coro/task.hpp>
ptk::task<void> f() {
  // @example include/ptk/coro/task.hpp 4
}
int main() {}
