#include <ptk/coro/async_scope.hpp>
#include <ptk/thread/thread_pool.hpp>
#include <vector>
struct request {};
ptk::task<void> handle(ptk::thread_pool& pool, request r);
// @example include/ptk/coro/async_scope.hpp 1
int main() {}
