#include <ptk/thread/thread_pool.hpp>
// @example include/ptk/thread/thread_pool.hpp 3
int main() {}
