#include <cstdio>
#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/timer.hpp>
// @example include/ptk/coro/timer.hpp 1 lines 1-8
int main() {
  // @example include/ptk/coro/timer.hpp 1 lines 9-
}
