#include <ptk/coro/task.hpp>
#include <ptk/thread/thread_pool.hpp>
#include <string>
// @example include/ptk/coro/task.hpp 3
int main() {}
