#include <cstdio>
#include <ptk/coro/when_any.hpp>
#include <ptk/thread/thread_pool.hpp>
#include <vector>
std::vector<ptk::task<int>> query_all(ptk::thread_pool& pool);
ptk::task<void> run(ptk::thread_pool& pool) {
  // @example include/ptk/coro/when_any.hpp 2
}
int main() {}
