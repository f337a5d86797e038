#include <ptk/coro/sync_wait.hpp>
#include <ptk/thread/thread_pool.hpp>
// @example include/ptk/coro/sync_wait.hpp 1 lines 1-1
int main() {
  // @example include/ptk/coro/sync_wait.hpp 1 lines 2-
}
