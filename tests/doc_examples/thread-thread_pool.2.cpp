#include <ptk/coro/task.hpp>
#include <ptk/thread/thread_pool.hpp>
// @example include/ptk/thread/thread_pool.hpp 2
int main() {}
