#include <ptk/coro/when_all.hpp>
#include <ptk/thread/thread_pool.hpp>
ptk::task<int> square_on(ptk::thread_pool& pool, int i);
ptk::task<void> run(ptk::thread_pool& pool) {
  // @example include/ptk/coro/when_all.hpp 3
}
int main() {}
