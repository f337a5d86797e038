#include <ptk/coro/sync_wait.hpp>
#include <ptk/coro/task.hpp>
// @example include/ptk/coro/task.hpp 1 lines 1-2
int main() {
  // @example include/ptk/coro/task.hpp 1 lines 3-
}
