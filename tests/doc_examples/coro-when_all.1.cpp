#include <ptk/coro/when_all.hpp>
#include <ptk/thread/thread_pool.hpp>
#include <string>
// @example include/ptk/coro/when_all.hpp 1 lines 1-2
ptk::task<void> run(ptk::thread_pool& pool) {
  // @example include/ptk/coro/when_all.hpp 1 lines 3-
}
int main() {}
